"""COCO metrics on records without a COCO json (VOC / custom data) via records_to_coco."""

import numpy as np
import pytest

from tf_rcnn.data.records import DetectionRecord, records_to_coco
from tf_rcnn.evaluation.coco_evaluator import COCOEvaluator
from tf_rcnn.label_map import LabelMap


def _records():
    return [
        DetectionRecord(image_path="a.jpg", image_id=3, height=100, width=120,
                        boxes=np.array([[10, 20, 50, 60], [60, 60, 90, 110]], np.float32),
                        classes=np.array([1, 2], np.int32),
                        difficult=np.array([False, True])),
        DetectionRecord(image_path="b.jpg", image_id=9, height=80, width=80,
                        boxes=np.array([[5, 5, 40, 40]], np.float32),
                        classes=np.array([2], np.int32)),
    ]


def test_records_to_coco_fields():
    label_map = LabelMap(dataset_ids=[7, 11], names=["cat", "dog"])
    gt = records_to_coco(_records(), label_map)
    assert [c["id"] for c in gt["categories"]] == [7, 11]
    first = gt["annotations"][0]
    # [y1, x1, y2, x2] = [10, 20, 50, 60] -> [x, y, w, h] = [20, 10, 40, 40], area 1600.
    assert first["bbox"] == [20.0, 10.0, 40.0, 40.0] and first["area"] == 1600.0
    assert first["category_id"] == 7 and first["iscrowd"] == 0
    assert gt["annotations"][1]["iscrowd"] == 1  # difficult -> ignored region


@pytest.mark.parametrize("with_difficult_detection", [False, True])
def test_perfect_detections_score_one_and_difficult_is_neutral(with_difficult_detection):
    label_map = LabelMap(dataset_ids=[7, 11], names=["cat", "dog"])
    evaluator = COCOEvaluator(gt_dataset=records_to_coco(_records(), label_map),
                              label_map=label_map)
    boxes = np.zeros([2, 2, 4], np.float32)
    boxes[0, 0] = [10, 20, 50, 60]
    boxes[0, 1] = [60, 60, 90, 110]
    boxes[1, 0] = [5, 5, 40, 40]
    evaluator.update({
        "image_id": np.array([3, 9]),
        "detection_boxes": boxes,
        "detection_scores": np.array([[0.9, 0.8], [0.95, 0.0]], np.float32),
        "detection_classes": np.array([[1, 2], [2, 0]], np.int32),
        "num_detections": np.array([2 if with_difficult_detection else 1, 1]),
    })
    metrics = evaluator.evaluate()
    assert metrics["bbox/AP50"] == pytest.approx(1.0)
    assert metrics["bbox/AP"] == pytest.approx(1.0)
