"""The Trainer with the real (tiny) Faster R-CNN: mixed precision and the NaN guard."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.support import tiny_batch, tiny_config
from tf_rcnn.models import builder
from tf_rcnn.training import NonFiniteLossError, Trainer, build_optimizer


def _dataset():
    images, targets = tiny_batch()
    return tf.data.Dataset.from_tensors((images, targets)).repeat()


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_one_step_under_mixed_precision(tmp_path, policy, restore_policy):
    keras.mixed_precision.set_global_policy(policy)
    model = builder.build_model(tiny_config())
    model.build_with_dummy_inputs()
    assert model.backbone.compute_dtype == policy.split("_")[1]
    trainer = Trainer(model, build_optimizer("sgd", learning_rate=0.01), None,
                      model_dir=str(tmp_path), log_every=1)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == (
        policy == "mixed_float16")
    metrics = trainer.train(_dataset(), total_steps=1, global_batch=2)
    assert metrics["step"] == 1.0
    for name in model.loss_names:
        assert np.isfinite(metrics[name]), name
    # Boxes, scores and the NMS stay float32 under the policy.
    images, targets = tiny_batch()
    out = model({"images": images, "image_shape": targets["image_shape"]})
    assert out["detection_boxes"].dtype == tf.float32
    assert out["detection_scores"].dtype == tf.float32
    anchors = model.rpn.anchor_generator([tf.zeros([1, 8, 8, 4], tf.float16)] * 5)
    assert anchors.dtype == tf.float32


def test_nan_from_a_huge_learning_rate_stops_with_step_terms_and_checkpoint(tmp_path):
    model = builder.build_model(tiny_config())
    model.build_with_dummy_inputs()
    trainer = Trainer(model, build_optimizer("sgd", learning_rate=1e12, weight_decay=0.0), None,
                      model_dir=str(tmp_path), checkpoint_every=1, log_every=1)
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train(_dataset(), total_steps=20, global_batch=2)
    message = str(error.value)
    assert "Non-finite total_loss at step" in message
    for name in model.loss_names:
        assert f"{name}=" in message
    assert "Last good checkpoint: " in message and "ckpt-" in message
