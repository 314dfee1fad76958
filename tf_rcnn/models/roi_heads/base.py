"""RoIHeadsBase: what every second stage shares -- training RoIs, the R-CNN losses, decoding.

A second stage turns proposals into detections. Whatever computes its predictions (pooled
features through a box head for Fast/Faster/Mask R-CNN, position-sensitive score maps for
R-FCN), the rest is the same, and lives here once:

- Training RoIs: the ``RoISampler``'s mini-batch (Fast R-CNN Sec. 2.3), or with an
  ``OHEMSampler`` the hardest of ALL labelled candidates (Shrivastava et al. 2016). Both start
  from the sampler's one labelling rule (``RoISampler.label``).
- Losses: ``ops.losses.rcnn_losses`` (softmax cross-entropy or focal loss, smooth-L1 on the GT
  class's deltas), named ``rcnn_class_loss`` and ``rcnn_box_loss``.
- Inference: ``DetectionDecoder`` (softmax, class-specific decode, clip, score threshold,
  per-class NMS, top-D).

A subclass implements :meth:`RoIHeadsBase.predict_boxes` (RoIs -> class logits and deltas) and
may add branches (``MaskRoIHeads``) by extending :meth:`compute_losses` and :meth:`detect`.

Conventions: boxes ``[y1, x1, y2, x2]`` float32 pixels of the network input; classes 0
background, 1..K; GT padded with -1. Shape shorthand: B batch, P proposals per image, S training
RoIs per image, K classes, D detections per image.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.layers.roi_sampler import RoISampler
from tf_rcnn.models.serialization import deserialize_keys, serialize_optional
from tf_rcnn.ops import losses as loss_lib


def pool_features(pooler: keras.layers.Layer, features: list, rois: tf.Tensor) -> tf.Tensor:
    """Calls a pooler with the list of maps (``pooler.multi_level``) or with its one map.

    Args:
        pooler: a RoI feature extractor (``RoIAlign``, ``MultiLevelRoIAlign``, ``RoIPool``,
            ``SpatialPyramidPooling`` or any layer declaring ``multi_level``).
        features: list of ``[B, H_l, W_l, C]`` maps, fine to coarse.
        rois: ``[B, R, 4]`` pixel boxes.

    Returns:
        The pooler's output, ``[B, R, ...]``.
    """
    if getattr(pooler, "multi_level", False):
        return pooler(features, rois)
    if len(features) != 1:
        raise ValueError(
            f"{type(pooler).__name__} pools one feature map but model.roi_head.in_features names "
            f"{len(features)}; use pooler=roi_align (MultiLevelRoIAlign) for FPN levels or name "
            "one map in --config.model.roi_head.in_features."
        )
    return pooler(features[0], rois)


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RoIHeadsBase(keras.layers.Layer):
    """Training RoIs, R-CNN losses and decoding; subclasses give the predictions.

    Args:
        sampler: ``RoISampler``: its IoU rules label the candidates; without ``ohem`` it also
            samples the training mini-batch.
        decoder: ``DetectionDecoder`` used at inference.
        box_loss_beta: smooth-L1 beta of the box loss (1.0, Detectron).
        focal_gamma: softmax focal loss with this gamma instead of cross-entropy (not with
            ``ohem``: both are ways to weight hard examples).
        ohem: an ``OHEMSampler`` to train on the hardest RoIs of all candidates instead of the
            sampler's mini-batch; None (default) samples.
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        features: list of ``[B, H_l, W_l, C]`` maps (the detector's ``roi_in_features``).
        proposals: ``[B, P, 4]``; proposal_valid ``[B, P]`` bool; image_shape ``[B, 2]`` int32.
        targets: dict (``boxes``, ``classes``, optional ``crowd_boxes``) in training.
        training: Python bool.

    Returns:
        In training (targets given): the losses dict (``loss_names``). Otherwise the decoder's
        detections: ``detection_boxes [B, D, 4]``, ``detection_scores [B, D]``,
        ``detection_classes [B, D]`` int32, ``num_detections [B]`` int32.

    Attributes:
        loss_names: the loss terms this second stage reports.
        predicts_masks: whether detections carry ``detection_masks``.
    """

    loss_names: tuple[str, ...] = loss_lib.RCNN_LOSS_NAMES
    predicts_masks: bool = False
    # Keys of get_config holding serialised sub-layers (subclasses add theirs).
    sublayer_keys: tuple[str, ...] = ("sampler", "decoder", "ohem")

    def __init__(
        self,
        sampler: RoISampler | None = None,
        decoder: DetectionDecoder | None = None,
        box_loss_beta: float = 1.0,
        focal_gamma: float | None = None,
        ohem: keras.layers.Layer | None = None,
        **kwargs: Any,
    ) -> None:
        # Mixed precision: pass boxes through uncast (float32); the sub-layers cast their
        # own inputs, so only the convolutions run in the low-precision dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if ohem is not None and focal_gamma is not None:
            raise ValueError(
                "OHEM and the focal loss both re-weight hard RoIs; set either "
                "--config.model.roi_head.ohem=True or --config.model.roi_head.focal_gamma, "
                "not both."
            )
        self.sampler = sampler or RoISampler()
        self.decoder = decoder or DetectionDecoder()
        self.box_loss_beta = float(box_loss_beta)
        self.focal_gamma = None if focal_gamma is None else float(focal_gamma)
        self.ohem = ohem

    # ----------------------------------------------------------------------------- predictions
    def predict_boxes(self, features: list, rois: tf.Tensor,
                      training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """``rois [B, R, 4]`` -> ``(class_logits [B, R, K+1], deltas [B, R, K+1|1, 4])``."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_boxes.")

    # ----------------------------------------------------------------------------- training
    def compute_losses(self, features: list, proposals: tf.Tensor, proposal_valid: tf.Tensor,
                       targets: dict, training: bool = True) -> tuple[dict, dict]:
        """The R-CNN losses on the training RoIs.

        Returns:
            ``(losses, training_rois)``: ``training_rois`` holds ``rois [B, S, 4]``,
            ``labels [B, S]`` (class id, 0 background, -1 padding), ``valid [B, S]``,
            ``matched_gt_indices [B, S]`` and ``box_targets [B, S, 4]`` (for branches such as
            the mask head that train on the same RoIs).
        """
        crowd = targets.get("crowd_boxes")
        if self.ohem is None:
            sampled = self.sampler(proposals, proposal_valid, targets["boxes"],
                                   targets["classes"], crowd_boxes=crowd)
            class_logits, deltas = self.predict_boxes(features, sampled["rois"], training)
            losses = loss_lib.rcnn_losses(
                class_logits, deltas, sampled["labels"], sampled["box_targets"],
                sampled["valid"], box_beta=self.box_loss_beta, focal_gamma=self.focal_gamma,
            )
            return losses, sampled
        labeled = self.sampler.label(proposals, proposal_valid, targets["boxes"],
                                     targets["classes"], crowd_boxes=crowd)
        class_logits, deltas = self.predict_boxes(features, labeled["rois"], training)
        return self.ohem(class_logits, deltas, labeled, box_beta=self.box_loss_beta)

    # ----------------------------------------------------------------------------- inference
    def detect(self, features: list, proposals: tf.Tensor, proposal_valid: tf.Tensor,
               image_shape: tf.Tensor) -> dict:
        """Detections from the test proposals (see the class docstring)."""
        class_logits, deltas = self.predict_boxes(features, proposals, training=False)
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

    # ----------------------------------------------------------------------------- config
    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            sampler=serialize_optional(self.sampler),
            decoder=serialize_optional(self.decoder),
            box_loss_beta=self.box_loss_beta,
            focal_gamma=self.focal_gamma,
            ohem=serialize_optional(self.ohem),
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> RoIHeadsBase:
        return cls(**deserialize_keys(config, cls.sublayer_keys))
