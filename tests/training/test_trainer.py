"""Trainer on the default strategy: convergence, resume, NaN guard, logging, eval hook."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training import standin
from tf_rcnn.training import NonFiniteLossError, Trainer, build_optimizer, build_schedule


def _trainer(model_dir, lr=0.05, **kwargs) -> Trainer:
    model = standin.build_model()
    schedule = build_schedule(
        "step", lr, total_steps=100, warmup_steps=5, warmup_factor=0.1, steps=(80,)
    )
    optimizer = build_optimizer("sgd", learning_rate=schedule, weight_decay=1e-4)
    return Trainer(model, optimizer, None, model_dir=str(model_dir), **kwargs)


def test_loss_decreases_and_progress_is_logged(tmp_path, capsys):
    trainer = _trainer(
        tmp_path, log_every=10, summary_every=10, checkpoint_every=25, steps_per_loop=5
    )
    initial_loss = standin.full_batch_loss(trainer.model)
    trainer.train(standin.make_dataset_fn(8), total_steps=5, per_replica_batch=8)
    final = trainer.train(standin.make_dataset_fn(8), total_steps=50, per_replica_batch=8)
    assert final["step"] == 50
    assert standin.full_batch_loss(trainer.model) < 0.5 * initial_loss
    assert set(final) >= {"total_loss", "regression_loss", "aux_loss", "learning_rate"}
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("step 50/50")][0]
    assert "(100.0%)" in line and "img/s" in line and "ETA" in line
    assert "total_loss" in line and "lr 0.0500" in line
    assert line.index("total_loss") < line.index("aux_loss")  # total first
    assert os.path.basename(tf.train.latest_checkpoint(tmp_path)) == "ckpt-50"
    assert tf.io.gfile.glob(os.path.join(tmp_path, "train", "events.out.tfevents.*"))


def _slots(optimizer):
    return [v.numpy().copy() for v in optimizer.variables]


def test_resume_restores_step_weights_and_slots(tmp_path):
    first = _trainer(tmp_path, checkpoint_every=5)
    first.train(standin.make_dataset_fn(4), total_steps=10, per_replica_batch=4)
    assert sorted(os.path.basename(p) for p in tf.io.gfile.glob(f"{tmp_path}/ckpt-*.index")) == [
        "ckpt-10.index",
        "ckpt-5.index",
    ]
    second = _trainer(tmp_path, checkpoint_every=5)
    # Fresh model: differs before restore.
    assert not np.allclose(second.model.head.kernel.numpy(), first.model.head.kernel.numpy())
    second.optimizer.build(second.model.trainable_variables)
    assert second.checkpoints.restore_or_initialize() == 10
    assert int(second.optimizer.iterations.numpy()) == 10  # schedule position
    for a, b in zip(_slots(first.optimizer), _slots(second.optimizer), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first.model.weights, second.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Continuing trains only the missing steps.
    metrics = second.train(standin.make_dataset_fn(4), total_steps=12, per_replica_batch=4)
    assert metrics["step"] == 12 and int(second.step.numpy()) == 12


class _ExplodingModel(standin.StandInModel):
    """Stand-in whose loss turns into NaN from the 4th call on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = tf.Variable(0, trainable=False)

    def compute_losses(self, images, targets, training=True):
        losses = super().compute_losses(images, targets, training)
        self.calls.assign_add(1)
        bad = tf.cast(self.calls >= 4, tf.float32)
        nan = tf.constant(float("nan"))
        total = losses["total_loss"] + tf.where(bad > 0, nan, 0.0)
        return {**losses, "total_loss": total}


@pytest.mark.parametrize("steps_per_loop", [1, 4])
def test_nan_stops_with_step_terms_and_checkpoint(tmp_path, steps_per_loop):
    model = _ExplodingModel(name="exploding")
    model(tf.zeros([1, standin.IMAGE_SIZE, standin.IMAGE_SIZE, 3]))
    optimizer = build_optimizer("sgd", learning_rate=0.01)
    trainer = Trainer(
        model, optimizer, None, str(tmp_path), checkpoint_every=2, steps_per_loop=steps_per_loop
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train(standin.make_dataset_fn(4), total_steps=20, per_replica_batch=4)
    message = str(info.value)
    assert "at step 4" in message
    assert "total_loss=nan" in message and "regression_loss=" in message
    assert "aux_loss=" in message
    assert os.path.join(str(tmp_path), "ckpt-2") in message


def test_plain_dataset_eval_hook_and_best_checkpoint(tmp_path):
    scores = iter([0.3, 0.9, 0.5])
    trainer = _trainer(
        tmp_path,
        checkpoint_every=100,
        eval_fn=lambda step: {"AP": next(scores)},
        eval_every=2,
        best_metric="AP",
    )
    trainer.train(standin.make_dataset(4), total_steps=6, global_batch=4)
    assert [h["step"] for h in trainer.eval_history] == [2, 4, 6]
    with open(os.path.join(tmp_path, "best", "metrics.json")) as f:
        best = json.load(f)
    assert best["AP"] == pytest.approx(0.9) and best["checkpoint"] == "ckpt-4"
    assert tf.train.latest_checkpoint(os.path.join(tmp_path, "best")).endswith("ckpt-4")


def test_global_norm_clip_limits_the_update(tmp_path):
    # With lr 1, momentum 0, no decay and clip_norm c, one step moves the weights by
    # exactly c when the raw gradient norm exceeds c.
    model = standin.build_model()
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    trainer = Trainer(model, optimizer, None, model_dir=str(tmp_path), clip_norm=1e-3)
    before = [v.numpy().copy() for v in model.trainable_variables]
    trainer.train(standin.make_dataset_fn(4), total_steps=1, per_replica_batch=4)
    moved = np.sqrt(
        sum(
            np.sum((v.numpy() - b) ** 2)
            for v, b in zip(model.trainable_variables, before, strict=True)
        )
    )
    assert moved == pytest.approx(1e-3, rel=1e-3)


def test_mixed_precision_wraps_in_loss_scale_optimizer(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        trainer = _trainer(tmp_path, checkpoint_every=100)
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        metrics = trainer.train(standin.make_dataset_fn(4), total_steps=3, per_replica_batch=4)
        assert np.isfinite(metrics["total_loss"])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_arguments(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(ValueError, match="global_batch"):
        trainer.train(
            standin.make_dataset_fn(4), total_steps=2, per_replica_batch=4, global_batch=6
        )
    with pytest.raises(ValueError, match="repeat"):
        finite = standin.make_dataset(4).take(2)
        trainer.train(finite, total_steps=5, global_batch=4)
    with pytest.raises(ValueError, match="nan_policy"):
        _trainer(tmp_path, nan_policy="explode")
    with pytest.raises(ValueError, match="compute_losses"):
        Trainer(keras.Sequential([keras.layers.Dense(1)]), keras.optimizers.SGD(), None, "x")


def test_unbuilt_model_is_built_on_the_first_batch(tmp_path):
    model = standin.StandInModel()  # no variables yet
    optimizer = build_optimizer("sgd", learning_rate=0.01)
    trainer = Trainer(model, optimizer, None, model_dir=str(tmp_path), checkpoint_every=2)
    metrics = trainer.train(standin.make_dataset_fn(4), total_steps=2, per_replica_batch=4)
    assert metrics["step"] == 2 and len(model.trainable_variables) == 6
    # Nothing left to do on a finished run.
    again = Trainer(
        standin.build_model(), build_optimizer("sgd", learning_rate=0.01), None, str(tmp_path)
    )
    assert again.train(standin.make_dataset_fn(4), total_steps=2, per_replica_batch=4) == {}
