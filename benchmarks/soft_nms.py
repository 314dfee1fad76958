"""Soft-NMS on crowded shapes: one checkpoint evaluated with hard NMS, linear and Gaussian
Soft-NMS; prints bbox AP / AP50 / AP75 (and AR@100) of each.

    python benchmarks/soft_nms.py [--model_dir=runs/soft_nms_crowded] [--steps=1500]
        [--data_dir=data_cache/shapes] [--eval_images=200] [--sigma=0.5] [--linear_nt=0.5]

1. ``run_training`` of ``configs/shapes_faster_rcnn_crowded.py`` (the shapes demo recipe on the
   crowded variant: 6-12 shapes per image, same-class clusters at box IoU 0.3-0.7) into
   MODEL_DIR, ``--steps`` steps (resumes; a run already at its last step is not touched, so
   ``--model_dir`` of a trained run only evaluates it);
2. ``evaluate_checkpoint`` of that SAME checkpoint on the held-out crowded validation split
   (seed 1, never trained on) three times, the config differing only in
   ``model.roi_head.nms_method`` = hard | linear | gaussian (what
   ``eval.py --config.model.roi_head.nms_method=...`` does on a run).

Linear Soft-NMS decays by ``1 - iou`` where ``iou >= Nt``; Nt is ``--linear_nt`` (default: the
recipe's ``model.roi_head.nms_threshold``, 0.5, the same threshold hard NMS uses). Gaussian uses
``--sigma`` (0.5, the paper's). The crowded data lands in ``<data_dir>_crowded``.
Results also go to MODEL_DIR/soft_nms_results.json.

Measured 2026-11-30 on the 2 shared CPU cores (load average 5-15 from other jobs): 1500 steps,
batch 8, 32 min wall under that load (5-8 img/s; ~13 img/s when the machine was quiet, i.e.
~15 min); 200 held-out crowded images with 1809 objects;
``--model_dir=runs/crowded --steps=1500`` (trained first with train.py, same recipe and steps):

| final NMS | bbox AP | AP50 | AP75 | AR@100 |
|---|---|---|---|---|
| hard (IoU 0.5) | 0.2845 | 0.5587 | 0.2604 | 0.4046 |
| linear (Nt 0.5) | 0.2984 | 0.5759 | 0.2789 | 0.5045 |
| gaussian (sigma 0.5) | 0.2964 | 0.5640 | 0.2856 | 0.4979 |
| linear (Nt 0.3, ``--linear_nt=0.3``) | 0.2920 | 0.5608 | 0.2791 | 0.4872 |

Soft-NMS keeps the lower-scored neighbours hard NMS removes: recall at 100 rises by ~0.1 and AP
by 1.2-1.4 points on the same weights. One checkpoint and one held-out split: differences of a
few tenths of a point are within what another seed could change.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

import tf_rcnn  # noqa: F401
from tf_rcnn.config import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODEL_DIR = flags.DEFINE_string("model_dir", "runs/soft_nms_crowded", "Run directory.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "data_cache/shapes", "data.shapes_dir; the crowded data goes to <it>_crowded.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Training steps (train.total_steps).")
_EVAL_IMAGES = flags.DEFINE_integer("eval_images", 200, "Held-out crowded images.")
_SIGMA = flags.DEFINE_float("sigma", 0.5, "Gaussian Soft-NMS sigma.")
_LINEAR_NT = flags.DEFINE_float(
    "linear_nt", None, "Linear Soft-NMS Nt (default: the recipe's roi_head.nms_threshold).")
_METHODS = ("hard", "linear", "gaussian")
_KEYS = ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/AR100")


def main(argv):
    del argv
    from tf_rcnn.evaluation.evaluate import evaluate_checkpoint
    from tf_rcnn.training.run import run_training

    config = load_config_file(os.path.join(REPO, "configs", "shapes_faster_rcnn_crowded.py"))
    config.data.shapes_dir = _DATA_DIR.value
    config.data.shapes_val_images = _EVAL_IMAGES.value
    config.train.total_steps = _STEPS.value
    if config.data.shapes_val_seed == config.data.shapes_train_seed:
        raise ValueError("the evaluation split must be held out (another seed).")
    start = time.time()
    run_training(config, _MODEL_DIR.value)
    print(f"training: {config.train.total_steps} steps, {time.time() - start:.0f} s wall "
          "(0 when the run was already trained)")

    results = {}
    for method in _METHODS:
        run_config = copy.deepcopy(config)
        h = run_config.model.roi_head
        h.nms_method = method
        h.soft_nms_sigma = _SIGMA.value
        if method == "linear" and _LINEAR_NT.value is not None:
            h.nms_threshold = _LINEAR_NT.value
        out = os.path.join(_MODEL_DIR.value, f"eval_{method}")
        start = time.time()
        metrics = evaluate_checkpoint(_MODEL_DIR.value, out, config=run_config, visualize=0)
        results[method] = {k: metrics[k] for k in _KEYS}
        results[method]["eval_seconds"] = time.time() - start
        results[method]["num_images"] = metrics["num_images"]

    nt = _LINEAR_NT.value if _LINEAR_NT.value is not None else config.model.roi_head.nms_threshold
    print(f"\nSame checkpoint ({_MODEL_DIR.value}), {int(results['hard']['num_images'])} "
          f"held-out crowded images; hard NMS IoU {config.model.roi_head.nms_threshold}, "
          f"linear Nt {nt}, Gaussian sigma {_SIGMA.value}, soft score floor "
          f"{config.model.roi_head.soft_nms_min_score}:")
    print("| final NMS | bbox AP | AP50 | AP75 | AR@100 | eval wall (s) |")
    print("|---|---|---|---|---|---|")
    for method, r in results.items():
        print(f"| {method} | {r['bbox/AP']:.4f} | {r['bbox/AP50']:.4f} | {r['bbox/AP75']:.4f} "
              f"| {r['bbox/AR100']:.4f} | {r['eval_seconds']:.0f} |")
    with open(os.path.join(_MODEL_DIR.value, "soft_nms_results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
