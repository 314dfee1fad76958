"""The (dy, dx, dh, dw) box coder of R-CNN (Girshick et al. 2014, App. C) with target weights.

Conventions:
    Boxes are float32 ``[y1, x1, y2, x2]`` in pixels; width ``x2 - x1`` (no ``+1``).

Naming:
    ``deltas``: encoded regression targets/predictions ``(dy, dx, dh, dw)``;
    ``anchors``: the reference boxes the deltas are relative to (anchors or proposals);
    ``weights``: ``(wy, wx, wh, ww)`` multipliers, ``(1, 1, 1, 1)`` for the RPN and
    ``(10, 10, 5, 5)`` for the R-CNN head (Fast R-CNN target normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

# dh/dw are clamped at log(1000/16) before exp(), as in Detectron: no box grows more than
# 1000/16 times its anchor, which keeps exp() finite in early training.
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
RCNN_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)

_EPS = 1e-8


def _centers_sizes(boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    ctr_y = boxes[..., 0] + 0.5 * height
    ctr_x = boxes[..., 1] + 0.5 * width
    return ctr_y, ctr_x, height, width


def encode(
    boxes: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] = RPN_BOX_WEIGHTS
) -> tf.Tensor:
    """Encode ``boxes`` relative to ``anchors`` as ``(dy, dx, dh, dw)`` regression targets.

    ``dy = wy * (cy - cy_a) / h_a``, ``dx = wx * (cx - cx_a) / w_a``,
    ``dh = wh * log(h / h_a)``, ``dw = ww * log(w / w_a)`` (R-CNN, Girshick et al. 2014, App. C).

    Args:
        boxes: ``[..., 4]`` target boxes, pixels.
        anchors: ``[..., 4]`` reference boxes, broadcastable to ``boxes``.
        weights: ``(wy, wx, wh, ww)``.

    Returns:
        ``[..., 4]`` float32 deltas. Degenerate boxes or anchors (zero size) are guarded by a
        tiny epsilon so the result stays finite; callers should not train on them.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    wy, wx, wh, ww = (float(w) for w in weights)
    cy, cx, h, w = _centers_sizes(boxes)
    acy, acx, ah, aw = _centers_sizes(anchors)
    ah = tf.maximum(ah, _EPS)
    aw = tf.maximum(aw, _EPS)
    dy = wy * (cy - acy) / ah
    dx = wx * (cx - acx) / aw
    dh = wh * tf.math.log(tf.maximum(h, _EPS) / ah)
    dw = ww * tf.math.log(tf.maximum(w, _EPS) / aw)
    return tf.stack([dy, dx, dh, dw], axis=-1)


def decode(
    deltas: tf.Tensor,
    anchors: tf.Tensor,
    weights: Sequence[float] = RPN_BOX_WEIGHTS,
    clip: float = BBOX_XFORM_CLIP,
) -> tf.Tensor:
    """Inverse of :func:`encode`: apply ``deltas [..., 4]`` to ``anchors [..., 4]``.

    ``dh/wh`` and ``dw/ww`` are clamped at ``clip`` (default ``log(1000/16)``) before ``exp``.

    Returns:
        ``[..., 4]`` float32 boxes ``[y1, x1, y2, x2]`` (not clipped to the image).
    """
    deltas = tf.cast(tf.convert_to_tensor(deltas), tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    wy, wx, wh, ww = (float(w) for w in weights)
    acy, acx, ah, aw = _centers_sizes(anchors)
    dy = deltas[..., 0] / wy
    dx = deltas[..., 1] / wx
    dh = tf.minimum(deltas[..., 2] / wh, clip)
    dw = tf.minimum(deltas[..., 3] / ww, clip)
    cy = dy * ah + acy
    cx = dx * aw + acx
    h = tf.exp(dh) * ah
    w = tf.exp(dw) * aw
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)
