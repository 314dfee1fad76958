"""Training from a recipe: what ``train.py`` runs, callable in-process (tests, notebooks).

``run_training(config, model_dir, strategy)`` loads the training split, takes
``model.num_classes`` from its label map (when the recipe leaves it unset), builds the model and
optimiser under the strategy scope, and trains with :class:`tf_rcnn.training.trainer.Trainer`,
resuming from the newest checkpoint in ``model_dir``. Once the checkpoint is known to fit (or
there is none), the resolved config (``config.json``) and ``label_map.json`` are written into
the run directory (chief only). A run already at ``train.total_steps`` is left as it is.

Watching (chief only): ``train.eval_every`` evaluates every N steps and keeps the best
checkpoint by ``train.eval_metric`` in ``model_dir/best``; ``train.image_summary_every`` writes a
TensorBoard picture of detections. Training does not know how to evaluate: the caller passes the
factories (``train.py`` passes ``tf_rcnn.evaluation.watch.make_eval_fn`` / ``make_image_fn``).

This is joint (approximate joint) training; ``train.schedule_mode="alternating"`` is the 4-step
schedule of :mod:`tf_rcnn.training.alternating`, which runs each stage through this function.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from tf_rcnn.config import CONFIG_FILE, ConfigError
from tf_rcnn.data.builder import build_input_pipeline, load_split, split_flag
from tf_rcnn.data.records import DetectionRecord, relabel_records
from tf_rcnn.data.tfrecords import TFRecordFiles
from tf_rcnn.label_map import LABEL_MAP_FILE, LabelMap, match_label_map
from tf_rcnn.models import builder
from tf_rcnn.models.checkpoint import load_run_label_map, load_weights, weight_key
from tf_rcnn.training.optimizers import optimizer_from_config
from tf_rcnn.training.strategy import is_chief
from tf_rcnn.training.trainer import Trainer

# make_eval_fn(config, model, label_map) -> eval_fn(step) -> metrics; make_image_fn likewise
# -> image_fn(step) -> uint8 [H, W, 3] (see tf_rcnn.evaluation.watch).
HookFactory = Callable[[ml_collections.ConfigDict, keras.Model, LabelMap], Callable[[int], Any]]

# How many class names a message lists before "... (K in all)".
_NAMES_SHOWN = 10


def _class_names(label_map: LabelMap) -> str:
    names = label_map.names[:_NAMES_SHOWN]
    more = (f", ... ({label_map.num_classes} in all)"
            if label_map.num_classes > _NAMES_SHOWN else "")
    return ", ".join(names) + more


def resolve_num_classes(config: ml_collections.ConfigDict, label_map: LabelMap
                        ) -> ml_collections.ConfigDict:
    """``config`` with ``model.num_classes`` taken from the training data's label map.

    Returns ``config`` itself when it already matches, else a copy with the value filled in
    (logged with the class names).

    Raises:
        ConfigError: ``model.num_classes`` is set and differs from the data's class count (the
            message names both and says to drop the flag).
    """
    given, found = config.model.num_classes, label_map.num_classes
    if given is None:
        config = copy.deepcopy(config)
        config.model.num_classes = found
        logging.info("model.num_classes=%d from the training data: %s", found,
                     _class_names(label_map))
    elif given != found:
        raise ConfigError(
            f"--config.model.num_classes={given} does not match the training data: "
            f"{split_flag(config, 'train')} has {found} classes ({_class_names(label_map)}). "
            "Drop --config.model.num_classes (and any num_classes line in the recipe): the "
            "class count follows the training data.")
    return config


def checkpoint_step(model_dir: str) -> int | None:
    """The step of the newest checkpoint in ``model_dir`` (``ckpt-<step>``), or None."""
    latest = tf.train.latest_checkpoint(model_dir) if tf.io.gfile.isdir(model_dir) else None
    if latest is None:
        return None
    try:
        return int(os.path.basename(latest).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def read_training_data(config: ml_collections.ConfigDict, model_dir: str, resuming: bool,
                       with_masks: bool = False
                       ) -> tuple[list[DetectionRecord] | TFRecordFiles, LabelMap]:
    """The training records and the classes the model is trained on.

    - Resuming a run with a ``label_map.json``: the data is read through the run's classes
      (``tf_rcnn.label_map.match_label_map``: the same ids, else the same names, else an
      error naming ``--config.data.train_annotations``), so class ``i`` stays class ``i``.
    - Starting from ``train.init_checkpoint`` whose run has a ``label_map.json`` with exactly
      the data's class names: the data's classes are put in the init run's order (by the
      same rule), so the class-dependent weights that are loaded belong to their classes.
      Other names: new classes, the data's own (fine-tuning; nothing to match).
    - Otherwise: the data's own categories.
    """
    run_map = load_run_label_map(model_dir) if resuming else None
    records, label_map, _ = load_split(config, "train", label_map=run_map,
                                       with_masks=with_masks)
    init = config.train.init_checkpoint
    init_map = load_run_label_map(init) if init and not resuming else None
    if init_map is not None and sorted(init_map.names) == sorted(label_map.names):
        ordered = match_label_map(init_map, label_map.dataset_ids, label_map.names,
                                  source=split_flag(config, "train"))
        if ordered != label_map:
            logging.info("Classes in the order of %s: %s.", init, ", ".join(ordered.names))
            if isinstance(records, TFRecordFiles):  # a stream: read it through that order
                records, label_map, _ = load_split(config, "train", label_map=ordered,
                                                   with_masks=with_masks)
            else:
                records = relabel_records(records, label_map, ordered)
                label_map = ordered
    return records, label_map


def run_training(
    config: ml_collections.ConfigDict,
    model_dir: str,
    strategy: tf.distribute.Strategy | None = None,
    *,
    make_eval_fn: HookFactory | None = None,
    make_image_fn: HookFactory | None = None,
    prepare_model: Callable[[keras.Model], None] | None = None,
    loss_terms: Sequence[str] | None = None,
) -> dict[str, float]:
    """Trains the recipe's model into ``model_dir``; returns the final losses.

    A run whose newest checkpoint is already at ``train.total_steps`` is not touched (no data
    loaded, no model built); the result is then ``{"step": S, "total_steps": T}`` without
    losses.

    Args:
        config: the full recipe.
        model_dir: run directory (resumed when it holds checkpoints).
        strategy: distribution strategy (default: the current one).
        make_eval_fn: builds the periodic evaluation for ``train.eval_every`` (needed when it
            is set).
        make_image_fn: builds the TensorBoard picture for ``train.image_summary_every``.
        prepare_model: called with the built model (under the strategy scope, before the
            optimizer sees its trainable variables), e.g. to load stage weights and freeze parts.
        loss_terms: train on the sum of these loss terms only (see ``Trainer``).

    Raises:
        ConfigError: the batch does not split over the replicas, the data's class count
            differs from ``model.num_classes``, the training data has nothing to train on, or a
            hook is missing (the message gives the override to use).
    """
    strategy = strategy or tf.distribute.get_strategy()
    t = config.train
    if t.schedule_mode != "joint":
        raise ConfigError(
            f"run_training trains jointly; train.schedule_mode={t.schedule_mode!r} is run by "
            "tf_rcnn.training.alternating.run_alternating ('alternating'; train.py chooses it)."
        )
    if t.eval_every and make_eval_fn is None:
        raise ConfigError("train.eval_every needs an evaluation; pass make_eval_fn "
                          "(train.py passes tf_rcnn.evaluation.watch.make_eval_fn) or set "
                          "--config.train.eval_every=0.")
    if t.image_summary_every and make_image_fn is None:
        raise ConfigError("train.image_summary_every needs make_image_fn (train.py passes "
                          "tf_rcnn.evaluation.watch.make_image_fn) or "
                          "--config.train.image_summary_every=0.")
    if t.mixed_precision:
        keras.mixed_precision.set_global_policy(t.mixed_precision)
        logging.info("Mixed precision policy: %s", t.mixed_precision)
    done = checkpoint_step(model_dir)
    if done is not None and done >= t.total_steps:  # the caller says so (train.py prints it)
        return {"step": float(done), "total_steps": float(t.total_steps)}
    if config.data.seed is not None:
        keras.utils.set_random_seed(config.data.seed)

    replicas = strategy.num_replicas_in_sync
    global_batch = config.data.train_batch_size
    if global_batch % replicas:
        raise ConfigError(
            f"data.train_batch_size={global_batch} does not split over {replicas} replicas; "
            f"use a multiple of {replicas}."
        )
    logging.info("Global batch %d = %d replicas x %d images", global_batch, replicas,
                 global_batch // replicas)

    family = builder.family_class(config)
    records, label_map = read_training_data(config, model_dir, resuming=done is not None,
                                            with_masks=family.needs_masks)
    # The pipeline takes the global batch and gives each replica its share.
    pipeline = build_input_pipeline(config, records, label_map, training=True,
                                    with_masks=family.needs_masks,
                                    needs_proposals=builder.needs_proposals(config))
    config = resolve_num_classes(config, label_map)

    with strategy.scope():
        model = builder.build_model(config, label_map=label_map.to_dict())
        model.build_with_dummy_inputs()
        if prepare_model is not None:
            prepare_model(model)
        optimizer = optimizer_from_config(config, global_batch)

    tf.io.gfile.makedirs(model_dir)

    def write_run_files(step: int) -> None:
        # After the restore check: a run directory of another model keeps its own files.
        del step
        if is_chief(strategy):
            with tf.io.gfile.GFile(os.path.join(model_dir, CONFIG_FILE), "w") as f:
                f.write(config.to_json_best_effort(indent=2))
            label_map.to_json(os.path.join(model_dir, LABEL_MAP_FILE))

    eval_fn = image_fn = None
    if is_chief(strategy) and t.eval_every:
        eval_fn = make_eval_fn(config, model, label_map)
    if is_chief(strategy) and t.image_summary_every:
        image_fn = make_image_fn(config, model, label_map)
    trainer = Trainer(
        model,
        optimizer,
        strategy,
        model_dir=model_dir,
        checkpoint_every=t.checkpoint_every,
        keep=t.keep_checkpoints,
        log_every=t.log_every,
        summary_every=t.log_every,
        clip_norm=t.clip_norm,
        steps_per_loop=t.steps_per_loop,
        nan_policy=t.nan_policy,
        # Every worker must take the same loop boundaries (collectives), so the intervals are
        # set everywhere; the hooks themselves run on the chief only.
        eval_fn=eval_fn if eval_fn is not None else ((lambda step: {}) if t.eval_every else None),
        eval_every=t.eval_every or None,
        best_metric=t.eval_metric if eval_fn is not None else None,
        image_fn=image_fn,
        image_every=t.image_summary_every or None,
        loss_terms=loss_terms,
    )
    if (not t.init_checkpoint and not config.model.backbone.get("weights")
            and trainer.checkpoints.latest_checkpoint is None):
        logging.info("Training from random weights: neither --config.model.backbone.weights nor "
                     "--config.train.init_checkpoint is set.")
    if t.init_checkpoint and trainer.checkpoints.latest_checkpoint is None:
        loaded, skipped = load_weights(model, t.init_checkpoint,
                                       skip_mismatch=t.init_skip_mismatch)
        logging.info("Initialised %d variables from %s (%d skipped).", len(loaded),
                     t.init_checkpoint, len(skipped))
    metrics = trainer.train(pipeline.dataset, total_steps=t.total_steps,
                            global_batch=global_batch, after_restore=write_run_files)
    problems = pipeline.read_problems()  # counted in the input graph (TFRecord data)
    if problems:
        logging.warning("Training data problems met while reading (each read of a record "
                        "counts): %s", ", ".join(f"{n} {r}" for r, n in problems.items()))
    metrics = {k: float(v) for k, v in metrics.items()}
    # Fingerprints of the final weights, logged by train.py on every worker: replicas that
    # stayed in sync give the same sum of |w| and the same SHA-256 of the weight bytes.
    metrics.update(weights_fingerprint(model))
    return metrics


def weights_fingerprint(model: keras.Model) -> dict:
    """``weights_l1`` (sum of |w|, float64) and ``weights_sha256`` (every weight's bytes in
    checkpoint-key order, a bit-exact equality check), from one pass over the weights."""
    digest = hashlib.sha256()
    l1 = 0.0
    for weight in sorted(model.weights, key=weight_key):
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        l1 += float(np.abs(value.astype(np.float64)).sum())
        digest.update(weight_key(weight).encode())
        digest.update(value.tobytes())
    return {"weights_l1": l1, "weights_sha256": digest.hexdigest()}
