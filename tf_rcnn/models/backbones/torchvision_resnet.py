"""torchvision ResNet-50 weights in tf_rcnn's ``ResNet``: the key mapping and the loader.

torchvision's ImageNet ``resnet50`` files (``IMAGENET1K_V1`` / ``IMAGENET1K_V2``) and the
backbone of its detectors use keys ``conv1``, ``bn1``, ``layer<s>.<b>.conv<i>``,
``layer<s>.<b>.bn<i>``, ``layer<s>.0.downsample.{0,1}``; tf_rcnn's ``ResNet`` names the same
weights ``conv1_conv``, ``conv1_bn``, ``conv<s+1>/conv<s+1>_block<b+1>/conv<s+1>_block<b+1>_<i>_
conv|bn`` (``_0_`` for the projection). Conv weights ``[out, in, kh, kw]`` become
``[kh, kw, in, out]``; BatchNorm ``weight, bias, running_mean, running_var`` become ``gamma,
beta, moving_mean, moving_variance``. torchvision's ResNet puts a block's stride in its 3x3
conv (``stride_in_1x1=False``) and takes RGB in [0, 1] normalised with the ImageNet mean/std
(``data.pixel_mean/pixel_std`` = 255x those values).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from tf_rcnn.formats.torch_checkpoint import load_state_dict
from tf_rcnn.models.serialization import weight_key

# torchvision key -> (tf_rcnn weight key, conversion of the array).
Rule = tuple[str, Callable[[np.ndarray], np.ndarray]]
BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
            "running_var": "moving_variance"}
RESNET50_BLOCKS = (3, 4, 6, 3)  # blocks per stage


class WeightsMismatchError(ValueError):
    """A state dict that does not fit the model (the message lists the keys)."""


def torch_conv(w: np.ndarray) -> np.ndarray:
    """Conv weight ``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``."""
    return np.transpose(w, (2, 3, 1, 0))


def torch_linear(w: np.ndarray) -> np.ndarray:
    """Linear weight ``[out, in]`` -> Dense kernel ``[in, out]``."""
    return np.transpose(w)


def same(x: np.ndarray) -> np.ndarray:
    """The identity conversion (biases, BatchNorm vectors)."""
    return x


def strip_module_prefix(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A state dict without the ``module.`` prefix of DataParallel checkpoints."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def norm_rules(torch_prefix: str, ours: str, rules: dict[str, Rule]) -> None:
    """Adds the four BatchNorm tensors of ``torch_prefix`` -> the norm layer ``ours``."""
    for t, o in BN_NAMES.items():
        rules[f"{torch_prefix}.{t}"] = (f"{ours}/{o}", same)


def conv_rules(torch_prefix: str, ours: str, rules: dict[str, Rule], bias: bool = True) -> None:
    """Adds a conv's weight (and bias) of ``torch_prefix`` -> the Conv2D layer ``ours``."""
    rules[f"{torch_prefix}.weight"] = (f"{ours}/kernel", torch_conv)
    if bias:
        rules[f"{torch_prefix}.bias"] = (f"{ours}/bias", same)


def resnet50_rules(prefix: str = "") -> dict[str, Rule]:
    """Every tensor of a torchvision ResNet-50 under ``prefix`` (``"backbone.body."`` in the
    detectors) -> tf_rcnn's ``ResNet`` weight (module docstring)."""
    rules: dict[str, Rule] = {}
    conv_rules(f"{prefix}conv1", "conv1_conv", rules, bias=False)
    norm_rules(f"{prefix}bn1", "conv1_bn", rules)
    for stage, blocks in enumerate(RESNET50_BLOCKS):
        for block in range(blocks):
            t = f"{prefix}layer{stage + 1}.{block}"
            # Keras paths: stage / block / layer, e.g. conv2/conv2_block1/conv2_block1_1_conv.
            name = f"conv{stage + 2}_block{block + 1}"
            o = f"conv{stage + 2}/{name}/{name}"
            for i in (1, 2, 3):
                conv_rules(f"{t}.conv{i}", f"{o}_{i}_conv", rules, bias=False)
                norm_rules(f"{t}.bn{i}", f"{o}_{i}_bn", rules)
            if block == 0:
                conv_rules(f"{t}.downsample.0", f"{o}_0_conv", rules, bias=False)
                norm_rules(f"{t}.downsample.1", f"{o}_0_bn", rules)
    return rules


def load_torchvision_resnet50(backbone: keras.layers.Layer, path: str,
                              stage: tuple[str, str] | None = None) -> int:
    """torchvision ImageNet ``resnet50`` weights (``.pth`` zip or legacy, ``.safetensors``,
    ``.npz``) into a built tf_rcnn ``ResNet`` of depth 50 with ``stride_in_1x1=False``; the
    ``fc`` classifier is ignored, stages the trunk does not build (C5 of a C4 model) are
    skipped.

    Args:
        backbone: a built ``ResNet`` or a single ``ResNetStage`` (the C4 heads' res5).
        path: the torchvision file.
        stage: for a ``ResNetStage``: ``(its name, its keras.applications name)``, e.g.
            ``("res5", "conv5")``, to find its weights among the trunk's rules.

    Returns:
        The number of tensors copied.

    Raises:
        WeightsMismatchError: the file is not a ResNet-50 state dict, or a shape differs (the
            message names the key and the config value to change).
    """
    state = strip_module_prefix(load_state_dict(path))
    rules = resnet50_rules()
    missing = [k for k in rules if k not in state]
    if missing:
        raise WeightsMismatchError(f"{path} (model.backbone.weights) is not a torchvision "
                                   f"ResNet-50 state dict; missing {missing[:10]}.")
    if stage is None:
        variables = {weight_key(v): v for v in backbone.weights}
    else:  # res5_block1/res5_block1_1_conv/kernel -> conv5/conv5_block1/conv5_block1_1_conv/...
        ours, theirs = stage
        variables = {f"{theirs}/" + weight_key(v).replace(f"{ours}_", f"{theirs}_"): v
                     for v in backbone.weights}
    copied = 0
    for key, (ours, convert) in rules.items():
        variable = variables.get(ours)
        if variable is None:
            continue
        value = np.asarray(convert(np.asarray(state[key], np.float32)), np.float32)
        if tuple(value.shape) != tuple(variable.shape):
            raise WeightsMismatchError(
                f"{path}: {key} {list(value.shape)} does not fit {ours} {list(variable.shape)}; "
                "model.backbone.weights must be a torchvision ResNet-50 file.")
        variable.assign(value)
        copied += 1
    if copied != len(variables):
        raise WeightsMismatchError(
            f"{path} (model.backbone.weights) filled {copied} of the {len(variables)} weights "
            f"of {backbone.name}; it is not a ResNet-50 built like torchvision's.")
    return copied
