"""Anchor boxes: per-size/aspect-ratio base anchors tiled over the cells of each feature map.

Conventions (docs/design.md):
    Boxes are float32 ``[y1, x1, y2, x2]`` in pixels of the network input image, width
    ``x2 - x1`` (no legacy ``+1``). Aspect ratio is ``h / w``.

Shape shorthand:
    A anchors per cell (``len(sizes) * len(aspect_ratios)``), H/W feature-map height/width,
    L levels, N anchors over all levels, B batch.

Order:
    Within a level, anchor ``a`` of cell ``(y, x)`` is row ``(y * W + x) * A + a`` (row-major
    cells, then anchors), the layout an ``[B, H, W, A * 4]`` head output reshapes to. Base
    anchors are size-major: ``a = size_index * len(aspect_ratios) + ratio_index``. Levels are
    concatenated fine to coarse.

Cell offset:
    The anchor of cell ``(y, x)`` at stride ``s`` is centred at ``((y + offset) * s,
    (x + offset) * s)``. The default ``offset=0.5`` puts the centre in the middle of the
    ``s x s`` block of input pixels the cell covers: with continuous pixel coordinates
    (pixel ``i`` spans ``[i, i + 1)``, boxes without ``+1``), cell ``y`` covers
    ``[y * s, (y + 1) * s)``, whose centre is ``(y + 0.5) * s``. It is also the sampling
    convention of aligned RoIAlign, so the anchor grid and the feature grid agree. ``offset=0``
    (the legacy Detectron/py-faster-rcnn grid, centred on the top-left corner of each block)
    is kept for reproducing old numbers; it shifts every anchor by half a stride up and left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf


def generate_base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float],
                          round_coordinates: bool = False) -> tf.Tensor:
    """Anchors of every (size, aspect ratio) pair centred at ``(0, 0)``.

    An anchor of size ``s`` and ratio ``r = h / w`` has ``h = s * sqrt(r)`` and
    ``w = s / sqrt(r)``, so its area is ``s**2`` whatever the ratio (Faster R-CNN, Sec. 3.1.1).

    Args:
        sizes: positive anchor sizes in pixels (square root of the area).
        aspect_ratios: positive ratios ``h / w``.
        round_coordinates: round each coordinate to the nearest integer, halves to even
            (torchvision's ``AnchorGenerator``); by default coordinates are not rounded.

    Returns:
        ``[A, 4]`` float32 ``[y1, x1, y2, x2]``, ``A = len(sizes) * len(aspect_ratios)``,
        size-major (all ratios of ``sizes[0]`` first).

    Raises:
        ValueError: empty or non-positive ``sizes`` / ``aspect_ratios``.
    """
    sizes = [float(s) for s in sizes]
    aspect_ratios = [float(r) for r in aspect_ratios]
    if not sizes or any(not s > 0 for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of positive numbers, got {sizes}.")
    if not aspect_ratios or any(not r > 0 for r in aspect_ratios):
        raise ValueError(
            f"aspect_ratios must be a non-empty list of positive numbers (h / w), "
            f"got {aspect_ratios}."
        )
    rows = []
    for size in sizes:
        for ratio in aspect_ratios:
            half_h = 0.5 * size * math.sqrt(ratio)
            half_w = 0.5 * size / math.sqrt(ratio)
            rows.append([-half_h, -half_w, half_h, half_w])
    if round_coordinates:
        rows = np.round(np.asarray(rows, np.float32))  # halves to even, like torch.round
    return tf.constant(rows, tf.float32)


def grid_anchors(
    base_anchors: tf.Tensor,
    feature_height: int | tf.Tensor,
    feature_width: int | tf.Tensor,
    stride: float,
    offset: float = 0.5,
) -> tf.Tensor:
    """Tile ``base_anchors`` over an ``H x W`` feature map of the given stride.

    Args:
        base_anchors: ``[A, 4]`` float32 ``[y1, x1, y2, x2]`` centred at ``(0, 0)``.
        feature_height: ``H``, a Python int or a scalar int tensor (dynamic shapes work).
        feature_width: ``W``, likewise.
        stride: input pixels per feature cell.
        offset: cell-centre offset in units of the stride (see the module docstring).

    Returns:
        ``[H * W * A, 4]`` float32 anchors, row ``(y * W + x) * A + a``.
    """
    base_anchors = tf.convert_to_tensor(base_anchors, tf.float32)
    stride = float(stride)
    ys = (tf.cast(tf.range(feature_height), tf.float32) + offset) * stride  # [H]
    xs = (tf.cast(tf.range(feature_width), tf.float32) + offset) * stride  # [W]
    # meshgrid "ij": [H, W] each, y varies along rows.
    shift_y, shift_x = tf.meshgrid(ys, xs, indexing="ij")
    shifts = tf.stack([shift_y, shift_x, shift_y, shift_x], axis=-1)  # [H, W, 4]
    # [H, W, 1, 4] + [1, 1, A, 4] -> [H, W, A, 4] -> [H * W * A, 4] (row-major cells, then a)
    anchors = shifts[:, :, None, :] + base_anchors[None, None, :, :]
    return tf.reshape(anchors, [-1, 4])


def _check_levels(feature_shapes: Sequence, strides: Sequence, sizes_per_level: Sequence) -> None:
    if not (len(feature_shapes) == len(strides) == len(sizes_per_level)):
        raise ValueError(
            "feature_shapes, strides and sizes_per_level need one entry per level; got "
            f"{len(feature_shapes)}, {len(strides)} and {len(sizes_per_level)} entries."
        )
    if len(strides) == 0:
        raise ValueError("At least one feature level is needed (strides is empty).")


def multilevel_anchors(
    feature_shapes: Sequence[tuple[int | tf.Tensor, int | tf.Tensor]],
    strides: Sequence[float],
    sizes_per_level: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float],
    offset: float = 0.5,
    round_coordinates: bool = False,
) -> tf.Tensor:
    """Anchors of all levels, concatenated fine to coarse.

    Args:
        feature_shapes: ``[(H_l, W_l), ...]`` per level, ints or scalar int tensors.
        strides: stride of each level in input pixels.
        sizes_per_level: anchor sizes of each level (e.g. ``[[32], [64], ...]`` for FPN or
            ``[[128, 256, 512]]`` for a single C4 level).
        aspect_ratios: ratios ``h / w`` shared by all levels.
        offset: cell-centre offset (see the module docstring).
        round_coordinates: round the base anchors (:func:`generate_base_anchors`).

    Returns:
        ``[N, 4]`` float32 anchors, ``N = sum_l H_l * W_l * A_l``.
    """
    _check_levels(feature_shapes, strides, sizes_per_level)
    per_level = []
    for (height, width), stride, sizes in zip(
        feature_shapes, strides, sizes_per_level, strict=True
    ):
        base = generate_base_anchors(sizes, aspect_ratios, round_coordinates)
        per_level.append(grid_anchors(base, height, width, stride, offset))
    return tf.concat(per_level, axis=0)


def num_anchors_per_level(
    feature_shapes: Sequence[tuple[int | tf.Tensor, int | tf.Tensor]],
    num_anchors_per_location: int | Sequence[int],
) -> list[int | tf.Tensor]:
    """Number of anchors ``H_l * W_l * A_l`` of each level (to split ``[B, N, ...]`` per level).

    Args:
        feature_shapes: ``[(H_l, W_l), ...]`` per level, ints or scalar int tensors.
        num_anchors_per_location: ``A`` shared by all levels, or one ``A_l`` per level.

    Returns:
        One count per level: Python ints for static shapes, scalar int32 tensors otherwise.
    """
    if isinstance(num_anchors_per_location, int):
        per_location = [num_anchors_per_location] * len(feature_shapes)
    else:
        per_location = [int(a) for a in num_anchors_per_location]
    if len(per_location) != len(feature_shapes):
        raise ValueError(
            f"num_anchors_per_location has {len(per_location)} entries for "
            f"{len(feature_shapes)} levels; pass one int or one per level."
        )
    return [h * w * a for (h, w), a in zip(feature_shapes, per_location, strict=True)]


def inside_image_mask(
    anchors: tf.Tensor, image_shape: tf.Tensor, allowed_border: float = 0.0
) -> tf.Tensor:
    """Which anchors lie inside each image (up to ``allowed_border`` pixels outside).

    Faster R-CNN (Sec. 3.1.3) ignores anchors that cross the image boundary during training;
    with padded batches the boundary is each image's true size, not the padded one.

    Args:
        anchors: ``[N, 4]`` float32 ``[y1, x1, y2, x2]`` pixels, shared by the batch.
        image_shape: ``[B, 2]`` int32 true ``(height, width)`` of each image.
        allowed_border: how far (pixels) an anchor may stick out; ``float("inf")`` keeps all.

    Returns:
        ``[B, N]`` bool, True for anchors fully inside ``[-border, H + border] x
        [-border, W + border]``.
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    image_shape = tf.cast(tf.convert_to_tensor(image_shape), tf.float32)
    if image_shape.shape.rank != 2:
        raise ValueError(
            f"image_shape must be [B, 2] (one (height, width) per image), got shape "
            f"{image_shape.shape}; use image_shape[None] for a single image."
        )
    border = float(allowed_border)
    height = image_shape[:, 0:1]  # [B, 1]
    width = image_shape[:, 1:2]
    y1, x1, y2, x2 = (anchors[None, :, i] for i in range(4))  # each [1, N]
    return (
        (y1 >= -border) & (x1 >= -border) & (y2 <= height + border) & (x2 <= width + border)
    )
