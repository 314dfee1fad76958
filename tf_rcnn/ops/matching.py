"""Matching anchors/RoIs to ground truth by similarity (IoU), with interval labels.

Conventions (docs/design.md):
    Boxes are float32 ``[y1, x1, y2, x2]`` pixels. Match labels: 1 positive, 0 negative,
    -1 ignore. GT rows are padded; ``valid_gt`` says which columns are real (class >= 1).
    Crowd boxes never become positives; they only turn would-be negatives into ignore.

Shape shorthand:
    B batch, N anchors or RoIs per image (rows), M GT per image (columns), Mc crowd boxes.

Naming:
    ``similarity``: ``[B, N, M]`` quality of each (row, GT) pair, usually IoU;
    ``thresholds``/``labels``: the intervals ``[-inf, t0), [t0, t1), ..., [t_last, inf)`` of a
    row's best similarity get ``labels[0], labels[1], ..., labels[-1]``. Typical settings:
    RPN ``[0.3, 0.7] -> [0, -1, 1]``; Faster R-CNN RoIs ``[0.5] -> [0, 1]``; Fast R-CNN RoIs
    ``[0.1, 0.5] -> [-1, 0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf

from tf_rcnn.ops import boxes as box_ops


class MatchResult(NamedTuple):
    """Output of :func:`match`.

    Attributes:
        matched_indices: ``[B, N]`` int32 GT column in ``[0, M)`` of each row (0 when the image
            has no valid GT; read it together with ``labels``).
        labels: ``[B, N]`` int32 in ``{-1, 0, 1}`` (or whatever ``labels`` holds).
        max_similarity: ``[B, N]`` float32 best similarity of each row over valid GT, 0 when
            the image has no valid GT.
    """

    matched_indices: tf.Tensor
    labels: tf.Tensor
    max_similarity: tf.Tensor


def _check_intervals(thresholds: Sequence[float], labels: Sequence[int]) -> None:
    thresholds = list(thresholds)
    labels = list(labels)
    if len(labels) != len(thresholds) + 1:
        raise ValueError(
            f"labels needs one entry per interval, len(thresholds) + 1 = {len(thresholds) + 1}; "
            f"got thresholds={thresholds} and labels={labels}."
        )
    if any(b < a for a, b in zip(thresholds, thresholds[1:], strict=False)):
        raise ValueError(f"thresholds must be non-decreasing, got {thresholds}.")
    if any(label not in (-1, 0, 1) for label in labels):
        raise ValueError(f"labels must be -1 (ignore), 0 (negative) or 1 (positive); got {labels}.")


def match(
    similarity: tf.Tensor,
    valid_gt: tf.Tensor,
    thresholds: Sequence[float],
    labels: Sequence[int],
    allow_low_quality_matches: bool = False,
    ignore_mask: tf.Tensor | None = None,
) -> MatchResult:
    """Match every row (anchor/RoI) to its best valid GT column and label it by interval.

    Steps, in order:
      1. each row takes the valid GT of highest similarity (lowest column on ties); padded
         columns never match; without any valid GT the best similarity is 0;
      2. the row's label is ``labels[i]`` for the interval ``[t_{i-1}, t_i)`` holding it;
      3. ``allow_low_quality_matches`` (Faster R-CNN, Sec. 3.1.2, case (i)): for every valid GT
         whose best similarity over rows is > 0, each row reaching that best value (ties
         included) gets label 1 and is matched to that GT (when a row is such a row for
         several GT, to the one it overlaps most). ``max_similarity`` is left unchanged;
      4. ``ignore_mask`` rows with label 0 become -1 (crowd regions, anchors outside the image).

    Args:
        similarity: ``[B, N, M]`` float, e.g. ``boxes.iou(anchors, gt_boxes)``.
        valid_gt: ``[B, M]`` bool, True for real GT columns (``gt_classes >= 1``).
        thresholds: non-decreasing interval boundaries.
        labels: ``len(thresholds) + 1`` labels in ``{-1, 0, 1}``.
        allow_low_quality_matches: see step 3.
        ignore_mask: optional ``[B, N]`` bool, see step 4.

    Returns:
        :class:`MatchResult` with ``matched_indices [B, N]`` int32, ``labels [B, N]`` int32 and
        ``max_similarity [B, N]`` float32.
    """
    _check_intervals(thresholds, labels)
    similarity = tf.cast(tf.convert_to_tensor(similarity), tf.float32)
    valid_gt = tf.cast(tf.convert_to_tensor(valid_gt), tf.bool)
    if similarity.shape.rank != 3 or valid_gt.shape.rank != 2:
        raise ValueError(
            f"similarity must be [B, N, M] and valid_gt [B, M]; got {similarity.shape} and "
            f"{valid_gt.shape}."
        )
    valid_cols = valid_gt[:, None, :]  # [B, 1, M]
    neg_inf = tf.constant(float("-inf"), tf.float32)
    masked = tf.where(valid_cols, similarity, neg_inf)  # [B, N, M]
    has_gt = tf.reduce_any(valid_gt, axis=1)  # [B]

    # A sentinel column keeps argmax/reduce_max defined when M == 0.
    sentinel = tf.fill(tf.concat([tf.shape(masked)[:2], [1]], 0), neg_inf)  # [B, N, 1]
    padded = tf.concat([masked, sentinel], axis=2)  # [B, N, M + 1]
    best = tf.reduce_max(padded, axis=2)  # [B, N]
    matched = tf.argmax(padded, axis=2, output_type=tf.int32)  # [B, N], first on ties
    max_similarity = tf.where(has_gt[:, None], best, 0.0)
    matched = tf.where(has_gt[:, None], matched, 0)

    # Interval index = number of thresholds <= the row's best similarity.
    interval = tf.zeros_like(matched)
    for t in thresholds:
        interval += tf.cast(max_similarity >= float(t), tf.int32)
    out_labels = tf.gather(tf.constant(list(labels), tf.int32), interval)  # [B, N]

    if allow_low_quality_matches:
        # Best similarity of each valid GT over rows: [B, 1, M] (-inf for padded columns).
        gt_best = tf.reduce_max(masked, axis=1, keepdims=True)
        forced = tf.logical_and(tf.equal(masked, gt_best), gt_best > 0.0)  # [B, N, M]
        is_forced = tf.reduce_any(forced, axis=2)  # [B, N]
        # Among the GT a row is forced to, take the one with the highest similarity.
        forced_sim = tf.where(forced, similarity, neg_inf)
        forced_sim = tf.concat([forced_sim, sentinel], axis=2)
        forced_match = tf.argmax(forced_sim, axis=2, output_type=tf.int32)
        matched = tf.where(is_forced, forced_match, matched)
        out_labels = tf.where(is_forced, 1, out_labels)

    if ignore_mask is not None:
        ignore_mask = tf.cast(tf.convert_to_tensor(ignore_mask), tf.bool)
        out_labels = tf.where(tf.logical_and(ignore_mask, out_labels == 0), -1, out_labels)
    return MatchResult(matched_indices=matched, labels=out_labels, max_similarity=max_similarity)


def crowd_ignore_mask(
    boxes: tf.Tensor, crowd_boxes: tf.Tensor, threshold: float = 0.7
) -> tf.Tensor:
    """Rows mostly inside a crowd region: ``max_c IoA(box, crowd_c) >= threshold``.

    IoA is intersection over the area of ``boxes`` (so a small anchor inside a large crowd
    region counts). Padded crowd rows (all -1, zero area) never intersect anything.

    Args:
        boxes: ``[B, N, 4]`` float32 ``[y1, x1, y2, x2]`` anchors or RoIs (pixels). Anchors
            shared by the batch can be passed as ``[1, N, 4]`` or broadcast by the caller.
        crowd_boxes: ``[B, Mc, 4]`` float32 crowd regions padded with -1 (``Mc`` may be 0).
        threshold: IoA at or above which a row is ignored.

    Returns:
        ``[B, N]`` bool, True for rows to ignore as negatives.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    crowd_boxes = tf.convert_to_tensor(crowd_boxes, tf.float32)
    if boxes.shape.rank != 3 or crowd_boxes.shape.rank != 3:
        raise ValueError(
            f"boxes must be [B, N, 4] and crowd_boxes [B, Mc, 4]; got {boxes.shape} and "
            f"{crowd_boxes.shape}."
        )
    overlap = box_ops.ioa(boxes, crowd_boxes)  # [B, N, Mc]
    crowd_valid = box_ops.area(crowd_boxes) > 0.0  # [B, Mc]
    hit = tf.logical_and(overlap >= float(threshold), crowd_valid[:, None, :])
    return tf.reduce_any(hit, axis=2)


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
