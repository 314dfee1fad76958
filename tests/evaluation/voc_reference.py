"""Scalar, loop-by-loop NumPy reference of the VOC devkit's detection AP (VOCevaldet + VOCap).

Written from the devkit documentation's definition with plain Python loops, boxes as the
devkit holds them, ``[x1, y1, x2, y2]`` inclusive integer pixels (width ``x2 - x1 + 1``).
"""

from __future__ import annotations


def reference_ap(gt: dict, dets: list, use_07_metric: bool) -> float | None:
    """AP of one class.

    Args:
        gt: ``{image_id: [(x1, y1, x2, y2, difficult), ...]}`` for this class (every image).
        dets: ``[(image_id, score, x1, y1, x2, y2), ...]`` in insertion order.
        use_07_metric: 11-point (True) or area (False).

    Returns:
        AP, or None when there is no non-difficult ground truth.
    """
    npos = sum(1 for boxes in gt.values() for b in boxes if not b[4])
    if npos == 0:
        return None
    detected = {i: [False] * len(boxes) for i, boxes in gt.items()}
    order = sorted(range(len(dets)), key=lambda d: -dets[d][1])  # Python's sort is stable
    tp, fp = [], []
    for d in order:
        image_id, _, bx1, by1, bx2, by2 = dets[d]
        ovmax, jmax = float("-inf"), -1
        for j, (gx1, gy1, gx2, gy2, _) in enumerate(gt[image_id]):
            iw = min(bx2, gx2) - max(bx1, gx1) + 1
            ih = min(by2, gy2) - max(by1, gy1) + 1
            if iw > 0 and ih > 0:
                ua = (bx2 - bx1 + 1) * (by2 - by1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
                ov = iw * ih / (ua - iw * ih)
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= 0.5:
            if gt[image_id][jmax][4]:
                continue  # difficult: neither
            if detected[image_id][jmax]:
                tp.append(0)
                fp.append(1)
            else:
                detected[image_id][jmax] = True
                tp.append(1)
                fp.append(0)
        else:
            tp.append(0)
            fp.append(1)
    rec, prec, ctp, cfp = [], [], 0, 0
    for t, f in zip(tp, fp, strict=True):
        ctp += t
        cfp += f
        rec.append(ctp / npos)
        prec.append(ctp / (ctp + cfp))
    if use_07_metric:
        ap = 0.0
        for k in range(11):
            t = k / 10
            ps = [p for r, p in zip(rec, prec, strict=True) if r >= t]
            ap += (max(ps) if ps else 0.0) / 11
        return ap
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum(
        (mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]
    )
