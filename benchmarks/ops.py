"""Speed of the RoI ops and proposal NMS (run by hand, never timed in tests).

    .venv/bin/python benchmarks/ops.py [--runs=10] [--warmup=2] [--seed=0]

Cases (all batch 1, float32, inside ``tf.function``; forward and forward+backward w.r.t. the
features where the op is trained through):
  * roi_align: 1000 RoIs, 7x7, sampling ratio 2, on a 50x50x256 map (stride 16);
  * ps_roi_align / ps_roi_pool: 300 RoIs, k=7, C=21 (1029 channels), 50x50 map;
  * roi_pool: 1000 RoIs, 7x7, 50x50x256 map;
  * multilevel_roi_align: 1000 RoIs, 7x7, P2-P5 pyramid (256 channels) of an 800x800 image,
    the shipped partition-by-level path and the alternative "pool every RoI on every level and
    select" path it was chosen against;
  * batched_nms: 12000 -> 2000 boxes at IoU 0.7 (``tf_rcnn.ops.nms``; skipped if missing).
Prints the median (and min) milliseconds over ``--runs`` timed calls after ``--warmup`` calls.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from absl import app, flags

import tf_rcnn  # noqa: F401
from tf_rcnn.ops import poolers, ps_roi_pool
from tf_rcnn.ops import roi_align as roi_align_ops
from tf_rcnn.ops import roi_pool as roi_pool_ops

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 10, "Timed calls per case (the median is reported).")
flags.DEFINE_integer("warmup", 2, "Untimed calls before timing (tracing, allocator warm-up).")
flags.DEFINE_integer("seed", 0, "Seed for the random maps and boxes.")

IMAGE = 800


def random_rois(rng: np.random.Generator, num: int, min_side: float = 16.0,
                max_side: float = 512.0) -> tf.Tensor:
    """``[1, num, 4]`` boxes in an 800x800 image, sides log-uniform in [min_side, max_side]."""
    sides = np.exp(rng.uniform(np.log(min_side), np.log(max_side), size=(num, 2)))
    corner = rng.uniform(0, IMAGE - sides)
    boxes = np.concatenate([corner, corner + sides], axis=-1)  # [y1, x1, y2, x2]
    return tf.constant(boxes[None].astype(np.float32))


def time_ms(fn: Callable[[], object], runs: int, warmup: int) -> tuple[float, float]:
    """Median and minimum wall time in ms of ``fn()`` (outputs fetched to host each call)."""
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def forward_backward(op: Callable[[object], tf.Tensor]) -> tuple[Callable, Callable]:
    """tf.functions computing ``op(features)`` and ``d sum(op(features)) / d features``."""

    @tf.function
    def forward(features):
        return op(features)

    @tf.function
    def backward(features):
        # The loss is returned too: a gradient alone would let the graph prune the forward op
        # (the input gradient of a linear op like RoIAlign does not need its output).
        with tf.GradientTape() as tape:
            tape.watch(features)
            loss = tf.reduce_sum(op(features))
        return loss, tape.gradient(loss, features)

    return forward, backward


def multilevel_select_all(features, rois, output_size, strides):
    """Alternative to the shipped path: pool all RoIs on all levels, keep each RoI's level."""
    levels = poolers.assign_fpn_levels(rois, 2, 2 + len(strides) - 1)
    result = None
    for index, (level_features, stride) in enumerate(zip(features, strides, strict=True)):
        pooled = roi_align_ops.roi_align(level_features, rois, output_size, 1.0 / stride)
        mask = tf.equal(levels, 2 + index)[..., None, None, None]
        result = pooled if result is None else tf.where(mask, pooled, result)
    return result


def main(argv: list[str]) -> None:
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    runs, warmup = FLAGS.runs, FLAGS.warmup
    rows: list[tuple[str, str, str]] = []

    def add(name: str, fn: Callable[[], object], mode: str) -> None:
        median, best = time_ms(fn, runs, warmup)
        rows.append((name, mode, f"{median:9.1f} {best:9.1f}"))
        print(f"  done: {name} [{mode}]", flush=True)

    def add_pair(name: str, op: Callable[[object], tf.Tensor], features: tf.Tensor) -> None:
        forward, backward = forward_backward(op)
        add(name, lambda: forward(features), "fwd")
        add(name, lambda: backward(features), "fwd+bwd")

    c5 = tf.constant(rng.normal(size=(1, 50, 50, 256)).astype(np.float32))
    rois_1000 = random_rois(rng, 1000)
    rois_300 = random_rois(rng, 300)
    add_pair("roi_align 1000x7x7, 50x50x256",
             lambda f: roi_align_ops.roi_align(f, rois_1000, 7, 1 / 16), c5)
    add_pair("roi_pool 1000x7x7, 50x50x256",
             lambda f: roi_pool_ops.roi_pool(f, rois_1000, 7, 1 / 16), c5)
    ps_maps = tf.constant(rng.normal(size=(1, 50, 50, 7 * 7 * 21)).astype(np.float32))
    add_pair("ps_roi_align 300, k=7, C=21",
             lambda f: ps_roi_pool.ps_roi_align(f, rois_300, 7, 1 / 16), ps_maps)
    add_pair("ps_roi_pool 300, k=7, C=21",
             lambda f: ps_roi_pool.ps_roi_pool(f, rois_300, 7, 1 / 16), ps_maps)

    strides = [4, 8, 16, 32]
    pyramid = [tf.constant(rng.normal(size=(1, IMAGE // s, IMAGE // s, 256)).astype(np.float32))
               for s in strides]
    fpn_rois = random_rois(rng, 1000, 8.0, 800.0)
    levels = poolers.assign_fpn_levels(fpn_rois, 2, 5).numpy().ravel()
    print("FPN RoIs per level P2..P5:", np.bincount(levels, minlength=6)[2:].tolist())
    add_pair("multilevel_roi_align 1000x7x7 (shipped)",
             lambda f: poolers.multilevel_roi_align(f, fpn_rois, 7, strides), pyramid)
    add_pair("multilevel all-levels+select (alt.)",
             lambda f: multilevel_select_all(f, fpn_rois, 7, strides), pyramid)

    try:
        from tf_rcnn.ops.nms import batched_nms  # lazy: written by another module
    except ImportError as error:
        rows.append(("batched_nms 12000 -> 2000", "fwd", f"skipped: {error}"))
    else:
        sides = np.exp(rng.uniform(np.log(8.0), np.log(400.0), size=(1, 12000, 2)))
        corner = rng.uniform(0, IMAGE - sides)
        boxes = tf.constant(np.concatenate([corner, corner + sides], -1).astype(np.float32))
        scores = tf.constant(rng.uniform(size=(1, 12000)).astype(np.float32))
        nms_fn = tf.function(lambda b, s: batched_nms(b, s, 2000, 0.7).indices)
        add("batched_nms 12000 -> 2000, IoU 0.7", lambda: nms_fn(boxes, scores), "fwd")

    print()
    print(f"machine: {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, "
          f"median/min of {runs} runs after {warmup} warm-up, ms")
    width = max(len(r[0]) for r in rows)
    print(f"{'case'.ljust(width)}  {'mode':8s} {'median':>9s} {'min':>9s}")
    for name, mode, cells in rows:
        print(f"{name.ljust(width)}  {mode:8s} {cells}")


if __name__ == "__main__":
    app.run(main)
