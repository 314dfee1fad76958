"""FPN neck: output keys/strides/shapes (also odd sizes), top-down arithmetic, layer contract."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.layer_contract import check_layer_contract
from tf_rcnn.models.necks.fpn import FPN, upsample_to


def _features(sizes, channels=(8, 12, 16, 20), batch=2):
    return {
        f"C{lvl}": tf.random.normal((batch, h, w, c))
        for lvl, (h, w), c in zip(range(2, 6), sizes, channels, strict=True)
    }


def test_fpn_contract_and_shapes():
    feats = _features([(16, 16), (8, 8), (4, 4), (2, 2)])
    fpn = FPN(out_channels=8)
    out = check_layer_contract(fpn, feats)
    assert list(out) == ["P2", "P3", "P4", "P5", "P6"]
    assert fpn.output_strides == {"P2": 4, "P3": 8, "P4": 16, "P5": 32, "P6": 64}
    assert fpn.output_channels == dict.fromkeys(["P2", "P3", "P4", "P5", "P6"], 8)
    expected = {"P2": 16, "P3": 8, "P4": 4, "P5": 2, "P6": 1}
    for name, size in expected.items():
        assert tuple(out[name].shape) == (2, size, size, 8)


def test_fpn_odd_sizes_dynamic_shape():
    # 72x88 input with "same" stride-2 convs: ceil halvings 18x22, 9x11, 5x6, 3x3.
    feats = _features([(18, 22), (9, 11), (5, 6), (3, 3)], batch=1)
    fpn = FPN(out_channels=4, top_block=None)
    fn = tf.function(fpn, input_signature=[
        {k: tf.TensorSpec((None, None, None, v.shape[-1])) for k, v in feats.items()}])
    out = fn(feats)
    assert list(out) == ["P2", "P3", "P4", "P5"]
    for (name, x), c in zip(out.items(), feats.values(), strict=True):
        assert tuple(x.shape) == (1, c.shape[1], c.shape[2], 4), name


def test_upsample_crop_and_pad():
    x = tf.reshape(tf.range(6, dtype=tf.float32), (1, 2, 3, 1))  # [[0,1,2],[3,4,5]]
    # Crop: 2x3 -> 4x6 -> 3x5; pixel (y, x) = x[y // 2, x // 2].
    got = upsample_to(x, tf.constant([3, 5]))[0, ..., 0].numpy()
    np.testing.assert_array_equal(got, [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]])
    # Pad (floor-style sizes): 2x3 -> 5x7 repeats the last row/column.
    got = upsample_to(x, tf.constant([5, 7]))[0, ..., 0].numpy()
    assert got.shape == (5, 7)
    np.testing.assert_array_equal(got[4], [3, 3, 4, 4, 5, 5, 5])
    np.testing.assert_array_equal(got[:, 6], [2, 2, 5, 5, 5])  # rows 0-1 from 0, 2-4 from 1


def test_fpn_top_down_arithmetic():
    # With identity laterals and identity output convs, P_l = C_l + upsample(P_{l+1}); so
    # P4 = C4 and P3 = C3 + up(C4): for constants C3 = 1, C4 = 10, P3 = 11 everywhere,
    # and P5 (top_block) = P4 subsampled = 10.
    fpn = FPN(in_features=("C3", "C4"), in_strides=(8, 16), out_channels=2)
    feats = {"C3": tf.ones((1, 4, 4, 2)), "C4": 10 * tf.ones((1, 2, 2, 2))}
    fpn(feats)
    eye1 = np.eye(2, dtype="float32")[None, None]
    eye3 = np.zeros((3, 3, 2, 2), "float32")
    eye3[1, 1] = np.eye(2)
    zero = np.zeros(2, "float32")
    for lateral, output in zip(fpn.lateral_convs, fpn.output_convs, strict=True):
        lateral.set_weights([eye1, zero])
        output.set_weights([eye3, zero])
    out = fpn(feats)
    assert list(out) == ["P3", "P4", "P5"]
    np.testing.assert_allclose(out["P4"].numpy(), 10.0)
    np.testing.assert_allclose(out["P3"].numpy(), 11.0)
    np.testing.assert_allclose(out["P5"].numpy(), 10.0)
    assert out["P5"].shape == (1, 1, 1, 2)


@pytest.mark.parametrize(
    "kwargs",
    [{"in_strides": (4, 8, 16, 64)}, {"top_block": "p6p7"}, {"in_features": ("C2",)},
     {"out_channels": 0}],
)
def test_fpn_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        FPN(**kwargs)


def test_fpn_missing_feature():
    with pytest.raises(ValueError, match="missing"):
        FPN(out_channels=4)({"C2": tf.zeros((1, 8, 8, 3))})


def test_fpn_with_norm_has_no_conv_bias_and_a_norm_after_each_conv():
    fpn = FPN(in_features=("C2", "C3", "C4", "C5"), in_strides=(4, 8, 16, 32),
              out_channels=8, norm="frozen_bn")
    check_layer_contract(fpn, _features([(16, 16), (8, 8), (4, 4), (2, 2)]))
    paths = {w.path.split("/", 1)[1] for w in fpn.weights}
    assert "fpn_lateral2/bias" not in paths and "fpn_output5/bias" not in paths
    assert {"fpn_lateral2_norm/gamma", "fpn_output5_norm/moving_mean"} <= paths
    assert len(paths) == 8 + 8 * 4  # 8 kernels, 8 norms of 4 vectors
