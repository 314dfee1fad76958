"""RPNTargetAssigner: labels and regression targets of the RPN's anchors (Faster R-CNN Sec. 3.1.2).

An anchor is positive when its IoU with some GT is >= 0.7, or when it is (one of) the best
anchors for a GT (case (i)); negative when its IoU with every GT is < 0.3; everything in between
is ignored. Anchors that cross the image boundary are ignored in training (the paper: "we ignore
all cross-boundary anchors so they do not contribute to the loss"), and anchors mostly inside a
crowd region are never negatives. 256 anchors per image are sampled at up to 1:1.

Conventions: boxes ``[y1, x1, y2, x2]`` pixels; GT padded with -1 (class < 1 = padding);
``crowd_boxes`` padded with -1. Shape shorthand: B batch, N anchors, M GT per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tf_rcnn.ops import anchors as anchor_ops
from tf_rcnn.ops import box_coder, matching, sampling
from tf_rcnn.ops import boxes as box_ops


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
        box_weights: Sequence[float] = box_coder.RPN_BOX_WEIGHTS,
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
        matched_boxes = matching.gather_gt(gt_boxes, match.matched_indices)
        targets = box_coder.encode(matched_boxes, batched_anchors, self.box_weights)
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
