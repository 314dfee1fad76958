"""Multi-level RoIAlign from flat-index gathers over the concatenated FPN levels (builtin ops).

The default :func:`tf_rcnn.ops.poolers.multilevel_roi_align` partitions the RoIs by level
(``tf.where`` + ``gather``), pools each level and puts the results back with
``tf.dynamic_stitch``, which has no TFLite builtin. Inside
``tf_rcnn.backend.builtin_ops_only()`` it calls :func:`flat_multilevel_align` instead: every
level is replicate-padded and flattened to ``[B * H_l' * W_l', C]`` rows, the levels are
concatenated into one table, and each RoI reads its own level through a per-RoI row offset,
map size and spatial scale (small ``GATHER`` s by level), so all RoIs are sampled by the same
four gathers (:func:`tf_rcnn.ops.crop_and_resize.bilinear_gather`) in RoI order. The sample
points are the RoIAlign points of :func:`tf_rcnn.ops.roi_align.align_rois` with the same
boundary rule (samples in ``[-1, 0]`` clamp to the edge, samples outside ``[-1, H]`` give 0).

Shape shorthand: B batch, P RoIs over the batch, L levels, C channels, S pooled size, sr
sampling ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_rcnn.ops.crop_and_resize import bilinear_gather
from tf_rcnn.ops.roi_align import average_bins, replicate_pad, scaled_rois


def flat_multilevel_align(
    features: Sequence[tf.Tensor],
    rois: tf.Tensor,
    image_indices: tf.Tensor,
    level_indices: tf.Tensor,
    strides: Sequence[int],
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> tf.Tensor:
    """RoIAlign of each RoI on its own level, all levels in one gather.

    Args:
        features: ``L`` maps ``[B, H_l, W_l, C]``.
        rois: ``[P, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.
        image_indices: ``[P]`` int32 image of each RoI.
        level_indices: ``[P]`` int32 position in ``features`` (0 = finest) of each RoI's level.
        strides: ``L`` strides of ``features``.
        output_size: ``(S_h, S_w)``.
        sampling_ratio: samples per bin axis (``>= 1``).
        aligned: as in :func:`tf_rcnn.ops.roi_align.roi_align`.

    Returns:
        ``[P, S_h, S_w, C]`` float32 in RoI order.
    """
    out_h, out_w = output_size
    sr = int(sampling_ratio)
    padded = [replicate_pad(tf.cast(f, tf.float32)) for f in features]
    shapes = [tf.shape(p) for p in padded]
    channels = shapes[0][3]
    flat = tf.concat([tf.reshape(p, tf.stack([-1, channels])) for p in padded], axis=0)
    heights = tf.stack([s[1] for s in shapes])  # [L] padded heights
    widths = tf.stack([s[2] for s in shapes])
    sizes = tf.stack([s[0] * s[1] * s[2] for s in shapes])
    offsets = tf.cumsum(sizes, exclusive=True)  # [L] first row of each level
    level_indices = tf.cast(level_indices, tf.int32)
    height = tf.gather(heights, level_indices)  # [P]
    width = tf.gather(widths, level_indices)
    base = tf.gather(offsets, level_indices) + tf.cast(image_indices, tf.int32) * height * width
    scale = tf.gather(tf.constant([1.0 / s for s in strides], tf.float32), level_indices)

    y0, x0, box_h, box_w = scaled_rois(tf.cast(rois, tf.float32), scale, aligned)
    # Sample i of n = S * sr sits at the centre of its sub-cell: start + (i + 0.5) * extent / n;
    # + 1 for the replicated row/column in front of the map.
    grid_h = (tf.range(out_h * sr, dtype=tf.float32) + 0.5) / float(out_h * sr)
    grid_w = (tf.range(out_w * sr, dtype=tf.float32) + 0.5) / float(out_w * sr)
    ys = y0[:, None] + grid_h[None, :] * box_h[:, None] + 1.0
    xs = x0[:, None] + grid_w[None, :] * box_w[:, None] + 1.0
    samples = bilinear_gather(flat, base, height, width, ys, xs)  # [P, S_h*sr, S_w*sr, C]
    return average_bins(samples, sr)
