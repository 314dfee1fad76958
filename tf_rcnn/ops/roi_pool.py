"""Fast R-CNN RoI max pooling (Girshick 2015, Sec. 2.1) and SPPnet's pyramid of it.

Conventions:
    ``rois [B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels; features NHWC
    with static H and W; ``spatial_scale = 1 / stride``. The numbers equal torchvision's
    ``roi_pool`` (checked against ``tests/reference/numpy_roi.py``).

Shape shorthand:
    B batch, R RoIs per image, H/W feature map height/width, C channels, S pooled size
    (``S_h x S_w`` when not square), n one pyramid grid size.

How: a 2-D sparse table (range-maximum table over power-of-two windows) of the feature map; the
max over any rectangle is the max of four overlapping table entries, so every bin of every RoI
is four gathers whatever the RoI size, and the gradient flows to the arg-max. The quantised-bin
rule (:func:`quantized_bins`) is shared with PS-RoI average pooling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from tf_rcnn.backend import builtin_ops_only_enabled
from tf_rcnn.ops.builtin_roi_pool import power_of_two, table_quantized_bins
from tf_rcnn.ops.roi_align import check_roi_inputs, check_spatial_scale, pair_size


def _round_half_away(x: tf.Tensor) -> tf.Tensor:
    """C ``round()``: halves go away from zero (``tf.round`` rounds half to even)."""
    magnitude = tf.abs(x)
    base = tf.floor(magnitude)
    rounded = base + tf.cast(magnitude - base >= 0.5, x.dtype)
    return tf.sign(x) * rounded


def quantized_bins(
    start: tf.Tensor, end: tf.Tensor, num_bins: int, limit: tf.Tensor, plus_one: bool,
    map_size: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Fast R-CNN quantised bins along one axis.

    Args:
        start: ``[...]`` float32 RoI start on the feature map (already scaled).
        end: ``[...]`` float32 RoI end.
        num_bins: pooled size along this axis.
        limit: int32 scalar; bin bounds are clipped to ``[0, limit]``.
        plus_one: RoI size is ``end - start + 1`` (roi_pool) instead of ``end - start``
            (ps_roi_pool); both are forced to ``>= 1``.
        map_size: static map size along this axis; needed only by the builtin-only variant
            (``tf_rcnn.ops.builtin_roi_pool.table_quantized_bins``, LiteRT export).

    Returns:
        ``(lo, hi)`` int32 ``[..., num_bins]``: bin ``p`` covers cells ``lo <= i < hi``
        (empty when ``hi <= lo``).
    """
    start_q = _round_half_away(start)
    end_q = _round_half_away(end)
    if builtin_ops_only_enabled():  # LiteRT export: no float64 (ops/builtin_roi_pool.py)
        if map_size is None:
            raise ValueError("RoI pooling in a LiteRT export needs feature maps of static "
                             "height and width (a fixed export input size).")
        return table_quantized_bins(start_q, end_q, num_bins, limit, plus_one, int(map_size))
    size = end_q - start_q + (1.0 if plus_one else 0.0)
    size = tf.maximum(size, 1.0)
    # The reference kernels compute bin bounds in IEEE float32: bin = fl(size / S) and the bound
    # fl(p * bin), e.g. 3 * fl(7 / 3) rounds to exactly 7.0. TF's graph optimiser may turn a
    # float32 division into a multiplication by the reciprocal (giving 7.0000005 and one extra
    # cell), so emulate the float32 rounding explicitly: both operations are exact in float64
    # for these small integers and are then rounded once to float32 by a cast.
    def to_f32(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.cast(x, tf.float32), tf.float64)

    bin_size = to_f32(tf.cast(size, tf.float64) / float(num_bins))[..., None]
    index = tf.range(num_bins, dtype=tf.float64)
    offset = tf.cast(start_q, tf.float64)[..., None]
    lo = tf.floor(to_f32(index * bin_size)) + offset
    hi = tf.math.ceil(to_f32((index + 1.0) * bin_size)) + offset
    limit_f = tf.cast(limit, tf.float64)
    lo = tf.clip_by_value(lo, 0.0, limit_f)
    hi = tf.clip_by_value(hi, 0.0, limit_f)
    return tf.cast(lo, tf.int32), tf.cast(hi, tf.int32)


def _floor_log2(n: tf.Tensor) -> tf.Tensor:
    """``floor(log2(n))`` for int32 ``n >= 1``, exact for powers of two up to 2**20."""
    return tf.cast(tf.floor(tf.math.log(tf.cast(n, tf.float32)) / math.log(2.0) + 1e-5), tf.int32)


def _sparse_table_2d(features: tf.Tensor) -> tuple[tf.Tensor, int, int]:
    """Range-maximum table: ``T[i, j, b, y, x] = max(features[b, y:y+2**i, x:x+2**j])``.

    Args:
        features: ``[B, H, W, C]`` with static ``H`` and ``W``.

    Returns:
        ``([LH, LW, B, H, W, C] table, LH, LW)`` where ``LH = floor(log2 H) + 1``. Entries whose
        window runs off the map are only partially defined; queries never read them.
    """
    height, width = features.shape[1], features.shape[2]
    levels_h = int(math.floor(math.log2(height))) + 1
    levels_w = int(math.floor(math.log2(width))) + 1
    lowest = features.dtype.min

    def shifted_max(x: tf.Tensor, shift: int, axis: int) -> tf.Tensor:
        # max(x[p], x[p + shift]) along `axis`, padding the tail with the lowest value.
        size = x.shape[axis]
        head = tf.gather(x, tf.range(shift, size), axis=axis)
        pad_shape = tf.concat(
            [tf.shape(x)[:axis], [min(shift, size)], tf.shape(x)[axis + 1:]], axis=0
        )
        tail = tf.fill(pad_shape, tf.constant(lowest, x.dtype))
        return tf.maximum(x, tf.concat([head, tail], axis=axis))

    rows = [features]
    for i in range(1, levels_h):
        rows.append(shifted_max(rows[-1], 2 ** (i - 1), axis=1))
    table = []
    for row in rows:
        cols = [row]
        for j in range(1, levels_w):
            cols.append(shifted_max(cols[-1], 2 ** (j - 1), axis=2))
        table.append(tf.stack(cols, axis=0))
    return tf.stack(table, axis=0), levels_h, levels_w


def _static_hw(features: tf.Tensor, fname: str) -> tuple[int, int]:
    height, width = features.shape[1], features.shape[2]
    if height is None or width is None:
        raise ValueError(
            f"{fname}: the feature map height and width must be static (known when the graph is "
            f"traced), got shape {features.shape}. Pad images to a fixed size or give the "
            f"tf.function an input_signature with fixed H and W."
        )
    return int(height), int(width)


def _roi_max_pool_from_table(
    table: tf.Tensor,
    levels: tuple[int, int],
    features_shape: tuple[int, int, tf.Tensor, tf.Tensor],
    rois: tf.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
) -> tf.Tensor:
    """RoI max pooling queries on a :func:`_sparse_table_2d` table -> ``[B, R, S_h, S_w, C]``."""
    levels_h, levels_w = levels
    height, width, batch, channels = features_shape
    out_h, out_w = output_size
    num_rois = tf.shape(rois)[1]
    scaled = rois * tf.constant(spatial_scale, tf.float32)
    y1, x1, y2, x2 = tf.unstack(scaled, 4, axis=-1)  # each [B, R]
    h_lo, h_hi = quantized_bins(y1, y2, out_h, tf.constant(height), plus_one=True,
                                map_size=height)
    w_lo, w_hi = quantized_bins(x1, x2, out_w, tf.constant(width), plus_one=True,
                                map_size=width)
    h_len = tf.maximum(h_hi - h_lo, 1)
    w_len = tf.maximum(w_hi - w_lo, 1)
    level_h = tf.minimum(_floor_log2(h_len), levels_h - 1)  # [B, R, S_h]
    level_w = tf.minimum(_floor_log2(w_len), levels_w - 1)  # [B, R, S_w]
    # Two overlapping windows of 2**level per axis cover [lo, hi) exactly.
    if builtin_ops_only_enabled():  # LiteRT export: no LEFT_SHIFT (ops/builtin_roi_pool.py)
        span_h = power_of_two(level_h, levels_h - 1)
        span_w = power_of_two(level_w, levels_w - 1)
    else:
        span_h = tf.bitwise.left_shift(1, level_h)
        span_w = tf.bitwise.left_shift(1, level_w)
    rows = [h_lo, tf.maximum(h_hi - span_h, 0)]
    cols = [w_lo, tf.maximum(w_hi - span_w, 0)]
    image = tf.range(batch)[:, None, None, None]  # [B, 1, 1, 1]
    # Flat row index into the table reshaped to [LH*LW*B*H*W, C]; every term is [B, R, S_h, S_w].
    level_index = level_h[..., :, None] * levels_w + level_w[..., None, :]
    flat_table = tf.reshape(table, [-1, channels])
    result = None
    for row in rows:
        for col in cols:
            index = ((level_index * batch + image) * height + row[..., :, None]) * width
            index = index + col[..., None, :]
            value = tf.gather(flat_table, index)  # [B, R, S_h, S_w, C]
            result = value if result is None else tf.maximum(result, value)
    empty = tf.logical_or((h_hi <= h_lo)[..., :, None], (w_hi <= w_lo)[..., None, :])
    pooled = tf.where(empty[..., None], tf.zeros_like(result), result)
    return tf.reshape(pooled, [batch, num_rois, out_h, out_w, channels])


def roi_pool(
    features: tf.Tensor,
    rois: tf.Tensor,
    output_size: int | Sequence[int],
    spatial_scale: float,
) -> tf.Tensor:
    """Fast R-CNN RoI max pooling (Girshick 2015, Sec. 2.1) over quantised bins.

    The RoI corners are scaled and rounded (halves away from zero), the RoI size is
    ``max(end - start + 1, 1)`` feature cells, bin ``p`` covers cells
    ``[floor(p * size / S), ceil((p + 1) * size / S))`` offset by the start and clipped to the
    map; an empty bin gives 0. The gradient goes to the arg-max cell of each bin.

    Args:
        features: ``[B, H, W, C]`` float feature map; ``H`` and ``W`` must be static.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.
        output_size: ``S`` or ``(S_h, S_w)``.
        spatial_scale: ``1 / stride`` of ``features``.

    Returns:
        ``[B, R, S_h, S_w, C]`` in the dtype of ``features``.
    """
    features, rois = check_roi_inputs(features, rois, "roi_pool")
    size = pair_size(output_size)
    check_spatial_scale(spatial_scale)
    height, width = _static_hw(features, "roi_pool")
    table, levels_h, levels_w = _sparse_table_2d(features)
    shape = (height, width, tf.shape(features)[0], tf.shape(features)[3])
    return _roi_max_pool_from_table(
        table, (levels_h, levels_w), shape, rois, size, spatial_scale
    )


def roi_pool_pyramid(
    features: tf.Tensor,
    rois: tf.Tensor,
    pyramid_levels: Sequence[int],
    spatial_scale: float,
) -> list[tf.Tensor]:
    """:func:`roi_pool` at several grid sizes sharing one range-maximum table (SPPnet).

    Returns:
        One ``[B, R, n, n, C]`` tensor per ``n`` in ``pyramid_levels``.
    """
    features, rois = check_roi_inputs(features, rois, "roi_pool_pyramid")
    check_spatial_scale(spatial_scale)
    height, width = _static_hw(features, "roi_pool_pyramid")
    table, levels_h, levels_w = _sparse_table_2d(features)
    shape = (height, width, tf.shape(features)[0], tf.shape(features)[3])
    return [
        _roi_max_pool_from_table(
            table, (levels_h, levels_w), shape, rois, pair_size(n, "pyramid_levels"), spatial_scale
        )
        for n in pyramid_levels
    ]

