"""Overfitting a shapes recipe on 8 tiny images, shared by the end-to-end tests.

The validation split is generated with the training seed, so the run is evaluated on the images
it trained on: near-perfect detections are expected after a few hundred steps.
"""

from __future__ import annotations

import os

import ml_collections

from tf_rcnn.config import load_config_file
from tf_rcnn.evaluation.evaluate import evaluate_checkpoint
from tf_rcnn.training.run import run_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def overfit_config(recipe: str, data_dir: str, steps: int) -> ml_collections.ConfigDict:
    """``configs/<recipe>`` on 8 64x64 images, trained ``steps`` steps, evaluated on the same."""
    config = load_config_file(os.path.join(REPO, "configs", recipe))
    d = config.data
    d.shapes_dir = data_dir
    d.shapes_train_images = d.shapes_val_images = 8
    d.shapes_val_seed = d.shapes_train_seed  # evaluate on the training images
    d.shapes_image_size = 64
    d.scales = (64,)
    d.max_size = 64
    d.train_batch_size = 4
    d.eval_batch_size = 8
    d.random_flip = False
    t = config.train
    t.total_steps = steps
    t.warmup_steps = 50
    t.base_learning_rate = 0.02
    t.base_batch_size = 4
    t.checkpoint_every = steps
    t.log_every = 100
    t.steps_per_loop = 20
    config.model.rpn.anchor_sizes = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    config.eval.visualize = 2
    return config


def train_and_evaluate(root, recipe: str, steps: int) -> tuple:
    """Trains :func:`overfit_config` under ``root`` (a path) and evaluates the final checkpoint.

    Returns ``(config, model_dir, eval_dir, final_losses, metrics)``.
    """
    config = overfit_config(recipe, str(root / "shapes"), steps)
    model_dir = str(root / "run")
    losses = run_training(config, model_dir)
    out = str(root / "eval")
    metrics = evaluate_checkpoint(config, model_dir, out)
    return config, model_dir, out, losses, metrics
