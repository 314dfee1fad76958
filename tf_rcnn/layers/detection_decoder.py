"""DetectionDecoder: R-CNN head outputs -> final per-class detections.

Softmax over the K+1 classes, class-specific decode of each RoI (weights (10, 10, 5, 5)), clip
to the true image shape, drop scores not above ``score_threshold`` (0.05) and boxes smaller than
``min_size`` (empty ones by default), per-class NMS (IoU 0.5), keep the ``max_detections`` (100)
best per image. The per-class NMS is hard by default; ``nms_method`` ``"linear"`` or
``"gaussian"`` selects Soft-NMS (``tf_rcnn.ops.nms``, Bodla et al. 2017), which decays the scores
of overlapping boxes instead of removing them (every family decodes here, so it serves all).

Conventions: boxes ``[y1, x1, y2, x2]`` pixels; classes 1..K (0 = padding in the outputs).
Shape shorthand: B batch, R RoIs per image, K classes, D = max_detections.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tf_rcnn.ops import box_coder
from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops import nms as nms_ops


@keras.saving.register_keras_serializable(package="tf_rcnn")
class DetectionDecoder(keras.layers.Layer):
    """Decodes class scores and class-specific deltas into detections.

    Args:
        score_threshold: scores must be above it (0.05).
        nms_threshold: per-class NMS IoU (0.5).
        max_detections: detections kept per image (100).
        max_detections_per_class: per-class cap before the overall top-D (default D).
        box_weights: coder weights of the head's deltas.
        min_size: boxes narrower or lower than this (pixels of the network input) are dropped;
            0 drops only empty boxes (torchvision uses 0.01).
        nms_method: ``"hard"`` (default), ``"linear"`` or ``"gaussian"`` Soft-NMS; linear
            decays a score by ``1 - iou`` where ``iou >= nms_threshold``.
        soft_nms_sigma: Gaussian Soft-NMS ``sigma`` in ``exp(-iou**2 / sigma)`` (0.5).
        soft_nms_min_score: Soft-NMS drops boxes whose decayed score is ``<=`` this (0.001).

    Call arguments:
        class_logits: ``[B, R, K+1]``; pred_deltas ``[B, R, K+1, 4]`` (or ``[B, R, 1, 4]``
        class-agnostic); rois ``[B, R, 4]``; roi_valid ``[B, R]`` bool; image_shape ``[B, 2]``.
        class_probs: optional ``[B, R, K+1]`` probabilities to use instead of softmax(logits)
        (R-FCN voting or OHEM paths may give them directly).

    Returns:
        dict of ``detection_boxes [B, D, 4]`` pixels, ``detection_scores [B, D]``,
        ``detection_classes [B, D]`` int32, ``num_detections [B]`` int32.
    """

    def __init__(
        self,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
        max_detections_per_class: int | None = None,
        box_weights: Sequence[float] = box_coder.RCNN_BOX_WEIGHTS,
        min_size: float = 0.0,
        nms_method: str = "hard",
        soft_nms_sigma: float = 0.5,
        soft_nms_min_score: float = 0.001,
        **kwargs,
    ):
        # Mixed precision: box decoding and NMS stay float32 (float16: ~0.5 px steps at 1000 px).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = int(max_detections)
        self.max_detections_per_class = (
            None if max_detections_per_class is None else int(max_detections_per_class)
        )
        self.box_weights = tuple(float(w) for w in box_weights)
        self.min_size = float(min_size)
        nms_ops.check_soft_nms_args(nms_method, soft_nms_sigma, soft_nms_min_score)
        self.nms_method = str(nms_method)
        self.soft_nms_sigma = float(soft_nms_sigma)
        self.soft_nms_min_score = float(soft_nms_min_score)

    def call(self, class_logits, pred_deltas, rois, roi_valid, image_shape, class_probs=None):
        if class_probs is None:
            class_probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)
        # Drop the background column: [B, R, K+1] -> [B, R, K].
        scores = tf.cast(class_probs, tf.float32)[..., 1:]
        pred_deltas = tf.cast(pred_deltas, tf.float32)
        if pred_deltas.shape[-2] != 1:
            pred_deltas = pred_deltas[..., 1:, :]  # [B, R, K, 4]
        rois = tf.cast(rois, tf.float32)
        # [B, R, 1, 4] anchors broadcast against [B, R, K|1, 4] deltas.
        boxes = box_coder.decode(pred_deltas, rois[:, :, tf.newaxis, :], self.box_weights)
        image_shape_q = tf.cast(image_shape, tf.float32)[:, tf.newaxis, :]  # [B, 1, 2]
        boxes = box_ops.clip_boxes(boxes, image_shape_q)
        # [B, R, K|1]: valid RoI and a box of at least min_size (class-agnostic boxes broadcast
        # over K).
        keep = tf.logical_and(roi_valid[..., tf.newaxis],
                              box_ops.valid_size_mask(boxes, self.min_size))
        scores = tf.where(keep, scores, 0.0)
        per_class = self.max_detections_per_class or self.max_detections
        result = nms_ops.multiclass_nms(
            boxes,
            scores,
            max_per_class=per_class,
            max_total=self.max_detections,
            iou_threshold=self.nms_threshold,
            score_threshold=self.score_threshold,
            method=self.nms_method,
            soft_nms_sigma=self.soft_nms_sigma,
            soft_nms_min_score=self.soft_nms_min_score,
        )
        return {
            "detection_boxes": result.boxes,
            "detection_scores": result.scores,
            "detection_classes": tf.cast(result.classes, tf.int32),
            "num_detections": tf.cast(result.num_valid, tf.int32),
        }

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            score_threshold=self.score_threshold,
            nms_threshold=self.nms_threshold,
            max_detections=self.max_detections,
            max_detections_per_class=self.max_detections_per_class,
            box_weights=list(self.box_weights),
            min_size=self.min_size,
            nms_method=self.nms_method,
            soft_nms_sigma=self.soft_nms_sigma,
            soft_nms_min_score=self.soft_nms_min_score,
        )
        return config
