"""The builtin-only op variants (LiteRT export) equal the ops they replace.

Each test runs the public op twice on the same random case: as shipped, and traced inside
``tf_rcnn.backend.builtin_ops_only()`` (gathers of bilinear taps instead of crop_and_resize,
flat-index gathers instead of dynamic_stitch, NON_MAX_SUPPRESSION_V5 instead of
combined_non_max_suppression, bin tables and a float32 summed-area table instead of float64).
Tolerances: 1e-5 absolute on sampled values and resized pixels (float32 rounding of the
differently computed sample positions, values of order 1-255 scaled to ~1); RoI max pooling
identical; PS-RoI average pooling 1e-4 on maps of mean 40 (float32 sums); NMS outputs identical
(indices, classes, counts) and boxes/scores to 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_rcnn.backend import builtin_ops_only, builtin_ops_only_enabled
from tf_rcnn.data.pipeline import resize_image
from tf_rcnn.ops import nms, poolers, ps_roi_pool, roi_align, roi_pool
from tf_rcnn.ops.builtin_roi_pool import _bin_tables
from tf_rcnn.ops.crop_and_resize import bilinear_gather, gather_crop_and_resize


def _both(fn, *args, **kwargs):
    """``fn`` traced by default and traced builtin-only (in tf.function, as an export does)."""
    default = tf.function(lambda: fn(*args, **kwargs), autograph=False)()
    with builtin_ops_only():
        assert builtin_ops_only_enabled()
        builtin = tf.function(lambda: fn(*args, **kwargs), autograph=False)()
    assert not builtin_ops_only_enabled()
    return default, builtin


def _rois(rng, batch, num, extent, min_side=1.0):
    ctr = rng.uniform(-0.1 * extent, 1.1 * extent, (batch, num, 2))
    hw = rng.uniform(min_side, 0.6 * extent, (batch, num, 2))
    return np.concatenate([ctr - hw / 2, ctr + hw / 2], -1).astype(np.float32)


def test_bilinear_gather_hand_case():
    # Map [[0, 1], [2, 3]]: (0.5, 0.5) averages all four = 1.5; (1, 0.25) = 2 + 0.25 * (3 - 2)
    # = 2.25; (-0.1, 0) lies outside [0, 1] x [0, 1] -> 0; (1, 1) is the last pixel exactly = 3.
    flat = tf.constant([[0.0], [1.0], [2.0], [3.0]])
    ys = tf.constant([[0.5, 1.0, -0.1, 1.0]])
    xs = tf.constant([[0.5, 0.25, 0.0, 1.0]])
    out = bilinear_gather(flat, tf.constant([0]), tf.constant([2]), tf.constant([2]), ys, xs)
    np.testing.assert_allclose(np.diagonal(out.numpy()[0, :, :, 0]), [1.5, 2.25, 0.0, 3.0])


@pytest.mark.parametrize("crop_size", [(1, 1), (3, 5)])
def test_gather_crop_and_resize_equals_tf(rng, crop_size):
    image = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
    # Boxes inside, partly outside [0, 1] and flipped (y2 < y1).
    boxes = rng.uniform(-0.3, 1.3, (12, 4)).astype(np.float32)
    indices = rng.integers(0, 2, 12).astype(np.int32)
    want = tf.image.crop_and_resize(image, boxes, indices, crop_size, extrapolation_value=0.0)
    got = gather_crop_and_resize(image, boxes, indices, crop_size)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


@pytest.mark.parametrize("aligned,sampling_ratio", [(True, 2), (False, 1)])
def test_roi_align_builtin_equals_default(rng, aligned, sampling_ratio):
    features = rng.normal(size=(2, 10, 12, 4)).astype(np.float32)
    rois = _rois(rng, 2, 9, 48.0, min_side=0.0)
    default, builtin = _both(roi_align.roi_align, features, rois, (3, 4), 0.25,
                             sampling_ratio=sampling_ratio, aligned=aligned)
    np.testing.assert_allclose(builtin.numpy(), default.numpy(), atol=1e-5)


def test_multilevel_roi_align_builtin_equals_default(rng):
    strides = [4, 8, 16]
    features = [rng.normal(size=(2, 64 // s, 48 // s, 3)).astype(np.float32) for s in strides]
    rois = _rois(rng, 2, 15, 64.0)
    default, builtin = _both(poolers.multilevel_roi_align, features, rois, (3, 2), strides,
                             sampling_ratio=2, aligned=True, canonical_level=3,
                             canonical_size=16.0)
    # The case reaches every level (so the flat offsets of all three are exercised).
    levels = poolers.assign_fpn_levels(rois, 2, 4, 3, 16.0).numpy()
    assert set(np.unique(levels)) == {2, 3, 4}
    np.testing.assert_allclose(builtin.numpy(), default.numpy(), atol=1e-5)


def test_ps_roi_align_builtin_equals_default(rng):
    k, c = 3, 2
    maps = rng.normal(size=(2, 9, 11, k * k * c)).astype(np.float32)
    rois = _rois(rng, 2, 7, 40.0)
    default, builtin = _both(ps_roi_pool.ps_roi_align, maps, rois, k, 0.25, sampling_ratio=2)
    np.testing.assert_allclose(builtin.numpy(), default.numpy(), atol=1e-5)


def test_bin_tables_hand_case():
    # RoI size 7 in 3 bins: bin = fl32(7 / 3) = 2.3333333; lo = floor(p * bin) = 0, 2, 4 and
    # hi = ceil((p + 1) * bin) = 3, 5, 7 (3 * fl32(7 / 3) rounds to exactly 7.0 in float32).
    lo, hi = _bin_tables(3, 10)
    assert lo[7].tolist() == [0, 2, 4] and hi[7].tolist() == [3, 5, 7]


def test_roi_pool_and_ps_roi_pool_builtin_equal_default(rng):
    features = rng.normal(size=(2, 11, 13, 3)).astype(np.float32)
    rois = _rois(rng, 2, 12, 52.0, min_side=0.0)
    default, builtin = _both(roi_pool.roi_pool, features, rois, (3, 2), 0.25)
    np.testing.assert_array_equal(builtin.numpy(), default.numpy())  # max: exact
    # Score maps far from zero mean, so the centred float32 table has something to do.
    maps = (rng.normal(size=(2, 12, 10, 3 * 3 * 2)) * 3.0 + 40.0).astype(np.float32)
    default, builtin = _both(ps_roi_pool.ps_roi_pool, maps, rois, 3, 0.25)
    np.testing.assert_allclose(builtin.numpy(), default.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", [0.37, 2.6])
def test_resize_image_builtin_equals_default(rng, scale):
    image = rng.uniform(0, 255, (13, 17, 3)).astype(np.float32)
    out_shape = np.maximum(np.ceil(np.array([13, 17]) * scale - 1e-3), 1).astype(np.int32)
    default, builtin = _both(resize_image, image, tf.constant([scale, scale]), out_shape)
    np.testing.assert_allclose(builtin.numpy() / 255.0, default.numpy() / 255.0, atol=1e-5)


def _boxes(rng, b, n, extent=100.0):
    ctr = rng.uniform(0, extent, (b, n, 2))
    hw = rng.uniform(5, 40, (b, n, 2))
    return np.concatenate([ctr - hw / 2, ctr + hw / 2], -1).astype(np.float32)


@pytest.mark.parametrize("pre_nms_top_n", [None, 40])
def test_batched_nms_builtin_equals_default(rng, pre_nms_top_n):
    boxes = _boxes(rng, 2, 80)
    scores = rng.normal(size=(2, 80)).astype(np.float32)
    scores[0, 10:20] = scores[0, 3]  # ties: both keep index order
    scores[1, 50:] = -np.inf  # masked rows
    default, builtin = _both(nms.batched_nms, boxes, scores, 30, 0.6,
                             pre_nms_top_n=pre_nms_top_n, score_threshold=-1.0)
    np.testing.assert_array_equal(builtin.num_valid.numpy(), default.num_valid.numpy())
    np.testing.assert_array_equal(builtin.indices.numpy(), default.indices.numpy())
    np.testing.assert_allclose(builtin.boxes.numpy(), default.boxes.numpy(), atol=1e-6)
    np.testing.assert_allclose(builtin.scores.numpy(), default.scores.numpy(), atol=1e-6)


@pytest.mark.parametrize("shared_boxes,max_per_class", [(False, 20), (True, 20), (False, 3)])
def test_multiclass_nms_builtin_equals_default(rng, shared_boxes, max_per_class):
    b, n, k = 2, 40, 4
    boxes = _boxes(rng, b * (1 if shared_boxes else k), n).reshape(b, -1, n, 4)
    boxes = np.ascontiguousarray(boxes.transpose(0, 2, 1, 3))  # [B, N, K|1, 4]
    scores = rng.uniform(size=(b, n, k)).astype(np.float32)
    scores[1, :, 2] = 0.01  # a class entirely under the score threshold in image 1
    default, builtin = _both(nms.multiclass_nms, boxes, scores, max_per_class, 12,
                             iou_threshold=0.5, score_threshold=0.05)
    # Image 0 fills D; in image 1 a cap of 3 binds (3 classes above the threshold x 3 = 9).
    assert default.num_valid.numpy().tolist() == [12, 12 if max_per_class > 3 else 9]
    np.testing.assert_array_equal(builtin.num_valid.numpy(), default.num_valid.numpy())
    np.testing.assert_array_equal(builtin.classes.numpy(), default.classes.numpy())
    np.testing.assert_allclose(builtin.scores.numpy(), default.scores.numpy(), atol=1e-6)
    np.testing.assert_allclose(builtin.boxes.numpy(), default.boxes.numpy(), atol=1e-6)


def test_builtin_nms_needs_a_static_batch():
    fn = tf.function(lambda b, s: nms.batched_nms(b, s, 5),
                     input_signature=[tf.TensorSpec([None, 10, 4]), tf.TensorSpec([None, 10])])
    with builtin_ops_only(), pytest.raises(ValueError, match="static batch"):
        fn.get_concrete_function()
