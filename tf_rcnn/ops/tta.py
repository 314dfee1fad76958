"""Test-time augmentation (TTA) arithmetic: views of a padded batch, boxes between a view and
the network input, and merging the views' detections.

A view of a batch is the network input horizontally flipped (optional) and then resized by a
scale FACTOR (relative to the network input, whose shorter side is already the recipe's
``data.scales``). The flip mirrors each image inside its own true width (``image_shape``), so
the zero padding stays bottom/right; the resize scales the whole padded canvas and pads the
result again to a multiple of ``size_divisor``. The per-axis scale actually applied is the
rounded canvas size over the old one (``scale [2]`` (y, x)), so mapping boxes back is exact.
In a batch of mixed sizes, an image smaller than the canvas has its last row / column blended
with the zero padding by the bilinear resize (about half an output pixel per unit of factor);
images that fill the canvas are resampled as if alone.

Merging: the union of every view's detections (boxes in network-input pixels), then per-class
NMS (``merge="nms"``) or the same NMS followed by weighted box voting (``merge="vote"``: each
kept box becomes the score-weighted mean of the boxes of its class in the union whose IoU with
it is at least the threshold, itself included; its score stays the kept box's, Gidaris and
Komodakis 2015, Sec. 3.2 of "Object detection via a multi-region & semantic
segmentation-aware CNN model").

Conventions: boxes ``[y1, x1, y2, x2]`` float32 pixels, no ``+1``; classes 1..K, 0 padding.
Shape shorthand: B batch, H/W padded size, N union rows, D detections per image, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops import nms as nms_ops

MERGE_METHODS = ("nms", "vote")


def view_list(scales: Sequence[float], flip: bool) -> list[tuple[float, bool]]:
    """The views ``(scale factor, flipped)``: every scale unflipped, then every scale flipped
    when ``flip``."""
    views = [(float(s), False) for s in scales]
    return views + ([(float(s), True) for s in scales] if flip else [])


def flip_images(images: tf.Tensor, widths: tf.Tensor) -> tf.Tensor:
    """Mirrors each image of ``images [B, H, W, C]`` inside its true width ``widths [B]``
    (column ``x < w`` comes from ``w - 1 - x``; padding columns stay where they are)."""
    columns = tf.range(tf.shape(images)[2])[tf.newaxis, :]  # [1, W]
    w = tf.cast(widths, tf.int32)[:, tf.newaxis]  # [B, 1]
    source = tf.where(columns < w, w - 1 - columns, columns)  # [B, W]
    return tf.gather(images, source, axis=2, batch_dims=1)


def resize_images(images: tf.Tensor, image_shape: tf.Tensor, factor: float,
                  size_divisor: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Resizes a padded batch by ``factor`` (bilinear) and pads it to ``size_divisor``.

    Args:
        images: ``[B, H, W, C]`` float32, zero-padded bottom/right.
        image_shape: ``[B, 2]`` int32 true sizes.
        factor: the scale factor; 1.0 returns the inputs untouched.
        size_divisor: the new canvas is padded to multiples of it.

    Returns:
        ``(images [B, H', W', C], image_shape [B, 2] int32, scale [2] float32 (y, x))`` with
        ``scale = round(H * factor) / H`` (and likewise for W): view pixels = input * scale.
    """
    if float(factor) == 1.0:
        return images, tf.cast(image_shape, tf.int32), tf.ones([2], tf.float32)
    hw = tf.shape(images)[1:3]
    new_hw = tf.maximum(tf.cast(tf.round(tf.cast(hw, tf.float32) * float(factor)), tf.int32), 1)
    scale = tf.cast(new_hw, tf.float32) / tf.cast(hw, tf.float32)
    resized = tf.image.resize(tf.cast(images, tf.float32), new_hw, method="bilinear")
    divisor = max(int(size_divisor), 1)
    padded_hw = (new_hw + divisor - 1) // divisor * divisor
    pad = padded_hw - new_hw
    resized = tf.pad(resized, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]])
    shape = tf.cast(tf.round(tf.cast(image_shape, tf.float32) * scale), tf.int32)
    shape = tf.clip_by_value(shape, 1, new_hw[tf.newaxis, :])
    return resized, shape, scale


def boxes_to_view(boxes: tf.Tensor, scale: tf.Tensor, widths: tf.Tensor,
                  flipped: bool) -> tf.Tensor:
    """Network-input ``boxes [B, N, 4]`` -> pixels of a view: mirrored in the image's width
    ``widths [B]`` when ``flipped`` (``x' = w - x``), then times ``scale [2]`` (y, x)."""
    boxes = tf.cast(boxes, tf.float32)
    if flipped:
        boxes = box_ops.flip_left_right(boxes, tf.cast(widths, tf.float32)[:, tf.newaxis])
    scale = tf.cast(scale, tf.float32)
    return boxes * tf.concat([scale, scale], axis=-1)


def boxes_from_view(boxes: tf.Tensor, scale: tf.Tensor, image_shape: tf.Tensor,
                    flipped: bool) -> tf.Tensor:
    """Inverse of :func:`boxes_to_view`, clipped to the network-input ``image_shape [B, 2]``:
    divided by ``scale [2]``, then mirrored back in the image's width when ``flipped``."""
    scale = tf.cast(scale, tf.float32)
    boxes = tf.cast(boxes, tf.float32) / tf.concat([scale, scale], axis=-1)
    image_shape = tf.cast(image_shape, tf.float32)
    if flipped:
        boxes = box_ops.flip_left_right(boxes, image_shape[:, 1:2])
    return box_ops.clip_boxes(boxes, image_shape)


def vote_boxes(kept_boxes: tf.Tensor, kept_classes: tf.Tensor, boxes: tf.Tensor,
               scores: tf.Tensor, classes: tf.Tensor, iou_threshold: float) -> tf.Tensor:
    """Weighted box voting: each kept box -> the score-weighted mean of its cluster.

    The cluster of kept box d is every union row n with ``classes[n] == kept_classes[d]``,
    ``scores[n] > 0`` and ``IoU(kept d, n) >= iou_threshold`` (the kept box itself is a row of
    the union, so a valid kept box always has a cluster). Padding rows (class 0) stay as given.

    Args:
        kept_boxes: ``[B, D, 4]``; kept_classes ``[B, D]`` int32 (0 padding).
        boxes, scores, classes: the union ``[B, N, 4]``, ``[B, N]``, ``[B, N]`` int32.
        iou_threshold: cluster IoU, in [0, 1].

    Returns:
        ``[B, D, 4]`` voted boxes.
    """
    overlap = box_ops.iou(kept_boxes, boxes)  # [B, D, N]
    same = tf.equal(kept_classes[:, :, tf.newaxis], tf.cast(classes, tf.int32)[:, tf.newaxis, :])
    member = same & (overlap >= float(iou_threshold)) & (scores[:, tf.newaxis, :] > 0.0)
    weights = tf.where(member, scores[:, tf.newaxis, :], 0.0)  # [B, D, N]
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)  # [B, D, 1]
    voted = tf.math.divide_no_nan(tf.matmul(weights, boxes), total)  # [B, D, 4]
    return tf.where((kept_classes > 0)[..., tf.newaxis] & (total > 0.0), voted, kept_boxes)


def merge_detections(boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor,
                     num_classes: int, max_detections: int, iou_threshold: float = 0.5,
                     method: str = "nms") -> dict:
    """Merges the union of the views' detections into one set per image.

    Args:
        boxes: ``[B, N, 4]`` network-input pixels; scores ``[B, N]``; classes ``[B, N]`` int32
            (0 marks padding rows, whose scores must be 0).
        num_classes: K.
        max_detections: D, rows of the output.
        iou_threshold: per-class NMS IoU (and the voting cluster IoU).
        method: ``"nms"`` or ``"vote"`` (module docstring).

    Returns:
        ``detection_boxes [B, D, 4]``, ``detection_scores [B, D]`` (best first),
        ``detection_classes [B, D]`` int32 (0 padding), ``num_detections [B]`` int32.
    """
    if method not in MERGE_METHODS:
        raise ValueError(f"method must be one of {MERGE_METHODS}, got {method!r}.")
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    # Per-class NMS through the one per-class NMS: a box's score sits in its class's column.
    per_class = tf.one_hot(classes - 1, int(num_classes), dtype=tf.float32)  # class 0 -> zeros
    result = nms_ops.multiclass_nms(
        boxes[:, :, tf.newaxis, :], per_class * scores[..., tf.newaxis],
        max_per_class=max_detections, max_total=max_detections, iou_threshold=iou_threshold,
        score_threshold=0.0)
    kept = result.boxes
    if method == "vote":
        kept = vote_boxes(kept, result.classes, boxes, scores, classes, iou_threshold)
    return {
        "detection_boxes": kept,
        "detection_scores": result.scores,
        "detection_classes": tf.cast(result.classes, tf.int32),
        "num_detections": tf.cast(result.num_valid, tf.int32),
    }
