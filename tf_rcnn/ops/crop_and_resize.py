"""Bilinear crops from gathers: the builtin-only twin of ``tf.image.crop_and_resize``.

``tf.image.crop_and_resize`` has no TFLite builtin (the converter emits ``FlexCropAndResize``,
which the stock LiteRT interpreter refuses). Every RoIAlign path (:mod:`tf_rcnn.ops.roi_align`,
PS-RoIAlign) and the inference resize (``tf_rcnn.data.pipeline.resize_image``) call
:func:`crop_and_resize` here: by default it IS ``tf.image.crop_and_resize`` (bilinear,
extrapolation 0), and inside ``tf_rcnn.backend.builtin_ops_only()`` it is
:func:`gather_crop_and_resize`, which computes the same numbers from ``GATHER`` of the four
bilinear taps and builtin arithmetic.

Conventions:
    Images NHWC; pixel ``i`` has its centre at coordinate ``i``; crop boxes are normalised
    ``[y1, x1, y2, x2]`` with ``y = 0`` the centre of the first row and ``y = 1`` the centre of
    the last (``tf.image.crop_and_resize``'s convention).

Shape shorthand:
    N images, H/W height/width, C channels, P boxes (or sample rows), n_h/n_w samples per axis,
    T rows of a flattened stack of maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_rcnn.backend import builtin_ops_only_enabled


def bilinear_gather(
    flat_maps: tf.Tensor,
    base: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    ys: tf.Tensor,
    xs: tf.Tensor,
) -> tf.Tensor:
    """Bilinear samples on a separable grid per row of ``ys`` / ``xs``, read by four gathers.

    A sample at ``(y, x)`` with ``0 <= y <= H - 1`` and ``0 <= x <= W - 1`` is
    ``sum_taps w * map[tap]`` over the taps ``(floor(y) or floor(y) + 1, floor(x) or
    floor(x) + 1)`` (clamped to the map) with the usual bilinear weights; a sample outside is 0
    (``crop_and_resize``'s ``extrapolation_value=0``).

    Args:
        flat_maps: ``[T, C]`` maps flattened row-major: pixel ``(y, x)`` of the map of sample
            row ``p`` is row ``base[p] + y * width[p] + x``.
        base: ``[P]`` int32 row of pixel ``(0, 0)`` of each sample row's map.
        height: ``[P]`` int32 map height of each sample row.
        width: ``[P]`` int32 map width.
        ys: ``[P, n_h]`` float32 row coordinates.
        xs: ``[P, n_w]`` float32 column coordinates.

    Returns:
        ``[P, n_h, n_w, C]`` float32.
    """
    flat_maps = tf.cast(flat_maps, tf.float32)

    def taps(coords: tf.Tensor, size: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # coords [P, n]; size [P] -> low/high int32 indices and their weights (0 outside).
        size_f = tf.cast(size, tf.float32)[:, None]
        inside = tf.logical_and(coords >= 0.0, coords <= size_f - 1.0)
        low_f = tf.floor(coords)
        frac = coords - low_f
        last = size[:, None] - 1
        low = tf.clip_by_value(tf.cast(low_f, tf.int32), 0, last)
        high = tf.minimum(low + 1, last)
        mask = tf.cast(inside, tf.float32)
        return low, high, (1.0 - frac) * mask, frac * mask

    y_low, y_high, wy_low, wy_high = taps(ys, height)  # [P, n_h]
    x_low, x_high, wx_low, wx_high = taps(xs, width)  # [P, n_w]
    row_base = base[:, None] + y_low * width[:, None], base[:, None] + y_high * width[:, None]
    result = None
    for row, wy in zip(row_base, (wy_low, wy_high), strict=True):
        for col, wx in zip((x_low, x_high), (wx_low, wx_high), strict=True):
            index = row[:, :, None] + col[:, None, :]  # [P, n_h, n_w]
            weight = wy[:, :, None] * wx[:, None, :]
            term = tf.gather(flat_maps, index) * weight[..., None]  # [P, n_h, n_w, C]
            result = term if result is None else result + term
    return result


def _crop_coordinates(start: tf.Tensor, end: tf.Tensor, size: tf.Tensor,
                      count: tf.Tensor) -> tf.Tensor:
    """``crop_and_resize``'s sample coordinates along one axis: ``[P] -> [P, count]``.

    ``count > 1``: ``start * (size - 1) + i * (end - start) * (size - 1) / (count - 1)``;
    ``count == 1``: the centre ``(start + end) / 2 * (size - 1)``.
    """
    extent = tf.cast(size, tf.float32) - 1.0
    count = tf.convert_to_tensor(count, tf.int32)
    step = (end - start) * extent / tf.cast(tf.maximum(count - 1, 1), tf.float32)
    index = tf.cast(tf.range(count), tf.float32)
    spaced = (start * extent)[:, None] + index[None, :] * step[:, None]
    centre = (0.5 * (start + end) * extent)[:, None] + 0.0 * index[None, :]
    return tf.where(count > 1, spaced, centre)


def gather_crop_and_resize(
    image: tf.Tensor,
    boxes: tf.Tensor,
    box_indices: tf.Tensor,
    crop_size: Sequence[int] | tf.Tensor,
) -> tf.Tensor:
    """``tf.image.crop_and_resize(..., method="bilinear", extrapolation_value=0)`` from
    builtin ops (``GATHER`` of the four taps, see :func:`bilinear_gather`).

    Args:
        image: ``[N, H, W, C]``.
        boxes: ``[P, 4]`` float32 normalised ``[y1, x1, y2, x2]`` (flipped boxes allowed).
        box_indices: ``[P]`` int32 index into ``image``.
        crop_size: ``(n_h, n_w)`` ints or an int32 ``[2]`` tensor.

    Returns:
        ``[P, n_h, n_w, C]`` float32.
    """
    image = tf.convert_to_tensor(image)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    box_indices = tf.cast(box_indices, tf.int32)
    crop_size = tf.convert_to_tensor(crop_size, tf.int32)
    shape = tf.shape(image)
    height, width, channels = shape[1], shape[2], shape[3]
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    ys = _crop_coordinates(y1, y2, height, crop_size[0])
    xs = _crop_coordinates(x1, x2, width, crop_size[1])
    ones = tf.ones_like(box_indices)
    flat = tf.reshape(image, tf.stack([-1, channels]))
    return bilinear_gather(flat, box_indices * height * width, ones * height, ones * width,
                           ys, xs)


def crop_and_resize(
    image: tf.Tensor,
    boxes: tf.Tensor,
    box_indices: tf.Tensor,
    crop_size: Sequence[int] | tf.Tensor,
) -> tf.Tensor:
    """Bilinear ``crop_and_resize`` with extrapolation value 0, as the export target asks.

    ``tf.image.crop_and_resize`` by default; :func:`gather_crop_and_resize` (TFLite builtins
    only) inside ``tf_rcnn.backend.builtin_ops_only()``. Arguments as
    :func:`gather_crop_and_resize`; returns ``[P, n_h, n_w, C]`` float32.
    """
    if builtin_ops_only_enabled():
        return gather_crop_and_resize(image, boxes, box_indices, crop_size)
    return tf.image.crop_and_resize(tf.cast(image, tf.float32), boxes, box_indices, crop_size,
                                    method="bilinear", extrapolation_value=0.0)
