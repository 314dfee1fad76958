"""Backbones: output keys/strides/shapes, freezing, FrozenBN, imagenet weight mapping."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_contract import check_layer_contract
from tf_rcnn.models.backbones import FrozenBatchNormalization, TinyBackbone, build_backbone


def _check_outputs(model, outputs, image_hw):
    assert set(outputs) == set(model.output_strides) == set(model.output_channels)
    for name, x in outputs.items():
        stride = model.output_strides[name]
        # Inputs are padded to a multiple of the coarsest stride by the data pipeline; for other
        # sizes "same" padding gives ceil(H / stride).
        assert tuple(x.shape[1:]) == (-(-image_hw[0] // stride), -(-image_hw[1] // stride),
                                      model.output_channels[name]), name


# ---------------------------------------------------------------- FrozenBatchNormalization


def test_frozen_bn_contract_and_math():
    layer = FrozenBatchNormalization(epsilon=1e-3)
    x = tf.random.normal((2, 3, 3, 4))
    check_layer_contract(layer, x, call_kwargs={"training": True})
    gamma, beta = np.array([1, 2, 3, 4.0]), np.array([0, 1, 0, -1.0])
    mean, var = np.array([0, 0.5, 1, 2.0]), np.array([1, 4, 0.25, 1.0])
    layer.set_weights([gamma, beta, mean, var])
    expected = gamma * (x.numpy() - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 4


def test_frozen_bn_unchanged_by_train_step():
    inp = keras.Input((4, 4, 3))
    y = FrozenBatchNormalization()(keras.layers.Conv2D(3, 1)(inp))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(y))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    bn = model.layers[2]
    bn.set_weights([np.full(3, 2.0), np.full(3, 0.5), np.full(3, 0.1), np.full(3, 3.0)])
    before = [w.copy() for w in bn.get_weights()]
    model.fit(np.random.normal(size=(8, 4, 4, 3)), np.ones((8, 3)), epochs=1, verbose=0)
    for a, b in zip(before, bn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- TinyBackbone


def test_tiny_backbone_shapes_and_dynamic_size():
    model = build_backbone("tiny")
    assert isinstance(model, TinyBackbone)
    _check_outputs(model, model(tf.zeros((2, 64, 64, 3))), (64, 64))
    fn = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 3))])
    _check_outputs(model, fn(tf.zeros((1, 72, 88, 3))), (72, 88))
    assert model.output_strides == {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
    assert model.output_channels == {"C2": 16, "C3": 32, "C4": 64, "C5": 128}


def test_tiny_backbone_serialises():
    model = TinyBackbone(widths=(8, 8, 16, 16), name="tiny_x")
    x = tf.random.normal((1, 32, 32, 3))
    out = model(x)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    restored(x)
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(restored(x)["C5"].numpy(), out["C5"].numpy(), atol=1e-5)
    assert restored.widths == (8, 8, 16, 16)
    with pytest.raises(ValueError, match="widths"):
        TinyBackbone(widths=(8, 8, 8))
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone("resnet18")
