"""Region-of-interest feature extraction: RoIAlign, RoI max pooling, position-sensitive pooling.

Conventions (DESIGN.md):
    ``rois [B, R, 4]`` are float32 ``[y1, x1, y2, x2]`` boxes in pixels of the network input
    image; ``spatial_scale = 1 / stride`` maps them onto a feature map. Feature maps are NHWC.
    A feature-map coordinate ``y`` addresses the continuous position where pixel ``(i, j)`` has
    its centre at ``(i, j)`` after the RoIAlign ``-0.5`` shift (``aligned=True``), as in
    Detectron2 ROIAlignV2 / torchvision ``roi_align(aligned=True)``.
    Every function returns the same numbers as the torchvision CPU kernels of the same name
    (checked against the independent NumPy references in ``tests/reference/numpy_roi.py``).

Shape shorthand:
    B batch, R RoIs per image, H/W feature map height/width, C channels, S pooled size
    (``S_h x S_w`` when not square), k position-sensitive grid, L pyramid levels,
    sr sampling ratio (``sr x sr`` bilinear samples per output bin).

Implementation notes:
    * RoIAlign is one ``tf.image.crop_and_resize`` call for all images and RoIs. That op samples
      corner-aligned: crop row ``i`` of ``n`` reads image row ``y1 * (H - 1) + i * (y2 - y1) *
      (H - 1) / (n - 1)`` and returns the extrapolation value outside ``[0, H - 1]``. We ask
      it for exactly the RoIAlign sample points (``n = S * sr`` per axis, first and last sample
      as the crop box) on a map padded by one replicated edge pixel on each side. The padding
      reproduces the reference boundary rule: samples in ``[-1, 0]`` (and ``[H - 1, H]``) read
      the edge row (clamping), samples outside ``[-1, H]`` fall outside the padded map and give
      0. A zero pad would be wrong there (it would blend towards 0 instead of clamping).
      ``sr x sr`` average pooling then averages the samples of each bin.
    * RoI max pooling uses a 2-D sparse table (range-maximum table over power-of-two windows):
      the max over any rectangle is the max of four overlapping table entries, so every bin of
      every RoI is four gathers, whatever the RoI size, and the gradient flows to the arg-max.
    * PS RoI pooling (average) uses a summed-area table in float64: four gathers per bin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

# Samples per bin axis when the caller asks for ``sampling_ratio=2`` (Detectron2 default).
DEFAULT_SAMPLING_RATIO = 2


def _pair(output_size: int | Sequence[int], name: str = "output_size") -> tuple[int, int]:
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


def _check_inputs(features: tf.Tensor, rois: tf.Tensor, fname: str) -> tuple[tf.Tensor, tf.Tensor]:
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


def _check_scale(spatial_scale: float, sampling_ratio: int | None = None) -> None:
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be > 0 (1 / stride), got {spatial_scale!r}.")
    if sampling_ratio is not None and (int(sampling_ratio) != sampling_ratio or sampling_ratio < 1):
        raise ValueError(
            f"sampling_ratio must be an int >= 1 (samples per bin axis), got {sampling_ratio!r}."
        )


def _flat_batch_indices(rois: tf.Tensor) -> tf.Tensor:
    """``[B, R, 4] -> [B*R]`` int32 image index of each RoI (0,..,0, 1,..,1, ...)."""
    shape = tf.shape(rois)
    batch, num_rois = shape[0], shape[1]
    return tf.repeat(tf.range(batch, dtype=tf.int32), num_rois)


def _replicate_pad(images: tf.Tensor) -> tf.Tensor:
    """Pad ``[N, H, W, C]`` by one copy of the edge pixel on each spatial side."""
    return tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")


def _sample_grid(
    padded: tf.Tensor,
    first: tf.Tensor,
    last: tf.Tensor,
    box_indices: tf.Tensor,
    crop_size: tuple[int, int],
) -> tf.Tensor:
    """Bilinear samples on a uniform grid, with the RoIAlign boundary rule.

    Args:
        padded: ``[N, H + 2, W + 2, C]`` feature maps padded by :func:`_replicate_pad`.
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
    return tf.image.crop_and_resize(
        padded, boxes, box_indices, crop_size, method="bilinear", extrapolation_value=0.0
    )


def _average_bins(samples: tf.Tensor, sampling_ratio: int) -> tf.Tensor:
    """Mean of each ``sr x sr`` block: ``[P, S_h*sr, S_w*sr, C] -> [P, S_h, S_w, C]``.

    ``avg_pool2d`` with stride ``sr``; measured 10x faster on CPU than ``reduce_mean`` over the
    strided axes of a ``[P, S_h, sr, S_w, sr, C]`` reshape (benchmarks/ops.py, 1000 RoIs).
    """
    if sampling_ratio == 1:
        return samples
    return tf.nn.avg_pool2d(samples, sampling_ratio, sampling_ratio, "VALID")


def _scaled_rois(
    rois: tf.Tensor, spatial_scale: float, aligned: bool
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Map ``[..., 4]`` pixel RoIs onto the feature map: ``(y_start, x_start, height, width)``."""
    offset = 0.5 if aligned else 0.0
    scaled = rois * tf.constant(spatial_scale, tf.float32) - offset
    y1, x1, y2, x2 = tf.unstack(scaled, 4, axis=-1)
    height = y2 - y1
    width = x2 - x1
    if not aligned:
        # Legacy RoIAlign: malformed RoIs are forced to be at least 1x1 feature pixel.
        height = tf.maximum(height, 1.0)
        width = tf.maximum(width, 1.0)
    return y1, x1, height, width


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
    features, rois = _check_inputs(features, rois, "roi_align")
    out_h, out_w = _pair(output_size)
    _check_scale(spatial_scale, sampling_ratio)
    sr = int(sampling_ratio)
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = tf.shape(features)[3]

    flat_rois = tf.reshape(rois, [-1, 4])  # [B, R, 4] -> [B*R, 4]
    y0, x0, height, width = _scaled_rois(flat_rois, spatial_scale, aligned)
    step_y = height / float(out_h * sr)
    step_x = width / float(out_w * sr)
    first = tf.stack([y0 + 0.5 * step_y, x0 + 0.5 * step_x], axis=-1)
    last = tf.stack(
        [y0 + (out_h * sr - 0.5) * step_y, x0 + (out_w * sr - 0.5) * step_x], axis=-1
    )
    padded = _replicate_pad(tf.cast(features, tf.float32))
    samples = _sample_grid(
        padded, first, last, _flat_batch_indices(rois), (out_h * sr, out_w * sr)
    )
    pooled = _average_bins(samples, sr)  # [B*R, S_h, S_w, C]
    pooled = tf.reshape(pooled, [batch, num_rois, out_h, out_w, channels])
    return tf.cast(pooled, features.dtype)


def _round_half_away(x: tf.Tensor) -> tf.Tensor:
    """C ``round()``: halves go away from zero (``tf.round`` rounds half to even)."""
    magnitude = tf.abs(x)
    base = tf.floor(magnitude)
    rounded = base + tf.cast(magnitude - base >= 0.5, x.dtype)
    return tf.sign(x) * rounded


def _quantized_bins(
    start: tf.Tensor, end: tf.Tensor, num_bins: int, limit: tf.Tensor, plus_one: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """Fast R-CNN quantised bins along one axis.

    Args:
        start: ``[...]`` float32 RoI start on the feature map (already scaled).
        end: ``[...]`` float32 RoI end.
        num_bins: pooled size along this axis.
        limit: int32 scalar; bin bounds are clipped to ``[0, limit]``.
        plus_one: RoI size is ``end - start + 1`` (roi_pool) instead of ``end - start``
            (ps_roi_pool); both are forced to ``>= 1``.

    Returns:
        ``(lo, hi)`` int32 ``[..., num_bins]``: bin ``p`` covers cells ``lo <= i < hi``
        (empty when ``hi <= lo``).
    """
    start_q = _round_half_away(start)
    end_q = _round_half_away(end)
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
    h_lo, h_hi = _quantized_bins(y1, y2, out_h, tf.constant(height), plus_one=True)
    w_lo, w_hi = _quantized_bins(x1, x2, out_w, tf.constant(width), plus_one=True)
    h_len = tf.maximum(h_hi - h_lo, 1)
    w_len = tf.maximum(w_hi - w_lo, 1)
    level_h = tf.minimum(_floor_log2(h_len), levels_h - 1)  # [B, R, S_h]
    level_w = tf.minimum(_floor_log2(w_len), levels_w - 1)  # [B, R, S_w]
    # Two overlapping windows of 2**level per axis cover [lo, hi) exactly.
    rows = [h_lo, tf.maximum(h_hi - tf.bitwise.left_shift(1, level_h), 0)]
    cols = [w_lo, tf.maximum(w_hi - tf.bitwise.left_shift(1, level_w), 0)]
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
    features, rois = _check_inputs(features, rois, "roi_pool")
    size = _pair(output_size)
    _check_scale(spatial_scale)
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
    features, rois = _check_inputs(features, rois, "roi_pool_pyramid")
    _check_scale(spatial_scale)
    height, width = _static_hw(features, "roi_pool_pyramid")
    table, levels_h, levels_w = _sparse_table_2d(features)
    shape = (height, width, tf.shape(features)[0], tf.shape(features)[3])
    return [
        _roi_max_pool_from_table(
            table, (levels_h, levels_w), shape, rois, _pair(n, "pyramid_levels"), spatial_scale
        )
        for n in pyramid_levels
    ]


def _check_ps_channels(score_maps: tf.Tensor, k: int, fname: str) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"{fname}: k (the position-sensitive grid size) must be an int >= 1.")
    depth = score_maps.shape[-1]
    if depth is not None and depth % (k * k) != 0:
        raise ValueError(
            f"{fname}: score_maps has {depth} channels, which is not a multiple of k*k = {k * k}. "
            f"The R-FCN head must output k*k*C channels (bin (i, j) of class c at channel "
            f"(c*k + i)*k + j)."
        )


def _group_by_bin(score_maps: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``[B, H, W, k*k*C] -> [B*k*k, H, W, C]`` with image ``b*k*k + i*k + j`` holding bin (i, j).

    Returns the regrouped maps and ``C`` (int32 scalar).
    """
    shape = tf.shape(score_maps)
    batch, height, width = shape[0], shape[1], shape[2]
    channels = shape[3] // (k * k)
    # Channel (c*k + i)*k + j: [B, H, W, k*k*C] -> [B, H, W, C, k, k] -> [B, k, k, H, W, C].
    maps = tf.reshape(score_maps, [batch, height, width, channels, k, k])
    maps = tf.transpose(maps, [0, 4, 5, 1, 2, 3])
    return tf.reshape(maps, [batch * k * k, height, width, channels]), channels


def _bin_image_indices(batch: tf.Tensor, num_rois: tf.Tensor, k: int) -> tf.Tensor:
    """``[B, R, k, k]`` int32 index ``b*k*k + i*k + j`` into :func:`_group_by_bin` maps."""
    image = tf.range(batch)[:, None, None, None] * (k * k)
    cell = tf.reshape(tf.range(k * k), [1, 1, k, k])
    return tf.broadcast_to(image + cell, [batch, num_rois, k, k])


def ps_roi_align(
    score_maps: tf.Tensor,
    rois: tf.Tensor,
    k: int,
    spatial_scale: float,
    sampling_ratio: int = DEFAULT_SAMPLING_RATIO,
) -> tf.Tensor:
    """Position-sensitive RoIAlign (R-FCN, Dai et al. 2016, with RoIAlign bins).

    Bin ``(i, j)`` of output channel ``c`` averages ``sampling_ratio**2`` bilinear samples of
    score-map channel ``(c*k + i)*k + j`` (aligned: coordinates shifted by ``-0.5``, no minimum
    RoI size; the same boundary rule as :func:`roi_align`).

    Args:
        score_maps: ``[B, H, W, k*k*C]`` position-sensitive score maps.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.
        k: position-sensitive grid size.
        spatial_scale: ``1 / stride`` of ``score_maps``.
        sampling_ratio: samples per bin along each axis, ``>= 1``.

    Returns:
        ``[B, R, k, k, C]`` in the dtype of ``score_maps``. Use :func:`vote` to get ``[B, R, C]``.
    """
    score_maps, rois = _check_inputs(score_maps, rois, "ps_roi_align")
    _check_ps_channels(score_maps, k, "ps_roi_align")
    _check_scale(spatial_scale, sampling_ratio)
    sr = int(sampling_ratio)
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    maps, channels = _group_by_bin(tf.cast(score_maps, tf.float32), k)

    y0, x0, height, width = _scaled_rois(rois, spatial_scale, aligned=True)  # each [B, R]
    bin_h = height / float(k)
    bin_w = width / float(k)
    cells = tf.range(k, dtype=tf.float32)
    # Bin starts [B, R, k] per axis; samples sit at start + (s + 0.5) * bin / sr.
    bin_y = y0[..., None] + cells * bin_h[..., None]
    bin_x = x0[..., None] + cells * bin_w[..., None]
    first_y = bin_y + 0.5 * (bin_h / sr)[..., None]
    last_y = bin_y + (sr - 0.5) * (bin_h / sr)[..., None]
    first_x = bin_x + 0.5 * (bin_w / sr)[..., None]
    last_x = bin_x + (sr - 0.5) * (bin_w / sr)[..., None]
    grid = [batch, num_rois, k, k]
    grid = [batch, num_rois, k, k]

    def points(rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
        # [B, R, k] (rows) and [B, R, k] (cols) -> [B, R, k, k, 2] -> [B*R*k*k, 2].
        rows = tf.broadcast_to(rows[..., :, None], grid)
        cols = tf.broadcast_to(cols[..., None, :], grid)
        return tf.reshape(tf.stack([rows, cols], axis=-1), [-1, 2])

    indices = tf.reshape(_bin_image_indices(batch, num_rois, k), [-1])
    samples = _sample_grid(
        _replicate_pad(maps),
        points(first_y, first_x),
        points(last_y, last_x),
        indices,
        (sr, sr),
    )  # [B*R*k*k, sr, sr, C]
    pooled = tf.reduce_mean(samples, axis=[1, 2])
    pooled = tf.reshape(pooled, [batch, num_rois, k, k, channels])
    return tf.cast(pooled, score_maps.dtype)


def ps_roi_pool(
    score_maps: tf.Tensor,
    rois: tf.Tensor,
    k: int,
    spatial_scale: float,
) -> tf.Tensor:
    """Position-sensitive RoI average pooling (R-FCN, Dai et al. 2016, Eq. 1).

    Bin ``(i, j)`` of output channel ``c`` is the mean of score-map channel ``(c*k + i)*k + j``
    over quantised bins defined as in torchvision ``ps_roi_pool``: rounded RoI corners, RoI size
    ``max(end - start, 1)``, bin ``[floor(p * size / k), ceil((p + 1) * size / k))`` offset by the
    start and clipped to ``[0, H - 1]`` (so the last row/column of the map is never read, a
    quirk of that kernel kept for identical numbers); an empty bin gives 0.

    Args:
        score_maps: ``[B, H, W, k*k*C]`` position-sensitive score maps.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.
        k: position-sensitive grid size.
        spatial_scale: ``1 / stride`` of ``score_maps``.

    Returns:
        ``[B, R, k, k, C]`` in the dtype of ``score_maps``.
    """
    score_maps, rois = _check_inputs(score_maps, rois, "ps_roi_pool")
    _check_ps_channels(score_maps, k, "ps_roi_pool")
    _check_scale(spatial_scale)
    shape = tf.shape(score_maps)
    height, width = shape[1], shape[2]
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    maps, channels = _group_by_bin(score_maps, k)  # [B*k*k, H, W, C]
    # Summed-area table in float64 (exact enough for 1e-4 on large bins), zero row/col first:
    # sat[n, y, x] = sum(maps[n, :y, :x]).
    sat = tf.cumsum(tf.cumsum(tf.cast(maps, tf.float64), axis=1), axis=2)
    sat = tf.pad(sat, [[0, 0], [1, 0], [1, 0], [0, 0]])

    scaled = rois * tf.constant(spatial_scale, tf.float32)
    y1, x1, y2, x2 = tf.unstack(scaled, 4, axis=-1)  # each [B, R]
    h_lo, h_hi = _quantized_bins(y1, y2, k, height - 1, plus_one=False)  # [B, R, k]
    w_lo, w_hi = _quantized_bins(x1, x2, k, width - 1, plus_one=False)
    grid = [batch, num_rois, k, k]
    image = _bin_image_indices(batch, num_rois, k)
    top = tf.broadcast_to(h_lo[..., :, None], grid)
    bottom = tf.broadcast_to(h_hi[..., :, None], grid)
    left = tf.broadcast_to(w_lo[..., None, :], grid)
    right = tf.broadcast_to(w_hi[..., None, :], grid)

    def corner(rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
        return tf.gather_nd(sat, tf.stack([image, rows, cols], axis=-1))  # [B, R, k, k, C]

    total = corner(bottom, right) - corner(top, right) - corner(bottom, left) + corner(top, left)
    area = tf.cast((bottom - top) * (right - left), tf.float64)
    empty = tf.logical_or(bottom <= top, right <= left)
    mean = tf.math.divide_no_nan(total, tf.maximum(area, 1.0)[..., None])
    mean = tf.where(empty[..., None], tf.zeros_like(mean), mean)
    return tf.reshape(tf.cast(mean, score_maps.dtype), [batch, num_rois, k, k, channels])


def vote(pooled: tf.Tensor) -> tf.Tensor:
    """R-FCN voting: mean over the ``k x k`` bins, ``[B, R, k, k, C] -> [B, R, C]``."""
    return tf.reduce_mean(pooled, axis=[2, 3])


def assign_fpn_levels(
    rois: tf.Tensor,
    min_level: int,
    max_level: int,
    canonical_level: int = 4,
    canonical_size: float = 224.0,
) -> tf.Tensor:
    """FPN level of each RoI (Lin et al. 2017, Eq. 1): ``floor(k0 + log2(sqrt(w*h) / 224))``.

    Args:
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` pixel boxes.
        min_level: smallest pyramid level (e.g. 2 for P2), the result is clipped to it.
        max_level: largest pyramid level (e.g. 5 for P5).
        canonical_level: ``k0``, the level of a ``canonical_size`` box.
        canonical_size: ImageNet pre-training size, 224.

    Returns:
        ``[B, R]`` int32 levels in ``[min_level, max_level]``. Degenerate boxes (area 0) get
        ``min_level``; a box exactly at a power-of-two boundary goes to the upper level (a
        ``1e-6`` guard absorbs float32 rounding of ``log2``).
    """
    if min_level > max_level:
        raise ValueError(f"min_level ({min_level}) must be <= max_level ({max_level}).")
    if not canonical_size > 0:
        raise ValueError(f"canonical_size must be > 0, got {canonical_size!r}.")
    rois = tf.convert_to_tensor(rois, tf.float32)
    height = tf.maximum(rois[..., 2] - rois[..., 0], 0.0)
    width = tf.maximum(rois[..., 3] - rois[..., 1], 0.0)
    size = tf.sqrt(tf.maximum(height * width, 1e-12))
    log2 = tf.math.log(size / float(canonical_size)) / math.log(2.0)
    level = tf.floor(float(canonical_level) + log2 + 1e-6)
    level = tf.clip_by_value(level, float(min_level), float(max_level))
    return tf.cast(level, tf.int32)


def _levels_from_strides(strides: Sequence[int]) -> list[int]:
    levels = []
    for stride in strides:
        level = int(round(math.log2(stride))) if stride > 0 else -1
        if stride <= 0 or 2**level != stride:
            raise ValueError(f"strides must be powers of two (e.g. [4, 8, 16, 32]), got {strides}.")
        levels.append(level)
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(
            f"strides must be consecutive pyramid levels ordered fine to coarse, got {strides}."
        )
    return levels


def multilevel_roi_align(
    features: Sequence[tf.Tensor],
    rois: tf.Tensor,
    output_size: int | Sequence[int],
    strides: Sequence[int],
    sampling_ratio: int = DEFAULT_SAMPLING_RATIO,
    aligned: bool = True,
    canonical_level: int = 4,
    canonical_size: float = 224.0,
) -> tf.Tensor:
    """RoIAlign of each RoI on its FPN level (see :func:`assign_fpn_levels`).

    RoIs are partitioned by level with ``tf.where`` + ``gather``, each level pools only its own
    RoIs in one ``crop_and_resize`` call, and ``tf.dynamic_stitch`` puts the results back in RoI
    order. ``benchmarks/ops.py`` compares it with pooling every RoI on every level and selecting
    (1000 RoIs, 7x7, P2-P5 of an 800x800 image, 256 channels, 2 CPU cores, TF 2.21): 71 ms vs
    192 ms forward, 148 ms vs 471 ms forward+backward, so the partition is kept.

    Args:
        features: list of ``L`` maps ``[B, H_l, W_l, C]`` ordered fine to coarse.
        rois: ``[B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels.
        output_size: ``S`` or ``(S_h, S_w)``.
        strides: ``L`` strides, consecutive powers of two (e.g. ``[4, 8, 16, 32]``).
        sampling_ratio, aligned: as in :func:`roi_align`.
        canonical_level, canonical_size: as in :func:`assign_fpn_levels`.

    Returns:
        ``[B, R, S_h, S_w, C]`` in the dtype of ``features[0]``.
    """
    features = list(features)
    strides = list(strides)
    if len(features) != len(strides) or not features:
        raise ValueError(
            f"features ({len(features)} maps) and strides ({len(strides)}) must be non-empty "
            f"lists of the same length, ordered fine to coarse."
        )
    levels = _levels_from_strides(strides)
    out_h, out_w = _pair(output_size)
    _check_scale(1.0, sampling_ratio)
    sr = int(sampling_ratio)
    features_0, rois = _check_inputs(features[0], rois, "multilevel_roi_align")
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = tf.shape(features_0)[3]

    roi_levels = tf.reshape(
        assign_fpn_levels(rois, levels[0], levels[-1], canonical_level, canonical_size), [-1]
    )
    flat_rois = tf.reshape(rois, [-1, 4])  # [B, R, 4] -> [B*R, 4]
    image_index = _flat_batch_indices(rois)
    positions, pooled = [], []
    for level, stride, level_features in zip(levels, strides, features, strict=True):
        selected = tf.cast(tf.reshape(tf.where(tf.equal(roi_levels, level)), [-1]), tf.int32)
        level_rois = tf.gather(flat_rois, selected)  # [n_l, 4]
        y0, x0, height, width = _scaled_rois(level_rois, 1.0 / stride, aligned)
        step_y = height / float(out_h * sr)
        step_x = width / float(out_w * sr)
        first = tf.stack([y0 + 0.5 * step_y, x0 + 0.5 * step_x], axis=-1)
        last = tf.stack(
            [y0 + (out_h * sr - 0.5) * step_y, x0 + (out_w * sr - 0.5) * step_x], axis=-1
        )
        samples = _sample_grid(
            _replicate_pad(tf.cast(level_features, tf.float32)),
            first,
            last,
            tf.gather(image_index, selected),
            (out_h * sr, out_w * sr),
        )
        positions.append(selected)
        pooled.append(_average_bins(samples, sr))  # [n_l, S_h, S_w, C]
    merged = tf.dynamic_stitch(positions, pooled)  # [B*R, S_h, S_w, C] in RoI order
    merged = tf.reshape(merged, [batch, num_rois, out_h, out_w, channels])
    return tf.cast(merged, features_0.dtype)
