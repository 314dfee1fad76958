"""Which classes training reads its data with: a resumed run's own, an init run's order."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.support import recipe
from tf_rcnn.config import ConfigError
from tf_rcnn.label_map import LabelMap
from tf_rcnn.training.run import read_training_data

SHAPES = LabelMap([1, 2, 3], ["square", "circle", "triangle"])


def _config(tmp_path, categories: list[dict]):
    """A COCO training split of one 16x16 image with one box per category."""
    os.makedirs(tmp_path / "images", exist_ok=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    anns = [{"id": k + 1, "image_id": 1, "category_id": c["id"], "bbox": [k, k, 4, 4]}
            for k, c in enumerate(categories)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 16,
                                            "width": 16}],
                                "annotations": anns, "categories": categories}))
    config = recipe("shapes_faster_rcnn")
    config.data.dataset = "coco"
    config.data.train_annotations = str(path)
    config.data.train_images = str(tmp_path / "images")
    return config


def _run(tmp_path, label_map: LabelMap) -> str:
    run = tmp_path / "run"
    os.makedirs(run, exist_ok=True)
    label_map.to_json(str(run / "label_map.json"))
    return str(run)


def test_a_resumed_run_reads_its_data_through_its_own_classes(tmp_path):
    # The json renumbered and reordered the run's classes: 11 triangle, 22 square, 33 circle.
    config = _config(tmp_path, [{"id": 11, "name": "triangle"}, {"id": 22, "name": "square"},
                                {"id": 33, "name": "circle"}])
    run = _run(tmp_path, SHAPES)
    records, label_map = read_training_data(config, run, resuming=True)
    assert label_map.names == SHAPES.names and label_map.dataset_ids == [22, 33, 11]
    # Boxes in json order: triangle, square, circle -> the run's classes 3, 1, 2.
    np.testing.assert_array_equal(records[0].classes, [3, 1, 2])
    # Not resuming (a fresh run in the same directory): the data's own order, by id.
    _, own = read_training_data(config, run, resuming=False)
    assert own.names == ["triangle", "square", "circle"]


def test_resuming_on_data_without_the_runs_classes_names_the_flag(tmp_path):
    config = _config(tmp_path, [{"id": 1, "name": "square"}, {"id": 2, "name": "disk"},
                                {"id": 3, "name": "triangle"}])
    with pytest.raises(ConfigError) as error:
        read_training_data(config, _run(tmp_path, SHAPES), resuming=True)
    message = str(error.value)
    assert message.startswith(f"--config.data.train_annotations={config.data.train_annotations}")
    assert "['circle']" in message and "2: circle (id 2)" in message and "2 disk" in message


def test_init_checkpoint_of_the_same_names_puts_the_classes_in_its_order(tmp_path):
    config = _config(tmp_path, [{"id": 11, "name": "circle"}, {"id": 22, "name": "square"},
                                {"id": 33, "name": "triangle"}])
    config.train.init_checkpoint = _run(tmp_path, SHAPES)
    fresh = str(tmp_path / "fresh")
    records, label_map = read_training_data(config, fresh, resuming=False)
    # The init run's order (square, circle, triangle) with the data's ids.
    assert label_map == LabelMap([22, 11, 33], SHAPES.names)
    np.testing.assert_array_equal(records[0].classes, [2, 1, 3])  # circle, square, triangle
    # An init run of other classes (fine-tuning to new ones): the data's own map, no error.
    config.train.init_checkpoint = _run(tmp_path / "other", LabelMap([1, 2], ["cat", "dog"]))
    _, own = read_training_data(config, fresh, resuming=False)
    assert own.names == ["circle", "square", "triangle"] and own.dataset_ids == [11, 22, 33]
