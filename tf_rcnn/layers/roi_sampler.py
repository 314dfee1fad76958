"""RoISampler: the RoIs the R-CNN head trains on and their targets (Fast R-CNN Sec. 2.3).

GT boxes are appended to the proposals; a candidate is foreground when its IoU with a GT is
>= ``fg_iou`` (0.5), background when it lies in ``[bg_iou_low, fg_iou)``, ignored otherwise
(and when mostly inside a crowd region it is never background). :meth:`RoISampler.label` labels
EVERY candidate this way; calling the layer then samples ``batch_size_per_image`` of them with up
to ``positive_fraction`` foreground. OHEM (``tf_rcnn.models.roi_heads.ohem``) selects from
:meth:`RoISampler.label`'s output instead of sampling, so both use one labelling rule.

Conventions: boxes ``[y1, x1, y2, x2]`` pixels; GT padded with -1 (class < 1 = padding);
``crowd_boxes`` padded with -1. Shape shorthand: B batch, M GT per image, P proposals per image,
N = P (+ M with GT appended) candidates, S sampled RoIs per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tf_rcnn.ops import box_coder, matching, sampling
from tf_rcnn.ops import boxes as box_ops


def _seed_or_none(seed):
    return None if seed is None else (int(seed), 0)




@keras.saving.register_keras_serializable(package="tf_rcnn")
class RoISampler(keras.layers.Layer):
    """Samples the RoIs the R-CNN head trains on and gives their targets.

    Args:
        batch_size_per_image: RoIs per image (512 Faster R-CNN, 64 Fast R-CNN with 2 images).
        positive_fraction: maximum foreground share (0.25).
        fg_iou: IoU at or above which a proposal is foreground (0.5).
        bg_iou_low: lower end of the background interval ``[bg_iou_low, fg_iou)``; proposals
            below it are not sampled (0.0 for Faster R-CNN, 0.1 for Fast R-CNN).
        append_gt_boxes: add the GT boxes to the candidates (both papers do).
        crowd_ioa_threshold: candidates mostly inside a crowd box are never background.
        box_weights: coder weights of the targets (10, 10, 5, 5).
        seed: optional int for reproducible sampling.

    Call arguments:
        proposals ``[B, P, 4]``, proposal_valid ``[B, P]`` bool, gt_boxes ``[B, M, 4]``,
        gt_classes ``[B, M]`` int32, crowd_boxes ``[B, Mc, 4]`` or None.

    Returns:
        dict with ``rois [B, S, 4]``, ``labels [B, S]`` int32 (class id, 0 background),
        ``valid [B, S]`` bool, ``matched_gt_indices [B, S]`` int32, ``box_targets [B, S, 4]``.
    """

    def __init__(
        self,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou_low: float = 0.0,
        append_gt_boxes: bool = True,
        crowd_ioa_threshold: float = 0.7,
        box_weights: Sequence[float] = box_coder.RCNN_BOX_WEIGHTS,
        seed: int | None = None,
        **kwargs,
    ):
        # Mixed precision: matching and encoding stay float32 (float16: ~0.5 px steps at 1000 px).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0.0 <= bg_iou_low <= fg_iou <= 1.0:
            raise ValueError(f"Need 0 <= bg_iou_low <= fg_iou <= 1, got {bg_iou_low}, {fg_iou}.")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.fg_iou = float(fg_iou)
        self.bg_iou_low = float(bg_iou_low)
        self.append_gt_boxes = bool(append_gt_boxes)
        self.crowd_ioa_threshold = float(crowd_ioa_threshold)
        self.box_weights = tuple(float(w) for w in box_weights)
        self.seed = seed

    def label(
        self,
        proposals: tf.Tensor,
        proposal_valid: tf.Tensor,
        gt_boxes: tf.Tensor,
        gt_classes: tf.Tensor,
        crowd_boxes: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """Labels EVERY candidate (the proposals, plus the GT boxes when ``append_gt_boxes``).

        Args:
            proposals: ``[B, P, 4]`` float32 ``[y1, x1, y2, x2]`` pixels.
            proposal_valid: ``[B, P]`` bool.
            gt_boxes: ``[B, M, 4]`` float32, padded with -1.
            gt_classes: ``[B, M]`` int32 1..K, padded with -1.
            crowd_boxes: optional ``[B, Mc, 4]`` crowd regions, padded with -1.

        Returns:
            dict with ``rois [B, N, 4]``, ``labels [B, N]`` int32 (class id, 0 background, -1
            ignored or padding), ``valid [B, N]`` bool (``labels >= 0``),
            ``matched_gt_indices [B, N]`` int32 and ``box_targets [B, N, 4]`` (encoded with
            ``box_weights``, zero for non-foreground).
        """
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        gt_classes = tf.cast(gt_classes, tf.int32)
        valid_gt = gt_classes >= 1
        candidates = tf.stop_gradient(tf.cast(proposals, tf.float32))
        candidate_valid = tf.cast(proposal_valid, tf.bool)
        if self.append_gt_boxes:
            candidates = tf.concat([candidates, gt_boxes], axis=1)
            candidate_valid = tf.concat([candidate_valid, valid_gt], axis=1)
        similarity = box_ops.iou(candidates, gt_boxes)  # [B, N, M]
        if self.bg_iou_low > 0.0:
            thresholds, interval_labels = [self.bg_iou_low, self.fg_iou], [-1, 0, 1]
        else:
            thresholds, interval_labels = [self.fg_iou], [0, 1]
        ignore = tf.logical_not(candidate_valid)
        if crowd_boxes is not None:
            ignore = tf.logical_or(ignore, matching.crowd_ignore_mask(
                candidates, tf.cast(crowd_boxes, tf.float32), self.crowd_ioa_threshold))
        match = matching.match(similarity, valid_gt, thresholds, interval_labels,
                               ignore_mask=ignore)
        # Invalid (padding) candidates could only be foreground by IoU with a padded box of
        # area 0, which is 0; make it explicit anyway.
        match_labels = tf.where(candidate_valid, match.labels, -1)  # [B, N] in {1, 0, -1}
        foreground = match_labels == 1
        valid = match_labels >= 0
        classes = tf.where(foreground, matching.gather_gt(gt_classes, match.matched_indices), 0)
        targets = box_coder.encode(
            matching.gather_gt(gt_boxes, match.matched_indices), candidates, self.box_weights)
        return {
            "rois": candidates,
            "labels": tf.where(valid, classes, -1),
            "valid": valid,
            "matched_gt_indices": match.matched_indices,
            "box_targets": tf.stop_gradient(tf.where(foreground[..., tf.newaxis], targets, 0.0)),
        }

    def call(self, proposals, proposal_valid, gt_boxes, gt_classes, crowd_boxes=None):
        labeled = self.label(proposals, proposal_valid, gt_boxes, gt_classes, crowd_boxes)
        # 1 foreground, 0 background, -1 never sampled.
        match_labels = tf.where(labeled["valid"], tf.cast(labeled["labels"] > 0, tf.int32), -1)
        indices, valid = sampling.sample_indices(
            match_labels, self.batch_size_per_image, self.positive_fraction,
            _seed_or_none(self.seed),
        )
        sampled = {key: tf.gather(value, indices, batch_dims=1)
                   for key, value in labeled.items() if key != "valid"}
        foreground = tf.logical_and(valid, sampled["labels"] > 0)
        return {
            "rois": tf.stop_gradient(sampled["rois"]),
            "labels": tf.where(valid, sampled["labels"], -1),
            "valid": valid,
            "matched_gt_indices": sampled["matched_gt_indices"],
            "box_targets": tf.where(foreground[..., tf.newaxis], sampled["box_targets"], 0.0),
        }

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            batch_size_per_image=self.batch_size_per_image,
            positive_fraction=self.positive_fraction,
            fg_iou=self.fg_iou,
            bg_iou_low=self.bg_iou_low,
            append_gt_boxes=self.append_gt_boxes,
            crowd_ioa_threshold=self.crowd_ioa_threshold,
            box_weights=list(self.box_weights),
            seed=self.seed,
        )
        return config
