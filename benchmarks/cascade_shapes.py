"""Cascade R-CNN against Faster R-CNN on shapes: same steps, seed and data; AP, AP50, AP75, time.

    python benchmarks/cascade_shapes.py --output_dir=/tmp/cascade_bench [--steps=3000]
        [--seed=0] [--eval_seed=2024] [--eval_images=500] [--recipes=faster,cascade]

Trains ``configs/shapes_faster_rcnn.py`` and ``configs/shapes_cascade_rcnn.py`` one after the
other with ``train.py`` (each in ``OUTPUT_DIR/<recipe>``, resumed if it holds checkpoints; the
wall time is that of the ``train.py`` process, start-up, data loading and tracing included), on
the same generated training set (``OUTPUT_DIR/data``), with the same ``data.seed`` (weights,
sampling, shuffling) and the same number of steps. Then evaluates each with ``eval.py`` on a
held-out shapes set generated with ``--eval_seed`` (never the training seed) and prints one row
per recipe: training wall time and CPU time (user + system of the ``train.py`` process, less
sensitive to other load on a shared machine), bbox AP, AP50, AP75, and cascade / faster ratios.

Cascade R-CNN's claim (Cai & Vasconcelos 2018) is better localisation: the gain should show in
AP75 and AP (averaged over IoU 0.5-0.95) more than in AP50. Acceptance aimed for here: cascade
trains in at most 1.5x Faster R-CNN's wall time, with higher AP75 and higher AP. Run the two
back to back on an otherwise comparable machine load (the wall-time ratio is only meaningful so).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {"faster": "shapes_faster_rcnn", "cascade": "shapes_cascade_rcnn"}

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the runs, data and evals go.")
_STEPS = flags.DEFINE_integer("steps", None, "train.total_steps (default: the recipes', which "
                              "are equal).")
_SEED = flags.DEFINE_integer("seed", 0, "data.seed of both runs (weights, sampling, order).")
_EVAL_SEED = flags.DEFINE_integer("eval_seed", 2024, "Seed of the held-out shapes set.")
_EVAL_IMAGES = flags.DEFINE_integer("eval_images", 500, "Images in the held-out set.")
_RECIPES = flags.DEFINE_list("recipes", list(RECIPES), "Which of faster, cascade to run.")
flags.mark_flag_as_required("output_dir")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], log_path: str) -> tuple[float, float]:
    """Runs ``python args`` from the repository root, output to ``log_path``; its wall and
    CPU (user + system) seconds. CPU time is less sensitive to other processes' load."""
    start, cpu = time.time(), _cpu_seconds()
    with open(log_path, "w") as log:
        result = subprocess.run([sys.executable, *args], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, check=False)
    seconds, cpu = time.time() - start, _cpu_seconds() - cpu
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed (exit {result.returncode}); "
                           f"see {log_path}.")
    return seconds, cpu


def main(argv):
    del argv
    out = os.path.abspath(_OUTPUT_DIR.value)
    os.makedirs(out, exist_ok=True)
    if _EVAL_SEED.value == 0:
        raise app.UsageError("--eval_seed must differ from the training seed (0).")
    common = [f"--config.data.shapes_dir={os.path.join(out, 'data')}",
              f"--config.data.seed={_SEED.value}"]
    if _STEPS.value:
        common.append(f"--config.train.total_steps={_STEPS.value}")
    heldout = [f"--config.data.shapes_dir={os.path.join(out, f'heldout_{_EVAL_SEED.value}')}",
               f"--config.data.shapes_val_seed={_EVAL_SEED.value}",
               f"--config.data.shapes_val_images={_EVAL_IMAGES.value}"]
    rows = {}
    for key in _RECIPES.value:
        if key not in RECIPES:
            raise app.UsageError(f"--recipes: unknown {key!r}; choose from {sorted(RECIPES)}.")
        recipe = RECIPES[key]
        run_dir = os.path.join(out, recipe)
        seconds, cpu = _run(["train.py", f"--config=configs/{recipe}.py",
                             f"--model_dir={run_dir}", *common],
                            os.path.join(out, f"{recipe}_train.log"))
        print(f"{recipe}: trained in {seconds:.0f} s wall, {cpu:.0f} s CPU -> {run_dir}",
              flush=True)
        eval_dir = os.path.join(run_dir, f"eval_seed{_EVAL_SEED.value}")
        _run(["eval.py", f"--checkpoint={run_dir}", f"--output_dir={eval_dir}", "--visualize=0",
              *heldout], os.path.join(out, f"{recipe}_eval.log"))
        with open(os.path.join(eval_dir, "metrics.json")) as f:
            metrics = json.load(f)
        rows[key] = (seconds, cpu, metrics["bbox/AP"], metrics["bbox/AP50"],
                     metrics["bbox/AP75"])
    print(f"\nheld-out shapes seed {_EVAL_SEED.value}, {_EVAL_IMAGES.value} images; "
          f"data.seed {_SEED.value}")
    print(f"{'recipe':22s} {'train s':>8s} {'CPU s':>8s} {'AP':>7s} {'AP50':>7s} {'AP75':>7s}")
    for key, (seconds, cpu, ap, ap50, ap75) in rows.items():
        print(f"{RECIPES[key]:22s} {seconds:8.0f} {cpu:8.0f} {ap:7.4f} {ap50:7.4f} {ap75:7.4f}")
    if "faster" in rows and "cascade" in rows:
        f, c = rows["faster"], rows["cascade"]
        print(f"cascade / faster: wall time {c[0] / f[0]:.2f}, CPU time {c[1] / f[1]:.2f} "
              f"(aim <= 1.5); AP {c[2] - f[2]:+.4f}, AP50 {c[3] - f[3]:+.4f}, "
              f"AP75 {c[4] - f[4]:+.4f} (aim: AP and AP75 > 0)")


if __name__ == "__main__":
    app.run(main)
