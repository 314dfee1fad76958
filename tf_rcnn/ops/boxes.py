"""Box arithmetic: areas, IoU, clipping, format conversions (the box coder is ``box_coder``).

Conventions:
    Boxes are float32 ``[y1, x1, y2, x2]`` in pixels of the image as fed to the network.
    Width is ``x2 - x1`` and height ``y2 - y1`` (no legacy ``+1``). Normalised coordinates
    (divided by the image height/width) appear only inside the RoI ops and in exported outputs.

Shape shorthand:
    ``...`` any leading batch dimensions, N and M box counts.

"""

from __future__ import annotations

import tensorflow as tf
from keras.utils import bounding_boxes


def area(boxes: tf.Tensor) -> tf.Tensor:
    """Area of ``boxes [..., 4]`` -> ``[...]``; degenerate boxes (y2 < y1) have area 0."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def intersection(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """Pairwise intersection areas: ``[..., N, 4] x [..., M, 4] -> [..., N, M]``."""
    boxes1 = tf.convert_to_tensor(boxes1, tf.float32)
    boxes2 = tf.convert_to_tensor(boxes2, tf.float32)
    # [..., N, 1] against [..., 1, M] broadcasts to [..., N, M].
    b1 = tf.expand_dims(boxes1, -2)
    b2 = tf.expand_dims(boxes2, -3)
    y1 = tf.maximum(b1[..., 0], b2[..., 0])
    x1 = tf.maximum(b1[..., 1], b2[..., 1])
    y2 = tf.minimum(b1[..., 2], b2[..., 2])
    x2 = tf.minimum(b1[..., 3], b2[..., 3])
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def iou(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """Pairwise intersection over union: ``[..., N, 4] x [..., M, 4] -> [..., N, M]``.

    Pairs whose union is empty (two degenerate boxes) get IoU 0, never NaN. Padded boxes
    (all -1, area 0) therefore have IoU 0 with everything.
    """
    inter = intersection(boxes1, boxes2)
    union = tf.expand_dims(area(boxes1), -1) + tf.expand_dims(area(boxes2), -2) - inter
    return tf.math.divide_no_nan(inter, union)


def ioa(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """Intersection over the area of ``boxes1``: ``[..., N, 4] x [..., M, 4] -> [..., N, M]``.

    Used for crowd regions: an anchor or proposal mostly inside a crowd box is ignored, as
    COCO evaluation treats a detection matched to a crowd region.
    """
    inter = intersection(boxes1, boxes2)
    return tf.math.divide_no_nan(inter, tf.expand_dims(area(boxes1), -1))


def _image_hw(image_shape: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Heights and widths from ``image_shape`` ``[2]`` or ``[..., 2]``, broadcastable to boxes.

    A per-image shape ``[B, 2]`` against boxes ``[B, N, 4]`` gets a box axis inserted.
    """
    image_shape = tf.cast(tf.convert_to_tensor(image_shape), tf.float32)
    rank_gap = boxes.shape.rank - 1 - (image_shape.shape.rank - 1)
    for _ in range(max(rank_gap, 0)):
        image_shape = tf.expand_dims(image_shape, -2)
    return image_shape[..., 0], image_shape[..., 1]


def clip_boxes(boxes: tf.Tensor, image_shape: tf.Tensor) -> tf.Tensor:
    """Clip ``boxes [..., N, 4]`` to ``[0, height] x [0, width]``.

    Args:
        boxes: ``[..., N, 4]`` float32 ``[y1, x1, y2, x2]`` pixels.
        image_shape: ``[2]`` (one shape for all) or ``[..., 2]`` (one per leading index, e.g.
            ``[B, 2]`` for ``[B, N, 4]`` boxes): the true ``(height, width)``.

    Returns:
        Clipped boxes, same shape.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height, width = _image_hw(image_shape, boxes)
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    y1 = tf.minimum(tf.maximum(y1, 0.0), height)
    y2 = tf.minimum(tf.maximum(y2, 0.0), height)
    x1 = tf.minimum(tf.maximum(x1, 0.0), width)
    x2 = tf.minimum(tf.maximum(x2, 0.0), width)
    return tf.stack([y1, x1, y2, x2], axis=-1)


def valid_size_mask(boxes: tf.Tensor, min_size: float = 0.0) -> tf.Tensor:
    """Boolean ``[...]``: boxes whose height and width are both at least ``min_size`` (and
    strictly positive when ``min_size`` is 0), torchvision's ``remove_small_boxes`` rule.
    Batched code keeps a fixed shape, so "remove small" is a mask the caller applies (e.g. by
    setting scores to -inf before NMS)."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    if min_size > 0:
        return tf.logical_and(height >= min_size, width >= min_size)
    return tf.logical_and(height > 0.0, width > 0.0)


def remove_small_boxes(
    boxes: tf.Tensor, scores: tf.Tensor, min_size: float = 0.0
) -> tf.Tensor:
    """Scores with boxes not larger than ``min_size`` set to ``-inf`` (shape kept).

    Args:
        boxes: ``[..., N, 4]``.
        scores: ``[..., N]`` float scores or logits.
        min_size: minimum height and width in pixels.
    """
    keep = valid_size_mask(boxes, min_size)
    return tf.where(keep, scores, tf.fill(tf.shape(scores), float("-inf")))


def yxyx_to_xyxy(boxes: tf.Tensor) -> tf.Tensor:
    """``[y1, x1, y2, x2] -> [x1, y1, x2, y2]`` (the order COCO tools and torchvision use).

    ``boxes`` is ``[..., 4]`` of known rank; the dtype is kept.
    """
    boxes = tf.convert_to_tensor(boxes)
    return _convert_format(boxes, "yxyx", "xyxy", boxes.dtype)


def xyxy_to_yxyx(boxes: tf.Tensor) -> tf.Tensor:
    """``[x1, y1, x2, y2] -> [y1, x1, y2, x2]`` (the swap is its own inverse)."""
    boxes = tf.convert_to_tensor(boxes)
    return _convert_format(boxes, "xyxy", "yxyx", boxes.dtype)


def yxyx_to_xywh(boxes: tf.Tensor) -> tf.Tensor:
    """``[y1, x1, y2, x2] -> [x, y, w, h]`` float32, the COCO json ``bbox`` format."""
    return _convert_format(tf.convert_to_tensor(boxes, tf.float32), "yxyx", "xywh", tf.float32)


def xywh_to_yxyx(boxes: tf.Tensor) -> tf.Tensor:
    """COCO ``[x, y, w, h] -> [y1, x1, y2, x2]`` float32."""
    return _convert_format(tf.convert_to_tensor(boxes, tf.float32), "xywh", "yxyx", tf.float32)


def _convert_format(boxes: tf.Tensor, source: str, target: str, dtype: tf.DType) -> tf.Tensor:
    """Keras' own converter: tests/ops/test_boxes.py checks it gives exactly the numbers of the
    definitions above (xywh: ``w = x2 - x1``, ``x2 = x + w``) for known-rank inputs."""
    if boxes.shape.rank is None:
        raise ValueError(
            "Box format conversion needs boxes of known rank [..., 4]; set the static shape "
            "(e.g. with tf.ensure_shape) before converting."
        )
    return bounding_boxes.convert_format(boxes, source=source, target=target, dtype=dtype.name)


def normalize(boxes: tf.Tensor, image_shape: tf.Tensor) -> tf.Tensor:
    """Pixel boxes to ``[0, 1]`` coordinates: divide y by height and x by width.

    ``image_shape`` is ``[2]`` or per-leading-index ``[..., 2]`` as in :func:`clip_boxes`.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height, width = _image_hw(image_shape, boxes)
    scale = tf.stack([height, width, height, width], axis=-1)
    return boxes / scale


def denormalize(boxes: tf.Tensor, image_shape: tf.Tensor) -> tf.Tensor:
    """``[0, 1]`` coordinates back to pixels: inverse of :func:`normalize`."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height, width = _image_hw(image_shape, boxes)
    scale = tf.stack([height, width, height, width], axis=-1)
    return boxes * scale


def flip_left_right(boxes: tf.Tensor, image_width: tf.Tensor) -> tf.Tensor:
    """Mirror ``boxes [..., 4]`` horizontally in an image of ``image_width`` pixels.

    ``x1' = W - x2`` and ``x2' = W - x1``: the pixel edge at x maps to W - x.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    width = tf.cast(image_width, tf.float32)
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    return tf.stack([y1, width - x2, y2, width - x1], axis=-1)
