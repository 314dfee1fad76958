"""Tests for tf_rcnn.ops.sampling: counts, ignore rows, seeds, dynamic shapes, uniformity."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_rcnn.ops import sampling


def _labels(rng, b, n, p_pos, p_neg):
    u = rng.uniform(size=(b, n))
    return np.where(u < p_pos, 1, np.where(u < p_pos + p_neg, 0, -1)).astype(np.int32)


def test_counts_many_positives(rng):
    labels = _labels(rng, 2, 1000, 0.3, 0.5)  # ~300 positives, ~500 negatives
    pos, neg = sampling.subsample_labels(labels, 256, 0.5, seed=(1, 2))
    # 256 * 0.5 = 128 positives, 256 - 128 = 128 negatives.
    np.testing.assert_array_equal(pos.numpy().sum(1), [128, 128])
    np.testing.assert_array_equal(neg.numpy().sum(1), [128, 128])
    assert (labels[pos.numpy()] == 1).all() and (labels[neg.numpy()] == 0).all()
    assert not (pos.numpy() & neg.numpy()).any()


def test_counts_few_positives_and_few_negatives():
    # Image 0: 3 positives (< 128) all taken; negatives min(100, 256 - 3 = 253) = 100.
    # Image 1: 0 positives; negatives min(400, 256 - 0) = 256. Ignore rows are never taken.
    labels = np.full((2, 500), -1, np.int32)
    labels[0, :3] = 1
    labels[0, 10:110] = 0
    labels[1, 100:500] = 0
    pos, neg = sampling.subsample_labels(labels, 256, 0.5)
    np.testing.assert_array_equal(pos.numpy().sum(1), [3, 0])
    np.testing.assert_array_equal(neg.numpy().sum(1), [100, 256])
    assert not (pos.numpy() | neg.numpy())[labels == -1].any()


def test_seed_reproducible_and_seeds_differ(rng):
    labels = _labels(rng, 2, 2000, 0.2, 0.7)
    a = sampling.subsample_labels(labels, 256, 0.25, seed=(7, 7))
    b = sampling.subsample_labels(labels, 256, 0.25, seed=(7, 7))
    c = sampling.subsample_labels(labels, 256, 0.25, seed=(7, 8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1].numpy(), c[1].numpy())
    graph = tf.function(lambda lab: sampling.subsample_labels(lab, 256, 0.25, seed=(7, 7)))
    np.testing.assert_array_equal(graph(tf.constant(labels))[1], a[1])


def test_sample_indices_layout_and_padding():
    labels = tf.constant([[0, -1, 1, 0, 1, -1], [-1, -1, -1, -1, -1, -1]], tf.int32)
    idx, valid = sampling.sample_indices(labels, 8, 0.5, seed=(0, 1))
    assert idx.shape == (2, 8) and valid.shape == (2, 8)
    # Image 0: positives 2, 4 (at most 4 allowed) then negatives 0, 3, then 4 pad rows.
    np.testing.assert_array_equal(idx.numpy()[0], [2, 4, 0, 3, 0, 0, 0, 0])
    np.testing.assert_array_equal(valid.numpy()[0], [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(valid.numpy()[1], False)
    np.testing.assert_array_equal(idx.numpy()[1], 0)


def test_sample_indices_dynamic_n_in_tf_function(rng):
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def fn(labels):
        return sampling.sample_indices(labels, 16, 0.25, seed=(3, 4))

    for n in (0, 5, 300):
        labels = _labels(rng, 2, n, 0.1, 0.6)
        idx, valid = fn(tf.constant(labels, tf.int32))
        assert idx.shape == (2, 16)
        for i in range(2):
            n_pos = min((labels[i] == 1).sum(), 4)
            n_neg = min((labels[i] == 0).sum(), 16 - n_pos)
            chosen = idx.numpy()[i][valid.numpy()[i]]
            assert len(chosen) == n_pos + n_neg == len(set(chosen))
            np.testing.assert_array_equal(labels[i][chosen], [1] * n_pos + [0] * n_neg)


def test_uniformity_sanity():
    # 4000 images x 20 negatives, 5 samples each: each row is chosen with p = 5 / 20 = 0.25,
    # so each of the 20 counts is ~Binomial(4000, 0.25): mean 1000, std ~27. Allow 5 std.
    labels = tf.zeros([4000, 20], tf.int32)
    _, neg = sampling.subsample_labels(labels, 5, 0.5, seed=(11, 12))
    counts = neg.numpy().sum(0)
    assert neg.numpy().sum(1).tolist() == [5] * 4000
    assert np.abs(counts - 1000).max() < 5 * 27.4, counts


@pytest.mark.parametrize("kwargs, match", [({"num_samples": -1}, "num_samples"),
                                           ({"positive_fraction": 1.5}, "positive_fraction"),
                                           ({"seed": (1, 2, 3)}, "seed")])
def test_bad_arguments(kwargs, match):
    args = {"num_samples": 4, "positive_fraction": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        sampling.subsample_labels(tf.zeros([1, 3], tf.int32), **args)
