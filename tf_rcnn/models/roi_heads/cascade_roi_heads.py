"""CascadeRoIHeads: Cascade R-CNN's chain of box stages (Cai & Vasconcelos, CVPR 2018).

A cascade is a list of ordinary second stages (``RoIHeads``, each with its own box head,
class-agnostic ``BoxPredictor``, ``RoISampler`` and ``DetectionDecoder``), trained one after the
other on boxes of increasing quality:

- Stage t labels its candidates with its own sampler: foreground IoU ``u_t`` (0.5, 0.6, 0.7 in
  the paper, Sec. 4) and coder weights ``w_t`` ((10, 10, 5, 5), (20, 20, 10, 10),
  (30, 30, 15, 15): the deltas of better boxes are smaller, the larger weights keep the targets'
  spread about the same, Sec. 4.2). Stage 1's candidates are the proposals; stage t + 1's are
  stage t's training RoIs moved by stage t's (class-agnostic) regression, clipped to the image,
  with ``tf.stop_gradient`` on them (no gradient flows between stages through the boxes), and
  the GT boxes appended again by the sampler.
- The loss is ``sum_t stage_loss_weights[t] * (L_cls_t + L_box_t)`` (reported per stage,
  ``rcnn_class_loss_stage<t>`` / ``rcnn_box_loss_stage<t>``). The feature maps each stage pools
  carry the gradient back to the trunk scaled by ``trunk_gradient_scale`` (Detectron2 scales it
  by 1 / number of stages, so the three heads together push the backbone as hard as one).
- Inference: stage t runs on stage t - 1's decoded boxes; the class scores are the MEAN of the
  stages' softmax scores (each on its own input boxes, row by row the same RoI) and the boxes are
  the last stage's regression of its input boxes (paper Sec. 4.3, "ensemble"); the last stage's
  ``DetectionDecoder`` then clips, thresholds and runs per-class NMS.
- Cascade Mask R-CNN: stage 1 is a ``MaskRoIHeads``; its mask branch trains on stage 1's
  positive training RoIs (Detectron2's choice) and at inference runs on the FINAL boxes.

Conventions: boxes ``[y1, x1, y2, x2]`` float32 pixels of the network input; classes 0
background, 1..K. Shape shorthand: B batch, P proposals per image, S training RoIs per image,
T stages, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.models.roi_heads.base import RoIHeadsBase
from tf_rcnn.models.roi_heads.standard import RoIHeads
from tf_rcnn.models.serialization import deserialize_optional, serialize_optional
from tf_rcnn.ops import box_coder
from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops import losses as loss_lib


def scale_gradient(x: tf.Tensor, scale: float) -> tf.Tensor:
    """``x`` forward; its gradient multiplied by ``scale`` backward (no custom gradient op):
    ``scale * x + (1 - scale) * stop_gradient(x)``."""
    if scale == 1.0:
        return x
    return scale * x + (1.0 - scale) * tf.stop_gradient(x)


@keras.saving.register_keras_serializable(package="tf_rcnn")
class CascadeRoIHeads(RoIHeadsBase):
    """T box stages, each re-labelling the previous stage's boxes at a higher IoU.

    Args:
        stages: T second stages (``RoIHeads``; the first may be a ``MaskRoIHeads`` for Cascade
            Mask R-CNN). Each brings its pooler, box head, class-agnostic ``BoxPredictor``,
            ``RoISampler`` (its ``fg_iou`` and ``box_weights`` are the stage's IoU threshold
            and coder weights) and ``DetectionDecoder`` (same ``box_weights``; the last stage's
            decodes the final detections).
        stage_loss_weights: T multipliers of the stages' losses (Detectron2: all 1).
        trunk_gradient_scale: multiplier of the gradient each stage sends into the feature
            maps; None: ``1 / T`` (Detectron2).
        **kwargs: forwarded to ``keras.layers.Layer``.

    The stages are not called as layers (their methods are), so each runs inside its own name
    scope: its weights are ``roi_heads/stage<t>/...`` on every construction route.

    Call arguments and returns: as ``RoIHeadsBase``; the training losses are per stage
    (``loss_names``) plus ``mask_loss`` with a mask branch; detections carry
    ``detection_masks`` then.
    """

    def __init__(
        self,
        stages: Sequence[keras.layers.Layer],
        stage_loss_weights: Sequence[float] | None = None,
        trunk_gradient_scale: float | None = None,
        **kwargs: Any,
    ) -> None:
        stages = list(stages)
        if not stages:
            raise ValueError("CascadeRoIHeads needs at least one stage (model.cascade.fg_ious).")
        for index, stage in enumerate(stages):
            if not isinstance(stage, RoIHeads):
                raise ValueError(f"Cascade stage {index + 1} must be a RoIHeads, got "
                                 f"{type(stage).__name__}.")
            if not getattr(stage.box_predictor, "class_agnostic", False):
                raise ValueError(
                    f"Cascade stage {index + 1} needs a class-agnostic BoxPredictor: the next "
                    "stage refines ONE box per RoI.")
            if stage.ohem is not None:
                raise ValueError(
                    "Cascade stages sample their training RoIs; OHEM is not supported "
                    "(--config.model.roi_head.ohem=False).")
            if index > 0 and getattr(stage, "predicts_masks", False):
                raise ValueError("Only the first cascade stage may carry the mask branch.")
        weights = [1.0] * len(stages) if stage_loss_weights is None else [
            float(w) for w in stage_loss_weights]
        if len(weights) != len(stages):
            raise ValueError(
                f"model.cascade.stage_loss_weights has {len(weights)} values for "
                f"{len(stages)} stages (model.cascade.fg_ious); give one per stage.")
        # The base's sampler is stage 1's (it labels the proposals); its decoder the last
        # stage's (it decodes the final boxes). They are the stages' own layers, not copies.
        super().__init__(sampler=stages[0].sampler, decoder=stages[-1].decoder,
                         box_loss_beta=stages[0].box_loss_beta,
                         focal_gamma=stages[0].focal_gamma, **kwargs)
        self.stages = stages
        self.stage_loss_weights = tuple(weights)
        self.trunk_gradient_scale = (None if trunk_gradient_scale is None
                                     else float(trunk_gradient_scale))
        self.loss_names = loss_lib.cascade_loss_names(len(stages)) + (
            (loss_lib.MASK_LOSS_NAME,) if self.predicts_masks else ())

    @property
    def predicts_masks(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.stages[0], "predicts_masks", False))

    @property
    def paste_rule(self) -> str:
        """The mask branch's paste rule (``MaskRoIHeads.paste_rule``), read by evaluation,
        export and predict; no attribute without a mask branch, as for ``RoIHeads``."""
        if not self.predicts_masks:
            raise AttributeError("paste_rule: this cascade has no mask branch.")
        return self.stages[0].paste_rule

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    # ----------------------------------------------------------------------------- the chain
    @staticmethod
    def refine_boxes(stage: RoIHeads, deltas: tf.Tensor, rois: tf.Tensor, valid: tf.Tensor,
                     image_shape: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A stage's class-agnostic deltas applied to its input boxes: the next stage's input.

        Args:
            stage: the stage that predicted ``deltas`` (its coder weights decode them).
            deltas: ``[B, R, K+1, 4]`` (every class group holds the same agnostic delta).
            rois: ``[B, R, 4]`` the stage's input boxes; valid ``[B, R]`` bool.
            image_shape: ``[B, 2]`` true ``(height, width)``.

        Returns:
            ``(boxes [B, R, 4], valid [B, R])``: decoded, clipped to the image, without gradient;
            empty boxes become invalid.
        """
        boxes = box_coder.decode(deltas[:, :, 0, :], rois, stage.sampler.box_weights)
        boxes = box_ops.clip_boxes(boxes, tf.cast(image_shape, tf.float32)[:, tf.newaxis, :])
        boxes = tf.stop_gradient(boxes)
        return boxes, tf.logical_and(tf.cast(valid, tf.bool), box_ops.valid_size_mask(boxes))

    def stage_outputs(self, features: list, proposals: tf.Tensor, proposal_valid: tf.Tensor,
                      image_shape: tf.Tensor) -> list[dict]:
        """Inference through the chain: one dict per stage with its input ``rois [B, P, 4]``,
        ``valid [B, P]``, ``class_logits [B, P, K+1]`` and ``deltas [B, P, K+1, 4]``."""
        features = list(features)
        rois, valid = tf.cast(proposals, tf.float32), tf.cast(proposal_valid, tf.bool)
        outputs = []
        for index, stage in enumerate(self.stages):
            if index > 0:
                previous = outputs[-1]
                rois, valid = self.refine_boxes(self.stages[index - 1], previous["deltas"],
                                                previous["rois"], previous["valid"], image_shape)
            with keras.name_scope(stage.name):
                class_logits, deltas = stage.predict_boxes(features, rois, training=False)
            outputs.append({"rois": rois, "valid": valid, "class_logits": class_logits,
                            "deltas": deltas})
        return outputs

    # ----------------------------------------------------------------------------- training
    def compute_losses(self, features: list, proposals: tf.Tensor, proposal_valid: tf.Tensor,
                       targets: dict, training: bool = True) -> tuple[dict, dict]:
        """Every stage's losses (weighted) and stage 1's training RoIs.

        Returns:
            ``(losses, training_rois)``: ``training_rois`` is stage 1's sampler output (what the
            mask branch trains on), as ``RoIHeadsBase.compute_losses``.
        """
        features = list(features)
        scale = (1.0 / self.num_stages if self.trunk_gradient_scale is None
                 else self.trunk_gradient_scale)
        stage_features = [scale_gradient(f, scale) for f in features]
        crowd = targets.get("crowd_boxes")
        image_shape = targets["image_shape"]
        names = loss_lib.cascade_loss_names(self.num_stages)
        candidates, valid = proposals, proposal_valid
        losses, first = {}, None
        for index, stage in enumerate(self.stages):
            sampled = stage.sampler(candidates, valid, targets["boxes"], targets["classes"],
                                    crowd_boxes=crowd)
            with keras.name_scope(stage.name):
                class_logits, deltas = stage.predict_boxes(stage_features, sampled["rois"],
                                                           training)
            stage_losses = loss_lib.rcnn_losses(
                class_logits, deltas, sampled["labels"], sampled["box_targets"],
                sampled["valid"], box_beta=stage.box_loss_beta, focal_gamma=stage.focal_gamma)
            weight = self.stage_loss_weights[index]
            for generic, name in zip(loss_lib.RCNN_LOSS_NAMES, names[2 * index:2 * index + 2],
                                     strict=True):
                losses[name] = weight * stage_losses[generic]
            if index == 0:
                first = sampled
            if index + 1 < self.num_stages:
                # Padding rows stay invalid; the sampler appends the GT boxes again.
                candidates, valid = self.refine_boxes(stage, deltas, sampled["rois"],
                                                      sampled["valid"], image_shape)
        if self.predicts_masks:
            with keras.name_scope(self.stages[0].name):
                losses[loss_lib.MASK_LOSS_NAME] = self.stages[0].mask_loss(
                    features, first, targets, training=training)
        return losses, first

    def call(self, features, proposals, proposal_valid, image_shape, targets=None,
             training=False):
        if targets is not None and "image_shape" not in targets:
            targets = {**targets, "image_shape": image_shape}
        return super().call(features, proposals, proposal_valid, image_shape, targets=targets,
                            training=training)

    # ----------------------------------------------------------------------------- inference
    def detect(self, features: list, proposals: tf.Tensor, proposal_valid: tf.Tensor,
               image_shape: tf.Tensor) -> dict:
        """Mean of the stages' class scores, the last stage's boxes, then the last stage's
        decoder (clip, threshold, per-class NMS); masks on the final boxes."""
        outputs = self.stage_outputs(features, proposals, proposal_valid, image_shape)
        probs = tf.add_n([tf.nn.softmax(tf.cast(o["class_logits"], tf.float32), axis=-1)
                          for o in outputs]) / float(self.num_stages)
        last = outputs[-1]
        detections = self.stages[-1].decoder(last["class_logits"], last["deltas"], last["rois"],
                                             last["valid"], image_shape, class_probs=probs)
        if self.predicts_masks:
            with keras.name_scope(self.stages[0].name):
                detections = self.stages[0].attach_masks(features, detections)
        return detections

    # ----------------------------------------------------------------------------- config
    def get_config(self) -> dict:
        # The base's sampler/decoder are the stages' own: only the stages are stored.
        config = keras.layers.Layer.get_config(self)
        config.update(
            stages=[serialize_optional(stage) for stage in self.stages],
            stage_loss_weights=list(self.stage_loss_weights),
            trunk_gradient_scale=self.trunk_gradient_scale,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> CascadeRoIHeads:
        config = dict(config)
        config["stages"] = [deserialize_optional(stage) for stage in config["stages"]]
        return cls(**config)
