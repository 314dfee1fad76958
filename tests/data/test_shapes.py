"""Synthetic shapes dataset: determinism, exact boxes/masks, reuse, COCO round trip."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from tf_rcnn.data.coco import load_coco
from tf_rcnn.data.shapes import generate_shapes_dataset


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("shapes"))
    generate_shapes_dataset(out, num_images=12, image_size=64, seed=3)
    return out


def test_deterministic_from_seed(shapes_dir, tmp_path):
    again = generate_shapes_dataset(str(tmp_path / "a"), num_images=12, image_size=64, seed=3)
    other = generate_shapes_dataset(str(tmp_path / "b"), num_images=12, image_size=64, seed=4)
    with open(os.path.join(shapes_dir, "annotations.json")) as f:
        first = json.load(f)
    with open(again) as f:
        second = json.load(f)
    with open(other) as f:
        third = json.load(f)
    assert first["annotations"] == second["annotations"]
    assert first["annotations"] != third["annotations"]
    a = np.asarray(Image.open(os.path.join(shapes_dir, "images", "000005.png")))
    b = np.asarray(Image.open(str(tmp_path / "a" / "images" / "000005.png")))
    np.testing.assert_array_equal(a, b)


def test_boxes_are_tight_bounds_of_masks(shapes_dir):
    records, label_map, report = load_coco(os.path.join(shapes_dir, "annotations.json"),
                                           os.path.join(shapes_dir, "images"))
    assert label_map.names == ["square", "circle", "triangle"]
    assert label_map.dataset_ids == [1, 2, 3]
    assert report.num_images == 12 and report.num_skipped == 0
    assert sum(r.num_instances for r in records) >= 12
    for rec in records:
        masks = rec.instance_masks()
        assert masks.shape == (rec.num_instances, 64, 64)
        for mask, box in zip(masks, rec.boxes, strict=True):
            rows = np.flatnonzero(mask.any(1))
            cols = np.flatnonzero(mask.any(0))
            # Box convention: x2 = last column + 1 (no legacy +1 in the width).
            np.testing.assert_array_equal(box, [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
        # Instance masks of one image do not overlap (visible pixels only).
        assert masks.sum(0).max() <= 1


def test_background_is_textured_and_shapes_visible(shapes_dir):
    image = np.asarray(Image.open(os.path.join(shapes_dir, "images", "000000.png")), np.float32)
    assert image.shape == (64, 64, 3)
    # Not a flat background: per-channel spread well above 0.
    assert image.std(axis=(0, 1)).min() > 3.0


def test_reuses_existing_files(shapes_dir):
    path = os.path.join(shapes_dir, "annotations.json")
    before = os.path.getmtime(path)
    assert generate_shapes_dataset(shapes_dir, num_images=12, image_size=64, seed=3) == path
    assert os.path.getmtime(path) == before


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="min_shapes"):
        generate_shapes_dataset(str(tmp_path), num_images=2, min_shapes=3, max_shapes=1)
    with pytest.raises(ValueError, match="num_images"):
        generate_shapes_dataset(str(tmp_path), num_images=0)
