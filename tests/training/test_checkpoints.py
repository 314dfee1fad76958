"""Checkpoint keys, strict fit checks naming variables and the flag to use, and partial loading
(``tf_rcnn.models.checkpoint`` and ``tf_rcnn.training.checkpoints``)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training import standin
from tf_rcnn.models.checkpoint import checkpoint_keys
from tf_rcnn.models.checkpoint import load_weights as load_weights_partial
from tf_rcnn.training import CheckpointManager, build_optimizer


def _saved_manager(model_dir, num_outputs=2):
    model = standin.build_model(num_outputs)
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    manager = CheckpointManager(str(model_dir), model, optimizer, checkpoint_every=1)
    manager.step.assign(7)
    path = manager.save()
    return manager, path


def test_live_keys_equal_saved_keys(tmp_path):
    manager, path = _saved_manager(tmp_path)
    saved = set(tf.train.load_checkpoint(path).get_variable_to_shape_map())
    live = set(checkpoint_keys(manager.checkpoint))
    assert live == saved - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    # Every model variable is saved under its Keras path without the model's name.
    assert "model/head.Skernel/.ATTRIBUTES/VARIABLE_VALUE" in live


class _ListOfLayers(keras.Model):
    """Holds its sub-layers in a list, which Keras 3 wraps in a TrackedList that TensorFlow's
    object graph does not follow: checkpointing the model object would drop them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [keras.layers.Dense(3, name=f"block{i}") for i in range(2)]

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_layers_held_in_lists_are_checkpointed(tmp_path):
    model = _ListOfLayers()
    model(tf.ones([1, 3]))
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    manager = CheckpointManager(str(tmp_path), model, optimizer)
    manager.step.assign(1)
    manager.save()
    other = _ListOfLayers()
    other(tf.ones([1, 3]))
    other_opt = build_optimizer("sgd", learning_rate=0.1)
    other_opt.build(other.trainable_variables)
    assert CheckpointManager(str(tmp_path), other, other_opt).restore_or_initialize() == 1
    for a, b in zip(model.weights, other.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_restore_or_initialize_returns_step(tmp_path):
    manager, _ = _saved_manager(tmp_path)
    model = standin.build_model()
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    other = CheckpointManager(str(tmp_path), model, optimizer)
    assert other.restore_or_initialize() == 7
    np.testing.assert_array_equal(model.head.kernel.numpy(), manager.model.head.kernel.numpy())
    empty = CheckpointManager(str(tmp_path / "empty"), standin.build_model(), optimizer)
    assert empty.restore_or_initialize() == 0


def test_mismatched_checkpoint_names_the_variables(tmp_path):
    _saved_manager(tmp_path, num_outputs=2)
    model = standin.build_model(num_outputs=3)  # head kernel [4, 3], bias [3]
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    manager = CheckpointManager(str(tmp_path), model, optimizer)
    with pytest.raises(ValueError) as info:
        manager.restore_or_initialize()
    message = str(info.value)
    assert "shape mismatch" in message
    assert "head/kernel" in message and "checkpoint [4, 2] vs model [4, 3]" in message
    assert "head/bias" in message and "checkpoint [2] vs model [3]" in message
    assert "conv/kernel" not in message  # fitting variables are not listed
    # What to do, in command-line terms.
    assert f"--config.train.init_checkpoint={tmp_path}" in message
    assert "--model_dir" in message


def test_missing_variables_are_named(tmp_path):
    # Saved without the BatchNormalization layer, restored into a model that has it.
    source = standin.build_model(use_norm=False)
    source_opt = build_optimizer("sgd", learning_rate=0.1)
    source_opt.build(source.trainable_variables)
    CheckpointManager(str(tmp_path), source, source_opt).save(step=3)
    model = standin.build_model(use_norm=True)
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    manager = CheckpointManager(str(tmp_path), model, optimizer)
    with pytest.raises(ValueError, match=r"missing from the checkpoint: .*norm/gamma"):
        manager.restore_or_initialize()


def test_partial_load_skips_mismatched_shapes(tmp_path):
    source, _ = _saved_manager(tmp_path, num_outputs=2)
    target = standin.build_model(num_outputs=3)
    head_before = target.head.kernel.numpy().copy()
    loaded, skipped = load_weights_partial(target, str(tmp_path))
    np.testing.assert_array_equal(target.conv.kernel.numpy(), source.model.conv.kernel.numpy())
    np.testing.assert_array_equal(target.norm.gamma.numpy(), source.model.norm.gamma.numpy())
    np.testing.assert_array_equal(target.head.kernel.numpy(), head_before)  # kept fresh init
    assert len(skipped) == 2 and all("head" in s for s in skipped)
    assert len(loaded) == 6  # conv kernel/bias + BN gamma/beta/mean/variance
    with pytest.raises(ValueError, match=r"head/kernel.*--config.train.init_skip_mismatch=True"):
        load_weights_partial(standin.build_model(3), str(tmp_path), skip_mismatch=False)
    with pytest.raises(FileNotFoundError, match="ckpt"):
        load_weights_partial(target, str(tmp_path / "nothing"))
