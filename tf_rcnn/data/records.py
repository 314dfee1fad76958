"""Dataset records and the load report shared by every reader.

Conventions:
    Boxes are float32 ``[y1, x1, y2, x2]`` in pixels of the ORIGINAL image (before any resize),
    width ``x2 - x1`` with no legacy ``+1``. Classes are contiguous ``1..K`` (0 is background);
    ``tf_rcnn.label_map.LabelMap`` is the one place where dataset category ids map to ``1..K``
    and back.
    Crowd regions (COCO ``iscrowd=1``) are kept OUT of ``boxes``: they travel as
    ``crowd_boxes`` and only turn would-be negatives into "ignore" during matching.

Shape shorthand:
    M ground-truth instances of one image, Mc crowd regions of one image, H/W original size.

Every reader returns ``(records, label_map, report)``. The :class:`LoadReport` counts what was
skipped or repaired, with the file and the reason for each, and what was left out on purpose
(annotations of classes outside a given label map), and logs it once when loading ends
(``"N images, M boxes, skipped K: reasons"``) so nothing is dropped or altered silently.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging
from PIL import Image
from pycocotools import mask as mask_utils

from tf_rcnn.data import masks as masks_lib
from tf_rcnn.label_map import LabelMap

# How many example files each skip/repair reason keeps for the report (all are counted).
_MAX_EXAMPLES = 5

# The skip reasons that drop a whole image because its file cannot be used (check_image_file).
MISSING_IMAGE = "missing image file"
IMAGE_SKIP_REASONS = (MISSING_IMAGE, "unreadable image file", "unsupported image format",
                      "truncated image file", "image size differs from annotation")


@dataclasses.dataclass
class DetectionRecord:
    """One image and its annotations, in original-image pixels.

    Attributes:
        image_path: path of the JPEG/PNG file.
        image_id: integer id, unique in the dataset (COCO ``image.id``; see each reader).
        height: original image height in pixels.
        width: original image width in pixels.
        boxes: ``[M, 4]`` float32 ``[y1, x1, y2, x2]`` original pixels (non-crowd instances).
        classes: ``[M]`` int32 contiguous class ids ``1..K``.
        crowd_boxes: ``[Mc, 4]`` float32 crowd/ignore regions, same format.
        difficult: ``[M]`` bool, VOC ``difficult`` flags (all False for other datasets).
        segmentations: optional per-instance mask sources, one per row of ``boxes``: a COCO
            polygon list, a COCO RLE dict, a ``[H, W]`` array, or a path to a binary PNG mask.
            Decoded lazily by :meth:`instance_masks`. ``None`` when the dataset has no masks.
        source_name: the dataset's own name for the image (file stem, VOC id), for messages.
        file_name: the image's path as the annotations give it, relative to the dataset's
            image root: COCO ``file_name`` (under the image folder), the CSV's ``image`` column
            as written, ``VOC2007/JPEGImages/000005.jpg`` under the VOC root. Written into
            evaluation results; empty means the file's base name.
        areas: optional ``[M]`` float32, the dataset's own area of each instance (COCO
            ``area``, the segmentation's); NaN or ``None``: the box area. Only evaluation
            reads it (COCO's small/medium/large ranges).
        crowd_classes: optional ``[Mc]`` int32 class ``1..K`` of each crowd region (COCO
            ``category_id`` of an ``iscrowd=1`` annotation); ``None``: unknown (evaluation then
            lets the region ignore detections of every class).
        crowd_areas: optional ``[Mc]`` float32, like ``areas``.
        crowd_segmentations: optional mask sources of the crowd regions (COCO RLE or
            polygons; ``None`` entries: the region's box), for mask evaluation.
        tfrecord_index: set for a record read from TFRecords: ``image_path`` is then the
            shard and the image is its record number ``tfrecord_index`` (0-based);
            ``tf_rcnn.data.tfrecords.load_image`` reads it.
    """

    image_path: str
    image_id: int
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    crowd_boxes: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((0, 4), np.float32)
    )
    difficult: np.ndarray | None = None
    segmentations: list[Any] | None = None
    source_name: str = ""
    file_name: str = ""
    areas: np.ndarray | None = None
    crowd_classes: np.ndarray | None = None
    crowd_areas: np.ndarray | None = None
    crowd_segmentations: list[Any] | None = None
    tfrecord_index: int | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int32).reshape(-1)
        self.crowd_boxes = np.asarray(self.crowd_boxes, np.float32).reshape(-1, 4)
        if self.difficult is None:
            self.difficult = np.zeros(len(self.boxes), bool)
        self.difficult = np.asarray(self.difficult, bool).reshape(-1)
        if len(self.classes) != len(self.boxes) or len(self.difficult) != len(self.boxes):
            raise ValueError(
                f"{self.image_path}: boxes ({len(self.boxes)}), classes ({len(self.classes)}) "
                f"and difficult ({len(self.difficult)}) must have one row per instance."
            )
        if not self.file_name:
            self.file_name = os.path.basename(self.image_path)
        for name, rows, size in (("areas", self.areas, len(self.boxes)),
                                 ("crowd_classes", self.crowd_classes, len(self.crowd_boxes)),
                                 ("crowd_areas", self.crowd_areas, len(self.crowd_boxes)),
                                 ("crowd_segmentations", self.crowd_segmentations,
                                  len(self.crowd_boxes))):
            if rows is not None and len(rows) != size:
                raise ValueError(f"{self.image_path}: {name} has {len(rows)} entries for "
                                 f"{size} boxes; give one per box or none at all.")
        if self.areas is not None:
            self.areas = np.asarray(self.areas, np.float32).reshape(-1)
        if self.crowd_classes is not None:
            self.crowd_classes = np.asarray(self.crowd_classes, np.int32).reshape(-1)
        if self.crowd_areas is not None:
            self.crowd_areas = np.asarray(self.crowd_areas, np.float32).reshape(-1)
        if self.segmentations is not None and len(self.segmentations) != len(self.boxes):
            raise ValueError(
                f"{self.image_path}: segmentations has {len(self.segmentations)} entries for "
                f"{len(self.boxes)} boxes; give one mask source per box or none at all."
            )

    @property
    def num_instances(self) -> int:
        return int(len(self.boxes))

    @property
    def num_usable(self) -> int:
        """Boxes that training and metrics use: all but VOC ``difficult`` ones."""
        return self.num_instances - int(self.difficult.sum())

    @property
    def has_masks(self) -> bool:
        return self.segmentations is not None

    def instance_masks(self) -> np.ndarray:
        """Decode the instance masks: ``[M, H, W]`` uint8 in {0, 1} (original image size).

        Raises:
            ValueError: when the record has no segmentations, naming the image.
        """
        if self.segmentations is None:
            raise ValueError(
                f"{self.image_path} has no instance masks; use a dataset with segmentations "
                "(COCO json with 'segmentation', or records_from_list(..., masks=...)) or set "
                "with_masks=False."
            )

        out = np.zeros((self.num_instances, self.height, self.width), np.uint8)
        for i, segm in enumerate(self.segmentations):
            out[i] = masks_lib.decode_segmentation(
                segm, self.height, self.width, self.boxes[i], self.image_path
            )
        return out


class LoadReport:
    """Counts images, boxes and every skip or repair with its reason and file.

    ``skip(reason, file, detail)`` counts an item that was dropped; ``repair(...)`` one that was
    changed (e.g. a box clipped to the image); ``leave_out(reason, label)`` an annotation left
    out on purpose (a class outside the label map the caller chose), summarised per label
    rather than listed. ``summary()`` is one line; :meth:`finish` logs it once (with the files
    of every skip and repair when there are any).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.num_images = 0
        self.num_boxes = 0
        self.num_crowd = 0
        self.num_empty_images = 0
        self.skipped: collections.Counter[str] = collections.Counter()
        self.repaired: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[str]] = collections.defaultdict(list)
        # Every skip/repair: (kind "skip"|"repair", reason, file, detail).
        self.items: list[tuple[str, str, str, str]] = []
        # Annotations left out on purpose: reason -> label -> count.
        self.left_out: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)

    def _note(self, kind: str, reason: str, file: str, detail: str) -> None:
        self.items.append((kind, reason, file, detail))
        if len(self.examples[reason]) < _MAX_EXAMPLES:
            self.examples[reason].append(f"{file}: {detail}" if detail else file)

    def skip(self, reason: str, file: str, detail: str = "", count: int = 1) -> None:
        """Count ``count`` dropped items (images or annotations) for ``reason`` in ``file``."""
        self.skipped[reason] += count
        self._note("skip", reason, file, detail)

    def repair(self, reason: str, file: str, detail: str = "", count: int = 1) -> None:
        """Count ``count`` items that were kept after a documented change."""
        self.repaired[reason] += count
        self._note("repair", reason, file, detail)

    def leave_out(self, reason: str, label: str, count: int = 1) -> None:
        """Count ``count`` annotations of ``label`` left out on purpose, e.g. reason
        ``"categories not in the label map"``, label ``"triangle (id 3)"``."""
        self.left_out[reason][label] += count

    @property
    def num_skipped(self) -> int:
        return int(sum(self.skipped.values()))

    def summary(self) -> str:
        """``"N images, M boxes, skipped K: reasons"`` plus repairs, in one line."""
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"
        text = (
            f"{self.source}: {self.num_images} images, {self.num_boxes} boxes, "
            f"{self.num_crowd} crowd regions, {self.num_empty_images} images without "
            f"annotations; skipped {self.num_skipped}: {reasons}"
        )
        if self.repaired:
            fixes = ", ".join(f"{n} {r}" for r, n in sorted(self.repaired.items()))
            text += f"; repaired {sum(self.repaired.values())}: {fixes}"
        for reason, labels in sorted(self.left_out.items()):
            if len(labels) == 1:
                which = next(iter(labels))
            else:
                which = ", ".join(f"{label} {n}" for label, n in sorted(labels.items()))
            text += f"; left out {sum(labels.values())} annotations of {reason}: {which}"
        return text

    def image_failures(self) -> list[tuple[str, str, str]]:
        """``(reason, file, detail)`` of every image skipped because its file could not be
        used (missing, unreadable, truncated, unsupported, other size), in load order."""
        return [(reason, file, detail) for kind, reason, file, detail in self.items
                if kind == "skip" and reason in IMAGE_SKIP_REASONS]

    def details(self, max_per_reason: int | None = _MAX_EXAMPLES) -> str:
        """Multi-line text listing the files of every reason (``max_per_reason`` each;
        ``None`` lists all of them; ``items`` holds the full list)."""
        lines = [self.summary()]
        by_reason: dict[str, list[str]] = collections.defaultdict(list)
        for _, reason, file, detail in self.items:
            by_reason[reason].append(f"{file}: {detail}" if detail else file)
        for reason, entries in sorted(by_reason.items()):
            lines.append(f"  {reason}:")
            shown = entries if max_per_reason is None else entries[:max_per_reason]
            lines.extend(f"    {entry}" for entry in shown)
            if len(shown) < len(entries):
                lines.append(f"    ... and {len(entries) - len(shown)} more")
        return "\n".join(lines)

    def merge(self, other: LoadReport) -> None:
        """Add the skips and repairs counted by ``other``."""
        self.skipped.update(other.skipped)
        self.repaired.update(other.repaired)
        self.items.extend(other.items)
        for reason, labels in other.left_out.items():
            self.left_out[reason].update(labels)
        for reason, entries in other.examples.items():
            self.examples[reason].extend(entries[: _MAX_EXAMPLES - len(self.examples[reason])])

    def finish(self, records: Sequence[DetectionRecord]) -> LoadReport:
        """Fill the totals from the final records and log the summary once."""
        self.num_images = len(records)
        self.num_boxes = int(sum(r.num_instances for r in records))
        self.num_crowd = int(sum(len(r.crowd_boxes) for r in records))
        self.num_empty_images = int(
            sum(1 for r in records if r.num_instances == 0 and len(r.crowd_boxes) == 0)
        )
        if self.skipped or self.repaired:
            logging.warning("%s", self.details())  # the summary line, then the files
        else:
            logging.info("%s", self.summary())
        return self

    def __repr__(self) -> str:
        return f"LoadReport({self.summary()!r})"


def sanitize_boxes(
    boxes: np.ndarray,
    height: int,
    width: int,
    report: LoadReport,
    file: str,
    what: str = "box",
) -> tuple[np.ndarray, np.ndarray]:
    """Validate annotation boxes of one image; return ``(boxes, keep)``.

    Rules (the same for every reader):
        * any NaN/inf coordinate: skipped, reason ``"non-finite {what}"``;
        * entirely outside the image (no overlap with ``[0, W] x [0, H]``): skipped,
          reason ``"{what} outside image"``;
        * crossing the image border: clipped to the image, counted as repaired,
          reason ``"{what} clipped to image"``;
        * zero or negative width/height after clipping (``x2 <= x1`` or ``y2 <= y1``):
          skipped, reason ``"degenerate {what} (x2<=x1 or y2<=y1)"``.

    Args:
        boxes: ``[M, 4]`` float ``[y1, x1, y2, x2]`` original pixels.
        height: image height.
        width: image width.
        report: where skips and repairs are counted.
        file: the image file named in messages.
        what: noun used in the reasons ("box", "crowd box", "proposal").

    Returns:
        ``boxes [M, 4]`` float32 (clipped) and ``keep [M]`` bool.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    keep = np.ones(len(boxes), bool)
    finite = np.all(np.isfinite(boxes), axis=1)
    for i in np.flatnonzero(~finite):
        report.skip(f"non-finite {what}", file, f"{what} {boxes[i].tolist()}")
    keep &= finite
    safe = np.where(np.isfinite(boxes), boxes, 0.0)
    outside = (safe[:, 2] <= 0) | (safe[:, 0] >= height) | (safe[:, 3] <= 0) | (
        safe[:, 1] >= width
    )
    degenerate = (safe[:, 2] <= safe[:, 0]) | (safe[:, 3] <= safe[:, 1])
    for i in np.flatnonzero(keep & degenerate):
        report.skip(f"degenerate {what} (x2<=x1 or y2<=y1)", file,
                    f"yxyx {safe[i].round(2).tolist()}")
    keep &= ~degenerate
    for i in np.flatnonzero(keep & outside):
        report.skip(f"{what} outside image", file,
                    f"yxyx {safe[i].round(2).tolist()} in {height}x{width}")
    keep &= ~outside
    clipped = safe.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, height)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, width)
    changed = keep & np.any(np.abs(clipped - safe) > 1e-6, axis=1)
    for i in np.flatnonzero(changed):
        report.repair(f"{what} clipped to image", file,
                      f"yxyx {safe[i].round(2).tolist()} in {height}x{width}")
    return clipped.astype(np.float32), keep


def check_image_file(
    path: str,
    expected_hw: tuple[int, int] | None,
    report: LoadReport,
    verify: str = "header",
) -> tuple[int, int] | None:
    """Cheap load-time check of one image file; returns its ``(height, width)`` or None.

    ``verify``: ``"none"`` only checks that the file exists; ``"header"`` (default) opens the
    header with PIL, checks the format is one TF can decode (JPEG, PNG, GIF, BMP) and that a
    JPEG/PNG file is not truncated (end marker present); ``"decode"`` fully decodes with PIL.
    A failing file is counted as a skip with its reason. A size different from the annotation's
    ``expected_hw`` is a skip too (boxes would refer to another geometry, e.g. EXIF rotation).
    """
    if verify not in ("none", "header", "decode"):
        raise ValueError(f"verify_images must be 'none', 'header' or 'decode', got {verify!r}.")
    if not os.path.isfile(path):
        report.skip(MISSING_IMAGE, path, "file not found")
        return None
    if verify == "none" and expected_hw is not None:
        return expected_hw

    try:
        with Image.open(path) as im:
            fmt = im.format
            width, height = im.size
            if verify == "decode":
                im.load()
    except Exception as e:
        report.skip("unreadable image file", path, f"{type(e).__name__}: {e}")
        return None
    if verify == "none":  # only reached when the annotation has no size
        return height, width
    if fmt not in ("JPEG", "PNG", "GIF", "BMP"):
        report.skip("unsupported image format", path, f"{fmt}; convert it to JPEG or PNG")
        return None
    if verify == "header" and not _has_end_marker(path, fmt):
        report.skip("truncated image file", path, f"{fmt} end marker missing")
        return None
    if expected_hw is not None and tuple(expected_hw) != (height, width):
        report.skip(
            "image size differs from annotation",
            path,
            f"annotation says {expected_hw[0]}x{expected_hw[1]} (HxW), file is {height}x{width}",
        )
        return None
    return height, width


def _has_end_marker(path: str, fmt: str) -> bool:
    """JPEG ends with FFD9 and PNG with the IEND chunk (trailing padding bytes tolerated)."""
    if fmt not in ("JPEG", "PNG"):
        return True
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1024))
        tail = f.read()
    if fmt == "JPEG":
        return b"\xff\xd9" in tail
    return b"IEND" in tail


def relabel_records(records: Sequence[DetectionRecord], old: LabelMap,
                    new: LabelMap) -> list[DetectionRecord]:
    """Copies of ``records`` whose classes (``1..K`` of ``old``) are renumbered to the class
    of the same name in ``new`` (the same names in another order)."""
    if sorted(old.names) != sorted(new.names):
        raise ValueError(f"relabel_records needs the same class names: {old.names} vs "
                         f"{new.names}.")
    table = np.asarray([0] + [new.from_name(n) for n in old.names], np.int32)
    return [dataclasses.replace(
        r, classes=table[r.classes],
        crowd_classes=None if r.crowd_classes is None else table[r.crowd_classes])
        for r in records]


def _box_polygon(box: np.ndarray) -> list[list[float]]:
    """The box ``[y1, x1, y2, x2]`` as a COCO polygon (the mask of a filled box)."""
    y1, x1, y2, x2 = (float(v) for v in box)
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def _coco_segmentation(segm: Any, box: np.ndarray, height: int, width: int,
                       image_path: str) -> Any:
    """A record's mask source as a COCO segmentation: COCO polygons and RLE as they are, no
    source as the box's polygon (the reader's repair), arrays and PNG files as RLE."""
    if segm is None:
        return _box_polygon(box)
    if isinstance(segm, list | dict):
        return segm
    mask = masks_lib.decode_segmentation(segm, height, width, box, image_path)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def records_to_coco(records: Sequence[DetectionRecord], label_map: LabelMap, *,
                    with_masks: bool = False) -> dict[str, Any]:
    """The COCO ground truth (images, annotations, categories) of records: what every
    evaluation compares against, so the metric sees exactly what the reader kept.

    Boxes become ``[x, y, w, h]`` in original pixels (as the reader kept or repaired them);
    categories carry the label map's dataset ids and names. ``area`` is the record's own
    (COCO's, from the json) or else the box area. Crowd regions become ``iscrowd=1``
    annotations of their class (of every class when the record does not know it: COCO ignores
    a detection only against a crowd region of its own class), and VOC ``difficult`` objects
    become ``iscrowd=1`` too, as the VOC protocol neither rewards nor penalises them.
    ``with_masks`` adds each instance's ``segmentation`` (COCO's own, the box's polygon where
    the reader repaired a mask, RLE for array or PNG masks).
    """
    images, annotations = [], []
    next_id = 1

    def add(record: DetectionRecord, box: np.ndarray, class_id: int, crowd: bool,
            areas: np.ndarray | None, index: int, segm: Any) -> None:
        """One annotation; its area is ``areas[index]`` (the dataset's) when finite, else the
        box's."""
        nonlocal next_id
        y1, x1, y2, x2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        own = None if areas is None else float(areas[index])
        annotation = {
            "id": next_id, "image_id": int(record.image_id),
            "category_id": int(label_map.to_dataset_id(int(class_id))),
            "bbox": [x1, y1, w, h],
            "area": own if own is not None and np.isfinite(own) else w * h,
            "iscrowd": int(crowd),
        }
        if with_masks:
            annotation["segmentation"] = _coco_segmentation(
                segm, box, record.height, record.width, record.image_path)
        annotations.append(annotation)
        next_id += 1

    for record in records:
        images.append({"id": int(record.image_id), "height": int(record.height),
                       "width": int(record.width),
                       "file_name": record.file_name})
        difficult = (np.zeros(len(record.classes), bool) if record.difficult is None
                     else np.asarray(record.difficult, bool))
        segms = record.segmentations or [None] * record.num_instances
        for i, (box, class_id, hard) in enumerate(zip(record.boxes, record.classes, difficult,
                                                      strict=True)):
            add(record, box, int(class_id), bool(hard), record.areas, i, segms[i])
        crowd_segms = record.crowd_segmentations or [None] * len(record.crowd_boxes)
        for i, box in enumerate(record.crowd_boxes):
            classes = (range(1, label_map.num_classes + 1) if record.crowd_classes is None
                       else [int(record.crowd_classes[i])])
            for class_id in classes:
                add(record, box, class_id, True, record.crowd_areas, i, crowd_segms[i])
    categories = [{"id": int(label_map.to_dataset_id(i)), "name": label_map.name(i)}
                  for i in range(1, label_map.num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}
