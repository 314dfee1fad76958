"""Soft-NMS (Bodla et al., ICCV 2017, Algorithm 1): hand cases, a NumPy reference written from
the paper, per-class behaviour of ``multiclass_nms``, padding, and the hard default untouched."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_rcnn.ops import nms as nms_ops


def reference_soft_nms(boxes: np.ndarray, scores: np.ndarray, method: str, nt: float,
                       sigma: float, min_score: float, max_out: int
                       ) -> tuple[list[int], list[float]]:
    """Algorithm 1 of the paper, literally: B = candidate set, S = its scores, D = selected.

    while B not empty: m = argmax S; M = b_m; D <- D + M; B <- B - M;
        for b_i in B: s_i <- s_i * f(iou(M, b_i))
    f = 1 - iou if iou >= Nt else 1 (linear); exp(-iou^2 / sigma) (Gaussian).
    Selections whose score is <= min_score are not kept (the usual final threshold); since
    scores only decrease, once the best is <= min_score every later one is too.
    """
    remaining = list(range(len(scores)))
    s = scores.astype(np.float64).copy()
    kept, kept_scores = [], []
    while remaining and len(kept) < max_out:
        m = remaining[int(np.argmax(s[remaining]))]
        if s[m] <= min_score:
            break
        kept.append(m)
        kept_scores.append(float(s[m]))
        remaining.remove(m)
        for i in remaining:
            overlap = _iou(boxes[m], boxes[i])
            if method == "linear":
                s[i] *= (1.0 - overlap) if overlap >= nt else 1.0
            else:
                s[i] *= np.exp(-overlap * overlap / sigma)
    return kept, kept_scores


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _run(boxes, scores, max_out, **kwargs):
    result = nms_ops.soft_nms(tf.constant([boxes], tf.float32), tf.constant([scores], tf.float32),
                              max_out, **kwargs)
    n = int(result.num_valid[0])
    return result.indices[0].numpy(), result.scores[0].numpy(), n


# Three boxes [y1, x1, y2, x2]: A = [0, 0, 10, 10] (area 100), B = [0, 5, 10, 15] shifted by
# half its width, C = [0, 2, 10, 12] shifted by 2, D far away.
#   iou(A, B) = 50 / (100 + 100 - 50) = 1/3;  iou(A, C) = 80 / 120 = 2/3;
#   iou(B, C) = 70 / 130 = 7/13.
A, B, C, D = [0, 0, 10, 10], [0, 5, 10, 15], [0, 2, 10, 12], [50, 50, 60, 60]


def test_linear_hand_case():
    # Scores A 0.9, C 0.8, B 0.7, D 0.6; Nt = 0.5.
    # Step 1: select A (0.9). C: iou 2/3 >= 0.5 -> 0.8 * (1 - 2/3) = 0.266667.
    #         B: iou 1/3 < 0.5 -> unchanged 0.7. D: iou 0 -> 0.6.
    # Step 2: select B (0.7). C: iou 7/13 >= 0.5 -> 0.266667 * 6/13 = 0.123077. D unchanged.
    # Step 3: select D (0.6). Step 4: select C (0.123077).
    indices, scores, n = _run([A, C, B, D], [0.9, 0.8, 0.7, 0.6], 4, method="linear",
                              iou_threshold=0.5)
    assert n == 4
    np.testing.assert_array_equal(indices, [0, 2, 3, 1])
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6, 0.8 / 3 * 6 / 13], rtol=1e-6)


def test_gaussian_hand_case():
    # sigma 0.5: f(iou) = exp(-2 iou^2). Scores A 0.9, C 0.8, B 0.7.
    # Step 1: select A. C: 0.8 * exp(-2 * 4/9) = 0.8 * 0.411112 = 0.328890.
    #         B: 0.7 * exp(-2 * 1/9) = 0.7 * 0.800737 = 0.560516.
    # Step 2: select B (0.560516). C: 0.328890 * exp(-2 * 49/169) = 0.328890 * 0.559965
    #         = 0.184167.
    # Step 3: select C (0.184167).
    indices, scores, n = _run([A, C, B], [0.9, 0.8, 0.7], 3, method="gaussian", sigma=0.5)
    assert n == 3
    np.testing.assert_array_equal(indices, [0, 2, 1])
    expected_b = 0.7 * np.exp(-2 / 9)
    expected_c = 0.8 * np.exp(-8 / 9) * np.exp(-98 / 169)
    np.testing.assert_allclose(scores, [0.9, expected_b, expected_c], rtol=1e-6)
    np.testing.assert_allclose([expected_b, expected_c], [0.560516, 0.184167], atol=1e-6)


def test_min_score_drops_decayed_boxes_and_pads():
    # Two identical boxes: linear with iou 1 >= Nt decays the second to 0.8 * (1 - 1) = 0
    # <= min_score 0.001, so it is dropped: one detection, rows 1-2 padded (-1, 0, zero box).
    result = nms_ops.soft_nms(tf.constant([[A, A]], tf.float32), tf.constant([[0.9, 0.8]]), 3,
                              method="linear", iou_threshold=0.3, min_score=0.001)
    assert int(result.num_valid[0]) == 1
    np.testing.assert_array_equal(result.indices[0], [0, -1, -1])
    np.testing.assert_allclose(result.scores[0], [0.9, 0.0, 0.0])
    np.testing.assert_array_equal(result.boxes[0, 1:], 0.0)
    # Gaussian: 0.8 * exp(-1 / 0.5) = 0.108268 survives a floor of 0.1, not one of 0.11.
    for floor, count in ((0.1, 2), (0.11, 1)):
        _, _, n = _run([A, A], [0.9, 0.8], 3, method="gaussian", sigma=0.5, min_score=floor)
        assert n == count


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_random_cases_equal_the_reference(method):
    rng = np.random.default_rng(7)
    batch, n, max_out = 3, 40, 25
    yx = rng.uniform(0, 40, size=(batch, n, 2))
    hw = rng.uniform(4, 30, size=(batch, n, 2))
    boxes = np.concatenate([yx, yx + hw], axis=-1).astype(np.float32)
    scores = rng.uniform(0.0, 1.0, size=(batch, n)).astype(np.float32)
    scores[0, :5] = 0.0  # below the entry threshold
    result = nms_ops.soft_nms(boxes, scores, max_out, method=method, iou_threshold=0.4,
                              sigma=0.5, score_threshold=0.05, min_score=0.01)
    for b in range(batch):
        candidates = np.flatnonzero(scores[b] > 0.05)
        kept, kept_scores = reference_soft_nms(boxes[b, candidates], scores[b, candidates],
                                               method, 0.4, 0.5, 0.01, max_out)
        count = int(result.num_valid[b])
        assert count == len(kept)
        np.testing.assert_array_equal(result.indices[b, :count], candidates[kept])
        np.testing.assert_allclose(result.scores[b, :count], kept_scores, atol=1e-5)
        assert np.all(result.indices[b, count:] == -1)
        np.testing.assert_array_equal(result.boxes[b, :count], boxes[b, candidates[kept]])


def test_multiclass_soft_nms_is_per_class():
    # Box 0 scores 0.9 for class 1 and 0.8 for class 2; box 1 (iou 2/3 with box 0) scores 0.7
    # for class 1 and 0.05 (below the 0.05 threshold: never a candidate) for class 2.
    # Class 1, linear Nt 0.5: box 0 (0.9), then box 1 at 0.7 * (1 - 2/3) = 0.233333.
    # Class 2: box 0 (0.8) alone; a class-1 selection never decays a class-2 score.
    # Top over classes: 0.9 (c1), 0.8 (c2), 0.233333 (c1).
    boxes = tf.constant([[[A], [C]]], tf.float32)  # [1, 2, 1, 4] shared over classes
    scores = tf.constant([[[0.9, 0.8], [0.7, 0.05]]], tf.float32)  # [1, 2, K=2]
    out = nms_ops.multiclass_nms(boxes, scores, max_per_class=5, max_total=4,
                                 iou_threshold=0.5, score_threshold=0.05, method="linear")
    assert int(out.num_valid[0]) == 3
    np.testing.assert_allclose(out.scores[0], [0.9, 0.8, 0.7 / 3, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(out.classes[0], [1, 2, 1, 0])
    np.testing.assert_array_equal(out.boxes[0].numpy(), [A, A, C, [0, 0, 0, 0]])


def test_multiclass_soft_nms_matches_reference_per_class_and_caps():
    rng = np.random.default_rng(3)
    batch, n, k = 2, 30, 3
    yx = rng.uniform(0, 30, size=(batch, n, k, 2))
    boxes = np.concatenate([yx, yx + rng.uniform(5, 25, size=(batch, n, k, 2))], -1)
    boxes = boxes.astype(np.float32)  # class-specific boxes [B, N, K, 4]
    scores = rng.uniform(0, 1, size=(batch, n, k)).astype(np.float32)
    max_per_class, max_total = 8, 12
    out = nms_ops.multiclass_nms(boxes, scores, max_per_class, max_total, iou_threshold=0.5,
                                 score_threshold=0.3, method="gaussian", soft_nms_sigma=0.5,
                                 soft_nms_min_score=0.001)
    for b in range(batch):
        rows = []
        for c in range(k):
            cand = np.flatnonzero(scores[b, :, c] > 0.3)
            kept, kept_scores = reference_soft_nms(boxes[b, cand, c], scores[b, cand, c],
                                                   "gaussian", 0.5, 0.5, 0.001, max_per_class)
            rows += [(-s, c, r, cand[i]) for r, (i, s) in enumerate(zip(kept, kept_scores,
                                                                         strict=True))]
        rows.sort()
        rows = rows[:max_total]
        assert int(out.num_valid[b]) == len(rows) == max_total
        np.testing.assert_allclose(out.scores[b], [-r[0] for r in rows], atol=1e-5)
        np.testing.assert_array_equal(out.classes[b], [r[1] + 1 for r in rows])
        np.testing.assert_array_equal(out.boxes[b], [boxes[b, r[3], r[1]] for r in rows])


def test_hard_default_unchanged_and_bad_settings_name_the_flag():
    rng = np.random.default_rng(0)
    yx = rng.uniform(0, 30, size=(2, 20, 1, 2))
    boxes = np.concatenate([yx, yx + 10], -1).astype(np.float32)
    scores = rng.uniform(0, 1, size=(2, 20, 3)).astype(np.float32)
    default = nms_ops.multiclass_nms(boxes, scores, 10, 15)
    hard = nms_ops.multiclass_nms(boxes, scores, 10, 15, method="hard")
    direct = tf.image.combined_non_max_suppression(
        boxes, scores, 10, 15, iou_threshold=0.5, score_threshold=0.05, clip_boxes=False)
    for a, b in zip(default, hard, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(default.scores, direct.nmsed_scores)
    np.testing.assert_array_equal(default.boxes, direct.nmsed_boxes)
    with pytest.raises(ValueError, match="--config.model.roi_head.nms_method"):
        nms_ops.multiclass_nms(boxes, scores, 10, 15, method="soft")
    with pytest.raises(ValueError, match="--config.model.roi_head.soft_nms_sigma"):
        nms_ops.multiclass_nms(boxes, scores, 10, 15, method="gaussian", soft_nms_sigma=0.0)
    with pytest.raises(ValueError, match="--config.model.roi_head.soft_nms_min_score"):
        nms_ops.multiclass_nms(boxes, scores, 10, 15, method="linear", soft_nms_min_score=-1)
    # Hard NMS does not read the Soft-NMS settings: a value it ignores is no error.
    unused = nms_ops.multiclass_nms(boxes, scores, 10, 15, method="hard", soft_nms_sigma=0.0)
    np.testing.assert_array_equal(unused.scores, hard.scores)


def test_runs_in_a_tf_function_with_unknown_sizes():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4]),
                                  tf.TensorSpec([None, None, None])])
    def decode(boxes, scores):
        return nms_ops.multiclass_nms(boxes, scores, 4, 6, method="gaussian")

    out = decode(tf.constant([[[A], [C], [D]]], tf.float32),
                 tf.constant([[[0.9], [0.8], [0.7]]], tf.float32))
    assert out.boxes.shape == (1, 6, 4)
    assert int(out.num_valid[0]) == 3
    # No box at all: every row padding.
    empty = decode(tf.zeros([2, 0, 1, 4]), tf.zeros([2, 0, 3]))
    np.testing.assert_array_equal(empty.num_valid, [0, 0])
