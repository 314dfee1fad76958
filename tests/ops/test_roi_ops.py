"""Tests for tf_rcnn.ops.roi_ops against hand-computed cases and tests/reference/numpy_roi.py."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.reference import numpy_roi as ref
from tf_rcnn.ops import poolers, ps_roi_pool
from tf_rcnn.ops import roi_align as roi_align_ops
from tf_rcnn.ops import roi_pool as roi_pool_ops

ATOL = 1e-4


def _arange_map(height: int, width: int) -> np.ndarray:
    """[1, H, W, 1] map whose value at (y, x) is W*y + x (bilinear samples stay linear)."""
    return np.arange(height * width, dtype=np.float32).reshape(1, height, width, 1)


def _random_rois(rng, batch, num_rois, height, width, scale):
    """Edge-case RoIs in pixels: crossing the border, under one feature pixel, larger than the map.

    The first quarter is sub-pixel (under one feature cell), the second quarter is larger
    than the whole map, the rest is anywhere including partly or fully outside.
    """
    img_h, img_w = height / scale, width / scale
    y1 = rng.uniform(-0.3 * img_h, 1.1 * img_h, size=(batch, num_rois))
    x1 = rng.uniform(-0.3 * img_w, 1.1 * img_w, size=(batch, num_rois))
    h = rng.uniform(0.2, 1.2 * img_h, size=(batch, num_rois))
    w = rng.uniform(0.2, 1.2 * img_w, size=(batch, num_rois))
    q = max(num_rois // 4, 1)
    h[:, :q] = rng.uniform(0.05, 0.95 / scale, size=(batch, q))
    w[:, :q] = rng.uniform(0.05, 0.95 / scale, size=(batch, q))
    y1[:, q:2 * q] = rng.uniform(-0.4 * img_h, 0.0, size=(batch, q))
    x1[:, q:2 * q] = rng.uniform(-0.4 * img_w, 0.0, size=(batch, q))
    h[:, q:2 * q] = rng.uniform(1.5 * img_h, 2.0 * img_h, size=(batch, q))
    w[:, q:2 * q] = rng.uniform(1.5 * img_w, 2.0 * img_w, size=(batch, q))
    return np.stack([y1, x1, y1 + h, x1 + w], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- hand cases


def test_roi_align_arange_aligned_and_legacy():
    fmap = _arange_map(5, 5)
    rois = np.array([[[1.0, 1.0, 3.0, 3.0]]], np.float32)
    # aligned: scaled box [0.5, 0.5, 2.5, 2.5], bins of 1 pixel, samples (sr=2) at 0.75/1.25 and
    # 1.75/2.25 -> bin centres 1.0 and 2.0 -> 5*y + x = [[6, 7], [11, 12]].
    out = roi_align_ops.roi_align(fmap, rois, 2, 1.0, sampling_ratio=2, aligned=True)
    np.testing.assert_allclose(out.numpy()[0, 0, ..., 0], [[6.0, 7.0], [11.0, 12.0]], atol=1e-5)
    # legacy: box [1, 1, 3, 3] unshifted, bin centres 1.5 and 2.5 -> 5*1.5 + 1.5 = 9, ...
    out = roi_align_ops.roi_align(fmap, rois, 2, 1.0, sampling_ratio=2, aligned=False)
    np.testing.assert_allclose(out.numpy()[0, 0, ..., 0], [[9.0, 10.0], [14.0, 15.0]], atol=1e-5)


@pytest.mark.parametrize(
    "box, expected",
    [
        # 1x1 output, sr=1: one sample at the scaled box centre, column x = 2.
        ([-1.0, 2.0, 0.0, 3.0], 2.0),  # y = -1.0: on the border of [-1, H], clamped to row 0.
        ([-0.5, 2.0, 0.5, 3.0], 2.0),  # y = -0.5: clamped to row 0 (a zero pad would give 1).
        ([-1.25, 2.0, -0.25, 3.0], 0.0),  # y = -1.25 < -1: outside, contributes 0.
        ([4.5, 2.0, 5.5, 3.0], 22.0),  # y = 4.5 in [H-1, H]: reads row 4 -> 5*4 + 2.
        ([5.25, 2.0, 6.25, 3.0], 0.0),  # y = 5.25 > H = 5: outside.
        ([2.0, -0.5, 3.0, 0.5], 10.0),  # x = -0.5 clamped to column 0, y = 2 -> 10.
        ([2.0, 4.8, 3.0, 5.8], 14.0),  # x = 4.8 in [W-1, W]: column 4 -> 10 + 4.
    ],
)
def test_roi_align_boundary_rule(box, expected):
    fmap = _arange_map(5, 5)
    out = roi_align_ops.roi_align(fmap, np.array([[box]], np.float32), 1, 1.0, sampling_ratio=1)
    assert out.numpy()[0, 0, 0, 0, 0] == pytest.approx(expected, abs=1e-5)
    assert ref.roi_align(fmap, np.array([[box]]), 1, 1.0, 1)[0, 0, 0, 0, 0] == pytest.approx(
        expected
    )


def test_roi_pool_hand_cases():
    fmap = _arange_map(4, 4)  # value 4*y + x
    # Box [0, 0, 3, 3]: size 3 - 0 + 1 = 4 cells, 2 bins of 2 -> max at each bin's bottom-right.
    rois = np.array([[[0.0, 0.0, 3.0, 3.0], [0.5, 0.5, 2.5, 2.5]]], np.float32)
    out = roi_pool_ops.roi_pool(fmap, rois, 2, 1.0).numpy()[0, ..., 0]
    np.testing.assert_array_equal(out[0], [[5.0, 7.0], [13.0, 15.0]])
    # Box [0.5, 0.5, 2.5, 2.5]: C round() gives start 1, end 3 (tf.round would give 0 and 2),
    # size 3, bins [1, 3) and [2, 4) ((floor(1.5), ceil(3.0)) = (1, 3) offset by 1) ->
    # maxima at (2, 2)=10, (2, 3)=11, (3, 2)=14, (3, 3)=15.
    np.testing.assert_array_equal(out[1], [[10.0, 11.0], [14.0, 15.0]])


def test_roi_pool_empty_bin_is_zero():
    fmap = _arange_map(4, 4) + 1.0
    # Fully outside below the map: every bin is clipped to [4, 4) -> empty -> 0.
    rois = np.array([[[10.0, 0.0, 12.0, 2.0]]], np.float32)
    np.testing.assert_array_equal(roi_pool_ops.roi_pool(fmap, rois, 2, 1.0).numpy(), 0.0)


def test_ps_roi_constant_channel_groups():
    k, channels, size = 3, 2, 9
    # Score-map channel (c*k + i)*k + j holds the constant 100*c + 10*i + j, so output bin (i, j)
    # of channel c must read exactly that constant (any other channel gives another number).
    values = np.zeros(k * k * channels, np.float32)
    for c in range(channels):
        for i in range(k):
            for j in range(k):
                values[(c * k + i) * k + j] = 100 * c + 10 * i + j
    maps = np.broadcast_to(values, (1, size, size, k * k * channels)).copy()
    rois = np.array([[[0.0, 0.0, 9.0, 9.0], [2.0, 1.0, 7.0, 8.0]]], np.float32)
    expected = np.zeros((1, 2, k, k, channels), np.float32)
    for c in range(channels):
        for i in range(k):
            for j in range(k):
                expected[..., i, j, c] = 100 * c + 10 * i + j
    np.testing.assert_allclose(ps_roi_pool.ps_roi_align(maps, rois, k, 1.0).numpy(), expected,
                               atol=1e-4)
    np.testing.assert_allclose(ps_roi_pool.ps_roi_pool(maps, rois, k, 1.0).numpy(), expected,
                               atol=1e-4)
    # vote = mean over bins: 100*c + 10*mean(i) + mean(j) = 100*c + 11.
    np.testing.assert_allclose(
        ps_roi_pool.vote(ps_roi_pool.ps_roi_pool(maps, rois, k, 1.0)).numpy(),
        [[[11.0, 111.0]] * 2],
        atol=1e-4,
    )


def test_ps_roi_pool_hand_bins():
    # 1 channel, k=1 on a 4x4 arange map (4y + x). Box [0, 0, 4, 4]: size 4, bin [0, 4) clipped
    # to [0, 3) (torchvision clips ps bins to H - 1) -> mean of rows/cols 0..2 = 4*1 + 1 = 5.
    out = ps_roi_pool.ps_roi_pool(_arange_map(4, 4), np.array([[[0.0, 0.0, 4.0, 4.0]]]), 1, 1.0)
    assert out.numpy()[0, 0, 0, 0, 0] == pytest.approx(5.0)


@pytest.mark.parametrize(
    "side, level",
    [(224.0, 4), (112.0, 3), (448.0, 5), (896.0, 5), (223.0, 3), (1.0, 2), (0.0, 2), (56.0, 2)],
)
def test_assign_fpn_levels(side, level):
    # floor(4 + log2(side / 224)): 224 -> 4, 112 -> 3, 448 -> 5, 896 -> 6 clipped to 5,
    # 223 -> floor(3.994) = 3, tiny / zero-area -> clipped to min_level 2.
    rois = np.array([[[10.0, 20.0, 10.0 + side, 20.0 + side]]], np.float32)
    got = poolers.assign_fpn_levels(rois, 2, 5).numpy()
    assert got.dtype == np.int32
    assert got[0, 0] == level == ref.fpn_level(rois[0, 0], 2, 5)


# ----------------------------------------------------------------------- random references


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(2, 9, 12, 3)).astype(np.float32)
    return rng, features


@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_matches_reference(random_case, scale, sampling_ratio, aligned):
    rng, features = random_case
    rois = _random_rois(rng, 2, 8, 9, 12, scale)
    for size in [(7, 7), (3, 5)]:
        got = roi_align_ops.roi_align(features, rois, size, scale, sampling_ratio, aligned)
        want = ref.roi_align(features, rois, size, scale, sampling_ratio, aligned)
        assert got.shape == (2, 8) + size + (3,)
        np.testing.assert_allclose(got.numpy(), want, atol=ATOL)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.0625])
def test_roi_pool_matches_reference(random_case, scale):
    rng, features = random_case
    rois = _random_rois(rng, 2, 12, 9, 12, scale)
    for size in [7, (2, 3), 1]:
        got = roi_pool_ops.roi_pool(features, rois, size, scale)
        np.testing.assert_allclose(got.numpy(), ref.roi_pool(features, rois, size, scale),
                                   atol=ATOL)


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_ps_roi_ops_match_reference(random_case, scale):
    rng, _ = random_case
    k = 3
    maps = rng.normal(size=(2, 10, 8, k * k * 2)).astype(np.float32)
    rois = _random_rois(rng, 2, 8, 10, 8, scale)
    for sampling_ratio in [1, 2]:
        got = ps_roi_pool.ps_roi_align(maps, rois, k, scale, sampling_ratio)
        np.testing.assert_allclose(
            got.numpy(), ref.ps_roi_align(maps, rois, k, scale, sampling_ratio), atol=ATOL
        )
    got = ps_roi_pool.ps_roi_pool(maps, rois, k, scale)
    np.testing.assert_allclose(got.numpy(), ref.ps_roi_pool(maps, rois, k, scale), atol=ATOL)


def test_multilevel_roi_align_matches_per_level_reference():
    rng = np.random.default_rng(3)
    strides = [4, 8, 16, 32]
    image = 256
    features = [rng.normal(size=(2, image // s, image // s, 2)).astype(np.float32)
                for s in strides]
    sides = np.array([[8, 60, 120, 230, 300, 600, 0.5, 40], [224, 112, 448, 20, 90, 180, 256, 64]],
                     np.float32)
    y1 = rng.uniform(-20, image - 20, size=sides.shape).astype(np.float32)
    x1 = rng.uniform(-20, image - 20, size=sides.shape).astype(np.float32)
    rois = np.stack([y1, x1, y1 + sides, x1 + sides * 0.9], axis=-1)
    got = poolers.multilevel_roi_align(features, rois, (7, 5), strides, sampling_ratio=2)
    assert got.shape == (2, 8, 7, 5, 2)
    levels = poolers.assign_fpn_levels(rois, 2, 5).numpy()
    assert set(levels.ravel()) == {2, 3, 4, 5}  # every level is exercised
    for b in range(2):
        for r in range(8):
            level = ref.fpn_level(rois[b, r], 2, 5)
            assert level == levels[b, r]
            want = ref.roi_align(features[level - 2][b:b + 1], rois[b:b + 1, r:r + 1], (7, 5),
                                 1.0 / strides[level - 2], 2)
            np.testing.assert_allclose(got.numpy()[b, r], want[0, 0], atol=ATOL)


# -------------------------------------------------------------- graph, empty, dynamic shapes


def test_empty_rois_and_dynamic_shapes():
    features = tf.random.normal([2, 8, 8, 9])
    empty = tf.zeros([2, 0, 4])
    assert roi_align_ops.roi_align(features, empty, 7, 0.5).shape == (2, 0, 7, 7, 9)
    assert roi_pool_ops.roi_pool(features, empty, 7, 0.5).shape == (2, 0, 7, 7, 9)
    assert ps_roi_pool.ps_roi_align(features, empty, 3, 0.5).shape == (2, 0, 3, 3, 1)
    assert ps_roi_pool.ps_roi_pool(features, empty, 3, 0.5).shape == (2, 0, 3, 3, 1)
    assert poolers.multilevel_roi_align([features, features[:, :4, :4]], empty, 7, [8, 16]).shape \
        == (2, 0, 7, 7, 9)

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 9]),
                                  tf.TensorSpec([None, None, 4])])
    def pooled(f, r):
        return (roi_align_ops.roi_align(f, r, 2, 0.5), roi_pool_ops.roi_pool(f, r, 2, 0.5),
                ps_roi_pool.ps_roi_align(f, r, 3, 0.5), ps_roi_pool.ps_roi_pool(f, r, 3, 0.5),
                poolers.multilevel_roi_align([f, f[:, :4, :4]], r, 2, [8, 16]))

    for rois in (tf.zeros([2, 0, 4]), tf.constant([[[0.0, 0.0, 10.0, 12.0]]] * 2)):
        for out in pooled(features, rois):
            assert out.shape[:2] == rois.shape[:2]
            assert np.all(np.isfinite(out.numpy()))
    one = pooled(features[:1], tf.constant([[[0.0, 0.0, 10.0, 12.0]]]))
    assert one[0].shape == (1, 1, 2, 2, 9)


def test_bad_arguments_raise_clear_errors():
    features = tf.zeros([1, 4, 4, 8])
    rois = tf.zeros([1, 2, 4])
    with pytest.raises(ValueError, match="rois must be"):
        roi_align_ops.roi_align(features, tf.zeros([2, 4]), 7, 1.0)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_ops.roi_align(features, rois, 7, 1.0, sampling_ratio=0)
    with pytest.raises(ValueError, match="output_size"):
        roi_align_ops.roi_align(features, rois, 0, 1.0)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_pool_ops.roi_pool(features, rois, 2, 0.0)
    with pytest.raises(ValueError, match="multiple of k"):
        ps_roi_pool.ps_roi_pool(features, rois, 3, 1.0)
    with pytest.raises(ValueError, match="powers of two"):
        poolers.multilevel_roi_align([features, features], rois, 2, [4, 12])


# ----------------------------------------------------------------------------- gradients


def _numeric_gradient_check(fn, features, delta, atol):
    # tf.function: compute_gradient calls fn twice per input element.
    theoretical, numerical = tf.test.compute_gradient(tf.function(fn), [features], delta=delta)
    assert np.all(np.isfinite(theoretical[0]))
    assert np.abs(theoretical[0]).sum() > 0  # the gradient is not trivially zero
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=atol)


def test_roi_align_and_ps_roi_align_gradients():
    rng = np.random.default_rng(5)
    rois = tf.constant(_random_rois(rng, 2, 3, 5, 6, 0.5))
    features = tf.constant(rng.normal(size=(2, 5, 6, 2)).astype(np.float32))
    # Both ops are linear in the features: central differences are exact up to float32 rounding.
    _numeric_gradient_check(lambda f: roi_align_ops.roi_align(f, rois, 2, 0.5), features, 0.1, 2e-3)
    maps = tf.constant(rng.normal(size=(2, 5, 6, 8)).astype(np.float32))
    _numeric_gradient_check(lambda f: ps_roi_pool.ps_roi_align(f, rois, 2, 0.5), maps, 0.1, 2e-3)
    _numeric_gradient_check(lambda f: ps_roi_pool.ps_roi_pool(f, rois, 2, 0.5), maps, 0.1, 2e-3)


def test_roi_pool_gradient_goes_to_argmax():
    # Distinct values 1 apart: a 0.1 perturbation never changes the arg-max, so max pooling is
    # locally linear and central differences are exact.
    rng = np.random.default_rng(6)
    values = rng.permutation(2 * 5 * 6 * 2).astype(np.float32).reshape(2, 5, 6, 2)
    features = tf.constant(values)
    rois = tf.constant(_random_rois(rng, 2, 3, 5, 6, 0.5))
    _numeric_gradient_check(lambda f: roi_pool_ops.roi_pool(f, rois, 2, 0.5), features, 0.1, 2e-3)
    # A single 1x1 output over the whole map: the gradient is 1 at the global max only.
    whole = tf.constant([[[0.0, 0.0, 5.0, 6.0]]] * 2)
    with tf.GradientTape() as tape:
        tape.watch(features)
        out = roi_pool_ops.roi_pool(features, whole, 1, 1.0)
    grad = tape.gradient(out, features).numpy()
    for b in range(2):
        for c in range(2):
            expected = (values[b, :, :, c] == values[b, :, :, c].max()).astype(np.float32)
            np.testing.assert_array_equal(grad[b, :, :, c], expected)


def test_multilevel_gradient_reaches_every_used_level():
    features = [tf.random.normal([1, 16, 16, 2]), tf.random.normal([1, 8, 8, 2])]
    rois = tf.constant([[[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 100.0, 100.0]]])
    with tf.GradientTape() as tape:
        tape.watch(features)
        out = poolers.multilevel_roi_align(features, rois, 2, [4, 8], canonical_level=3,
                                           canonical_size=56.0)
    grads = tape.gradient(out, features)
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


@pytest.mark.parametrize("output_size", [3, 7])
def test_quantised_bins_round_like_float32_in_graph_and_eager(output_size):
    # Bin bounds are fl32(p * fl32(size / S)): e.g. 3 * fl32(7 / 3) is exactly 7.0 in float32,
    # whereas a reciprocal-multiply (what TF's graph optimiser may emit) gives 7.0000005 and an
    # extra cell. Integer RoIs of every size 1..40 at stride 1 hit these cases for S = 3 and 7.
    rng = np.random.default_rng(11)
    features = rng.normal(size=(1, 48, 48, 2)).astype(np.float32)
    sizes = np.arange(1, 41, dtype=np.float32)
    rois = np.stack([np.zeros_like(sizes), sizes / 4, sizes, sizes + sizes / 4], -1)[None]
    want_pool = ref.roi_pool(features, rois, output_size, 1.0)
    graph_pool = tf.function(lambda f, r: roi_pool_ops.roi_pool(f, r, output_size, 1.0))
    np.testing.assert_array_equal(roi_pool_ops.roi_pool(features, rois, output_size, 1.0).numpy(),
                                  want_pool)
    np.testing.assert_array_equal(graph_pool(features, rois).numpy(), want_pool)
    maps = rng.normal(size=(1, 48, 48, output_size**2)).astype(np.float32)
    want_ps = ref.ps_roi_pool(maps, rois, output_size, 1.0)
    graph_ps = tf.function(lambda f, r: ps_roi_pool.ps_roi_pool(f, r, output_size, 1.0))
    np.testing.assert_allclose(graph_ps(maps, rois).numpy(), want_ps, atol=ATOL)
