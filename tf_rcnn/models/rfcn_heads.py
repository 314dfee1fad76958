"""R-FCN second stage: shared score maps, PS-RoI pooling + voting, OHEM training.

``RFCNRoIHeads`` subclasses ``RoIHeads`` so sampling, losses and decoding stay shared; it only
changes where the work happens. The ``RFCNHead`` score maps are computed ONCE per image batch
from the feature map; every RoI set (all proposals for OHEM, the sampled mini-batch, or the test
proposals) then costs one ``PSRoIPooling`` call with voting.

Training, as the R-FCN paper trains (Sec. 2, "Training", after Shrivastava et al. 2016, OHEM):
    every proposal of an image (plus the GT boxes, as Fast R-CNN does) is labelled — foreground
    when its IoU with a GT is >= ``fg_iou`` (0.5), background in ``[bg_iou_low, fg_iou)`` — and
    its loss (softmax cross-entropy + smooth-L1 on foreground) is evaluated; the RoIs are NMSed
    by loss at ``ohem_nms_threshold`` (0.7, the OHEM paper's Sec. 4) and the ``ohem_batch_size``
    (128) with the highest loss are kept. Only those are back-propagated: the loss is computed
    from the selected rows only, so every other RoI gets an exactly zero gradient. With
    ``ohem=False`` the sampler's plain mini-batch (``RoISampler``) is used instead.

Losses keep the project normalisation (``losses.rcnn_losses``): class loss is the mean over the
selected RoIs, box loss is the foreground smooth-L1 sum divided by the selected count.

Conventions: boxes ``[y1, x1, y2, x2]`` float32 input-image pixels; classes 0 background, 1..K;
GT padded with -1 (class < 1 = padding); crowd boxes only turn background into ignore.
Shape shorthand: B batch, P proposals per image, M GT per image, N = P + M candidates,
S selected (OHEM) or sampled RoIs per image, K classes.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_rcnn import losses as loss_lib
from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.layers.target_assigners import RoISampler, gather_gt
from tf_rcnn.models.heads.rfcn import RFCNHead
from tf_rcnn.models.roi_heads import RoIHeads
from tf_rcnn.models.serialization import deserialize_keys, serialize_optional
from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops import matching
from tf_rcnn.ops import nms as nms_ops


def label_candidates(
    proposals: tf.Tensor,
    proposal_valid: tf.Tensor,
    gt_boxes: tf.Tensor,
    gt_classes: tf.Tensor,
    sampler: RoISampler,
    crowd_boxes: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Labels EVERY candidate RoI with the sampler's rules, without subsampling (for OHEM).

    Args:
        proposals: ``[B, P, 4]`` float32 ``[y1, x1, y2, x2]`` pixels.
        proposal_valid: ``[B, P]`` bool.
        gt_boxes: ``[B, M, 4]`` float32, padded with -1.
        gt_classes: ``[B, M]`` int32 1..K, padded with -1.
        sampler: the ``RoISampler`` whose ``fg_iou``, ``bg_iou_low``, ``append_gt_boxes``,
            ``crowd_ioa_threshold`` and ``box_weights`` define the labels.
        crowd_boxes: optional ``[B, Mc, 4]`` crowd regions, padded with -1.

    Returns:
        dict with ``rois [B, N, 4]`` (N = P, or P + M with GT appended), ``labels [B, N]`` int32
        (class id, 0 background, -1 ignored or padding), ``valid [B, N]`` bool (``labels >= 0``)
        and ``box_targets [B, N, 4]`` (R-CNN-encoded, zero for non-foreground).
    """
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    valid_gt = gt_classes >= 1
    candidates = tf.stop_gradient(tf.cast(proposals, tf.float32))
    candidate_valid = tf.cast(proposal_valid, tf.bool)
    if sampler.append_gt_boxes:
        candidates = tf.concat([candidates, gt_boxes], axis=1)
        candidate_valid = tf.concat([candidate_valid, valid_gt], axis=1)
    similarity = box_ops.iou(candidates, gt_boxes)  # [B, N, M]
    if sampler.bg_iou_low > 0.0:
        thresholds, interval_labels = [sampler.bg_iou_low, sampler.fg_iou], [-1, 0, 1]
    else:
        thresholds, interval_labels = [sampler.fg_iou], [0, 1]
    ignore = tf.logical_not(candidate_valid)
    if crowd_boxes is not None:
        ignore = tf.logical_or(ignore, matching.crowd_ignore_mask(
            candidates, tf.cast(crowd_boxes, tf.float32), sampler.crowd_ioa_threshold))
    match = matching.match(similarity, valid_gt, thresholds, interval_labels, ignore_mask=ignore)
    match_labels = tf.where(candidate_valid, match.labels, -1)  # [B, N] in {1, 0, -1}
    foreground = match_labels == 1
    valid = match_labels >= 0
    classes = tf.where(foreground, gather_gt(gt_classes, match.matched_indices), 0)
    classes = tf.where(valid, classes, -1)
    targets = box_ops.encode(
        gather_gt(gt_boxes, match.matched_indices), candidates, sampler.box_weights)
    targets = tf.where(foreground[..., tf.newaxis], targets, 0.0)
    return {
        "rois": candidates,
        "labels": classes,
        "valid": valid,
        "box_targets": tf.stop_gradient(targets),
    }


def per_roi_losses(
    class_logits: tf.Tensor,
    pred_deltas: tf.Tensor,
    labels: tf.Tensor,
    box_targets: tf.Tensor,
    box_beta: float = 1.0,
) -> tf.Tensor:
    """Each RoI's own loss: softmax cross-entropy + smooth-L1 summed over 4 deltas (foreground).

    Args:
        class_logits: ``[B, N, K+1]``.
        pred_deltas: ``[B, N, 1, 4]`` class-agnostic or ``[B, N, K+1, 4]``.
        labels: ``[B, N]`` int32, -1 rows are treated as background (mask them yourself).
        box_targets: ``[B, N, 4]`` encoded targets.
        box_beta: smooth-L1 beta.

    Returns:
        ``[B, N]`` float32 losses.
    """
    labels = tf.maximum(tf.cast(labels, tf.int32), 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(class_logits, tf.float32))
    pred_deltas = tf.cast(pred_deltas, tf.float32)
    if pred_deltas.shape[-2] == 1:
        deltas = pred_deltas[..., 0, :]
    else:
        deltas = tf.gather(pred_deltas, labels, axis=2, batch_dims=2)
    box = tf.reduce_sum(loss_lib.smooth_l1(deltas, box_targets, box_beta), axis=-1)
    return ce + box * tf.cast(labels > 0, tf.float32)


def ohem_select(
    rois: tf.Tensor,
    roi_losses: tf.Tensor,
    valid: tf.Tensor,
    batch_size: int,
    nms_threshold: float = 0.7,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Online hard example mining: the ``batch_size`` highest-loss RoIs per image after NMS.

    RoIs are visited by decreasing loss; one is dropped when its IoU with an already kept RoI is
    above ``nms_threshold`` (so near-duplicates do not double-count a hard region); the first
    ``batch_size`` kept are selected. ``nms_threshold >= 1`` is plain top-k by loss.

    Args:
        rois: ``[B, N, 4]`` float32 ``[y1, x1, y2, x2]`` pixels.
        roi_losses: ``[B, N]`` float32 per-RoI losses (no gradient is taken through them).
        valid: ``[B, N]`` bool, the RoIs that may be selected.
        batch_size: S, RoIs selected per image (128 in R-FCN).
        nms_threshold: IoU above which a lower-loss RoI is suppressed (0.7).

    Returns:
        ``(indices [B, S] int32 into N (0 on padding rows), selected [B, S] bool)``; an image
        with fewer than S candidates surviving NMS gets padding rows.
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size (model.rfcn.ohem_batch_size) must be an int >= 1, got "
                         f"{batch_size!r}.")
    scores = tf.where(tf.cast(valid, tf.bool), tf.stop_gradient(roi_losses), float("-inf"))
    result = nms_ops.batched_nms(
        tf.stop_gradient(tf.cast(rois, tf.float32)), scores, max_output_size=int(batch_size),
        iou_threshold=min(float(nms_threshold), 1.0),
    )
    selected = result.indices >= 0
    return tf.where(selected, result.indices, 0), selected


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RFCNRoIHeads(RoIHeads):
    """R-FCN RoI heads: shared PS score maps, per-RoI PS pooling + voting, OHEM or sampling.

    Args:
        head: an ``RFCNHead`` (score maps + PS-RoI pooling + voting).
        sampler: ``RoISampler``; its IoU rules label the OHEM candidates, and with
            ``ohem=False`` it samples the plain mini-batch.
        decoder: ``DetectionDecoder`` used at inference (class-agnostic deltas).
        box_loss_beta: smooth-L1 beta of the box loss (1.0).
        ohem: True trains on the hardest RoIs of all proposals (the paper); False on the
            sampler's mini-batch.
        ohem_batch_size: RoIs back-propagated per image with OHEM (128).
        ohem_nms_threshold: NMS IoU among RoIs sorted by loss before the selection (0.7).
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        features: list with ONE ``[B, H, W, C]`` map (e.g. the dilated C5, stride 16).
        proposals ``[B, P, 4]``, proposal_valid ``[B, P]`` bool, image_shape ``[B, 2]`` int32.
        targets: dict (``boxes``, ``classes``, optional ``crowd_boxes``) in training.
        training: Python bool.

    Returns:
        In training: ``{"rcnn_class_loss", "rcnn_box_loss"}``; otherwise the detection dict.
    """

    def __init__(
        self,
        head: RFCNHead,
        sampler: RoISampler | None = None,
        decoder: DetectionDecoder | None = None,
        box_loss_beta: float = 1.0,
        ohem: bool = True,
        ohem_batch_size: int = 128,
        ohem_nms_threshold: float = 0.7,
        **kwargs: Any,
    ) -> None:
        super().__init__(pooler=None, box_head=None, box_predictor=None, sampler=sampler,
                         decoder=decoder, box_loss_beta=box_loss_beta, **kwargs)
        if int(ohem_batch_size) != ohem_batch_size or ohem_batch_size < 1:
            raise ValueError(f"ohem_batch_size (model.rfcn.ohem_batch_size) must be an int >= 1, "
                             f"got {ohem_batch_size!r}.")
        if not ohem_nms_threshold >= 0.0:  # also rejects NaN
            raise ValueError(f"ohem_nms_threshold must be >= 0 (>= 1 disables the NMS), got "
                             f"{ohem_nms_threshold!r}.")
        self.head = head
        self.ohem = bool(ohem)
        self.ohem_batch_size = int(ohem_batch_size)
        self.ohem_nms_threshold = float(ohem_nms_threshold)

    # ----------------------------------------------------------------------------- per image
    def score_maps(self, features: list) -> tf.Tensor:
        """The per-image work, done once: ``[B, H, W, k*k*(K+1+4)]``."""
        if len(features) != 1:
            raise ValueError(
                f"RFCNRoIHeads reads one feature map but got {len(features)}; set "
                "model.roi_head.in_features to a single stride-16 map such as ('C5',)."
            )
        return self.head.score_maps(features[0])

    def _predict_boxes(self, features, rois, training):
        return self.head.pool(self.score_maps(list(features)), rois)

    # ----------------------------------------------------------------------------- training
    def ohem_losses(self, class_logits, pred_deltas, labeled) -> tuple[dict, tf.Tensor,
                                                                        tf.Tensor]:
        """OHEM losses from the predictions for ALL candidates.

        Args:
            class_logits: ``[B, N, K+1]``; pred_deltas ``[B, N, 1, 4]``.
            labeled: :func:`label_candidates` output for the same N rows.

        Returns:
            ``(losses dict, indices [B, S] int32, selected [B, S] bool)``.
        """
        roi_losses = per_roi_losses(class_logits, pred_deltas, labeled["labels"],
                                    labeled["box_targets"], self.box_loss_beta)
        indices, selected = ohem_select(labeled["rois"], roi_losses, labeled["valid"],
                                        self.ohem_batch_size, self.ohem_nms_threshold)
        # Only the selected rows enter the loss, so only they get a gradient.
        losses = loss_lib.rcnn_losses(
            tf.gather(class_logits, indices, batch_dims=1),
            tf.gather(pred_deltas, indices, batch_dims=1),
            tf.gather(labeled["labels"], indices, batch_dims=1),
            tf.gather(labeled["box_targets"], indices, batch_dims=1),
            selected,
            box_beta=self.box_loss_beta,
        )
        return losses, indices, selected

    def compute_losses(self, features, proposals, proposal_valid, targets, training=True):
        maps = self.score_maps(list(features))
        if not self.ohem:
            sampled = self.sample(proposals, proposal_valid, targets)
            class_logits, pred_deltas = self.head.pool(maps, sampled["rois"])
            return loss_lib.rcnn_losses(
                class_logits, pred_deltas, sampled["labels"], sampled["box_targets"],
                sampled["valid"], box_beta=self.box_loss_beta,
            ), sampled
        labeled = label_candidates(proposals, proposal_valid, targets["boxes"],
                                   targets["classes"], self.sampler,
                                   crowd_boxes=targets.get("crowd_boxes"))
        class_logits, pred_deltas = self.head.pool(maps, labeled["rois"])
        losses, indices, selected = self.ohem_losses(class_logits, pred_deltas, labeled)
        sampled = {
            "rois": tf.gather(labeled["rois"], indices, batch_dims=1),
            "labels": tf.where(selected, tf.gather(labeled["labels"], indices, batch_dims=1), -1),
            "valid": selected,
            "box_targets": tf.gather(labeled["box_targets"], indices, batch_dims=1),
        }
        return losses, sampled

    # ----------------------------------------------------------------------------- config
    def get_config(self) -> dict:
        config = super().get_config()
        for key in ("pooler", "box_head", "box_predictor", "focal_gamma"):
            config.pop(key, None)
        config.update(
            head=serialize_optional(self.head),
            ohem=self.ohem,
            ohem_batch_size=self.ohem_batch_size,
            ohem_nms_threshold=self.ohem_nms_threshold,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> RFCNRoIHeads:
        return cls(**deserialize_keys(config, ("head", "sampler", "decoder")))
