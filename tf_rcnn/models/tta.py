"""TTADetector: test-time augmentation around any ``TwoStageDetector``, in the graph.

Every family (Faster R-CNN C4/FPN, Fast R-CNN on given proposals, R-FCN, Mask R-CNN, and any
family added the documented way) gets TTA through the detector's public pieces only:
``extract_features``, ``detect_from_features``, ``roi_in_features`` and, for a mask branch
(``roi_heads.predicts_masks``), ``roi_heads.predict_masks``.

For each view ``(scale factor, flipped)`` of ``tf_rcnn.ops.tta.view_list``:

1. the padded input batch is flipped inside each image's width and resized by the factor
   (``tf_rcnn.ops.tta``); given proposals (Fast R-CNN) are flipped and scaled with it;
2. the detector runs on the view; its boxes are mapped back to the network input and clipped.

The union of the views' detections is merged by per-class NMS or weighted box voting
(``tf_rcnn.ops.tta.merge_detections``) into ``max_detections`` rows. With a mask branch, the
merged boxes are then mapped into every view, the mask head runs on them with that view's
features, the probabilities of flipped views are mirrored back (box-relative masks: the last
axis) and the views' probabilities are averaged.

The wrapper answers what callers ask a detector (``needs_proposals``, ``needs_masks``,
``num_classes``, ``label_map``, ``rpn``, ``roi_heads``) and returns the detector's output
dict, so evaluation, prediction and the SavedModel export take it in place of the detector.
No ``py_function``: a SavedModel traced through it has TTA in its graph.

Conventions: inputs and outputs as ``TwoStageDetector`` (boxes in network-input pixels).
Shape shorthand: B batch, V views, D detections per image, Sm mask size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.models.serialization import deserialize_keys, serialize_optional
from tf_rcnn.ops import tta as tta_ops


@keras.saving.register_keras_serializable(package="tf_rcnn")
class TTADetector(keras.Model):
    """A detector run on flipped / rescaled views whose detections are merged.

    Args:
        detector: a built ``TwoStageDetector`` (any family).
        scales: scale FACTORS of the network input (1.0 = the recipe's own inference size);
            every factor is one unflipped view.
        flip: also run every scale horizontally flipped.
        merge: ``"nms"`` (per-class NMS of the union) or ``"vote"`` (NMS, then weighted box
            voting).
        nms_threshold: IoU of the merging NMS (and of the voting clusters).
        size_divisor: resized views are padded to multiples of it (``data.size_divisor``).
        max_detections: detections kept per image after merging (default: the detector's
            per-view rows).
        **kwargs: forwarded to ``keras.Model``.

    Call arguments / returns: as ``TwoStageDetector.call`` (``images`` or a dict with
    ``images``, ``image_shape`` and, for RPN-less detectors, ``proposals``).
    """

    def __init__(
        self,
        detector: keras.Model,
        scales: Sequence[float] = (1.0,),
        flip: bool = True,
        merge: str = "nms",
        nms_threshold: float = 0.5,
        size_divisor: int = 32,
        max_detections: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        scales = tuple(float(s) for s in scales)
        if not scales or any(not s > 0.0 for s in scales):
            raise ValueError(f"--config.test.tta.scales must be a non-empty list of factors > 0 "
                             f"(1.0 = the recipe's data.scales size), got {scales}.")
        if merge not in tta_ops.MERGE_METHODS:
            raise ValueError(f"--config.test.tta.merge must be one of {tta_ops.MERGE_METHODS} "
                             f"(per-class NMS of the union, or NMS + weighted box voting), got "
                             f"{merge!r}.")
        if not 0.0 <= float(nms_threshold) <= 1.0:
            raise ValueError(f"--config.test.tta.nms_threshold must be an IoU in [0, 1], got "
                             f"{nms_threshold}.")
        if int(size_divisor) < 1:
            raise ValueError(f"size_divisor must be >= 1 (--config.data.size_divisor), got "
                             f"{size_divisor}.")
        if max_detections is not None and int(max_detections) < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}.")
        self.detector = detector
        self.scales = scales
        self.flip = bool(flip)
        self.merge = merge
        self.nms_threshold = float(nms_threshold)
        self.size_divisor = int(size_divisor)
        self.max_detections = None if max_detections is None else int(max_detections)
        self.views = tta_ops.view_list(self.scales, self.flip)
        # A wrapper of a built detector is ready to run (and to export).
        self.built = bool(detector.built)

    # ------------------------------------------------------------------ what callers ask
    @property
    def needs_proposals(self) -> bool:
        return self.detector.needs_proposals

    @property
    def needs_masks(self) -> bool:
        return self.detector.needs_masks

    @property
    def num_classes(self) -> int:
        return self.detector.num_classes

    @property
    def label_map(self) -> dict | None:
        return self.detector.label_map

    @property
    def rpn(self) -> keras.layers.Layer | None:
        return self.detector.rpn

    @property
    def roi_heads(self) -> keras.layers.Layer:
        return self.detector.roi_heads

    def build_with_dummy_inputs(self, image_size: int | None = None) -> None:
        """Builds the wrapped detector (``TwoStageDetector.build_with_dummy_inputs``)."""
        self.detector.build_with_dummy_inputs(image_size)
        self.built = True

    def build(self, input_shape: Any = None) -> None:
        # The detector builds itself (on its first call, or build_with_dummy_inputs).
        self.built = True

    def build_from_config(self, config: dict) -> None:
        del config
        self.build_with_dummy_inputs()

    # ------------------------------------------------------------------ inference
    def call(self, inputs: Any, training: bool = False) -> dict:
        images, image_shape, proposals = self.detector.parse_inputs(inputs)
        widths = image_shape[:, 1]
        with_masks = bool(getattr(self.detector.roi_heads, "predicts_masks", False))
        union = {"boxes": [], "scores": [], "classes": []}
        per_view = []  # (roi features, scale, flipped) for the mask step
        rows = None
        for factor, flipped in self.views:
            view = tta_ops.flip_images(images, widths) if flipped else images
            view, view_shape, scale = tta_ops.resize_images(view, image_shape, factor,
                                                            self.size_divisor)
            view_proposals = None
            if proposals is not None:
                view_proposals = tta_ops.boxes_to_view(proposals, scale, widths, flipped)
            features = self.detector.extract_features(view, training=False)
            out = self.detector.detect_from_features(features, view_shape, view_proposals)
            rows = rows or out["detection_boxes"].shape[1]
            union["boxes"].append(tta_ops.boxes_from_view(out["detection_boxes"], scale,
                                                          image_shape, flipped))
            union["scores"].append(out["detection_scores"])
            union["classes"].append(out["detection_classes"])
            if with_masks:
                per_view.append(([features[n] for n in self.detector.roi_in_features],
                                 scale, flipped))
        max_detections = self.max_detections or rows
        if max_detections is None:
            raise ValueError("The detector's detections have no static row count; give "
                             "TTADetector max_detections.")
        merged = tta_ops.merge_detections(
            tf.concat(union["boxes"], axis=1), tf.concat(union["scores"], axis=1),
            tf.concat(union["classes"], axis=1), self.detector.num_classes,
            int(max_detections), self.nms_threshold, self.merge)
        if with_masks:
            merged["detection_masks"] = self._average_masks(
                per_view, merged["detection_boxes"], merged["detection_classes"], widths)
        return merged

    def _average_masks(self, per_view: list, boxes: tf.Tensor, classes: tf.Tensor,
                       widths: tf.Tensor) -> tf.Tensor:
        """Mean over the views of the mask probabilities of the merged boxes ``[B, D, Sm, Sm]``
        (flipped views mirrored back; zero for padding rows)."""
        total = None
        for roi_features, scale, flipped in per_view:
            rois = tta_ops.boxes_to_view(boxes, scale, widths, flipped)
            logits = self.detector.roi_heads.predict_masks(roi_features, rois, classes)
            probs = tf.sigmoid(tf.cast(logits, tf.float32))
            if flipped:
                probs = tf.reverse(probs, axis=[-1])  # box-relative x mirrored back
            total = probs if total is None else total + probs
        mean = total / float(len(per_view))
        return tf.where((classes >= 1)[..., tf.newaxis, tf.newaxis], mean, 0.0)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "detector": serialize_optional(self.detector),
            "scales": list(self.scales),
            "flip": self.flip,
            "merge": self.merge,
            "nms_threshold": self.nms_threshold,
            "size_divisor": self.size_divisor,
            "max_detections": self.max_detections,
        }

    @classmethod
    def from_config(cls, config: dict) -> TTADetector:
        return cls(**deserialize_keys(config, ("detector",)))
