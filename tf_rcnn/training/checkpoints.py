"""Training checkpoints: save/resume model + optimizer + step with strict fit checks.

Conventions:
    A training checkpoint is ``tf.train.Checkpoint(model=..., optimizer=..., step=...)`` written
    as ``model_dir/ckpt-<step>``; the model's part is keyed as ``tf_rcnn.models.checkpoint``
    describes (so eval, export and fine-tuning read the same files with
    ``tf_rcnn.models.checkpoint.restore_detector``).

    Multi-worker: every worker must call ``save`` (saving runs collective ops), but only the
    chief writes into ``model_dir``; the others write into a temporary directory that is
    deleted right after, the pattern from the TensorFlow multi-worker tutorial.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping

import keras
import tensorflow as tf
from absl import logging

from tf_rcnn.models.checkpoint import find_mismatches, model_weights_trackable
from tf_rcnn.training.strategy import is_chief


class CheckpointManager:
    """Saves and restores ``model``, ``optimizer`` and the global ``step``.

    Args:
        model_dir: directory of the run; checkpoints are ``model_dir/ckpt-<step>``.
        model: the ``keras.Model`` (built, i.e. with variables).
        optimizer: the Keras optimizer. Build it (``optimizer.build(vars)``) before
            :meth:`restore_or_initialize` so its slots are checked and restored eagerly.
        step: int64 scalar ``tf.Variable`` counting finished training steps; created here
            (under the current strategy scope) when ``None``.
        keep: number of most recent checkpoints kept.
        checkpoint_every: :meth:`maybe_save` writes when ``step % checkpoint_every == 0``.
        strategy: the distribution strategy, used to decide who is chief.

    Example:
        ``manager = CheckpointManager(run_dir, model, optimizer)``;
        ``start_step = manager.restore_or_initialize()``
    """

    def __init__(
        self,
        model_dir: str,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        step: tf.Variable | None = None,
        keep: int = 5,
        checkpoint_every: int = 500,
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}.")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}.")
        self.model_dir = str(model_dir)
        self.model = model
        self.optimizer = optimizer
        if step is None:
            step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self.step = step
        self.keep = keep
        self.checkpoint_every = checkpoint_every
        self.strategy = strategy
        self.is_chief = is_chief(strategy)
        if self.is_chief:
            self._write_dir = self.model_dir
        else:
            task_id = getattr(getattr(strategy, "cluster_resolver", None), "task_id", 0)
            self._write_dir = os.path.join(self.model_dir, f".workertemp_{task_id}")
        self._checkpoint: tf.train.Checkpoint | None = None
        self._manager: tf.train.CheckpointManager | None = None

    @property
    def checkpoint(self) -> tf.train.Checkpoint:
        """The root checkpoint object, made on first use (the model must have variables by
        then; a trainer may build it from the first batch)."""
        if self._checkpoint is None:
            self._checkpoint = tf.train.Checkpoint(
                model=model_weights_trackable(self.model), optimizer=self.optimizer,
                step=self.step,
            )
        return self._checkpoint

    @property
    def manager(self) -> tf.train.CheckpointManager:
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self.checkpoint, self._write_dir, max_to_keep=self.keep, checkpoint_name="ckpt"
            )
        return self._manager

    @property
    def latest_checkpoint(self) -> str | None:
        """Prefix of the newest checkpoint in ``model_dir`` (written by the chief), or None."""
        return tf.train.latest_checkpoint(self.model_dir)

    def check_fits(self, checkpoint_path: str) -> None:
        """Raises ValueError naming every variable that does not fit ``checkpoint_path``."""
        missing, mismatched, unexpected = find_mismatches(self.checkpoint, checkpoint_path)
        if not (missing or mismatched or unexpected):
            return
        lines = [f"Checkpoint {checkpoint_path} in --model_dir does not fit the model this "
                 "recipe builds (another recipe, class count or optimizer):"]
        for what, names in (("shape mismatch", mismatched), ("missing from the checkpoint",
                                                              missing),
                            ("in the checkpoint but not in the model", unexpected)):
            if names:
                more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
                lines.append(f"  {what}: {len(names)}, e.g. " + "; ".join(names[:3]) + more)
        lines.append(
            f"Train into a new --model_dir, or start a new run from this one with "
            f"--config.train.init_checkpoint={self.model_dir} "
            "--config.train.init_skip_mismatch=True."
        )
        raise ValueError("\n".join(lines))

    def restore_or_initialize(self) -> int:
        """Restores the latest checkpoint of ``model_dir`` if any; returns the restored step.

        Returns 0 (and leaves variables untouched) when the directory has no checkpoint.

        Raises:
            ValueError: the checkpoint does not fit (names each mismatched variable).
        """
        path = self.latest_checkpoint
        if path is None:
            logging.info("No checkpoint in %s: starting from step 0.", self.model_dir)
            return 0
        self.check_fits(path)
        self.checkpoint.restore(path).assert_existing_objects_matched()
        restored = int(self.step.numpy())
        logging.info("Restored %s at step %d.", path, restored)
        return restored

    def save(self, step: int | None = None) -> str | None:
        """Writes a checkpoint numbered ``step`` (default: the step variable).

        Every worker must call this. Returns the chief's checkpoint path (None on non-chief).
        """
        number = int(self.step.numpy()) if step is None else int(step)
        path = self.manager.save(checkpoint_number=number)
        if not self.is_chief:
            tf.io.gfile.rmtree(self._write_dir)
            return None
        logging.info("Saved checkpoint %s.", path)
        return path

    def maybe_save(self, step: int, force: bool = False) -> str | None:
        """Saves when ``step`` is a multiple of ``checkpoint_every`` (or ``force``)."""
        if force or step % self.checkpoint_every == 0:
            if self.manager.latest_checkpoint == os.path.join(self._write_dir, f"ckpt-{step}"):
                return self.manager.latest_checkpoint  # this step is already on disk
            return self.save(step)
        return None


def export_best(checkpoint_path: str, best_dir: str, metrics: Mapping[str, float]) -> str:
    """Copies one checkpoint into ``best_dir`` (replacing its content) with a metrics.json.

    Returns:
        The prefix of the copied checkpoint, loadable with ``tf.train.latest_checkpoint``.
    """
    if tf.io.gfile.exists(best_dir):
        shutil.rmtree(best_dir, ignore_errors=True)
    tf.io.gfile.makedirs(best_dir)
    base = os.path.basename(checkpoint_path)
    for source in tf.io.gfile.glob(checkpoint_path + ".*"):
        tf.io.gfile.copy(source, os.path.join(best_dir, os.path.basename(source)), overwrite=True)
    with open(os.path.join(best_dir, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
    with open(os.path.join(best_dir, "metrics.json"), "w") as f:
        json.dump({k: float(v) for k, v in metrics.items()} | {"checkpoint": base}, f, indent=2)
    return os.path.join(best_dir, base)
