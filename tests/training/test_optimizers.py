"""Coupled weight decay arithmetic, the decay rule, and optimizer construction."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_rcnn.training.optimizers import (
    CoupledWeightDecaySGD,
    apply_weight_decay,
    build_optimizer,
    weight_decay_rate,
)


def test_one_sgd_step_with_coupled_decay():
    # var - lr * (g + wd * var) = [1, -2] - 0.1 * ([0.5, 0.5] + 0.01 * [1, -2])
    #                           = [1 - 0.1 * 0.51, -2 - 0.1 * 0.48] = [0.949, -2.048]
    var = keras.Variable(np.array([1.0, -2.0], np.float32), name="kernel")
    grad = tf.constant([0.5, 0.5])
    optimizer = build_optimizer("sgd", learning_rate=0.1, momentum=0.0, weight_decay=0.01)
    optimizer.apply([grad], [var])
    np.testing.assert_allclose(var.numpy(), [0.949, -2.048], rtol=1e-6)


def test_decay_passes_through_momentum():
    # Coupled decay enters the momentum buffer: with momentum 0.9, two steps of
    # grad 0 on var = 1, lr 1, wd 0.1 (Keras SGD: m = 0.9 m - lr g; var += m):
    #   step 1: g = 0.1 * 1 = 0.1, m = -0.1, var = 0.9
    #   step 2: g = 0.1 * 0.9 = 0.09, m = -0.09 - 0.09 = -0.18, var = 0.72
    var = keras.Variable(np.array([1.0], np.float32), name="kernel")
    optimizer = CoupledWeightDecaySGD(learning_rate=1.0, momentum=0.9, l2_weight_decay=0.1)
    for _ in range(2):
        optimizer.apply([tf.zeros([1])], [var])
    np.testing.assert_allclose(var.numpy(), [0.72], rtol=1e-6)


def test_decay_rule_norm_bias_and_none_gradients():
    layer_bn = keras.layers.BatchNormalization()
    layer_bn.build((None, 2))
    dense = keras.layers.Dense(2)
    dense.build((None, 2))
    gamma, beta = layer_bn.gamma, layer_bn.beta
    kernel, bias = dense.kernel, dense.bias
    assert weight_decay_rate(gamma, 0.1) == 0.0
    assert weight_decay_rate(beta, 0.1, weight_decay_norm=0.3) == 0.3
    assert weight_decay_rate(bias, 0.1) == 0.1
    assert weight_decay_rate(bias, 0.1, exclude_bias_from_decay=True) == 0.0
    assert weight_decay_rate(kernel, 0.1) == 0.1

    grads = [tf.zeros_like(v) for v in (gamma, kernel, bias)] + [None]
    variables = [gamma, kernel, bias, beta]
    out = apply_weight_decay(
        zip(grads, variables, strict=True), 0.1, exclude_bias_from_decay=True, scale=0.5
    )
    np.testing.assert_allclose(out[0][0].numpy(), 0.0)  # gamma excluded
    np.testing.assert_allclose(out[1][0].numpy(), 0.05 * kernel.numpy(), rtol=1e-6)
    np.testing.assert_allclose(out[2][0].numpy(), 0.0)  # bias excluded
    assert out[3][0] is None  # no gradient, no decay


def test_adamw_excludes_norm_parameters():
    optimizer = build_optimizer("adamw", learning_rate=0.1, weight_decay=0.5)
    bn = keras.layers.BatchNormalization()
    bn.build((None, 2))
    dense = keras.layers.Dense(2)
    dense.build((None, 2))
    assert not optimizer._use_weight_decay(bn.gamma)
    assert optimizer._use_weight_decay(dense.kernel)
    with pytest.raises(ValueError, match="weight_decay_norm"):
        build_optimizer("adamw", weight_decay=0.1, weight_decay_norm=0.05)


def test_sgd_serialisation_round_trip_and_errors():
    optimizer = build_optimizer(
        "sgd", learning_rate=0.1, weight_decay=0.01, exclude_bias_from_decay=True, clipnorm=1.0
    )
    restored = CoupledWeightDecaySGD.from_config(optimizer.get_config())
    assert restored.l2_weight_decay == pytest.approx(0.01)
    assert restored.exclude_bias_from_decay
    assert restored.clipnorm == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind"):
        build_optimizer("lamb")
    with pytest.raises(ValueError, match="l2_weight_decay"):
        CoupledWeightDecaySGD(weight_decay=0.1)


def test_coupled_sgd_works_with_model_fit():
    # compile/fit path: Keras calls optimizer.apply with the model's trainable variables.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=build_optimizer("sgd", learning_rate=0.01), loss="mse")
    x = np.ones((4, 3), np.float32)
    kernel = model.layers[0].kernel.numpy().copy()
    model.fit(x, np.zeros((4, 1), np.float32), epochs=1, batch_size=4, verbose=0)
    assert not np.allclose(model.layers[0].kernel.numpy(), kernel)
