"""Input-pipeline throughput (images/s) on this machine.

Two cases:
    demo   -- the demo recipe: 128x128 shapes PNGs, scales (128,), max_size 128, batch 8,
              training mode (shuffle, flip, repeat).
    coco   -- 640x480 JPEGs resized to 800/1333 (the COCO recipe), batch 2, training mode.
Optionally (``--train_step``) it times one training step of the demo recipe's model so the
two can be compared (the acceptance bar is pipeline >= 2x the step's consumption).
``--tfrecord`` also writes both cases' images as OD API TFRecords (4 shards, once) and times
the streaming TFRecordPipeline on them with the same options, beside the file pipeline.

Usage:
    .venv/bin/python benchmarks/data.py [--batches 60] [--train_step] [--tfrecord]
"""

from __future__ import annotations

import os
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
from tf_rcnn.data.tfrecords import TFRecordPipeline, shard_names, write_tfrecords

FLAGS = flags.FLAGS
flags.DEFINE_integer("batches", 60, "Batches timed per case (after 5 warm-up batches).")
flags.DEFINE_string("work_dir", os.path.join(tempfile.gettempdir(), "tf_rcnn_bench_data"),
                    "Where the generated images live.")
flags.DEFINE_bool("train_step", False, "Also time one training step of the demo model.")
flags.DEFINE_bool("tfrecord", False, "Also time the TFRecord pipeline on the same images.")


def _throughput(pipe: InputPipeline, batches: int) -> float:
    it = iter(pipe.dataset())
    for _ in range(5):
        next(it)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _ = next(it)
        n += int(images.shape[0])
    return n / (time.perf_counter() - start)


def _tfrecord_pipeline(name: str, records, label_map, **options) -> TFRecordPipeline:
    """The same images as OD API TFRecords (written once under --work_dir, 4 shards)."""
    prefix = os.path.join(FLAGS.work_dir, f"tfrecord_{name}", "train")
    files = shard_names(prefix, 4)
    if not all(os.path.exists(f) for f in files):
        write_tfrecords(records, label_map, prefix, 4, with_masks=False)
    return TFRecordPipeline(files, label_map, **options)


def _jpeg_records(work_dir: str, count: int = 64):
    folder = os.path.join(work_dir, "jpeg640")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        path = os.path.join(folder, f"{i:04d}.jpg")
        if not os.path.exists(path):
            # Smooth noise compresses like a photo better than white noise.
            small = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
            Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(path, quality=90)
        items.append({"image": path, "boxes": [[50, 60, 300, 400], [10, 10, 100, 90]],
                      "classes": ["a", "b"]})
    return records_from_list(items)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    shapes = generate_shapes_dataset(os.path.join(FLAGS.work_dir, "shapes"), 1000)
    records, label_map, _ = load_coco(shapes, os.path.join(FLAGS.work_dir, "shapes", "images"))
    demo = InputPipeline(records, label_map, backbone="tiny", training=True, batch_size=8,
                         scales=(128,), max_size=128, seed=0)
    demo_rate = _throughput(demo, FLAGS.batches)
    print(f"demo  (128x128 PNG shapes, batch 8):        {demo_rate:8.1f} images/s")
    if FLAGS.tfrecord:
        stream = _tfrecord_pipeline("demo", records, label_map, backbone="tiny", training=True,
                                    batch_size=8, scales=(128,), max_size=128, seed=0)
        rate = _throughput(stream, FLAGS.batches)
        print(f"  same images from TFRecords:               {rate:8.1f} images/s")

    jrecords, jlabels, _ = _jpeg_records(FLAGS.work_dir)
    coco = InputPipeline(jrecords, jlabels, backbone="resnet50", training=True, batch_size=2,
                         scales=(800,), max_size=1333, seed=0)
    coco_rate = _throughput(coco, max(FLAGS.batches // 2, 10))
    print(f"coco  (640x480 JPEG -> 800/1333, batch 2):  {coco_rate:8.1f} images/s")
    if FLAGS.tfrecord:
        stream = _tfrecord_pipeline("coco", jrecords, jlabels, backbone="resnet50",
                                    training=True, batch_size=2, scales=(800,), max_size=1333,
                                    seed=0)
        rate = _throughput(stream, max(FLAGS.batches // 2, 10))
        print(f"  same images from TFRecords:               {rate:8.1f} images/s")

    if FLAGS.train_step:
        from configs.shapes_faster_rcnn import get_config
        from tf_rcnn.models.builder import build_model
        from tf_rcnn.training.optimizers import optimizer_from_config

        config = get_config()
        config.model.num_classes = 3  # the shapes classes (the recipe takes them from the data)
        model = build_model(config)
        model.compile(optimizer=optimizer_from_config(config, 8))
        ds = demo.dataset()
        model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # trace + warm up
        steps = 10
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        step_rate = steps * 8 / (time.perf_counter() - start)
        print(f"demo training consumes:                     {step_rate:8.1f} images/s "
              f"(pipeline / training = {demo_rate / step_rate:.1f}x)")


if __name__ == "__main__":
    app.run(main)
