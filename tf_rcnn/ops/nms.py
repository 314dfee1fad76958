"""Non-maximum suppression: class-agnostic batched NMS for proposals, per-class NMS for detections.

Conventions (docs/design.md):
    Boxes are float32 ``[y1, x1, y2, x2]`` in pixels of the network input image (no ``+1``).
    Classes: 0 is background, 1..K objects; detection outputs carry classes in ``1..K`` and 0
    on padding rows. Scores of ``-inf`` mark masked-out boxes (e.g. too small, outside the
    image) and are never returned as valid.

Shape shorthand:
    B batch, N candidate boxes per image, K classes (or the kept count, see each function),
    D detections per image.

Implementation choice (measured):
    Proposal NMS runs ``tf.image.combined_non_max_suppression`` with one class (q = 1). That
    op returns boxes but no indices, which the RPN needs; so the candidates are first sorted
    by score (stable: equal scores keep index order) and the op receives *rank scores*
    ``N - rank`` instead of the real scores. Rank scores are distinct integers (exact in
    float32 below 2**24 boxes), so the greedy order is unchanged and each kept position is
    read back exactly as ``N - score``; masked boxes get rank score 0 and fall under the
    op's threshold of 0.5. Measured with ``benchmarks/bench_nms.py`` on this project's 2-core
    CPU (TF 2.21), B = 2, 12000 random boxes -> 2000 kept at IoU 0.7, median of 5-7 runs
    inside ``tf.function`` on an idle machine (a busy one adds noise, not a different order):

    ========================================================  ========
    path                                                      time
    ========================================================  ========
    combined_non_max_suppression, q=1 (no indices)            8.1 ms
    combined_non_max_suppression, rank scores (this module)   8.5 ms
    non_max_suppression_padded (indices)                      23.2 ms
    combined + index recovery by box equality                 207 ms
    ========================================================  ========

    The rank-score path returned exactly the same indices as ``non_max_suppression_padded``.

Inside ``tf_rcnn.backend.builtin_ops_only()`` (a LiteRT export) both functions run their
``NON_MAX_SUPPRESSION_V5`` twins in :mod:`tf_rcnn.ops.builtin_nms` instead.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tf_rcnn.backend import builtin_ops_only_enabled
from tf_rcnn.ops.builtin_nms import nms_v5_batched, nms_v5_multiclass


class NMSResult(NamedTuple):
    """Output of :func:`batched_nms`; K = ``max_output_size``.

    Attributes:
        indices: ``[B, K]`` int32 indices into the input boxes, best first, padded with -1.
        boxes: ``[B, K, 4]`` float32 ``[y1, x1, y2, x2]`` kept boxes, padded with 0.
        scores: ``[B, K]`` float32 scores of the kept boxes, padded with 0.
        num_valid: ``[B]`` int32 number of valid rows per image.
    """

    indices: tf.Tensor
    boxes: tf.Tensor
    scores: tf.Tensor
    num_valid: tf.Tensor


class DetectionResult(NamedTuple):
    """Output of :func:`multiclass_nms`; D = ``max_total``.

    Attributes:
        boxes: ``[B, D, 4]`` float32 ``[y1, x1, y2, x2]`` pixels, padded with 0.
        scores: ``[B, D]`` float32, best first, padded with 0.
        classes: ``[B, D]`` int32 in ``1..K``, 0 on padding rows.
        num_valid: ``[B]`` int32 number of valid detections per image.
    """

    boxes: tf.Tensor
    scores: tf.Tensor
    classes: tf.Tensor
    num_valid: tf.Tensor


def _check_iou_threshold(iou_threshold: float) -> None:
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}.")


def _valid_rows_mask(num_valid: tf.Tensor, size: int) -> tf.Tensor:
    """``[B, size]`` bool: position < num_valid[b]."""
    return tf.range(size)[None, :] < num_valid[:, None]


def batched_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_output_size: int,
    iou_threshold: float = 0.7,
    pre_nms_top_n: int | None = None,
    score_threshold: float = float("-inf"),
) -> NMSResult:
    """Class-agnostic greedy NMS for each image of a padded batch.

    Boxes are visited in decreasing score (equal scores in index order); a box is kept unless
    its IoU with an already kept box is above ``iou_threshold``.

    Args:
        boxes: ``[B, N, 4]`` float32 ``[y1, x1, y2, x2]`` pixels.
        scores: ``[B, N]`` float32 scores or logits; ``-inf`` marks masked-out boxes.
        max_output_size: K, the number of rows of every output (e.g. 2000 proposals).
        iou_threshold: suppression threshold in ``[0, 1]``.
        pre_nms_top_n: if set, only the ``pre_nms_top_n`` best-scoring boxes of each image
            enter NMS (e.g. 12000 -> NMS -> 2000).
        score_threshold: boxes with ``score <= score_threshold`` are never kept.

    Returns:
        :class:`NMSResult` with ``indices [B, K]`` into the ORIGINAL ``N`` boxes (padded -1),
        ``boxes [B, K, 4]`` (padded 0), ``scores [B, K]`` (padded 0), ``num_valid [B]``.
    """
    max_output_size = int(max_output_size)
    if max_output_size < 1:
        raise ValueError(f"max_output_size must be a positive int, got {max_output_size}.")
    if pre_nms_top_n is not None and int(pre_nms_top_n) < 1:
        raise ValueError(f"pre_nms_top_n must be a positive int or None, got {pre_nms_top_n}.")
    _check_iou_threshold(iou_threshold)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if boxes.shape.rank != 3 or scores.shape.rank != 2:
        raise ValueError(
            f"boxes must be [B, N, 4] and scores [B, N]; got {boxes.shape} and {scores.shape}."
        )

    if builtin_ops_only_enabled():  # LiteRT export: NON_MAX_SUPPRESSION_V5 (ops/builtin_nms.py)
        return NMSResult(*nms_v5_batched(boxes, scores, max_output_size, iou_threshold,
                                         pre_nms_top_n, score_threshold))

    num_boxes = tf.shape(scores)[1]
    k = num_boxes if pre_nms_top_n is None else tf.minimum(num_boxes, int(pre_nms_top_n))
    # Sorted candidates: top_k keeps equal scores in index order (stable greedy order).
    top_scores, order = tf.math.top_k(scores, k=k)  # [B, k], [B, k]
    top_boxes = tf.gather(boxes, order, batch_dims=1)  # [B, k, 4]
    keep = tf.logical_and(top_scores > score_threshold, top_scores > float("-inf"))

    # Rank scores k, k-1, ..., 1 (0 for masked rows): distinct, exact in float32.
    rank_scores = tf.cast(k - tf.range(k), tf.float32)[None, :]
    rank_scores = tf.where(keep, rank_scores, 0.0)  # [B, k]
    nmsed = tf.image.combined_non_max_suppression(
        top_boxes[:, :, None, :],  # [B, k, q=1, 4]
        rank_scores[:, :, None],  # [B, k, 1 class]
        max_output_size_per_class=max_output_size,
        max_total_size=max_output_size,
        iou_threshold=float(iou_threshold),
        score_threshold=0.5,
        pad_per_class=False,
        clip_boxes=False,
    )
    num_valid = tf.cast(nmsed.valid_detections, tf.int32)  # [B]
    valid = _valid_rows_mask(num_valid, max_output_size)  # [B, K]
    # Position in the sorted list, then index into the original boxes.
    position = k - tf.cast(tf.round(nmsed.nmsed_scores), tf.int32)
    position = tf.where(valid, position, 0)
    position = tf.clip_by_value(position, 0, tf.maximum(k - 1, 0))
    # Empty inputs (k == 0): gather from a one-row dummy so shapes stay valid.
    pad = tf.zeros(tf.stack([tf.shape(order)[0], 1]), tf.int32)  # [B, 1]
    safe_order = tf.concat([order, pad], axis=1)  # [B, k + 1]
    safe_scores = tf.concat([top_scores, tf.cast(pad, tf.float32)], axis=1)
    indices = tf.gather(safe_order, position, batch_dims=1)
    kept_scores = tf.gather(safe_scores, position, batch_dims=1)

    indices = tf.where(valid, indices, -1)
    kept_scores = tf.where(valid, kept_scores, 0.0)
    kept_boxes = tf.where(valid[..., None], nmsed.nmsed_boxes, 0.0)
    return NMSResult(indices=indices, boxes=kept_boxes, scores=kept_scores, num_valid=num_valid)


def multiclass_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_per_class: int,
    max_total: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
) -> DetectionResult:
    """Per-class NMS and top-``max_total`` selection over all classes (final detections).

    Args:
        boxes: ``[B, N, K, 4]`` class-specific or ``[B, N, 1, 4]`` shared float32
            ``[y1, x1, y2, x2]`` pixel boxes (decoded, usually clipped to the image).
        scores: ``[B, N, K]`` float32 foreground scores (background column already removed),
            column ``j`` is class ``j + 1``.
        max_per_class: boxes kept per class after NMS.
        max_total: D, detections kept per image (rows of every output).
        iou_threshold: per-class suppression threshold in ``[0, 1]``.
        score_threshold: scores ``<= score_threshold`` are dropped before NMS.

    Returns:
        :class:`DetectionResult` ``boxes [B, D, 4]``, ``scores [B, D]``, ``classes [B, D]``
        int32 in ``1..K`` (0 on padding) and ``num_valid [B]``.
    """
    max_per_class = int(max_per_class)
    max_total = int(max_total)
    if max_per_class < 1 or max_total < 1:
        raise ValueError(
            f"max_per_class and max_total must be positive ints, got {max_per_class} and "
            f"{max_total}."
        )
    _check_iou_threshold(iou_threshold)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if boxes.shape.rank != 4 or scores.shape.rank != 3:
        raise ValueError(
            "boxes must be [B, N, K or 1, 4] and scores [B, N, K] (background removed); got "
            f"{boxes.shape} and {scores.shape}."
        )
    if builtin_ops_only_enabled():  # LiteRT export: NON_MAX_SUPPRESSION_V5 (ops/builtin_nms.py)
        return DetectionResult(*nms_v5_multiclass(boxes, scores, max_per_class, max_total,
                                                  iou_threshold, score_threshold))
    # clip_boxes=False: boxes are pixels, not [0, 1]; the op's IoU is scale invariant.
    nmsed = tf.image.combined_non_max_suppression(
        boxes,
        scores,
        max_output_size_per_class=max_per_class,
        max_total_size=max_total,
        iou_threshold=float(iou_threshold),
        score_threshold=float(score_threshold),
        pad_per_class=False,
        clip_boxes=False,
    )
    num_valid = tf.cast(nmsed.valid_detections, tf.int32)
    valid = _valid_rows_mask(num_valid, max_total)
    # The op's classes are float 0..K-1 over the foreground columns -> int 1..K.
    classes = tf.cast(tf.round(nmsed.nmsed_classes), tf.int32) + 1
    return DetectionResult(
        boxes=tf.where(valid[..., None], nmsed.nmsed_boxes, 0.0),
        scores=tf.where(valid, nmsed.nmsed_scores, 0.0),
        classes=tf.where(valid, classes, 0),
        num_valid=num_valid,
    )
