"""The fine-tuning API: weight transfer, freezing, compile defaults, and the README example run
with tiny sizes (8 images of 64 px, evaluated on the training images so it converges fast).
"""

from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.support import REPO, built_model, tiny_config
from tf_rcnn.config import load_config_file
from tf_rcnn.finetune import (
    COCOEvalCallback,
    finetune_model,
    freeze_backbone,
    paired_weights,
)
from tf_rcnn.label_map import LabelMap
from tf_rcnn.models.checkpoint import weight_key
from tf_rcnn.training.run import run_training

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from finetune_shapes import EXAMPLE


def small_source():
    return built_model(tiny_config())


def _short(variable) -> str:
    """``layer/variable``, the last two parts of a weight's checkpoint key."""
    return "/".join(weight_key(variable).split("/")[-2:])


def _changed(source, target) -> list[str]:
    """``layer/variable`` names of target weights that differ from the source's."""
    return [_short(t) for s, t in paired_weights(source, target)
            if tuple(s.shape) != tuple(t.shape) or not np.array_equal(s.numpy(), t.numpy())]


def test_finetune_model_keeps_every_weight_but_the_class_layers():
    source = small_source()
    target = finetune_model(source, LabelMap([7, 9], ["a", "b"]), freeze=None)
    assert target.num_classes == 2 and type(target) is type(source)
    assert target.label_map["classes"][1]["dataset_id"] == 9
    # Only the (K + 1)-wide predictor layers are new: 3 + 1 -> 2 + 1 classes.
    assert sorted(_changed(source, target)) == sorted(
        ["class_logits/kernel", "class_logits/bias", "box_deltas/kernel", "box_deltas/bias"])
    assert target.roi_heads.box_predictor.class_dense.kernel.shape[-1] == 3


def test_same_class_count_still_reinitialises_class_layers():
    source = small_source()
    target = finetune_model(source, 3, freeze=None)
    # Zero-initialised biases stay equal; the class-dependent kernels are redrawn.
    assert sorted(_changed(source, target)) == ["box_deltas/kernel", "class_logits/kernel"]


def test_finetune_refuses_a_different_architecture():
    source = small_source()
    other = built_model(tiny_config(variant="c4"))
    with pytest.raises(ValueError, match="not the same architecture"):
        paired_weights(source, other)


def test_freeze_backbone_whole_or_by_stage():
    source = small_source()
    frozen = finetune_model(source, 2)  # default: backbone frozen
    assert frozen.backbone.trainable_variables == []
    assert frozen.rpn.trainable_variables and frozen.roi_heads.trainable_variables
    partial = finetune_model(source, 2, freeze=("stem", "c2_"))
    names = {_short(v) for v in partial.backbone.trainable_variables}
    assert not any(k.startswith(("stem_", "c2_")) for k in names)
    assert any(k.startswith("c3_") for k in names)
    with pytest.raises(ValueError, match="No backbone layer name starts with 'res9'"):
        freeze_backbone(partial, ("res9",))
    with pytest.raises(ValueError, match="freeze must be"):
        finetune_model(source, 2, freeze="everything")


def test_compile_defaults_to_sgd_without_xla():
    model = small_source()
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == pytest.approx(0.9)
    assert model.jit_compile is False


def _tiny_example(source_dir: str) -> str:
    """The README example with tiny sizes; every replacement must hit exactly once."""
    replacements = [
        ('load_detector("runs/demo", config="configs/shapes_faster_rcnn.py")',
         f"load_detector({source_dir!r})"),  # config.json of the run
        ('(("train", 500, 10), ("val", 100, 11))', '(("train", 8, 0), ("val", 8, 0))'),
        ("image_size=128", "image_size=64"),
        ("batch_size=8", "batch_size=4"),
        ("scales=(128,), max_size=128", "scales=(64,), max_size=64, random_flip=False"),
        ("epochs=3, steps_per_epoch=200", "epochs=2, steps_per_epoch=120"),
    ]
    code = EXAMPLE
    for old, new in replacements:
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    return code


def _write_json(path, annotations, categories) -> str:
    images = [{"id": 1, "file_name": "1.png", "height": 32, "width": 32}]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return str(path)


def test_coco_eval_callback_ground_truth_follows_the_reader_and_the_label_rule(tmp_path):
    subset = LabelMap([1, 2], ["square", "circle"])
    # The json numbers the shapes 11/22/33: the model's two classes are found by name, the
    # triangle is left out, the box outside the 32x32 image and the string bbox are skipped,
    # the box crossing the border is clipped (x 30..32: w 2).
    categories = [{"id": 11, "name": "square"}, {"id": 22, "name": "circle"},
                  {"id": 33, "name": "triangle"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 11, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 22, "bbox": [30, 4, 6, 6]},
            {"id": 3, "image_id": 1, "category_id": 33, "bbox": [2, 2, 5, 5]},
            {"id": 4, "image_id": 1, "category_id": 11, "bbox": [40, 40, 5, 5]},
            {"id": 5, "image_id": 1, "category_id": 22, "bbox": "1234"}]
    callback = COCOEvalCallback(None, _write_json(tmp_path / "a.json", anns, categories),
                                subset)
    assert callback.label_map.dataset_ids == [11, 22]
    assert [(a["category_id"], a["bbox"]) for a in callback.gt["annotations"]] == [
        (11, [1.0, 1.0, 5.0, 5.0]), (22, [30.0, 4.0, 2.0, 6.0])]
    with pytest.raises(ValueError, match="no usable ground-truth box"):
        COCOEvalCallback(None, _write_json(tmp_path / "b.json", anns[3:], categories), subset)
    with pytest.raises(ValueError, match=r"\['circle'\] are not in"):
        COCOEvalCallback(None, _write_json(tmp_path / "c.json", anns, categories[:1]), subset)


@pytest.mark.slow  # trains a source detector, then fine-tunes it: ~40 s of CPU
def test_readme_finetuning_example_tiny(tmp_path, monkeypatch):
    config = load_config_file(os.path.join(REPO, "configs", "shapes_faster_rcnn.py"))
    d = config.data
    d.shapes_dir = str(tmp_path / "data_cache" / "shapes")
    d.shapes_train_images = 8
    d.shapes_image_size = 64
    d.scales, d.max_size, d.train_batch_size, d.random_flip = (64,), 64, 4, False
    config.model.rpn.anchor_sizes = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    t = config.train
    t.total_steps, t.warmup_steps, t.base_batch_size = 200, 50, 4
    t.checkpoint_every, t.log_every, t.steps_per_loop = 200, 100, 20
    source_dir = str(tmp_path / "runs" / "shapes")
    run_training(config, source_dir)

    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_tiny_example(source_dir), "README-example", "exec"), scope)
    history = scope["coco"].history
    assert len(history) == 2
    assert history[-1]["bbox/AP50"] >= 0.9, history
    assert scope["model"].num_classes == 2
    assert {"detection_boxes", "detection_scores", "detection_classes",
            "num_detections"} <= set(scope["detections"])
    # .keras round trip: identical outputs.
    images = scope["images"]
    before = scope["model"].predict(images, verbose=0)
    after = scope["restored"].predict(images, verbose=0)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], atol=1e-5, err_msg=key)
    assert scope["restored"].label_map == scope["model"].label_map
    assert isinstance(images, tf.Tensor)


def test_readme_shows_the_tested_example_verbatim():
    # The benchmark and the tiny test run EXAMPLE; the README must show exactly that code, and
    # it must stay within the 30 lines of user code the fine-tuning API promises.
    with open(os.path.join(REPO, "README.md")) as f:
        assert EXAMPLE in f.read()
    code_lines = [line for line in EXAMPLE.splitlines() if line.strip()
                  and not line.strip().startswith("#")]
    assert len(code_lines) <= 30
