"""Mask R-CNN: mask head contract, mask loss on positives only, train step, predict, pasting.

The mask target crop itself (hand-made mask and box) and paste-inverts-crop are tested at the op
level in ``tests/ops/test_masks.py``; here they are checked through the head (``MaskRoIHeads``)
and the evaluation wrapper. At the end, a tiny overfit run
(train -> checkpoint -> ``evaluate_checkpoint`` -> export -> predict) checks the written segm
metrics against an independent COCO implementation (faster-coco-eval), the SavedModel's masks
against the Python model's, and that the masks ``predict`` draws are the masks ``eval.py``
scores.
"""

from __future__ import annotations

import doctest
import json
import math
import os

import faster_coco_eval
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from tests.layer_contract import check_layer_contract
from tests.support import tiny_batch, tiny_config, train_and_evaluate
from tf_rcnn import export as export_lib
from tf_rcnn import predict as predict_lib
from tf_rcnn.config import ConfigError
from tf_rcnn.evaluation.evaluate import evaluate_checkpoint
from tf_rcnn.evaluation.mask_pasting import MaskPastingEvaluator
from tf_rcnn.layers.roi_align import RoIAlign
from tf_rcnn.layers.roi_sampler import RoISampler
from tf_rcnn.models import builder
from tf_rcnn.models.checkpoint import resolve_run_config, restore_detector
from tf_rcnn.models.detectors.mask_rcnn import MaskRCNN
from tf_rcnn.models.roi_heads import mask_head as mask_module
from tf_rcnn.models.roi_heads.box_head import BoxPredictor, FPNBoxHead
from tf_rcnn.models.roi_heads.mask_head import MaskHead, select_class_masks
from tf_rcnn.models.roi_heads.mask_roi_heads import MaskRoIHeads
from tf_rcnn.ops.losses import mask_loss as mask_rcnn_loss
from tf_rcnn.ops.masks import paste_image_masks

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")
LOSS_KEYS = {"rpn_objectness_loss", "rpn_box_loss", "rcnn_class_loss", "rcnn_box_loss",
             "mask_loss", "total_loss"}


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def tiny_mask_config():
    return tiny_config("mask_rcnn")


def tiny_mask_batch(batch: int = 2):
    # GT masks cropped to their boxes (56x56): a full square, a left half, a disc.
    return tiny_batch(batch, masks=True)


# ----------------------------------------------------------------------------- MaskHead


@pytest.mark.parametrize("agnostic", [False, True])
def test_mask_head_contract_and_shapes(agnostic):
    head = MaskHead(num_classes=3, conv_dims=(8, 8), deconv_dim=4, class_agnostic=agnostic)
    pooled = tf.random.normal([2, 5, 14, 14, 6])
    out = check_layer_contract(head, pooled)
    assert out.shape == (2, 5, 28, 28, 1 if agnostic else 3)


def test_mask_head_c4_variant_runs_res5_then_deconv():
    # A stride-2 conv stands in for res5 (14x14 -> 7x7); the deconv brings it back to 14x14.
    res5 = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="res5_standin")
    head = MaskHead(num_classes=2, conv_dims=(), deconv_dim=4, res5=res5)
    out = check_layer_contract(head, tf.random.normal([1, 3, 14, 14, 6]))
    assert out.shape == (1, 3, 14, 14, 2)
    assert head.compute_output_shape((1, 3, 14, 14, 6)) == (1, 3, 14, 14, 2)


def test_mask_head_empty_rois_and_bad_arguments():
    head = MaskHead(num_classes=3, conv_dims=(8,), deconv_dim=4)
    # R = 0: TF's CPU conv would hand back its input for an empty batch; the head must not.
    assert head(tf.zeros([2, 0, 14, 14, 6])).shape == (2, 0, 28, 28, 3)
    with pytest.raises(ValueError, match="num_classes"):
        MaskHead(num_classes=0)
    with pytest.raises(ValueError, match="conv_dims"):
        MaskHead(num_classes=3, conv_dims=(8, 0))
    with pytest.raises(ValueError, match="pooled RoI features"):
        MaskHead(num_classes=3)(tf.zeros([2, 14, 14, 6]))


def test_select_class_masks_picks_the_class_channel():
    # logits[b, r, :, :, k] == 10 * r + k, so the selected value tells which channel was read.
    r, k = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    values = np.broadcast_to((10 * r + k)[None, :, None, None, :], (1, 3, 2, 2, 4))
    classes = tf.constant([[1, 4, 0]])  # class 1 -> channel 0, 4 -> 3, 0 (padding) -> 0
    out = select_class_masks(tf.constant(values, tf.float32), classes).numpy()
    np.testing.assert_array_equal(out[0, :, 0, 0], [0 + 0, 10 + 3, 20 + 0])
    agnostic = select_class_masks(tf.constant(values[..., :1], tf.float32), classes).numpy()
    np.testing.assert_array_equal(agnostic[0, :, 0, 0], [0, 10, 20])


# ----------------------------------------------------------------------------- loss


def test_mask_loss_is_mean_bce_averaged_over_positives_only():
    # Two RoIs, 1x2 masks. RoI 0 (positive): logits [0, 2], targets [1, 0]
    #   BCE = [softplus(0) - 0, softplus(2) - 0] -> mean (ln 2 + softplus(2)) / 2.
    # RoI 1 has weight 0 and huge wrong logits: it must not count, nor in the denominator.
    logits = tf.constant([[[[0.0, 2.0]], [[50.0, 50.0]]]])
    targets = tf.constant([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    weights = tf.constant([[1.0, 0.0]])
    expected = (math.log(2.0) + softplus(2.0)) / 2
    assert float(mask_rcnn_loss(logits, targets, weights)) == pytest.approx(expected, rel=1e-6)
    assert float(mask_rcnn_loss(logits, targets, tf.zeros([1, 2]))) == 0.0


def _hand_heads(num_classes: int = 2) -> MaskRoIHeads:
    mask_head = MaskHead(num_classes, conv_dims=(4,), deconv_dim=4, name="mask_head")
    return MaskRoIHeads(
        pooler=RoIAlign(output_size=7, spatial_scale=0.25),
        box_head=FPNBoxHead(fc_dims=(16,)),
        box_predictor=BoxPredictor(num_classes),
        mask_pooler=RoIAlign(output_size=14, spatial_scale=0.25),
        mask_head=mask_head,
        sampler=RoISampler(batch_size_per_image=16, positive_fraction=0.5),
    )


def test_mask_loss_reads_the_matched_gt_mask_on_the_gt_class_channel():
    # The mask predictor is set to zero weights and per-class biases: every pixel of channel
    # "class 1" has logit +2, of channel "class 2" logit -2.
    # GT A (class 1) has an all-ones mask, GT B (class 2) an all-zeros mask; the proposals are
    # exactly the two GT boxes plus one background box far away. Positives are the copies of A
    # and B (proposal + appended GT); each targets its own GT's mask inside its own box:
    #   A: logit +2, target 1 -> BCE softplus(-2);  B: logit -2, target 0 -> BCE softplus(-2).
    # So the loss is softplus(-2) = 0.126928. Reading the wrong channel or the wrong GT gives
    # softplus(2) = 2.126928 on those RoIs; counting the background RoI (channel 0, logit +2,
    # target 0) would add softplus(2) terms.
    heads = _hand_heads()
    features = [tf.random.normal([1, 32, 32, 8])]
    gt_boxes = tf.constant([[[4.0, 4.0, 36.0, 36.0], [60.0, 40.0, 100.0, 100.0]]])
    proposals = tf.concat([gt_boxes, [[[100.0, 0.0, 120.0, 20.0]]]], axis=1)
    masks = np.zeros((1, 2, 56, 56), np.float32)
    masks[0, 0] = 1.0
    targets = {"boxes": gt_boxes, "classes": tf.constant([[1, 2]]), "masks": tf.constant(masks)}
    valid = tf.ones([1, 3], tf.bool)
    heads.compute_losses(features, proposals, valid, targets)  # builds the layers
    predictor = heads.mask_head.predictor
    predictor.set_weights([np.zeros_like(predictor.kernel.numpy()), np.array([2.0, -2.0])])
    losses, sampled = heads.compute_losses(features, proposals, valid, targets)
    assert int(tf.reduce_sum(tf.cast(sampled["labels"] >= 1, tf.int32))) == 4
    assert float(losses["mask_loss"]) == pytest.approx(softplus(-2.0), rel=1e-5)


def test_mask_head_runs_on_the_largest_positive_count_of_the_batch():
    # Image 0: proposals = its two GT boxes (+ the two appended GT copies) -> 4 positives.
    # Image 1: one GT, no overlapping proposal -> 1 positive (the appended GT copy).
    # The head must see [2, 4, ...] rows (max over images), not max_positives = 16 x 0.5 = 8.
    # (The loss values on fewer rows are checked by the hand-computed tests around this one.)
    heads = _hand_heads()
    features = [tf.random.normal([2, 32, 32, 8])]
    gt_boxes = tf.constant([[[4.0, 4.0, 36.0, 36.0], [60.0, 40.0, 100.0, 100.0]],
                            [[10.0, 10.0, 50.0, 50.0], [-1.0, -1.0, -1.0, -1.0]]])
    classes = tf.constant([[1, 2], [2, -1]])
    proposals = tf.stack([gt_boxes[0], tf.constant([[100.0, 0.0, 120.0, 20.0]] * 2)])
    targets = {"boxes": gt_boxes, "classes": classes,
               "masks": tf.constant(np.random.default_rng(0).integers(
                   0, 2, (2, 2, 56, 56)).astype(np.float32))}
    valid = tf.ones([2, 2], tf.bool)
    seen = []
    original = heads.predict_masks

    def spy(features, rois, classes, training):
        seen.append(tuple(rois.shape))
        return original(features, rois, classes, training)

    heads.predict_masks = spy
    losses, sampled = heads.compute_losses(features, proposals, valid, targets)
    positives = tf.reduce_sum(tf.cast(sampled["labels"] >= 1, tf.int32), axis=1).numpy()
    assert positives.tolist() == [4, 1] and heads.max_positives == 8
    assert seen == [(2, 4, 4)]
    assert np.isfinite(float(losses["mask_loss"]))


def test_mask_loss_without_positives_or_gt_is_zero_and_missing_masks_is_an_error():
    heads = _hand_heads()
    features = [tf.random.normal([2, 32, 32, 8])]
    targets = {"boxes": -tf.ones([2, 3, 4]), "classes": -tf.ones([2, 3], tf.int32),
               "masks": tf.zeros([2, 3, 56, 56])}
    proposals = tf.constant([[[0.0, 0.0, 20.0, 20.0]]] * 2)
    losses, _ = heads.compute_losses(features, proposals, tf.ones([2, 1], tf.bool), targets)
    assert float(losses["mask_loss"]) == 0.0
    for value in losses.values():
        assert np.isfinite(value.numpy())
    del targets["masks"]
    with pytest.raises(ValueError, match="with_masks=True"):
        heads.compute_losses(features, proposals, tf.ones([2, 1], tf.bool), targets)


# ----------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def model():
    return builder.build_model(tiny_mask_config())


def test_train_step_gives_finite_mask_loss_and_trains_the_mask_head(model):
    assert isinstance(model, MaskRCNN) and set(model.loss_names) == LOSS_KEYS
    images, targets = tiny_mask_batch()
    with tf.GradientTape() as tape:
        losses = model.compute_losses(images, targets, training=True)
    assert set(losses) == LOSS_KEYS
    for name, value in losses.items():
        assert np.isfinite(value.numpy()), name
    # Near-zero initial logits: BCE ~ ln 2 on every pixel of every positive.
    assert float(losses["mask_loss"]) == pytest.approx(math.log(2.0), abs=0.02)
    grads = tape.gradient(losses["total_loss"], model.trainable_variables)
    mask_grads = [g for g, v in zip(grads, model.trainable_variables, strict=True)
                  if "mask_head" in v.path]
    assert mask_grads and all(g is not None and np.any(g.numpy() != 0) for g in mask_grads)
    # The same step inside tf.function (the trainer's path).
    graph_losses = tf.function(model.compute_losses)(images, targets)
    assert np.isfinite(graph_losses["mask_loss"].numpy())


def test_predict_gives_detection_masks_of_the_detections(model):
    images, _ = tiny_mask_batch(batch=3)
    outputs = model.predict(images, verbose=0)
    assert outputs["detection_masks"].shape == (3, 10, 28, 28)
    assert outputs["detection_masks"].dtype == np.float32
    masks = outputs["detection_masks"]
    assert np.all((masks >= 0) & (masks <= 1))
    for i, n in enumerate(outputs["num_detections"]):
        assert np.all(masks[i, n:] == 0)  # padding rows
        assert np.all(masks[i, :n].reshape(n, -1).max(axis=1) > 0)
    # Masks are those of the head on the final boxes, channel of the detected class.
    out = model(images)
    features = model._select(model.extract_features(images), model.roi_in_features)
    expected = tf.sigmoid(model.roi_heads.predict_masks(
        features, out["detection_boxes"], out["detection_classes"], training=False))
    n = int(out["num_detections"][0])
    np.testing.assert_allclose(out["detection_masks"][0, :n], expected[0, :n], atol=1e-5)


def test_keras_save_and_load_round_trip(model, tmp_path):
    images, _ = tiny_mask_batch()
    before = model(images)
    path = str(tmp_path / "mask_rcnn.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is MaskRCNN
    after = restored(images)
    for key in before:
        np.testing.assert_allclose(after[key].numpy(), before[key].numpy(), atol=1e-5)


def test_builder_mask_options():
    config = tiny_mask_config()
    config.model.mask_head.head = "magic"
    with pytest.raises(ValueError, match="fpn_conv or res5"):
        builder.build_model(config)
    config = tiny_mask_config()
    config.model.mask_head.head = "res5"
    with pytest.raises(ValueError, match="ResNet backbone"):
        builder.build_model(config)
    config = tiny_mask_config()
    config.model.mask_head.class_agnostic = True
    agnostic = builder.build_model(config)
    assert agnostic.roi_heads.mask_head.class_agnostic
    images, _ = tiny_mask_batch()
    assert agnostic(images)["detection_masks"].shape == (2, 10, 28, 28)


# ----------------------------------------------------------------------------- pasting


def test_pasting_a_full_mask_fills_exactly_its_box():
    # Box [2, 3, 6, 8]: pixel centres 2.5..5.5 (rows 2-5) and 3.5..7.5 (cols 3-7) are inside.
    full = paste_image_masks(np.ones((1, 28, 28)), np.array([[2.0, 3.0, 6.0, 8.0]]), (10, 12))
    expected = np.zeros((10, 12), np.uint8)
    expected[2:6, 3:8] = 1
    np.testing.assert_array_equal(full[0], expected)
    assert paste_image_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), (10, 12)).shape == (
        0, 10, 12)


def test_mask_pasting_evaluator_forwards_original_size_masks():
    class Recorder:
        def update(self, detections):
            self.detections = detections

        def evaluate(self):
            return {"segm/AP": 1.0}

    recorder = Recorder()
    wrapper = MaskPastingEvaluator(recorder, {7: (10, 12), 9: (5, 6)}, keep_masks_for=[9])
    masks = np.zeros((2, 2, 28, 28), np.float32)
    masks[:, :, :, :14] = 1.0  # left half of each box
    wrapper.update({
        "image_id": np.array([7, 9]),
        "detection_boxes": np.array([[[0, 0, 10, 12], [0, 0, 0, 0]],
                                     [[1, 2, 5, 6], [0, 0, 0, 0]]], np.float32),
        "num_detections": np.array([1, 1]),
        "detection_masks": masks,
    })
    pasted = recorder.detections["detection_masks"]
    assert [p.shape for p in pasted] == [(1, 10, 12), (1, 5, 6)]
    np.testing.assert_array_equal(pasted[0][0, :, :6], 1)
    np.testing.assert_array_equal(pasted[0][0, :, 6:], 0)
    # Image 9: box rows 1-4, columns 2-5, left half = columns 2, 3.
    expected = np.zeros((5, 6), np.uint8)
    expected[1:5, 2:4] = 1
    np.testing.assert_array_equal(pasted[1][0], expected)
    assert set(wrapper.kept_masks) == {9}
    assert wrapper.evaluate() == {"segm/AP": 1.0}  # delegated


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained_mask_run(tmp_path_factory):
    # The shapes Mask R-CNN recipe on 8 64x64 images, evaluated on the same images.
    return train_and_evaluate(tmp_path_factory.mktemp("mask_overfit"), "shapes_mask_rcnn",
                              steps=300)


@pytest.mark.slow
def test_segm_metrics_equal_an_independent_coco_implementation(trained_mask_run):
    config, _, out, losses, metrics = trained_mask_run
    assert np.isfinite(losses["mask_loss"])
    for name in ("metrics.json", "detections.json", "detections.png"):
        assert os.path.exists(os.path.join(out, name)), name
    # Overfitting 8 images gives masks that clearly work (not a convergence target).
    assert metrics["segm/AP50"] > 0.5 and metrics["bbox/AP50"] > 0.5, metrics
    annotation_file = os.path.join(config.data.shapes_dir, "val", "annotations.json")
    with open(os.path.join(out, "detections.json")) as f:
        detections = json.load(f)
    assert detections and all("segmentation" in d for d in detections)
    with open(os.path.join(out, "metrics.json")) as f:
        written = json.load(f)
    # faster-coco-eval: a separate C++ implementation of the COCO protocol (not pycocotools,
    # which eval.py uses by default).
    gt = faster_coco_eval.COCO(annotation_file)
    for iou_type in ("bbox", "segm"):
        results = [dict(d) for d in detections]
        if iou_type == "segm":
            for r in results:
                r.pop("bbox")  # area from the mask, as the evaluator does
        coco_eval = faster_coco_eval.COCOeval_faster(gt, gt.loadRes(results), iou_type,
                                                     print_function=lambda *_: None)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        for name, value in zip(STAT_NAMES, coco_eval.stats[:12], strict=True):
            assert written[f"{iou_type}/{name}"] == pytest.approx(value, abs=1e-6), name


@pytest.mark.slow
def test_exported_saved_model_masks_match_the_python_model(trained_mask_run, tmp_path):
    # Same preprocessed inputs -> model.predict (reference) vs the SavedModel's serving
    # signature; boxes come back normalised by the original size, masks box-relative.
    config, model_dir, _, _, _ = trained_mask_run
    export_dir = export_lib.export_from_checkpoint(model_dir, str(tmp_path / "sm"))
    model, _, _ = restore_detector(model_dir)
    image_dir = os.path.join(config.data.shapes_dir, "train", "images")
    images = [np.asarray(Image.open(os.path.join(image_dir, name)).convert("RGB"))
              for name in sorted(os.listdir(image_dir))[:2]]
    pre = export_lib.PreprocessConfig.from_recipe(config)
    batch = export_lib.preprocess_batch(images, pre)
    expected = model.predict({"images": batch["images"], "image_shape": batch["image_shape"]},
                             verbose=0)
    served = tf.saved_model.load(export_dir).signatures["serving_default"](
        images=tf.constant(np.stack(images)))
    for b, image in enumerate(images):
        n = int(expected["num_detections"][b])
        assert n > 0 and int(served["num_detections"][b]) == n
        height, width = image.shape[:2]
        ref_boxes = expected["detection_boxes"][b, :n] / np.tile(batch["scale"][b].numpy(), 2)
        got_boxes = served["detection_boxes"].numpy()[b, :n] * [height, width, height, width]
        np.testing.assert_allclose(got_boxes, ref_boxes, atol=1e-3 * max(height, width))
        ref = paste_image_masks(expected["detection_masks"][b, :n], ref_boxes, (height, width))
        got = paste_image_masks(served["detection_masks"].numpy()[b, :n], got_boxes,
                                (height, width))
        # Pasted masks agree up to pixels whose probability sits on the 0.5 threshold.
        assert np.mean(ref != got) < 1e-3


@pytest.mark.slow
def test_predict_draws_the_masks_eval_scores(trained_mask_run, tmp_path):
    # predict (serving graph + the one paste rule) and eval.py (pipeline + evaluator) on the
    # same images: every mask eval.py wrote for an image is, pixel for pixel up to the 0.5
    # threshold, a mask predict draws for the same detection.
    config, model_dir, out, _, _ = trained_mask_run
    with open(os.path.join(out, "detections.json")) as f:
        scored = json.load(f)
    with open(os.path.join(config.data.shapes_dir, "val", "annotations.json")) as f:
        images = {im["id"]: im["file_name"] for im in json.load(f)["images"]}
    predict, _ = predict_lib.load_predictor(checkpoint=model_dir)
    image_dir = os.path.join(config.data.shapes_dir, "val", "images")
    compared = 0
    for image_id in sorted(images)[:3]:
        path = os.path.join(image_dir, images[image_id])
        with open(path, "rb") as f:
            outputs = predict(f.read())
        height, width = np.asarray(Image.open(path)).shape[:2]
        drawn = predict_lib.pasted_masks(outputs, height, width)
        boxes = [d["bbox_xywh"] for d in predict_lib.detections_for_image(outputs, height,
                                                                          width, {})]
        for det in (d for d in scored if d["image_id"] == image_id and d["score"] > 0.5):
            # The same detection: the box agrees to a fraction of a pixel.
            j = int(np.argmin([np.abs(np.subtract(b, det["bbox"])).max() for b in boxes]))
            assert np.abs(np.subtract(boxes[j], det["bbox"])).max() < 0.05
            mask = mask_utils.decode(det["segmentation"])
            assert np.mean(mask != drawn[j]) < 1e-3
            compared += 1
    assert compared > 0


def test_docstring_examples_run():
    result = doctest.testmod(mask_module, extraglobs={"tf": tf}, verbose=False)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.slow
def test_box_only_ground_truth_scores_the_boxes_of_a_mask_model(trained_mask_run, tmp_path):
    # A COCO file without segmentations (e.g. a box-only validation set): the Mask R-CNN is
    # scored on its boxes, with the same box AP; a file with some masks missing is an error.
    config, model_dir, _, _, metrics = trained_mask_run
    annotation_file = os.path.join(config.data.shapes_dir, "val", "annotations.json")
    with open(annotation_file) as f:
        gt = json.load(f)
    for a in gt["annotations"]:
        del a["segmentation"]
    boxes_only = tmp_path / "boxes_only.json"
    boxes_only.write_text(json.dumps(gt))
    run_config = resolve_run_config(model_dir)
    run_config.data.dataset = "coco"
    run_config.data.val_annotations = str(boxes_only)
    run_config.data.val_images = os.path.join(config.data.shapes_dir, "val", "images")
    box_metrics = evaluate_checkpoint(model_dir, str(tmp_path / "eval"), config=run_config)
    assert not any(k.startswith("segm/") for k in box_metrics)
    assert box_metrics["bbox/AP"] == pytest.approx(metrics["bbox/AP"], abs=1e-9)
    gt["annotations"][0]["segmentation"] = [[0, 0, 4, 0, 4, 4]]
    boxes_only.write_text(json.dumps(gt))
    with pytest.raises(ConfigError, match=r"boxes_only.json: \d+ of \d+ annotations have no"):
        evaluate_checkpoint(model_dir, str(tmp_path / "eval2"), config=run_config)
