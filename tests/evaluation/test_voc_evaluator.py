"""VOCEvaluator: hand-computed VOC devkit cases (precision/recall arithmetic in comments)."""

from __future__ import annotations

import numpy as np
import pytest

from tf_rcnn.evaluation.voc_evaluator import VOCEvaluator, voc_ap


def _batch(image_id, rows, D=8):
    """One-image detection dict from rows of (y1, x1, y2, x2, score, class)."""
    boxes = np.full([1, D, 4], -1.0, np.float32)
    scores = np.zeros([1, D], np.float32)
    classes = np.zeros([1, D], np.int32)
    for d, (y1, x1, y2, x2, s, c) in enumerate(rows):
        boxes[0, d], scores[0, d], classes[0, d] = (y1, x1, y2, x2), s, c
    return {
        "image_id": np.array([image_id]),
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": classes,
        "num_detections": np.array([len(rows)]),
    }


def _hand_case(use_07_metric: bool) -> VOCEvaluator:
    ev = VOCEvaluator(["cat", "dog", "bird"], use_07_metric=use_07_metric, use_plus_one=False)
    # Image 1: cats A, B and a difficult cat C. Image 2: cat D and dog E. No bird anywhere.
    ev.add_ground_truth(
        1,
        boxes=[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
        classes=[1, 1, 1],
        difficult=[False, False, True],
    )
    ev.add_ground_truth(
        2, boxes=[[0, 0, 10, 10], [0, 0, 10, 10], [-1, -1, -1, -1]], classes=[1, 2, -1]
    )  # last row is padding
    # Image 1 and image 2 detections are added in two batches; scores interleave across them.
    ev.update(
        _batch(
            1,
            [
                (0, 0, 10, 10, 0.9, 1),  # d1 -> A: IoU 1, TP
                (0, 0, 10, 10, 0.8, 1),  # d2 -> A again: duplicate, FP
                (40, 40, 50, 50, 0.7, 1),  # d3 -> C difficult: neither TP nor FP
                (20, 20, 30, 25, 0.4, 1),  # d6 -> B: IoU 50/100 = 0.5 >= 0.5, TP
                (0, 0, 5, 5, 0.99, 3),  # a bird, no bird GT
            ],
        )
    )
    ev.update(
        _batch(
            2,
            [
                (0, 0, 10, 9, 0.6, 1),  # d4 -> D: IoU 90/100 = 0.9, TP
                (50, 50, 60, 60, 0.5, 1),  # d5 -> nothing: FP
            ],
        )
    )
    return ev


def test_hand_computed_voc07_and_area():
    # Cat, npos = 3 (A, B, D; C is difficult). In score order, with d3 dropped:
    #   d1 TP: R = 1/3, P = 1/1
    #   d2 FP: R = 1/3, P = 1/2
    #   d4 TP: R = 2/3, P = 2/3
    #   d5 FP: R = 2/3, P = 2/4
    #   d6 TP: R = 3/3, P = 3/5
    # VOC07: t = 0, .1, .2, .3 -> max P = 1; t = .4, .5, .6 -> max(2/3, 1/2, 3/5) = 2/3;
    #        t = .7, .8, .9, 1 -> 3/5.  AP = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4 / 11.
    # Area: envelope P over R steps 0 -> 1/3 -> 2/3 -> 1 is 1, 2/3, 3/5:
    #        AP = (1 + 2/3 + 3/5) / 3 = 34/45.
    # Dog: one GT, no detection -> AP 0. Bird: no GT -> -1, left out of the mean.
    m07 = _hand_case(use_07_metric=True).evaluate()
    assert m07["voc/AP/cat"] == pytest.approx(8.4 / 11)
    assert m07["voc/AP/dog"] == 0.0
    assert m07["voc/AP/bird"] == -1.0
    assert m07["voc/mAP_07"] == pytest.approx((8.4 / 11 + 0) / 2)
    assert m07["voc/mAP_area"] == pytest.approx((34 / 45 + 0) / 2)
    assert m07["voc/mAP"] == m07["voc/mAP_07"]
    marea = _hand_case(use_07_metric=False).evaluate()
    assert marea["voc/AP/cat"] == pytest.approx(34 / 45)
    assert marea["voc/mAP"] == marea["voc/mAP_area"] == m07["voc/mAP_area"]


def test_difficult_does_not_count_in_npos_nor_as_fp():
    # One normal and one difficult GT; detecting only the normal one is perfect recall.
    ev = VOCEvaluator(["cat"], use_plus_one=False)
    ev.add_ground_truth(0, [[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True])
    ev.update(_batch(0, [(20, 20, 30, 30, 0.9, 1), (0, 0, 10, 10, 0.8, 1)]))
    # The 0.9 detection hits the difficult box and is dropped; 0.8 is TP: R = 1, P = 1.
    assert ev.evaluate()["voc/AP/cat"] == pytest.approx(1.0)
    # Had the difficult box counted as a plain GT: R = 1/2, P = 1 at both, AP07 = 6/11.
    ev2 = VOCEvaluator(["cat"], use_plus_one=False)
    ev2.add_ground_truth(0, [[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])
    ev2.update(_batch(0, [(0, 0, 10, 10, 0.8, 1)]))
    assert ev2.evaluate()["voc/AP/cat"] == pytest.approx(6 / 11)


def test_best_overlap_already_matched_is_a_false_positive():
    # GT X = [0,0,10,10], Y = [0,5,10,15]. det1 = X exactly (TP). det2 = [0,2,10,12]:
    #   IoU(det2, X) = 80 / (100 + 100 - 80) = 0.667, IoU(det2, Y) = 70 / 130 = 0.538.
    # The devkit takes the best overlap, X, already matched -> FP, although Y is free.
    # Curve: (R 1/2, P 1), (R 1/2, P 1/2): AP07 = 6 thresholds (0..0.5) * 1 / 11 = 6/11.
    ev = VOCEvaluator(["cat"], use_plus_one=False)
    ev.add_ground_truth(0, [[0, 0, 10, 10], [0, 5, 10, 15]], [1, 1])
    ev.update(_batch(0, [(0, 0, 10, 10, 0.9, 1), (0, 2, 10, 12, 0.8, 1)]))
    assert ev.evaluate()["voc/AP/cat"] == pytest.approx(6 / 11)


def test_plus_one_pixel_convention():
    # Inclusive pixels: det [0,0,9,9] is 10x10 = 100 px, GT [0,0,9,4] is 10x5 = 50 px, all
    # inside the det: IoU = 50/100 = 0.5 -> TP.  Without +1: 36 / 81 = 0.444 -> FP.
    results = {}
    for plus_one in (True, False):
        ev = VOCEvaluator(["cat"], use_plus_one=plus_one)
        ev.add_ground_truth(0, [[0, 0, 9, 4]], [1])
        ev.update(_batch(0, [(0, 0, 9, 9, 0.9, 1)]))
        results[plus_one] = ev.evaluate()["voc/AP/cat"]
    assert results == {True: pytest.approx(1.0), False: 0.0}


def test_eleven_point_thresholds_include_exact_recall():
    # 10 GT boxes, 3 found with precision 1: recall is exactly 3/10, which counts for t = 0.3:
    # AP07 = (t = 0, .1, .2, .3) 4 * 1 / 11 (0.1 * 3 = 0.30000000000000004 would give 3/11).
    ev = VOCEvaluator(["cat"])
    gt = [[0, 10 * i, 5, 10 * i + 5] for i in range(10)]
    ev.add_ground_truth(0, gt, [1] * 10)
    ev.update(_batch(0, [(*gt[i], 0.9, 1) for i in range(3)]))
    assert ev.evaluate()["voc/AP/cat"] == pytest.approx(4 / 11)


def test_voc_ap_curves():
    # Empty curve -> 0 for both; a single perfect point -> 1 for both.
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0
    assert voc_ap(np.array([1.0]), np.array([1.0]), True) == pytest.approx(1.0)
    assert voc_ap(np.array([1.0]), np.array([1.0]), False) == pytest.approx(1.0)
    # Recall 0.5 at P = 0.5, then 1.0 at P = 1.0: envelope is 1 everywhere -> area 1.
    assert voc_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0]), False) == pytest.approx(1.0)


def test_no_detections_and_errors():
    ev = VOCEvaluator({1: "cat", 2: "dog"})
    ev.add_ground_truth(0, np.zeros([0, 4]), np.zeros([0], np.int32))  # an image without objects
    ev.add_ground_truth(1, [[0, 0, 10, 10]], [2])
    m = ev.evaluate()
    assert m["voc/AP/dog"] == 0.0 and m["voc/AP/cat"] == -1.0 and m["voc/mAP"] == 0.0
    ev.update(_batch(5, [(0, 0, 1, 1, 0.5, 1)]))
    with pytest.raises(ValueError, match="add_ground_truth"):
        ev.evaluate()
    with pytest.raises(ValueError, match="class_names"):
        ev.add_ground_truth(2, [[0, 0, 1, 1]], [9])
    with pytest.raises(ValueError, match="class_names"):
        VOCEvaluator([])


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_matches_scalar_devkit_reference_on_random_data(use_07_metric):
    from tests.evaluation.voc_reference import reference_ap

    rng = np.random.default_rng(3)
    K = 3
    ev = VOCEvaluator([f"c{k}" for k in range(1, K + 1)], use_07_metric=use_07_metric)
    gt_ref = {k: {} for k in range(1, K + 1)}
    det_ref = {k: [] for k in range(1, K + 1)}
    for image_id in range(12):
        m = int(rng.integers(0, 6))
        xy = rng.integers(0, 60, size=[m, 2])
        wh = rng.integers(4, 40, size=[m, 2])
        gt_xyxy = np.concatenate([xy, xy + wh], axis=1)
        classes = rng.integers(1, K + 1, size=m)
        difficult = rng.random(m) < 0.2
        ev.add_ground_truth(image_id, gt_xyxy[:, [1, 0, 3, 2]], classes, difficult)
        for k in range(1, K + 1):
            gt_ref[k][image_id] = [
                (*map(int, gt_xyxy[j]), bool(difficult[j])) for j in range(m) if classes[j] == k
            ]
        # Detections: jittered GT (hits, duplicates, misses) and random boxes; scores with ties.
        src = gt_xyxy[rng.integers(0, m, size=2 * m)] if m else np.zeros([0, 4], int)
        rand_xy = rng.integers(0, 60, size=[3, 2])
        rand = np.concatenate([rand_xy, rand_xy + rng.integers(4, 40, size=[3, 2])], axis=1)
        boxes = np.concatenate([src + rng.integers(-4, 5, size=src.shape), rand])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        det_classes = rng.integers(1, K + 1, size=len(boxes))
        scores = np.round(rng.random(len(boxes)), 1)
        ev.update(
            _batch(
                image_id,
                [(*boxes[d, [1, 0, 3, 2]], scores[d], det_classes[d]) for d in range(len(boxes))],
                D=len(boxes) + 1,
            )
        )
        for d in range(len(boxes)):
            det_ref[int(det_classes[d])].append((image_id, scores[d], *map(int, boxes[d])))
    m = ev.evaluate()
    aps = []
    for k in range(1, K + 1):
        ref = reference_ap(gt_ref[k], det_ref[k], use_07_metric)
        assert ref is not None
        aps.append(ref)
        assert m[f"voc/AP/c{k}"] == pytest.approx(ref, abs=1e-12), k
    assert m["voc/mAP"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert 0.05 < m["voc/mAP"] < 0.95  # an informative case, not all hits or all misses


def test_only_updated_images_count():
    # GT registered for images 0 and 1, detections only for image 0 (a perfect hit):
    # image 1's box is not part of this evaluation, so recall is 1/1 and AP 1, not 6/11.
    ev = VOCEvaluator(["cat"], use_plus_one=False)
    ev.add_ground_truth(0, [[0, 0, 10, 10]], [1])
    ev.add_ground_truth(1, [[0, 0, 10, 10]], [1])
    ev.update(_batch(0, [(0, 0, 10, 10, 0.9, 1)]))
    assert ev.evaluate()["voc/AP/cat"] == pytest.approx(1.0)
    # An image passed with zero detections does count: recall 1/2, AP07 = 6/11.
    ev.update(_batch(1, []))
    assert ev.evaluate()["voc/AP/cat"] == pytest.approx(6 / 11)
