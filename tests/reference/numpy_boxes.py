"""Pure NumPy references for box math, NMS and matching, written from the papers' definitions.

Loops are fine here: clarity over speed. Boxes are ``[y1, x1, y2, x2]`` pixels, no ``+1``.
Used by tests/ops to check the TensorFlow ops.
"""

from __future__ import annotations

import math

import numpy as np

CLIP = math.log(1000.0 / 16.0)


def box_area(box: np.ndarray) -> float:
    """Area of one box; zero for degenerate boxes."""
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def intersection_area(a: np.ndarray, b: np.ndarray) -> float:
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    return max(h, 0.0) * max(w, 0.0)


def iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """``[N, 4] x [M, 4] -> [N, M]``; 0 when the union is empty."""
    out = np.zeros((len(boxes1), len(boxes2)), np.float64)
    for i, a in enumerate(boxes1):
        for j, b in enumerate(boxes2):
            inter = intersection_area(a, b)
            union = box_area(a) + box_area(b) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def ioa(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Intersection over the area of the first box; 0 when that area is 0."""
    out = np.zeros((len(boxes1), len(boxes2)), np.float64)
    for i, a in enumerate(boxes1):
        for j, b in enumerate(boxes2):
            area_a = box_area(a)
            out[i, j] = intersection_area(a, b) / area_a if area_a > 0 else 0.0
    return out


def encode(box: np.ndarray, anchor: np.ndarray, weights=(1.0, 1.0, 1.0, 1.0)) -> np.ndarray:
    """R-CNN (Girshick et al. 2014, App. C) targets for one box/anchor pair."""
    wy, wx, wh, ww = weights
    h, w = box[2] - box[0], box[3] - box[1]
    ha, wa = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cy, cx = box[0] + h / 2, box[1] + w / 2
    cya, cxa = anchor[0] + ha / 2, anchor[1] + wa / 2
    return np.array(
        [wy * (cy - cya) / ha, wx * (cx - cxa) / wa, wh * math.log(h / ha), ww * math.log(w / wa)]
    )


def decode(delta: np.ndarray, anchor: np.ndarray, weights=(1.0, 1.0, 1.0, 1.0)) -> np.ndarray:
    """Inverse of :func:`encode` with dh, dw clamped at log(1000/16)."""
    wy, wx, wh, ww = weights
    ha, wa = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cya, cxa = anchor[0] + ha / 2, anchor[1] + wa / 2
    cy = delta[0] / wy * ha + cya
    cx = delta[1] / wx * wa + cxa
    h = math.exp(min(delta[2] / wh, CLIP)) * ha
    w = math.exp(min(delta[3] / ww, CLIP)) * wa
    return np.array([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])


def greedy_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_output: int,
    score_threshold: float = -np.inf,
) -> list[int]:
    """Greedy NMS: visit boxes by decreasing score (stable: ties in index order), keep a box
    unless its IoU with a kept box exceeds ``iou_threshold``. Returns kept indices in order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if len(kept) == max_output:
            break
        if not scores[i] > score_threshold or scores[i] == -np.inf:
            continue
        if all(iou(boxes[i : i + 1], boxes[j : j + 1])[0, 0] <= iou_threshold for j in kept):
            kept.append(i)
    return kept


def match(
    similarity: np.ndarray,
    valid_gt: np.ndarray,
    thresholds: list[float],
    labels: list[int],
    allow_low_quality_matches: bool = False,
    ignore_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image matcher on ``similarity [N, M]``, one row at a time.

    Row ``i`` takes the valid GT with the highest similarity (first on ties); its label is
    ``labels[j]`` for the interval ``[t_{j-1}, t_j)`` holding that similarity (0 when no GT
    is valid). Low-quality matches (Faster R-CNN Sec. 3.1.2, case (i)): for each valid GT with
    best similarity > 0, every row reaching that best value becomes positive and is matched to
    the GT (the GT with the highest similarity among those, first on ties). Ignore mask turns
    label 0 into -1.
    """
    n, m = similarity.shape
    matched = np.zeros(n, np.int64)
    max_sim = np.zeros(n, np.float64)
    out_labels = np.zeros(n, np.int64)
    valid_cols = [j for j in range(m) if valid_gt[j]]
    for i in range(n):
        if valid_cols:
            best = valid_cols[0]
            for j in valid_cols:
                if similarity[i, j] > similarity[i, best]:
                    best = j
            matched[i] = best
            max_sim[i] = similarity[i, best]
        interval = sum(1 for t in thresholds if max_sim[i] >= t)
        out_labels[i] = labels[interval]
    if allow_low_quality_matches:
        forced: dict[int, list[int]] = {}
        for j in valid_cols:
            col_best = max(similarity[:, j]) if n else 0.0
            if col_best > 0:
                for i in range(n):
                    if similarity[i, j] == col_best:
                        forced.setdefault(i, []).append(j)
        for i, cols in forced.items():
            best = cols[0]
            for j in cols:
                if similarity[i, j] > similarity[i, best]:
                    best = j
            matched[i] = best
            out_labels[i] = 1
    if ignore_mask is not None:
        out_labels[(out_labels == 0) & ignore_mask] = -1
    return matched, out_labels, max_sim


def base_anchors(sizes: list[float], ratios: list[float]) -> np.ndarray:
    """Anchors of area size**2 and h/w = ratio centred at 0, size-major."""
    rows = []
    for s in sizes:
        for r in ratios:
            h = s * math.sqrt(r)
            w = s / math.sqrt(r)
            rows.append([-h / 2, -w / 2, h / 2, w / 2])
    return np.array(rows)


def grid_anchors(base: np.ndarray, height: int, width: int, stride: float, offset: float):
    """Row ``(y * W + x) * A + a`` = base[a] shifted to the centre of cell (y, x)."""
    rows = []
    for y in range(height):
        for x in range(width):
            cy, cx = (y + offset) * stride, (x + offset) * stride
            for a in base:
                rows.append([a[0] + cy, a[1] + cx, a[2] + cy, a[3] + cx])
    return np.array(rows).reshape(-1, 4)
