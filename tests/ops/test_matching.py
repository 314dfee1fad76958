"""Tests for tf_rcnn.ops.matching: interval labels, padded GT, low-quality matches, ignore."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.reference import numpy_boxes as ref
from tf_rcnn.ops import matching

RPN = {"thresholds": [0.3, 0.7], "labels": [0, -1, 1]}


def test_rpn_intervals_hand_case():
    # Rows' best IoU: 0.8 -> [0.7, inf) -> 1; 0.5 -> [0.3, 0.7) -> -1; 0.1 -> [-inf, 0.3) -> 0;
    # 0.3 exactly -> [0.3, 0.7) -> -1; 0.7 exactly -> 1 (intervals are closed on the left).
    sim = tf.constant([[[0.8, 0.2], [0.1, 0.5], [0.1, 0.0], [0.3, 0.0], [0.0, 0.7]]])
    valid = tf.constant([[True, True]])
    out = matching.match(sim, valid, **RPN)
    np.testing.assert_array_equal(out.labels.numpy(), [[1, -1, 0, -1, 1]])
    np.testing.assert_array_equal(out.matched_indices.numpy(), [[0, 1, 0, 0, 1]])
    np.testing.assert_allclose(out.max_similarity.numpy(), [[0.8, 0.5, 0.1, 0.3, 0.7]])


def test_padded_gt_never_matches_and_no_gt_gives_zero():
    # Column 1 of image 0 is padding with a (fake) IoU 0.9: must be ignored.
    # Image 1 has no valid GT at all: max_similarity 0 -> lowest interval; Fast R-CNN labels
    # put [-inf, 0.1) in ignore (-1).
    sim = tf.constant([[[0.6, 0.9], [0.05, 0.9]], [[0.9, 0.9], [0.2, 0.2]]])
    valid = tf.constant([[True, False], [False, False]])
    out = matching.match(sim, valid, thresholds=[0.1, 0.5], labels=[-1, 0, 1])
    np.testing.assert_array_equal(out.matched_indices.numpy(), [[0, 0], [0, 0]])
    np.testing.assert_array_equal(out.labels.numpy(), [[1, -1], [-1, -1]])
    np.testing.assert_allclose(out.max_similarity.numpy(), [[0.6, 0.05], [0.0, 0.0]])


def test_low_quality_matches_with_ties():
    # Column maxima: GT 0 -> 0.4 at rows 0 and 2 (a tie: both forced to GT 0); GT 1 -> 0.6 at
    # row 1; GT 2 -> 0.5 at row 3. All four rows are below 0.7 (label -1 without forcing) and
    # become 1; row 4 (best 0.0 < 0.3) stays 0.
    sim = tf.constant([[[0.4, 0.1, 0.0],
                        [0.1, 0.6, 0.0],
                        [0.4, 0.0, 0.35],
                        [0.2, 0.0, 0.5],
                        [0.0, 0.0, 0.0]]])
    valid = tf.constant([[True, True, True]])
    out = matching.match(sim, valid, **RPN, allow_low_quality_matches=True)
    np.testing.assert_array_equal(out.labels.numpy(), [[1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(out.matched_indices.numpy(), [[0, 1, 0, 2, 0]])
    without = matching.match(sim, valid, **RPN)
    np.testing.assert_array_equal(without.labels.numpy(), [[-1, -1, -1, -1, 0]])


def test_low_quality_reassigns_row_to_forced_gt():
    # Row 0 is GT 1's best (0.3) but its own best is GT 0 (0.5, which GT 0 beats elsewhere at
    # row 1 with 0.9): it becomes positive and is matched to GT 1. A GT with best IoU 0
    # (GT 2) forces nothing.
    sim = tf.constant([[[0.5, 0.3, 0.0], [0.9, 0.1, 0.0]]])
    out = matching.match(sim, tf.constant([[True, True, True]]), **RPN,
                         allow_low_quality_matches=True)
    np.testing.assert_array_equal(out.matched_indices.numpy(), [[1, 0]])
    np.testing.assert_array_equal(out.labels.numpy(), [[1, 1]])


def test_ignore_mask_only_affects_negatives():
    sim = tf.constant([[[0.9], [0.5], [0.1], [0.0]]])
    ignore = tf.constant([[True, True, True, False]])
    out = matching.match(sim, tf.constant([[True]]), **RPN, ignore_mask=ignore)
    np.testing.assert_array_equal(out.labels.numpy(), [[1, -1, -1, 0]])


@pytest.mark.parametrize("low_quality", [False, True])
def test_matches_reference_on_random_iou(rng, low_quality):
    b, n, m = 3, 40, 6
    ctr = rng.uniform(0, 100, (b, n + m, 2))
    hw = rng.uniform(5, 40, (b, n + m, 2))
    boxes = np.concatenate([ctr - hw / 2, ctr + hw / 2], -1).astype(np.float32)
    anchors, gt = boxes[:, :n], boxes[:, n:]
    valid = rng.uniform(size=(b, m)) > 0.3
    valid[2] = False  # an image without GT
    ignore = rng.uniform(size=(b, n)) > 0.7
    sim = np.stack([ref.iou(anchors[i], gt[i]) for i in range(b)]).astype(np.float32)
    out = matching.match(sim, valid, **RPN, allow_low_quality_matches=low_quality,
                         ignore_mask=ignore)
    for i in range(b):
        matched, labels, max_sim = ref.match(sim[i], valid[i], RPN["thresholds"],
                                             RPN["labels"], low_quality, ignore[i])
        np.testing.assert_array_equal(out.labels[i], labels)
        np.testing.assert_allclose(out.max_similarity[i], max_sim, rtol=1e-6)
        # Matched index only matters where a GT exists.
        np.testing.assert_array_equal(out.matched_indices[i], matched)


def test_empty_inputs_in_tf_function():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None]), tf.TensorSpec([None, None],
                                                                                    tf.bool)])
    def fn(sim, valid):
        return matching.match(sim, valid, **RPN, allow_low_quality_matches=True)

    out = fn(tf.zeros([2, 5, 0]), tf.zeros([2, 0], tf.bool))  # M = 0
    np.testing.assert_array_equal(out.labels.numpy(), 0)
    np.testing.assert_array_equal(out.matched_indices.numpy(), 0)
    np.testing.assert_array_equal(out.max_similarity.numpy(), 0.0)
    out = fn(tf.zeros([2, 0, 3]), tf.ones([2, 3], tf.bool))  # N = 0
    assert out.labels.shape == (2, 0)


def test_bad_intervals():
    sim, valid = tf.zeros([1, 2, 2]), tf.ones([1, 2], tf.bool)
    with pytest.raises(ValueError, match="labels needs one entry"):
        matching.match(sim, valid, thresholds=[0.3, 0.7], labels=[0, 1])
    with pytest.raises(ValueError, match="non-decreasing"):
        matching.match(sim, valid, thresholds=[0.7, 0.3], labels=[0, -1, 1])
    with pytest.raises(ValueError, match="labels must be"):
        matching.match(sim, valid, thresholds=[0.5], labels=[0, 2])


def test_crowd_ignore_mask():
    anchors = tf.constant([[[0, 0, 10, 10],     # inside crowd [0, 0, 20, 20]: IoA 1
                            [15, 15, 25, 25],   # IoA = 5 * 5 / 100 = 0.25 < 0.7
                            [0, 12, 10, 22]]],  # IoA = 10 * 8 / 100 = 0.8 >= 0.7
                          tf.float32)
    crowd = tf.constant([[[0, 0, 20, 20], [-1, -1, -1, -1]]], tf.float32)
    out = matching.crowd_ignore_mask(anchors, crowd)
    np.testing.assert_array_equal(out.numpy(), [[True, False, True]])
    np.testing.assert_array_equal(
        matching.crowd_ignore_mask(anchors, tf.fill([1, 3, 4], -1.0)).numpy(), False)
    assert matching.crowd_ignore_mask(anchors, tf.zeros([1, 0, 4])).shape == (1, 3)
    # Shared anchors [1, N, 4] broadcast against a batch of 2 crowd lists.
    crowd2 = tf.concat([crowd, tf.fill([1, 2, 4], -1.0)], axis=0)
    np.testing.assert_array_equal(matching.crowd_ignore_mask(anchors, crowd2).numpy(),
                                  [[True, False, True], [False, False, False]])
