"""Model weights in TensorFlow checkpoints: keys, strict and partial loads, restoring a run.

Conventions:
    A training checkpoint is ``tf.train.Checkpoint(model=..., optimizer=..., step=...)`` written
    as ``model_dir/ckpt-<step>`` (``tf_rcnn.training.checkpoints.CheckpointManager``). Its
    variable keys are object paths from that root, e.g.
    ``model/rpn/rpn_head/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE``; :func:`checkpoint_keys`
    computes the same keys for live objects (breadth-first over tracked attributes, the first
    path found names the variable, exactly as TensorFlow's saver does), which lets us compare
    names and shapes *before* restoring and report every mismatch by name.

    The model enters the checkpoint through :func:`model_weights_trackable`: every variable of
    ``model.weights`` keyed by its Keras path without the model's own name
    (:func:`weight_key`). Keras 3 keeps lists of sub-layers in its own ``TrackedList``, which
    TensorFlow's object graph does not follow, so checkpointing the model object itself would
    silently drop every layer held in a list (an FPN's lateral convs, a backbone's stages).
    Keras paths are made of layer names and the name scope the variable was created in, so
    layers have stable names (the builder names every part) and every construction route builds
    variables the same way (``TwoStageDetector.build_with_dummy_inputs``; children are
    serialised without their build config): a detector made by the builder, by ``from_config``
    or by ``keras.models.load_model`` has the same keys.

:func:`restore_detector` is the one way every command and the fine-tuning API turn a run
directory (``config.json``, ``label_map.json``, ``ckpt-*``) into a detector.
"""

from __future__ import annotations

import collections
import copy
import os
from typing import Any

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from tf_rcnn.config import (
    ConfigError,
    load_config_file,
    load_run_config,
    run_config_file,
    run_directory,
)
from tf_rcnn.label_map import LABEL_MAP_FILE, LabelMap
from tf_rcnn.models import builder
from tf_rcnn.models.detectors.two_stage import TwoStageDetector
from tf_rcnn.models.serialization import weight_key

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


def load_weights(
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
            written by ``tf_rcnn.training.checkpoints.CheckpointManager``; ``""`` if the model
            was the root).

    Returns:
        ``(loaded, skipped)`` variable descriptions.

    Raises:
        ValueError: ``skip_mismatch=False`` and some variable did not fit (the first are
            named, with the fix).
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
            f"Checkpoint {path} does not fit the model: {len(skipped)} of "
            f"{len(skipped) + len(loaded)} variables differ, e.g. " + "; ".join(skipped[:3])
            + ". It was trained with another recipe or class count; pass that run's config "
            "(its config.json), or fine-tune from it with "
            "--config.train.init_checkpoint=RUN --config.train.init_skip_mismatch=True."
        )
    for variable, key in assignments:
        variable.assign(tf.cast(reader.get_tensor(key), variable.dtype))
    logging.info("Loaded %d variables from %s.", len(loaded), path)
    for line in skipped:
        logging.warning("Skipped %s", line)
    return loaded, skipped


def save_weights(model: keras.Model, run_dir: str, step: int = 0) -> str:
    """Writes the model's weights as ``run_dir/ckpt-<step>``, keyed like a training checkpoint
    (without optimizer state), so :func:`restore_detector` and ``init_checkpoint`` read it.

    Returns:
        The checkpoint prefix.
    """
    root = tf.train.Checkpoint(model=model_weights_trackable(model))
    manager = tf.train.CheckpointManager(root, run_dir, max_to_keep=1, checkpoint_name="ckpt")
    return manager.save(checkpoint_number=step)


def _family_name(config: ml_collections.ConfigDict) -> str:
    return f"{builder.family_class(config).__name__} (model.type={config.model.type!r})"


def load_run_label_map(path: str) -> LabelMap | None:
    """The ``label_map.json`` of the run holding ``path`` (a run directory or checkpoint
    prefix; any TF filesystem), or None when the run has none."""
    file = os.path.join(run_directory(path), LABEL_MAP_FILE)
    if not tf.io.gfile.exists(file):
        return None
    with tf.io.gfile.GFile(file) as f:
        return LabelMap.from_json(f.read())


def resolve_run_config(
    checkpoint: str, config: ml_collections.ConfigDict | str | None = None
) -> ml_collections.ConfigDict:
    """The config to rebuild the model of a run: ``config`` when given (a recipe path or a
    ConfigDict), else the run's ``config.json``.

    A recipe leaves ``model.num_classes`` to the training data; the run knows it (its
    ``config.json``, or the class count of its ``label_map.json``), so a copy of the recipe
    with that value is returned.

    Raises:
        ConfigError: neither is available, or the given recipe builds another detector family
            than the run holds (both named).
    """
    run_config = load_run_config(checkpoint, upgrade=builder.upgrade_saved_config)
    if isinstance(config, str):
        config = load_config_file(config, upgrade=builder.upgrade_saved_config)
    if config is None:
        if run_config is None:
            raise ConfigError(
                f"{run_config_file(checkpoint)} does not exist, so the model cannot be rebuilt; "
                "pass the recipe it was trained with, e.g. --config=configs/NAME.py.")
        return run_config
    if run_config is not None and (builder.family_class(run_config)
                                   is not builder.family_class(config)):
        raise ConfigError(
            f"The run {os.path.dirname(run_config_file(checkpoint))} holds a "
            f"{_family_name(run_config)} (its config.json), but the recipe builds a "
            f"{_family_name(config)}. Drop --config to use the run's own config, or point "
            "--checkpoint at a run of this recipe.")
    if config.model.num_classes is None:
        known = None
        if run_config is not None:
            known = run_config.model.num_classes
        elif (run_map := load_run_label_map(checkpoint)) is not None:
            known = run_map.num_classes
        if known is not None:
            config = copy.deepcopy(config)
            config.model.num_classes = known
    return config


# --precision of eval.py and the exporters -> the Keras dtype policy the detector is built
# under: weights stay float32, layers compute in the reduced type (``float32`` is the CPU
# default; bfloat16 pays off on CPUs with AMX and on TPUs, float16 on GPUs).
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def precision_policy(precision: str) -> str:
    """The Keras dtype policy of a ``--precision`` value.

    Raises:
        ConfigError: an unknown value (the message lists the known ones).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision={precision!r} is not one of "
                          f"{', '.join(PRECISIONS)}.")
    return PRECISIONS[precision]


def restore_detector(
    checkpoint: str,
    config: ml_collections.ConfigDict | str | None = None,
    label_map: LabelMap | None = None,
    precision: str = "float32",
) -> tuple[TwoStageDetector, ml_collections.ConfigDict, LabelMap | None]:
    """Rebuilds a trained detector from its run and restores its weights strictly.

    The one restore path of ``eval.py``, the exporters, ``predict``, ``dump_proposals``, the
    4-step schedule and ``tf_rcnn.finetune.load_detector``.

    Args:
        checkpoint: a run directory (its newest checkpoint) or a checkpoint prefix.
        config: the recipe (path or ConfigDict); default: the run's ``config.json``. A recipe of
            another detector family than the run's is refused.
        label_map: the classes; default: the run's ``label_map.json`` (classes ``1..K`` keep
            their ids when there is none).
        precision: ``float32``, ``bfloat16`` or ``float16`` (:data:`PRECISIONS`): the detector
            computes in that type (a mixed policy: the weights stay float32, so any run
            restores); the global Keras policy is left as it was.

    Returns:
        ``(model, config, label_map)``: the built detector with every weight restored, the
        config it was built from and its label map (None when the run has none).

    Raises:
        FileNotFoundError: no checkpoint at ``checkpoint``.
        ConfigError: no config to rebuild the model from, or a recipe of another family.
        ValueError: the checkpoint does not fit the model (a short summary names the fix).
    """
    policy = precision_policy(precision)
    path = resolve_checkpoint_path(checkpoint)
    config = resolve_run_config(path, config)
    if label_map is None:
        label_map = load_run_label_map(path)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # layers take the policy when they are made
    try:
        model = builder.build_model(
            config, label_map=None if label_map is None else label_map.to_dict())
        model.build_with_dummy_inputs()
    finally:
        keras.config.set_dtype_policy(previous)
    load_weights(model, path, skip_mismatch=False)
    logging.info("Restored %s from %s%s", type(model).__name__, path,
                 "" if precision == "float32" else f" (computing in {precision})")
    return model, config, label_map
