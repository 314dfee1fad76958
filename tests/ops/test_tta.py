"""TTA arithmetic (tf_rcnn.ops.tta): views, boxes into a view and back, merging by NMS and by
weighted box voting against NumPy references written from the definitions."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_rcnn.ops import tta as tta_ops


def test_view_list_scales_then_flipped_scales():
    assert tta_ops.view_list([1.0, 1.5], True) == [(1.0, False), (1.5, False), (1.0, True),
                                                   (1.5, True)]
    assert tta_ops.view_list([0.8], False) == [(0.8, False)]


def test_flip_images_mirrors_inside_each_true_width():
    # Two 1x5 images, true widths 3 and 5; pixel value = column index.
    images = tf.constant(np.tile(np.arange(5, dtype=np.float32)[None, None, :, None],
                                 (2, 1, 1, 1)))
    flipped = tta_ops.flip_images(images, tf.constant([3, 5]))[..., 0].numpy()
    # Width 3: columns 0..2 read 2, 1, 0; padding columns 3, 4 stay. Width 5: 4..0.
    np.testing.assert_array_equal(flipped[0, 0], [2, 1, 0, 3, 4])
    np.testing.assert_array_equal(flipped[1, 0], [4, 3, 2, 1, 0])


def test_resize_images_hand_computed():
    # Canvas 40 x 64, image 40 x 50, factor 1.3: new canvas round(52.0) = 52 by
    # round(83.2) = 83, so scale = (52 / 40, 83 / 64) = (1.3, 1.296875); padded to 32s: 64 x 96;
    # true size round(40 * 1.3) = 52 by round(50 * 1.296875 = 64.84375) = 65.
    images = tf.ones([1, 40, 64, 3])
    view, shape, scale = tta_ops.resize_images(images, tf.constant([[40, 50]]), 1.3, 32)
    assert view.shape == (1, 64, 96, 3)
    np.testing.assert_array_equal(shape.numpy(), [[52, 65]])
    np.testing.assert_allclose(scale.numpy(), [1.3, 1.296875], rtol=1e-7)
    # Content resized, padding zero.
    assert float(view[0, 51, 82, 0]) == pytest.approx(1.0)
    assert float(tf.reduce_max(tf.abs(view[0, 52:]))) == 0.0
    assert float(tf.reduce_max(tf.abs(view[0, :, 83:]))) == 0.0
    # Factor 1.0 is the identity (no resampling at all).
    same, same_shape, one = tta_ops.resize_images(images, tf.constant([[40, 50]]), 1.0, 32)
    assert same is images and one.numpy().tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(same_shape.numpy(), [[40, 50]])


def test_boxes_into_a_flipped_scaled_view_and_back_hand_computed():
    # Image width 50, box [4, 10, 20, 30]: flipped x' = 50 - x -> [4, 20, 20, 40]; then times
    # (1.3, 1.296875): [5.2, 25.9375, 26.0, 51.875].
    boxes = tf.constant([[[4.0, 10.0, 20.0, 30.0]]])
    scale = tf.constant([1.3, 1.296875])
    view = tta_ops.boxes_to_view(boxes, scale, tf.constant([50]), flipped=True)
    np.testing.assert_allclose(view.numpy(), [[[5.2, 25.9375, 26.0, 51.875]]], rtol=1e-6)
    unflipped = tta_ops.boxes_to_view(boxes, scale, tf.constant([50]), flipped=False)
    np.testing.assert_allclose(unflipped.numpy(), [[[5.2, 12.96875, 26.0, 38.90625]]],
                               rtol=1e-6)
    back = tta_ops.boxes_from_view(view, scale, tf.constant([[40, 50]]), flipped=True)
    np.testing.assert_allclose(back.numpy(), boxes.numpy(), atol=1e-5)
    # A detection in the view partly outside the image is clipped to it on the way back:
    # [0, 60, 13, 70] / 1.3 in x and y... x: 60 / 1.296875 = 46.27, 70 / 1.296875 = 53.98;
    # mirrored in width 50: [-3.98, 3.73] -> clipped to [0, 3.73].
    out = tta_ops.boxes_from_view(tf.constant([[[0.0, 60.0, 13.0, 70.0]]]), scale,
                                  tf.constant([[40, 50]]), flipped=True).numpy()[0, 0]
    np.testing.assert_allclose(out, [0.0, 0.0, 10.0, 50 - 60 / 1.296875], rtol=1e-5)


# ------------------------------------------------------------------------- NumPy references
def _area(z: np.ndarray) -> np.ndarray:
    return np.maximum(z[..., 2] - z[..., 0], 0) * np.maximum(z[..., 3] - z[..., 1], 0)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box against ``[N, 4]`` boxes (yxyx, no +1)."""
    y1 = np.maximum(a[0], b[:, 0])
    x1 = np.maximum(a[1], b[:, 1])
    y2 = np.minimum(a[2], b[:, 2])
    x2 = np.minimum(a[3], b[:, 3])
    inter = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def reference_merge(boxes, scores, classes, max_detections, iou_threshold, vote):
    """Per image: greedy NMS within each class (best first; a box is dropped when its IoU with
    a kept box of its class is above the threshold), the best ``max_detections`` over all
    classes; with ``vote`` each kept box becomes the score-weighted mean of the union's boxes
    of its class with IoU >= threshold."""
    out = []
    for b, s, c in zip(boxes, scores, classes, strict=True):
        kept = []
        for k in np.unique(c[c > 0]):
            idx = np.where(c == k)[0]
            idx = idx[np.argsort(-s[idx], kind="stable")]
            chosen: list[int] = []
            for i in idx:
                if not chosen or (_iou(b[i], b[chosen]) <= iou_threshold).all():
                    chosen.append(i)
            kept += chosen
        kept = sorted(kept, key=lambda i: -s[i])[:max_detections]
        rows = []
        for i in kept:
            box = b[i]
            if vote:
                member = (c == c[i]) & (_iou(b[i], b) >= iou_threshold) & (s > 0)
                box = (s[member, None] * b[member]).sum(0) / s[member].sum()
            rows.append((box, s[i], c[i]))
        out.append(rows)
    return out


def _union(seed: int):
    """Two images of 30 union rows around 6 centres (clusters overlap), 3 classes, padding."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(10, 50, (6, 2))
    boxes = np.zeros((2, 30, 4), np.float32)
    scores = np.zeros((2, 30), np.float32)
    classes = np.zeros((2, 30), np.int32)
    for image, n in ((0, 30), (1, 21)):  # image 1: 9 padding rows
        pick = rng.integers(0, 6, n)
        c = centres[pick] + rng.normal(0, 2.0, (n, 2))
        half = rng.uniform(5, 9, (n, 2))
        boxes[image, :n] = np.concatenate([c - half, c + half], axis=1)
        scores[image, :n] = rng.uniform(0.06, 1.0, n)
        classes[image, :n] = 1 + pick % 3
    return boxes, scores, classes


@pytest.mark.parametrize("method", ["nms", "vote"])
@pytest.mark.parametrize("seed", [0, 1])
def test_merge_matches_the_numpy_reference(method, seed):
    boxes, scores, classes = _union(seed)
    got = tta_ops.merge_detections(tf.constant(boxes), tf.constant(scores), tf.constant(classes),
                                   num_classes=3, max_detections=8, iou_threshold=0.5,
                                   method=method)
    got = {k: v.numpy() for k, v in got.items()}
    want = reference_merge(boxes, scores, classes, 8, 0.5, vote=method == "vote")
    for image, rows in enumerate(want):
        n = len(rows)
        assert got["num_detections"][image] == n
        np.testing.assert_allclose(got["detection_scores"][image, :n], [r[1] for r in rows],
                                   rtol=1e-6)
        np.testing.assert_array_equal(got["detection_classes"][image, :n], [r[2] for r in rows])
        np.testing.assert_allclose(got["detection_boxes"][image, :n], [r[0] for r in rows],
                                   atol=1e-4)
        # Padding rows: class 0, score 0.
        assert (got["detection_classes"][image, n:] == 0).all()
        assert (got["detection_scores"][image, n:] == 0).all()
    if method == "vote":  # voting moved some boxes (else the test would not test it)
        plain = reference_merge(boxes, scores, classes, 8, 0.5, vote=False)
        moved = [np.abs(a[0] - b[0]).max() for r, p in zip(want, plain, strict=True)
                 for a, b in zip(r, p, strict=True)]
        assert max(moved) > 0.1


def test_vote_hand_computed():
    # Class 1: boxes A = [0, 0, 10, 10] (0.9) and B = [0, 1, 10, 11] (0.3), IoU 90 / 110 =
    # 0.818 >= 0.5: one cluster; NMS keeps A; voted x = (0.9 * 0 + 0.3 * 1) / 1.2 = 0.25.
    # C = [0, 1, 10, 11] of class 2 (0.5) is not in A's cluster and is kept as it is.
    boxes = tf.constant([[[0, 0, 10, 10], [0, 1, 10, 11], [0, 1, 10, 11]]], tf.float32)
    got = tta_ops.merge_detections(boxes, tf.constant([[0.9, 0.3, 0.5]]),
                                   tf.constant([[1, 1, 2]]), num_classes=2, max_detections=3,
                                   method="vote")
    assert int(got["num_detections"][0]) == 2
    np.testing.assert_allclose(got["detection_boxes"][0, :2].numpy(),
                               [[0, 0.25, 10, 10.25], [0, 1, 10, 11]], atol=1e-6)
    np.testing.assert_array_equal(got["detection_classes"][0].numpy(), [1, 2, 0])


def test_merge_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="nms"):
        tta_ops.merge_detections(tf.zeros([1, 1, 4]), tf.zeros([1, 1]), tf.zeros([1, 1], tf.int32),
                                 1, 1, method="mean")
