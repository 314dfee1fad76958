"""RoI heads: the second stage shared by Fast R-CNN, Faster R-CNN (C4 / FPN) and their variants.

``RoIHeads`` samples RoIs in training (``RoISampler``), pools their features (``RoIAlign``,
``MultiLevelRoIAlign``, ``RoIPool`` or ``SpatialPyramidPooling``), runs a box head (two fc for FPN,
res5 for C4, fc6/fc7 for VGG) and a ``BoxPredictor`` giving (K+1)-way class logits and
class-specific deltas, computes the R-CNN losses in training and decodes detections at inference
(``DetectionDecoder``). Variants (R-FCN, Mask R-CNN) subclass it and override ``_predict_boxes`` or
add branches, so the sampling, loss and decoding stay in one place.

Conventions: boxes ``[y1, x1, y2, x2]`` pixels; classes 0 background, 1..K.
Shape shorthand: B batch, P proposals per image, S sampled RoIs per image, K classes.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_rcnn import losses as loss_lib
from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.layers.target_assigners import RoISampler
from tf_rcnn.models.serialization import deserialize_keys, serialize_optional


def pool_features(pooler: keras.layers.Layer, features: list, rois: tf.Tensor) -> tf.Tensor:
    """Calls a multi-level pooler with the whole list and a single-level one with the one map.

    Multi-level poolers are recognised by their ``strides`` attribute.
    """
    if hasattr(pooler, "strides") and len(features) > 1:
        return pooler(features, rois)
    if len(features) != 1:
        raise ValueError(
            f"{type(pooler).__name__} pools one feature map but got {len(features)}; use "
            "MultiLevelRoIAlign for FPN features or select one level with roi_in_features."
        )
    return pooler(features[0], rois)


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RoIHeads(keras.layers.Layer):
    """Second stage: RoI sampling, pooling, box head, predictor, losses and decoding.

    Args:
        pooler: RoI feature extractor, called ``pooler(features_list_or_map, rois [B, S, 4])``
            -> ``[B, S, ...]``.
        box_head: ``[B, S, ...]`` pooled features -> ``[B, S, D]``.
        box_predictor: ``[B, S, D]`` -> ``(class_logits [B, S, K+1], deltas [B, S, K+1|1, 4])``.
        sampler: ``RoISampler`` used in training.
        decoder: ``DetectionDecoder`` used at inference.
        box_loss_beta: smooth-L1 beta of the box loss (1.0, Detectron).
        focal_gamma: softmax focal loss with this gamma instead of cross-entropy.

    Call arguments:
        features: list of ``[B, H_l, W_l, C]`` maps for the pooler.
        proposals: ``[B, P, 4]``; proposal_valid ``[B, P]`` bool; image_shape ``[B, 2]``.
        targets: dict (``boxes``, ``classes``, optional ``crowd_boxes``) in training.
        training: Python bool.

    Returns:
        In training (targets given): ``{"rcnn_class_loss", "rcnn_box_loss"}``.
        Otherwise: the decoder's detection dict.
    """

    loss_names: tuple[str, ...] = ("rcnn_class_loss", "rcnn_box_loss")

    def __init__(
        self,
        pooler: keras.layers.Layer,
        box_head: keras.layers.Layer,
        box_predictor: keras.layers.Layer,
        sampler: RoISampler | None = None,
        decoder: DetectionDecoder | None = None,
        box_loss_beta: float = 1.0,
        focal_gamma: float | None = None,
        **kwargs,
    ):
        # Mixed precision: pass boxes through uncast (float32); the sub-layers cast their
        # own inputs, so only the convolutions run in the low-precision dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.sampler = sampler or RoISampler()
        self.decoder = decoder or DetectionDecoder()
        self.box_loss_beta = float(box_loss_beta)
        self.focal_gamma = None if focal_gamma is None else float(focal_gamma)

    def _predict_boxes(self, features, rois, training):
        """``rois [B, S, 4]`` -> ``(class_logits [B, S, K+1], deltas [B, S, K+1|1, 4])``."""
        pooled = pool_features(self.pooler, features, rois)
        box_features = self.box_head(pooled, training=training)
        return self.box_predictor(box_features, training=training)

    def sample(self, proposals, proposal_valid, targets):
        """The training RoIs and their targets (``RoISampler`` output dict)."""
        return self.sampler(
            proposals,
            proposal_valid,
            targets["boxes"],
            targets["classes"],
            crowd_boxes=targets.get("crowd_boxes"),
        )

    def compute_losses(self, features, proposals, proposal_valid, targets, training=True):
        sampled = self.sample(proposals, proposal_valid, targets)
        class_logits, deltas = self._predict_boxes(features, sampled["rois"], training)
        return loss_lib.rcnn_losses(
            class_logits,
            deltas,
            sampled["labels"],
            sampled["box_targets"],
            sampled["valid"],
            box_beta=self.box_loss_beta,
            focal_gamma=self.focal_gamma,
        ), sampled

    def detect(self, features, proposals, proposal_valid, image_shape):
        class_logits, deltas = self._predict_boxes(features, proposals, training=False)
        return self.decoder(class_logits, deltas, proposals, proposal_valid, image_shape)

    def call(self, features, proposals, proposal_valid, image_shape, targets=None,
             training=False):
        features = list(features)
        if targets is not None:
            losses, _ = self.compute_losses(features, proposals, proposal_valid, targets,
                                            training=training)
            return losses
        return self.detect(features, proposals, proposal_valid, image_shape)

    def build(self, *args, **kwargs):
        # Children build lazily on their first call, when their input shapes are known.
        self.built = True

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            pooler=serialize_optional(self.pooler),
            box_head=serialize_optional(self.box_head),
            box_predictor=serialize_optional(self.box_predictor),
            sampler=serialize_optional(self.sampler),
            decoder=serialize_optional(self.decoder),
            box_loss_beta=self.box_loss_beta,
            focal_gamma=self.focal_gamma,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> RoIHeads:
        keys = ("pooler", "box_head", "box_predictor", "sampler", "decoder")
        return cls(**deserialize_keys(config, keys))
