"""OHEM as its own part of the second stage: the selection rule (hand cases), exactly the B
hardest RoIs get a gradient, the sampler's one labelling rule, and OHEM on every family."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support import tiny_batch, tiny_config
from tf_rcnn.layers.roi_sampler import RoISampler
from tf_rcnn.models import builder
from tf_rcnn.models.roi_heads.ohem import OHEMSampler, ohem_select
from tf_rcnn.ops.losses import rcnn_per_roi_losses


def _disjoint_boxes(n: int) -> np.ndarray:
    # Boxes 10 px wide every 20 px along x: pairwise IoU 0.
    return np.array([[0.0, 20.0 * i, 10.0, 20.0 * i + 10.0] for i in range(n)], np.float32)


def test_ohem_select_keeps_the_top_losses_after_nms():
    boxes = _disjoint_boxes(6)
    # Box 4 nearly duplicates box 1: [0, 20, 10, 30] vs [0, 21, 10, 31], IoU = 90 / 110 = 0.82.
    boxes[4] = [0.0, 21.0, 10.0, 31.0]
    losses = np.array([[0.1, 0.9, 0.5, 0.3, 0.8, 0.2]], np.float32)
    valid = np.ones([1, 6], bool)
    # NMS 0.7 by loss: 1 (0.9) kept, 4 (0.8) suppressed (0.82 > 0.7), 2 (0.5), 3 (0.3) kept.
    idx, sel = ohem_select(boxes[None], losses, valid, batch_size=3, nms_threshold=0.7)
    assert idx.numpy().tolist() == [[1, 2, 3]] and sel.numpy().all()
    # Without NMS it is plain top-3 by loss: 0.9, 0.8, 0.5.
    idx, _ = ohem_select(boxes[None], losses, valid, batch_size=3, nms_threshold=1.0)
    assert idx.numpy().tolist() == [[1, 4, 2]]
    # An invalid RoI is never picked whatever its loss; too few candidates -> padding rows.
    valid[0, 1] = False
    idx, sel = ohem_select(boxes[None], losses, valid, batch_size=7, nms_threshold=0.7)
    assert idx.numpy()[0, :5].tolist() == [4, 2, 3, 5, 0]
    assert sel.numpy().tolist() == [[True] * 5 + [False] * 2]


def test_ohem_backpropagates_exactly_the_b_hardest_rois():
    # 10 disjoint background RoIs whose CE loss grows with the background logit deficit.
    n, batch_size = 10, 4
    rng = np.random.default_rng(3)
    logits = tf.Variable(rng.normal(size=(1, n, 3)).astype(np.float32))
    deltas = tf.Variable(rng.normal(size=(1, n, 1, 4)).astype(np.float32))
    labels = tf.constant([[0, 1, 0, 2, 0, 0, 1, 0, 0, 2]], tf.int32)
    targets = tf.constant(rng.normal(size=(1, n, 4)).astype(np.float32))
    # Row i's matched GT is i (so the selected rows can be told apart below).
    labeled = {"rois": tf.constant(_disjoint_boxes(n)[None]), "labels": labels,
               "valid": tf.ones([1, n], tf.bool), "box_targets": targets,
               "matched_gt_indices": tf.range(n)[None]}
    ohem = OHEMSampler(batch_size_per_image=batch_size)
    with tf.GradientTape() as tape:
        losses, rows = ohem(logits, deltas, labeled)
        total = losses["rcnn_class_loss"] + losses["rcnn_box_loss"]
    roi_losses = rcnn_per_roi_losses(logits, deltas, labels, targets).numpy()[0]
    top = np.argsort(-roi_losses)[:batch_size]
    assert sorted(rows["matched_gt_indices"].numpy()[0].tolist()) == sorted(top.tolist())
    assert rows["valid"].numpy().all()
    np.testing.assert_array_equal(rows["labels"].numpy()[0],
                                  labels.numpy()[0, rows["matched_gt_indices"].numpy()[0]])
    # Exactly the selected rows get a gradient (class and box), the others exactly zero.
    g_logits, g_deltas = tape.gradient(total, [logits, deltas])
    has_grad = np.any(g_logits.numpy()[0] != 0, axis=-1)
    assert sorted(np.flatnonzero(has_grad).tolist()) == sorted(top.tolist())
    fg_selected = [i for i in top if labels.numpy()[0, i] > 0]
    assert sorted(np.flatnonzero(np.any(g_deltas.numpy()[0, :, 0] != 0, -1))) == sorted(
        fg_selected)
    # Normalisation: the class loss is the mean CE over the B selected RoIs.
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits).numpy()[0]
    np.testing.assert_allclose(losses["rcnn_class_loss"].numpy(), ce[top].mean(), rtol=1e-5)


def test_sampler_label_labels_every_proposal_and_appends_gt():
    proposals = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 8], [30, 30, 40, 40], [0, 0, 0, 0]]],
                            tf.float32)
    valid = tf.constant([[True, True, True, False]])
    gt_boxes = tf.constant([[[0, 0, 10, 10], [-1, -1, -1, -1]]], tf.float32)
    gt_classes = tf.constant([[2, -1]], tf.int32)
    out = RoISampler(fg_iou=0.5, bg_iou_low=0.0).label(proposals, valid, gt_boxes, gt_classes)
    # IoU with the GT: 1.0 -> class 2; 80/100 = 0.8 -> class 2; 0 -> background; padding -> -1;
    # appended GT rows: the real one is class 2, the padded one -1.
    assert out["labels"].numpy().tolist() == [[2, 2, 0, -1, 2, -1]]
    assert out["valid"].numpy().tolist() == [[True, True, True, False, True, False]]
    # [0, 0, 10, 8] -> GT: dx = (5 - 4) / 8 * 10 = 1.25, dw = 5 * log(10 / 8).
    np.testing.assert_allclose(out["box_targets"].numpy()[0, 1],
                               [0.0, 1.25, 0.0, 5 * np.log(10 / 8)], atol=1e-5)
    # No GT at all: everything valid is background, no NaN.
    out = RoISampler().label(proposals, valid, tf.fill([1, 2, 4], -1.0), tf.fill([1, 2], -1))
    assert out["labels"].numpy().tolist() == [[0, 0, 0, -1, -1, -1]]
    assert np.all(np.isfinite(out["box_targets"].numpy()))




@pytest.mark.parametrize("family", ["faster_rcnn", "mask_rcnn", "rfcn"])
def test_ohem_trains_every_family(family):
    # --config.model.roi_head.ohem=True gives any second stage OHEM, not only R-FCN's.
    config = tiny_config(family)
    h = config.model.roi_head
    h.ohem, h.ohem_batch_size = True, 8
    model = builder.build_model(config)
    assert isinstance(model.roi_heads.ohem, OHEMSampler)
    images, targets = tiny_batch(masks=family == "mask_rcnn")
    with tf.GradientTape() as tape:
        losses = model.compute_losses(images, targets, training=True)
    assert all(np.isfinite(v.numpy()) for v in losses.values())
    grads = tape.gradient(losses["total_loss"], model.trainable_variables)
    predictor = [g for g, v in zip(grads, model.trainable_variables, strict=True)
                 if ("class_logits" in v.path or "cls_score_maps" in v.path) and g is not None]
    assert predictor and np.any(predictor[0].numpy() != 0)


def test_ohem_and_focal_loss_are_refused_together():
    config = tiny_config()
    config.model.roi_head.ohem = True
    config.model.roi_head.focal_gamma = 2.0
    with pytest.raises(ValueError, match="roi_head.ohem=True or --config.model.roi_head.focal"):
        builder.build_model(config)
