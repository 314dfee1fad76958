"""What the speed benchmarks (``inference.py``, ``train.py``, ``pretrained.py``) share: the
detector table, the runner of one measurement in a fresh process and the timing of TensorFlow
calls."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (recipe in configs/, default inference size (H, W), default test proposals,
#          torchvision peer model or None)
MODELS = {
    "faster_r50_fpn": ("faster_rcnn_r50_fpn_coco.py", (640, 640), 1000,
                       "fasterrcnn_resnet50_fpn"),
    "faster_r50_c4": ("faster_rcnn_r50_c4_coco.py", (640, 640), 1000, None),
    "rfcn_r101": ("rfcn_r101_voc.py", (600, 1000), 300, None),
    "mask_r50_fpn": ("mask_rcnn_r50_fpn_coco.py", (640, 640), 1000, "maskrcnn_resnet50_fpn"),
    "cascade_r50_fpn": ("cascade_rcnn_r50_fpn_coco.py", (640, 640), 1000, None),
}


def dataset_num_classes(recipe: str) -> int:
    """The class count of a recipe's dataset (VOC 20, COCO 80, shapes 3): recipes take it from
    the data, which the speed measurements do not load."""
    return 20 if "voc" in recipe else 3 if "shapes" in recipe else 80


def run_result(args: list[str]) -> dict:
    """Runs ``args`` (a measuring process) from the repo root; returns its ``RESULT {json}``."""
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def block(outputs: Any) -> None:
    """Forces the values to the host so every timing includes all the work."""
    import tensorflow as tf

    for t in tf.nest.flatten(outputs):
        if isinstance(t, tf.Tensor):
            t.numpy()


def timed_runs(fn: Callable, *args: Any, runs: int, warmup: int = 2) -> list[float]:
    """Seconds of each of ``runs`` calls ``fn(*args)`` (outputs fetched), after ``warmup``."""
    for _ in range(warmup):
        block(fn(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def median_time(fn: Callable, *args: Any, runs: int) -> float:
    """Median seconds of ``runs`` calls ``fn(*args)`` after 2 warm-up calls."""
    return statistics.median(timed_runs(fn, *args, runs=runs))
