"""Tests for tf_rcnn.ops.boxes: hand cases, NumPy references, round trips, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from keras.utils import bounding_boxes

from tests.reference import numpy_boxes as ref
from tf_rcnn.ops import box_coder
from tf_rcnn.ops import boxes as box_ops

PAD = [-1.0, -1.0, -1.0, -1.0]


def _random_boxes(rng, shape, extent=100.0, min_size=0.1, max_size=40.0):
    ctr = rng.uniform(0, extent, shape + (2,))
    hw = rng.uniform(min_size, max_size, shape + (2,))
    return np.concatenate([ctr - hw / 2, ctr + hw / 2], -1).astype(np.float32)


def _mixed_boxes(rng, b, n):
    """Random boxes with degenerate (zero/negative size), sub-pixel and padded rows."""
    boxes = _random_boxes(rng, (b, n))
    boxes[:, 0] = [5, 5, 5, 9]  # zero height
    boxes[:, 1] = [10, 10, 4, 20]  # y2 < y1: degenerate, area 0
    boxes[:, 2] = [3.2, 7.1, 3.7, 7.4]  # sub-pixel: 0.5 x 0.3
    boxes[:, 3] = PAD  # padding
    return boxes


def test_area_iou_ioa_hand_case():
    a = tf.constant([[0, 0, 10, 10], [0, 0, 0, 5]], tf.float32)
    b = tf.constant([[5, 5, 15, 20], PAD], tf.float32)
    # area a0 = 10 * 10 = 100, a1 = 0 (zero height); b0 = 10 * 15 = 150, padding 0.
    np.testing.assert_allclose(box_ops.area(a).numpy(), [100, 0])
    np.testing.assert_allclose(box_ops.area(b).numpy(), [150, 0])
    # a0 vs b0: intersection [5, 5, 10, 10] = 25; union = 100 + 150 - 25 = 225; IoU = 1 / 9.
    # IoA(a0, b0) = 25 / 100. Degenerate and padded pairs give 0, never NaN.
    np.testing.assert_allclose(box_ops.iou(a, b).numpy(), [[1 / 9, 0], [0, 0]], rtol=1e-6)
    np.testing.assert_allclose(box_ops.ioa(a, b).numpy(), [[0.25, 0], [0, 0]], rtol=1e-6)


def test_iou_ioa_match_reference_batched(rng):
    b, n, m = 2, 12, 9
    boxes1 = _mixed_boxes(rng, b, n)
    boxes2 = _mixed_boxes(rng, b, m)
    boxes2[1, 4:] = PAD  # more padding in image 1
    got_iou = box_ops.iou(boxes1, boxes2).numpy()
    got_ioa = box_ops.ioa(boxes1, boxes2).numpy()
    assert got_iou.shape == (b, n, m)
    for i in range(b):
        np.testing.assert_allclose(got_iou[i], ref.iou(boxes1[i], boxes2[i]), atol=1e-6)
        np.testing.assert_allclose(got_ioa[i], ref.ioa(boxes1[i], boxes2[i]), atol=1e-6)
    assert np.isfinite(got_iou).all() and np.isfinite(got_ioa).all()
    np.testing.assert_allclose(np.diagonal(box_ops.iou(boxes1[0, 4:], boxes1[0, 4:])), 1.0,
                               rtol=1e-5)
    assert box_ops.iou(tf.zeros([2, 0, 4]), boxes2).shape == (2, 0, m)


def test_encode_hand_case():
    # anchor [0, 0, 10, 20]: centre (5, 10), h 10, w 20.
    # box [2, 4, 22, 24]: centre (12, 14), h 20, w 20.
    # dy = (12 - 5) / 10 = 0.7, dx = (14 - 10) / 20 = 0.2, dh = log(2), dw = log(1) = 0.
    # With R-CNN weights (10, 10, 5, 5): (7, 2, 5 log 2, 0).
    anchor = tf.constant([0, 0, 10, 20], tf.float32)
    box = tf.constant([2, 4, 22, 24], tf.float32)
    np.testing.assert_allclose(box_coder.encode(box, anchor).numpy(), [0.7, 0.2, math.log(2), 0],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(box_coder.encode(box, anchor, box_coder.RCNN_BOX_WEIGHTS).numpy(),
                               [7, 2, 5 * math.log(2), 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weights", [box_coder.RPN_BOX_WEIGHTS, box_coder.RCNN_BOX_WEIGHTS])
def test_encode_decode_reference_and_round_trip(rng, weights):
    boxes = _random_boxes(rng, (2, 50), min_size=0.5)
    anchors = _random_boxes(rng, (2, 50), min_size=0.5)
    deltas = box_coder.encode(boxes, anchors, weights).numpy()
    for i in range(2):
        for j in range(50):
            np.testing.assert_allclose(deltas[i, j], ref.encode(boxes[i, j], anchors[i, j],
                                                                weights), rtol=1e-4, atol=1e-4)
    decoded = box_coder.decode(deltas, anchors, weights).numpy()
    np.testing.assert_allclose(decoded, boxes, rtol=1e-4, atol=1e-3)
    random_deltas = rng.normal(size=(2, 50, 4)).astype(np.float32)
    got = box_coder.decode(random_deltas, anchors, weights).numpy()
    for j in range(50):
        np.testing.assert_allclose(got[1, j], ref.decode(random_deltas[1, j], anchors[1, j],
                                                         weights), rtol=1e-4, atol=1e-3)


def test_decode_clamps_huge_dw_and_dh():
    # anchor 16 x 16 centred at (8, 8); dh = dw = 100 is clamped to log(1000 / 16), so the box
    # grows to exp(log(1000 / 16)) * 16 = 1000 pixels: [8 - 500, 8 - 500, 8 + 500, 8 + 500].
    anchor = tf.constant([[0, 0, 16, 16]], tf.float32)
    out = box_coder.decode(tf.constant([[0, 0, 100, 100]], tf.float32), anchor).numpy()
    np.testing.assert_allclose(out, [[-492, -492, 508, 508]], rtol=1e-5)
    # R-CNN weights: dw / 5 is clamped, so 5 * 1e4 gives the same 1000 pixels.
    out = box_coder.decode(tf.constant([[0, 0, 5e4, 5e4]]), anchor, box_coder.RCNN_BOX_WEIGHTS)
    np.testing.assert_allclose(out.numpy(), [[-492, -492, 508, 508]], rtol=1e-5)
    assert np.isfinite(box_coder.decode(tf.constant([[0, 0, 1e30, 1e30]]), anchor).numpy()).all()


def test_encode_degenerate_stays_finite():
    anchors = tf.constant([PAD, [0, 0, 10, 10]], tf.float32)
    boxes = tf.constant([[0, 0, 10, 10], PAD], tf.float32)
    assert np.isfinite(box_coder.encode(boxes, anchors).numpy()).all()


def test_clip_boxes_per_image_shapes():
    boxes = tf.constant([[[-5, -5, 50, 70]], [[-5, -5, 50, 70]]], tf.float32)
    image_shape = tf.constant([[40, 60], [100, 30]], tf.int32)  # (height, width) per image
    np.testing.assert_allclose(box_ops.clip_boxes(boxes, image_shape).numpy(),
                               [[[0, 0, 40, 60]], [[0, 0, 50, 30]]])
    # One shape for all: [2].
    np.testing.assert_allclose(box_ops.clip_boxes(boxes, [40, 60]).numpy()[1], [[0, 0, 40, 60]])


def test_valid_size_and_remove_small():
    boxes = tf.constant([[[0, 0, 10, 10], [0, 0, 2, 10], PAD]], tf.float32)
    np.testing.assert_array_equal(box_ops.valid_size_mask(boxes, 3.0).numpy(),
                                  [[True, False, False]])
    scores = box_ops.remove_small_boxes(boxes, tf.constant([[0.5, 0.6, 0.7]]), 3.0).numpy()
    np.testing.assert_array_equal(scores, [[0.5, -np.inf, -np.inf]])
    # A box exactly min_size high is kept (>=); with min_size 0 an empty box is not (> 0).
    edge = tf.constant([[0, 0, 3, 5], [0, 0, 0, 5]], tf.float32)
    assert box_ops.valid_size_mask(edge, 3.0).numpy().tolist() == [True, False]
    assert box_ops.valid_size_mask(edge, 0.0).numpy().tolist() == [True, False]


def test_normalize_denormalize_round_trip(rng):
    boxes = _random_boxes(rng, (2, 10))
    image_shape = tf.constant([[120, 80], [64, 200]], tf.int32)
    norm = box_ops.normalize(boxes, image_shape).numpy()
    # y / height and x / width of image 1: 64 and 200.
    np.testing.assert_allclose(norm[1, :, 0], boxes[1, :, 0] / 64, rtol=1e-6)
    np.testing.assert_allclose(norm[1, :, 3], boxes[1, :, 3] / 200, rtol=1e-6)
    np.testing.assert_allclose(box_ops.denormalize(norm, image_shape).numpy(), boxes, rtol=1e-6)


def test_flip_left_right_hand_case_and_twice_identity(rng):
    # W = 100: x1' = 100 - 30 = 70, x2' = 100 - 10 = 90.
    out = box_ops.flip_left_right(tf.constant([[1, 10, 2, 30]], tf.float32), 100).numpy()
    np.testing.assert_allclose(out, [[1, 70, 2, 90]])
    boxes = _random_boxes(rng, (3, 7))
    twice = box_ops.flip_left_right(box_ops.flip_left_right(boxes, 128), 128)
    np.testing.assert_allclose(twice.numpy(), boxes, atol=1e-5)


def test_format_conversions_hand_cases_and_keras_equivalence(rng):
    box = tf.constant([[1.0, 2.0, 4.0, 7.0]])  # y1, x1, y2, x2
    np.testing.assert_allclose(box_ops.yxyx_to_xyxy(box).numpy(), [[2, 1, 7, 4]])
    np.testing.assert_allclose(box_ops.xyxy_to_yxyx(box_ops.yxyx_to_xyxy(box)).numpy(),
                               box.numpy())
    # xywh: x = 2, y = 1, w = 7 - 2 = 5, h = 4 - 1 = 3.
    np.testing.assert_allclose(box_ops.yxyx_to_xywh(box).numpy(), [[2, 1, 5, 3]])
    np.testing.assert_allclose(box_ops.xywh_to_yxyx([[2.0, 1.0, 5.0, 3.0]]).numpy(), box.numpy())
    # Keras' converter gives bit-identical numbers on random sub-pixel boxes (why boxes.py uses
    # it) and the definitions hold exactly.
    boxes = _mixed_boxes(rng, 2, 20) + rng.uniform(0, 1, (2, 20, 4)).astype(np.float32)
    y1, x1, y2, x2 = np.moveaxis(boxes, -1, 0)
    np.testing.assert_array_equal(box_ops.yxyx_to_xywh(boxes).numpy(),
                                  np.stack([x1, y1, x2 - x1, y2 - y1], -1))
    for fn, src, tgt in [(box_ops.yxyx_to_xyxy, "yxyx", "xyxy"),
                         (box_ops.xyxy_to_yxyx, "xyxy", "yxyx"),
                         (box_ops.yxyx_to_xywh, "yxyx", "xywh"),
                         (box_ops.xywh_to_yxyx, "xywh", "yxyx")]:
        keras_out = bounding_boxes.convert_format(tf.constant(boxes), source=src, target=tgt)
        np.testing.assert_array_equal(fn(boxes).numpy(), np.asarray(keras_out))
    xywh = box_ops.yxyx_to_xywh(boxes)
    np.testing.assert_allclose(box_ops.xywh_to_yxyx(xywh).numpy(), boxes, atol=1e-4)
    assert box_ops.yxyx_to_xyxy(tf.constant([[1, 2, 3, 4]])).dtype == tf.int32


def test_conversions_and_iou_in_tf_function_with_dynamic_shapes():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4])])
    def fn(boxes):
        return box_ops.yxyx_to_xywh(boxes), box_ops.iou(boxes, boxes)

    xywh, overlaps = fn(tf.constant([[[0, 0, 2, 4]]], tf.float32))
    np.testing.assert_allclose(xywh.numpy(), [[[0, 0, 4, 2]]])
    np.testing.assert_allclose(overlaps.numpy(), [[[1.0]]])
    assert fn(tf.zeros([2, 0, 4]))[1].shape == (2, 0, 0)
