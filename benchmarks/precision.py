"""Reduced precision: held-out AP and speed of the float32, bfloat16 and float16 detector.

The detector is restored with ``--precision`` (what ``eval.py --precision`` and
``export/export_saved_model.py --precision`` build: float32 weights, layers computing in the
reduced type), evaluated on the run's held-out split, exported, and its SavedModel
``serving_default`` timed on one image of the evaluation size; an R50-FPN (random weights,
640x640, 1000 proposals) is timed the same way through the Python model. On a CPU without AMX
(this one has avx512_bf16 only) bfloat16 and float16 are expected to be slower than float32:
the table says by how much, and the AP change says what the option costs in accuracy.

Usage:
    .venv/bin/python benchmarks/precision.py [--run=runs/demo] [--runs=10] [--r50]
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from absl import app, flags, logging

from benchmarks.speed_common import REPO, median_time

_RUN = flags.DEFINE_string("run", os.path.join(REPO, "runs", "demo"),
                           "A trained run (make demo writes runs/demo).")
_RUNS = flags.DEFINE_integer("runs", 10, "Timed calls per measurement (median).")
_R50 = flags.DEFINE_bool("r50", True, "Also time R50-FPN at 640x640 (random weights).")
PRECISIONS = ("float32", "bfloat16", "float16")


def _served_latency(export_dir: str, size: tuple[int, int], runs: int) -> float:
    import tensorflow as tf

    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (1, *size, 3), np.uint8))
    return median_time(lambda x: serve(images=x), image, runs=runs)


def _r50_latency(precision: str, runs: int) -> float:
    import keras
    import tensorflow as tf

    from tf_rcnn.config import load_config_file
    from tf_rcnn.models import builder
    from tf_rcnn.models.checkpoint import precision_policy

    config = load_config_file(os.path.join(REPO, "configs", "faster_rcnn_r50_fpn_coco.py"))
    config.model.num_classes = 80
    config.model.backbone.weights = None
    config.model.rpn.post_nms_topk_test = 1000
    keras.config.set_dtype_policy(precision_policy(precision))
    try:
        model = builder.build_model(config)
        model.build_with_dummy_inputs()
    finally:
        keras.config.set_dtype_policy("float32")
    images = tf.random.normal([1, 640, 640, 3], stddev=50.0, seed=0)
    shape = tf.constant([[640, 640]], tf.int32)
    detect = tf.function(lambda x: model({"images": x, "image_shape": shape}, training=False))
    return median_time(detect, images, runs=runs)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from tf_rcnn.evaluation.evaluate import evaluate_checkpoint
    from tf_rcnn.export import export_from_checkpoint
    from tf_rcnn.models.checkpoint import resolve_checkpoint_path, resolve_run_config

    config = resolve_run_config(resolve_checkpoint_path(_RUN.value), None)
    size = int(max(config.data.scales))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in PRECISIONS:
            metrics = evaluate_checkpoint(_RUN.value, os.path.join(tmp, precision, "eval"),
                                          precision=precision, visualize=0)
            export_dir = export_from_checkpoint(_RUN.value, os.path.join(tmp, precision, "sm"),
                                                precision=precision)
            row = {"precision": precision, "AP": metrics["bbox/AP"],
                   "AP50": metrics["bbox/AP50"],
                   "served_s": _served_latency(export_dir, (size, size), _RUNS.value)}
            if _R50.value:
                row["r50_s"] = _r50_latency(precision, _RUNS.value)
            rows.append(row)
            print(row, flush=True)
    base = rows[0]
    print(f"\nrun {_RUN.value}: held-out bbox AP / AP50 and latency (median of {_RUNS.value})")
    print(f"{'precision':10s} {'AP':>7s} {'dAP':>7s} {'AP50':>7s} {'served ms':>10s} "
          f"{'x f32':>6s} {'R50 s':>7s} {'x f32':>6s}")
    for r in rows:
        r50 = (f"{r['r50_s']:7.3f} {r['r50_s'] / base['r50_s']:6.2f}" if "r50_s" in r else "")
        print(f"{r['precision']:10s} {r['AP']:7.4f} {r['AP'] - base['AP']:+7.4f} "
              f"{r['AP50']:7.4f} {1e3 * r['served_s']:10.1f} "
              f"{r['served_s'] / base['served_s']:6.2f} {r50}")


if __name__ == "__main__":
    app.run(main)
