"""torchvision's ImageNet ResNet-50 files as a backbone start (``model.backbone.weights=FILE``):
every trunk weight, and the C4 heads' per-RoI res5, gets the file's tensor; files that do not fit
are refused with the key and the flag to change."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.support import REPO
from tf_rcnn.config import load_config_file
from tf_rcnn.formats.torch_checkpoint import save_npz
from tf_rcnn.models import builder
from tf_rcnn.models.backbones.resnet import copy_keras_resnet_weights, make_res5_head
from tf_rcnn.models.backbones.torchvision_resnet import (
    WeightsMismatchError,
    load_torchvision_resnet50,
)
from tf_rcnn.pretrained import synthetic

BODY = "backbone.body."


def resnet50_state() -> dict[str, np.ndarray]:
    """A torchvision ``resnet50()`` state dict (BatchNorm2d with ``num_batches_tracked``, the
    1000-class ``fc``) with synthetic values: the detector fixture's trunk keys + ``fc``."""
    meta = json.loads((Path(REPO) / "tests/fixtures/torchvision/fasterrcnn_resnet50_fpn_v2.json")
                      .read_text())
    spec = [(k[len(BODY):], tuple(s), d) for k, s, d in meta["spec"] if k.startswith(BODY)]
    spec += [("fc.weight", (1000, 2048), "float32"), ("fc.bias", (1000,), "float32")]
    return synthetic.synthetic_state_dict(spec, seed=5)


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> tuple[str, dict]:
    state = resnet50_state()
    path = tmp_path_factory.mktemp("resnet50") / "resnet50-imagenet.npz"
    save_npz(state, path)
    return str(path), state


def torch_to_keras(state: dict, key: str) -> np.ndarray:
    value = state[key]
    return np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value


def check_stage(variables: dict, state: dict, torch_block: str, ours: str) -> None:
    """Every conv and norm tensor of one bottleneck."""
    for i in (1, 2, 3):
        np.testing.assert_array_equal(variables[f"{ours}_{i}_conv/kernel"],
                                      torch_to_keras(state, f"{torch_block}.conv{i}.weight"))
        for theirs, mine in (("weight", "gamma"), ("bias", "beta"),
                             ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            np.testing.assert_array_equal(variables[f"{ours}_{i}_bn/{mine}"],
                                          state[f"{torch_block}.bn{i}.{theirs}"])


def named(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    """``{variable path without the layer's own name: value}``."""
    return {v.path.split("/", 1)[1]: v.numpy() for v in layer.weights}


def recipe_with(path: str, recipe: str):
    config = load_config_file(f"{REPO}/configs/{recipe}.py")
    b = config.model.backbone
    b.weights, b.stride_in_1x1, b.norm_epsilon = path, False, 1e-5
    config.model.num_classes = 3
    return config


def test_fpn_trunk_gets_every_tensor(resnet50_file):
    path, state = resnet50_file
    model = builder.build_model(recipe_with(path, "faster_rcnn_r50_fpn_coco"))
    variables = named(model.backbone)
    assert len(variables) == 53 * 5  # 53 convs: a kernel (no bias) and 4 norm tensors each
    np.testing.assert_array_equal(variables["conv1_conv/kernel"],
                                  torch_to_keras(state, "conv1.weight"))
    np.testing.assert_array_equal(variables["conv1_bn/moving_variance"], state["bn1.running_var"])
    check_stage(variables, state, "layer2.0", "conv3/conv3_block1/conv3_block1")
    check_stage(variables, state, "layer4.2", "conv5/conv5_block3/conv5_block3")
    np.testing.assert_array_equal(variables["conv4/conv4_block1/conv4_block1_0_conv/kernel"],
                                  torch_to_keras(state, "layer3.0.downsample.0.weight"))


def test_c4_head_res5_gets_layer4(resnet50_file):
    # The C4 detector's trunk stops at C4 and runs res5 per RoI: layer4 goes there.
    path, state = resnet50_file
    model = builder.build_model(recipe_with(path, "faster_rcnn_r50_c4_coco"))
    trunk = named(model.backbone)
    assert not any(k.startswith("conv5") for k in trunk)
    check_stage(trunk, state, "layer3.5", "conv4/conv4_block6/conv4_block6")
    res5 = named(model.roi_heads.box_head.res5)
    check_stage(res5, state, "layer4.0", "res5_block1/res5_block1")
    check_stage(res5, state, "layer4.2", "res5_block3/res5_block3")
    np.testing.assert_array_equal(res5["res5_block1/res5_block1_0_bn/gamma"],
                                  state["layer4.0.downsample.1.weight"])


def test_keras_applications_weights_reach_a_res5_head_of_any_name():
    # keras.applications names the stage conv5; the C4 heads name theirs res5 / mask_res5.
    source = keras.applications.ResNet50(include_top=False, weights=None)
    head = make_res5_head(depth=50, stride_in_1x1=True, name="mask_res5")
    assert copy_keras_resnet_weights(head, source) == 10  # 9 convs + the projection
    ours = named(head)
    kernel, bias = source.get_layer("conv5_block2_3_conv").get_weights()
    np.testing.assert_array_equal(ours["mask_res5_block2/mask_res5_block2_3_conv/kernel"], kernel)
    mean = source.get_layer("conv5_block2_3_bn").get_weights()[2]
    np.testing.assert_allclose(ours["mask_res5_block2/mask_res5_block2_3_bn/moving_mean"],
                               mean - bias)  # the conv bias folds into the norm


def test_files_that_do_not_fit_are_refused(resnet50_file, tmp_path):
    path, state = resnet50_file
    with pytest.raises(ValueError, match="stride_in_1x1=False"):
        config = recipe_with(path, "faster_rcnn_r50_fpn_coco")
        config.model.backbone.stride_in_1x1 = True
        builder.build_model(config)
    detector = {f"{BODY}{k}": v for k, v in state.items()}  # a detector's keys, not a ResNet's
    wrong = tmp_path / "detector.npz"
    save_npz(detector, wrong)
    with pytest.raises(WeightsMismatchError, match=r"not a torchvision ResNet-50 state dict"):
        builder.build_model(recipe_with(str(wrong), "faster_rcnn_r50_fpn_coco"))
    narrow = dict(state)
    narrow["layer1.0.conv2.weight"] = np.zeros((32, 64, 3, 3), np.float32)
    bad = tmp_path / "narrow.npz"
    save_npz(narrow, bad)
    with pytest.raises(WeightsMismatchError, match=r"layer1\.0\.conv2\.weight \[3, 3, 64, 32\]"):
        builder.build_model(recipe_with(str(bad), "faster_rcnn_r50_fpn_coco"))
    head = make_res5_head(depth=50, stride_in_1x1=False, name="res5")
    with pytest.raises(WeightsMismatchError, match="filled 0 of"):
        load_torchvision_resnet50(head, path)  # a stage without its keras.applications name
