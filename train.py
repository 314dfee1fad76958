"""Train a tf_rcnn detector from a recipe.

    python train.py --config=configs/shapes_faster_rcnn.py --model_dir=runs/shapes \
        [--config.train.total_steps=1000 ...] [--strategy=mirrored]

Running the same command again resumes from the newest checkpoint in ``--model_dir``. The run
directory receives checkpoints (``ckpt-<step>``), TensorBoard summaries (``train/``), the resolved
config (``config.json``) and the label map (``label_map.json``) that ``eval.py`` and the exporter
read back.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import check_config_overrides

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/NAME.py).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory (checkpoints, summaries).")
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "one_device", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy; multi_worker reads TF_CONFIG.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    "num_cpu_devices", None, "Split the CPU into this many logical devices (testing mirrored).")
flags.mark_flags_as_required(["config", "model_dir"])


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from tf_rcnn.models import builder
    from tf_rcnn.training.checkpoints import load_weights_partial
    from tf_rcnn.training.strategy import get_strategy
    from tf_rcnn.training.trainer import Trainer

    config = _CONFIG.value
    model_dir = _MODEL_DIR.value
    strategy = get_strategy(_STRATEGY.value, tpu_address=_TPU.value,
                            num_cpu_devices=_NUM_CPU_DEVICES.value)
    if config.train.mixed_precision:
        keras.mixed_precision.set_global_policy(config.train.mixed_precision)
        logging.info("Mixed precision policy: %s", config.train.mixed_precision)
    if config.data.seed is not None:
        keras.utils.set_random_seed(config.data.seed)

    replicas = strategy.num_replicas_in_sync
    global_batch = config.data.train_batch_size
    if global_batch % replicas:
        raise app.UsageError(
            f"data.train_batch_size={global_batch} is not divisible by the {replicas} replicas; "
            f"use a multiple of {replicas}.")
    per_replica = global_batch // replicas
    logging.info("Global batch %d = %d replicas x %d images", global_batch, replicas, per_replica)

    records, label_map, _ = builder.load_split(config, "train")
    if label_map.num_classes != config.model.num_classes:
        raise app.UsageError(
            f"The training data has {label_map.num_classes} classes but model.num_classes is "
            f"{config.model.num_classes}; set --config.model.num_classes="
            f"{label_map.num_classes}.")
    # The pipeline takes the global batch and gives each replica its share.
    pipeline = builder.build_input_pipeline(config, records, label_map, training=True)

    with strategy.scope():
        model = builder.build_model(config, label_map=label_map.to_dict())
        builder.initialize_model(model, config)
        optimizer = builder.build_optimizer_from_config(config, global_batch)

    if tf.io.gfile.exists(model_dir) is False:
        tf.io.gfile.makedirs(model_dir)
    if strategy.cluster_resolver is None or strategy.cluster_resolver.task_id in (0, None):
        with tf.io.gfile.GFile(os.path.join(model_dir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        label_map.to_json(os.path.join(model_dir, "label_map.json"))

    t = config.train
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
    logging.info("Training finished: %s", json.dumps({k: float(v) for k, v in metrics.items()}))


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    app.run(main)
