"""Training-step time of the detector families at 512x512, batch 2 (the step ``train.py`` runs).

Each model is built from its recipe with random weights and trained by the library's
``Trainer`` step (forward, RPN + RoI targets, losses, backward, coupled weight decay, SGD
momentum update, gradient clipping as configured) on one synthetic batch repeated from a
``tf.data`` iterator: ``--batch`` images of ``--size`` pixels with three boxes each (plus box
masks for Mask R-CNN). Per model, in a fresh process: the first step (trace + run), then the
median of ``--steps`` steps after two warm-up steps, per step and per image, and peak memory.

    python benchmarks/train.py                          # all four models
    python benchmarks/train.py --models=faster_r50_fpn --size=512 --batch=2
    python benchmarks/train.py --torchvision_python=/tmp/tvenv/bin/python
        # adds torchvision's fasterrcnn/maskrcnn_resnet50_fpn training step, same size/batch

Prints a table and one ``RESULT {json}`` line. Run alone: timings on a shared machine are noisy.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from speed_common import MODELS, dataset_num_classes, run_result  # noqa: E402

_MODELS = flags.DEFINE_list("models", list(MODELS), f"Any of {sorted(MODELS)}.")
_SIZE = flags.DEFINE_integer("size", 512, "Square image side.")
_BATCH = flags.DEFINE_integer("batch", 2, "Images per step.")
_LR = flags.DEFINE_float("learning_rate", 1e-6, "Base learning rate of the timed steps "
                          "(random weights diverge at the recipe's rate).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after the first and 2 warm-up steps).")
_TV = flags.DEFINE_string("torchvision_python", None,
                          "Python of a venv with torch + torchvision (peer rows).")
_WORKER = flags.DEFINE_string("worker", None, "Internal: measure this model in this process.")


def _batch(config, size: int, batch: int, with_masks: bool):
    import tensorflow as tf

    from tf_rcnn.data.builder import pixel_stats

    # Uniform pixels normalised with the recipe's statistics, as the input pipeline feeds the
    # model (the torchvision peer draws uniform pixels and normalises them in its transform).
    rng = tf.random.Generator.from_seed(0)
    mean, std = pixel_stats(config)
    images = (rng.uniform([batch, size, size, 3], 0.0, 255.0) - mean) / std
    # Three boxes per image, well inside the image, of different sizes (FPN levels differ).
    base = tf.constant([[0.10, 0.10, 0.45, 0.40], [0.30, 0.50, 0.90, 0.95],
                        [0.55, 0.05, 0.70, 0.25]], tf.float32) * size
    targets = {
        "boxes": tf.tile(base[tf.newaxis], [batch, 1, 1]),
        "classes": tf.tile(tf.constant([[1, 2, 3]], tf.int32), [batch, 1]),
        "image_shape": tf.constant([[size, size]] * batch, tf.int32),
    }
    if with_masks:
        crop = int(config.data.mask_crop_size)
        targets["masks"] = tf.ones([batch, 3, crop, crop], tf.float32)
    return images, targets


def measure(name: str) -> dict:
    import tensorflow as tf

    from tf_rcnn.config import load_config_file
    from tf_rcnn.models import builder
    from tf_rcnn.training import Trainer
    from tf_rcnn.training.optimizers import optimizer_from_config

    recipe = MODELS[name][0]
    config = load_config_file(os.path.join(REPO, "configs", recipe))
    config.model.num_classes = dataset_num_classes(recipe)
    config.model.backbone.weights = None
    config.data.train_batch_size = _BATCH.value
    # Random weights: the recipe's rate drives the losses to NaN within a few steps (the
    # random ResNet's activations are large), which would time NaN arithmetic. A tiny
    # rate keeps every step the same finite work; the step itself is unchanged.
    config.train.base_learning_rate = _LR.value
    tf.keras.utils.set_random_seed(0)
    images, targets = _batch(config, _SIZE.value, _BATCH.value,
                             with_masks=config.model.type == "mask_rcnn")
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat()

    start = time.perf_counter()
    strategy = tf.distribute.get_strategy()
    model = builder.build_model(config)
    model.build_with_dummy_inputs()
    optimizer = optimizer_from_config(config, _BATCH.value)
    trainer = Trainer(model, optimizer, strategy, model_dir=tempfile.mkdtemp(),
                      clip_norm=config.train.clip_norm)
    iterator = iter(trainer._distribute(dataset))
    loop = trainer._make_loop_fn()
    one = tf.constant(1)

    def step() -> float:
        losses, _ = loop(iterator, one)
        return float(losses["total_loss"])

    first_loss = step()
    first_step = time.perf_counter() - start
    for _ in range(2):
        step()
    times = []
    for _ in range(_STEPS.value):
        t0 = time.perf_counter()
        last_loss = step()
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    return {"model": name, "size": _SIZE.value, "batch": _BATCH.value,
            "first_step_s": first_step, "step_s": per_step,
            "per_image_s": per_step / _BATCH.value, "first_loss": first_loss,
            "last_loss": last_loss, "trainable_weights": len(model.trainable_weights),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main(argv):
    del argv
    if _WORKER.value:
        print("RESULT " + json.dumps(measure(_WORKER.value)), flush=True)
        return
    unknown = [m for m in _MODELS.value if m not in MODELS]
    if unknown:
        raise app.UsageError(f"Unknown models {unknown}; choose from {sorted(MODELS)}.")
    common = [f"--size={_SIZE.value}", f"--batch={_BATCH.value}", f"--steps={_STEPS.value}",
              f"--learning_rate={_LR.value}"]
    rows = []
    for name in _MODELS.value:
        rows.append(run_result([sys.executable, os.path.abspath(__file__), f"--worker={name}",
                          *common]))
        peer = MODELS[name][3]
        if peer and _TV.value:
            script = os.path.join(REPO, "benchmarks", "peers", "torchvision_bench.py")
            row = run_result([_TV.value, script, "train", f"--model={peer}", *common])
            row["model"] = "torchvision " + row.get("model", peer)
            row["tf_rcnn_over_torchvision"] = rows[-1]["per_image_s"] / row["per_image_s"]
            rows.append(row)
    print(f"{'model':<34} {'step s':>7} {'s/image':>8} {'1st step s':>10} {'peak MB':>8}")
    for r in rows:
        print(f"{r['model']:<34} {r['step_s']:>7.3f} {r['per_image_s']:>8.3f} "
              f"{r.get('first_step_s', float('nan')):>10.1f} "
              f"{r.get('peak_rss_mb', float('nan')):>8.0f}")
    print("RESULT " + json.dumps(rows), flush=True)


if __name__ == "__main__":
    app.run(main)
