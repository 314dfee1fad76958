"""Layer tests for RoIAlign, MultiLevelRoIAlign, RoIPool, PSRoIPooling, SpatialPyramidPooling.

Every layer goes through tests.layer_contract.check_layer_contract and is compared with the op
it wraps (the ops themselves are checked against NumPy references in tests/ops).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_contract import check_layer_contract
from tests.reference import numpy_roi as ref
from tf_rcnn.layers.poolers import MultiLevelRoIAlign
from tf_rcnn.layers.ps_roi_pooling import PSRoIPooling
from tf_rcnn.layers.roi_align import RoIAlign
from tf_rcnn.layers.roi_pool import RoIPool
from tf_rcnn.layers.spp import SpatialPyramidPooling
from tf_rcnn.ops import poolers

ROIS = np.array(
    [
        [[0.0, 0.0, 40.0, 48.0], [10.0, 5.0, 30.0, 60.0], [-8.0, 20.0, 3.0, 23.0]],
        [[5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 120.0, 120.0], [20.0, 30.0, 44.0, 50.0]],
    ],
    np.float32,
)


def _features(channels: int, size: tuple[int, int] = (6, 8)) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, *size, channels)).astype(np.float32)


def test_roi_align_layer():
    features = _features(4)
    layer = RoIAlign((3, 2), spatial_scale=1 / 8, sampling_ratio=2, aligned=True)
    out = check_layer_contract(layer, (features, ROIS))
    assert out.shape == (2, 3, 3, 2, 4)
    np.testing.assert_allclose(out.numpy(), ref.roi_align(features, ROIS, (3, 2), 1 / 8, 2),
                               atol=1e-4)


def test_multilevel_roi_align_layer():
    rng = np.random.default_rng(1)
    features = [rng.normal(size=(2, 16, 16, 3)).astype(np.float32),
                rng.normal(size=(2, 8, 8, 3)).astype(np.float32)]
    layer = MultiLevelRoIAlign(2, strides=[4, 8], canonical_level=3, canonical_size=32.0)
    out = check_layer_contract(layer, (features, ROIS))
    assert out.shape == (2, 3, 2, 2, 3)
    np.testing.assert_allclose(
        out.numpy(),
        poolers.multilevel_roi_align(features, ROIS, 2, [4, 8], canonical_level=3,
                                     canonical_size=32.0).numpy(),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="one map per stride"):
        layer(features[:1], ROIS)


def test_roi_pool_layer():
    features = _features(4)
    layer = RoIPool(2, spatial_scale=1 / 8)
    out = check_layer_contract(layer, (features, ROIS))
    assert out.shape == (2, 3, 2, 2, 4)
    np.testing.assert_allclose(out.numpy(), ref.roi_pool(features, ROIS, 2, 1 / 8), atol=1e-6)


@pytest.mark.parametrize("mode", ["pool", "align"])
@pytest.mark.parametrize("vote", [True, False])
def test_ps_roi_pooling_layer(mode, vote):
    k, channels = 2, 3
    maps = _features(k * k * channels)
    layer = PSRoIPooling(k, spatial_scale=1 / 8, mode=mode, sampling_ratio=2, vote=vote)
    out = check_layer_contract(layer, (maps, ROIS))
    if mode == "pool":
        want = ref.ps_roi_pool(maps, ROIS, k, 1 / 8)
    else:
        want = ref.ps_roi_align(maps, ROIS, k, 1 / 8, 2)
    if vote:
        want = want.mean(axis=(2, 3))
    assert out.shape == want.shape
    np.testing.assert_allclose(out.numpy(), want, atol=1e-4)


def test_spatial_pyramid_pooling_layer():
    features = _features(2)
    layer = SpatialPyramidPooling(pyramid_levels=(1, 2, 3), spatial_scale=1 / 8)
    out = check_layer_contract(layer, (features, ROIS))
    assert out.shape == (2, 3, 2 * (1 + 4 + 9))
    # Layout: [n, n, C] flattened row-major per level, levels concatenated in order.
    pieces = [ref.roi_pool(features, ROIS, n, 1 / 8).reshape(2, 3, -1) for n in (1, 2, 3)]
    np.testing.assert_allclose(out.numpy(), np.concatenate(pieces, axis=-1), atol=1e-6)


def test_layers_in_a_model_round_trip(tmp_path):
    features = keras.Input(batch_shape=(None, 6, 8, 8))
    rois = keras.Input(batch_shape=(None, None, 4))
    outputs = [
        RoIAlign(2, 1 / 8)(features, rois),
        RoIPool(2, 1 / 8)(features, rois),
        PSRoIPooling(2, 1 / 8, mode="align")(features, rois),
        SpatialPyramidPooling((1, 2), 1 / 8)(features, rois),
    ]
    model = keras.Model([features, rois], outputs)
    path = tmp_path / "roi_layers.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    inputs = [tf.constant(_features(8)), tf.constant(ROIS)]
    for a, b in zip(model(inputs), restored(inputs), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="mode"):
        PSRoIPooling(3, 1 / 16, mode="max")
    with pytest.raises(ValueError, match="pyramid_levels"):
        SpatialPyramidPooling(pyramid_levels=())
    with pytest.raises(ValueError, match="powers of two"):
        MultiLevelRoIAlign(7, strides=[4, 6])
    with pytest.raises(ValueError, match="output_size"):
        RoIAlign(0, 1 / 16)


def test_docstring_examples_run():
    import doctest

    from tf_rcnn.layers import roi_align as module

    result = doctest.testmod(module, extraglobs={"tf": tf}, verbose=False)
    assert result.attempted > 0 and result.failed == 0
