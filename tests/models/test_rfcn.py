"""R-FCN: head layout, OHEM selection (hand cases), train step, predict, save/load, builder.

PS-RoI pooling itself (hand k = 3 case, NumPy reference, gradients) is tested in
tests/ops/test_roi_ops.py; here the head-level pieces built on it.
"""

from __future__ import annotations

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_rcnn
from tests.layer_contract import check_layer_contract
from tests.support import tiny_batch, tiny_config
from tf_rcnn.models import builder
from tf_rcnn.models.backbones.tiny import TinyBackbone
from tf_rcnn.models.detectors.rfcn import RFCN
from tf_rcnn.models.roi_heads import rfcn_head as rfcn_module
from tf_rcnn.models.roi_heads.ohem import OHEMSampler
from tf_rcnn.models.roi_heads.rfcn_head import RFCNHead
from tf_rcnn.models.roi_heads.rfcn_roi_heads import RFCNRoIHeads

LOSS_KEYS = {"rpn_objectness_loss", "rpn_box_loss", "rcnn_class_loss", "rcnn_box_loss",
             "total_loss"}


def rfcn_config(ohem: bool = True, pool_mode: str = "align"):
    return tiny_config("rfcn", ohem=ohem, pool_mode=pool_mode)


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


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("ohem", [True, False])
def test_train_step_gives_finite_losses_and_gradients_reach_the_head(ohem):
    config = rfcn_config(ohem=ohem)
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
    model = builder.build_model(rfcn_config())
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
    model = builder.build_model(rfcn_config(pool_mode="pool"))
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
    model = builder.build_model(rfcn_config(), label_map={"names": ["a", "b", "c"]})
    images, _ = tiny_batch()
    before = model(images)
    path = str(tmp_path / "rfcn.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is RFCN and type(restored.roi_heads) is RFCNRoIHeads
    assert restored.roi_heads.ohem.batch_size_per_image == 8
    assert restored.label_map == {"names": ["a", "b", "c"]}
    after = restored(images)
    for key in before:
        np.testing.assert_allclose(after[key].numpy(), before[key].numpy(), atol=1e-5)


def test_exported_and_builder_checks():
    assert tf_rcnn.RFCN is RFCN
    config = rfcn_config()
    config.model.rfcn.pool_mode = "max"
    with pytest.raises(ValueError, match="pool or align"):
        builder.build_model(config)
    config = rfcn_config()
    config.model.roi_head.in_features = ("C4", "C5")
    with pytest.raises(ValueError, match="one feature map"):
        builder.build_model(config)
    with pytest.raises(ValueError, match="ohem_batch_size"):
        OHEMSampler(batch_size_per_image=0)


def test_head_docstring_example_runs():
    result = doctest.testmod(rfcn_module, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_settings_the_family_does_not_read_are_named_in_a_warning(caplog):
    # R-FCN pools position-sensitive score maps: the standard head's fc_dims and the mask head
    # are not read. A recipe that changes them gets one warning naming exactly those keys; the
    # keys it leaves at their defaults are not mentioned.
    config = tiny_config("rfcn")
    config.model.roi_head.fc_dims = (7, 7)
    config.model.mask_head.deconv_dim = 8
    assert builder.ignored_settings(config) == ["model.mask_head.deconv_dim",
                                                "model.roi_head.fc_dims"]
    with caplog.at_level("WARNING"):
        builder.build_model(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("model.type='rfcn' does not read model.mask_head.deconv_dim, "
               "model.roi_head.fc_dims" in w for w in warnings), warnings
    # Faster R-CNN reads fc_dims: only the mask head is named.
    faster = tiny_config()
    faster.model.roi_head.fc_dims = (7, 7)
    faster.model.mask_head.deconv_dim = 8
    assert builder.ignored_settings(faster) == ["model.mask_head.deconv_dim"]
