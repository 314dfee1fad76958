"""Tests for tf_rcnn.ops.masks: hand-made mask targets, paste inverting the crop, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_rcnn.ops import masks as mask_ops


def test_mask_targets_hand_case():
    # GT box [10, 10, 20, 20] holds a 4x4 mask whose left half (columns 0, 1) is on, so the
    # shape's right edge is at x = 10 + 2 * 10/4 = 15. With S = 2, target cell centres are at
    # x = x1 + (q + 0.5) * w / 2, read in mask cells as u = (x - 10) * 4/10 - 0.5:
    #   RoI x in [10, 15]:   x = 11.25, 13.75 -> u = 0, 1 -> on, on
    #   RoI x in [15, 20]:   x = 16.25, 18.75 -> u = 2, 3 -> off, off
    #   RoI x in [12.5, 17.5]: x = 13.75, 16.25 -> u = 1, 2 -> on, off
    # Rows span the GT box, so every row is the same.
    gt_mask = np.zeros((1, 1, 4, 4), np.float32)
    gt_mask[..., :2] = 1.0
    gt_boxes = np.array([[[10.0, 10.0, 20.0, 20.0]]], np.float32)
    rois = np.array([[[10.0, 10.0, 20.0, 15.0], [10.0, 15.0, 20.0, 20.0],
                      [10.0, 12.5, 20.0, 17.5], [10.0, 12.5, 20.0, 17.5]]], np.float32)
    matched = np.array([[0, 0, 0, -1]], np.int32)  # the last RoI is background
    out = mask_ops.mask_targets(gt_mask, gt_boxes, rois, matched, output_size=2).numpy()
    assert out.shape == (1, 4, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], [[1, 1], [1, 1]])
    np.testing.assert_array_equal(out[0, 1], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(out[0, 2], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(out[0, 3], 0)


def test_mask_targets_picks_the_matched_gt_per_image():
    # Two images, two GTs each, constant masks of distinct on/off patterns: image b, GT m is
    # full (all 1) when (b + m) is even and empty otherwise.
    masks = np.zeros((2, 2, 6, 6), np.float32)
    masks[0, 0] = masks[1, 1] = 1.0
    gt_boxes = np.tile(np.array([[0.0, 0.0, 30.0, 30.0], [5.0, 5.0, 25.0, 25.0]], np.float32),
                       (2, 1, 1))
    rois = np.tile(np.array([[[8.0, 8.0, 20.0, 20.0]] * 3], np.float32), (2, 1, 1))
    matched = np.array([[0, 1, 0], [0, 1, 1]], np.int32)
    out = mask_ops.mask_targets(masks, gt_boxes, rois, matched, output_size=7).numpy()
    expected_full = np.array([[1, 0, 1], [0, 1, 1]], bool)
    for b in range(2):
        for r in range(3):
            np.testing.assert_array_equal(out[b, r], float(expected_full[b, r]))


def test_mask_targets_no_gt_and_empty_rois():
    no_gt = mask_ops.mask_targets(
        tf.zeros([2, 0, 8, 8]), tf.zeros([2, 0, 4]), tf.constant([[[0.0, 0.0, 5.0, 5.0]]] * 2),
        tf.zeros([2, 1], tf.int32), output_size=4,
    )
    np.testing.assert_array_equal(no_gt.numpy(), np.zeros((2, 1, 4, 4)))
    no_rois = mask_ops.mask_targets(
        tf.ones([2, 3, 8, 8]), tf.ones([2, 3, 4]), tf.zeros([2, 0, 4]), tf.zeros([2, 0], tf.int32)
    )
    assert no_rois.shape == (2, 0, 28, 28)
    # All-padding GT rows (-1 boxes, zero masks) stay finite and zero.
    padded = mask_ops.mask_targets(
        tf.zeros([1, 2, 8, 8]), -tf.ones([1, 2, 4]), tf.constant([[[0.0, 0.0, 5.0, 5.0]]]),
        tf.zeros([1, 1], tf.int32), output_size=4,
    )
    np.testing.assert_array_equal(padded.numpy(), 0.0)


@pytest.mark.parametrize(
    "roi",
    [
        [5.0, 7.0, 20.0, 31.0],  # the rectangle's own box: the crop is all on
        [2.0, 4.0, 30.0, 32.0],  # a 28 x 28 RoI around it: 1:1 resampling
        [3.0, 20.0, 17.0, 34.0],  # a 14 x 14 RoI cutting the rectangle: half-pixel cells
    ],
)
def test_paste_inverts_crop(roi):
    # A full-image rectangle mask is "cropped" with mask_targets (the image itself is the GT
    # mask, its GT box the whole image), then pasted back into the same RoI. The RoIs are
    # chosen so that rectangle edges fall on crop-cell edges (28 cells over 14 or 28 pixels, or
    # the rectangle's own box); otherwise a 28-cell grid cannot hold the edge and one pixel
    # column may legitimately flip.
    height, width = 32, 40
    image = np.zeros((height, width), np.float32)
    image[5:20, 7:31] = 1.0  # rectangle [5, 7, 20, 31]
    crop = mask_ops.mask_targets(
        image[None, None], np.array([[[0.0, 0.0, height, width]]], np.float32),
        np.array([[roi]], np.float32), np.zeros((1, 1), np.int32), output_size=28,
    )
    pasted = mask_ops.paste_masks(crop, np.array([[roi]], np.float32), (height, width))
    assert pasted.dtype == tf.uint8 and pasted.shape == (1, 1, height, width)
    y1, x1, y2, x2 = (int(v) for v in roi)
    expected = np.zeros((height, width), np.uint8)
    expected[y1:y2, x1:x2] = image[y1:y2, x1:x2]
    np.testing.assert_array_equal(pasted.numpy()[0, 0], expected)


def test_paste_masks_borders_and_soft_output():
    # A full 28x28 mask in box [2, 3, 6, 9] (fractional-free): on exactly rows 2..5, cols 3..8.
    masks = np.ones((1, 2, 28, 28), np.float32)
    boxes = np.array([[[2.0, 3.0, 6.0, 9.0], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    out = mask_ops.paste_masks(masks, boxes, tf.constant([10, 12])).numpy()
    expected = np.zeros((10, 12), np.uint8)
    expected[2:6, 3:9] = 1
    np.testing.assert_array_equal(out[0, 0], expected)
    np.testing.assert_array_equal(out[0, 1], 0)  # a degenerate box pastes nothing
    soft = mask_ops.paste_masks(masks * 0.3, boxes, (10, 12), threshold=None).numpy()
    assert soft.dtype == np.float32
    np.testing.assert_allclose(soft[0, 0, 3, 4], 0.3, atol=1e-6)
    assert soft[0, 0, 0, 0] == 0.0


def test_paste_masks_in_graph_with_dynamic_counts():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 14, 14]),
                                  tf.TensorSpec([None, None, 4])])
    def paste(m, b):
        return mask_ops.paste_masks(m, b, (16, 20))

    assert paste(tf.zeros([2, 0, 14, 14]), tf.zeros([2, 0, 4])).shape == (2, 0, 16, 20)
    out = paste(tf.ones([1, 3, 14, 14]), tf.constant([[[1.0, 1.0, 5.0, 5.0]] * 3]))
    assert out.shape == (1, 3, 16, 20) and int(tf.reduce_sum(out)) == 3 * 16


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_size"):
        mask_ops.mask_targets(tf.zeros([1, 1, 4, 4]), tf.zeros([1, 1, 4]), tf.zeros([1, 1, 4]),
                              tf.zeros([1, 1], tf.int32), output_size=0)
    with pytest.raises(ValueError, match="gt_masks"):
        mask_ops.mask_targets(tf.zeros([1, 4, 4]), tf.zeros([1, 1, 4]), tf.zeros([1, 1, 4]),
                              tf.zeros([1, 1], tf.int32))
    with pytest.raises(ValueError, match="image_size"):
        mask_ops.paste_masks(tf.zeros([1, 1, 4, 4]), tf.zeros([1, 1, 4]), tf.zeros([2, 2]))


def _torchvision_paste_reference(mask: np.ndarray, box_xyxy: np.ndarray, height: int,
                                 width: int) -> np.ndarray:
    """torchvision's paste_masks_in_image for one mask, from its definition (float64 loops):
    pad the S x S mask with a zero cell, widen the box by (S + 2) / S about its centre, cast
    its corners to int (towards zero), resize the padded mask bilinearly (half-pixel centres,
    source positions clamped to the grid) to (y2 - y1 + 1) x (x2 - x1 + 1) and write it at
    rows y1..y2, columns x1..x2 (clipped to the image)."""
    size = mask.shape[0]
    padded = np.zeros((size + 2, size + 2))
    padded[1:-1, 1:-1] = mask
    scale = (size + 2) / size
    x1, y1, x2, y2 = box_xyxy
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = (x2 - x1) / 2 * scale, (y2 - y1) / 2 * scale
    bx1, by1, bx2, by2 = (int(v) for v in (cx - hw, cy - hh, cx + hw, cy + hh))
    w, h = max(bx2 - bx1 + 1, 1), max(by2 - by1 + 1, 1)

    def source(i: int, out: int, n: int) -> tuple[int, int, float]:
        s = max((i + 0.5) * n / out - 0.5, 0.0)
        lo = min(int(np.floor(s)), n - 1)
        return lo, min(lo + 1, n - 1), s - lo

    resized = np.zeros((h, w))
    n = size + 2
    for r in range(h):
        r0, r1, fr = source(r, h, n)
        for c in range(w):
            c0, c1, fc = source(c, w, n)
            top = (1 - fc) * padded[r0, c0] + fc * padded[r0, c1]
            bottom = (1 - fc) * padded[r1, c0] + fc * padded[r1, c1]
            resized[r, c] = (1 - fr) * top + fr * bottom
    out = np.zeros((height, width))
    ys, ye = max(by1, 0), min(by2 + 1, height)
    xs, xe = max(bx1, 0), min(bx2 + 1, width)
    out[ys:ye, xs:xe] = resized[ys - by1:ye - by1, xs - bx1:xe - bx1]
    return out


def test_torchvision_paste_rule_matches_its_definition(rng):
    # Boxes inside, across the border and tiny; masks smooth in [0, 1].
    masks = rng.uniform(0, 1, (4, 7, 7)).astype(np.float32)
    boxes_xyxy = np.array([[3.2, 2.7, 17.9, 11.1], [-4.0, 5.5, 9.0, 25.0],
                           [10.0, 10.0, 10.6, 11.2], [0.0, 0.0, 23.0, 19.0]], np.float32)
    boxes_yxyx = boxes_xyxy[:, [1, 0, 3, 2]]
    got = mask_ops.paste_masks(masks[None], boxes_yxyx[None], (20, 24), threshold=None,
                               rule="torchvision").numpy()[0]
    for d in range(4):
        want = _torchvision_paste_reference(masks[d], boxes_xyxy[d], 20, 24)
        np.testing.assert_allclose(got[d], want, atol=2e-5, err_msg=f"detection {d}")
    # Binarised as torchvision's COCO evaluation does: > 0.5 (the tf_rcnn rule keeps >= 0.5).
    half = np.full((1, 1, 7, 7), 0.5, np.float32)
    box = np.array([[[2.0, 2.0, 16.0, 16.0]]], np.float32)
    assert mask_ops.paste_masks(half, box, (20, 20), rule="torchvision").numpy().sum() == 0
    assert mask_ops.paste_masks(half, box, (20, 20)).numpy().sum() > 0
    with pytest.raises(ValueError, match="model.mask_head.paste_rule"):
        mask_ops.paste_masks(half, box, (20, 20), rule="nearest")
