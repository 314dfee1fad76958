"""RoIHeads, the standard second stage: RoI pooling, a box head and the class/box predictor.

The second stage of Fast R-CNN, Faster R-CNN (C4 and FPN) and Mask R-CNN's box branch: the
training or test RoIs are pooled (``RoIAlign``, ``MultiLevelRoIAlign``, ``RoIPool`` or
``SpatialPyramidPooling``), a box head turns each into a vector (two fc for FPN, res5 for C4,
fc6/fc7 for VGG) and a ``BoxPredictor`` gives (K+1)-way class logits and class-specific deltas.
Sampling or OHEM, the losses and the decoding are ``RoIHeadsBase``'s.

Conventions: boxes ``[y1, x1, y2, x2]`` pixels; classes 0 background, 1..K.
Shape shorthand: B batch, R RoIs per image, K classes, D box-head width.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.layers.roi_sampler import RoISampler
from tf_rcnn.models.roi_heads.base import RoIHeadsBase, pool_features
from tf_rcnn.models.serialization import serialize_optional


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RoIHeads(RoIHeadsBase):
    """Pooler -> box head -> predictor, on top of ``RoIHeadsBase``'s sampling, losses, decoding.

    Args:
        pooler: RoI feature extractor, ``[B, R, 4]`` RoIs -> ``[B, R, ...]`` features; called
            with the list of maps when it declares ``multi_level``, else with its one map.
        box_head: ``[B, R, ...]`` pooled features -> ``[B, R, D]``.
        box_predictor: ``[B, R, D]`` -> ``(class_logits [B, R, K+1], deltas [B, R, K+1, 4])``.
        sampler, decoder, box_loss_beta, focal_gamma, ohem: as in ``RoIHeadsBase``.
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments and returns: as ``RoIHeadsBase``.
    """

    sublayer_keys = (*RoIHeadsBase.sublayer_keys, "pooler", "box_head", "box_predictor")

    def __init__(
        self,
        pooler: keras.layers.Layer,
        box_head: keras.layers.Layer,
        box_predictor: keras.layers.Layer,
        sampler: RoISampler | None = None,
        decoder: DetectionDecoder | None = None,
        box_loss_beta: float = 1.0,
        focal_gamma: float | None = None,
        ohem: keras.layers.Layer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(sampler=sampler, decoder=decoder, box_loss_beta=box_loss_beta,
                         focal_gamma=focal_gamma, ohem=ohem, **kwargs)
        missing = [name for name, part in (("pooler", pooler), ("box_head", box_head),
                                           ("box_predictor", box_predictor)) if part is None]
        if missing:
            raise ValueError(f"RoIHeads needs {', '.join(missing)}.")
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor

    def predict_boxes(self, features: list, rois: tf.Tensor,
                      training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        pooled = pool_features(self.pooler, features, rois)
        box_features = self.box_head(pooled, training=training)
        return self.box_predictor(box_features, training=training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            pooler=serialize_optional(self.pooler),
            box_head=serialize_optional(self.box_head),
            box_predictor=serialize_optional(self.box_predictor),
        )
        return config
