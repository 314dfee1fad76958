"""Training checkpoints: save/resume model + optimizer + step, strict fit checks, partial loads.

Conventions:
    A training checkpoint is ``tf.train.Checkpoint(model=..., optimizer=..., step=...)`` written
    as ``model_dir/ckpt-<step>``. Its variable keys are object paths from that root, e.g.
    ``model/backbone/conv1/_kernel/.ATTRIBUTES/VARIABLE_VALUE``; :func:`checkpoint_keys`
    computes the same keys for live objects (breadth-first over tracked attributes, the first
    path found names the variable, exactly as TensorFlow's saver does), which lets us compare
    names and shapes *before* restoring and report every mismatch by name.

    The model enters the checkpoint through :func:`model_weights_trackable`: every variable of
    ``model.weights`` keyed by its Keras path without the model's own name (``rpn/rpn_head/conv/
    kernel``). Keras 3 keeps lists of sub-layers in its own ``TrackedList``, which TensorFlow's
    object graph does not follow, so checkpointing the model object itself silently drops every
    layer held in a list (an FPN's lateral convs, a backbone's stages). Keras paths are made of
    layer names, so layers must have stable names (the builder names every part); a name Keras
    generated (``fpn_1`` for a second FPN in one process) shows up as a named mismatch.

    Multi-worker: every worker must call ``save`` (saving runs collective ops), but only the
    chief writes into ``model_dir``; the others write into a temporary directory that is
    deleted right after, the pattern from the TensorFlow multi-worker tutorial.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from tf_rcnn.training.strategy import is_chief

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def _escape(name: str) -> str:
    # TensorFlow's escaping of object names inside checkpoint keys.
    return name.replace(".", "..").replace("/", ".S")


def _is_variable(obj: Any) -> bool:
    return isinstance(obj, (tf.Variable, keras.Variable))


def checkpoint_keys(root: Any, prefix: str = "") -> dict[str, Any]:
    """Checkpoint key -> variable for every variable reachable from ``root``.

    Args:
        root: a trackable object (``keras.Model``, optimizer, ``tf.train.Checkpoint``).
        prefix: object path of ``root`` inside the checkpoint (e.g. ``"model"``), or ``""``.

    Returns:
        Ordered dict from keys such as ``"model/dense/bias/.ATTRIBUTES/VARIABLE_VALUE"`` to the
        (Keras or TF) variable.
    """
    view = tf.train.TrackableView(root)
    paths = {id(root): prefix}
    seen = {id(root)}
    queue = collections.deque([root])
    keys: dict[str, Any] = {}
    while queue:
        obj = queue.popleft()
        if _is_variable(obj):
            keys[paths[id(obj)] + _VALUE_SUFFIX] = obj
            continue
        for name, child in view.children(obj).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            parent = paths[id(obj)]
            paths[id(child)] = f"{parent}/{_escape(name)}" if parent else _escape(name)
            queue.append(child)
    return keys


def weight_key(variable: Any) -> str:
    """A model variable's checkpoint name: its Keras path without the root model's name."""
    path = getattr(variable, "path", None) or variable.name
    return path.split("/", 1)[1] if "/" in path else path


def model_weights_trackable(model: keras.Model) -> tf.train.Checkpoint:
    """A trackable holding every variable of ``model`` keyed by :func:`weight_key`.

    Raises:
        ValueError: the model has no variables yet, or two variables share a path (give the
            layers distinct names).
    """
    weights = list(model.weights)
    if not weights:
        raise ValueError(
            f"{type(model).__name__} has no variables yet; build it (call it once on an input) "
            "before checkpointing."
        )
    keyed: dict[str, Any] = {}
    for variable in weights:
        key = weight_key(variable)
        if key in keyed:
            raise ValueError(
                f"Two variables of {type(model).__name__} share the path {key!r}; give the "
                "layers that own them distinct names so checkpoints can tell them apart."
            )
        keyed[key] = variable
    root = tf.train.Checkpoint()
    for key, variable in keyed.items():
        setattr(root, key, variable)
    return root


def resolve_checkpoint_path(path: str) -> str:
    """Accepts a checkpoint prefix or a directory (its latest checkpoint) and returns the prefix.

    Raises:
        FileNotFoundError: nothing loadable at ``path``.
    """
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"No checkpoint found in directory {path!r}.")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(
            f"No checkpoint at {path!r} (expected {path}.index); pass a checkpoint prefix such "
            "as model_dir/ckpt-500 or the model_dir itself."
        )
    return path


def _variable_label(key: str, variable: Any) -> str:
    name = getattr(variable, "path", None) or getattr(variable, "name", "?")
    return f"{name} [{key}]"


def find_mismatches(
    checkpoint: tf.train.Checkpoint, checkpoint_path: str
) -> tuple[list[str], list[str], list[str]]:
    """Compares the variables of a live checkpoint object with a saved one, without restoring.

    Keys are computed by one breadth-first walk from the checkpoint root, as the saver does, so
    a model variable also referenced by the optimizer keeps its ``model/...`` key.

    Args:
        checkpoint: the ``tf.train.Checkpoint`` that will restore ``checkpoint_path``.
        checkpoint_path: checkpoint prefix.

    Returns:
        ``(missing, shape_mismatch, unexpected)``: human-readable lists of live variables absent
        from the checkpoint, variables whose shapes differ (both shapes shown), and checkpoint
        variables that no live variable claims (``save_counter`` aside).
    """
    saved = tf.train.load_checkpoint(checkpoint_path).get_variable_to_shape_map()
    missing, mismatched, claimed = [], [], set()
    for key, variable in checkpoint_keys(checkpoint).items():
        if key.startswith("save_counter/"):
            continue
        if key not in saved:
            missing.append(_variable_label(key, variable))
            continue
        claimed.add(key)
        live_shape = list(variable.shape)
        if list(saved[key]) != live_shape:
            mismatched.append(
                f"{_variable_label(key, variable)}: checkpoint {list(saved[key])} vs "
                f"model {live_shape}"
            )
    unexpected = sorted(
        key
        for key in saved
        if key not in claimed and key != _GRAPH_KEY and not key.startswith("save_counter/")
    )
    return missing, mismatched, unexpected


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
        lines = [f"Checkpoint {checkpoint_path} does not fit the model/optimizer:"]
        if mismatched:
            lines.append("  shape mismatch: " + "; ".join(mismatched))
        if missing:
            lines.append("  missing from the checkpoint: " + ", ".join(missing))
        if unexpected:
            lines.append("  in the checkpoint but not in the model: " + ", ".join(unexpected))
        lines.append(
            "Use a fresh model_dir, or fine-tune from it with "
            "tf_rcnn.training.checkpoints.load_weights_partial(model, path)."
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


def load_weights_partial(
    model: keras.Model,
    checkpoint_path: str,
    skip_mismatch: bool = True,
    root_name: str = "model",
) -> tuple[list[str], list[str]]:
    """Loads every model variable whose checkpoint key and shape fit; skips the rest.

    Use it to fine-tune from a checkpoint trained with another class count: the backbone, neck
    and RPN load, the class-dependent head layers are skipped (and logged) and keep their
    fresh initialisation.

    Args:
        model: the built ``keras.Model`` to fill.
        checkpoint_path: checkpoint prefix or a directory (its latest checkpoint).
        skip_mismatch: if False, raise instead of skipping.
        root_name: object path of the model in the checkpoint (``"model"`` for checkpoints
            written by :class:`CheckpointManager`; ``""`` if the model was the root).

    Returns:
        ``(loaded, skipped)`` variable descriptions.

    Raises:
        ValueError: ``skip_mismatch=False`` and some variable did not fit (all are named).
    """
    path = resolve_checkpoint_path(checkpoint_path)
    reader = tf.train.load_checkpoint(path)
    saved = reader.get_variable_to_shape_map()
    loaded, skipped = [], []
    assignments = []
    root = model_weights_trackable(model)
    for key, variable in checkpoint_keys(root, root_name).items():
        label = _variable_label(key, variable)
        if key not in saved:
            skipped.append(f"{label}: not in checkpoint")
        elif list(saved[key]) != list(variable.shape):
            shapes = f"checkpoint {list(saved[key])} vs model {list(variable.shape)}"
            skipped.append(f"{label}: {shapes}")
        else:
            assignments.append((variable, key))
            loaded.append(label)
    if skipped and not skip_mismatch:
        raise ValueError(
            f"Checkpoint {path} does not fit the model for {len(skipped)} variable(s): "
            + "; ".join(skipped)
            + ". Pass skip_mismatch=True to load only the fitting variables."
        )
    for variable, key in assignments:
        variable.assign(tf.cast(reader.get_tensor(key), variable.dtype))
    logging.info("Loaded %d variables from %s.", len(loaded), path)
    for line in skipped:
        logging.warning("Skipped %s", line)
    return loaded, skipped


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
