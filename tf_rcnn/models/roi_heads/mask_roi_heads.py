"""MaskRoIHeads: the R-CNN box heads plus Mask R-CNN's mask branch (He et al., 2017).

Training: the box branch takes its training RoIs (``RoISampler`` or OHEM) exactly as Faster
R-CNN does. The mask branch takes the POSITIVE training RoIs only (Sec. 3.1: "L_mask is defined
only on positive RoIs"), pools 14x14 features with its own RoIAlign pooler
(``MultiLevelRoIAlign`` on FPN levels), runs the ``MaskHead`` and scores the channel of the
RoI's GT class with per-pixel sigmoid binary cross-entropy against the matched GT mask cut out of
the RoI (``ops.masks.mask_targets``: bilinear, thresholded at 0.5). The loss is the mean over the
pixels of each positive RoI, averaged over the positives of the batch.

To keep the head's batch small, the positives are moved to the front of each image's sampled rows
and the first q rows are kept, q = the largest positive count of an image in the batch (at least
1, at most ``max_positives = floor(S * positive_fraction)``, which the sampler never exceeds);
rows that are not positive get zero weight.

Inference: the box branch decodes and runs NMS; the mask branch then runs on the final
detection boxes, and the sigmoid of the predicted class's channel is returned as
``detection_masks [B, D, Sm, Sm]`` (box-relative; ``ops.masks.paste_masks`` puts them into the
image). Padding detections get all-zero masks.

Conventions: boxes ``[y1, x1, y2, x2]`` pixels of the network input; classes 0 background, 1..K;
``targets["masks"] [B, M, Hm, Wm]`` float32 {0, 1}, each GT mask cropped to its GT box.
Shape shorthand: B batch, P proposals per image, S sampled RoIs per image, Q = max_positives,
M GT per image, D detections per image, K classes, Sm mask resolution (28).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_rcnn.models.roi_heads.base import pool_features
from tf_rcnn.models.roi_heads.mask_head import select_class_masks
from tf_rcnn.models.roi_heads.standard import RoIHeads
from tf_rcnn.models.serialization import serialize_optional
from tf_rcnn.ops import losses as loss_lib
from tf_rcnn.ops import masks as mask_ops


@keras.saving.register_keras_serializable(package="tf_rcnn")
class MaskRoIHeads(RoIHeads):
    """``RoIHeads`` with a mask branch (Mask R-CNN).

    Args:
        pooler, box_head, box_predictor, sampler, decoder, box_loss_beta, focal_gamma, ohem: as
            in ``RoIHeads``.
        mask_pooler: RoI feature extractor of the mask branch (its own instance, 14x14:
            ``MultiLevelRoIAlign`` for FPN, ``RoIAlign`` on C4).
        mask_head: ``MaskHead``: ``[B, R, 14, 14, C]`` -> ``mask_logits [B, R, Sm, Sm, K']``.
        mask_loss_weight: multiplier of the mask loss (1.0 in the paper).
        paste_rule: how the 28x28 masks are pasted into images outside the graph
            (``tf_rcnn.ops.masks.paste_masks``): ``"tf_rcnn"`` or ``"torchvision"``; kept with
            the model so evaluation, prediction and drawings use the rule it was made for.

    Call arguments:
        As ``RoIHeads``; in training ``targets`` must also hold
        ``masks [B, M, Hm, Wm]`` float32
        (GT masks cropped to their boxes, padded rows 0).

    Returns:
        In training: ``{"rcnn_class_loss", "rcnn_box_loss", "mask_loss"}``.
        Otherwise: the decoder's detections plus ``detection_masks [B, D, Sm, Sm]`` float32
        probabilities in [0, 1] (box-relative; zero for padding rows).
    """

    loss_names: tuple[str, ...] = (*RoIHeads.loss_names, loss_lib.MASK_LOSS_NAME)
    predicts_masks = True
    sublayer_keys = (*RoIHeads.sublayer_keys, "mask_pooler", "mask_head")

    def __init__(
        self,
        pooler: keras.layers.Layer,
        box_head: keras.layers.Layer,
        box_predictor: keras.layers.Layer,
        mask_pooler: keras.layers.Layer,
        mask_head: keras.layers.Layer,
        sampler: keras.layers.Layer | None = None,
        decoder: keras.layers.Layer | None = None,
        box_loss_beta: float = 1.0,
        focal_gamma: float | None = None,
        mask_loss_weight: float = 1.0,
        ohem: keras.layers.Layer | None = None,
        paste_rule: str = "tf_rcnn",
        **kwargs,
    ):
        super().__init__(
            pooler=pooler,
            box_head=box_head,
            box_predictor=box_predictor,
            sampler=sampler,
            decoder=decoder,
            box_loss_beta=box_loss_beta,
            focal_gamma=focal_gamma,
            ohem=ohem,
            **kwargs,
        )
        if mask_pooler is None or mask_head is None:
            raise ValueError("MaskRoIHeads needs both mask_pooler and mask_head.")
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.mask_loss_weight = float(mask_loss_weight)
        if paste_rule not in mask_ops.PASTE_RULES:
            raise ValueError(f"paste_rule (model.mask_head.paste_rule) must be one of "
                             f"{mask_ops.PASTE_RULES}, got {paste_rule!r}.")
        self.paste_rule = paste_rule

    @property
    def max_positives(self) -> int:
        """Q: the most positive training RoIs per image: ``floor(S * fraction)`` of the
        sampler, or every RoI OHEM selects (OHEM has no foreground quota)."""
        if self.ohem is not None:
            return self.ohem.batch_size_per_image
        sampler = self.sampler
        return max(1, int(sampler.batch_size_per_image * sampler.positive_fraction))

    def predict_masks(self, features: list, rois: tf.Tensor, classes: tf.Tensor,
                      training: bool = False) -> tf.Tensor:
        """``rois [B, R, 4]``, ``classes [B, R]`` (1..K) -> the mask logits of each RoI's class,
        ``[B, R, Sm, Sm]`` (box-relative; ``tf.sigmoid`` gives the probabilities)."""
        pooled = pool_features(self.mask_pooler, features, rois)  # [B, R, 14, 14, C]
        logits = self.mask_head(pooled, training=training)  # [B, R, Sm, Sm, K']
        return select_class_masks(logits, classes)

    def mask_loss(self, features, sampled: dict, targets: dict, training=True) -> tf.Tensor:
        """The mask loss on the positive rows of the sampler's output (module docstring)."""
        if "masks" not in targets:
            raise ValueError(
                "Mask R-CNN training needs targets['masks'] [B, M, Hm, Wm] (GT masks cropped to "
                "their boxes); build the input pipeline with with_masks=True (model.type "
                "'mask_rcnn' does that in the builder)."
            )
        positive = tf.logical_and(sampled["valid"], sampled["labels"] >= 1)  # [B, S]
        num_sampled = positive.shape[1]  # static S from the sampler
        q = self.max_positives if num_sampled is None else min(self.max_positives, num_sampled)
        # The head runs on as many rows as the image with the most positives has (at least one,
        # at most Q): its cost follows the data instead of the worst case (early in training, or
        # on images with few objects, far fewer than Q RoIs are positive).
        most = tf.reduce_max(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1))
        q = tf.clip_by_value(most, 1, q)
        # Stable sort of the rows by "is positive" (positives first), then keep q columns.
        order = tf.argsort(tf.cast(positive, tf.int32), axis=1, direction="DESCENDING",
                           stable=True)[:, :q]  # [B, q]
        rois = tf.gather(sampled["rois"], order, batch_dims=1)  # [B, Q, 4]
        labels = tf.gather(sampled["labels"], order, batch_dims=1)  # [B, Q]
        matched = tf.gather(sampled["matched_gt_indices"], order, batch_dims=1)  # [B, Q]
        weights = tf.cast(tf.gather(positive, order, batch_dims=1), tf.float32)  # [B, Q]
        logits = self.predict_masks(features, rois, labels, training)  # [B, Q, Sm, Sm]
        size = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
        gt_index = tf.where(weights > 0, matched, -1)
        mask_targets = mask_ops.mask_targets(
            targets["masks"], targets["boxes"], rois, gt_index, output_size=size
        )
        return self.mask_loss_weight * loss_lib.mask_loss(
            logits, tf.stop_gradient(mask_targets), weights)

    def compute_losses(self, features, proposals, proposal_valid, targets, training=True):
        losses, sampled = super().compute_losses(features, proposals, proposal_valid, targets,
                                                 training=training)
        losses = dict(losses)
        losses[loss_lib.MASK_LOSS_NAME] = self.mask_loss(features, sampled, targets,
                                                         training=training)
        return losses, sampled

    def detect(self, features, proposals, proposal_valid, image_shape):
        return self.attach_masks(
            features, super().detect(features, proposals, proposal_valid, image_shape))

    def attach_masks(self, features: list, detections: dict) -> dict:
        """``detections`` plus ``detection_masks [B, D, Sm, Sm]``: the mask branch on the final
        detection boxes (also Cascade Mask R-CNN's, on its last stage's boxes)."""
        detections = dict(detections)
        boxes = tf.stop_gradient(detections["detection_boxes"])  # [B, D, 4]
        classes = detections["detection_classes"]  # [B, D], 0 for padding
        logits = self.predict_masks(features, boxes, classes, training=False)  # [B, D, Sm, Sm]
        valid = (classes >= 1)[..., tf.newaxis, tf.newaxis]
        detections["detection_masks"] = tf.where(valid, tf.sigmoid(logits), 0.0)
        return detections

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            mask_pooler=serialize_optional(self.mask_pooler),
            mask_head=serialize_optional(self.mask_head),
            mask_loss_weight=self.mask_loss_weight,
            paste_rule=self.paste_rule,
        )
        return config
