"""The README's own-data path: a CSV of two classes, train.py without --config.model.num_classes,
then eval.py and the exporter with nothing but --checkpoint and --output_dir.

The run is trained in-process (a few steps at tiny sizes); the commands run as subprocesses,
the way a user runs them.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.support import own_data_config, recipe, run_command, write_csv_dataset
from tf_rcnn import export as export_lib
from tf_rcnn.config import ConfigError
from tf_rcnn.models import builder
from tf_rcnn.models.checkpoint import restore_detector
from tf_rcnn.training.run import run_training


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    train_csv = write_csv_dataset(root / "mine", num_images=8, seed=0)
    val_csv = write_csv_dataset(root / "mine_val", num_images=4, seed=1)
    config = own_data_config(train_csv, val_csv)
    run_dir = str(root / "run")
    losses = run_training(config, run_dir)
    return root, config, run_dir, losses


def test_num_classes_follows_the_training_data_and_is_saved(own_run):
    _, config, run_dir, losses = own_run
    assert np.isfinite(losses["total_loss"])
    assert config.model.num_classes is None  # the caller's config is not changed
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["model"]["num_classes"] == 2
    assert saved["data"]["scales"] == [48] and saved["data"]["dataset"] == "custom"
    with open(os.path.join(run_dir, "label_map.json")) as f:
        assert [c["name"] for c in json.load(f)["classes"]] == ["circle", "square"]
    # The recipe (num_classes unset) restores the run, as the README's load_detector(RUN,
    # config=RECIPE) does: the run knows its class count.
    model, _, _ = restore_detector(run_dir, config=config)
    assert model.num_classes == 2


def test_explicit_num_classes_that_differs_from_the_data_names_both(own_run, tmp_path):
    _, config, _, _ = own_run
    wrong = copy.deepcopy(config)
    wrong.model.num_classes = 3
    with pytest.raises(ConfigError) as error:
        run_training(wrong, str(tmp_path / "run"))
    message = str(error.value)
    assert "--config.model.num_classes=3" in message
    assert f"--config.data.train_annotations={config.data.train_annotations}" in message
    assert "2 classes (circle, square)" in message and "Drop --config.model.num_classes" in message
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_model_without_data_needs_num_classes():
    with pytest.raises(ConfigError, match="--config.model.num_classes=K"):
        builder.build_model(recipe("shapes_faster_rcnn"))


def test_rerunning_a_finished_run_says_there_is_nothing_to_train(own_run):
    _, config, run_dir, _ = own_run
    assert run_training(config, run_dir) == {"step": 3.0, "total_steps": 3.0}
    done = run_command(["train.py", f"--config={run_dir}/config.json", f"--model_dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{run_dir} is already at step 3/3; nothing to train" in done.stdout
    assert "Training finished" not in done.stderr  # no losses, no weight hashes


def test_eval_and_export_use_the_runs_classes_data_and_scale(own_run):
    root, config, run_dir, _ = own_run
    out = root / "eval"
    done = run_command(["eval.py", f"--checkpoint={run_dir}", f"--output_dir={out}"])
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4  # the validation CSV's images
    assert {k for k in metrics if k.startswith("bbox/AP/")} == {"bbox/AP/circle",
                                                                "bbox/AP/square"}
    assert "voc/mAP" in metrics  # eval.metrics of the run
    with open(config.data.val_annotations) as f:
        listed = {line.split(",")[0] for line in f.read().splitlines()[1:]}
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {d["file_name"] for d in detections} <= listed

    exported = root / "exported"
    done = run_command(["export/export_saved_model.py", f"--checkpoint={run_dir}",
                        f"--output_dir={exported}"])
    assert done.returncode == 0, done.stderr[-3000:]
    # The SavedModel resizes as the run was trained (48 px), not as the recipe does (128 px).
    image = np.asarray(Image.open(os.path.join(os.path.dirname(config.data.val_annotations),
                                               detections[0]["file_name"])).convert("RGB"))
    served = tf.saved_model.load(str(exported)).signatures["serving_default"](
        images=tf.constant(image[None]))
    model, run_config, _ = restore_detector(run_dir)
    scores = {}
    for scale in (48, 128):
        pre = export_lib.PreprocessConfig.from_recipe(run_config)
        pre = export_lib.PreprocessConfig((scale,), scale, pre.size_divisor,
                                          pixel_mean=pre.pixel_mean, pixel_std=pre.pixel_std)
        batch = export_lib.preprocess_batch([image], pre)
        outputs = model({"images": batch["images"], "image_shape": batch["image_shape"]})
        scores[scale] = outputs["detection_scores"].numpy()
    np.testing.assert_allclose(served["detection_scores"].numpy(), scores[48], atol=1e-4)
    assert not np.allclose(scores[48], scores[128], atol=1e-4)


def test_a_recipe_of_another_family_names_the_runs_family_and_the_fix(own_run):
    # The run holds a Faster R-CNN (its config.json); an R-FCN recipe cannot rebuild it. The
    # message names both families and the two ways out, not the checkpoint's variable names.
    _, _, run_dir, _ = own_run
    with pytest.raises(ConfigError) as error:
        restore_detector(run_dir, config=recipe("shapes_rfcn"))
    message = str(error.value)
    assert "model.type='faster_rcnn'" in message and "model.type='rfcn'" in message
    assert "config.json" in message
    assert "Drop --config" in message and "--checkpoint" in message
    assert "kernel" not in message  # no variable dump
    done = run_command(["eval.py", "--config=configs/shapes_rfcn.py", f"--checkpoint={run_dir}",
                        f"--output_dir={run_dir}/eval_rfcn"])
    assert done.returncode != 0 and "Drop --config" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_schedule_longer_than_the_run_names_every_flag_with_a_value(own_run, tmp_path):
    # 5 steps with a 100-step warmup and decays at 60/80: one error names both flags with values
    # that fit (a tenth of the run for the warmup, 5 // 10 = 0; decays at 2/3 and 8/9 of it,
    # int(3.33) = 3 and int(4.44) = 4), so a shortened run needs one retry, not two.
    _, config, _, _ = own_run
    short = copy.deepcopy(config)
    t = short.train
    t.total_steps, t.warmup_steps, t.schedule, t.decay_steps = 5, 100, "step", (60, 80)
    with pytest.raises(ConfigError) as error:
        run_training(short, str(tmp_path / "run"))
    message = str(error.value)
    assert "train.warmup_steps=100 exceeds train.total_steps=5" in message
    assert "train.decay_steps=(60, 80) must not exceed train.total_steps=5" in message
    assert "--config.train.warmup_steps=0" in message
    assert "--config.train.decay_steps='(3, 4)'" in message
