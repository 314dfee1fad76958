"""Training-target layers: RPN anchor targets and R-CNN RoI sampling.

``RPNTargetAssigner`` (Faster R-CNN Sec. 3.1.2): an anchor is positive when its IoU with some GT
is >= 0.7, or when it is (one of) the best anchors for a GT (case (i)); negative when its IoU with
every GT is < 0.3; everything in between is ignored. Anchors that cross the image boundary are
ignored in training (the paper: "we ignore all cross-boundary anchors so they do not contribute to
the loss"), and anchors mostly inside a crowd region are never negatives. 256 anchors per image are
sampled at up to 1:1.

``RoISampler`` (Fast R-CNN Sec. 2.3): GT boxes are appended to the proposals, a proposal is
foreground when its IoU with a GT is >= 0.5, background when it lies in ``[bg_iou_low, 0.5)``; a
fixed ``batch_size_per_image`` RoIs are sampled with up to ``positive_fraction`` foreground.

Conventions: boxes ``[y1, x1, y2, x2]`` pixels; GT padded with -1 (class < 1 = padding);
``crowd_boxes`` padded with -1. Shape shorthand: B batch, N anchors, M GT per image, P proposals,
S sampled RoIs per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tf_rcnn.ops import anchors as anchor_ops
from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops import matching, sampling


def gather_gt(gt: tf.Tensor, matched_indices: tf.Tensor) -> tf.Tensor:
    """``gt [B, M, ...]`` gathered by ``matched_indices [B, X]`` -> ``[B, X, ...]``; M may be 0."""
    num_gt = tf.shape(gt)[1]
    safe = tf.minimum(matched_indices, tf.maximum(num_gt - 1, 0))
    padded = tf.cond(
        num_gt > 0,
        lambda: gt,
        lambda: tf.zeros(tf.concat([tf.shape(gt)[:1], [1], tf.shape(gt)[2:]], 0), gt.dtype),
    )
    return tf.gather(padded, safe, batch_dims=1)


def _seed_or_none(seed):
    return None if seed is None else (int(seed), 0)


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RPNTargetAssigner(keras.layers.Layer):
    """Labels and regression targets for the RPN's anchors.

    Args:
        positive_iou: IoU at or above which an anchor is positive (0.7).
        negative_iou: IoU below which an anchor is negative (0.3).
        batch_size_per_image: anchors sampled per image (256).
        positive_fraction: maximum share of positives in the sample (0.5, i.e. up to 1:1).
        straddle_threshold: anchors reaching more than this many pixels outside the image are
            ignored; a negative value keeps every anchor (Detectron2's default behaviour).
        crowd_ioa_threshold: anchors whose intersection-over-anchor-area with a crowd box reaches
            this are never negatives.
        box_weights: box coder weights for the targets.
        seed: optional int for reproducible sampling.

    Call arguments:
        anchors: ``[N, 4]``; gt_boxes ``[B, M, 4]``; gt_classes ``[B, M]`` int32;
        image_shape ``[B, 2]``; crowd_boxes ``[B, Mc, 4]`` or None.

    Returns:
        ``(labels [B, N] int32 (1 pos, 0 neg, -1 not sampled), box_targets [B, N, 4])``.
    """

    def __init__(
        self,
        positive_iou: float = 0.7,
        negative_iou: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        straddle_threshold: float = 0.0,
        crowd_ioa_threshold: float = 0.7,
        box_weights: Sequence[float] = box_ops.RPN_BOX_WEIGHTS,
        seed: int | None = None,
        **kwargs,
    ):
        # Mixed precision: matching and encoding stay float32 (float16: ~0.5 px steps at 1000 px).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0.0 <= negative_iou <= positive_iou <= 1.0:
            raise ValueError(
                f"Need 0 <= negative_iou <= positive_iou <= 1, got {negative_iou}, {positive_iou}."
            )
        self.positive_iou = float(positive_iou)
        self.negative_iou = float(negative_iou)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.straddle_threshold = float(straddle_threshold)
        self.crowd_ioa_threshold = float(crowd_ioa_threshold)
        self.box_weights = tuple(float(w) for w in box_weights)
        self.seed = seed

    def call(self, anchors, gt_boxes, gt_classes, image_shape, crowd_boxes=None):
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        valid_gt = tf.cast(gt_classes, tf.int32) >= 1
        batch = tf.shape(gt_boxes)[0]
        # [N, 4] -> [B, N, 4] so that iou broadcasts per image: [B, N, M].
        batched_anchors = tf.broadcast_to(anchors[tf.newaxis], [batch, tf.shape(anchors)[0], 4])
        similarity = box_ops.iou(batched_anchors, gt_boxes)
        if self.straddle_threshold >= 0.0:
            inside = anchor_ops.inside_image_mask(anchors, image_shape, self.straddle_threshold)
            # Cross-boundary anchors take no part, not even in the best-anchor rule.
            similarity = tf.where(inside[..., tf.newaxis], similarity, -1.0)
        else:
            inside = tf.ones([batch, tf.shape(anchors)[0]], tf.bool)
        ignore = tf.logical_not(inside)
        if crowd_boxes is not None:
            crowd = matching.crowd_ignore_mask(
                batched_anchors, tf.cast(crowd_boxes, tf.float32), self.crowd_ioa_threshold
            )
            ignore = tf.logical_or(ignore, crowd)
        match = matching.match(
            similarity,
            valid_gt,
            thresholds=[self.negative_iou, self.positive_iou],
            labels=[0, -1, 1],
            allow_low_quality_matches=True,
            ignore_mask=ignore,
        )
        labels = tf.where(inside, match.labels, -1)
        pos, neg = sampling.subsample_labels(
            labels, self.batch_size_per_image, self.positive_fraction, _seed_or_none(self.seed)
        )
        sampled = tf.where(pos, 1, tf.where(neg, 0, -1))
        matched_boxes = gather_gt(gt_boxes, match.matched_indices)
        targets = box_ops.encode(matched_boxes, batched_anchors, self.box_weights)
        targets = tf.where(pos[..., tf.newaxis], targets, 0.0)
        return tf.cast(sampled, tf.int32), tf.stop_gradient(targets)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            positive_iou=self.positive_iou,
            negative_iou=self.negative_iou,
            batch_size_per_image=self.batch_size_per_image,
            positive_fraction=self.positive_fraction,
            straddle_threshold=self.straddle_threshold,
            crowd_ioa_threshold=self.crowd_ioa_threshold,
            box_weights=list(self.box_weights),
            seed=self.seed,
        )
        return config


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
        box_weights: Sequence[float] = box_ops.RCNN_BOX_WEIGHTS,
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

    def call(self, proposals, proposal_valid, gt_boxes, gt_classes, crowd_boxes=None):
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        gt_classes = tf.cast(gt_classes, tf.int32)
        valid_gt = gt_classes >= 1
        candidates = tf.stop_gradient(tf.cast(proposals, tf.float32))
        candidate_valid = tf.cast(proposal_valid, tf.bool)
        if self.append_gt_boxes:
            candidates = tf.concat([candidates, gt_boxes], axis=1)
            candidate_valid = tf.concat([candidate_valid, valid_gt], axis=1)
        similarity = box_ops.iou(candidates, gt_boxes)  # [B, P(+M), M]
        if self.bg_iou_low > 0.0:
            thresholds, labels = [self.bg_iou_low, self.fg_iou], [-1, 0, 1]
        else:
            thresholds, labels = [self.fg_iou], [0, 1]
        ignore = tf.logical_not(candidate_valid)
        if crowd_boxes is not None:
            ignore = tf.logical_or(
                ignore,
                matching.crowd_ignore_mask(
                    candidates, tf.cast(crowd_boxes, tf.float32), self.crowd_ioa_threshold
                ),
            )
        match = matching.match(similarity, valid_gt, thresholds, labels, ignore_mask=ignore)
        # Invalid (padding) candidates may still have been labelled foreground by IoU with a
        # padded box of area 0: they cannot (IoU 0), but make it explicit.
        match_labels = tf.where(candidate_valid, match.labels, -1)
        indices, valid = sampling.sample_indices(
            match_labels, self.batch_size_per_image, self.positive_fraction,
            _seed_or_none(self.seed),
        )
        rois = tf.gather(candidates, indices, batch_dims=1)
        sampled_match = tf.gather(match_labels, indices, batch_dims=1)
        matched_gt = tf.gather(match.matched_indices, indices, batch_dims=1)
        foreground = tf.logical_and(valid, sampled_match == 1)
        classes = tf.where(foreground, gather_gt(gt_classes, matched_gt), 0)
        classes = tf.where(valid, classes, -1)
        targets = box_ops.encode(gather_gt(gt_boxes, matched_gt), rois, self.box_weights)
        targets = tf.where(foreground[..., tf.newaxis], targets, 0.0)
        return {
            "rois": tf.stop_gradient(rois),
            "labels": classes,
            "valid": valid,
            "matched_gt_indices": matched_gt,
            "box_targets": tf.stop_gradient(targets),
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
