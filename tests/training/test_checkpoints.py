"""Checkpoint keys, strict fit checks naming variables, and partial loading."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.training import standin
from tf_rcnn.training import CheckpointManager, build_optimizer, load_weights_partial
from tf_rcnn.training.checkpoints import checkpoint_keys


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
    assert "model/head/_kernel/.ATTRIBUTES/VARIABLE_VALUE" in live


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
    assert "load_weights_partial" in message


def test_missing_variables_are_named(tmp_path):
    _saved_manager(tmp_path)
    model = standin.build_model()
    extra = tf.Variable(tf.zeros([5]), name="extra_scale")
    model.extra_scale = extra
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    manager = CheckpointManager(str(tmp_path), model, optimizer)
    with pytest.raises(ValueError, match=r"missing from the checkpoint: .*extra_scale"):
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
    with pytest.raises(ValueError, match=r"head/kernel.*skip_mismatch=True"):
        load_weights_partial(standin.build_model(3), str(tmp_path), skip_mismatch=False)
    with pytest.raises(FileNotFoundError, match="ckpt"):
        load_weights_partial(target, str(tmp_path / "nothing"))
