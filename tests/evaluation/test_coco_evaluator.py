"""COCOEvaluator: our numbers equal pycocotools' COCOeval run directly on the same files."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.evaluation.coco_fixtures import (
    IMAGE_SIZES,
    LABEL_MAP,
    make_detections,
    make_gt_dataset,
)
from tf_rcnn.evaluation.coco_evaluator import COCO_STAT_NAMES, COCOEvaluator


def _direct_cocoeval(gt_file: str, results_file: str, iou_type: str) -> np.ndarray:
    """The reference: pycocotools used exactly as its README shows, on the json files."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
        dt = gt.loadRes(results_file)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.fixture(scope="module")
def gt_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("coco") / "gt.json"
    path.write_text(json.dumps(make_gt_dataset()))
    return str(path)


def _filled_evaluator(gt_file: str, **kwargs) -> COCOEvaluator:
    evaluator = COCOEvaluator(annotation_file=gt_file, label_map=LABEL_MAP, **kwargs)
    for batch in make_detections(np.random.default_rng(7)):
        evaluator.update(batch)
    return evaluator


def test_bbox_and_segm_equal_pycocotools(gt_file, tmp_path):
    evaluator = _filled_evaluator(gt_file, iou_types=("bbox", "segm"))
    metrics = evaluator.evaluate()
    results_file = tmp_path / "detections.json"
    evaluator.write_detections(str(results_file))
    # Every result names its image; pycocotools ignores the extra key: the numbers below, from
    # the written file, equal the evaluator's, which are computed without it.
    written = json.loads(results_file.read_text())
    assert written and all(r["file_name"] == f"{r['image_id']}.png" for r in written)

    expected_bbox = _direct_cocoeval(gt_file, str(results_file), "bbox")
    # Mask AP is evaluated on results without 'bbox' (mask area decides s/m/l, module doc).
    segm_only = [
        {k: v for k, v in r.items() if k != "bbox"} for r in json.loads(results_file.read_text())
    ]
    segm_file = tmp_path / "segm.json"
    segm_file.write_text(json.dumps(segm_only))
    expected_segm = _direct_cocoeval(gt_file, str(segm_file), "segm")

    got_bbox = np.array([metrics[f"bbox/{n}"] for n in COCO_STAT_NAMES])
    got_segm = np.array([metrics[f"segm/{n}"] for n in COCO_STAT_NAMES])
    np.testing.assert_array_equal(got_bbox, expected_bbox[:12])
    np.testing.assert_array_equal(got_segm, expected_segm[:12])
    # The fixture is built so that the numbers are informative, not all 0, 1 or -1.
    assert 0.05 < metrics["bbox/AP"] < 0.95 and 0.05 < metrics["segm/AP"] < 0.95
    assert all(metrics[f"bbox/{n}"] > -1 for n in ("APs", "APm", "APl"))
    # Per-category AP: category 9 has no ground truth -> -1 (undefined), like pycocotools.
    assert metrics["bbox/AP/never"] == -1.0
    assert 0.0 <= metrics["bbox/AP/circle"] <= 1.0 and 0.0 <= metrics["segm/AP/square"] <= 1.0
    # pycocotools' headline AP is the mean of the defined per-category APs.
    np.testing.assert_allclose(
        (metrics["bbox/AP/circle"] + metrics["bbox/AP/square"]) / 2, metrics["bbox/AP"]
    )


def test_results_format_conversion(gt_file):
    """yxyx -> [x, y, w, h], contiguous -> dataset ids, padding skipped, masks as str RLE."""
    evaluator = COCOEvaluator(
        annotation_file=gt_file, iou_types=("bbox", "segm"), label_map=LABEL_MAP
    )
    h, w = IMAGE_SIZES[33]
    masks = np.zeros([2, 3, h, w], np.uint8)
    masks[1, 0, 5:9, 2:12] = 1
    evaluator.update(
        {
            "image_id": np.array([33, 33]),
            "detection_boxes": np.array(
                [
                    [[1, 2, 11, 22], [0, 0, 5, 5], [-1, -1, -1, -1]],
                    [[5, 2, 9, 12], [-1, -1, -1, -1], [-1, -1, -1, -1]],
                ],
                np.float32,
            ),
            "detection_scores": np.array([[0.9, 0.8, 0.0], [0.7, 0.0, 0.0]], np.float32),
            "detection_classes": np.array([[1, 3, 0], [2, 0, 0]], np.int32),
            "num_detections": np.array([2, 1]),
            "detection_masks": masks,
        }
    )
    results = evaluator.results()
    assert len(results) == 3  # 2 + 1 valid rows, padding skipped
    # y1=1, x1=2, y2=11, x2=22 -> x=2, y=1, w=22-2=20, h=11-1=10.
    assert results[0]["bbox"] == [2.0, 1.0, 20.0, 10.0]
    assert [r["category_id"] for r in results] == [3, 9, 7]
    assert results[0]["score"] == pytest.approx(0.9)
    rle = results[2]["segmentation"]
    assert isinstance(rle["counts"], str)
    json.dumps(results)  # JSON-ready
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded, masks[1, 0])


def test_label_map_object_and_identity(gt_file):
    class Mapper:
        def to_dataset_id(self, ids: np.ndarray) -> np.ndarray:
            return np.asarray(ids) * 10

    batch = {
        "image_id": np.array([11]),
        "detection_boxes": np.array([[[0, 0, 10, 10]]], np.float32),
        "detection_scores": np.array([[0.5]], np.float32),
        "detection_classes": np.array([[7]], np.int32),
        "num_detections": np.array([1]),
    }
    ev = COCOEvaluator(annotation_file=gt_file, label_map=Mapper())
    ev.update(batch)
    assert ev.results()[0]["category_id"] == 70
    ev = COCOEvaluator(annotation_file=gt_file)
    ev.update(batch)
    assert ev.results()[0]["category_id"] == 7
    ev = COCOEvaluator(annotation_file=gt_file, label_map={1: 3})
    with pytest.raises(ValueError, match="label_map"):
        ev.update(batch)


def test_fast_eval_gives_the_same_numbers(gt_file):
    pytest.importorskip("faster_coco_eval")
    slow = _filled_evaluator(gt_file, iou_types=("bbox", "segm")).evaluate()
    fast = _filled_evaluator(gt_file, iou_types=("bbox", "segm"), use_fast_eval=True).evaluate()
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-12), key


@pytest.mark.parametrize("use_fast_eval", [False, True])
def test_empty_detections_give_zeros(gt_file, use_fast_eval):
    if use_fast_eval:
        pytest.importorskip("faster_coco_eval")
    ev = COCOEvaluator(
        gt_dataset=make_gt_dataset(), iou_types=("bbox", "segm"), use_fast_eval=use_fast_eval
    )
    # Never updated: every GT image is evaluated with no detections.
    metrics = ev.evaluate()
    for t in ("bbox", "segm"):
        for name in COCO_STAT_NAMES:
            assert metrics[f"{t}/{name}"] == 0.0, (t, name)
    # Updated with all-padding batches: same zeros, no crash.
    ev.update(
        {
            "image_id": np.array([11, 22]),
            "detection_boxes": np.full([2, 3, 4], -1.0, np.float32),
            "detection_scores": np.zeros([2, 3], np.float32),
            "detection_classes": np.zeros([2, 3], np.int32),
            "num_detections": np.zeros([2], np.int32),
            "detection_masks": np.zeros([2, 3, 1, 1], np.uint8),
        }
    )
    assert ev.results() == []
    assert ev.evaluate()["bbox/AP"] == 0.0


def test_only_updated_images_are_evaluated(gt_file, tmp_path):
    """Evaluating part of a split: images never passed to update() do not count as misses."""
    batches = make_detections(np.random.default_rng(7))
    ev = COCOEvaluator(annotation_file=gt_file, label_map=LABEL_MAP)
    ev.update(batches[0])  # image 11 only
    metrics = ev.evaluate()
    results_file = tmp_path / "d.json"
    ev.write_detections(str(results_file))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
        ref = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        ref.params.imgIds = [11]
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    assert metrics["bbox/AP"] == ref.stats[0]


def test_bad_inputs_raise_clear_errors(gt_file):
    with pytest.raises(ValueError, match="exactly one"):
        COCOEvaluator()
    with pytest.raises(ValueError, match="iou_types"):
        COCOEvaluator(annotation_file=gt_file, iou_types=("keypoints",))
    ev = COCOEvaluator(annotation_file=gt_file, iou_types=("bbox", "segm"))
    good = make_detections(np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="detection_masks"):
        ev.update({k: v for k, v in good.items() if k != "detection_masks"})
    with pytest.raises(ValueError, match="original image size"):
        ev.update({**good, "detection_masks": good["detection_masks"][:, :, :10, :10]})
    with pytest.raises(ValueError, match="not in the ground truth"):
        ev.update({**good, "image_id": np.array([999])})
    with pytest.raises(ValueError, match=r"\[B, D, 4\]"):
        ev.update({**good, "detection_boxes": good["detection_boxes"][0]})


def test_roi_masks_are_ignored_for_bbox_only(gt_file):
    """Mask R-CNN outputs box-relative masks; a bbox-only evaluator must not choke on them."""
    batch = make_detections(np.random.default_rng(0))[0]
    batch["detection_masks"] = np.ones([1, batch["detection_boxes"].shape[1], 28, 28])
    ev = COCOEvaluator(annotation_file=gt_file, label_map=LABEL_MAP)
    ev.update(batch)
    assert "segmentation" not in ev.results()[0]
