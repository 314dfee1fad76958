"""Tests for tf_rcnn.ops.nms against a NumPy greedy-NMS reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.reference import numpy_boxes as ref
from tf_rcnn.ops import nms


def _random_boxes(rng, b, n, extent=200.0):
    ctr = rng.uniform(0, extent, (b, n, 2))
    hw = rng.uniform(5, 60, (b, n, 2))
    return np.concatenate([ctr - hw / 2, ctr + hw / 2], -1).astype(np.float32)


def test_batched_nms_hand_case():
    boxes = tf.constant([[[0, 0, 10, 10],     # score 0.9: kept first
                          [0, 1, 10, 11],     # IoU with box 0 = 90 / 110 = 0.82 > 0.7: dropped
                          [0, 5, 10, 15],     # IoU with box 0 = 50 / 150 = 0.33: kept
                          [50, 50, 60, 60]]], tf.float32)  # score -inf: masked, never kept
    scores = tf.constant([[0.9, 0.8, 0.7, float("-inf")]])
    out = nms.batched_nms(boxes, scores, max_output_size=3, iou_threshold=0.7)
    np.testing.assert_array_equal(out.indices.numpy(), [[0, 2, -1]])
    np.testing.assert_array_equal(out.num_valid.numpy(), [2])
    np.testing.assert_allclose(out.scores.numpy(), [[0.9, 0.7, 0.0]])
    np.testing.assert_allclose(out.boxes.numpy()[0, :2], [[0, 0, 10, 10], [0, 5, 10, 15]])
    np.testing.assert_allclose(out.boxes.numpy()[0, 2], 0.0)


@pytest.mark.parametrize("pre_nms_top_n", [None, 60])
def test_batched_nms_matches_reference(rng, pre_nms_top_n):
    b, n, k = 2, 150, 40
    boxes = _random_boxes(rng, b, n)
    scores = rng.uniform(size=(b, n)).astype(np.float32)
    scores[0, 10:20] = scores[0, 5]  # ties: stable order (lower index first)
    scores[1, 100:] = -np.inf  # image 1 has fewer candidates
    out = nms.batched_nms(boxes, scores, k, 0.5, pre_nms_top_n=pre_nms_top_n)
    for i in range(b):
        cand = np.arange(n)
        if pre_nms_top_n is not None:
            cand = np.array(sorted(range(n), key=lambda j, i=i: (-scores[i, j], j))[:pre_nms_top_n])
        kept = cand[ref.greedy_nms(boxes[i, cand], scores[i, cand], 0.5, k)]
        nv = int(out.num_valid[i])
        assert nv == len(kept)
        np.testing.assert_array_equal(out.indices[i, :nv], kept)
        np.testing.assert_array_equal(out.indices[i, nv:], -1)
        np.testing.assert_allclose(out.boxes[i, :nv], boxes[i, kept])
        np.testing.assert_allclose(out.scores[i, :nv], scores[i, kept])
    assert np.isfinite(out.scores.numpy()).all()


def test_batched_nms_score_threshold_and_all_masked():
    boxes = tf.constant([[[0, 0, 10, 10], [20, 20, 30, 30]],
                         [[0, 0, 10, 10], [20, 20, 30, 30]]], tf.float32)
    scores = tf.constant([[0.9, 0.2], [float("-inf"), float("-inf")]])
    out = nms.batched_nms(boxes, scores, 4, score_threshold=0.5)
    np.testing.assert_array_equal(out.num_valid.numpy(), [1, 0])
    np.testing.assert_array_equal(out.indices.numpy(), [[0, -1, -1, -1], [-1] * 4])
    np.testing.assert_array_equal(out.scores.numpy()[1], 0.0)


def test_batched_nms_empty_and_dynamic_in_tf_function():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None])])
    def fn(boxes, scores):
        return nms.batched_nms(boxes, scores, 5, 0.7, pre_nms_top_n=3)

    out = fn(tf.zeros([2, 0, 4]), tf.zeros([2, 0]))
    assert out.indices.shape == (2, 5) and out.boxes.shape == (2, 5, 4)
    np.testing.assert_array_equal(out.num_valid.numpy(), [0, 0])
    np.testing.assert_array_equal(out.indices.numpy(), -1)
    out = fn(tf.constant([[[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10], [20, 20, 21, 21]]],
                         tf.float32), tf.constant([[0.1, 0.4, 0.3, 0.2]]))
    # pre_nms_top_n = 3 keeps indices 1, 2, 3 (scores 0.4, 0.3, 0.2); none overlap.
    np.testing.assert_array_equal(out.indices.numpy(), [[1, 2, 3, -1, -1]])


def test_batched_nms_bad_arguments():
    with pytest.raises(ValueError, match="max_output_size"):
        nms.batched_nms(tf.zeros([1, 2, 4]), tf.zeros([1, 2]), 0)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms.batched_nms(tf.zeros([1, 2, 4]), tf.zeros([1, 2]), 2, iou_threshold=1.5)
    with pytest.raises(ValueError, match=r"\[B, N, 4\]"):
        nms.batched_nms(tf.zeros([2, 4]), tf.zeros([2]), 2)


def _reference_multiclass(boxes, scores, max_per_class, max_total, iou_t, score_t):
    """Per class: greedy NMS; then the best max_total over all classes (score, then class)."""
    dets = []
    for c in range(scores.shape[1]):
        cls_boxes = boxes[:, c if boxes.shape[1] > 1 else 0]
        for j in ref.greedy_nms(cls_boxes, scores[:, c], iou_t, max_per_class, score_t):
            dets.append((scores[j, c], c + 1, cls_boxes[j]))
    dets.sort(key=lambda d: -d[0])
    return dets[:max_total]


@pytest.mark.parametrize("shared", [False, True])
def test_multiclass_nms_matches_reference_with_pixel_boxes(rng, shared):
    b, n, k = 2, 60, 3
    boxes = _random_boxes(rng, b, n * (1 if shared else k), extent=600.0)
    boxes = boxes.reshape(b, n, 1 if shared else k, 4)
    scores = rng.uniform(size=(b, n, k)).astype(np.float32)
    scores[1, :, 1] = 0.0  # class 2 has nothing in image 1
    out = nms.multiclass_nms(boxes, scores, max_per_class=10, max_total=25,
                             iou_threshold=0.5, score_threshold=0.05)
    for i in range(b):
        expected = _reference_multiclass(boxes[i], scores[i], 10, 25, 0.5, 0.05)
        nv = int(out.num_valid[i])
        assert nv == len(expected)
        np.testing.assert_allclose(out.scores[i, :nv], [d[0] for d in expected], rtol=1e-6)
        got = {(round(float(s), 6), int(c)) for s, c in zip(out.scores[i, :nv], out.classes[i, :nv],
                                                            strict=True)}
        assert got == {(round(float(d[0]), 6), d[1]) for d in expected}
        np.testing.assert_array_equal(out.classes[i, nv:], 0)
        np.testing.assert_array_equal(out.scores[i, nv:], 0.0)
        # Boxes come back in pixels (no clipping to [0, 1]).
        for row in range(nv):
            match = [d for d in expected if abs(d[0] - out.scores[i, row]) < 1e-7
                     and d[1] == out.classes[i, row]]
            np.testing.assert_allclose(out.boxes[i, row], match[0][2], rtol=1e-5)
        assert out.boxes.numpy()[i, :nv].max() > 1.0
    assert out.classes.dtype == tf.int32


def test_multiclass_nms_empty_inputs():
    out = nms.multiclass_nms(tf.zeros([2, 0, 3, 4]), tf.zeros([2, 0, 3]), 5, 7)
    assert out.boxes.shape == (2, 7, 4) and out.classes.shape == (2, 7)
    np.testing.assert_array_equal(out.num_valid.numpy(), [0, 0])
    np.testing.assert_array_equal(out.classes.numpy(), 0)
    # All scores below the threshold.
    out = nms.multiclass_nms(tf.ones([1, 4, 1, 4]), tf.fill([1, 4, 2], 0.01), 5, 7)
    np.testing.assert_array_equal(out.num_valid.numpy(), [0])
    with pytest.raises(ValueError, match="background removed"):
        nms.multiclass_nms(tf.zeros([2, 3, 4]), tf.zeros([2, 3]), 5, 7)
