"""COCO box and mask AP through pycocotools (or, optionally, faster-coco-eval).

Conventions:
    Detections arrive as NumPy arrays in the model's output layout, with boxes float32
    ``[y1, x1, y2, x2]`` in pixels of the ORIGINAL image (the caller undoes the resize) and
    classes contiguous ``1..K`` (0 is background and never appears in detections). This module
    turns them into the COCO results format: ``bbox = [x, y, w, h]`` (no ``+1``), dataset
    category ids through the label map, masks as compressed RLE with ``counts`` as ``str`` so
    the list is JSON-serialisable. Each result also names its image with the ground truth's
    ``file_name`` (for people reading the file; COCO tools ignore the key, and the metrics here
    are computed without it).

Shape shorthand:
    B batch, D detections per image (padded), H/W original image height/width.

The metric itself is not re-implemented: ``evaluate()`` hands the results to ``COCOeval``
so the numbers are pycocotools' numbers. Two deliberate choices, both documented where made:

* Mask AP is evaluated on results WITHOUT their ``bbox`` field. pycocotools' ``loadRes``
  otherwise sets a result's ``area`` to its box area, so small/medium/large for masks would be
  decided by boxes; without ``bbox`` it uses the mask area, the intended definition.
* Only the images passed to ``update()`` are evaluated (an image with zero detections still
  counts, since its ``image_id`` was seen); if ``update()`` was never called every ground-truth
  image is evaluated. This keeps numbers right when only part of a split is evaluated.

Stats follow pycocotools: ``-1`` means undefined (no ground truth in that area range or
category), ``0`` means ground truth exists and nothing was found.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# The 12 numbers COCOeval.summarize() computes, in its order.
COCO_STAT_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)

_IOU_TYPES = ("bbox", "segm")


def _to_dataset_ids(label_map: Any, contiguous_ids: np.ndarray) -> np.ndarray:
    """Map contiguous class ids ``1..K`` to dataset category ids with ``label_map``."""
    contiguous_ids = np.asarray(contiguous_ids, np.int64)
    if label_map is None:
        return contiguous_ids
    if hasattr(label_map, "to_dataset_id"):
        return np.asarray(label_map.to_dataset_id(contiguous_ids), np.int64)
    if isinstance(label_map, Mapping):
        missing = sorted({int(c) for c in contiguous_ids.ravel()} - {int(k) for k in label_map})
        if missing:
            raise ValueError(
                f"label_map has no dataset id for contiguous class ids {missing}; add them to "
                "the mapping {contiguous_id: dataset_category_id}."
            )
        lookup = {int(k): int(v) for k, v in label_map.items()}
        return np.asarray([lookup[int(c)] for c in contiguous_ids.ravel()], np.int64).reshape(
            contiguous_ids.shape
        )
    raise ValueError(
        "label_map must be None, a dict {contiguous_id: dataset_id} or an object with a "
        f"to_dataset_id(np.ndarray) method; got {type(label_map).__name__}."
    )


def _encode_mask(mask: np.ndarray) -> dict:
    """Binary ``[H, W]`` mask -> compressed RLE with ``counts`` as ``str`` (JSON-ready)."""

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _suppress_output():
    """pycocotools prints progress to stdout; keep evaluation quiet."""
    return contextlib.redirect_stdout(io.StringIO())


class COCOEvaluator:
    """Accumulates detections and computes the COCO box (and mask) metrics.

    Args:
        annotation_file: Path to a COCO ground-truth json (``images``, ``annotations`` with
            ``bbox``, ``area``, ``iscrowd`` and, for mask AP, ``segmentation``; ``categories``).
        gt_dataset: The same content as an in-memory dict (used instead of the file).
        iou_types: Any of ``"bbox"`` and ``"segm"``.
        label_map: Maps contiguous ids ``1..K`` to dataset category ids: an object with
            ``to_dataset_id(np.ndarray) -> np.ndarray`` (tf_rcnn.data's label map), a dict
            ``{contiguous_id: dataset_id}``, or ``None`` for identity.
        use_fast_eval: Evaluate with faster-coco-eval (an optional dependency, same numbers).
        verbose: Print COCOeval's summary tables.

    Example:
        >>> evaluator = COCOEvaluator(gt_dataset=gt)  # doctest: +SKIP
        >>> evaluator.update(model_outputs_in_original_pixels)  # doctest: +SKIP
        >>> metrics = evaluator.evaluate()  # {"bbox/AP": ..., "bbox/AP/person": ...}
    """

    def __init__(
        self,
        annotation_file: str | None = None,
        gt_dataset: dict | None = None,
        iou_types: Sequence[str] = ("bbox",),
        label_map: Any = None,
        use_fast_eval: bool = False,
        verbose: bool = False,
    ) -> None:
        if (annotation_file is None) == (gt_dataset is None):
            raise ValueError("Pass exactly one of annotation_file (a path) or gt_dataset (a dict).")
        if isinstance(iou_types, str):
            iou_types = (iou_types,)
        bad = [t for t in iou_types if t not in _IOU_TYPES]
        if bad or not iou_types:
            raise ValueError(
                f"iou_types must be a non-empty subset of {_IOU_TYPES}; got {iou_types}."
            )
        self.annotation_file = annotation_file
        self.iou_types = tuple(iou_types)
        self.label_map = label_map
        self.use_fast_eval = use_fast_eval
        self.verbose = verbose
        if annotation_file is not None:
            with open(annotation_file) as f:
                gt_dataset = json.load(f)
        for key in ("images", "annotations", "categories"):
            if key not in gt_dataset:
                raise ValueError(f"Ground truth has no '{key}' list; it must be a COCO dataset.")
        self.gt_dataset = gt_dataset
        if "segm" in self.iou_types:
            lacking = [a.get("id") for a in gt_dataset["annotations"] if "segmentation" not in a]
            if lacking:
                raise ValueError(
                    f"iou_types contains 'segm' but ground-truth annotations {lacking[:5]} have "
                    "no 'segmentation'; drop 'segm' or use an annotation file with masks."
                )
        self._image_sizes = {
            int(im["id"]): (int(im["height"]), int(im["width"])) for im in gt_dataset["images"]
        }
        self._category_names = {int(c["id"]): str(c["name"]) for c in gt_dataset["categories"]}
        self._file_names = {int(im["id"]): str(im["file_name"]) for im in gt_dataset["images"]
                            if im.get("file_name")}
        if use_fast_eval:
            self._fast_eval_module()  # fail at construction, not after a long inference run
        self.reset()

    @staticmethod
    def _fast_eval_module():
        try:
            import faster_coco_eval  # optional dependency (the fast-eval extra)
        except ImportError as e:
            raise ImportError(
                "use_fast_eval=True needs the optional dependency faster-coco-eval: "
                "pip install faster-coco-eval (or pass use_fast_eval=False)."
            ) from e
        return faster_coco_eval

    def reset(self) -> None:
        """Forget all accumulated detections."""
        self._results: list[dict] = []
        self._seen_image_ids: set[int] = set()

    def update(self, detections: Mapping[str, Any]) -> None:
        """Adds one batch of detections.

        Args:
            detections: Dict of NumPy arrays (or tensors) for a batch:
                ``image_id [B]`` int, the dataset image ids;
                ``detection_boxes [B, D, 4]`` float, ``[y1, x1, y2, x2]`` ORIGINAL-image pixels;
                ``detection_scores [B, D]`` float;
                ``detection_classes [B, D]`` int, contiguous ``1..K``;
                ``num_detections [B]`` int, valid rows per image (rows past it are padding;
                    defaults to D);
                ``detection_masks`` (optional, needed for ``"segm"``, ignored otherwise):
                    ``[B, D, H, W]`` full-image masks, or a list of B arrays
                    ``[D_b, H_b, W_b]`` when image sizes differ; values > 0.5 are
                    foreground. Model outputs (box-relative ``[D, Hm, Wm]``) go through
                    ``tf_rcnn.ops.masks.paste_image_masks`` first (``MaskPastingEvaluator``).

        Raises:
            ValueError: on missing keys, inconsistent shapes, unknown image ids or masks whose
                size is not the original image size.
        """
        for key in ("image_id", "detection_boxes", "detection_scores", "detection_classes"):
            if key not in detections:
                raise ValueError(f"detections is missing '{key}'.")
        image_ids = np.asarray(detections["image_id"]).reshape(-1).astype(np.int64)
        boxes = np.asarray(detections["detection_boxes"], np.float64)
        scores = np.asarray(detections["detection_scores"], np.float64)
        classes = np.asarray(detections["detection_classes"]).astype(np.int64)
        B = image_ids.shape[0]
        if boxes.ndim != 3 or boxes.shape[0] != B or boxes.shape[2] != 4:
            raise ValueError(
                f"detection_boxes must be [B, D, 4] with B={B} (len of image_id); "
                f"got {boxes.shape}."
            )
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
        masks = detections.get("detection_masks")
        if "segm" in self.iou_types and masks is None:
            raise ValueError(
                "iou_types contains 'segm' but detections has no 'detection_masks'; pass "
                "full-image masks [B, D, H, W] pasted into original-image pixels."
            )
        unknown = [int(i) for i in image_ids if int(i) not in self._image_sizes]
        if unknown:
            raise ValueError(f"image_id values {unknown[:5]} are not in the ground truth images.")

        for b in range(B):
            image_id = int(image_ids[b])
            self._seen_image_ids.add(image_id)
            n = int(num[b])
            if n == 0:
                continue
            y1, x1, y2, x2 = (boxes[b, :n, i] for i in range(4))
            xywh = np.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
            category_ids = _to_dataset_ids(self.label_map, classes[b, :n])
            image_masks = None
            if masks is not None and "segm" in self.iou_types:
                image_masks = np.asarray(masks[b])
                expected = self._image_sizes[image_id]
                if (
                    image_masks.ndim != 3
                    or image_masks.shape[0] < n
                    or (tuple(image_masks.shape[1:]) != expected)
                ):
                    raise ValueError(
                        f"detection_masks for image {image_id} must be [D, H, W] with H, W = "
                        f"{expected} (the original image size) and D >= {n}; got "
                        f"{image_masks.shape}. Paste RoI masks into the full image first."
                    )
            for d in range(n):
                result = {
                    "image_id": image_id,
                    "category_id": int(category_ids[d]),
                    "bbox": [float(v) for v in xywh[d]],
                    "score": float(scores[b, d]),
                }
                if image_id in self._file_names:
                    result["file_name"] = self._file_names[image_id]
                if image_masks is not None:
                    result["segmentation"] = _encode_mask(image_masks[d] > 0.5)
                self._results.append(result)

    def results(self) -> list[dict]:
        """The accumulated detections in the COCO results format, each with its image's
        ``file_name`` when the ground truth has one (a fresh list of dicts)."""
        return copy.deepcopy(self._results)

    def write_detections(self, path: str) -> None:
        """Writes ``results()`` as the COCO results json ``path``."""
        with open(path, "w") as f:
            json.dump(self._results, f)

    def _coco_api(self):
        if self.use_fast_eval:
            module = self._fast_eval_module()
            quiet = lambda *args, **kwargs: None
            make_coco = lambda: module.COCO(print_function=quiet)

            def make_eval(gt, dt, iou_type):
                return module.COCOeval_faster(gt, dt, iou_type, print_function=quiet)

        else:

            make_coco = COCO
            make_eval = COCOeval
        return make_coco, make_eval

    def evaluate(self) -> dict[str, float]:
        """Runs COCOeval for each IoU type.

        Returns:
            ``{"<type>/AP", "<type>/AP50", ..., "<type>/ARl"}`` (the 12 COCOeval stats in
            its order) and ``"<type>/AP/<category name>"`` (AP@[.5:.95], all areas, 100
            detections) for every category, for ``<type>`` in ``iou_types``.
        """
        make_coco, make_eval = self._coco_api()
        with _suppress_output():
            gt = make_coco()
            gt.dataset = copy.deepcopy(self.gt_dataset)
            gt.createIndex()
        image_ids = sorted(self._seen_image_ids) or sorted(self._image_sizes)
        metrics: dict[str, float] = {}
        for iou_type in self.iou_types:
            # The metrics see the plain COCO results format (file_name is for readers only).
            results = [{k: v for k, v in r.items() if k != "file_name"}
                       for r in copy.deepcopy(self._results)]
            if iou_type == "segm":
                # Without 'bbox', loadRes takes a result's area from its mask (see module doc).
                for r in results:
                    r.pop("bbox", None)
            with _suppress_output():
                if results:
                    dt = gt.loadRes(results)
                else:
                    # pycocotools' loadRes cannot take an empty list: build the empty result set.
                    dt = make_coco()
                    dt.dataset = {
                        "images": list(gt.dataset["images"]),
                        "categories": copy.deepcopy(gt.dataset["categories"]),
                        "annotations": [],
                    }
                    dt.createIndex()
                coco_eval = make_eval(gt, dt, iou_type)
                coco_eval.params.imgIds = image_ids
                coco_eval.evaluate()
                coco_eval.accumulate()
            if self.verbose:
                print(f"COCO {iou_type} metrics:")
                coco_eval.summarize()
            else:
                with _suppress_output():
                    coco_eval.summarize()
            for name, value in zip(COCO_STAT_NAMES, coco_eval.stats[:12], strict=True):
                metrics[f"{iou_type}/{name}"] = float(value)
            metrics.update(self._per_category_ap(coco_eval, iou_type))
        return metrics

    def _per_category_ap(self, coco_eval, iou_type: str) -> dict[str, float]:
        # precision: [T IoU thresholds, R recall points, K categories, A areas, M maxDets];
        # area index 0 is 'all', maxDets index -1 is 100, like the headline AP.
        precision = np.asarray(coco_eval.eval["precision"])
        out = {}
        for k, cat_id in enumerate(coco_eval.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            name = self._category_names.get(int(cat_id), str(cat_id))
            out[f"{iou_type}/AP/{name}"] = float(np.mean(p)) if p.size else -1.0
        return out
