"""RFCNRoIHeads: R-FCN's second stage on the shared base -- score maps once, PS-RoI pooling per RoI.

``RoIHeadsBase`` supplies the training RoIs (OHEM over all proposals as the R-FCN paper trains,
Sec. 2 "Training", or the sampler's mini-batch), the losses and the decoding; this class only
says where the predictions come from. The ``RFCNHead`` score maps are computed ONCE per image
batch from the feature map; each RoI set (all candidates for OHEM, the sampled mini-batch, or the
test proposals) then costs one ``PSRoIPooling`` call with voting. Deltas are class-agnostic.

Conventions: boxes ``[y1, x1, y2, x2]`` float32 input-image pixels; classes 0 background, 1..K.
Shape shorthand: B batch, R RoIs per image, K classes, k position-sensitive grid.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.layers.roi_sampler import RoISampler
from tf_rcnn.models.roi_heads.base import RoIHeadsBase
from tf_rcnn.models.roi_heads.ohem import OHEMSampler
from tf_rcnn.models.roi_heads.rfcn_head import RFCNHead
from tf_rcnn.models.serialization import serialize_optional


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RFCNRoIHeads(RoIHeadsBase):
    """R-FCN RoI heads: shared PS score maps, per-RoI PS pooling + voting.

    Args:
        head: an ``RFCNHead`` (score maps + PS-RoI pooling + voting).
        sampler, decoder, box_loss_beta, ohem: as in ``RoIHeadsBase``; the R-FCN recipes train
            with ``OHEMSampler(128, 0.7)`` as the paper does.
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        features: list with ONE ``[B, H, W, C]`` map (e.g. the dilated C5, stride 16).
        proposals ``[B, P, 4]``, proposal_valid ``[B, P]`` bool, image_shape ``[B, 2]`` int32.
        targets: dict (``boxes``, ``classes``, optional ``crowd_boxes``) in training.
        training: Python bool.

    Returns:
        In training: ``{"rcnn_class_loss", "rcnn_box_loss"}``; otherwise the detection dict.
    """

    sublayer_keys = (*RoIHeadsBase.sublayer_keys, "head")

    def __init__(
        self,
        head: RFCNHead,
        sampler: RoISampler | None = None,
        decoder: DetectionDecoder | None = None,
        box_loss_beta: float = 1.0,
        ohem: keras.layers.Layer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(sampler=sampler, decoder=decoder, box_loss_beta=box_loss_beta,
                         ohem=ohem, **kwargs)
        self.head = head

    def score_maps(self, features: list) -> tf.Tensor:
        """The per-image work, done once: ``[B, H, W, k*k*(K+1+4)]``."""
        if len(features) != 1:
            raise ValueError(
                f"RFCNRoIHeads reads one feature map but got {len(features)}; set "
                "--config.model.roi_head.in_features to a single stride-16 map such as ('C5',)."
            )
        return self.head.score_maps(features[0])

    def predict_boxes(self, features: list, rois: tf.Tensor,
                      training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        return self.head.pool(self.score_maps(list(features)), rois)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("focal_gamma", None)  # R-FCN's losses are the cross-entropy ones
        config.update(head=serialize_optional(self.head))
        return config

    @classmethod
    def from_config(cls, config: dict) -> RFCNRoIHeads:
        config = dict(config)
        # Models saved before OHEM became its own part (``.keras`` files) stored three values.
        if isinstance(config.get("ohem"), bool):
            enabled = config.pop("ohem")
            size = config.pop("ohem_batch_size", 128)
            threshold = config.pop("ohem_nms_threshold", 0.7)
            config["ohem"] = serialize_optional(OHEMSampler(size, threshold)) if enabled else None
        return super().from_config(config)
