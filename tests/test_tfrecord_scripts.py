"""TFRecords written by a writer that is not ours (tf.train.Example with the OD API keys, masks
as PNG strings, a label_map.pbtxt with the non-contiguous ids 3 and 7) train Faster R-CNN and
Mask R-CNN with train.py and evaluate with eval.py, only the data flags changed; and
create_tfrecords writes shards, a progress line and label_map.pbtxt."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.support import REPO, run_command
from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.data.tfrecords import read_tfrecord_records

# Shapes category -> the foreign dataset's id: squares are 3, circles 7, triangles left out.
FOREIGN_IDS = {1: 3, 2: 7}
PBTXT = """item {
  id: 3
  name: 'square'
}
item {
  id: 7
  name: 'circle'
}
"""


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _png(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def write_foreign_shards(root, split: str, num_images: int, seed: int, num_shards: int):
    """Shapes images as JPEG in OD API Examples written with tf.train directly."""
    source = os.path.join(str(root), f"src_{split}")
    ann = generate_shapes_dataset(source, num_images, image_size=64, seed=seed)
    records, _, _ = load_coco(ann, os.path.join(source, "images"))
    writers = [tf.io.TFRecordWriter(os.path.join(str(root), f"{split}-{i}.tfrecord"))
               for i in range(num_shards)]
    for n, record in enumerate(records):
        keep = [i for i, c in enumerate(record.classes) if int(c) in FOREIGN_IDS]
        image = np.asarray(Image.open(record.image_path).convert("RGB"))
        jpeg = io.BytesIO()
        Image.fromarray(image).save(jpeg, format="JPEG", quality=95)
        boxes = record.boxes[keep] / 64.0
        masks = record.instance_masks()[keep] * 255
        feature = {
            "image/encoded": _bytes([jpeg.getvalue()]),
            "image/format": _bytes([b"jpeg"]),
            "image/height": _ints([64]),
            "image/width": _ints([64]),
            "image/filename": _bytes([os.path.basename(record.image_path).encode()]),
            "image/source_id": _bytes([str(1000 + record.image_id).encode()]),
            "image/object/bbox/ymin": _floats(boxes[:, 0].tolist()),
            "image/object/bbox/xmin": _floats(boxes[:, 1].tolist()),
            "image/object/bbox/ymax": _floats(boxes[:, 2].tolist()),
            "image/object/bbox/xmax": _floats(boxes[:, 3].tolist()),
            "image/object/class/label": _ints([FOREIGN_IDS[int(record.classes[i])]
                                               for i in keep]),
            "image/object/class/text": _bytes([b"square" if record.classes[i] == 1
                                               else b"circle" for i in keep]),
            "image/object/is_crowd": _ints([0] * len(keep)),
            "image/object/mask": _bytes([_png(m) for m in masks]),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[n % num_shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()


@pytest.fixture(scope="module")
def foreign_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign_tfrecords")
    write_foreign_shards(root, "train", 8, seed=0, num_shards=2)
    write_foreign_shards(root, "val", 4, seed=1, num_shards=1)
    (root / "label_map.pbtxt").write_text(PBTXT)
    return str(root)


def _tiny_flags(recipe: str) -> list[str]:
    values = {
        "data.scales": "(64,)", "data.max_size": 64, "data.train_batch_size": 2,
        "data.eval_batch_size": 4, "data.seed": 0, "train.total_steps": 2,
        "train.schedule": "constant", "train.warmup_steps": 0, "train.checkpoint_every": 2,
        "train.log_every": 1, "train.steps_per_loop": 1, "model.backbone.widths": "(8,8,16,16)",
        "model.neck.out_channels": 16, "model.roi_head.fc_dims": "(32,32)",
        "model.roi_head.batch_size_per_image": 16, "model.rpn.pre_nms_topk_train": 64,
        "model.rpn.post_nms_topk_train": 16, "model.rpn.pre_nms_topk_test": 64,
        "model.rpn.post_nms_topk_test": 16, "eval.visualize": 1,
    }
    if recipe == "shapes_mask_rcnn":
        values.update({"model.mask_head.conv_dims": "(8,8)", "model.mask_head.deconv_dim": 8})
    return [f"--config={os.path.join(REPO, 'configs', recipe + '.py')}"] + [
        f"--config.{k}={v}" for k, v in values.items()]


@pytest.mark.parametrize("recipe", ["shapes_faster_rcnn", "shapes_mask_rcnn"])
def test_foreign_tfrecords_train_and_evaluate(tmp_path, foreign_data, recipe):
    data_flags = [
        "--config.data.dataset=tfrecord",
        f"--config.data.train_files={foreign_data}/train-*.tfrecord",
        f"--config.data.val_files={foreign_data}/val-*.tfrecord",
        f"--config.data.label_map={foreign_data}/label_map.pbtxt",
    ]
    run = str(tmp_path / "run")
    trained = run_command(["train.py", *_tiny_flags(recipe), *data_flags, f"--model_dir={run}"],
                          timeout=600)
    assert trained.returncode == 0, trained.stderr[-4000:]
    assert os.path.exists(os.path.join(run, "ckpt-2.index"))
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["model"]["num_classes"] == 2
    with open(os.path.join(run, "label_map.json")) as f:
        classes = json.load(f)["classes"]
    assert [(c["dataset_id"], c["name"]) for c in classes] == [(3, "square"), (7, "circle")]

    out = str(tmp_path / "eval")
    evaluated = run_command(["eval.py", f"--checkpoint={run}", f"--output_dir={out}"],
                            timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_images"] == 4.0
    assert 0.0 <= metrics["bbox/AP50"] <= 1.0
    # Mask AP from the records' PNG masks (the ground truth is built from the TFRecords).
    assert ("segm/AP" in metrics) == (recipe == "shapes_mask_rcnn")
    with open(os.path.join(out, "detections.json")) as f:
        detections = json.load(f)
    # Detections are reported in the dataset's own ids and source ids.
    assert detections and {d["category_id"] for d in detections} <= {3, 7}
    assert {d["image_id"] for d in detections} <= {1001, 1002, 1003, 1004}
    assert os.path.exists(os.path.join(out, "detections.png"))  # drawn from the records


def test_two_workers_on_loopback_read_disjoint_shards(tmp_path, foreign_data):
    # train.py --strategy=multi_worker in two processes: distribute_datasets_from_function
    # gives each worker's pipeline its input context, and each reads every 2nd shard.
    from tf_rcnn.training import local_cluster_tf_configs

    flags = [*_tiny_flags("shapes_faster_rcnn"), "--config.data.dataset=tfrecord",
             f"--config.data.train_files={foreign_data}/train-*.tfrecord",
             f"--config.data.label_map={foreign_data}/label_map.pbtxt",
             f"--model_dir={tmp_path}", "--strategy=multi_worker"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    procs = []
    for config in local_cluster_tf_configs(2):
        procs.append(subprocess.Popen(
            [sys.executable, "train.py", *flags], cwd=REPO, text=True,
            env={**env, "TF_CONFIG": json.dumps(config)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE))
    try:
        results = [proc.communicate(timeout=600) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    read = []
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-4000:]
        match = re.search(r"Input pipeline (\d) of 2 reads 1 of the 2 shards: (\S+)", err)
        assert match, err[-3000:]
        read.append((int(match.group(1)), os.path.basename(match.group(2))))
    assert sorted(read) == [(0, "train-0.tfrecord"), (1, "train-1.tfrecord")]
    assert (tmp_path / "ckpt-2.index").exists()


def test_create_tfrecords_writes_shards_progress_and_label_map(tmp_path):
    result = run_command([
        "-m", "tf_rcnn.tools.create_tfrecords", "--dataset=shapes",
        f"--shapes_dir={tmp_path / 'shapes'}", "--shapes_images=5", "--shapes_image_size=32",
        f"--output={tmp_path / 'tf' / 'train'}", "--num_shards=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5/5 images" in result.stdout
    names = sorted(os.listdir(tmp_path / "tf"))
    assert names == ["label_map.pbtxt", "train-00000-of-00002.tfrecord",
                     "train-00001-of-00002.tfrecord"]
    counts = [sum(1 for _ in tf.data.TFRecordDataset(str(tmp_path / "tf" / n)))
              for n in names[1:]]
    assert counts == [3, 2]
    assert "name: 'triangle'" in (tmp_path / "tf" / "label_map.pbtxt").read_text()
    # Read back: the records of the shapes data itself (boxes, classes, masks).
    original, label_map, _ = load_coco(str(tmp_path / "shapes" / "annotations.json"),
                                       str(tmp_path / "shapes" / "images"))
    read, _ = read_tfrecord_records(str(tmp_path / "tf" / "train-*"), label_map,
                                    with_masks=True)
    read = sorted(read, key=lambda r: r.image_id)
    assert [r.image_id for r in read] == [r.image_id for r in original]
    for got, want in zip(read, original, strict=True):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_array_equal(got.instance_masks(), want.instance_masks())
