"""RegionProposalNetwork: the Faster R-CNN proposal generator as one Keras layer.

It wires an ``RPNHead`` (3x3 conv + sibling 1x1 objectness and box convs, shared over levels), an
``AnchorGenerator``, a ``ProposalLayer`` and, in training, an ``RPNTargetAssigner`` plus the RPN
losses. The same module serves the C4 form (one level) and the FPN form (P2-P6).

Conventions: boxes ``[y1, x1, y2, x2]`` pixels; anchors and head outputs ordered
``(level, y, x, a)``. Shape shorthand: B batch, N anchors over all levels, P proposals per image.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_rcnn.layers.proposal_layer import ProposalLayer
from tf_rcnn.layers.rpn_target_assigner import RPNTargetAssigner
from tf_rcnn.models.serialization import deserialize_keys, serialize_optional
from tf_rcnn.ops import losses as loss_lib


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RegionProposalNetwork(keras.layers.Layer):
    """Proposals and (in training) RPN losses from a list of feature maps.

    Args:
        head: an ``RPNHead`` returning ``(objectness_logits [B, N], deltas [B, N, 4])``.
        anchor_generator: an ``AnchorGenerator`` returning ``anchors [N, 4]``.
        proposal_layer: a ``ProposalLayer``.
        target_assigner: an ``RPNTargetAssigner`` (needed for training).
        box_loss_beta: smooth-L1 beta of the box loss (1/9, Detectron).
        focal_gamma: sigmoid focal loss for objectness with this gamma instead of cross-entropy.

    Call arguments:
        features: list of ``[B, H_l, W_l, C]`` maps, fine to coarse.
        image_shape: ``[B, 2]`` int32 true image sizes.
        targets: dict with ``boxes``, ``classes`` and optionally ``crowd_boxes`` (training).
        training: Python bool.

    Returns:
        dict with ``proposals [B, P, 4]``, ``proposal_scores [B, P]``, ``proposal_valid [B, P]``
        and, when ``targets`` is given, ``rpn_objectness_loss`` and ``rpn_box_loss``.
    """

    loss_names: tuple[str, ...] = loss_lib.RPN_LOSS_NAMES

    def __init__(
        self,
        head: keras.layers.Layer,
        anchor_generator: keras.layers.Layer,
        proposal_layer: ProposalLayer,
        target_assigner: RPNTargetAssigner | None = None,
        box_loss_beta: float = 1.0 / 9.0,
        focal_gamma: float | None = None,
        **kwargs,
    ):
        # Mixed precision: pass boxes through uncast (float32); the sub-layers cast their
        # own inputs, so only the convolutions run in the low-precision dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.head = head
        self.anchor_generator = anchor_generator
        self.proposal_layer = proposal_layer
        self.target_assigner = target_assigner or RPNTargetAssigner()
        self.box_loss_beta = float(box_loss_beta)
        self.focal_gamma = None if focal_gamma is None else float(focal_gamma)

    def call(self, features, image_shape, targets=None, training=False):
        features = list(features)
        objectness_logits, pred_deltas = self.head(features, training=training)
        anchors = self.anchor_generator(features)
        num_anchors = self.anchor_generator.num_anchors_per_location
        # Per level: H_l * W_l cells times A anchors, in the head's (y, x, a) order.
        per_level = [tf.shape(f)[1] * tf.shape(f)[2] * num_anchors for f in features]
        proposals, scores, valid = self.proposal_layer(
            objectness_logits,
            pred_deltas,
            anchors,
            image_shape,
            num_anchors_per_level=per_level,
            training=training,
        )
        # Approximate joint training: no gradient flows into proposal coordinates.
        outputs = {
            "proposals": tf.stop_gradient(proposals),
            "proposal_scores": tf.stop_gradient(scores),
            "proposal_valid": valid,
        }
        if targets is not None:
            labels, box_targets = self.target_assigner(
                anchors,
                targets["boxes"],
                targets["classes"],
                image_shape,
                crowd_boxes=targets.get("crowd_boxes"),
            )
            outputs.update(
                loss_lib.rpn_losses(
                    objectness_logits,
                    pred_deltas,
                    labels,
                    box_targets,
                    batch_size_per_image=self.target_assigner.batch_size_per_image,
                    box_beta=self.box_loss_beta,
                    focal_gamma=self.focal_gamma,
                )
            )
        return outputs

    def build(self, *args, **kwargs):
        # Children build lazily on their first call, when their input shapes are known.
        self.built = True

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            head=serialize_optional(self.head),
            anchor_generator=serialize_optional(self.anchor_generator),
            proposal_layer=serialize_optional(self.proposal_layer),
            target_assigner=serialize_optional(self.target_assigner),
            box_loss_beta=self.box_loss_beta,
            focal_gamma=self.focal_gamma,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> RegionProposalNetwork:
        keys = ("head", "anchor_generator", "proposal_layer", "target_assigner")
        return cls(**deserialize_keys(config, keys))
