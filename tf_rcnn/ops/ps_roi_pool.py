"""Position-sensitive RoI pooling and voting (Dai et al., R-FCN, 2016, Eq. 1-2).

Conventions:
    ``rois [B, R, 4]`` float32 ``[y1, x1, y2, x2]`` boxes in input-image pixels; score maps
    NHWC with ``k*k*C`` channels; bin ``(i, j)`` of output channel ``c`` reads score-map channel
    ``(c*k + i)*k + j`` (the R-FCN / torchvision layout), so the numbers equal torchvision
    ``ps_roi_align`` / ``ps_roi_pool`` (checked against ``tests/reference/numpy_roi.py``).
    Voting (the mean over the ``k x k`` bins) is the separate :func:`vote`.

Shape shorthand:
    B batch, R RoIs per image, H/W score map height/width, k position-sensitive grid,
    C output channels, sr sampling ratio.

How: the maps are regrouped so that each bin is one image of a ``[B*k*k, H, W, C]`` stack;
PS-RoIAlign samples it with the RoIAlign building blocks of :mod:`tf_rcnn.ops.roi_align`;
PS-RoI average pooling reads a summed-area table in float64 (four gathers per bin) over the
quantised bins of :func:`tf_rcnn.ops.roi_pool.quantized_bins`.
"""

from __future__ import annotations

import tensorflow as tf

from tf_rcnn.backend import builtin_ops_only_enabled
from tf_rcnn.ops.builtin_roi_pool import centered_summed_area
from tf_rcnn.ops.roi_align import (
    DEFAULT_SAMPLING_RATIO,
    check_roi_inputs,
    check_spatial_scale,
    replicate_pad,
    sample_grid,
    scaled_rois,
)
from tf_rcnn.ops.roi_pool import quantized_bins


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
    score_maps, rois = check_roi_inputs(score_maps, rois, "ps_roi_align")
    _check_ps_channels(score_maps, k, "ps_roi_align")
    check_spatial_scale(spatial_scale, sampling_ratio)
    sr = int(sampling_ratio)
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    maps, channels = _group_by_bin(tf.cast(score_maps, tf.float32), k)

    y0, x0, height, width = scaled_rois(rois, spatial_scale, aligned=True)  # each [B, R]
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

    def points(rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
        # [B, R, k] (rows) and [B, R, k] (cols) -> [B, R, k, k, 2] -> [B*R*k*k, 2].
        rows = tf.broadcast_to(rows[..., :, None], grid)
        cols = tf.broadcast_to(cols[..., None, :], grid)
        return tf.reshape(tf.stack([rows, cols], axis=-1), [-1, 2])

    indices = tf.reshape(_bin_image_indices(batch, num_rois, k), [-1])
    samples = sample_grid(
        replicate_pad(maps),
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
    score_maps, rois = check_roi_inputs(score_maps, rois, "ps_roi_pool")
    _check_ps_channels(score_maps, k, "ps_roi_pool")
    check_spatial_scale(spatial_scale)
    shape = tf.shape(score_maps)
    height, width = shape[1], shape[2]
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    maps, channels = _group_by_bin(score_maps, k)  # [B*k*k, H, W, C]
    builtin = builtin_ops_only_enabled()  # LiteRT export: no float64 (ops/builtin_roi_pool.py)
    if builtin:
        sat, map_mean = centered_summed_area(maps)
    else:
        # Summed-area table in float64 (exact enough for 1e-4 on large bins), zero row/col
        # first: sat[n, y, x] = sum(maps[n, :y, :x]).
        sat = tf.cumsum(tf.cumsum(tf.cast(maps, tf.float64), axis=1), axis=2)
        sat = tf.pad(sat, [[0, 0], [1, 0], [1, 0], [0, 0]])

    scaled = rois * tf.constant(spatial_scale, tf.float32)
    y1, x1, y2, x2 = tf.unstack(scaled, 4, axis=-1)  # each [B, R]
    h_lo, h_hi = quantized_bins(y1, y2, k, height - 1, plus_one=False,
                                map_size=score_maps.shape[1])  # [B, R, k]
    w_lo, w_hi = quantized_bins(x1, x2, k, width - 1, plus_one=False,
                                map_size=score_maps.shape[2])
    grid = [batch, num_rois, k, k]
    image = _bin_image_indices(batch, num_rois, k)
    top = tf.broadcast_to(h_lo[..., :, None], grid)
    bottom = tf.broadcast_to(h_hi[..., :, None], grid)
    left = tf.broadcast_to(w_lo[..., None, :], grid)
    right = tf.broadcast_to(w_hi[..., None, :], grid)

    def corner(rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
        return tf.gather_nd(sat, tf.stack([image, rows, cols], axis=-1))  # [B, R, k, k, C]

    total = corner(bottom, right) - corner(top, right) - corner(bottom, left) + corner(top, left)
    area = tf.cast((bottom - top) * (right - left), sat.dtype)
    if builtin:  # the centred table: add the map mean back, area times
        total = total + tf.gather(map_mean, image) * area[..., None]
    empty = tf.logical_or(bottom <= top, right <= left)
    mean = tf.math.divide_no_nan(total, tf.maximum(area, 1.0)[..., None])
    mean = tf.where(empty[..., None], tf.zeros_like(mean), mean)
    return tf.reshape(tf.cast(mean, score_maps.dtype), [batch, num_rois, k, k, channels])


def vote(pooled: tf.Tensor) -> tf.Tensor:
    """R-FCN voting: mean over the ``k x k`` bins, ``[B, R, k, k, C] -> [B, R, C]``."""
    return tf.reduce_mean(pooled, axis=[2, 3])

