"""Train -> checkpoint -> evaluate on tiny shapes data, through the same functions the scripts run.

The overfit check trains the demo architecture on 8 images for a few hundred steps and evaluates
on the same images (the validation split is generated with the training seed), so near-perfect
detections are expected. The metric check runs ``eval.py`` as a user does (only the run directory,
its config.json supplies the rest) and recomputes AP from the written ``detections.json`` with
faster-coco-eval, an implementation of the COCO protocol independent of the pycocotools that
``eval.py`` uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import faster_coco_eval
import numpy as np
import pytest

from tests.support import train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return train_and_evaluate(tmp_path_factory.mktemp("overfit"), "shapes_faster_rcnn",
                              steps=400)


@pytest.mark.slow
def test_overfit_reaches_near_perfect_detections(trained_run):
    _, model_dir, out, losses, metrics = trained_run
    assert np.isfinite(losses["total_loss"])
    assert metrics["num_images"] == 8
    assert metrics["bbox/AP50"] >= 0.9, metrics
    for name in ("metrics.json", "detections.json", "detections.png"):
        assert os.path.exists(os.path.join(out, name)), name
    for name in ("config.json", "label_map.json", "checkpoint"):
        assert os.path.exists(os.path.join(model_dir, name)), name


@pytest.mark.slow
def test_eval_script_metrics_equal_an_independent_coco_implementation(trained_run, tmp_path):
    config, model_dir, _, _, metrics = trained_run
    out = str(tmp_path / "eval")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "eval.py"), f"--checkpoint={model_dir}",
         f"--output_dir={out}"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        written = json.load(f)
    assert written == pytest.approx({k: float(v) for k, v in metrics.items()})
    annotation_file = os.path.join(config.data.shapes_dir, "val", "annotations.json")
    gt = faster_coco_eval.COCO(annotation_file)
    dt = gt.loadRes(os.path.join(out, "detections.json"))
    coco_eval = faster_coco_eval.COCOeval_faster(gt, dt, "bbox", print_function=lambda *_: None)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
             "ARl")
    for name, value in zip(names, coco_eval.stats[:12], strict=True):
        assert written[f"bbox/{name}"] == pytest.approx(value, abs=1e-6), name
    # Detections are in dataset category ids and original pixels ([x, y, w, h] inside 64x64).
    with open(os.path.join(out, "detections.json")) as f:
        detections = json.load(f)
    assert {d["category_id"] for d in detections} <= {1, 2, 3}
    boxes = np.array([d["bbox"] for d in detections])
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= 64 + 1e-3)


def test_config_typo_is_refused_with_valid_keys(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"),
         f"--config={os.path.join(REPO, 'configs', 'shapes_faster_rcnn.py')}",
         f"--model_dir={tmp_path}", "--config.model.num_clases=4"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 2
    assert "--config.model.num_clases" in result.stderr
    assert "model.num_classes" in result.stderr  # the valid keys of that section are listed
