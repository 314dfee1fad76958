"""4-step alternating training for every family with an RPN: the given-proposals build (stage 2),
the shared trunk layers (frozen in stage 4), the refusal of families without an RPN, and the
whole schedule end to end for Faster R-CNN (FPN), R-FCN and Mask R-CNN.

The end-to-end runs take one step per stage on 4 64x64 shapes images and run tf.functions
eagerly: with one step per stage, tracing and graph optimisation of the 4 training steps and 4
proposal dumps would cost several times the steps themselves (the traced path of every family
is trained by tests/models and tests/training/test_detector_training.py, and train.py's joint
runs by tests/test_train_script.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.support import tiny_batch, tiny_config
from tf_rcnn.config import ConfigError
from tf_rcnn.data.shapes import generate_shapes_dataset
from tf_rcnn.models import builder
from tf_rcnn.models.checkpoint import checkpoint_keys, model_weights_trackable, restore_detector
from tf_rcnn.models.detectors.two_stage import TwoStageDetector
from tf_rcnn.training.alternating import STAGES, run_alternating, shared_trunk_layers

FAMILIES = ("faster_rcnn", "rfcn", "mask_rcnn")


def _part(key: str) -> str:
    """The detector part a checkpoint key belongs to (``model/rpn.Srpn_head.Sconv...`` ->
    ``rpn``; backbone ``tiny_backbone``, neck ``fpn``, heads ``roi_heads``)."""
    return key.split("/")[1].split(".S")[0]


def _keys(model: TwoStageDetector) -> dict[str, list[int]]:
    """Checkpoint key -> shape, as load_weights matches them between stages."""
    return {k: list(v.shape) for k, v in
            checkpoint_keys(model_weights_trackable(model), "model").items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_given_proposals_build_is_the_family_without_its_rpn(family):
    full_config = tiny_config(family)
    config = tiny_config(family)
    config.model.given_proposals = True
    assert builder.has_given_proposals_build(config)
    assert builder.needs_proposals(config) and not builder.needs_proposals(full_config)
    full = builder.build_model(full_config)
    full.build_with_dummy_inputs()
    given = builder.build_model(config)
    given.build_with_dummy_inputs()
    assert type(given) is type(full) and given.rpn is None and given.needs_proposals
    # Weights move by Keras path: the given-proposals build holds exactly the full model's
    # variables outside the RPN, with the same shapes.
    full_keys, given_keys = _keys(full), _keys(given)
    assert given_keys == {k: s for k, s in full_keys.items() if _part(k) != "rpn"}
    assert any(_part(k) == "rpn" for k in full_keys)
    # It trains on given proposals with its own second-stage losses (OHEM for R-FCN, the mask
    # loss for Mask R-CNN) and no RPN term.
    images, targets = tiny_batch(proposals=True, masks=given.needs_masks)
    losses = given.compute_losses(images, targets)
    assert set(losses) == set(given.roi_heads.loss_names) | {"total_loss"}
    assert not any(name.startswith("rpn_") for name in losses)
    assert all(np.isfinite(float(v)) for v in losses.values())
    if family == "rfcn":
        assert given.roi_heads.ohem is not None
    if family == "mask_rcnn":
        assert float(losses["mask_loss"]) > 0.0
    out = given({"images": images, "proposals": targets["proposals"]})
    assert out["detection_boxes"].shape[0] == 2
    # The build survives get_config / from_config (how load_model and exporters rebuild it).
    clone = type(given).from_config(given.get_config())
    assert clone.rpn is None and clone.given_proposals and clone.needs_proposals


def test_the_full_family_still_needs_its_rpn():
    model = builder.build_model(tiny_config("rfcn"))
    config = model.get_config()
    config["rpn"] = None
    with pytest.raises(ValueError, match="given_proposals=True"):
        type(model).from_config(config)


@pytest.mark.parametrize("family,given", [("fast_rcnn", False), ("faster_rcnn", True)])
def test_a_recipe_without_an_rpn_is_refused(tmp_path, family, given):
    config = tiny_config(family)
    config.model.given_proposals = given
    config.train.schedule_mode = "alternating"
    with pytest.raises(ConfigError, match="--config.train.schedule_mode"):
        run_alternating(config, str(tmp_path))
    assert not os.listdir(tmp_path)  # refused before anything ran


def _innermost_trunk_layers(model: TwoStageDetector) -> set[str]:
    parts = [p for p in (model.backbone, model.neck) if p is not None]
    return {layer.name for part in parts for layer in part._flatten_layers(include_self=False)
            if layer.trainable_variables
            and next(iter(layer._flatten_layers(include_self=False)), None) is None}


def test_shared_trunk_layers_are_those_the_rpn_reads_through():
    # R-FCN: RPN on C4, head on the dilated C5. Shared: the stem and the c2..c4 blocks (conv +
    # GroupNorm each); C5's two blocks are read by the head only.
    model = builder.build_model(tiny_config("rfcn"))
    model.build_with_dummy_inputs()
    shared = {layer.name for layer in shared_trunk_layers(model)}
    expected = {f"{block}_{kind}" for block in ("stem", "c2_down", "c2_conv", "c3_down",
                                                 "c3_conv", "c4_down", "c4_conv")
                for kind in ("conv", "gn")}
    assert shared == expected
    assert _innermost_trunk_layers(model) - shared == {
        f"c5_{b}_{k}" for b in ("down", "conv") for k in ("conv", "gn")}
    # FPN Faster R-CNN: the RPN reads P2..P6, which depend on every trunk layer.
    model = builder.build_model(tiny_config("faster_rcnn"))
    model.build_with_dummy_inputs()
    shared = {layer.name for layer in shared_trunk_layers(model)}
    assert shared == _innermost_trunk_layers(model) and "c5_conv_conv" in shared


# ------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes_dataset(str(root / "train"), num_images=4, image_size=64, seed=0)
    generate_shapes_dataset(str(root / "val"), num_images=2, image_size=64, seed=1)
    return str(root)


@pytest.fixture
def eager():
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def _alternating_config(family: str, shapes_dir: str):
    config = tiny_config(family)
    config.model.num_classes = None  # from the data, as train.py does
    d = config.data
    d.dataset, d.shapes_dir = "shapes", shapes_dir
    d.shapes_train_images, d.shapes_val_images, d.shapes_image_size = 4, 2, 64
    d.scales, d.max_size = (64,), 64
    d.train_batch_size = d.eval_batch_size = 2
    d.seed = 0
    t = config.train
    t.schedule_mode = "alternating"
    t.alternating_steps = (1, 1, 1, 1)
    t.total_steps = t.checkpoint_every = t.log_every = t.steps_per_loop = 1
    t.warmup_steps, t.schedule = 0, "constant"
    return config


def _weights(stage_dir: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(stage_dir))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith("model/")}


def _equal(a: dict, b: dict, keys) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in keys)


@pytest.mark.parametrize("family", FAMILIES)
def test_alternating_schedule_end_to_end(tmp_path, shapes_dir, eager, family):
    config = _alternating_config(family, shapes_dir)
    run_dir = str(tmp_path / "run")
    run_alternating(config, run_dir)
    dirs = [os.path.join(run_dir, name) for name in STAGES]
    for stage in dirs:
        assert tf.train.latest_checkpoint(stage).endswith("ckpt-1"), stage
    for stage in (dirs[0], dirs[2]):
        assert all(os.path.exists(os.path.join(stage, f"proposals_{s}.npz"))
                   for s in ("train", "val"))
    with open(os.path.join(dirs[1], "config.json")) as f:
        stage2_config = json.load(f)
    assert stage2_config["model"]["given_proposals"] is True
    assert stage2_config["data"]["proposals_train"] == os.path.join(dirs[0],
                                                                    "proposals_train.npz")
    w1, w2, w3, w4 = (_weights(d) for d in dirs)
    assert {_part(k) for k in w2} == {"tiny_backbone", "roi_heads"} | (
        set() if family == "rfcn" else {"fpn"})  # stage 2 has no RPN
    # Stage 3: trunk and RoI heads are stage 2's (frozen), the RPN started from stage 1's and
    # trained.
    assert _equal(w2, w3, w2)
    rpn = [k for k in w3 if _part(k) == "rpn"]
    assert rpn and not _equal(w1, w3, rpn)
    # Stage 4: the RPN and the shared trunk stay stage 3's, the RoI heads train.
    heads = [k for k in w4 if _part(k) == "roi_heads"]
    assert not _equal(w3, w4, heads)
    c5 = [k for k in w4 if ".Sc5_" in k]
    trunk = [k for k in w4 if _part(k) in ("tiny_backbone", "fpn") and k not in c5]
    assert trunk and _equal(w3, w4, rpn + trunk)
    if family == "rfcn":
        # The dilated C5 feeds only the R-FCN head: a layer unique to R-FCN, fine-tuned.
        assert c5 and not _equal(w3, w4, c5)
    else:
        assert _equal(w3, w4, c5)  # FPN: C5 feeds P5/P6, which the RPN reads
    # The stage-4 checkpoint restores with the original recipe (eval.py --config=RECIPE).
    recipe = _alternating_config(family, shapes_dir)
    recipe.train.schedule_mode = "joint"
    model, _, _ = restore_detector(dirs[3], recipe)
    assert model.rpn is not None and not model.given_proposals
    images, _ = tiny_batch(batch=1)
    assert "detection_boxes" in model(images)
    if family == "mask_rcnn":
        assert "detection_masks" in model(images)
    with open(os.path.join(run_dir, "alternating.json")) as f:
        assert json.load(f)["final_checkpoint_dir"] == dirs[3]
    # Run again: every stage is finished, so nothing trains or is rewritten.
    stamps = {d: os.path.getmtime(tf.train.latest_checkpoint(d) + ".index") for d in dirs}
    again = run_alternating(config, run_dir)
    assert again == {"step": 1.0, "total_steps": 1.0}
    assert stamps == {d: os.path.getmtime(tf.train.latest_checkpoint(d) + ".index")
                      for d in dirs}
