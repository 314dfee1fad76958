"""Loss terms on hand-computed cases."""

import math

import numpy as np
import tensorflow as tf

from tf_rcnn.ops import losses


def test_smooth_l1_hand_values():
    # beta = 1: |x| = 0.5 < 1 -> 0.5 * 0.25 / 1 = 0.125; |x| = 2 -> 2 - 0.5 = 1.5.
    out = losses.smooth_l1(tf.constant([0.5, -2.0]), tf.zeros(2), beta=1.0)
    np.testing.assert_allclose(out.numpy(), [0.125, 1.5], rtol=1e-6)
    # beta = 1/9: |x| = 0.05 -> 0.5 * 0.0025 * 9 = 0.01125; |x| = 1 -> 1 - 1/18.
    out = losses.smooth_l1(tf.constant([0.05, 1.0]), tf.zeros(2), beta=1.0 / 9.0)
    np.testing.assert_allclose(out.numpy(), [0.01125, 1.0 - 1.0 / 18.0], rtol=1e-5)
    # beta = 0 is plain L1.
    np.testing.assert_allclose(losses.smooth_l1(tf.constant([-0.3]), tf.zeros(1), 0.0), [0.3])


def test_rpn_losses_hand_case():
    # Anchors: positive (logit 0), negative (logit 0), not sampled (logit 5), negative (logit ln3).
    # BCE: ln2, ln2, -, -log(1 - sigmoid(ln3)) = -log(0.25) = ln4 -> mean over 3 sampled.
    logits = tf.constant([[0.0, 0.0, 5.0, math.log(3.0)]])
    labels = tf.constant([[1, 0, -1, 0]])
    deltas = tf.constant([[[0.1, 0.0, 0.0, 0.0], [9.0, 9, 9, 9], [9.0, 9, 9, 9], [9.0, 9, 9, 9]]])
    targets = tf.zeros([1, 4, 4])
    out = losses.rpn_losses(logits, deltas, labels, targets, batch_size_per_image=8)
    expected_cls = (2 * math.log(2.0) + math.log(4.0)) / 3.0
    np.testing.assert_allclose(out["rpn_objectness_loss"].numpy(), expected_cls, rtol=1e-5)
    # Only the positive anchor counts: |0.1| < 1/9 -> 0.5 * 0.01 * 9 = 0.045, over 1 * 8 anchors.
    np.testing.assert_allclose(out["rpn_box_loss"].numpy(), 0.045 / 8.0, rtol=1e-5)


def test_rpn_losses_no_samples_is_zero_not_nan():
    out = losses.rpn_losses(tf.zeros([2, 5]), tf.zeros([2, 5, 4]), -tf.ones([2, 5], tf.int32),
                            tf.zeros([2, 5, 4]), batch_size_per_image=256)
    assert out["rpn_objectness_loss"].numpy() == 0.0
    assert out["rpn_box_loss"].numpy() == 0.0


def test_rcnn_losses_use_gt_class_deltas_only():
    # Two RoIs, K = 2: RoI 0 is class 2 (foreground), RoI 1 background; a third is padding.
    logits = tf.constant([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [50.0, -50.0, 0.0]]])
    deltas = np.full([1, 3, 3, 4], 7.0, np.float32)
    deltas[0, 0, 2] = [0.5, 0.0, 0.0, 2.0]  # class-2 deltas of RoI 0
    labels = tf.constant([[2, 0, 1]])
    valid = tf.constant([[True, True, False]])
    targets = tf.zeros([1, 3, 4])
    out = losses.rcnn_losses(logits, tf.constant(deltas), labels, targets, valid)
    # Uniform softmax over 3 classes -> CE ln3 for both valid RoIs.
    np.testing.assert_allclose(out["rcnn_class_loss"].numpy(), math.log(3.0), rtol=1e-5)
    # Smooth L1 beta 1 on RoI 0 class 2: 0.5*0.25 + (2 - 0.5) = 1.625, over 2 valid RoIs.
    np.testing.assert_allclose(out["rcnn_box_loss"].numpy(), 1.625 / 2.0, rtol=1e-5)


def test_focal_losses_reduce_to_ce_at_gamma_zero():
    logits = tf.constant([[1.0, -2.0, 0.5]])
    labels = tf.constant([2])
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    np.testing.assert_allclose(losses.softmax_focal_loss(labels, logits, 0.0), ce, rtol=1e-6)
    # Easy examples are down-weighted: (1 - p)^2 < 1.
    assert losses.softmax_focal_loss(labels, logits, 2.0).numpy()[0] < ce.numpy()[0]
    y = tf.constant([1.0, 0.0])
    x = tf.constant([0.3, -1.2])
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x)
    alpha_t = np.array([0.25, 0.75])
    np.testing.assert_allclose(losses.sigmoid_focal_loss(y, x, 0.0, 0.25), alpha_t * bce,
                               rtol=1e-6)
