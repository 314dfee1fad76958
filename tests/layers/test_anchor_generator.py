"""Tests for tf_rcnn.layers.anchor_generator.AnchorGenerator."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.layer_contract import check_layer_contract
from tests.reference import numpy_boxes as ref
from tf_rcnn.layers.anchor_generator import AnchorGenerator
from tf_rcnn.ops import anchors as anchor_ops


def _fpn_generator():
    return AnchorGenerator(sizes=[[16], [32], [64]], aspect_ratios=[0.5, 1.0, 2.0],
                           strides=[4, 8, 16])


def test_layer_contract_and_values():
    features = [tf.zeros([2, 8, 6, 3]), tf.zeros([2, 4, 3, 5]), tf.zeros([2, 2, 2, 5])]
    gen = _fpn_generator()
    assert gen.num_anchors_per_location == 3
    out = check_layer_contract(gen, (features,))
    assert out.shape == ((48 + 12 + 4) * 3, 4)
    expected = np.concatenate([
        ref.grid_anchors(ref.base_anchors([s], [0.5, 1.0, 2.0]), h, w, st, 0.5)
        for (h, w), s, st in [((8, 6), 16, 4), ((4, 3), 32, 8), ((2, 2), 64, 16)]])
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)


def test_dynamic_feature_shapes_in_tf_function():
    gen = AnchorGenerator(sizes=[[128, 256, 512]], aspect_ratios=[0.5, 1.0, 2.0], strides=[16])
    assert gen.num_anchors_per_location == 9

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4])])
    def fn(feature):
        return gen([feature])

    for h, w in [(3, 5), (7, 2)]:
        out = fn(tf.zeros([1, h, w, 4]))
        expected = anchor_ops.multilevel_anchors([(h, w)], [16], [[128, 256, 512]],
                                                 [0.5, 1.0, 2.0])
        np.testing.assert_allclose(out.numpy(), expected.numpy())


def test_bad_configuration_and_inputs():
    with pytest.raises(ValueError, match="one list per level"):
        AnchorGenerator(sizes=[[16], [32]], aspect_ratios=[1.0], strides=[4])
    with pytest.raises(ValueError, match="same number of sizes"):
        AnchorGenerator(sizes=[[16], [32, 48]], aspect_ratios=[1.0], strides=[4, 8])
    with pytest.raises(ValueError, match="sizes"):
        AnchorGenerator(sizes=[[-16]], aspect_ratios=[1.0], strides=[4])
    with pytest.raises(ValueError, match="2 feature maps"):
        _fpn_generator()([tf.zeros([1, 4, 4, 1]), tf.zeros([1, 2, 2, 1])])
