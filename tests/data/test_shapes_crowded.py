"""The crowded shapes variant: same-class clusters that overlap, its own cache folder, plain
shapes unchanged."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from tf_rcnn.config import ConfigError, default_config
from tf_rcnn.data import builder
from tf_rcnn.data.shapes import generate_shapes_dataset, variant_dir


def _box_iou(a, b) -> float:  # COCO [x, y, w, h]
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_crowded_images_hold_overlapping_same_class_shapes(tmp_path):
    path = generate_shapes_dataset(str(tmp_path / "c"), num_images=20, image_size=64, seed=0,
                                   variant="crowded")
    with open(path) as f:
        coco = json.load(f)
    per_image: dict[int, list] = {}
    for ann in coco["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    counts = [len(v) for v in per_image.values()]
    assert np.mean(counts) > 5 and max(counts) <= 12
    same_class = [_box_iou(a["bbox"], b["bbox"]) for anns in per_image.values()
                  for i, a in enumerate(anns) for b in anns[i + 1:]
                  if a["category_id"] == b["category_id"]]
    # Per-class NMS at IoU 0.5 would suppress some true neighbours.
    assert sum(iou > 0.5 for iou in same_class) >= 3
    with open(os.path.join(tmp_path, "c", "manifest.json")) as f:
        assert json.load(f)["variant"] == "crowded"


def test_crowded_cache_is_apart_from_plain_and_plain_is_unchanged(tmp_path):
    assert variant_dir("data_cache/shapes", "plain") == "data_cache/shapes"
    assert variant_dir("data_cache/shapes/", "crowded") == "data_cache/shapes_crowded"
    config = default_config()
    d = config.data
    d.dataset, d.shapes_dir, d.shapes_image_size = "shapes", str(tmp_path / "s"), 48
    d.shapes_train_images = d.shapes_val_images = 3
    d.shapes_variant = "crowded"
    records, _, annotation_file = builder.load_split(config, "val")
    assert annotation_file == str(tmp_path / "s_crowded" / "val" / "annotations.json")
    assert not os.path.exists(tmp_path / "s")
    # The plain manifest carries no variant key, so caches written before the option are reused,
    # and the plain annotations are those of the generator before the option (the digest was
    # taken with it).
    plain = generate_shapes_dataset(str(tmp_path / "p"), num_images=2, image_size=48, seed=1)
    with open(os.path.join(os.path.dirname(plain), "manifest.json")) as f:
        assert "variant" not in json.load(f)
    with open(plain) as f:
        text = json.dumps(json.load(f)["annotations"], sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "463559ea528cd76acccfb9db466c65eb173f97fc2e3e267fad205ee4485792c3")
    d.shapes_variant = "dense"
    with pytest.raises(ConfigError, match="--config.data.shapes_variant"):
        builder.load_split(config, "val")
