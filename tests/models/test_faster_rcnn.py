"""FasterRCNN end to end on tiny inputs: losses, predictions, fit, serialisation, recipes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.support import tiny_batch, tiny_config
from tf_rcnn.models import builder
from tf_rcnn.models.checkpoint import load_weights, weight_key
from tf_rcnn.models.detectors.faster_rcnn import FasterRCNN
from tf_rcnn.training import CheckpointManager, build_optimizer

LOSS_KEYS = {"rpn_objectness_loss", "rpn_box_loss", "rcnn_class_loss", "rcnn_box_loss",
             "total_loss"}


@pytest.mark.parametrize("variant", ["fpn", "c4"])
def test_train_step_gives_finite_losses_with_expected_keys(variant):
    model = builder.build_model(tiny_config(variant=variant))
    assert isinstance(model, FasterRCNN)
    images, targets = tiny_batch()
    losses = model.compute_losses(images, targets, training=True)
    assert set(losses) == LOSS_KEYS
    for name, value in losses.items():
        assert np.isfinite(value.numpy()), name
    np.testing.assert_allclose(
        losses["total_loss"].numpy(),
        sum(losses[k].numpy() for k in LOSS_KEYS - {"total_loss"}), rtol=1e-5)
    # The gradient reaches the backbone, the RPN head and the box predictor.
    with tf.GradientTape() as tape:
        total = model.compute_losses(images, targets, training=True)["total_loss"]
    grads = tape.gradient(total, model.trainable_variables)
    names_with_grad = [v.path for g, v in zip(grads, model.trainable_variables, strict=True)
                       if g is not None and np.any(g.numpy() != 0)]
    assert any("rpn" in n for n in names_with_grad)
    assert any("predictor" in n or "box" in n for n in names_with_grad)
    assert len(names_with_grad) >= len(model.trainable_variables) * 0.8


def test_predict_shapes_and_dtypes():
    model = builder.build_model(tiny_config())
    images, _ = tiny_batch(batch=3)
    outputs = model.predict(images, verbose=0)
    assert outputs["detection_boxes"].shape == (3, 10, 4)
    assert outputs["detection_scores"].shape == (3, 10)
    assert outputs["detection_classes"].shape == (3, 10)
    assert outputs["detection_classes"].dtype == np.int32
    assert outputs["num_detections"].shape == (3,)
    assert outputs["num_detections"].dtype == np.int32
    # Boxes lie inside the image; classes of valid rows are 1..K.
    assert np.all(outputs["detection_boxes"] >= 0) and np.all(outputs["detection_boxes"] <= 64)
    for i, n in enumerate(outputs["num_detections"]):
        assert np.all((outputs["detection_classes"][i, :n] >= 1)
                      & (outputs["detection_classes"][i, :n] <= 3))
    # A dict input with true image shapes clips to them.
    out = model({"images": images, "image_shape": tf.constant([[32, 48]] * 3)})
    assert np.all(out["detection_boxes"].numpy()[..., 2] <= 32)
    assert np.all(out["detection_boxes"].numpy()[..., 3] <= 48)


def test_detect_from_features_with_an_xla_trunk_matches_call():
    # call() = extract_features + detect_from_features; the trunk may run elsewhere, here as an
    # XLA-compiled function (what benchmarks/inference.py --jit_compile measures).
    model = builder.build_model(tiny_config())
    images, _ = tiny_batch(batch=2)
    image_shape = tf.constant([[64, 64], [56, 64]], tf.int32)
    expected = model({"images": images, "image_shape": image_shape})
    trunk = tf.function(lambda x: model.extract_features(x), jit_compile=True)
    got = tf.function(lambda x: model.detect_from_features(trunk(x), image_shape,
                                                           return_proposals=True))(images)
    assert set(got) == set(expected) | {"proposals", "proposal_valid"}
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    for key in ("detection_boxes", "detection_scores"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-3)


def test_fit_runs_and_reduces_loss_on_one_batch():
    model = builder.build_model(tiny_config())
    images, targets = tiny_batch()
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat(30)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    history = model.fit(dataset, epochs=1, verbose=0)
    assert set(history.history) >= LOSS_KEYS
    first = model.compute_losses(images, targets)["total_loss"].numpy()
    model.fit(dataset, epochs=2, verbose=0)
    last = model.compute_losses(images, targets)["total_loss"].numpy()
    assert np.isfinite(last) and last < first


def test_keras_save_and_load_round_trip(tmp_path):
    model = builder.build_model(tiny_config(), label_map={"names": ["a", "b", "c"]})
    images, _ = tiny_batch()
    before = model(images)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is FasterRCNN
    assert restored.label_map == {"names": ["a", "b", "c"]}
    after = restored(images)
    for key in before:
        np.testing.assert_allclose(after[key].numpy(), before[key].numpy(), atol=1e-5)


def test_builder_rejects_bad_values():
    config = tiny_config()
    config.model.roi_head.pooler = "roi_magic"
    with pytest.raises(ValueError, match="roi_align, roi_pool or spp"):
        builder.build_model(config)
    config = tiny_config()
    config.model.rpn.anchor_sizes = ((16.0,),)
    with pytest.raises(ValueError, match="one tuple of sizes per feature level"):
        builder.build_model(config)


def test_dummy_build_uses_two_proposals_and_a_failed_build_leaves_the_model_unbuilt():
    model = builder.build_model(tiny_config())
    layer = model.rpn.proposal_layer
    topk = layer.post_nms_topk_test
    seen = []
    call = layer.call

    def spy(*args, **kwargs):
        seen.append(layer.post_nms_topk_test)
        return call(*args, **kwargs)

    layer.call = spy
    model.build_with_dummy_inputs()
    assert seen == [2] and layer.post_nms_topk_test == topk and model.built
    assert model.weights

    broken = builder.build_model(tiny_config())

    def fail(*args, **kwargs):
        raise RuntimeError("head failed")

    broken.roi_heads.call = fail
    with pytest.raises(RuntimeError, match="head failed"):
        broken.build_with_dummy_inputs()
    assert not broken.built and broken.rpn.proposal_layer.post_nms_topk_test == topk


def test_training_checkpoint_restores_into_a_second_build(tmp_path):
    # Regression: Keras 3 keeps list-held sub-layers (FPN laterals, backbone stages) out of
    # TensorFlow's object graph; checkpoints must still hold every weight, by a stable path.
    config = tiny_config()
    first = builder.build_model(config)
    first.build_with_dummy_inputs()
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(first.trainable_variables)
    manager = CheckpointManager(str(tmp_path), first, optimizer)
    manager.step.assign(5)
    path = manager.save()
    saved = {n for n, _ in tf.train.list_variables(path) if n.startswith("model/")}
    assert len(saved) == len(first.weights)

    second = builder.build_model(config)
    second.build_with_dummy_inputs()
    other_opt = build_optimizer("sgd", learning_rate=0.1)
    other_opt.build(second.trainable_variables)
    assert CheckpointManager(str(tmp_path), second, other_opt).restore_or_initialize() == 5
    images, _ = tiny_batch()
    a, b = first(images), second(images)
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-6)


@pytest.mark.parametrize("family", ["faster_rcnn", "mask_rcnn", "rfcn"])
def test_builder_from_config_and_keras_file_share_checkpoint_keys(family, tmp_path):
    # One weight naming whatever route built the model: a training checkpoint (keyed by
    # weight_key) restores strictly into a model from the builder, from get_config/from_config
    # (the fine-tuning API) and from keras.models.load_model.
    config = tiny_config(family)
    model = builder.build_model(config)
    model.build_with_dummy_inputs()
    keys = [weight_key(w) for w in model.weights]
    assert not any(k.startswith(model.name) for k in keys)
    from_config = type(model).from_config(model.get_config())
    from_config.build_with_dummy_inputs()
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    for other in (from_config, loaded):
        assert [weight_key(w) for w in other.weights] == keys
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    CheckpointManager(str(tmp_path / "run"), model, optimizer).save(1)
    loaded_count, skipped = load_weights(from_config, str(tmp_path / "run"),
                                         skip_mismatch=False)
    assert len(loaded_count) == len(keys) and not skipped
