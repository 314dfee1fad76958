"""Tests for tf_rcnn.ops.anchors: base anchors, grid order, multi-level, inside-image mask."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.reference import numpy_boxes as ref
from tf_rcnn.ops import anchors as anchor_ops


def test_base_anchors_hand_case():
    # size 16, ratio 1: h = w = 16 -> [-8, -8, 8, 8].
    # size 16, ratio 4 (h/w): h = 16 * 2 = 32, w = 16 / 2 = 8 -> [-16, -4, 16, 4].
    # size 32, ratio 1: [-16, -16, 16, 16].
    out = anchor_ops.generate_base_anchors([16, 32], [1.0, 4.0]).numpy()
    expected = [[-8, -8, 8, 8], [-16, -4, 16, 4], [-16, -16, 16, 16], [-32, -8, 32, 8]]
    np.testing.assert_allclose(out, expected)


def test_base_anchors_preserve_area_and_ratio():
    sizes, ratios = [32.0, 45.25, 64.0], [0.5, 1.0, 2.0]
    out = anchor_ops.generate_base_anchors(sizes, ratios).numpy()
    assert out.shape == (9, 4)
    h = out[:, 2] - out[:, 0]
    w = out[:, 3] - out[:, 1]
    np.testing.assert_allclose(h * w, np.repeat(np.square(sizes), 3), rtol=1e-6)
    np.testing.assert_allclose(h / w, np.tile(ratios, 3), rtol=1e-6)
    np.testing.assert_allclose(out[:, :2] + out[:, 2:], 0.0, atol=1e-5)  # centred at 0
    np.testing.assert_allclose(out, ref.base_anchors(sizes, ratios), rtol=1e-6)


@pytest.mark.parametrize("bad", [{"sizes": [], "aspect_ratios": [1.0]},
                                 {"sizes": [0.0], "aspect_ratios": [1.0]},
                                 {"sizes": [8.0], "aspect_ratios": [-1.0]}])
def test_base_anchors_bad_input(bad):
    with pytest.raises(ValueError, match="sizes|aspect_ratios"):
        anchor_ops.generate_base_anchors(**bad)


def test_grid_anchors_hand_case_and_order():
    base = anchor_ops.generate_base_anchors([8], [1.0, 4.0])  # A = 2
    out = anchor_ops.grid_anchors(base, 2, 3, stride=16, offset=0.5).numpy()
    assert out.shape == (2 * 3 * 2, 4)
    # Cell (y=1, x=2), anchor a=1: row (1 * 3 + 2) * 2 + 1 = 11.
    # Centre = ((1 + 0.5) * 16, (2 + 0.5) * 16) = (24, 40); base[1] = [-8, -2, 8, 2].
    np.testing.assert_allclose(out[11], [16, 38, 32, 42])
    # offset 0: cell (0, 1) anchor 0 is row 2, centre (0, 16): [-4, 12, 4, 20].
    out0 = anchor_ops.grid_anchors(base, 2, 3, stride=16, offset=0.0).numpy()
    np.testing.assert_allclose(out0[2], [-4, 12, 4, 20])
    np.testing.assert_allclose(out, ref.grid_anchors(base.numpy(), 2, 3, 16, 0.5), atol=1e-5)


def test_grid_anchors_dynamic_shape_in_tf_function():
    base = anchor_ops.generate_base_anchors([32, 64], [0.5, 1.0, 2.0])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 8])])
    def fn(feature):
        shape = tf.shape(feature)
        return anchor_ops.grid_anchors(base, shape[1], shape[2], stride=8)

    out = fn(tf.zeros([1, 5, 7, 8])).numpy()
    np.testing.assert_allclose(out, ref.grid_anchors(base.numpy(), 5, 7, 8, 0.5), atol=1e-4)
    assert fn(tf.zeros([2, 0, 3, 8])).shape == (0, 4)


def test_multilevel_anchors_and_counts():
    shapes = [(4, 6), (2, 3), (1, 2)]
    strides = [4, 8, 16]
    sizes = [[16], [32], [64]]
    ratios = [0.5, 1.0, 2.0]
    out = anchor_ops.multilevel_anchors(shapes, strides, sizes, ratios).numpy()
    counts = anchor_ops.num_anchors_per_level(shapes, 3)
    assert counts == [72, 18, 6]
    assert out.shape == (sum(counts), 4)
    start = 0
    for (h, w), s, sz, n in zip(shapes, strides, sizes, counts, strict=True):
        expected = ref.grid_anchors(ref.base_anchors(sz, ratios), h, w, s, 0.5)
        np.testing.assert_allclose(out[start:start + n], expected, atol=1e-4)
        start += n
    with pytest.raises(ValueError, match="one entry per level"):
        anchor_ops.multilevel_anchors(shapes, strides[:2], sizes, ratios)
    with pytest.raises(ValueError, match="num_anchors_per_location"):
        anchor_ops.num_anchors_per_level(shapes, [3, 3])


def test_inside_image_mask_per_image_shapes():
    anchors = tf.constant([[0, 0, 10, 10],      # inside both
                           [-1, 0, 10, 10],     # crosses the top edge
                           [0, 0, 20, 30],      # inside image 1 only (H=20, W=30)
                           [5, 5, 21, 12]], tf.float32)  # 1 px below image 1 (y2 = 21 > 20)
    image_shape = tf.constant([[16, 16], [20, 30]], tf.int32)
    out = anchor_ops.inside_image_mask(anchors, image_shape).numpy()
    np.testing.assert_array_equal(out, [[True, False, False, False],
                                        [True, False, True, False]])
    # allowed_border = 1 lets anchors stick out by up to one pixel.
    out = anchor_ops.inside_image_mask(anchors, image_shape, allowed_border=1.0).numpy()
    np.testing.assert_array_equal(out, [[True, True, False, False],
                                        [True, True, True, True]])
    assert anchor_ops.inside_image_mask(tf.zeros([0, 4]), image_shape).shape == (2, 0)
    with pytest.raises(ValueError, match="image_shape"):
        anchor_ops.inside_image_mask(anchors, tf.constant([16, 16]))


def test_rounded_base_anchors_like_torchvision():
    # Size 32, ratio h/w 0.5: h = 32 * sqrt(0.5) = 22.627, w = 45.255; halves 11.31 and 22.63
    # round to 11 and 23. Ratio 1: exactly 16. Ratio 2: the transpose of ratio 0.5.
    rounded = anchor_ops.generate_base_anchors([32], [0.5, 1.0, 2.0], round_coordinates=True)
    np.testing.assert_array_equal(rounded.numpy(), [[-11, -23, 11, 23], [-16, -16, 16, 16],
                                                    [-23, -11, 23, 11]])
    # Halves go to the even integer, like torch.round: size 5, ratio 1 -> +-2.5 -> +-2.
    half = anchor_ops.generate_base_anchors([5], [1.0], round_coordinates=True).numpy()
    np.testing.assert_array_equal(half, [[-2, -2, 2, 2]])
