"""RoIAlign (He et al., Mask R-CNN, Sec. 3) on one feature map, and the core every RoIAlign uses.

Conventions:
    ``rois [B, R, 4]`` are float32 ``[y1, x1, y2, x2]`` boxes in pixels of the network input
    image; ``spatial_scale = 1 / stride`` maps them onto a feature map. Feature maps are NHWC.
    With ``aligned=True`` a box coordinate ``y`` maps to feature coordinate
    ``y * spatial_scale - 0.5``, where feature pixel ``i`` has its centre at ``i`` (Detectron2
    ROIAlignV2 / torchvision ``roi_align(aligned=True)``).
    The numbers equal the torchvision CPU kernel of the same name (checked against the
    independent NumPy reference in ``tests/reference/numpy_roi.py``).

Shape shorthand:
    B batch, R RoIs per image, P boxes over the batch, H/W feature map height/width,
    C channels, S pooled size (``S_h x S_w`` when not square), sr sampling ratio
    (``sr x sr`` bilinear samples per output bin).

How: :func:`align_rois` is one ``tf.image.crop_and_resize`` call for all boxes. That op samples
corner-aligned: crop row ``i`` of ``n`` reads image row ``y1 * (H - 1) + i * (y2 - y1) *
(H - 1) / (n - 1)`` and returns the extrapolation value outside ``[0, H - 1]``. It is asked for
exactly the RoIAlign sample points (``n = S * sr`` per axis, first and last sample as the crop
box) on a map padded by one replicated edge pixel on each side. The padding reproduces the
reference boundary rule: samples in ``[-1, 0]`` (and ``[H - 1, H]``) read the edge row
(clamping), samples outside ``[-1, H]`` fall outside the padded map and give 0 (a zero pad would
blend towards 0 instead of clamping). ``sr x sr`` average pooling then averages each bin.
:func:`tf_rcnn.ops.poolers.multilevel_roi_align` and
:func:`tf_rcnn.ops.ps_roi_pool.ps_roi_align` reuse these building blocks. Inside
``tf_rcnn.backend.builtin_ops_only()`` (a LiteRT export) the crop is the gather-based twin of
``crop_and_resize`` (:mod:`tf_rcnn.ops.crop_and_resize`), same sample points.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_rcnn.ops.crop_and_resize import crop_and_resize

DEFAULT_SAMPLING_RATIO = 2


def pair_size(output_size: int | Sequence[int], name: str = "output_size") -> tuple[int, int]:
    """``7 -> (7, 7)``; ``(7, 5) -> (7, 5)``; validates positivity."""
    if isinstance(output_size, int):
        size = (output_size, output_size)
    else:
        size = tuple(int(s) for s in output_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"{name} must be a positive int or a pair of positive ints (height, width), "
            f"got {output_size!r}."
        )
    return size  # type: ignore[return-value]


def check_roi_inputs(
    features: tf.Tensor, rois: tf.Tensor, fname: str
) -> tuple[tf.Tensor, tf.Tensor]:
    features = tf.convert_to_tensor(features)
    rois = tf.convert_to_tensor(rois, tf.float32)
    if features.shape.rank is not None and features.shape.rank != 4:
        raise ValueError(
            f"{fname}: features must be a [B, H, W, C] NHWC tensor, got shape {features.shape}."
        )
    if rois.shape.rank is not None and (rois.shape.rank != 3 or rois.shape[-1] not in (4, None)):
        raise ValueError(
            f"{fname}: rois must be [B, R, 4] [y1, x1, y2, x2] pixel boxes, got shape "
            f"{rois.shape}. Add a batch axis with tf.expand_dims(rois, 0) for one image."
        )
    return features, rois


def check_spatial_scale(spatial_scale: float, sampling_ratio: int | None = None) -> None:
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be > 0 (1 / stride), got {spatial_scale!r}.")
    if sampling_ratio is not None and (int(sampling_ratio) != sampling_ratio or sampling_ratio < 1):
        raise ValueError(
            f"sampling_ratio must be an int >= 1 (samples per bin axis), got {sampling_ratio!r}."
        )


def flat_batch_indices(rois: tf.Tensor) -> tf.Tensor:
    """``[B, R, 4] -> [B*R]`` int32 image index of each RoI (0,..,0, 1,..,1, ...)."""
    shape = tf.shape(rois)
    batch, num_rois = shape[0], shape[1]
    return tf.repeat(tf.range(batch, dtype=tf.int32), num_rois)


def replicate_pad(images: tf.Tensor) -> tf.Tensor:
    """Pad ``[N, H, W, C]`` by one copy of the edge pixel on each spatial side."""
    return tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")


def sample_grid(
    padded: tf.Tensor,
    first: tf.Tensor,
    last: tf.Tensor,
    box_indices: tf.Tensor,
    crop_size: tuple[int, int],
) -> tf.Tensor:
    """Bilinear samples on a uniform grid, with the RoIAlign boundary rule.

    Args:
        padded: ``[N, H + 2, W + 2, C]`` feature maps padded by :func:`replicate_pad`.
        first: ``[P, 2]`` float32 ``(y, x)`` of the first sample in unpadded map coordinates.
        last: ``[P, 2]`` float32 ``(y, x)`` of the last sample.
        box_indices: ``[P]`` int32 index into ``padded``'s first axis.
        crop_size: ``(n_h, n_w)`` samples per axis, evenly spaced from first to last.

    Returns:
        ``[P, n_h, n_w, C]`` float32.
    """
    shape = tf.shape(padded)
    # Unpadded coordinate y is padded row y + 1; crop_and_resize normalises by (size - 1).
    denom = tf.cast(tf.stack([shape[1] - 1, shape[2] - 1]), tf.float32)
    start = (first + 1.0) / denom
    end = (last + 1.0) / denom
    boxes = tf.concat([start, end], axis=-1)  # [P, 4] normalised [y1, x1, y2, x2]
    # tf.image.crop_and_resize, or its builtin-only twin for a LiteRT export.
    return crop_and_resize(padded, boxes, box_indices, crop_size)


def average_bins(samples: tf.Tensor, sampling_ratio: int) -> tf.Tensor:
    """Mean of each ``sr x sr`` block: ``[P, S_h*sr, S_w*sr, C] -> [P, S_h, S_w, C]``.

    ``avg_pool2d`` with stride ``sr``; measured 10x faster on CPU than ``reduce_mean`` over the
    strided axes of a ``[P, S_h, sr, S_w, sr, C]`` reshape (benchmarks/ops.py, 1000 RoIs).
    """
    if sampling_ratio == 1:
        return samples
    return tf.nn.avg_pool2d(samples, sampling_ratio, sampling_ratio, "VALID")


def scaled_rois(
    rois: tf.Tensor, spatial_scale: float | tf.Tensor, aligned: bool
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Map ``[..., 4]`` pixel RoIs onto the feature map: ``(y_start, x_start, height, width)``.
    ``spatial_scale`` is one float, or ``[P]`` per-RoI scales for ``[P, 4]`` RoIs of several
    FPN levels."""
    offset = 0.5 if aligned else 0.0
    scale = tf.convert_to_tensor(spatial_scale, tf.float32)
    if scale.shape.rank == 1:
        scale = scale[:, None]
    scaled = rois * scale - offset
    y1, x1, y2, x2 = tf.unstack(scaled, 4, axis=-1)
    height = y2 - y1
    width = x2 - x1
    if not aligned:
        # Legacy RoIAlign: malformed RoIs are forced to be at least 1x1 feature pixel.
        height = tf.maximum(height, 1.0)
        width = tf.maximum(width, 1.0)
    return y1, x1, height, width


def align_rois(
    features: tf.Tensor,
    rois: tf.Tensor,
    image_indices: tf.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> tf.Tensor:
    """The RoIAlign core every RoIAlign path uses (one map, or one FPN level at a time).

    Args:
        features: ``[N, H, W, C]`` feature maps (any float dtype; sampled in float32).
        rois: ``[P, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.
        image_indices: ``[P]`` int32 index of each box's map in ``features``.
        output_size: ``(S_h, S_w)``.
        spatial_scale: ``1 / stride`` of ``features``.
        sampling_ratio: samples per bin along each axis, ``>= 1``.
        aligned: see :func:`roi_align`.

    Returns:
        ``[P, S_h, S_w, C]`` float32.
    """
    out_h, out_w = output_size
    sr = int(sampling_ratio)
    y0, x0, height, width = scaled_rois(rois, spatial_scale, aligned)
    step_y = height / float(out_h * sr)
    step_x = width / float(out_w * sr)
    # Sample (i, j) of the RoI's (S_h*sr) x (S_w*sr) grid sits at the centre of its sub-cell.
    first = tf.stack([y0 + 0.5 * step_y, x0 + 0.5 * step_x], axis=-1)
    last = tf.stack(
        [y0 + (out_h * sr - 0.5) * step_y, x0 + (out_w * sr - 0.5) * step_x], axis=-1
    )
    samples = sample_grid(
        replicate_pad(tf.cast(features, tf.float32)), first, last, image_indices,
        (out_h * sr, out_w * sr),
    )
    return average_bins(samples, sr)


def roi_align(
    features: tf.Tensor,
    rois: tf.Tensor,
    output_size: int | Sequence[int],
    spatial_scale: float,
    sampling_ratio: int = DEFAULT_SAMPLING_RATIO,
    aligned: bool = True,
) -> tf.Tensor:
    """RoIAlign (He et al. 2017, Mask R-CNN Sec. 3) with a fixed sampling ratio.

    Each output bin averages ``sampling_ratio x sampling_ratio`` bilinear samples at the centres
    of a regular sub-grid of the bin. Samples outside ``[-1, H] x [-1, W]`` count as 0, samples
    in ``[-1, 0]`` are clamped to the first row/column (the Caffe2/torchvision rule).

    Args:
        features: ``[B, H, W, C]`` feature map (float32, or a float type castable to it).
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.
        output_size: ``S`` or ``(S_h, S_w)``.
        spatial_scale: ``1 / stride`` of ``features``.
        sampling_ratio: samples per bin along each axis, ``>= 1``.
        aligned: ``True`` (ROIAlignV2) shifts scaled coordinates by ``-0.5`` so that a box
            ``[0, 0, 2, 2]`` at stride 1 covers pixel centres 0 and 1; ``False`` is the legacy
            variant (no shift, RoI size forced to ``>= 1`` feature pixel).

    Returns:
        ``[B, R, S_h, S_w, C]`` pooled features in the dtype of ``features``.
    """
    features, rois = check_roi_inputs(features, rois, "roi_align")
    out_h, out_w = pair_size(output_size)
    check_spatial_scale(spatial_scale, sampling_ratio)
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = tf.shape(features)[3]
    flat_rois = tf.reshape(rois, [-1, 4])  # [B, R, 4] -> [B*R, 4]
    pooled = align_rois(features, flat_rois, flat_batch_indices(rois), (out_h, out_w),
                        spatial_scale, sampling_ratio, aligned)  # [B*R, S_h, S_w, C]
    pooled = tf.reshape(pooled, [batch, num_rois, out_h, out_w, channels])
    return tf.cast(pooled, features.dtype)
