"""Input-pipeline throughput (images/s) on this machine.

Three cases, all in training mode (shuffle, flip, repeat):
    demo   -- the demo recipe: 128x128 shapes PNGs, scales (128,), max_size 128, batch 8.
    coco   -- 640x480 JPEGs resized to 800/1333 (the COCO recipe), batch 2.
    mixed  -- JPEGs of VOC's sizes, landscape and portrait (500x375, 375x500, 500x333,
              333x500), resized to 600/1000 (the VOC recipe), batch 2.
``--tfrecord`` also writes each case's images as OD API TFRecords (4 shards, once) and times
the streaming TFRecordPipeline on them with the same options, beside the file pipeline. When
every image of a case has one size (demo, coco), the file pipeline sees it in its records and
batches at that static size; a stream cannot know it ahead and groups landscape and portrait
images at run time, unless given the size: the ``tfrecord_fixed`` row passes the file
pipeline's size as ``fixed_image_size`` (``--config.data.fixed_image_size``).

Each timing runs in its own process (a pipeline's background threads would otherwise compete
with the next one's), the pipelines alternate, ``--repeats`` times, and the table gives every
run, the median and, with ``--tfrecord``, the median TFRecord / file ratio.

With ``--tfrecord``, an ``epoch`` line per pipeline also times one epoch (every image of the
case once, in batches) from the start: the file pipeline reading its annotations and checking
every image file (what a command does before training), the stream reading its label map,
listing its shards and peeking at their first records. The steady-state rate leaves that
start-up out. Images/s counts
the batches taken after ``--warmup`` batches (the pipeline fills its buffers and the tf.data
autotuner settles first); CPU us/image is the process's CPU time over them
(both cores are busy: the rate follows the CPU per image).

Optionally (``--train_step``) it times one training step of the demo recipe's model so the
two can be compared (the acceptance bar is pipeline >= 2x the step's consumption).

Usage:
    .venv/bin/python benchmarks/data.py [--batches 300] [--repeats 3] [--tfrecord]
        [--train_step]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from absl import app, flags, logging
from PIL import Image

from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.custom import records_from_list
from tf_rcnn.data.pipeline import InputPipeline
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.data.tfrecords import (
    LABEL_MAP_PBTXT,
    TFRecordPipeline,
    read_label_map_pbtxt,
    shard_names,
    write_tfrecords,
)

FLAGS = flags.FLAGS
flags.DEFINE_integer("batches", 300, "Batches timed per run of the demo case; the other "
                     "cases time half as many.")
flags.DEFINE_integer("warmup", 20, "Batches taken before the timing starts.")
flags.DEFINE_integer("repeats", 3, "Runs per pipeline and case, alternating.")
flags.DEFINE_string("work_dir", os.path.join(tempfile.gettempdir(), "tf_rcnn_bench_data"),
                    "Where the generated images live.")
flags.DEFINE_bool("train_step", False, "Also time one training step of the demo model.")
flags.DEFINE_bool("tfrecord", False, "Also time the TFRecord pipeline on the same images.")
flags.DEFINE_string("worker", None, "Internal: time one CASE:PIPELINE in this process.")

CASES = {
    "demo": ("128x128 PNG shapes, batch 8",
             {"backbone": "tiny", "training": True, "batch_size": 8, "scales": (128,),
              "max_size": 128, "seed": 0}),
    "coco": ("640x480 JPEG -> 800/1333, batch 2",
             {"backbone": "resnet50", "training": True, "batch_size": 2, "scales": (800,),
              "max_size": 1333, "seed": 0}),
    "mixed": ("VOC-size JPEGs, both orientations -> 600/1000, batch 2",
              {"backbone": "resnet50", "training": True, "batch_size": 2, "scales": (600,),
               "max_size": 1000, "seed": 0}),
}
_MIXED_SIZES = ((375, 500), (500, 375), (333, 500), (500, 333))
_CASE_IMAGES = {"demo": 1000, "coco": 64, "mixed": 64}  # images per case (one epoch)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _throughput(pipe: InputPipeline, batches: int) -> tuple[float, float]:
    """(images/s, CPU us per image) over ``batches`` batches after ``--warmup`` ones."""
    it = iter(pipe.dataset())
    for _ in range(FLAGS.warmup):
        next(it)
    start, cpu = time.perf_counter(), _cpu_seconds()
    n = 0
    for _ in range(batches):
        images, _ = next(it)
        n += int(images.shape[0])
    wall, used = time.perf_counter() - start, _cpu_seconds() - cpu
    return n / wall, 1e6 * used / n


def _tfrecord_files(name: str, records, label_map) -> list[str]:
    """The same images as OD API TFRecords (written once under --work_dir, 4 shards)."""
    prefix = os.path.join(FLAGS.work_dir, f"tfrecord_{name}", "train")
    files = shard_names(prefix, 4)
    if not all(os.path.exists(f) for f in files):
        write_tfrecords(records, label_map, prefix, 4, with_masks=False)
    return files


def _jpeg_records(work_dir: str, count: int = 64, mixed: bool = False):
    folder = os.path.join(work_dir, "jpeg_mixed" if mixed else "jpeg640")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        path = os.path.join(folder, f"{i:04d}.jpg")
        h, w = _MIXED_SIZES[i % len(_MIXED_SIZES)] if mixed else (480, 640)
        # Smooth noise compresses like a photo better than white noise.
        small = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        if not os.path.exists(path):
            Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path, quality=90)
        items.append({"image": path, "boxes": [[50, 60, 300, 320], [10, 10, 100, 90]],
                      "classes": ["a", "b"]})
    return records_from_list(items)


def _case_data(case: str):
    if case == "demo":
        shapes = generate_shapes_dataset(os.path.join(FLAGS.work_dir, "shapes"),
                                         _CASE_IMAGES["demo"])
        records, label_map, _ = load_coco(shapes,
                                          os.path.join(FLAGS.work_dir, "shapes", "images"))
    else:
        records, label_map, _ = _jpeg_records(FLAGS.work_dir, count=_CASE_IMAGES[case],
                                              mixed=case == "mixed")
    return records, label_map


def _epoch_rate(case: str, kind: str) -> float:
    """Images/s over one epoch, timed from loading the dataset (see the module docstring)."""
    options = CASES[case][1]
    size = _CASE_IMAGES[case]
    start = time.perf_counter()
    if kind == "file":
        records, label_map = _case_data(case)
        pipe: InputPipeline = InputPipeline(records, label_map, **options)
    else:
        folder = os.path.join(FLAGS.work_dir, f"tfrecord_{case}")
        label_map = read_label_map_pbtxt(os.path.join(folder, LABEL_MAP_PBTXT))
        pipe = TFRecordPipeline(shard_names(os.path.join(folder, "train"), 4), label_map,
                                **options)
    taken = 0
    for images, _ in pipe.dataset():
        taken += int(images.shape[0])
        if taken >= size:
            break
    return taken / (time.perf_counter() - start)


def _worker(spec: str) -> None:
    case, kind = spec.split(":")
    if kind.endswith("_epoch"):
        rate = _epoch_rate(case, kind[:-len("_epoch")])
        print("RESULT " + json.dumps({"rate": rate, "cpu_us": float("nan")}), flush=True)
        return
    records, label_map = _case_data(case)
    options = CASES[case][1]
    if kind == "file":
        pipe = InputPipeline(records, label_map, **options)
    else:
        if kind == "tfrecord_fixed":
            # The static size the file pipeline finds in its records (None: sizes differ).
            size = InputPipeline(records, label_map, **options)._static_image_size()
            options = {**options, "fixed_image_size": size}
        pipe = TFRecordPipeline(_tfrecord_files(case, records, label_map), label_map,
                                **options)
    batches = FLAGS.batches if case == "demo" else max(FLAGS.batches // 2, 10)
    rate, cpu = _throughput(pipe, batches)
    print("RESULT " + json.dumps({"rate": rate, "cpu_us": cpu}), flush=True)


def _run_worker(case: str, kind: str) -> dict[str, float]:
    args = [sys.executable, os.path.abspath(__file__), f"--worker={case}:{kind}",
            f"--batches={FLAGS.batches}", f"--warmup={FLAGS.warmup}",
            f"--work_dir={FLAGS.work_dir}"]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{case}:{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.worker:
        _worker(FLAGS.worker)
        return
    summary = {}
    for case, (title, options) in CASES.items():
        records, label_map = _case_data(case)  # generated (and written) once, here
        kinds = ["file"]
        if FLAGS.tfrecord:
            _tfrecord_files(case, records, label_map)
            kinds.append("tfrecord")
            if InputPipeline(records, label_map, **options)._static_image_size() is not None:
                kinds.append("tfrecord_fixed")
            kinds += ["file_epoch", "tfrecord_epoch"]
        runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        for _ in range(FLAGS.repeats):
            for kind in kinds:
                runs[kind].append(_run_worker(case, kind))
        print(f"{case}  ({title}):")
        for kind in kinds:
            rates = [r["rate"] for r in runs[kind]]
            cpus = [r["cpu_us"] for r in runs[kind]]
            cpu = "" if kind.endswith("_epoch") else (
                f"; CPU us/image {statistics.median(cpus):7.0f}")
            print(f"  {kind:14s} images/s {statistics.median(rates):8.1f} (runs "
                  f"{', '.join(f'{x:.1f}' for x in rates)}){cpu}")
            summary[f"{case}_{kind}"] = statistics.median(rates)
        for kind in kinds[1:]:
            base = "file_epoch" if kind.endswith("_epoch") else "file"
            if kind == base:
                continue
            ratio = summary[f"{case}_{kind}"] / summary[f"{case}_{base}"]
            print(f"  {kind} / {base} (medians): {ratio:.3f}x")
    demo_rate = summary["demo_file"]

    if FLAGS.train_step:
        from configs.shapes_faster_rcnn import get_config
        from tf_rcnn.models.builder import build_model
        from tf_rcnn.training.optimizers import optimizer_from_config

        config = get_config()
        config.model.num_classes = 3  # the shapes classes (the recipe takes them from the data)
        model = build_model(config)
        model.compile(optimizer=optimizer_from_config(config, 8))
        records, label_map = _case_data("demo")
        ds = InputPipeline(records, label_map, **CASES["demo"][1]).dataset()
        model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # trace + warm up
        steps = 10
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        step_rate = steps * 8 / (time.perf_counter() - start)
        print(f"demo training consumes: {step_rate:8.1f} images/s "
              f"(pipeline / training = {demo_rate / step_rate:.1f}x)")


if __name__ == "__main__":
    app.run(main)
