"""NMS through ``NON_MAX_SUPPRESSION_V5`` only: the builtin-only twins of :mod:`tf_rcnn.ops.nms`.

``tf.image.combined_non_max_suppression`` has no TFLite builtin. Inside
``tf_rcnn.backend.builtin_ops_only()``, :func:`tf_rcnn.ops.nms.batched_nms` and
:func:`tf_rcnn.ops.nms.multiclass_nms` call the functions here, which use the single-class
``NonMaxSuppressionV5`` (padded to its maximum output size, so every shape stays static), one
call per image of a batch of static size (an exported model has batch 1), plus ``TOPK_V2``,
``GATHER``, ``CUMSUM`` and arithmetic.

- Proposals (:func:`nms_v5_batched`): the candidates are sorted by score (``top_k``, stable) and
  NMS receives *rank scores* ``k, k-1, ..., 1`` (0 for masked rows, under the 0.5 threshold),
  as the default path does, so the greedy order is the sorted order exactly and the returned
  indices are positions in it.
- Detections (:func:`nms_v5_multiclass`): per-class NMS as ONE NMS by the class-offset trick:
  the boxes of class ``c`` are shifted by ``c * E`` with ``E`` larger than the extent of all
  boxes, so boxes of different classes never overlap and greedy NMS over the union keeps
  exactly the per-class survivors, best first. A ``max_per_class`` below ``max_total`` is
  applied afterwards (rank of each survivor within its class by a cumulative sum over one-hot
  classes) before the ``max_total`` best are kept.

Greedy NMS and the score rule (``score > score_threshold``) are those of the default path; only
the order of exactly equal scores across classes may differ (the default sorts the per-class
lists by score).

Shape shorthand: B batch (static), N boxes per image, K classes or kept count, D detections.
"""

from __future__ import annotations

import tensorflow as tf


def _static_batch(tensor: tf.Tensor, fname: str) -> int:
    batch = tensor.shape[0]
    if batch is None:
        raise ValueError(
            f"{fname}: the builtin-only NMS (LiteRT export) needs a static batch size, got "
            f"shape {tensor.shape}; trace the model with a fixed batch (the .tflite export "
            f"uses batch 1)."
        )
    return int(batch)


def _nms_v5(boxes: tf.Tensor, scores: tf.Tensor, max_output_size: int, iou_threshold: float,
            score_threshold: float) -> tuple[tf.Tensor, tf.Tensor]:
    """One image: ``[N, 4]``, ``[N]`` -> ``(selected [max_output_size] int32 padded with 0,
    num_valid int32 scalar)``, greedy in decreasing score."""
    selected, _, num_valid = tf.raw_ops.NonMaxSuppressionV5(
        boxes=boxes, scores=scores, max_output_size=max_output_size,
        iou_threshold=float(iou_threshold), score_threshold=float(score_threshold),
        soft_nms_sigma=0.0, pad_to_max_output_size=True)
    return selected, tf.cast(num_valid, tf.int32)


def nms_v5_batched(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_output_size: int,
    iou_threshold: float,
    pre_nms_top_n: int | None,
    score_threshold: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Class-agnostic NMS per image (the contract of :func:`tf_rcnn.ops.nms.batched_nms`,
    arguments already checked there).

    Returns:
        ``(indices [B, K] padded -1, boxes [B, K, 4] padded 0, scores [B, K] padded 0,
        num_valid [B])`` with ``K = max_output_size``.
    """
    batch = _static_batch(scores, "batched_nms")
    num_boxes = tf.shape(scores)[1]
    k = num_boxes if pre_nms_top_n is None else tf.minimum(num_boxes, int(pre_nms_top_n))
    top_scores, order = tf.math.top_k(scores, k=k)  # [B, k], stable for equal scores
    top_boxes = tf.gather(boxes, order, batch_dims=1)  # [B, k, 4]
    keep = tf.logical_and(top_scores > score_threshold, top_scores > float("-inf"))
    rank_scores = tf.where(keep, tf.cast(k - tf.range(k), tf.float32)[None, :], 0.0)
    # A zero row after the candidates: padded outputs gather it (also when k == 0).
    zero_row = tf.zeros(tf.stack([batch, 1]), tf.int32)
    safe_order = tf.concat([order, zero_row], axis=1)  # [B, k + 1]
    safe_scores = tf.concat([top_scores, tf.cast(zero_row, tf.float32)], axis=1)
    safe_boxes = tf.concat([top_boxes, tf.zeros(tf.stack([batch, 1, 4]))], axis=1)
    valid_rows = tf.range(max_output_size)
    indices, kept_boxes, kept_scores, counts = [], [], [], []
    for b in range(batch):
        position, num_valid = _nms_v5(top_boxes[b], rank_scores[b], max_output_size,
                                      iou_threshold, 0.5)
        valid = valid_rows < num_valid
        position = tf.where(valid, position, k)  # padding -> the zero row
        indices.append(tf.where(valid, tf.gather(safe_order[b], position), -1))
        kept_scores.append(tf.where(valid, tf.gather(safe_scores[b], position), 0.0))
        kept_boxes.append(tf.gather(safe_boxes[b], position))
        counts.append(num_valid)
    return (tf.stack(indices), tf.stack(kept_boxes), tf.stack(kept_scores), tf.stack(counts))


def nms_v5_multiclass(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_per_class: int,
    max_total: int,
    iou_threshold: float,
    score_threshold: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-class NMS and the overall best ``max_total`` (the contract of
    :func:`tf_rcnn.ops.nms.multiclass_nms`, arguments already checked there).

    Args:
        boxes: ``[B, N, K or 1, 4]`` float32 pixels; N and K static.
        scores: ``[B, N, K]`` float32, column ``j`` is class ``j + 1``.

    Returns:
        ``(boxes [B, D, 4], scores [B, D], classes [B, D] int32 in 1..K (0 padding),
        num_valid [B])`` with ``D = max_total``.
    """
    batch = _static_batch(scores, "multiclass_nms")
    num, classes = scores.shape[1], scores.shape[2]
    if num is None or classes is None:
        raise ValueError(
            f"multiclass_nms: the builtin-only NMS (LiteRT export) needs static N and K, got "
            f"scores of shape {scores.shape}.")
    boxes = tf.broadcast_to(boxes, [batch, num, classes, 4])
    flat_boxes = tf.reshape(boxes, [batch, num * classes, 4])
    flat_scores = tf.reshape(scores, [batch, num * classes])
    # Row n * K + c holds class c (0-based).
    class_of_row = tf.tile(tf.range(classes, dtype=tf.int32), [num])  # [N*K]
    # Every box is enough to run the whole union when the per-class cap can bind.
    size = max_total if max_per_class >= max_total else num * classes
    rows = tf.range(size)
    out_boxes, out_scores, out_classes, counts = [], [], [], []
    for b in range(batch):
        image_boxes = flat_boxes[b]
        extent = tf.reduce_max(image_boxes) - tf.reduce_min(image_boxes) + 1.0
        shifted = image_boxes + (tf.cast(class_of_row, tf.float32) * extent)[:, None]
        selected, num_valid = _nms_v5(shifted, flat_scores[b], size, iou_threshold,
                                      score_threshold)
        valid = rows < num_valid  # [size]
        cls = tf.gather(class_of_row, selected)
        # Rank of each survivor within its class (0 = its class's best), in greedy order.
        one_hot = tf.one_hot(cls, classes, dtype=tf.int32) * tf.cast(valid, tf.int32)[:, None]
        rank = tf.reduce_sum((tf.cumsum(one_hot, axis=0) - 1) * one_hot, axis=1)
        kept = tf.logical_and(valid, rank < max_per_class)
        # First max_total kept rows in greedy (score) order: top_k of a decreasing key.
        key = tf.where(kept, size - rows, 0)
        key_top, order = tf.math.top_k(key, k=min(max_total, size))
        row = tf.gather(selected, order)
        ok = key_top > 0
        pad = max_total - min(max_total, size)
        out_boxes.append(tf.pad(tf.where(ok[:, None], tf.gather(image_boxes, row), 0.0),
                                [[0, pad], [0, 0]]))
        out_scores.append(tf.pad(tf.where(ok, tf.gather(flat_scores[b], row), 0.0), [[0, pad]]))
        out_classes.append(tf.pad(tf.where(ok, tf.gather(class_of_row, row) + 1, 0), [[0, pad]]))
        counts.append(tf.reduce_sum(tf.cast(ok, tf.int32)))
    return (tf.stack(out_boxes), tf.stack(out_scores), tf.stack(out_classes), tf.stack(counts))
