"""FastRCNN on given proposals: each RoI extractor, the paper's sampling, padding, predict,
serialisation and the ResNet C4 (res5) head."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_rcnn
from tests.support import SIZE, built_model, tiny_batch, tiny_config
from tf_rcnn import export as export_lib
from tf_rcnn.config import ConfigError
from tf_rcnn.data.builder import build_input_pipeline
from tf_rcnn.layers.roi_pool import RoIPool
from tf_rcnn.layers.roi_sampler import RoISampler
from tf_rcnn.layers.spp import SpatialPyramidPooling
from tf_rcnn.models import builder
from tf_rcnn.models.backbones.resnet import ResNetStage
from tf_rcnn.models.backbones.tiny import TinyBackbone
from tf_rcnn.models.detectors.fast_rcnn import FastRCNN
from tf_rcnn.models.roi_heads.box_head import BoxPredictor, ResNetC4BoxHead
from tf_rcnn.models.roi_heads.standard import RoIHeads

LOSS_KEYS = {"rcnn_class_loss", "rcnn_box_loss", "total_loss"}


def fast_config(pooler: str = "roi_align", box_head: str = "fpn_fc"):
    return tiny_config("fast_rcnn", pooler=pooler, box_head=box_head)


def fast_batch():
    return tiny_batch(proposals=True)


# P3 of the tiny FPN has 16 channels; SPP (1, 2, 4) gives 16 * (1 + 4 + 16) = 336 per RoI.
@pytest.mark.parametrize("pooler, pooled_shape", [
    ("roi_pool", (2, 6, 7, 7, 16)),
    ("roi_align", (2, 6, 7, 7, 16)),
    ("spp", (2, 6, 336)),
])
def test_each_extractor_output_shape_and_one_train_step(pooler, pooled_shape):
    # The VGG-style fc6/fc7 head (with dropout) on every extractor, SPP's flat output included.
    model = built_model(fast_config(pooler, box_head="vgg_fc"))
    assert isinstance(model, tf_rcnn.FastRCNN) and model.rpn is None
    assert model.loss_names == ("rcnn_class_loss", "rcnn_box_loss", "total_loss")
    images, targets = fast_batch()
    features = model.extract_features(images)
    pooled = model.roi_heads.pooler(features["P3"], targets["proposals"])
    assert tuple(pooled.shape) == pooled_shape

    optimizer = keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        losses = model.compute_losses(images, targets, training=True)
    assert set(losses) == LOSS_KEYS
    for name, value in losses.items():
        assert np.isfinite(value.numpy()), name
    grads = tape.gradient(losses["total_loss"], model.trainable_variables)
    # The RoI features pass gradient back into the backbone through the extractor.
    backbone_grads = [g for g, v in zip(grads, model.trainable_variables, strict=True)
                      if f"/{model.backbone.name}/" in v.path and g is not None]
    assert backbone_grads and any(np.any(g.numpy() != 0) for g in backbone_grads)
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables,
                                                      strict=True) if g is not None])
    changed = sum(not np.array_equal(b, v.numpy())
                  for b, v in zip(before, model.trainable_variables, strict=True))
    assert changed >= 0.8 * len(before)


def test_sampler_follows_fast_rcnn_and_appends_gt():
    model = builder.build_model(fast_config())
    sampler = model.roi_heads.sampler
    assert (sampler.positive_fraction, sampler.fg_iou, sampler.bg_iou_low) == (0.25, 0.5, 0.1)
    assert sampler.append_gt_boxes
    # One GT [0, 0, 40, 40] (area 1600). Proposals sharing its left edge and height:
    #   A [0, 0, 40, 20]: IoU 800 / 1600 = 0.5    -> foreground (IoU >= 0.5)
    #   B [0, 0, 40, 10]: IoU 400 / 1600 = 0.25   -> background ([0.1, 0.5))
    #   C [0, 0, 40, 3]:  IoU 120 / 1600 = 0.075  -> never sampled (below 0.1)
    #   D padding (-1, zero area)                 -> never sampled
    # The appended GT itself is a foreground RoI.
    proposals = tf.constant([[[0, 0, 40, 20], [0, 0, 40, 10], [0, 0, 40, 3], [-1, -1, -1, -1]]],
                            tf.float32)
    valid = tf.constant([[True, True, True, False]])
    gt = tf.constant([[[0, 0, 40, 40]]], tf.float32)
    out = sampler(proposals, valid, gt, tf.constant([[2]], tf.int32))
    rois = out["rois"].numpy()[0][out["valid"].numpy()[0]]
    labels = out["labels"].numpy()[0][out["valid"].numpy()[0]]
    got = sorted((tuple(r), int(c)) for r, c in zip(rois.tolist(), labels, strict=True))
    assert got == [((0, 0, 40, 10), 0), ((0, 0, 40, 20), 2), ((0, 0, 40, 40), 2)]


def test_padded_proposals_are_ignored():
    model = built_model(fast_config())
    images, targets = fast_batch()
    proposals = targets["proposals"]
    # Image 0 has 4 real proposals, image 1 has 3; compare to the same without padding rows
    # (image by image, so no padding is needed at all).
    padded = model({"images": images, "proposals": proposals})
    for i, n in enumerate([4, 3]):
        alone = model({"images": images[i:i + 1], "proposals": proposals[i:i + 1, :n]})
        for key in ("detection_boxes", "detection_scores", "detection_classes",
                    "num_detections"):
            np.testing.assert_allclose(padded[key].numpy()[i], alone[key].numpy()[0],
                                       atol=1e-5, err_msg=key)
    # Every proposal padding: no detections, no NaN; training still works from the GT alone.
    empty = tf.fill([2, 5, 4], -1.0)
    out = model({"images": images, "proposals": empty})
    assert np.all(out["num_detections"].numpy() == 0)
    assert np.all(np.isfinite(out["detection_boxes"].numpy()))
    losses = model.compute_losses(images, dict(targets, proposals=empty))
    assert all(np.isfinite(v.numpy()) for v in losses.values())


def test_predict_with_dict_input_and_clear_error_without_proposals():
    model = built_model(fast_config())
    images, targets = fast_batch()
    outputs = model.predict({"images": images.numpy(), "proposals": targets["proposals"].numpy(),
                             "image_shape": targets["image_shape"].numpy()}, verbose=0)
    assert outputs["detection_boxes"].shape == (2, 10, 4)
    assert outputs["detection_classes"].dtype == np.int32
    # Boxes stay inside each image's true size (image 1 is 56 rows high).
    assert np.all(outputs["detection_boxes"][1, :, 2] <= SIZE - 8)
    with pytest.raises(ValueError, match="pass proposals"):
        model(images)
    with pytest.raises(ValueError, match="no rpn"):
        FastRCNN(model.backbone, model.roi_heads, 3, rpn=model.roi_heads)


def test_keras_save_and_load_round_trip(tmp_path):
    config = fast_config()
    model = builder.build_model(config, label_map={"names": ["a", "b", "c"]})
    model.build_with_dummy_inputs()
    images, targets = fast_batch()
    inputs = {"images": images, "proposals": targets["proposals"]}
    before = model(inputs)
    path = str(tmp_path / "fast_rcnn.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is FastRCNN and restored.rpn is None
    assert restored.label_map == {"names": ["a", "b", "c"]}
    after = restored(inputs)
    for key in before:
        np.testing.assert_allclose(after[key].numpy(), before[key].numpy(), atol=1e-5)


def test_resnet_c4_res5_head():
    # A one-block res5 (the real one is 3 blocks of 2048) on the tiny trunk's C4 map:
    # RoIPool 14x14 -> res5 (stride 2) -> 7x7 -> global average -> predictor.
    def model_with(pooler):
        head = ResNetC4BoxHead(ResNetStage(1, 8, stride=2, norm="bn", name="res5"),
                               name="box_head")
        roi_heads = RoIHeads(pooler, head, BoxPredictor(3, name="box_predictor"),
                                     sampler=RoISampler(16, bg_iou_low=0.1), name="roi_heads")
        return FastRCNN(TinyBackbone(widths=(8, 8, 16, 16)), roi_heads, 3,
                        roi_in_features=("C4",))

    model = model_with(RoIPool(14, 1.0 / 16))
    images, targets = fast_batch()
    losses = model.compute_losses(images, targets)
    assert all(np.isfinite(v.numpy()) for v in losses.values())
    out = model({"images": images, "proposals": targets["proposals"]})
    assert out["detection_boxes"].shape == (2, 100, 4)
    # res5 needs a spatial RoI map: SPP's flat features are refused with the reason.
    with pytest.raises(ValueError, match=r"\[B, R, S, S, C\]"):
        model_with(SpatialPyramidPooling((1, 2), 1.0 / 16)).compute_losses(images, targets)


def test_builder_errors_for_fast_rcnn():
    config = fast_config("roi_pool")
    config.model.roi_head.in_features = ("P2", "P3")
    with pytest.raises(ValueError, match="use roi_align for FPN"):
        builder.build_model(config)
    config = fast_config()
    config.model.roi_head.in_features = ("C9",)
    with pytest.raises(ValueError, match="does not produce"):
        builder.build_model(config)
    # A recipe without a proposal file is refused before any data is read, saying what to do.
    config = fast_config()
    config.data.proposals_val = ""
    with pytest.raises(ConfigError, match="dump_proposals.*--config.data.proposals_val=FILE"):
        build_input_pipeline(config, [], None, training=False, needs_proposals=True)
    config.data.proposals_train = "/nonexistent/proposals.npz"
    with pytest.raises(ConfigError, match="missing: '/nonexistent/proposals.npz'"):
        build_input_pipeline(config, [], None, training=True, needs_proposals=True)


@pytest.mark.slow  # a SavedModel export and load: the slowest test here
def test_exported_saved_model_takes_proposals_in_original_pixels(tmp_path):
    config = fast_config()
    config.data.scales, config.data.max_size = (96,), 96  # 64 px images served at scale 1.5
    model = built_model(config)
    preprocess = export_lib.PreprocessConfig.from_recipe(config)
    export_lib.export_saved_model(model, str(tmp_path / "export"), preprocess)
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    proposals = np.array([[[4, 4, 30, 30], [20, 30, 50, 60], [-1, -1, -1, -1]]], np.float32)
    out = served(images=tf.constant(image[None]), proposals=tf.constant(proposals))
    # The Keras model on the same preprocessed image with the proposals scaled by 1.5.
    batch = export_lib.preprocess_batch([image], preprocess)
    np.testing.assert_allclose(batch["scale"].numpy(), [[1.5, 1.5]])
    want = model({"images": batch["images"], "image_shape": batch["image_shape"],
                  "proposals": tf.constant(proposals * 1.5)})
    n = int(want["num_detections"][0])
    assert int(out["num_detections"][0]) == n
    np.testing.assert_allclose(out["detection_scores"].numpy()[0, :n],
                               want["detection_scores"].numpy()[0, :n], atol=1e-5)
    # Served boxes are normalised by the ORIGINAL size: pixels / 1.5 / 64.
    np.testing.assert_allclose(out["detection_boxes"].numpy()[0, :n],
                               want["detection_boxes"].numpy()[0, :n] / 1.5 / 64, atol=1e-4)
