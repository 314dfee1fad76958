"""Subprocess driver for the distributed trainer tests (not collected by pytest).

Logical CPU devices and ``TF_CONFIG`` must be in place before TensorFlow initialises, so the
tests run this module in a fresh interpreter::

    python -m tests.training.distributed_run mirrored MODEL_DIR
    TF_CONFIG=... python -m tests.training.distributed_run multi_worker MODEL_DIR

It prints one JSON line (prefixed ``RESULT``) with what the test checks.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from tests.training import standin
from tf_rcnn.training import Trainer, build_optimizer, get_strategy

STEPS = 3
PER_REPLICA = 4


def _train(strategy, model_dir, dataset, **batch):
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = standin.build_model(use_norm=False)
        optimizer = build_optimizer("sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.01)
    trainer = Trainer(
        model,
        optimizer,
        strategy,
        model_dir=model_dir,
        checkpoint_every=2,
        log_every=1,
        clip_norm=0.5,
    )
    metrics = trainer.train(dataset, total_steps=STEPS, **batch)
    return model, metrics


def run_mirrored(model_dir: str) -> dict:
    strategy = get_strategy("mirrored", num_cpu_devices=2)
    model, metrics = _train(
        strategy,
        os.path.join(model_dir, "mirrored"),
        standin.make_dataset_fn(PER_REPLICA),
        per_replica_batch=PER_REPLICA,
    )
    # Same data on one device: the global batch of 8 is replica 0's 4 images then replica 1's.
    single, single_metrics = _train(
        tf.distribute.get_strategy(),
        os.path.join(model_dir, "single"),
        standin.make_dataset(2 * PER_REPLICA),
        global_batch=2 * PER_REPLICA,
    )
    diff = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(model.weights, single.weights, strict=True)
    )
    moved = max(float(np.max(np.abs(a.numpy()))) for a in model.weights)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "step": metrics["step"],
        "loss": metrics["total_loss"],
        "single_loss": single_metrics["total_loss"],
        "max_weight_diff": diff,
        "max_weight": moved,
    }


def run_multi_worker(model_dir: str) -> dict:
    strategy = get_strategy("multi_worker")
    _, metrics = _train(
        strategy, model_dir, standin.make_dataset_fn(PER_REPLICA), per_replica_batch=PER_REPLICA
    )
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    return {
        "replicas": strategy.num_replicas_in_sync,
        "step": metrics["step"],
        "loss": metrics["total_loss"],
        "task": task["index"],
    }


if __name__ == "__main__":
    mode, directory = sys.argv[1], sys.argv[2]
    result = run_mirrored(directory) if mode == "mirrored" else run_multi_worker(directory)
    print("RESULT " + json.dumps(result), flush=True)
