"""R-FCN: head layout, OHEM selection (hand cases), train step, predict, save/load, builder.

PS-RoI pooling itself (hand k = 3 case, NumPy reference, gradients) is tested in
tests/ops/test_roi_ops.py; here the head-level pieces built on it.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_rcnn
from tests.layer_contract import check_layer_contract
from tf_rcnn.config import load_config_file
from tf_rcnn.layers.target_assigners import RoISampler
from tf_rcnn.models import builder
from tf_rcnn.models.backbones.tiny import TinyBackbone
from tf_rcnn.models.detectors.rfcn import RFCN
from tf_rcnn.models.heads.rfcn import RFCNHead
from tf_rcnn.models.rfcn_heads import (
    RFCNRoIHeads,
    label_candidates,
    ohem_select,
    per_roi_losses,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOSS_KEYS = {"rpn_objectness_loss", "rpn_box_loss", "rcnn_class_loss", "rcnn_box_loss",
             "total_loss"}


def tiny_config(ohem: bool = True, pool_mode: str = "align"):
    config = load_config_file(os.path.join(REPO, "configs", "shapes_rfcn.py"))
    m = config.model
    m.backbone.widths = (8, 8, 16, 16)
    m.rpn.batch_size_per_image = 32
    m.rpn.pre_nms_topk_train = m.rpn.pre_nms_topk_test = 64
    m.rpn.post_nms_topk_train = m.rpn.post_nms_topk_test = 20
    m.roi_head.batch_size_per_image = 16
    m.roi_head.detections_per_image = 10
    m.rfcn.channels = 16
    m.rfcn.ohem = ohem
    m.rfcn.ohem_batch_size = 8
    m.rfcn.pool_mode = pool_mode
    return config


def tiny_batch(batch: int = 2, size: int = 64):
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(batch, size, size, 3)), tf.float32)
    boxes = np.full((batch, 3, 4), -1.0, np.float32)
    classes = np.full((batch, 3), -1, np.int32)
    boxes[0, :2] = [[4, 4, 30, 30], [20, 30, 50, 60]]
    classes[0, :2] = [1, 3]
    boxes[1, 0] = [10, 10, 40, 25]
    classes[1, 0] = 2
    targets = {
        "boxes": tf.constant(boxes),
        "classes": tf.constant(classes),
        "image_shape": tf.constant([[size, size], [size - 16, size]], tf.int32),
    }
    return images, targets


# ----------------------------------------------------------------------------- head


def test_rfcn_head_layer_contract():
    head = RFCNHead(num_classes=3, k=3, channels=8, spatial_scale=1 / 16, mode="align")
    features = tf.random.normal([2, 4, 4, 6])
    rois = tf.constant([[[0, 0, 64, 64], [8, 8, 40, 56]]] * 2, tf.float32)
    logits, deltas = check_layer_contract(head, (features, rois))
    assert logits.shape == (2, 2, 4) and deltas.shape == (2, 2, 1, 4)


def test_score_maps_equal_the_class_then_box_convolutions():
    # score_maps runs one conv with both kernels side by side; it must equal the two layers'
    # own outputs concatenated (class maps first, then box maps).
    head = RFCNHead(num_classes=3, k=3, channels=8, spatial_scale=1 / 16, mode="align")
    features = tf.random.normal([2, 5, 7, 6])
    maps = head.score_maps(features)
    reduced = head.reduce_conv(features)
    expected = tf.concat([head.cls_conv(reduced), head.box_conv(reduced)], axis=-1)
    assert maps.shape == (2, 5, 7, 3 * 3 * (3 + 1) + 3 * 3 * 4)
    np.testing.assert_allclose(maps.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_head_pool_reads_class_maps_then_box_maps_in_rfcn_layout():
    # k = 3, K = 1: class maps have k*k*(K+1) = 18 channels, box maps k*k*4 = 36. Channel
    # (c*k + i)*k + j holds the constant 10*c + (i*k + j) for output c in 0..5 (c = 0, 1 the
    # classes, c = 2..5 the deltas). Pool mode over the whole 6x6 map (scale 1): bin (i, j) reads
    # only its own constant, and voting averages 0..8 -> 4, so output c = 10*c + 4.
    k, outputs = 3, 6
    channel_values = np.array([10.0 * c + b for c in range(outputs) for b in range(k * k)])
    maps = tf.constant(np.broadcast_to(channel_values, (1, 6, 6, outputs * k * k)), tf.float32)
    head = RFCNHead(num_classes=1, k=k, channels=4, spatial_scale=1.0, mode="pool")
    logits, deltas = head.pool(maps, tf.constant([[[0.0, 0.0, 6.0, 6.0]]]))
    np.testing.assert_allclose(logits.numpy(), [[[4.0, 14.0]]], atol=1e-5)
    np.testing.assert_allclose(deltas.numpy(), [[[[24.0, 34.0, 44.0, 54.0]]]], atol=1e-5)


def test_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        RFCNHead(num_classes=0)
    with pytest.raises(ValueError, match="mode"):
        RFCNHead(num_classes=3, mode="max")
    with pytest.raises(ValueError, match="channels"):
        RFCNHead(num_classes=3, channels=0)


def test_tiny_backbone_dilate_c5_keeps_stride_16():
    backbone = TinyBackbone(widths=(4, 4, 8, 8), dilate_c5=True)
    out = backbone(tf.zeros([1, 64, 64, 3]))
    assert backbone.output_strides["C5"] == 16
    assert out["C5"].shape == (1, 4, 4, 8) and out["C4"].shape[1:3] == (4, 4)
    assert TinyBackbone.from_config(backbone.get_config()).dilate_c5


# ----------------------------------------------------------------------------- OHEM


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
    labeled = {"rois": tf.constant(_disjoint_boxes(n)[None]), "labels": labels,
               "valid": tf.ones([1, n], tf.bool), "box_targets": targets}
    heads = RFCNRoIHeads(RFCNHead(2, k=3, channels=4), ohem_batch_size=batch_size)
    with tf.GradientTape() as tape:
        losses, idx, sel = heads.ohem_losses(logits, deltas, labeled)
        total = losses["rcnn_class_loss"] + losses["rcnn_box_loss"]
    roi_losses = per_roi_losses(logits, deltas, labels, targets).numpy()[0]
    top = np.argsort(-roi_losses)[:batch_size]
    assert sorted(idx.numpy()[0].tolist()) == sorted(top.tolist()) and sel.numpy().all()
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


def test_label_candidates_labels_every_proposal_and_appends_gt():
    proposals = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 8], [30, 30, 40, 40], [0, 0, 0, 0]]],
                            tf.float32)
    valid = tf.constant([[True, True, True, False]])
    gt_boxes = tf.constant([[[0, 0, 10, 10], [-1, -1, -1, -1]]], tf.float32)
    gt_classes = tf.constant([[2, -1]], tf.int32)
    out = label_candidates(proposals, valid, gt_boxes, gt_classes,
                           RoISampler(fg_iou=0.5, bg_iou_low=0.0))
    # IoU with the GT: 1.0 -> class 2; 80/100 = 0.8 -> class 2; 0 -> background; padding -> -1;
    # appended GT rows: the real one is class 2, the padded one -1.
    assert out["labels"].numpy().tolist() == [[2, 2, 0, -1, 2, -1]]
    assert out["valid"].numpy().tolist() == [[True, True, True, False, True, False]]
    # [0, 0, 10, 8] -> GT: dx = (5 - 4) / 8 * 10 = 1.25, dw = 5 * log(10 / 8).
    np.testing.assert_allclose(out["box_targets"].numpy()[0, 1],
                               [0.0, 1.25, 0.0, 5 * np.log(10 / 8)], atol=1e-5)
    # No GT at all: everything valid is background, no NaN.
    out = label_candidates(proposals, valid, tf.fill([1, 2, 4], -1.0), tf.fill([1, 2], -1),
                           RoISampler())
    assert out["labels"].numpy().tolist() == [[0, 0, 0, -1, -1, -1]]
    assert np.all(np.isfinite(out["box_targets"].numpy()))


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("ohem", [True, False])
def test_train_step_gives_finite_losses_and_gradients_reach_the_head(ohem):
    config = tiny_config(ohem=ohem)
    model = builder.build_model(config)
    assert isinstance(model, RFCN) and isinstance(model.roi_heads, RFCNRoIHeads)
    images, targets = tiny_batch()
    with tf.GradientTape() as tape:
        losses = model.compute_losses(images, targets, training=True)
    assert set(losses) == LOSS_KEYS
    for name, value in losses.items():
        assert np.isfinite(value.numpy()), name
    grads = tape.gradient(losses["total_loss"], model.trainable_variables)
    with_grad = {v.path for g, v in zip(grads, model.trainable_variables, strict=True)
                 if g is not None and np.any(g.numpy() != 0)}
    for part in ("rfcn_head/reduce_conv", "cls_score_maps", "box_score_maps", "rpn_head",
                 "c5_conv"):
        assert any(part in p for p in with_grad), part
    # All-padding GT and an all-empty proposal set still train without NaN.
    empty = dict(targets, boxes=tf.fill([2, 3, 4], -1.0), classes=tf.fill([2, 3], -1))
    for value in model.compute_losses(images, empty, training=True).values():
        assert np.isfinite(value.numpy())
    maps = model.roi_heads.score_maps([tf.zeros([2, 4, 4, 16])])
    losses, sampled = model.roi_heads.compute_losses(
        [tf.zeros([2, 4, 4, 16])], tf.zeros([2, 0, 4]), tf.zeros([2, 0], tf.bool), empty)
    assert maps.shape[-1] == 9 * (4 + 4)
    assert all(np.isfinite(v.numpy()) for v in losses.values())


def test_losses_in_a_graph_with_dynamic_batch():
    # The training loss traces once with an unknown batch size and gives the eager numbers.
    model = builder.build_model(tiny_config())
    images, targets = tiny_batch()
    spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), (images, targets))
    graph_fn = tf.function(lambda x, y: model.compute_losses(x, y, training=False),
                           input_signature=spec)
    graph = graph_fn(images, targets)
    eager = model.compute_losses(images, targets, training=False)
    # OHEM is deterministic (the RPN's anchor sampling is not, so its losses are only finite).
    for key in ("rcnn_class_loss", "rcnn_box_loss"):
        np.testing.assert_allclose(graph[key].numpy(), eager[key].numpy(), rtol=1e-4, atol=1e-6)
    assert all(np.isfinite(graph[key].numpy()) for key in LOSS_KEYS)
    one = graph_fn(images[:1], tf.nest.map_structure(lambda t: t[:1], targets))
    assert np.isfinite(one["total_loss"].numpy())


def test_predict_shapes_and_dtypes():
    model = builder.build_model(tiny_config(pool_mode="pool"))
    images, _ = tiny_batch(batch=3)
    out = model.predict(images, verbose=0)
    assert out["detection_boxes"].shape == (3, 10, 4)
    assert out["detection_scores"].shape == (3, 10)
    assert out["detection_classes"].shape == (3, 10) and out["detection_classes"].dtype == np.int32
    assert out["num_detections"].shape == (3,) and out["num_detections"].dtype == np.int32
    assert np.all(out["detection_boxes"] >= 0) and np.all(out["detection_boxes"] <= 64)
    for i, n in enumerate(out["num_detections"]):
        classes = out["detection_classes"][i, :n]
        assert np.all((classes >= 1) & (classes <= 3))


def test_keras_save_and_load_round_trip(tmp_path):
    model = builder.build_model(tiny_config(), label_map={"names": ["a", "b", "c"]})
    images, _ = tiny_batch()
    before = model(images)
    path = str(tmp_path / "rfcn.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is RFCN and type(restored.roi_heads) is RFCNRoIHeads
    assert restored.roi_heads.ohem and restored.roi_heads.ohem_batch_size == 8
    assert restored.label_map == {"names": ["a", "b", "c"]}
    after = restored(images)
    for key in before:
        np.testing.assert_allclose(after[key].numpy(), before[key].numpy(), atol=1e-5)


def test_exported_and_builder_checks():
    assert tf_rcnn.RFCN is RFCN
    config = tiny_config()
    config.model.rfcn.pool_mode = "max"
    with pytest.raises(ValueError, match="pool or align"):
        builder.build_model(config)
    config = tiny_config()
    config.model.roi_head.in_features = ("C4", "C5")
    with pytest.raises(ValueError, match="one feature map"):
        builder.build_model(config)
    with pytest.raises(ValueError, match="ohem_batch_size"):
        RFCNRoIHeads(RFCNHead(3), ohem_batch_size=0)


def test_recipes_build():
    paper = load_config_file(os.path.join(REPO, "configs", "rfcn_r101_voc.py"))
    m = paper.model
    assert (m.type, m.backbone.name, m.backbone.dilate_c5) == ("rfcn", "resnet101", True)
    assert (m.rfcn.k, m.rfcn.channels, m.rfcn.ohem_batch_size) == (7, 1024, 128)
    assert m.rpn.post_nms_topk_test == 300 and paper.data.scales == (600,)
    assert paper.train.weight_decay == 5e-4 and paper.train.momentum == 0.9


def test_head_docstring_example_runs():
    import doctest

    from tf_rcnn.models.heads import rfcn as rfcn_module

    result = doctest.testmod(rfcn_module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
