"""COCO reader: annotation json (through pycocotools) -> DetectionRecords + LabelMap.

Conventions:
    COCO ``bbox`` is ``[x, y, w, h]`` in original pixels; records hold ``[y1, x1, y2, x2]``
    ``= [y, x, y + h, x + w]``. Dataset category ids are mapped to contiguous ``1..K`` in
    ascending id order (or through a given :class:`LabelMap`, e.g. the one saved with a model,
    matched to the json's categories by :func:`tf_rcnn.label_map.match_label_map`);
    ``LabelMap.to_dataset_id`` maps detections back. ``iscrowd=1`` annotations become
    ``crowd_boxes`` (ignore regions for matching), never positives. Polygons and RLE (compressed
    or not) are kept as-is and decoded on demand (``DetectionRecord.instance_masks``).
    COCO image ids are kept as ``image_id`` for evaluation.

Bad data (each counted in the :class:`LoadReport`, logged with the file, never silent):
    * missing, unreadable, truncated or wrongly-sized image file -> image skipped;
    * annotation of an unknown image id or category id -> annotation skipped;
    * annotation of a category the json declares but a given ``label_map`` leaves out (a subset
      of the classes chosen on purpose) -> left out, one summary line per category;
    * missing or malformed ``bbox`` (not a list of 4 numbers), NaN/inf, ``w <= 0``/``h <= 0``,
      entirely outside the image -> annotation skipped; partly outside -> clipped (repair);
    * malformed segmentation (polygon with < 3 points, RLE of another size) -> the instance
      keeps its box, its mask becomes the filled box (repair);
    * ``area`` that is not a finite number >= 0 -> the box area (repair; kept for evaluation);
    * images without annotations -> kept (evaluation needs them) and counted; the training
      pipeline leaves them out (counted again there).
    Errors (ValueError naming the file and the fix): unreadable json, duplicate image ids,
    non-integer ids, a missing ``image_dir``.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import os
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from tf_rcnn.data.records import DetectionRecord, LoadReport, check_image_file, sanitize_boxes
from tf_rcnn.label_map import LabelMap, match_label_map

# The 80 COCO 2017 categories by dataset id (ids 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83
# are unused). Detectors trained on COCO with one output per id 1..90 (torchvision's) keep the
# unused ids as placeholder classes.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)

def _load_coco_api(annotation_file: str) -> Any:

    if not os.path.isfile(annotation_file):
        raise ValueError(f"COCO annotation file {annotation_file!r} does not exist; fix the path.")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
            return COCO(annotation_file)
    except Exception as e:
        raise ValueError(
            f"Could not read COCO annotation file {annotation_file!r} ({type(e).__name__}: {e}); "
            "it must be a COCO-format json with 'images', 'annotations' and 'categories'."
        ) from e


def _valid_segmentation(segm: Any, height: int, width: int) -> bool:
    if isinstance(segm, list):
        if not segm:
            return False
        for poly in segm:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return False
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in poly):
                return False
        return True
    if isinstance(segm, dict):
        size = segm.get("size")
        return (
            isinstance(size, list | tuple)
            and [int(s) for s in size] == [height, width]
            and isinstance(segm.get("counts"), str | bytes | list)
        )
    return False


def _checked_segmentation(
    ann: dict[str, Any], height: int, width: int, report: LoadReport, path: str
) -> Any:
    """The annotation's segmentation, or None (filled box) with a counted repair."""
    if "segmentation" not in ann:
        report.repair("missing segmentation (filled box used as mask)", path,
                      f"annotation {ann.get('id')}")
        return None
    segm = ann["segmentation"]
    if not _valid_segmentation(segm, height, width):
        report.repair("bad segmentation (filled box used as mask)", path,
                      f"annotation {ann.get('id')}: {str(segm)[:60]}")
        return None
    return segm


def load_coco(
    annotation_file: str,
    image_dir: str | None,
    *,
    label_map: LabelMap | None = None,
    include_masks: bool = True,
    verify_images: str = "header",
) -> tuple[list[DetectionRecord], LabelMap, LoadReport]:
    """Read a COCO-format dataset.

    Args:
        annotation_file: path of the COCO json.
        image_dir: folder the ``file_name`` entries are relative to; ``None`` reads the
            annotations only (image sizes from the json, files not checked).
        label_map: the model's classes (a run's ``label_map.json``, the training set's map
            when reading a validation set), found among the json's categories by
            :func:`tf_rcnn.label_map.match_label_map` (same id and name, else same name, else
            a ValueError listing both); annotations of categories outside it are left out and
            summed up per category in the report.
        include_masks: keep segmentations on the records (decoded lazily).
        verify_images: ``"none"``, ``"header"`` (default; PIL header + truncation check) or
            ``"decode"`` (full decode), see :func:`tf_rcnn.data.records.check_image_file`.

    Returns:
        ``(records, label_map, report)``; records follow the json's image order.
    """
    if image_dir is not None and not os.path.isdir(image_dir):
        raise ValueError(f"image_dir {image_dir!r} is not a directory; point it at the images.")
    coco = _load_coco_api(annotation_file)
    data = coco.dataset
    report = LoadReport(f"COCO {annotation_file}")
    categories = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
    if label_map is None:
        ids = sorted(categories, key=int)
        label_map = LabelMap(ids, [categories[i] for i in ids])
    else:  # the model's classes: found in the json by id, else by name (or an error)
        label_map = match_label_map(label_map, list(categories), list(categories.values()),
                                    source=annotation_file)

    images = data.get("images", [])
    seen: set[int] = set()
    for im in images:
        image_id = im.get("id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise ValueError(
                f"{annotation_file}: image id {image_id!r} ({im.get('file_name')}) is not an "
                "integer; COCO image ids must be integers."
            )
        if image_id in seen:
            raise ValueError(
                f"{annotation_file}: duplicate image id {image_id} ({im.get('file_name')}); "
                "image ids must be unique."
            )
        seen.add(image_id)

    anns_by_image: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for ann in data.get("annotations", []):
        if ann.get("image_id") not in seen:
            report.skip("annotation of unknown image id", annotation_file,
                        f"annotation {ann.get('id')} image_id {ann.get('image_id')}")
            continue
        anns_by_image[ann["image_id"]].append(ann)
    has_segm = include_masks and any("segmentation" in a for a in data.get("annotations", []))

    records = []
    for im in images:
        path = os.path.join(image_dir or "", str(im.get("file_name", "")))
        expected = None
        if isinstance(im.get("height"), int) and isinstance(im.get("width"), int):
            expected = (im["height"], im["width"])
        if image_dir is not None:
            hw = check_image_file(path, expected, report, verify_images)
        else:  # annotations only: the json's sizes, image files not read
            hw = expected
            if hw is None:
                report.skip("image without height and width", annotation_file,
                            f"image {im['id']} {im.get('file_name')!r}")
        if hw is None:
            n = len(anns_by_image.get(im["id"], []))
            if n:
                report.skip("annotation of skipped image", path, f"{n} annotations", count=n)
            continue
        height, width = hw
        record = _record_from_annotations(
            path, im["id"], height, width, anns_by_image.get(im["id"], []), label_map,
            categories, has_segm, report,
        )
        record.file_name = str(im.get("file_name", ""))
        records.append(record)
    report.finish(records)
    return records, label_map, report


def _record_from_annotations(
    path: str,
    image_id: int,
    height: int,
    width: int,
    anns: list[dict[str, Any]],
    label_map: LabelMap,
    categories: dict[Any, str],
    has_segm: bool,
    report: LoadReport,
) -> DetectionRecord:
    boxes, classes, anns_kept, crowd, crowd_classes, crowd_anns = [], [], [], [], [], []
    for ann in anns:
        category_id = ann.get("category_id")
        try:
            category = label_map.from_dataset_id(category_id)
        except (ValueError, TypeError):
            if category_id in categories:  # declared by the json, outside the chosen classes
                report.leave_out("categories not in the label map",
                                 f"{categories[category_id]} (id {category_id})")
            else:
                report.skip("unknown category id", path,
                            f"annotation {ann.get('id')} category_id {category_id!r}")
            continue
        bbox = ann.get("bbox")
        try:
            if not isinstance(bbox, list | tuple):  # a string of 4 digits is no box either
                raise TypeError
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            report.skip("malformed bbox", path, f"annotation {ann.get('id')} bbox {bbox!r}")
            continue
        if ann.get("iscrowd", 0):
            crowd.append([y, x, y + h, x + w])
            crowd_classes.append(category)
            crowd_anns.append(ann)
            continue
        boxes.append([y, x, y + h, x + w])
        classes.append(category)
        anns_kept.append(ann)
    boxes_arr, keep = sanitize_boxes(np.asarray(boxes, np.float32), height, width, report, path)
    anns_kept = [a for a, k in zip(anns_kept, keep, strict=True) if k]
    crowd_arr, keep_crowd = sanitize_boxes(np.asarray(crowd, np.float32), height, width, report,
                                           path, what="crowd box")
    crowd_anns = [a for a, k in zip(crowd_anns, keep_crowd, strict=True) if k]
    segms = crowd_segms = None
    if has_segm:
        segms = [_checked_segmentation(a, height, width, report, path) for a in anns_kept]
        crowd_segms = [_checked_segmentation(a, height, width, report, path)
                       for a in crowd_anns]
    return DetectionRecord(
        image_path=path,
        image_id=int(image_id),
        height=height,
        width=width,
        boxes=boxes_arr[keep],
        classes=np.asarray(classes, np.int32)[keep] if classes else np.zeros(0, np.int32),
        crowd_boxes=crowd_arr[keep_crowd],
        segmentations=segms,
        source_name=os.path.basename(path),
        areas=[_area(a, report, path) for a in anns_kept],
        crowd_classes=np.asarray(crowd_classes, np.int32)[keep_crowd],
        crowd_areas=[_area(a, report, path) for a in crowd_anns],
        crowd_segmentations=crowd_segms,
    )


def _area(ann: dict[str, Any], report: LoadReport, path: str) -> float:
    """The annotation's own ``area`` (kept for evaluation), or NaN (the box area is used):
    without one silently, with one that is not a finite number >= 0 as a counted repair."""
    if "area" not in ann:
        return math.nan
    area = ann["area"]
    if (isinstance(area, int | float) and not isinstance(area, bool) and math.isfinite(area)
            and area >= 0):
        return float(area)
    report.repair("bad area (box area used)", path, f"annotation {ann.get('id')} area {area!r}")
    return math.nan
