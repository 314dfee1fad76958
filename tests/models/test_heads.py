"""RPN head and box heads: anchor ordering, shapes, R = 0, init, layer contracts."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_contract import check_layer_contract
from tf_rcnn.models.proposal_generator.rpn_head import RPNHead
from tf_rcnn.models.roi_heads.box_head import (
    BoxPredictor,
    FPNBoxHead,
    VGGBoxHead,
    copy_keras_vgg16_fc_weights,
)


def test_rpn_head_contract_and_shapes():
    feats = [tf.random.normal((2, 8, 8, 6)), tf.random.normal((2, 4, 4, 6)),
             tf.random.normal((2, 2, 2, 6))]
    logits, deltas = check_layer_contract(RPNHead(num_anchors=3, channels=5), feats)
    n = (64 + 16 + 4) * 3
    assert logits.shape == (2, n) and deltas.shape == (2, n, 4)


def test_rpn_head_anchor_order_hand_checkable():
    # Input channels encode position: ch0 = y, ch1 = x, ch2 = level id. With an identity 3x3
    # centre tap (and ReLU, harmless on non-negative inputs) the hidden map equals the input.
    # objectness_a = 100*y + 10*x + 1000*level + a   (weights [100, 10, 1000], bias a)
    # delta_{a,j}  = 100*y + 10*x + 1000*level + 4*a + j
    # so flat index (y*W + x)*A + a, levels concatenated fine to coarse, must read back
    # exactly these numbers.
    A, C = 2, 3
    shapes = [(3, 4), (2, 2)]
    feats = []
    for level, (h, w) in enumerate(shapes):
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        f = np.stack([yy, xx, np.full_like(yy, level)], -1).astype("float32")
        feats.append(tf.constant(f[None]))
    head = RPNHead(num_anchors=A)
    head(feats)
    centre = np.zeros((3, 3, C, C), "float32")
    centre[1, 1] = np.eye(C)
    head.conv.set_weights([centre, np.zeros(C, "float32")])
    code = np.array([100.0, 10.0, 1000.0], "float32")
    head.objectness_conv.set_weights(
        [np.tile(code[:, None], (1, A))[None, None], np.arange(A, dtype="float32")])
    head.deltas_conv.set_weights(
        [np.tile(code[:, None], (1, A * 4))[None, None], np.arange(A * 4, dtype="float32")])
    logits, deltas = head(feats)
    expected_logits, expected_deltas = [], []
    for level, (h, w) in enumerate(shapes):
        for y in range(h):
            for x in range(w):
                for a in range(A):
                    base = 100 * y + 10 * x + 1000 * level
                    expected_logits.append(base + a)
                    expected_deltas.append([base + 4 * a + j for j in range(4)])
    np.testing.assert_allclose(logits[0].numpy(), expected_logits)
    np.testing.assert_allclose(deltas[0].numpy(), expected_deltas)


def test_rpn_head_init_and_errors():
    head = RPNHead(num_anchors=3)
    head([tf.zeros((1, 4, 4, 32))])
    assert head.conv.filters == 32  # channels=None -> input channels
    for layer in (head.conv, head.objectness_conv, head.deltas_conv):
        kernel, bias = layer.get_weights()
        assert np.all(bias == 0)
        assert 0.005 < kernel.std() < 0.02  # normal std 0.01
    # Each conv draws its own numbers (a shared unseeded initializer would repeat them).
    first = [layer.kernel.numpy().ravel()[:8]
             for layer in (head.conv, head.objectness_conv, head.deltas_conv)]
    assert not np.allclose(first[0], first[1]) and not np.allclose(first[1], first[2])
    with pytest.raises(ValueError, match="num_anchors"):
        RPNHead(num_anchors=0)
    with pytest.raises(ValueError, match="same"):
        RPNHead(num_anchors=3)([tf.zeros((1, 4, 4, 8)), tf.zeros((1, 2, 2, 4))])


def test_fpn_box_head_contract_and_empty():
    head = FPNBoxHead(fc_dims=(16, 12))
    out = check_layer_contract(head, tf.random.normal((2, 5, 3, 3, 4)))
    assert out.shape == (2, 5, 12)
    assert np.all(out.numpy() >= 0)  # ReLU output
    empty = head(tf.zeros((2, 0, 3, 3, 4)))
    assert empty.shape == (2, 0, 12)
    # Dynamic R inside tf.function.
    fn = tf.function(head, input_signature=[tf.TensorSpec((None, None, 3, 3, 4))])
    assert fn(tf.zeros((3, 0, 3, 3, 4))).shape == (3, 0, 12)
    assert fn(tf.zeros((1, 7, 3, 3, 4))).shape == (1, 7, 12)


def test_fpn_box_head_flatten_order_matches_per_roi():
    # Folding [B, R] must not mix RoIs: running the head on each RoI alone gives the same rows.
    head = FPNBoxHead(fc_dims=(8,))
    x = tf.random.normal((2, 3, 2, 2, 3))
    out = head(x).numpy()
    for b in range(2):
        for r in range(3):
            np.testing.assert_allclose(head(x[b:b + 1, r:r + 1])[0, 0].numpy(), out[b, r],
                                       atol=1e-5)


def test_vgg_box_head_dropout_and_contract():
    head = VGGBoxHead(fc_dims=(32, 32), dropout=0.5)
    x = tf.random.normal((1, 4, 2, 2, 8))
    out = check_layer_contract(head, x)
    assert out.shape == (1, 4, 32)
    train = head(x, training=True).numpy()
    assert np.any((train == 0) & (out.numpy() != 0))  # dropout only in training
    assert head(tf.zeros((1, 0, 2, 2, 8)), training=True).shape == (1, 0, 32)
    with pytest.raises(ValueError, match="dropout"):
        VGGBoxHead(dropout=1.0)


def test_vgg_fc_copy_mapping():
    # A stand-in for keras.applications.VGG16's top with the same layer names and a smaller
    # pooled size: after the copy the head must compute relu(relu(flatten(x) W1 + b1) W2 + b2).
    inp = keras.Input((2, 2, 8))
    y = keras.layers.Flatten()(inp)
    y = keras.layers.Dense(16, activation="relu", name="fc1")(y)
    y = keras.layers.Dense(16, activation="relu", name="fc2")(y)
    source = keras.Model(inp, y)
    for w in source.weights:
        w.assign(np.random.normal(size=w.shape).astype("float32"))
    head = VGGBoxHead(fc_dims=(16, 16), dropout=0.5)
    x = tf.random.normal((2, 3, 2, 2, 8))
    head(x)
    copy_keras_vgg16_fc_weights(head, source)
    expected = source(tf.reshape(x, (6, 2, 2, 8))).numpy().reshape(2, 3, 16)
    np.testing.assert_allclose(head(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="7x7x512"):
        copy_keras_vgg16_fc_weights(VGGBoxHead(fc_dims=(16, 16)), source)


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_box_predictor(class_agnostic):
    pred = BoxPredictor(num_classes=3, class_agnostic=class_agnostic)
    logits, deltas = check_layer_contract(pred, tf.random.normal((2, 5, 16)))
    assert logits.shape == (2, 5, 4) and deltas.shape == (2, 5, 4, 4)
    if class_agnostic:
        # The single delta is repeated for every class group.
        np.testing.assert_allclose(deltas[:, :, 1:].numpy(),
                                   np.repeat(deltas[:, :, :1].numpy(), 3, axis=2))
    logits, deltas = pred(tf.zeros((2, 0, 16)))
    assert logits.shape == (2, 0, 4) and deltas.shape == (2, 0, 4, 4)


def test_box_predictor_init_and_layout():
    pred = BoxPredictor(num_classes=50)
    pred(tf.zeros((1, 1, 256)))
    cls_kernel, cls_bias = pred.class_dense.get_weights()
    box_kernel, box_bias = pred.box_dense.get_weights()
    assert np.all(cls_bias == 0) and np.all(box_bias == 0)
    assert 0.008 < cls_kernel.std() < 0.012 and 0.0008 < box_kernel.std() < 0.0012
    assert not np.allclose(cls_kernel.ravel()[:8] / 10, box_kernel.ravel()[:8] / 1)
    # Channel g*4 + j of the dense output is coordinate j of class g.
    pred.box_dense.set_weights([np.zeros_like(box_kernel), np.arange(51 * 4, dtype="float32")])
    _, deltas = pred(tf.zeros((1, 2, 256)))
    np.testing.assert_allclose(deltas[0, 1, 7].numpy(), [28, 29, 30, 31])
    with pytest.raises(ValueError, match="num_classes"):
        BoxPredictor(num_classes=0)


def test_rpn_head_with_two_convs_and_box_head_with_convs_and_norm():
    # torchvision's *_fpn_v2: two 3x3 RPN convs ("conv", "conv2"), a 4conv1fc box head whose
    # convs have BatchNorm and no bias.
    head = RPNHead(num_anchors=3, num_convs=2)
    check_layer_contract(head, [tf.random.normal([2, 8, 8, 16]), tf.random.normal([2, 4, 4, 16])])
    names = sorted({w.path.split("/")[-2] for w in head.weights})
    assert names == ["conv", "conv2", "deltas", "objectness"]
    with pytest.raises(ValueError, match="model.rpn.head_num_convs"):
        RPNHead(num_anchors=3, num_convs=0)
    box = FPNBoxHead(fc_dims=(32,), conv_dims=(8, 8), norm="frozen_bn")
    out = check_layer_contract(box, tf.random.normal([2, 5, 7, 7, 16]))
    assert out.shape == (2, 5, 32)
    paths = [w.path.split("/", 1)[1] for w in box.weights]
    assert "conv1/kernel" in paths and "conv1/bias" not in paths
    assert {"conv1_norm/gamma", "conv2_norm/moving_variance", "fc1/kernel"} <= set(paths)
    # Zero RoIs still give [B, 0, D] (TF's CPU conv returns its input for an empty batch).
    assert box(tf.zeros([2, 0, 7, 7, 16])).shape == (2, 0, 32)
    with pytest.raises(ValueError, match="model.roi_head.norm"):
        FPNBoxHead(conv_dims=(8,), norm="layer_norm")
