"""``python -m tf_rcnn.predict``: images from a file, folder or glob, through a checkpoint (+ its
run's config.json) or a SavedModel; both sources must give the same detections."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support import LABEL_MAP, REPO, decisive_model, tiny_config
from tf_rcnn import export as export_lib
from tf_rcnn import predict as predict_lib
from tf_rcnn.training import CheckpointManager, build_optimizer


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    config = tiny_config()
    config.data.scales, config.data.max_size = (64,), 96
    model = decisive_model(config)
    run_dir = root / "run"
    optimizer = build_optimizer("sgd", learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    CheckpointManager(str(run_dir), model, optimizer).save()
    (run_dir / "config.json").write_text(config.to_json_best_effort(indent=2))
    (run_dir / "label_map.json").write_text(json.dumps(LABEL_MAP))
    export_dir = export_lib.export_saved_model(model, str(root / "exported"),
                                               export_lib.PreprocessConfig.from_recipe(config))
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)).save(images / "b.jpg")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root, str(run_dir), export_dir, str(images)


def test_find_images_file_folder_glob(run_and_export):
    images = run_and_export[3]
    assert [os.path.basename(p) for p in predict_lib.find_images(images)] == [
        "a.png", "b.jpg", "broken.png"]
    assert len(predict_lib.find_images(os.path.join(images, "*.jpg"))) == 1
    assert len(predict_lib.find_images(os.path.join(images, "a.png"))) == 1
    with pytest.raises(ValueError, match="matches no image file"):
        predict_lib.find_images(os.path.join(images, "*.tif"))


def test_checkpoint_and_saved_model_give_the_same_detections(run_and_export, tmp_path):
    _, run_dir, export_dir, images = run_and_export
    paths = predict_lib.find_images(images)
    results = {}
    for source, kwargs in (("ckpt", {"checkpoint": run_dir}), ("sm", {"saved_model": export_dir})):
        predict, names = predict_lib.load_predictor(**kwargs)
        assert names == {10: "square", 20: "circle", 30: "triangle"}
        out = str(tmp_path / source)
        reported = []
        json_path, failures = predict_lib.predict_images(paths, predict, names, out, 0.0,
                                                         report=reported.append)
        with open(json_path) as f:
            results[source] = json.load(f)
        assert os.path.exists(os.path.join(out, "a.png"))
        # Small images are drawn enlarged by a whole factor so labels stay legible.
        drawn = np.asarray(Image.open(os.path.join(out, "b.png")))
        factor = drawn.shape[0] // 50
        assert factor > 1 and drawn.shape == (50 * factor, 40 * factor, 3)
        # The broken file: one console line naming it and the reason, one JSON line.
        assert failures == 1 and len(reported) == 1 and "broken.png" in reported[0]
        assert "\n" not in results[source][2]["error"]
    ckpt, sm = results["ckpt"], results["sm"]
    assert "error" in ckpt[2] and "error" in sm[2]  # broken.png: reported, not fatal
    for a, b in zip(ckpt[:2], sm[:2], strict=True):
        assert len(a["detections"]) == len(b["detections"]) > 0
        for da, db in zip(a["detections"], b["detections"], strict=True):
            assert da["class_id"] == db["class_id"] and da["class_name"] == db["class_name"]
            np.testing.assert_allclose(da["box"], db["box"], atol=0.1)
            assert da["score"] == pytest.approx(db["score"], abs=1e-4)
            y1, x1, y2, x2 = da["box"]
            assert 0 <= y1 <= y2 <= a["height"] and 0 <= x1 <= x2 <= a["width"]


def test_command_line(run_and_export, tmp_path):
    _, _, export_dir, images = run_and_export
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "tf_rcnn.predict", f"--inputs={images}/*.png",
         f"--saved_model={export_dir}", f"--output_dir={out}"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 of 2 image(s) done" in result.stdout
    assert "skipped" in result.stdout and "broken.png" in result.stdout
    with open(out / "detections.json") as f:
        assert [os.path.basename(r["image"]) for r in json.load(f)] == ["a.png", "broken.png"]
    # Nothing readable at all: the command fails.
    result = subprocess.run(
        [sys.executable, "-m", "tf_rcnn.predict", f"--inputs={images}/broken.png",
         f"--saved_model={export_dir}", f"--output_dir={tmp_path / 'none'}"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 1 and "0 of 1 image(s) done" in result.stdout
