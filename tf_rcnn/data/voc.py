"""Pascal VOC reader: ``VOCdevkit/VOC20xx/{Annotations,ImageSets/Main,JPEGImages}``.

Conventions:
    VOC ``bndbox`` values are 1-based inclusive pixel indices; a box covering columns
    ``xmin..xmax`` becomes ``x1 = xmin - 1``, ``x2 = xmax`` (width ``xmax - xmin + 1``), so records
    hold ``[ymin - 1, xmin - 1, ymax, xmax]`` in 0-based continuous pixels like every reader.
    The 20 classes map to ``1..20`` in the standard alphabetical order (dataset ids are the same
    numbers). ``difficult`` objects are KEPT in the records with ``difficult=True``: the training
    pipeline leaves them out by default and the VOC evaluator ignores them.

Image ids: VOC names are strings. ``"000005"`` (VOC2007 style) becomes ``5`` and
``"2008_000123"`` (VOC2012 style) becomes ``2008000123``; the two ranges cannot collide.
Other names get ``10**10 + crc32(name)``. ``source_name`` keeps the original name.

Bad data (counted in the LoadReport with the file): missing/unreadable XML or image ->
image skipped; unknown class name, malformed ``bndbox``, NaN, degenerate or outside boxes ->
object skipped; partly outside -> clipped; an id listed twice (e.g. in two image sets) ->
kept once. A missing image-set file or VOC folder is a ValueError naming the path.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Sequence

import numpy as np

from tf_rcnn.data.records import DetectionRecord, LoadReport, check_image_file, sanitize_boxes
from tf_rcnn.label_map import LabelMap, match_label_map

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def voc_image_id(name: str) -> int:
    """Integer id of a VOC image name (see module docstring)."""
    if name.isdigit():
        return int(name)
    parts = name.split("_")
    if len(parts) == 2 and all(p.isdigit() for p in parts) and len(parts[1]) <= 6:
        return int(parts[0]) * 1_000_000 + int(parts[1])
    return 10**10 + zlib.crc32(name.encode())


def _year_dir(root: str, year: str) -> str:
    for candidate in (os.path.join(root, f"VOC{year}"), root):
        if os.path.isdir(os.path.join(candidate, "Annotations")) and (
            candidate != root or os.path.basename(os.path.normpath(root)) == f"VOC{year}"
        ):
            return candidate
    raise ValueError(
        f"No VOC{year} folder under {root!r}; pass the VOCdevkit folder that contains "
        f"VOC{year}/Annotations, VOC{year}/ImageSets/Main and VOC{year}/JPEGImages."
    )


def load_voc(
    root: str,
    image_sets: Sequence[tuple[str, str]] = (("2007", "trainval"), ("2012", "trainval")),
    *,
    class_names: Sequence[str] = VOC_CLASSES,
    label_map: LabelMap | None = None,
    verify_images: str = "header",
    training: bool | None = None,
) -> tuple[list[DetectionRecord], LabelMap, LoadReport]:
    """Read one or several VOC image sets (e.g. 07+12 trainval) into records.

    Args:
        root: the ``VOCdevkit`` folder (or a ``VOC2007``-style folder for a single year).
        image_sets: ``(year, set)`` pairs; ``set`` names a file in ``ImageSets/Main``.
        class_names: the data's classes, dataset ids ``1..`` in this order (default: the 20
            VOC classes).
        label_map: the model's classes (a run's ``label_map.json``), found among
            ``class_names`` by :func:`tf_rcnn.label_map.match_label_map`; objects of the other
            classes are left out and summed up per class. Default: ``class_names``.
        verify_images: ``"none"``, ``"header"`` or ``"decode"``
            (see :func:`tf_rcnn.data.records.check_image_file`).
        training: accepted for symmetry with the builder and unused: records are the same for
            both splits (``difficult`` stays a flag; the pipeline and evaluator act on it).

    Returns:
        ``(records, label_map, report)`` in image-set order.
    """
    del training
    data_map = LabelMap.from_names(class_names)
    sets = ", ".join(f"{y} {s}" for y, s in image_sets)
    report = LoadReport(f"VOC {root} [{sets}]")
    if label_map is None:
        label_map = data_map
    else:
        label_map = match_label_map(label_map, data_map.dataset_ids, data_map.names,
                                    source=f"the VOC classes of {root}")
    records: list[DetectionRecord] = []
    seen: set[int] = set()
    for year, image_set in image_sets:
        base = _year_dir(root, str(year))
        list_file = os.path.join(base, "ImageSets", "Main", f"{image_set}.txt")
        if not os.path.isfile(list_file):
            raise ValueError(f"VOC image set file {list_file!r} not found; check the set name.")
        with open(list_file) as f:
            names = [line.split()[0] for line in f if line.strip()]
        for name in names:
            image_id = voc_image_id(name)
            if image_id in seen:
                report.skip("image listed twice", list_file, name)
                continue
            seen.add(image_id)
            record = _read_one(base, name, image_id, label_map, data_map, report,
                               verify_images)
            if record is not None:
                record.file_name = os.path.relpath(record.image_path, root)
                records.append(record)
    report.finish(records)
    return records, label_map, report


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text else None


def _read_one(
    base: str, name: str, image_id: int, label_map: LabelMap, data_map: LabelMap,
    report: LoadReport, verify_images: str,
) -> DetectionRecord | None:
    xml_path = os.path.join(base, "Annotations", f"{name}.xml")
    image_path = os.path.join(base, "JPEGImages", f"{name}.jpg")
    if not os.path.isfile(xml_path):
        report.skip("missing annotation file", xml_path, "listed in the image set")
        return None
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        report.skip("unreadable annotation file", xml_path, str(e))
        return None
    size = root.find("size")
    expected = None
    try:
        h, w = int(float(_text(size, "height"))), int(float(_text(size, "width")))
        if h > 0 and w > 0:
            expected = (h, w)
    except (TypeError, ValueError):
        pass
    hw = check_image_file(image_path, expected, report, verify_images)
    if hw is None:
        return None
    height, width = hw
    boxes, classes, difficult = [], [], []
    for obj in root.findall("object"):
        cls = _text(obj, "name")
        if cls not in data_map.names:
            report.skip("unknown class name", xml_path, f"{cls!r}")
            continue
        if cls not in label_map.names:
            report.leave_out("classes not in the label map", repr(cls))
            continue
        bb = obj.find("bndbox")
        try:
            coords = [float(_text(bb, t)) for t in ("ymin", "xmin", "ymax", "xmax")]
        except (TypeError, ValueError):
            report.skip("malformed bndbox", xml_path, f"object {cls}")
            continue
        ymin, xmin, ymax, xmax = coords
        boxes.append([ymin - 1, xmin - 1, ymax, xmax])
        classes.append(label_map.from_name(cls))
        diff = _text(obj, "difficult")
        difficult.append(diff is not None and diff not in ("0", "false", "False"))
    boxes_arr, keep = sanitize_boxes(np.asarray(boxes, np.float32), height, width, report,
                                     xml_path)
    return DetectionRecord(
        image_path=image_path, image_id=image_id, height=height, width=width,
        boxes=boxes_arr[keep], classes=np.asarray(classes, np.int32).reshape(-1)[keep],
        difficult=np.asarray(difficult, bool).reshape(-1)[keep], source_name=name,
    )
