"""The evaluation's ground truth is the reader's records, read through the model's label map.

A random-weight tiny detector (classes square, circle, triangle with dataset ids 1, 2, 3) is
saved as a run directory; ``evaluate_checkpoint`` (what ``eval.py`` runs) scores it on small
COCO jsons written here. The evaluator's ground truth is captured, so the tests check what the
metric is computed against, not how good a random model is.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from tests.support import run_command, tiny_config
from tf_rcnn.config import ConfigError, load_config_file
from tf_rcnn.data.proposal_dump import dump_proposals
from tf_rcnn.evaluation import evaluate as evaluate_module
from tf_rcnn.evaluation.evaluate import evaluate_checkpoint
from tf_rcnn.label_map import LabelMap
from tf_rcnn.models import builder
from tf_rcnn.models.checkpoint import restore_detector, save_weights

MODEL_CLASSES = LabelMap([1, 2, 3], ["square", "circle", "triangle"])
SIZE = 48


def _image(path: str, value: int = 90) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)


def _dataset(root, annotations: list[dict], categories: list[dict],
             images: list[dict] | None = None) -> tuple[str, str]:
    """``root/images/*.png`` and ``root/val.json``; returns (json, image folder)."""
    images = images or [{"id": i, "file_name": f"{i}.png", "height": SIZE, "width": SIZE}
                        for i in (1, 2)]
    image_dir = os.path.join(str(root), "images")
    for im in images:
        if not im["file_name"].startswith("missing"):
            _image(os.path.join(image_dir, im["file_name"]), value=im["id"])
    path = os.path.join(str(root), "val.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path, image_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    """A run directory (config.json, label_map.json, ckpt-0) of a random tiny Faster R-CNN."""
    config = tiny_config()
    config.data.scales, config.data.max_size = (SIZE,), SIZE
    config.data.eval_batch_size = 2
    config.model.rpn.anchor_sizes = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    config.eval.visualize = 0
    model = builder.build_model(config, label_map=MODEL_CLASSES.to_dict())
    model.build_with_dummy_inputs()
    run = str(tmp_path_factory.mktemp("run"))
    save_weights(model, run)
    with open(os.path.join(run, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    MODEL_CLASSES.to_json(os.path.join(run, "label_map.json"))
    return run


@pytest.fixture
def captured(monkeypatch) -> list[dict]:
    """The ground-truth dicts evaluate_checkpoint hands to its COCO evaluator."""
    seen: list[dict] = []
    original = evaluate_module.COCOEvaluator

    def capture(*args, **kwargs):
        seen.append(kwargs["gt_dataset"])
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "COCOEvaluator", capture)
    return seen


def _evaluate(run_dir: str, annotations: str, image_dir: str, out: str) -> dict[str, float]:
    config = load_config_file(os.path.join(run_dir, "config.json"))
    config.data.dataset = "coco"
    config.data.val_annotations, config.data.val_images = annotations, image_dir
    return evaluate_checkpoint(run_dir, out, config=config)


def _ann(aid: int, image_id: int, category: int, bbox, **extra) -> dict:
    return {"id": aid, "image_id": image_id, "category_id": category, "bbox": bbox,
            "iscrowd": 0, **extra}


def test_other_category_ids_with_the_model_names_are_matched_by_name(run_dir, tmp_path,
                                                                     captured, caplog):
    # The demo's three shapes, numbered 11/22/33 by another tool (and listed out of order).
    categories = [{"id": 33, "name": "triangle"}, {"id": 11, "name": "square"},
                  {"id": 22, "name": "circle"}]
    anns = [_ann(1, 1, 11, [2, 2, 10, 10]), _ann(2, 1, 22, [20, 20, 12, 12]),
            _ann(3, 2, 33, [5, 5, 20, 20]), _ann(4, 2, 11, [30, 30, 8, 8])]
    annotations, images = _dataset(tmp_path, anns, categories)
    with caplog.at_level(logging.INFO, logger="absl"):
        metrics = _evaluate(run_dir, annotations, images, str(tmp_path / "eval"))
    # Before: all 4 skipped as "unknown category id" and AP 0.0 over no ground truth.
    (gt,) = captured
    assert len(gt["annotations"]) == 4
    assert sorted(a["category_id"] for a in gt["annotations"]) == [11, 11, 22, 33]
    assert {c["id"]: c["name"] for c in gt["categories"]} == {11: "square", 22: "circle",
                                                                 33: "triangle"}
    lines = [r.getMessage() for r in caplog.records if "by name" in r.getMessage()]
    assert len(lines) == 1 and "square 1 -> 11, circle 2 -> 22, triangle 3 -> 33" in lines[0]
    assert 0.0 <= metrics["bbox/AP"] <= 1.0
    with open(tmp_path / "eval" / "detections.json") as f:
        assert {d["category_id"] for d in json.load(f)} <= {11, 22, 33}


def test_names_that_do_not_match_list_both_label_maps_and_the_flag(run_dir, tmp_path):
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "disk"},
                  {"id": 3, "name": "tri"}]
    annotations, images = _dataset(tmp_path, [_ann(1, 1, 1, [2, 2, 10, 10])], categories)
    with pytest.raises(ConfigError) as error:
        _evaluate(run_dir, annotations, images, str(tmp_path / "eval"))
    message = str(error.value)
    assert f"--config.data.val_annotations={annotations}" in message
    assert "['circle', 'triangle']" in message
    assert "1: square (id 1), 2: circle (id 2), 3: triangle (id 3)" in message
    assert "1 square, 2 disk, 3 tri" in message
    assert not os.path.exists(tmp_path / "eval" / "metrics.json")


def test_defective_json_ground_truth_is_exactly_what_the_reader_kept(run_dir, tmp_path,
                                                                     captured):
    images = [{"id": 1, "file_name": "1.png", "height": SIZE, "width": SIZE},
              {"id": 2, "file_name": "missing.png", "height": SIZE, "width": SIZE},
              {"id": 3, "file_name": "3.png", "height": SIZE, "width": SIZE},
              {"id": 4, "file_name": "4.png", "height": SIZE, "width": SIZE}]
    nan = float("nan")
    anns = [
        _ann(1, 1, 1, [2, 2, 10, 10], area=77.0),  # good; its own area is kept
        _ann(2, 1, 1, [nan, 1, 5, 5]),  # NaN
        _ann(3, 1, 2, [5, 5, -3, 4]),  # negative width
        _ann(4, 1, 2, [60, 60, 5, 5]),  # outside the 48x48 image
        _ann(5, 1, 3, [40, 36, 20, 20]),  # partly outside: x 40..48, y 36..48 (repaired)
        _ann(6, 1, 1, "1234"),  # a string
        _ann(7, 1, 1, [1, 2, 3]),  # three numbers
        {"id": 8, "image_id": 1, "category_id": 1, "iscrowd": 0},  # no bbox
        _ann(9, 1, 99, [1, 1, 5, 5]),  # unknown category id
        _ann(10, 42, 1, [1, 1, 5, 5]),  # unknown image id
        _ann(11, 2, 1, [1, 1, 5, 5]),  # of the missing image file
        _ann(12, 3, 1, [1, 1, 5, 5]),  # of the corrupt image file
        _ann(13, 4, 2, [10, 12, 20, 15]),  # good
    ]
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"},
                  {"id": 3, "name": "triangle"}]
    annotations, image_dir = _dataset(tmp_path, anns, categories, images)
    with open(os.path.join(image_dir, "3.png"), "wb") as f:
        f.write(b"not a png")
    metrics = _evaluate(run_dir, annotations, image_dir, str(tmp_path / "eval"))  # no crash
    (gt,) = captured
    assert sorted(im["id"] for im in gt["images"]) == [1, 4]  # 2 missing, 3 corrupt
    by_box = {tuple(a["bbox"]): a for a in gt["annotations"]}
    # Kept: 1, 5 (clipped: x 40 -> 48 is w 8, y 36 -> 48 is h 12; area = box area 96) and 13.
    assert set(by_box) == {(2.0, 2.0, 10.0, 10.0), (40.0, 36.0, 8.0, 12.0),
                           (10.0, 12.0, 20.0, 15.0)}
    assert by_box[(2.0, 2.0, 10.0, 10.0)]["area"] == 77.0
    assert by_box[(40.0, 36.0, 8.0, 12.0)]["area"] == 96.0
    assert [a["category_id"] for a in gt["annotations"]] == [1, 3, 2]
    assert metrics["num_images"] == 2.0


def test_a_split_whose_every_annotation_is_skipped_fails_eval_py(run_dir, tmp_path):
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"},
                  {"id": 3, "name": "triangle"}]
    anns = [_ann(1, 1, 7, [2, 2, 10, 10]), _ann(2, 2, 1, [60, 60, 5, 5])]  # unknown id, outside
    annotations, images = _dataset(tmp_path, anns, categories)
    out = str(tmp_path / "eval")
    result = run_command(["eval.py", f"--checkpoint={run_dir}", f"--output_dir={out}",
                          "--config.data.dataset=coco",
                          f"--config.data.val_annotations={annotations}",
                          f"--config.data.val_images={images}"])
    assert result.returncode != 0
    assert "no usable ground-truth box" in result.stderr
    assert f"--config.data.val_annotations={annotations}" in result.stderr
    assert "1 unknown category id" in result.stderr and "1 box outside image" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(out, "metrics.json"))


def test_dump_proposals_reads_the_data_by_the_same_rule(run_dir, tmp_path):
    config = load_config_file(os.path.join(run_dir, "config.json"))
    config.data.dataset = "coco"
    categories = [{"id": 33, "name": "triangle"}, {"id": 11, "name": "square"},
                  {"id": 22, "name": "circle"}]
    config.data.val_annotations, config.data.val_images = _dataset(
        tmp_path / "a", [_ann(1, 1, 11, [2, 2, 10, 10])], categories)
    model, config, label_map = restore_detector(run_dir, config)
    output = str(tmp_path / "proposals.npz")
    # Other ids, same names: matched by name, the file is written for both images.
    stats = dump_proposals(model, config, "val", output, label_map=label_map)
    assert stats["num_images"] == 2.0
    config.data.val_annotations, config.data.val_images = _dataset(
        tmp_path / "b", [_ann(1, 1, 11, [2, 2, 10, 10])], categories[1:])
    with pytest.raises(ConfigError, match=r"val_annotations=.*\['triangle'\] are not in"):
        dump_proposals(model, config, "val", output, label_map=label_map)
