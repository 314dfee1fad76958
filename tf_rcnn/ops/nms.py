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

Soft-NMS (Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of Code", ICCV
2017, Algorithm 1) is the alternative final per-class NMS (``multiclass_nms(method=...)``,
``model.roi_head.nms_method``). Greedy as hard NMS, but a box overlapping the selected one M is
not removed: its score is multiplied by ``f(iou(M, b))``

    linear:    ``1 - iou`` if ``iou >= Nt`` else 1      (Nt = the NMS IoU threshold)
    gaussian:  ``exp(-iou**2 / sigma)`` for every box   (sigma 0.5 in the paper)

and the next selection is the best DECAYED score. Boxes whose decayed score falls to
``min_score`` (0.001) or below are dropped. :func:`soft_nms` runs it in the graph with one
``tf.while_loop`` over selections, vectorised over every (image, class) row and box per
iteration (no ``py_function``; exportable); ``tf.image.non_max_suppression_with_scores`` does
Gaussian only and one image and class at a time. The RPN keeps hard NMS.

Inside ``tf_rcnn.backend.builtin_ops_only()`` (a LiteRT export) hard NMS in both functions runs
its ``NON_MAX_SUPPRESSION_V5`` twin in :mod:`tf_rcnn.ops.builtin_nms` instead (Soft-NMS keeps
its own graph; its LiteRT conversion is not checked yet).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tf_rcnn.backend import builtin_ops_only_enabled
from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops.builtin_nms import nms_v5_batched, nms_v5_multiclass

# Final per-class NMS methods: hard (greedy suppression) or Soft-NMS's linear / Gaussian decay.
NMS_METHODS = ("hard", "linear", "gaussian")


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


def check_soft_nms_args(method: str, sigma: float, min_score: float) -> None:
    """Raises ValueError naming the config flag when a Soft-NMS setting cannot work (the
    sigma and the score floor only with a Soft-NMS method: hard NMS does not read them)."""
    if method not in NMS_METHODS:
        raise ValueError(f"Unknown NMS method {method!r} (--config.model.roi_head.nms_method); "
                         f"choose one of {', '.join(NMS_METHODS)}.")
    if method == "hard":
        return
    if not 0.0 < float(sigma) < float("inf"):  # also rejects NaN
        raise ValueError("The Gaussian Soft-NMS sigma (--config.model.roi_head.soft_nms_sigma) "
                         f"must be a positive number (0.5 in the paper), got {sigma!r}.")
    if not 0.0 <= float(min_score) < 1.0:
        raise ValueError("The Soft-NMS score floor (--config.model.roi_head.soft_nms_min_score) "
                         f"must be in [0, 1) (0.001 is usual), got {min_score!r}.")


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
    method: str = "hard",
    soft_nms_sigma: float = 0.5,
    soft_nms_min_score: float = 0.001,
) -> DetectionResult:
    """Per-class NMS and top-``max_total`` selection over all classes (final detections).

    ``method="hard"`` is greedy suppression (``tf.image.combined_non_max_suppression``: a box
    with IoU above ``iou_threshold`` with a kept box of its class is dropped); ``"linear"`` and
    ``"gaussian"`` are Soft-NMS per class (:func:`soft_nms`), then the same top-``max_total``
    over classes by (decayed) score, equal scores in class order.

    Args:
        boxes: ``[B, N, K, 4]`` class-specific or ``[B, N, 1, 4]`` shared float32
            ``[y1, x1, y2, x2]`` pixel boxes (decoded, usually clipped to the image).
        scores: ``[B, N, K]`` float32 foreground scores (background column already removed),
            column ``j`` is class ``j + 1``.
        max_per_class: boxes kept per class after NMS.
        max_total: D, detections kept per image (rows of every output).
        iou_threshold: per-class suppression threshold in ``[0, 1]``.
        score_threshold: scores ``<= score_threshold`` are dropped before NMS.
        method: ``"hard"`` | ``"linear"`` | ``"gaussian"`` (:data:`NMS_METHODS`).
        soft_nms_sigma: Gaussian Soft-NMS sigma.
        soft_nms_min_score: Soft-NMS drops boxes whose decayed score is ``<=`` this.

    Returns:
        :class:`DetectionResult` ``boxes [B, D, 4]``, ``scores [B, D]``, ``classes [B, D]``
        int32 in ``1..K`` (0 on padding) and ``num_valid [B]``; with Soft-NMS the scores are
        the decayed ones.
    """
    max_per_class = int(max_per_class)
    max_total = int(max_total)
    if max_per_class < 1 or max_total < 1:
        raise ValueError(
            f"max_per_class and max_total must be positive ints, got {max_per_class} and "
            f"{max_total}."
        )
    _check_iou_threshold(iou_threshold)
    check_soft_nms_args(method, soft_nms_sigma, soft_nms_min_score)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if boxes.shape.rank != 4 or scores.shape.rank != 3:
        raise ValueError(
            "boxes must be [B, N, K or 1, 4] and scores [B, N, K] (background removed); got "
            f"{boxes.shape} and {scores.shape}."
        )
    if method != "hard":
        return _multiclass_soft_nms(boxes, scores, max_per_class, max_total, method,
                                    float(iou_threshold), float(soft_nms_sigma),
                                    float(score_threshold), float(soft_nms_min_score))
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


def _soft_nms_rows(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_output_size: int,
    method: str,
    iou_threshold: float,
    sigma: float,
    min_score: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Soft-NMS (Algorithm 1) on every row at once: ``boxes [R, N, 4]``, ``scores [R, N]``
    (negative = not a candidate) -> ``indices [R, T]`` (-1 padded), ``scores [R, T]`` (decayed,
    0 padded), ``num_valid [R]``; T = ``max_output_size``, selections best first.

    One ``tf.while_loop`` iteration selects one box per row: the argmax of the current scores
    (equal scores: the lowest index), while any row still has a score above ``min_score``.
    """
    num_rows = tf.shape(scores)[0]
    positions = tf.range(max_output_size)[None, :]  # [1, T]
    box_positions = tf.range(tf.shape(scores)[1])[None, :]  # [1, N]
    # Not a candidate: -1, and removed boxes are set to -1 as well; a decay factor in [0, 1]
    # keeps them <= 0 <= min_score, so they are never selected (no -inf * 0 = NaN). For the
    # same reason a row with nothing left above min_score may be decayed again harmlessly.
    current = tf.where(scores > min_score, scores, -1.0)
    # Loop invariants: coordinates and areas [R, N] (the IoU of box_ops.iou, one row at a time).
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    areas = box_ops.area(boxes)

    def cond(i, current, out_indices, out_scores):
        del out_indices, out_scores
        return tf.logical_and(i < max_output_size, tf.reduce_any(current > min_score))

    def body(i, current, out_indices, out_scores):
        best = tf.argmax(current, axis=1, output_type=tf.int32)  # [R]
        best_score = tf.reduce_max(current, axis=1)  # [R]
        active = best_score > min_score  # [R]
        cy1, cx1, cy2, cx2 = tf.unstack(tf.gather(boxes, best, batch_dims=1)[:, None, :], 4,
                                        axis=-1)  # [R, 1] each
        inter = (tf.maximum(tf.minimum(y2, cy2) - tf.maximum(y1, cy1), 0.0)
                 * tf.maximum(tf.minimum(x2, cx2) - tf.maximum(x1, cx1), 0.0))  # [R, N]
        chosen_area = tf.gather(areas, best, batch_dims=1)[:, None]  # [R, 1]
        overlap = tf.math.divide_no_nan(inter, chosen_area + areas - inter)  # [R, N]
        if method == "linear":
            decay = tf.where(overlap >= iou_threshold, 1.0 - overlap, 1.0)
        else:  # gaussian
            decay = tf.exp(-tf.square(overlap) / sigma)
        current = tf.where(box_positions == best[:, None], -1.0, current * decay)
        here = tf.logical_and(positions == i, active[:, None])  # [R, T]
        out_indices = tf.where(here, best[:, None], out_indices)
        out_scores = tf.where(here, best_score[:, None], out_scores)
        return i + 1, current, out_indices, out_scores

    _, _, out_indices, out_scores = tf.while_loop(
        cond, body,
        (tf.constant(0), current, tf.fill([num_rows, max_output_size], -1),
         tf.zeros([num_rows, max_output_size], tf.float32)),
    )
    num_valid = tf.reduce_sum(tf.cast(out_indices >= 0, tf.int32), axis=1)
    return out_indices, out_scores, num_valid


def _with_dummy_box(boxes: tf.Tensor) -> tf.Tensor:
    """``[R, N, 4]`` -> ``[R, N + 1, 4]`` with a zero box appended, so that gathering the
    padding rows (index -1 -> 0) works when N is 0."""
    return tf.pad(boxes, [[0, 0], [0, 1], [0, 0]])


def soft_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_output_size: int,
    method: str = "gaussian",
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.0,
    min_score: float = 0.001,
) -> NMSResult:
    """Single-class Soft-NMS (Bodla et al. 2017, Algorithm 1) for each image of a batch.

    Repeatedly selects the box M of highest current score, then multiplies every remaining
    score by ``1 - iou(M, b)`` where ``iou >= iou_threshold`` (linear) or by
    ``exp(-iou(M, b)**2 / sigma)`` (Gaussian). Selected scores are non-increasing.

    Args:
        boxes: ``[B, N, 4]`` float32 ``[y1, x1, y2, x2]``.
        scores: ``[B, N]`` float32 non-negative scores (probabilities).
        max_output_size: K, the most selections per image (rows of every output).
        method: ``"linear"`` or ``"gaussian"``.
        iou_threshold: Nt of the linear decay (the paper's Nt; unused by Gaussian).
        sigma: Gaussian width (0.5 in the paper).
        score_threshold: boxes with an initial score ``<= score_threshold`` never enter.
        min_score: a box whose (decayed) score is ``<= min_score`` is dropped (0.001).

    Returns:
        :class:`NMSResult`: ``indices [B, K]`` into the N boxes (padded -1), their ``boxes``
        (padded 0), decayed ``scores`` (padded 0) and ``num_valid [B]``, best first.
    """
    if method not in ("linear", "gaussian"):
        raise ValueError(f"soft_nms method must be 'linear' or 'gaussian', got {method!r}.")
    check_soft_nms_args(method, sigma, min_score)
    _check_iou_threshold(iou_threshold)
    max_output_size = int(max_output_size)
    if max_output_size < 1:
        raise ValueError(f"max_output_size must be a positive int, got {max_output_size}.")
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if boxes.shape.rank != 3 or scores.shape.rank != 2:
        raise ValueError(
            f"boxes must be [B, N, 4] and scores [B, N]; got {boxes.shape} and {scores.shape}."
        )
    scores = tf.where(scores > score_threshold, scores, -1.0)
    indices, kept_scores, num_valid = _soft_nms_rows(
        boxes, scores, max_output_size, method, float(iou_threshold), float(sigma),
        float(min_score))
    valid = indices >= 0
    kept_boxes = tf.gather(_with_dummy_box(boxes), tf.maximum(indices, 0), batch_dims=1)
    kept_boxes = tf.where(valid[..., None], kept_boxes, 0.0)
    return NMSResult(indices=indices, boxes=kept_boxes, scores=kept_scores, num_valid=num_valid)


def _multiclass_soft_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_per_class: int,
    max_total: int,
    method: str,
    iou_threshold: float,
    sigma: float,
    score_threshold: float,
    min_score: float,
) -> DetectionResult:
    """:func:`multiclass_nms` with Soft-NMS: every (image, class) is one image of
    :func:`soft_nms`, then the best ``max_total`` over the classes of each image."""
    batch = tf.shape(scores)[0]
    num_boxes = tf.shape(scores)[1]
    num_classes = tf.shape(scores)[2]
    # [B, N, K|1, 4] -> [B, K, N, 4] -> [B*K, N, 4]; scores [B, N, K] -> [B*K, N].
    boxes = tf.broadcast_to(boxes, tf.stack([batch, num_boxes, num_classes, 4]))
    row_boxes = tf.reshape(tf.transpose(boxes, [0, 2, 1, 3]), [-1, num_boxes, 4])
    row_scores = tf.reshape(tf.transpose(scores, [0, 2, 1]), [-1, num_boxes])
    rows = soft_nms(row_boxes, row_scores, max_per_class, method, iou_threshold, sigma,
                    score_threshold, min_score)  # [B*K, T]
    # Per image, class-major: [B, K*T]; padding rows score -1 so they sort last.
    kept = tf.reshape(tf.where(rows.indices >= 0, rows.scores, -1.0), [batch, -1])
    kept_boxes = tf.reshape(rows.boxes, [batch, -1, 4])
    classes = tf.repeat(tf.range(1, num_classes + 1), max_per_class)  # [K*T], 1..K
    classes = tf.broadcast_to(classes[None, :], tf.shape(kept))
    # Pad to at least max_total columns, then the best max_total (top_k: ties in index order,
    # i.e. class order, then selection order).
    pad = tf.maximum(max_total - tf.shape(kept)[1], 0)
    kept = tf.pad(kept, [[0, 0], [0, pad]], constant_values=-1.0)
    kept_boxes = tf.pad(kept_boxes, [[0, 0], [0, pad], [0, 0]])
    classes = tf.pad(classes, [[0, 0], [0, pad]])
    top_scores, order = tf.math.top_k(kept, k=max_total)  # [B, D]
    valid = top_scores > min_score
    top_boxes = tf.gather(kept_boxes, order, batch_dims=1)
    top_classes = tf.gather(classes, order, batch_dims=1)
    return DetectionResult(
        boxes=tf.where(valid[..., None], top_boxes, 0.0),
        scores=tf.where(valid, top_scores, 0.0),
        classes=tf.where(valid, top_classes, 0),
        num_valid=tf.reduce_sum(tf.cast(valid, tf.int32), axis=1),
    )
