"""A small synthetic COCO ground truth and matching noisy detections for the evaluator tests.

Four images of different sizes, dataset category ids 3 ("circle") and 7 ("square") plus an
unused id 9 ("never"), objects of all three COCO area ranges, one ``iscrowd`` region (RLE),
polygons and RLE segmentations. Detections are jittered copies of the objects, duplicates and
pure false positives; contiguous classes 1 -> 3, 2 -> 7, 3 -> 9.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

IMAGE_SIZES = {11: (120, 160), 22: (200, 100), 33: (64, 64), 44: (300, 250)}  # id: (H, W)
LABEL_MAP = {1: 3, 2: 7, 3: 9}
CATEGORIES = [
    {"id": 3, "name": "circle"},
    {"id": 7, "name": "square"},
    {"id": 9, "name": "never"},
]


def _shape_mask(h: int, w: int, box_xyxy, kind: str) -> np.ndarray:
    """Full-image binary mask of a filled ellipse ('circle') or rectangle ('square')."""
    x1, y1, x2, y2 = box_xyxy
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    if kind == "square":
        m = (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
    else:
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    return m.astype(np.uint8)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


# (image id, dataset category, xyxy box, iscrowd)
_OBJECTS = [
    (11, 3, (10, 12, 70, 80), 0),  # medium
    (11, 7, (90, 20, 150, 100), 0),  # medium
    (11, 7, (5, 90, 25, 112), 0),  # small
    (22, 3, (8, 10, 92, 150), 0),  # large
    (22, 7, (40, 160, 60, 190), 1),  # crowd
    (33, 3, (4, 4, 20, 22), 0),  # small
    (33, 3, (30, 30, 60, 62), 0),  # small/medium boundary region
    (44, 7, (20, 30, 230, 200), 0),  # large
    (44, 3, (150, 210, 200, 280), 0),  # medium
    (44, 7, (10, 250, 30, 270), 0),  # small
]


def make_gt_dataset() -> dict:
    """The ground truth as a COCO dict; mask area is the annotation area."""
    annotations = []
    for ann_id, (image_id, cat, box, crowd) in enumerate(_OBJECTS, start=1):
        h, w = IMAGE_SIZES[image_id]
        kind = "circle" if cat == 3 else "square"
        mask = _shape_mask(h, w, box, kind)
        x1, y1, x2, y2 = box
        if crowd:
            segmentation = _rle(mask)
        elif kind == "square":
            # A polygon, as most COCO annotations are.
            segmentation = [[x1, y1, x2, y1, x2, y2, x1, y2]]
        else:
            segmentation = _rle(mask)
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(mask_utils.area(mask_utils.encode(np.asfortranarray(mask)))),
                "iscrowd": crowd,
                "segmentation": segmentation,
            }
        )
    images = [
        {"id": i, "height": h, "width": w, "file_name": f"{i}.png"}
        for i, (h, w) in IMAGE_SIZES.items()
    ]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def make_detections(rng: np.random.Generator, max_dets: int = 6) -> list[dict]:
    """One model-output dict (B = 1) per image: yxyx boxes, contiguous classes, full masks."""
    to_contiguous = {v: k for k, v in LABEL_MAP.items()}
    outputs = []
    for image_id, (h, w) in IMAGE_SIZES.items():
        rows = []
        for obj_image, cat, box, _ in _OBJECTS:
            if obj_image != image_id:
                continue
            for _ in range(rng.integers(1, 3)):  # a hit and sometimes a duplicate
                jitter = rng.normal(0.0, 0.08 * (box[2] - box[0]), size=4)
                x1, y1, x2, y2 = np.asarray(box, float) + jitter
                label = to_contiguous[cat] if rng.random() > 0.15 else rng.integers(1, 4)
                rows.append(((y1, x1, y2, x2), rng.random(), label))
        x1, y1 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)  # a false positive
        rows.append(((y1, x1, y1 + h / 3, x1 + w / 3), rng.random() * 0.5, 2))
        rows = rows[:max_dets]
        boxes = np.full([1, max_dets, 4], -1.0, np.float32)
        scores = np.zeros([1, max_dets], np.float32)
        classes = np.zeros([1, max_dets], np.int32)
        masks = np.zeros([1, max_dets, h, w], np.uint8)
        for d, (b, s, c) in enumerate(rows):
            b = np.clip(b, 0, [h, w, h, w])
            boxes[0, d], scores[0, d], classes[0, d] = b, s, c
            kind = "circle" if c == 1 else "square"
            if b[3] - b[1] > 1 and b[2] - b[0] > 1:
                masks[0, d] = _shape_mask(h, w, (b[1], b[0], b[3], b[2]), kind)
        outputs.append(
            {
                "image_id": np.array([image_id]),
                "detection_boxes": boxes,
                "detection_scores": scores,
                "detection_classes": classes,
                "num_detections": np.array([len(rows)], np.int32),
                "detection_masks": masks,
            }
        )
    return outputs
