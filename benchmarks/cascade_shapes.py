"""Cascade R-CNN against Faster R-CNN on shapes: AP, AP50, AP75 and training time.

    python benchmarks/cascade_shapes.py --output_dir=/tmp/cascade_bench [--steps=N]
        [--seed=0] [--eval_seed=2024] [--eval_images=500] [--runs=demo,faster,cascade]

Three ``train.py`` runs on the same generated training set (``OUTPUT_DIR/data``) with the same
``data.seed`` (weights, sampling, shuffling), each in ``OUTPUT_DIR/<run>`` (resumed if it holds
checkpoints; the wall time is that of the ``train.py`` process, start-up, data loading and
tracing included):

- ``demo``: ``configs/shapes_faster_rcnn.py`` as shipped (its ``train.total_steps``): the
  demo's wall time, the reference of the time budget;
- ``faster``: the same recipe trained for the cascade's steps (the equal-training comparison);
- ``cascade``: ``configs/shapes_cascade_rcnn.py`` as shipped (or ``--steps`` for both
  ``faster`` and ``cascade``).

Each is evaluated with ``eval.py`` on a held-out shapes set generated with ``--eval_seed``
(never the training seed). One row per run: wall and CPU time (user + system of the ``train.py``
process, less sensitive to other load on a shared machine), bbox AP, AP50, AP75; then the
cascade's time over the demo's (aim <= 1.5) and its AP / AP75 over Faster R-CNN's at the same
steps (aim > 0) and over the demo's.

Measured on the shared 2-core machine (the demo trained while other jobs ran, so wall times
are not comparable; CPU times are):

    run      recipe               steps  train s  CPU s    AP     AP50   AP75
    demo     shapes_faster_rcnn    3000     2015   1165  0.8057  0.9529  0.9011
    faster   shapes_faster_rcnn    1500      991    621  0.7646  0.9417  0.8631
    cascade  shapes_cascade_rcnn   1500     1031   1070  0.8432  0.9505  0.9122

cascade / demo CPU time 0.92; cascade - faster at 1500 steps: AP +0.079, AP75 +0.049; cascade
- demo: AP +0.038, AP75 +0.011; a cascade step costs 1.72x a Faster R-CNN step in CPU time.

Cascade R-CNN's claim (Cai & Vasconcelos 2018) is better localisation: the gain should show in
AP75 and AP (averaged over IoU 0.5-0.95) more than in AP50. Run the three back to back on an
otherwise comparable machine load (the wall-time ratios are only meaningful so).
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
sys.path.insert(0, REPO)
RUNS = {"demo": "shapes_faster_rcnn", "faster": "shapes_faster_rcnn",
        "cascade": "shapes_cascade_rcnn"}

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the runs, data and evals go.")
_STEPS = flags.DEFINE_integer("steps", None, "train.total_steps of the faster and cascade runs "
                              "(default: the cascade recipe's).")
_SEED = flags.DEFINE_integer("seed", 0, "data.seed of both runs (weights, sampling, order).")
_EVAL_SEED = flags.DEFINE_integer("eval_seed", 2024, "Seed of the held-out shapes set.")
_EVAL_IMAGES = flags.DEFINE_integer("eval_images", 500, "Images in the held-out set.")
_RUNS = flags.DEFINE_list("runs", list(RUNS), "Which of demo, faster, cascade to run.")
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


def _recipe_steps(recipe: str) -> int:
    from tf_rcnn.config import load_config_file

    return int(load_config_file(os.path.join(REPO, "configs", f"{recipe}.py")).train.total_steps)


def main(argv):
    del argv
    out = os.path.abspath(_OUTPUT_DIR.value)
    os.makedirs(out, exist_ok=True)
    if _EVAL_SEED.value == 0:
        raise app.UsageError("--eval_seed must differ from the training seed (0).")
    for key in _RUNS.value:
        if key not in RUNS:
            raise app.UsageError(f"--runs: unknown {key!r}; choose from {sorted(RUNS)}.")
    common = [f"--config.data.shapes_dir={os.path.join(out, 'data')}",
              f"--config.data.seed={_SEED.value}"]
    steps = {"demo": _recipe_steps(RUNS["demo"]),
             "cascade": _STEPS.value or _recipe_steps(RUNS["cascade"])}
    steps["faster"] = steps["cascade"]
    heldout = [f"--config.data.shapes_dir={os.path.join(out, f'heldout_{_EVAL_SEED.value}')}",
               f"--config.data.shapes_val_seed={_EVAL_SEED.value}",
               f"--config.data.shapes_val_images={_EVAL_IMAGES.value}"]
    rows = {}
    for key in _RUNS.value:
        recipe = RUNS[key]
        name = f"{recipe}_{steps[key]}"
        run_dir = os.path.join(out, name)
        seconds, cpu = _run(["train.py", f"--config=configs/{recipe}.py",
                             f"--model_dir={run_dir}", *common,
                             f"--config.train.total_steps={steps[key]}"],
                            os.path.join(out, f"{name}_train.log"))
        print(f"{key}: {recipe} {steps[key]} steps trained in {seconds:.0f} s wall, "
              f"{cpu:.0f} s CPU -> {run_dir}", flush=True)
        eval_dir = os.path.join(run_dir, f"eval_seed{_EVAL_SEED.value}")
        _run(["eval.py", f"--checkpoint={run_dir}", f"--output_dir={eval_dir}", "--visualize=0",
              *heldout], os.path.join(out, f"{name}_eval.log"))
        with open(os.path.join(eval_dir, "metrics.json")) as f:
            metrics = json.load(f)
        rows[key] = (seconds, cpu, metrics["bbox/AP"], metrics["bbox/AP50"],
                     metrics["bbox/AP75"])
    print(f"\nheld-out shapes seed {_EVAL_SEED.value}, {_EVAL_IMAGES.value} images; "
          f"data.seed {_SEED.value}")
    print(f"{'run':8s} {'recipe':22s} {'steps':>6s} {'train s':>8s} {'CPU s':>8s} {'AP':>7s} "
          f"{'AP50':>7s} {'AP75':>7s}")
    for key, (seconds, cpu, ap, ap50, ap75) in rows.items():
        print(f"{key:8s} {RUNS[key]:22s} {steps[key]:6d} {seconds:8.0f} {cpu:8.0f} {ap:7.4f} "
              f"{ap50:7.4f} {ap75:7.4f}")
    c = rows.get("cascade")
    if c and "demo" in rows:
        d = rows["demo"]
        print(f"cascade / demo training time: wall {c[0] / d[0]:.2f}, CPU {c[1] / d[1]:.2f} "
              f"(aim <= 1.5); cascade - demo: AP {c[2] - d[2]:+.4f}, AP75 {c[4] - d[4]:+.4f}")
    if c and "faster" in rows:
        f = rows["faster"]
        print(f"cascade - faster at {steps['cascade']} steps: AP {c[2] - f[2]:+.4f}, "
              f"AP50 {c[3] - f[3]:+.4f}, AP75 {c[4] - f[4]:+.4f} (aim: AP and AP75 > 0); "
              f"CPU time per step {c[1] / f[1]:.2f}x")


if __name__ == "__main__":
    app.run(main)
