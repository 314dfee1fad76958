"""Builtin-only twins of the quantised-bin RoI poolings (Fast R-CNN RoI max pooling, R-FCN
PS-RoI average pooling) for a LiteRT export.

The default paths compute bin bounds in float64 (to reproduce the reference kernels' float32
rounding whatever TensorFlow's graph optimiser does to a division) and PS-RoI average pooling
sums in a float64 summed-area table; TFLite has no float64 arithmetic, and RoI max pooling
shifts with ``tf.bitwise.left_shift``. Inside ``tf_rcnn.backend.builtin_ops_only()``:

- :func:`table_quantized_bins`: the bin offsets ``floor(fl(p * fl(size / S)))`` and
  ``ceil(fl((p + 1) * fl(size / S)))`` of every integer RoI size ``1..T`` are computed once in
  NumPy with exactly the default path's roundings and stored as int32 tables; each RoI reads its
  row with a ``GATHER``. ``T`` is four times the (static) map size plus 2, so every RoI inside the
  image is exact; a larger RoI reads row ``T`` (its bins are then clipped to the map anyway in
  almost every case).
- :func:`centered_ps_roi_pool`: the summed-area table in float32 of the maps minus their
  per-map, per-channel mean (so the running sums stay of the order of ``sqrt(H*W)`` times the
  spread instead of ``H*W`` times the level), the mean added back per non-empty bin.
- :func:`power_of_two`: ``2**n`` by a ``GATHER`` from a small table.

Shape shorthand: B batch, R RoIs, k / S pooled grid, H/W map size, C channels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _bin_tables(num_bins: int, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` int32 ``[max_size + 1, num_bins]`` offsets of each bin for RoI size ``s``
    (row 0 unused), rounded as :func:`tf_rcnn.ops.roi_pool.quantized_bins` rounds."""
    sizes = np.arange(max_size + 1, dtype=np.float64)
    # fl32(size / S) from the float64 quotient, then fl32(p * bin) from the exact float64
    # product: the default path's two roundings.
    bin_size = (sizes / float(num_bins)).astype(np.float32).astype(np.float64)[:, None]
    index = np.arange(num_bins, dtype=np.float64)[None, :]
    lo = np.floor((index * bin_size).astype(np.float32).astype(np.float64))
    hi = np.ceil(((index + 1.0) * bin_size).astype(np.float32).astype(np.float64))
    return lo.astype(np.int32), hi.astype(np.int32)


def table_quantized_bins(
    start_q: tf.Tensor, end_q: tf.Tensor, num_bins: int, limit: tf.Tensor, plus_one: bool,
    map_size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Quantised bins from rounded RoI ends (contract of ``roi_pool.quantized_bins``).

    Args:
        start_q: ``[...]`` float32 rounded RoI start; end_q the rounded end.
        num_bins: pooled size along this axis.
        limit: int32 scalar clip bound.
        plus_one: RoI size ``end - start + 1`` instead of ``end - start``.
        map_size: static map size along this axis (sizes the tables).

    Returns:
        ``(lo, hi)`` int32 ``[..., num_bins]``.
    """
    max_size = 4 * int(map_size) + 2
    lo_table, hi_table = _bin_tables(int(num_bins), max_size)
    size = end_q - start_q + (1.0 if plus_one else 0.0)
    row = tf.clip_by_value(tf.cast(size, tf.int32), 1, max_size)  # size >= 1 as the default
    offset = tf.cast(start_q, tf.int32)[..., None]
    lo = tf.gather(tf.constant(lo_table), row) + offset
    hi = tf.gather(tf.constant(hi_table), row) + offset
    limit = tf.cast(limit, tf.int32)
    return tf.clip_by_value(lo, 0, limit), tf.clip_by_value(hi, 0, limit)


def power_of_two(exponent: tf.Tensor, max_exponent: int) -> tf.Tensor:
    """``2**exponent`` for int32 ``0 <= exponent <= max_exponent`` (a table ``GATHER``)."""
    table = tf.constant([2**i for i in range(max_exponent + 1)], tf.int32)
    return tf.gather(table, exponent)


def centered_summed_area(maps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``[N, H, W, C]`` -> ``(sat [N, H + 1, W + 1, C] float32 of maps - mean, mean [N, C])``
    with ``sat[n, y, x] = sum((maps - mean)[n, :y, :x])``."""
    maps = tf.cast(maps, tf.float32)
    mean = tf.reduce_mean(maps, axis=[1, 2])  # [N, C]
    centered = maps - mean[:, None, None, :]
    sat = tf.cumsum(tf.cumsum(centered, axis=1), axis=2)
    return tf.pad(sat, [[0, 0], [1, 0], [1, 0], [0, 0]]), mean
