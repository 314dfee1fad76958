"""RPN proposal recall and average recall (AR@N), Hosang et al. 2016.

Conventions (docs/design.md):
    Proposals and ground truth are ``[y1, x1, y2, x2]`` in one coordinate frame (input-image
    or original-image pixels, the caller's choice, as long as both agree); IoU is
    ``tf_rcnn.ops.boxes``' definition (no ``+1``), computed here in NumPy.

Shape shorthand:
    B batch, P proposals per image (padded), M ground-truth boxes per image (padded).

Definition ("What makes for effective detection proposals?", Hosang, Benenson, Dollar,
Schiele, TPAMI 2016): for each image keep its top-N proposals (by score if scores are given,
otherwise in the order given); each ground-truth box gets a "best IoU"; recall at threshold t
is the fraction of all ground-truth boxes of the split whose best IoU >= t; AR@N is the mean
of the recalls over t in 0.5:0.05:0.95.

How a ground-truth box's best IoU is found, ``matching``:
    ``"max"`` (default): the maximum IoU over the top-N proposals; one proposal may cover
        several boxes, as in Hosang et al.'s recall curves.
    ``"one_to_one"``: greedy one-to-one assignment, as in Detectron's proposal recall: repeat
        min(#GT, N) times: take the (GT, proposal) pair with the highest IoU among the
        unassigned ones, give that IoU to the GT, and remove both. Never higher than "max".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MATCHINGS = ("max", "one_to_one")
# 0.5, 0.55, ..., 0.95 (COCO's and Hosang et al.'s AR thresholds).
DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.5, 0.951, 0.05), 10))


def _iou_matrix(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """``[N, 4] x [M, 4] -> [N, M]`` IoU without +1; empty unions give 0."""
    y1 = np.maximum(boxes1[:, None, 0], boxes2[None, :, 0])
    x1 = np.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
    y2 = np.minimum(boxes1[:, None, 2], boxes2[None, :, 2])
    x2 = np.minimum(boxes1[:, None, 3], boxes2[None, :, 3])
    inter = np.maximum(y2 - y1, 0.0) * np.maximum(x2 - x1, 0.0)
    area1 = np.maximum(boxes1[:, 2] - boxes1[:, 0], 0) * np.maximum(boxes1[:, 3] - boxes1[:, 1], 0)
    area2 = np.maximum(boxes2[:, 2] - boxes2[:, 0], 0) * np.maximum(boxes2[:, 3] - boxes2[:, 1], 0)
    union = area1[:, None] + area2[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def best_gt_overlaps(
    proposals: np.ndarray, gt_boxes: np.ndarray, matching: str = "max"
) -> np.ndarray:
    """Best IoU each ground-truth box gets from ``proposals`` (one image).

    Args:
        proposals: ``[P, 4]`` float yxyx, already cut to the top-N.
        gt_boxes: ``[M, 4]`` float yxyx, valid boxes only.
        matching: ``"max"`` or ``"one_to_one"`` (see the module docstring).

    Returns:
        ``[M]`` float64 IoUs (0 for boxes no proposal reaches).
    """
    if matching not in _MATCHINGS:
        raise ValueError(f"matching must be one of {_MATCHINGS}; got {matching!r}.")
    num_gt = gt_boxes.shape[0]
    if num_gt == 0 or proposals.shape[0] == 0:
        return np.zeros([num_gt])
    overlaps = _iou_matrix(gt_boxes, proposals)  # [M, P]
    if matching == "max":
        return overlaps.max(axis=1)
    best = np.zeros([num_gt])
    overlaps = overlaps.copy()
    for _ in range(min(num_gt, proposals.shape[0])):
        g, p = np.unravel_index(np.argmax(overlaps), overlaps.shape)
        if overlaps[g, p] < 0:
            break
        best[g] = overlaps[g, p]
        overlaps[g, :] = -1.0  # this GT and this proposal are taken
        overlaps[:, p] = -1.0
    return best


class ProposalRecallEvaluator:
    """Accumulates proposals and ground truth; reports recall at IoU thresholds and AR@N.

    Args:
        limits: The proposal budgets N (top-N per image), e.g. ``(100, 1000)``.
        iou_thresholds: IoU thresholds averaged into AR (default 0.5:0.05:0.95).
        matching: ``"max"`` or ``"one_to_one"`` (see the module docstring).
        report_thresholds: Thresholds also reported alone as ``rpn/recall@t/N``.
    """

    def __init__(
        self,
        limits: Sequence[int] = (100, 1000),
        iou_thresholds: Sequence[float] | np.ndarray = DEFAULT_IOU_THRESHOLDS,
        matching: str = "max",
        report_thresholds: Sequence[float] = (0.5, 0.7),
    ) -> None:
        if matching not in _MATCHINGS:
            raise ValueError(f"matching must be one of {_MATCHINGS}; got {matching!r}.")
        if not limits or any(int(n) < 1 for n in limits):
            raise ValueError(f"limits must be positive proposal counts; got {limits}.")
        self.limits = tuple(int(n) for n in limits)
        # Rounded so arange's float noise (0.7000000000000001) does not reject an IoU of 0.7.
        self.iou_thresholds = np.round(np.asarray(iou_thresholds, np.float64), 10)
        self.matching = matching
        self.report_thresholds = tuple(float(t) for t in report_thresholds)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        # Per limit: best IoU of every valid GT box seen so far.
        self._best = {n: [] for n in self.limits}

    def update(
        self,
        proposals: np.ndarray,
        gt_boxes: np.ndarray,
        proposal_scores: np.ndarray | None = None,
        num_proposals: np.ndarray | None = None,
        gt_classes: np.ndarray | None = None,
    ) -> None:
        """Adds one batch.

        Args:
            proposals: ``[B, P, 4]`` float yxyx, padded past ``num_proposals``.
            gt_boxes: ``[B, M, 4]`` float yxyx, padded with -1 (zero-area rows are padding).
            proposal_scores: ``[B, P]`` float; if given proposals are ranked by it, otherwise
                they are taken in the given order (the RPN already returns them sorted).
            num_proposals: ``[B]`` int, valid proposals per image (default P).
            gt_classes: ``[B, M]`` int, optional; when given a GT row is valid iff class >= 1.
        """
        proposals = np.asarray(proposals, np.float64)
        gt_boxes = np.asarray(gt_boxes, np.float64)
        if proposals.ndim != 3 or proposals.shape[-1] != 4:
            raise ValueError(f"proposals must be [B, P, 4]; got {proposals.shape}.")
        B, P = proposals.shape[:2]
        if gt_boxes.ndim != 3 or gt_boxes.shape[0] != B or gt_boxes.shape[-1] != 4:
            raise ValueError(f"gt_boxes must be [B={B}, M, 4]; got {gt_boxes.shape}.")
        num = np.full([B], P) if num_proposals is None else np.asarray(num_proposals).reshape(-1)
        if num.shape[0] != B or np.any(num < 0) or np.any(num > P):
            raise ValueError(f"num_proposals must be [B] with values in [0, {P}]; got {num}.")
        if proposal_scores is not None:
            proposal_scores = np.asarray(proposal_scores, np.float64)
            if proposal_scores.shape != (B, P):
                raise ValueError(
                    f"proposal_scores must be [B, P] = {(B, P)}; got {proposal_scores.shape}."
                )
        if gt_classes is not None:
            valid_gt = np.asarray(gt_classes).reshape(B, -1) >= 1
        else:
            valid_gt = (gt_boxes[..., 2] > gt_boxes[..., 0]) & (gt_boxes[..., 3] > gt_boxes[..., 1])
        for b in range(B):
            boxes = proposals[b, : int(num[b])]
            if proposal_scores is not None:
                boxes = boxes[np.argsort(-proposal_scores[b, : int(num[b])], kind="stable")]
            gt = gt_boxes[b][valid_gt[b]]
            for n in self.limits:
                self._best[n].append(best_gt_overlaps(boxes[:n], gt, self.matching))

    def evaluate(self) -> dict[str, float]:
        """Returns ``rpn/AR@N`` and ``rpn/recall@t/N`` for every limit N.

        With no ground-truth box seen at all, every value is -1 (undefined).
        """
        metrics: dict[str, float] = {}
        for n in self.limits:
            best = np.concatenate(self._best[n]) if self._best[n] else np.zeros([0])
            if best.size == 0:
                metrics[f"rpn/AR@{n}"] = -1.0
                for t in self.report_thresholds:
                    metrics[f"rpn/recall@{t:g}/{n}"] = -1.0
                continue
            recalls = (best[None, :] >= self.iou_thresholds[:, None]).mean(axis=1)
            metrics[f"rpn/AR@{n}"] = float(recalls.mean())
            for t in self.report_thresholds:
                metrics[f"rpn/recall@{t:g}/{n}"] = float(np.mean(best >= t))
        return metrics
