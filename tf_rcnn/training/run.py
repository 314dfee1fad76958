"""Training from a recipe: what ``train.py`` runs, callable in-process (tests, notebooks).

``run_training(config, model_dir, strategy)`` loads the training split, builds the model and
optimiser under the strategy scope, writes ``config.json`` and ``label_map.json`` into the run
directory (chief only), and trains with :class:`tf_rcnn.training.trainer.Trainer`, resuming from
the newest checkpoint in ``model_dir``.
"""

from __future__ import annotations

import os

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from tf_rcnn.config import ConfigError
from tf_rcnn.models import builder
from tf_rcnn.training.checkpoints import load_weights_partial
from tf_rcnn.training.strategy import is_chief
from tf_rcnn.training.trainer import Trainer


def run_training(
    config: ml_collections.ConfigDict,
    model_dir: str,
    strategy: tf.distribute.Strategy | None = None,
) -> dict[str, float]:
    """Trains the recipe's model into ``model_dir``; returns the final losses.

    Raises:
        ConfigError: the batch does not split over the replicas, or the data's class count
            differs from ``model.num_classes`` (the message gives the override to use).
    """
    strategy = strategy or tf.distribute.get_strategy()
    t = config.train
    if t.mixed_precision:
        keras.mixed_precision.set_global_policy(t.mixed_precision)
        logging.info("Mixed precision policy: %s", t.mixed_precision)
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

    records, label_map, _ = builder.load_split(config, "train")
    if label_map.num_classes != config.model.num_classes:
        raise ConfigError(
            f"The training data has {label_map.num_classes} classes but model.num_classes is "
            f"{config.model.num_classes}; set --config.model.num_classes="
            f"{label_map.num_classes}."
        )
    # The pipeline takes the global batch and gives each replica its share.
    pipeline = builder.build_input_pipeline(config, records, label_map, training=True)

    with strategy.scope():
        model = builder.build_model(config, label_map=label_map.to_dict())
        builder.initialize_model(model, config)
        optimizer = builder.build_optimizer_from_config(config, global_batch)

    tf.io.gfile.makedirs(model_dir)
    if is_chief(strategy):
        with tf.io.gfile.GFile(os.path.join(model_dir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        label_map.to_json(os.path.join(model_dir, "label_map.json"))

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
    )
    if t.init_checkpoint and trainer.checkpoints.latest_checkpoint is None:
        loaded, skipped = load_weights_partial(model, t.init_checkpoint,
                                               skip_mismatch=t.init_skip_mismatch)
        logging.info("Initialised %d variables from %s (%d skipped).", len(loaded),
                     t.init_checkpoint, len(skipped))
    metrics = trainer.train(pipeline.dataset, total_steps=t.total_steps,
                            global_batch=global_batch)
    return {k: float(v) for k, v in metrics.items()}
