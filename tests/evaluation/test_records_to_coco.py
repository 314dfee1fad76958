"""COCO metrics on records without a COCO json (VOC / custom data) via records_to_coco."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.evaluation.coco_fixtures import IMAGE_SIZES, make_detections, make_gt_dataset
from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.records import DetectionRecord, records_to_coco
from tf_rcnn.evaluation.coco_evaluator import COCO_STAT_NAMES, COCOEvaluator
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


def _pycocotools(gt_file: str, results: list[dict], iou_type: str) -> np.ndarray:
    """pycocotools run directly on the json file, as its README shows."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:12]


def test_reader_records_of_a_clean_json_give_pycocotools_numbers(tmp_path):
    # The fixture: areas from the masks (not the boxes), polygons and RLE, one crowd region,
    # a category without ground truth. Read through the reader (images written beside it),
    # the records' ground truth must score exactly as the json itself does.
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(make_gt_dataset()))
    for image_id, (h, w) in IMAGE_SIZES.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / f"{image_id}.png")
    records, label_map, report = load_coco(str(gt_file), str(tmp_path))
    assert not report.skipped and not report.repaired
    ground_truth = records_to_coco(records, label_map, with_masks=True)
    assert len(ground_truth["annotations"]) == len(make_gt_dataset()["annotations"])  # 10
    evaluator = COCOEvaluator(gt_dataset=ground_truth, iou_types=("bbox", "segm"),
                              label_map=label_map)
    for batch in make_detections(np.random.default_rng(7)):
        evaluator.update(batch)
    metrics = evaluator.evaluate()
    results = evaluator.results()
    for r in results:
        del r["file_name"]
    np.testing.assert_array_equal([metrics[f"bbox/{n}"] for n in COCO_STAT_NAMES],
                                  _pycocotools(str(gt_file), results, "bbox"))
    masks_only = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    np.testing.assert_array_equal([metrics[f"segm/{n}"] for n in COCO_STAT_NAMES],
                                  _pycocotools(str(gt_file), masks_only, "segm"))
    assert 0.05 < metrics["bbox/AP"] < 0.95  # informative numbers, not all 0 or 1


def test_repaired_masks_and_crowd_classes_reach_the_ground_truth():
    record = DetectionRecord(
        image_path="a.png", image_id=1, height=20, width=20,
        boxes=np.array([[2, 3, 8, 9]], np.float32), classes=np.array([2], np.int32),
        segmentations=[None],  # the reader repaired a bad mask: the filled box
        areas=np.array([np.nan], np.float32),
        crowd_boxes=np.array([[0, 0, 10, 10]], np.float32), crowd_classes=np.array([1]),
        crowd_areas=np.array([42.0], np.float32), crowd_segmentations=[None])
    label_map = LabelMap(dataset_ids=[7, 11], names=["cat", "dog"])
    gt = records_to_coco([record], label_map, with_masks=True)
    instance, crowd = gt["annotations"]
    # Box [y1, x1, y2, x2] = [2, 3, 8, 9]: x 3..9, y 2..8 -> polygon corners, area 6 * 6.
    assert instance["segmentation"] == [[3.0, 2.0, 9.0, 2.0, 9.0, 8.0, 3.0, 8.0]]
    assert instance["area"] == 36.0 and instance["category_id"] == 11
    # The crowd region keeps its own class (cat, id 7) and area: one annotation, not one per
    # class.
    assert crowd["iscrowd"] == 1 and crowd["category_id"] == 7 and crowd["area"] == 42.0


def test_array_masks_of_custom_records_become_rle_of_the_same_pixels():
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 1  # 3 rows x 6 columns = 18 pixels
    record = DetectionRecord(image_path="m.png", image_id=5, height=10, width=12,
                             boxes=np.array([[2, 3, 5, 9]], np.float32),
                             classes=np.array([1], np.int32), segmentations=[mask])
    (annotation,) = records_to_coco([record], LabelMap([1], ["thing"]),
                                    with_masks=True)["annotations"]
    decoded = mask_utils.decode({"size": annotation["segmentation"]["size"],
                                 "counts": annotation["segmentation"]["counts"].encode()})
    np.testing.assert_array_equal(decoded, mask)
    assert annotation["area"] == 18.0  # the box area (3 x 6) as no area was given
