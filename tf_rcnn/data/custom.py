"""Custom data: build a dataset from Python records or from a folder with a CSV file.

Conventions:
    Records hold ``[y1, x1, y2, x2]`` original pixels (like every reader); the user-facing
    formats below use the common ``x1, y1, x2, y2`` order by default (``box_format``).
    Class names map to ``1..K`` in the order of ``class_names`` (default: sorted names).

Python API -- :func:`records_from_list`::

    items = [
        {"image": "photos/cat1.jpg", "boxes": [[10, 20, 110, 140]], "classes": ["cat"]},
        {"image": "photos/empty.jpg", "boxes": [], "classes": []},
        {"image": "photos/dog.png", "boxes": [[5, 5, 50, 60]], "classes": ["dog"],
         "masks": ["photos/dog_mask0.png"]},   # optional: one binary mask per box
    ]
    records, label_map, report = records_from_list(items, class_names=["cat", "dog"])

On-disk format -- :func:`load_custom` reads ``folder/annotations.csv`` (or a given CSV)::

    image,x1,y1,x2,y2,class
    photos/cat1.jpg,10,20,110,140,cat
    photos/cat1.jpg,200,30,260,90,dog
    photos/empty.jpg,,,,,

One row per box, pixel coordinates of the image file (x right, y down, ``x2``/``y2`` the
far edges, so width = ``x2 - x1``); an image without boxes has one row with empty box fields.
Paths are relative to the CSV's folder. An optional ``mask`` column names a binary PNG of the
instance (non-zero = object). An optional ``classes.txt`` beside the CSV (one name per line)
fixes the class order; otherwise names are sorted.

Bad data: as for every reader (missing/unreadable images skipped, boxes with NaN,
``x2 <= x1``, outside the image skipped, partly outside clipped), each counted in the report
with the file; malformed CSV rows are counted with their line number. Boxes of classes outside
a given label map or ``classes.txt`` are left out on purpose and summed up per class. A CSV
without a single annotation row is an error naming the expected line format.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tf_rcnn.data.records import DetectionRecord, LoadReport, check_image_file, sanitize_boxes
from tf_rcnn.label_map import LabelMap, match_label_map

_BOX_FORMATS = ("xyxy", "yxyx", "xywh")


def _to_yxyx(boxes: np.ndarray, box_format: str) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if box_format == "yxyx":
        return b
    if box_format == "xyxy":
        return b[:, [1, 0, 3, 2]]
    x, y, w, h = b.T
    return np.stack([y, x, y + h, x + w], axis=1)


def records_from_list(
    items: Iterable[dict[str, Any]],
    class_names: Sequence[str] | None = None,
    *,
    label_map: LabelMap | None = None,
    box_format: str = "xyxy",
    verify_images: str = "header",
    source: str = "records_from_list",
    report: LoadReport | None = None,
) -> tuple[list[DetectionRecord], LabelMap, LoadReport]:
    """Build records from dicts (see module docstring).

    Args:
        items: dicts with ``"image"`` (path), ``"boxes"`` (``[M, 4]`` in ``box_format``),
            ``"classes"`` (M names), optional ``"image_id"`` (int, default: position + 1),
            ``"masks"`` (M ``[H, W]`` arrays or PNG paths), ``"crowd_boxes"``, ``"difficult"``,
            ``"file_name"`` (the name written into evaluation results; default: the base name
            of ``"image"``).
        class_names: the data's classes in order (``1..K``); default: sorted names found in
            ``items``.
        label_map: the model's classes (e.g. the training set's map for a validation set),
            found by name (:func:`tf_rcnn.label_map.match_label_map`; a class missing from
            ``class_names`` is an error, one without a box when there is no ``class_names``
            only a warning); boxes of other classes are left out.
        box_format: ``"xyxy"`` (default), ``"yxyx"`` or ``"xywh"`` (COCO).
        verify_images: ``"none"``, ``"header"`` or ``"decode"``.
        source: name used in the report.
        report: add to this report instead of a new one.

    Returns:
        ``(records, label_map, report)``.
    """
    if box_format not in _BOX_FORMATS:
        raise ValueError(f"box_format must be one of {_BOX_FORMATS}, got {box_format!r}.")
    items = list(items)
    for i, item in enumerate(items):
        if "image" not in item:
            raise ValueError(f"{source}: item {i} has no 'image' path; every item needs one.")
        if len(item.get("boxes", [])) != len(item.get("classes", [])):
            raise ValueError(f"{source}: item {i} ({item['image']}) has "
                             f"{len(item.get('boxes', []))} boxes but "
                             f"{len(item.get('classes', []))} classes; give one class per box.")
    found = sorted({str(c) for item in items for c in item.get("classes", [])})
    if label_map is None:
        label_map = LabelMap.from_names(found if class_names is None else class_names)
    else:  # the model's classes, found by name (only class_names is a full list)
        label_map = match_label_map(label_map, None, found if class_names is None
                                    else class_names, source=source,
                                    complete=class_names is not None)
    report = report if report is not None else LoadReport(source)
    any_masks = any("masks" in item for item in items)
    records, seen = [], set()
    for i, item in enumerate(items):
        path = str(item["image"])
        image_id = int(item.get("image_id", i + 1))
        if image_id in seen:
            raise ValueError(f"{source}: duplicate image_id {image_id} ({path}).")
        seen.add(image_id)
        hw = check_image_file(path, None, report, verify_images)
        if hw is None:
            continue
        height, width = hw
        names = [str(c) for c in item.get("classes", [])]
        known = np.asarray([n in label_map.names for n in names], bool)
        for n in (n for n in names if n not in label_map.names):
            report.leave_out("classes not in the label map", repr(n))
        boxes, keep = sanitize_boxes(_to_yxyx(item.get("boxes", []), box_format), height, width,
                                     report, path)
        keep &= known if len(known) else keep
        classes = np.asarray([label_map.from_name(n) if k else 0
                              for n, k in zip(names, known, strict=True)], np.int32)
        masks = None
        if any_masks:
            given = item.get("masks")
            if given is None or len(given) != len(names):
                report.repair("missing masks (filled box used as mask)", path,
                              f"{0 if given is None else len(given)} masks for {len(names)} boxes")
                given = [None] * len(names)
            masks = [m for m, k in zip(given, keep, strict=True) if k]
        crowd = item.get("crowd_boxes")
        crowd_arr = np.zeros((0, 4), np.float32)
        if crowd is not None and len(crowd):
            crowd_arr, ck = sanitize_boxes(_to_yxyx(crowd, box_format), height, width, report,
                                           path, what="crowd box")
            crowd_arr = crowd_arr[ck]
        difficult = item.get("difficult")
        difficult = (np.zeros(len(names), bool) if difficult is None
                     else np.asarray(difficult, bool))
        records.append(DetectionRecord(
            image_path=path, image_id=image_id, height=height, width=width,
            boxes=boxes[keep], classes=classes.reshape(-1)[keep], crowd_boxes=crowd_arr,
            difficult=difficult.reshape(-1)[keep], segmentations=masks,
            source_name=os.path.basename(path), file_name=str(item.get("file_name", "")),
        ))
    report.finish(records)
    return records, label_map, report


def load_custom(
    folder_or_file: str, *, label_map: LabelMap | None = None, verify_images: str = "header"
) -> tuple[list[DetectionRecord], LabelMap, LoadReport]:
    """Read the CSV format of the module docstring (a folder with ``annotations.csv``, or the
    CSV path itself); ``label_map`` fixes the classes (e.g. the training set's map)."""
    csv_path = folder_or_file
    if os.path.isdir(folder_or_file):
        csv_path = os.path.join(folder_or_file, "annotations.csv")
    if not os.path.isfile(csv_path):
        raise ValueError(f"Annotation file {csv_path!r} not found; write an annotations.csv "
                         "with columns image,x1,y1,x2,y2,class (see docs/data.md).")
    base = os.path.dirname(os.path.abspath(csv_path))
    classes_file = os.path.join(base, "classes.txt")
    class_names = None
    if os.path.isfile(classes_file):
        with open(classes_file) as f:
            class_names = [line.strip() for line in f if line.strip()]
    pre_report = LoadReport(f"custom {csv_path}")  # also collects CSV-row problems
    items: dict[str, dict[str, Any]] = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        required = {"image", "x1", "y1", "x2", "y2", "class"}
        if reader.fieldnames is None or not required <= set(reader.fieldnames):
            got = "an empty file" if not reader.fieldnames else ",".join(reader.fieldnames)
            raise ValueError(f"{csv_path}: the first line must be the header "
                             f"image,x1,y1,x2,y2,class (optionally ,mask); got {got}.")
        has_mask = "mask" in reader.fieldnames
        for line, row in enumerate(reader, start=2):
            image = (row.get("image") or "").strip()
            if not image:
                pre_report.skip("malformed CSV row", csv_path, f"line {line}: no image")
                continue
            path = image if os.path.isabs(image) else os.path.join(base, image)
            item = items.setdefault(path, {"image": path, "boxes": [], "classes": [],
                                           "file_name": image})
            if has_mask:
                item.setdefault("masks", [])
            fields = [(row.get(k) or "").strip() for k in ("x1", "y1", "x2", "y2")]
            cls = (row.get("class") or "").strip()
            if not any(fields) and not cls:
                continue  # an image without boxes
            try:
                box = [float(v) for v in fields]
            except ValueError:
                pre_report.skip("malformed CSV row", csv_path, f"line {line}: {fields}")
                continue
            if not cls:
                pre_report.skip("malformed CSV row", csv_path, f"line {line}: no class")
                continue
            item["boxes"].append(box)
            item["classes"].append(cls)
            if has_mask:
                mask = (row.get("mask") or "").strip()
                item["masks"].append(
                    (mask if os.path.isabs(mask) else os.path.join(base, mask)) if mask else None)
    if not items and not pre_report.items:
        raise ValueError(
            f"{csv_path} has no annotation rows, only the header. Add one line per box, "
            "image,x1,y1,x2,y2,class in pixels of the image file (e.g. "
            "photos/cat1.jpg,10,20,110,140,cat), and one line photos/empty.jpg,,,,, for an "
            "image without boxes; image paths are relative to the CSV's folder.")
    return records_from_list(
        list(items.values()), class_names, label_map=label_map, box_format="xyxy",
        verify_images=verify_images, source=f"custom {csv_path}", report=pre_report,
    )
