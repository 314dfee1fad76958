"""PASCAL VOC detection mAP, from the VOC devkit definition (no pycocotools).

Conventions (docs/design.md):
    Boxes are ``[y1, x1, y2, x2]`` in pixels of the ORIGINAL image, classes contiguous ``1..K``
    (0 is background). Detections use the same batched dict as ``COCOEvaluator.update``.

Shape shorthand:
    B batch, D detections per image (padded), M ground-truth boxes of one image.

The definition (VOC devkit ``VOCevaldet.m`` / ``VOCap``, VOC2007 and VOC2010+ docs):

1. Per class, all detections of the split are sorted by decreasing score (stable: ties keep
   the order in which detections were added, as MATLAB's ``sort`` does).
2. Each detection takes the ground-truth box of its class in its image with the largest IoU
   (all of them, including already matched and ``difficult`` ones; the first on ties).
   If that IoU >= ``iou_threshold`` (0.5): a ``difficult`` box makes the detection neither TP
   nor FP (it is dropped); an unmatched box makes it a TP and marks the box matched; an already
   matched box makes it a FP (duplicate). Below the threshold it is a FP. Note that a duplicate
   is FP even when a second, unmatched box also overlaps >= 0.5: the devkit only looks at the
   best-overlapping box.
3. ``npos`` = number of non-difficult GT boxes; recall = cumTP / npos, precision =
   cumTP / (cumTP + cumFP).
4. AP ``"voc07"``: mean over t in {0, 0.1, ..., 1} of max precision at recall >= t (0 if none).
   AP ``"area"`` (VOC2010+): area under the precision envelope (precision made monotonically
   decreasing from the right) with recall padded by 0 and 1.

IoU and the ``+1`` convention: the devkit works on integer, inclusive pixel indices, so box
width is ``x2 - x1 + 1`` and the intersection is counted only if ``iw > 0`` and ``ih > 0``
with ``iw = min(x2) - max(x1) + 1``. ``use_plus_one=True`` (default) reproduces that exactly
and is right when boxes are the annotation's inclusive corner values (``xmin..xmax`` as in the
xml, 0- or 1-based alike). If the data reader turned VOC corners into continuous coordinates
(``x1 = xmin - 1, x2 = xmax``, width ``xmax - xmin + 1``, this project's convention for pixel
boxes), pass ``use_plus_one=False``: the plain IoU of the shifted boxes equals the devkit's.

Only the images passed to ``update()`` are evaluated (an image with zero detections still
counts, since its ``image_id`` was seen); ground truth registered for other images is left out
of ``npos``. If ``update()`` was never called, every registered image counts. This keeps the
numbers right when only part of a split is evaluated and equals the devkit on a whole split.

A class with no non-difficult ground truth (``npos = 0``): the devkit divides by zero there
(it never happens on VOC, where every class occurs); we report its AP as ``-1`` (undefined,
like pycocotools) and leave it out of the mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# VOC2007 11-point recall thresholds 0, 0.1, ..., 1. Rounded so that 0.3 is the double closest
# to 3/10 and a recall of exactly 3/10 counts for it (0.1 * 3 is 0.30000000000000004).
_VOC07_RECALL_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 11), 10)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from a recall/precision curve, the devkit's two definitions.

    Args:
        recall: ``[N]`` float, cumulative recall after each detection (by decreasing score).
        precision: ``[N]`` float, cumulative precision after each detection.
        use_07_metric: ``True`` for the VOC2007 11-point interpolated AP, ``False`` for the
            VOC2010+ area under the monotone precision envelope.

    Returns:
        AP in [0, 1]; 0 for an empty curve.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in _VOC07_RECALL_THRESHOLDS:
            above = precision[recall >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    # Envelope: precision at recall r becomes the max precision at any recall >= r.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changed = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changed] - mrec[changed - 1]) * mpre[changed]))


def _pairwise_iou(box: np.ndarray, gt: np.ndarray, use_plus_one: bool) -> np.ndarray:
    """IoU of one box ``[4]`` with ``gt [M, 4]`` (yxyx) -> ``[M]``, devkit-style."""
    one = 1.0 if use_plus_one else 0.0
    ih = np.minimum(box[2], gt[:, 2]) - np.maximum(box[0], gt[:, 0]) + one
    iw = np.minimum(box[3], gt[:, 3]) - np.maximum(box[1], gt[:, 1]) + one
    overlap = (iw > 0) & (ih > 0)
    inter = np.where(overlap, iw * ih, 0.0)
    area_box = (box[2] - box[0] + one) * (box[3] - box[1] + one)
    area_gt = (gt[:, 2] - gt[:, 0] + one) * (gt[:, 3] - gt[:, 1] + one)
    union = area_box + area_gt - inter
    return np.where(overlap & (union > 0), inter / np.where(union > 0, union, 1.0), 0.0)


class VOCEvaluator:
    """Accumulates ground truth and detections and computes VOC per-class AP and mAP.

    Args:
        class_names: Names of the K object classes: a sequence where ``class_names[i]`` is
            class ``i + 1``, or a dict ``{class_id: name}`` over ``1..K``.
        use_07_metric: Which AP ``"voc/mAP"`` and ``"voc/AP/<name>"`` report: ``True`` the
            VOC2007 11-point metric, ``False`` the VOC2010+ area. Both means are always
            reported as ``"voc/mAP_07"`` and ``"voc/mAP_area"``.
        iou_threshold: Minimum IoU for a true positive (devkit ``minoverlap``, 0.5).
        use_plus_one: Devkit ``+1`` pixel convention in IoU (see the module docstring).
    """

    def __init__(
        self,
        class_names: Sequence[str] | Mapping[int, str],
        use_07_metric: bool = True,
        iou_threshold: float = 0.5,
        use_plus_one: bool = True,
    ) -> None:
        if isinstance(class_names, Mapping):
            names = {int(k): str(v) for k, v in class_names.items()}
        else:
            names = {i + 1: str(n) for i, n in enumerate(class_names)}
        if not names or min(names) < 1:
            raise ValueError(
                "class_names must name the object classes 1..K (no background entry): a list "
                f"[name_of_1, name_of_2, ...] or a dict {{1: name, ...}}; got {class_names!r}."
            )
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1]; got {iou_threshold}.")
        self.class_names = class_names
        self.use_07_metric = use_07_metric
        self.iou_threshold = iou_threshold
        self.use_plus_one = use_plus_one
        self._names = names
        self.reset()

    def reset(self) -> None:
        """Forget all ground truth and detections."""
        self._gt: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._det_image_ids: list[np.ndarray] = []
        self._det_boxes: list[np.ndarray] = []
        self._det_scores: list[np.ndarray] = []
        self._det_classes: list[np.ndarray] = []
        self._seen_image_ids: set[int] = set()

    def add_ground_truth(
        self,
        image_id: int,
        boxes: np.ndarray,
        classes: np.ndarray,
        difficult: np.ndarray | None = None,
    ) -> None:
        """Registers the ground truth of one image (call it for every evaluated image).

        Args:
            image_id: The image's id, as in the detections' ``image_id``.
            boxes: ``[M, 4]`` float, ``[y1, x1, y2, x2]`` original-image pixels.
            classes: ``[M]`` int, ``1..K``; rows with class < 1 are padding and dropped.
            difficult: ``[M]`` bool, VOC ``difficult`` flags (default all False).
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        classes = np.asarray(classes).astype(np.int64).reshape(-1)
        if difficult is None:
            difficult = np.zeros(classes.shape, bool)
        difficult = np.asarray(difficult).astype(bool).reshape(-1)
        if not boxes.shape[0] == classes.shape[0] == difficult.shape[0]:
            raise ValueError(
                f"boxes [M, 4], classes [M] and difficult [M] disagree on M: {boxes.shape}, "
                f"{classes.shape}, {difficult.shape}."
            )
        keep = classes >= 1
        unknown = sorted(set(classes[keep].tolist()) - set(self._names))
        if unknown:
            raise ValueError(
                f"classes {unknown} are not in class_names (ids {sorted(self._names)})."
            )
        self._gt[int(image_id)] = (boxes[keep], classes[keep], difficult[keep])

    def update(self, detections: Mapping[str, Any]) -> None:
        """Adds one batch of detections (the dict ``COCOEvaluator.update`` takes).

        Args:
            detections: ``image_id [B]``, ``detection_boxes [B, D, 4]`` (yxyx original
                pixels), ``detection_scores [B, D]``, ``detection_classes [B, D]`` (``1..K``)
                and ``num_detections [B]`` (defaults to D); other keys are ignored.
        """
        for key in ("image_id", "detection_boxes", "detection_scores", "detection_classes"):
            if key not in detections:
                raise ValueError(f"detections is missing '{key}'.")
        image_ids = np.asarray(detections["image_id"]).astype(np.int64).reshape(-1)
        boxes = np.asarray(detections["detection_boxes"], np.float64)
        scores = np.asarray(detections["detection_scores"], np.float64)
        classes = np.asarray(detections["detection_classes"]).astype(np.int64)
        B = image_ids.shape[0]
        if boxes.ndim != 3 or boxes.shape[0] != B or boxes.shape[2] != 4:
            raise ValueError(f"detection_boxes must be [B={B}, D, 4]; got {boxes.shape}.")
        D = boxes.shape[1]
        if scores.shape != (B, D) or classes.shape != (B, D):
            raise ValueError(
                f"detection_scores and detection_classes must be [B, D] = {(B, D)}; got "
                f"{scores.shape} and {classes.shape}."
            )
        num = detections.get("num_detections")
        num = np.full([B], D, np.int64) if num is None else np.asarray(num).reshape(-1)
        if num.shape[0] != B or np.any(num < 0) or np.any(num > D):
            raise ValueError(f"num_detections must be [B] with values in [0, {D}]; got {num}.")
        self._seen_image_ids.update(int(i) for i in image_ids)
        valid = np.arange(D)[None, :] < num[:, None]  # [B, D]
        self._det_image_ids.append(np.broadcast_to(image_ids[:, None], (B, D))[valid])
        self._det_boxes.append(boxes[valid])
        self._det_scores.append(scores[valid])
        self._det_classes.append(classes[valid])

    def _class_curve(
        self, class_id: int, image_ids: np.ndarray, boxes: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Recall/precision after each (non-ignored) detection of one class, and npos."""
        gt = {}
        npos = 0
        # Only images passed to update() count (all registered ones if update was never called).
        evaluated = self._seen_image_ids or set(self._gt)
        for image_id, (gt_boxes, gt_classes, gt_difficult) in self._gt.items():
            if image_id not in evaluated:
                continue
            of_class = gt_classes == class_id
            gt[image_id] = (
                gt_boxes[of_class],
                gt_difficult[of_class],
                np.zeros(int(of_class.sum()), bool),  # matched flags
            )
            npos += int(np.sum(~gt_difficult[of_class]))
        order = np.argsort(-scores, kind="stable")
        tp = np.zeros(order.shape[0])
        fp = np.zeros(order.shape[0])
        for rank, d in enumerate(order):
            gt_boxes, gt_difficult, matched = gt[int(image_ids[d])]
            if gt_boxes.shape[0] == 0:
                fp[rank] = 1
                continue
            overlaps = _pairwise_iou(boxes[d], gt_boxes, self.use_plus_one)
            j = int(np.argmax(overlaps))  # first index on ties, like the devkit's strict '>'
            if overlaps[j] >= self.iou_threshold:
                if gt_difficult[j]:
                    continue  # neither TP nor FP
                if matched[j]:
                    fp[rank] = 1  # duplicate detection
                else:
                    tp[rank] = 1
                    matched[j] = True
            else:
                fp[rank] = 1
        counted = (tp + fp) > 0  # detections on difficult boxes leave the curve
        tp, fp = np.cumsum(tp[counted]), np.cumsum(fp[counted])
        recall = tp / max(npos, 1)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return recall, precision, npos

    def evaluate(self) -> dict[str, float]:
        """Computes per-class AP and mAP.

        Returns:
            ``"voc/mAP"`` (the metric chosen by ``use_07_metric``), ``"voc/mAP_07"``,
            ``"voc/mAP_area"`` and ``"voc/AP/<name>"`` (chosen metric, ``-1`` for a class
            with no non-difficult ground truth, which the means leave out).

        Raises:
            ValueError: if detections refer to images with no registered ground truth.
        """
        if self._det_image_ids:
            image_ids = np.concatenate(self._det_image_ids)
            boxes = np.concatenate(self._det_boxes).reshape(-1, 4)
            scores = np.concatenate(self._det_scores)
            classes = np.concatenate(self._det_classes)
        else:
            image_ids = classes = np.zeros([0], np.int64)
            scores = np.zeros([0])
            boxes = np.zeros([0, 4])
        missing = sorted(set(image_ids.tolist()) - set(self._gt))
        if missing:
            raise ValueError(
                f"Detections for image ids {missing[:5]} have no ground truth; call "
                "add_ground_truth for every evaluated image (with empty arrays if it has none)."
            )
        aps_07, aps_area = [], []
        metrics: dict[str, float] = {}
        for class_id, name in sorted(self._names.items()):
            sel = classes == class_id
            recall, precision, npos = self._class_curve(
                class_id, image_ids[sel], boxes[sel], scores[sel]
            )
            if npos == 0:
                metrics[f"voc/AP/{name}"] = -1.0
                continue
            ap_07 = voc_ap(recall, precision, use_07_metric=True)
            ap_area = voc_ap(recall, precision, use_07_metric=False)
            aps_07.append(ap_07)
            aps_area.append(ap_area)
            metrics[f"voc/AP/{name}"] = ap_07 if self.use_07_metric else ap_area
        metrics["voc/mAP_07"] = float(np.mean(aps_07)) if aps_07 else -1.0
        metrics["voc/mAP_area"] = float(np.mean(aps_area)) if aps_area else -1.0
        metrics["voc/mAP"] = metrics["voc/mAP_07" if self.use_07_metric else "voc/mAP_area"]
        return metrics
