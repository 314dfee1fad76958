"""torchvision's COCO detectors and ImageNet ResNets in tf_rcnn: architectures and weight import.

Four detectors (torchvision 0.13+ ``models.detection``), each a recipe in ``configs/`` that sets
every number-changing convention to torchvision's value:

==============================  ===========================================  =============
arch                            recipe                                       COCO AP
==============================  ===========================================  =============
fasterrcnn_resnet50_fpn         configs/torchvision_fasterrcnn_resnet50_fpn  37.0 box
maskrcnn_resnet50_fpn           configs/torchvision_maskrcnn_resnet50_fpn    37.9 / 34.6
fasterrcnn_resnet50_fpn_v2      configs/torchvision_fasterrcnn_..._fpn_v2    46.7 box
maskrcnn_resnet50_fpn_v2        configs/torchvision_maskrcnn_..._fpn_v2      47.4 / 41.8
==============================  ===========================================  =============

:func:`convert_state_dict` maps a torchvision state dict (read without torch by
:mod:`tf_rcnn.formats.torch_checkpoint`) onto a built tf_rcnn model, key by key:

- conv weights ``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``; linear ``[out, in]`` ->
  ``[in, out]``; the transposed conv ``[in, out, kh, kw]`` -> ``[kh, kw, out, in]``;
  BatchNorm ``weight, bias, running_mean, running_var`` -> ``gamma, beta, moving_mean,
  moving_variance`` (``num_batches_tracked`` is dropped);
- box deltas: torchvision predicts ``(dx, dy, dw, dh)`` per anchor / class, tf_rcnn
  ``(dy, dx, dh, dw)``: the output units of the RPN ``bbox_pred`` and the box predictor are
  reordered within each group of four;
- the first fc of the box head reads torchvision's NCHW flatten (index ``c*S*S + y*S + x``);
  tf_rcnn flattens NHWC (``(y*S + x)*C + c``): its input rows are reordered, so the same
  weights give the same numbers;
- the mask predictor's 91 channels lose the background one (tf_rcnn predicts K masks).

Old and new key spellings load alike (torchvision renamed ``inner_blocks.0.weight`` to
``inner_blocks.0.0.weight``, ``rpn.head.conv.weight`` to ``rpn.head.conv.0.0.weight`` and
``mask_head.mask_fcn1.weight`` to ``mask_head.0.0.weight``); a checkpoint wrapped under
``"model"`` or ``"state_dict"`` is unwrapped. Anything missing, unexpected or of the wrong
shape is an error listing the keys, and the parameter count is checked against the
architecture's.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

import keras
import numpy as np

from tf_rcnn.data.coco import COCO_CATEGORIES
from tf_rcnn.formats.torch_checkpoint import load_state_dict
from tf_rcnn.label_map import PLACEHOLDER_PREFIX, LabelMap
from tf_rcnn.models.backbones.torchvision_resnet import (
    Rule,
    WeightsMismatchError,
    conv_rules,
    norm_rules,
    resnet50_rules,
    same,
    strip_module_prefix,
    torch_conv,
    torch_linear,
)
from tf_rcnn.models.serialization import weight_key

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")


@dataclasses.dataclass(frozen=True)
class Arch:
    """A torchvision detector: its recipe and what its state dict holds.

    Attributes:
        recipe: file name (without ``.py``) of the recipe in ``configs/``.
        masks: the state dict has a mask head and predictor.
        v2: the ``*_v2`` layout (BatchNorm in the FPN and heads, two RPN convs, 4conv1fc).
        frozen_backbone_bn: the backbone's BatchNorms are ``FrozenBatchNorm2d`` (buffers, not
            parameters: they do not count in :attr:`num_parameters`).
        num_parameters: ``sum(p.numel() for p in model.parameters())`` of the torchvision model
            with 91 classes.
    """

    recipe: str
    masks: bool
    v2: bool
    frozen_backbone_bn: bool
    num_parameters: int


ARCHS: dict[str, Arch] = {
    "fasterrcnn_resnet50_fpn": Arch("torchvision_fasterrcnn_resnet50_fpn", False, False, True,
                                    41_755_286),
    "maskrcnn_resnet50_fpn": Arch("torchvision_maskrcnn_resnet50_fpn", True, False, True,
                                  44_401_393),
    "fasterrcnn_resnet50_fpn_v2": Arch("torchvision_fasterrcnn_resnet50_fpn_v2", False, True,
                                       False, 43_712_278),
    "maskrcnn_resnet50_fpn_v2": Arch("torchvision_maskrcnn_resnet50_fpn_v2", True, True, False,
                                     46_359_409),
}

# torchvision's detection outputs: background + COCO category ids 1..90.
NUM_CLASSES = 90
# (dx, dy, dw, dh) -> (dy, dx, dh, dw): tf_rcnn's coordinate j is torchvision's _YXHW[j].
_YXHW = (1, 0, 3, 2)


def arch_of(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"Unknown torchvision architecture {name!r} (--arch); choose one of "
                         f"{sorted(ARCHS)}.")
    return ARCHS[name]


def recipe_path(name: str) -> str:
    """``configs/<recipe>.py`` of a torchvision architecture."""
    return os.path.join(CONFIGS_DIR, arch_of(name).recipe + ".py")


def coco_label_map() -> LabelMap:
    """Class c = COCO category id c for c in 1..90, with COCO's names (``unused_<id>`` for the
    ten ids COCO does not use)."""
    names = dict(COCO_CATEGORIES)
    ids = list(range(1, NUM_CLASSES + 1))
    return LabelMap(ids, [names.get(i, f"{PLACEHOLDER_PREFIX}{i}") for i in ids])


# ----------------------------------------------------------------------------- key spellings


_OLD_SPELLINGS = (
    # FPN blocks became Conv2dNormActivation (torchvision 0.13): inner_blocks.i -> .i.0
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), r"\1.0.\2"),
    # RPNHead.conv became a Sequential of Conv2dNormActivation: conv -> conv.0.0
    (re.compile(r"^(rpn\.head\.conv)\.(weight|bias)$"), r"\1.0.0.\2"),
)
_MASK_FCN = re.compile(r"^(roi_heads\.mask_head)\.mask_fcn(\d+)\.(weight|bias)$")


def normalize_keys(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict with torchvision's old key spellings renamed to the current ones."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in _OLD_SPELLINGS:
            key = pattern.sub(replacement, key)
        match = _MASK_FCN.match(key)
        if match:  # mask_fcn<i> -> <i - 1>.0
            key = f"{match.group(1)}.{int(match.group(2)) - 1}.0.{match.group(3)}"
        if key in out:
            raise WeightsMismatchError(f"The state dict spells {key!r} twice (old and new names).")
        out[key] = value
    return out


# ----------------------------------------------------------------------------- conversions


def _deconv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # [in, out, kh, kw] -> [kh, kw, out, in]


def _yxhw_units(x: np.ndarray, axis: int) -> np.ndarray:
    """Reorders groups of four output units from (dx, dy, dw, dh) to (dy, dx, dh, dw)."""
    n = x.shape[axis]
    order = np.arange(n).reshape(-1, 4)[:, _YXHW].reshape(-1)
    return np.take(x, order, axis=axis)


def _nchw_rows(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Dense kernel rows from torchvision's NCHW flatten order to tf_rcnn's NHWC order."""
    size = int(round(np.sqrt(kernel.shape[0] // channels)))
    c, y, x = np.meshgrid(np.arange(channels), np.arange(size), np.arange(size), indexing="ij")
    torch_index = (c * size * size + y * size + x)  # [C, S, S]
    # Row (y*S + x)*C + c of ours is row c*S*S + y*S + x of torchvision's.
    ours = np.transpose(torch_index, (1, 2, 0)).reshape(-1)
    return kernel[ours]


def detector_rules(arch: Arch, num_classes: int = NUM_CLASSES) -> dict[str, Rule]:
    """Every torchvision state-dict key of ``arch`` -> ``(tf_rcnn weight key, conversion)``."""
    rules = resnet50_rules(prefix="backbone.body.")
    v2 = arch.v2
    for j in range(4):  # FPN on C2..C5 -> P2..P5
        for torch_name, ours in (("inner_blocks", "fpn_lateral"), ("layer_blocks", "fpn_output")):
            t = f"backbone.fpn.{torch_name}.{j}"
            conv_rules(f"{t}.0", f"fpn/{ours}{j + 2}", rules, bias=not v2)
            if v2:
                norm_rules(f"{t}.1", f"fpn/{ours}{j + 2}_norm", rules)
    for i in range(2 if v2 else 1):
        name = "conv" if i == 0 else f"conv{i + 1}"
        conv_rules(f"rpn.head.conv.{i}.0", f"rpn/rpn_head/{name}", rules)
    conv_rules("rpn.head.cls_logits", "rpn/rpn_head/objectness", rules)
    rules["rpn.head.bbox_pred.weight"] = ("rpn/rpn_head/deltas/kernel",
                                          lambda w: _yxhw_units(torch_conv(w), axis=3))
    rules["rpn.head.bbox_pred.bias"] = ("rpn/rpn_head/deltas/bias",
                                        lambda b: _yxhw_units(b, axis=0))
    head = "roi_heads/box_head"
    if v2:
        for i in range(4):
            conv_rules(f"roi_heads.box_head.{i}.0", f"{head}/conv{i + 1}", rules, bias=False)
            norm_rules(f"roi_heads.box_head.{i}.1", f"{head}/conv{i + 1}_norm", rules)
        fcs = [("roi_heads.box_head.5", 256)]
    else:
        fcs = [("roi_heads.box_head.fc6", 256), ("roi_heads.box_head.fc7", None)]
    for i, (t, channels) in enumerate(fcs):
        if channels is None:
            rules[f"{t}.weight"] = (f"{head}/fc{i + 1}/kernel", torch_linear)
        else:  # the first fc reads the flattened 7x7xC RoI map
            rules[f"{t}.weight"] = (f"{head}/fc{i + 1}/kernel",
                                    lambda w, c=channels: _nchw_rows(torch_linear(w), c))
        rules[f"{t}.bias"] = (f"{head}/fc{i + 1}/bias", same)
    p = "roi_heads/box_predictor"
    rules["roi_heads.box_predictor.cls_score.weight"] = (f"{p}/class_logits/kernel", torch_linear)
    rules["roi_heads.box_predictor.cls_score.bias"] = (f"{p}/class_logits/bias", same)
    rules["roi_heads.box_predictor.bbox_pred.weight"] = (
        f"{p}/box_deltas/kernel", lambda w: _yxhw_units(torch_linear(w), axis=1))
    rules["roi_heads.box_predictor.bbox_pred.bias"] = (
        f"{p}/box_deltas/bias", lambda b: _yxhw_units(b, axis=0))
    if arch.masks:
        m = "roi_heads/mask_head"
        for i in range(4):
            conv_rules(f"roi_heads.mask_head.{i}.0", f"{m}/mask_fcn{i + 1}", rules, bias=not v2)
            if v2:
                norm_rules(f"roi_heads.mask_head.{i}.1", f"{m}/mask_fcn{i + 1}_norm", rules)
        rules["roi_heads.mask_predictor.conv5_mask.weight"] = (f"{m}/deconv/kernel", _deconv)
        rules["roi_heads.mask_predictor.conv5_mask.bias"] = (f"{m}/deconv/bias", same)
        # 91 channels (background first) -> K = 90 class masks.
        rules["roi_heads.mask_predictor.mask_fcn_logits.weight"] = (
            f"{m}/mask_logits/kernel", lambda w: torch_conv(w)[..., 1:])
        rules["roi_heads.mask_predictor.mask_fcn_logits.bias"] = (
            f"{m}/mask_logits/bias", lambda b: b[1:])
    return rules


def _is_buffer(key: str, arch: Arch) -> bool:
    """Keys that are not parameters in torchvision (BN statistics; FrozenBN's affine too)."""
    if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
        return True
    if arch.frozen_backbone_bn and key.startswith("backbone.body."):
        return bool(re.search(r"(\.bn\d|downsample\.1)\.(weight|bias)$", key))
    return False


def count_parameters(state: Mapping[str, np.ndarray], arch: Arch) -> int:
    """What ``sum(p.numel() for p in model.parameters())`` gives for ``state``'s model."""
    return int(sum(np.asarray(v).size for k, v in state.items() if not _is_buffer(k, arch)))


def convert_state_dict(state: Mapping[str, np.ndarray], model: keras.Model, arch_name: str,
                       source: str = "state dict") -> list[tuple[object, np.ndarray]]:
    """Checks ``state`` against ``arch_name`` and ``model`` and converts every tensor.

    Args:
        state: a torchvision state dict as NumPy arrays (any key spelling, optionally under a
            ``module.`` prefix).
        model: the built tf_rcnn model of the architecture's recipe.
        arch_name: a key of :data:`ARCHS`.
        source: file name used in errors.

    Returns:
        ``[(model variable, value), ...]`` for every weight of ``model``.

    Raises:
        WeightsMismatchError: keys missing or unexpected, wrong shapes, or the wrong parameter
            count; every offending key is listed.
    """
    arch = arch_of(arch_name)
    state = normalize_keys(strip_module_prefix(dict(state)))
    rules = detector_rules(arch)
    variables = {weight_key(v): v for v in model.weights}
    missing = sorted(k for k in rules if k not in state)
    unexpected = sorted(k for k in state
                        if k not in rules and not k.endswith("num_batches_tracked"))
    problems = []
    if missing:
        problems.append(f"missing from {source} ({len(missing)}): " + ", ".join(missing[:20])
                        + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append(f"in {source} but not in {arch_name} ({len(unexpected)}): "
                        + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else ""))
    pairs, wrong = [], []
    for key, (ours, convert) in rules.items():
        if key not in state:
            continue
        if ours not in variables:
            raise WeightsMismatchError(
                f"tf_rcnn's model has no weight {ours!r} for {key!r}; the recipe does not build "
                f"{arch_name} (check configs/{arch.recipe}.py).")
        variable = variables[ours]
        try:
            value = np.asarray(convert(np.asarray(state[key], np.float32)), np.float32)
        except (ValueError, IndexError):  # e.g. a 2-D array where a conv kernel belongs
            value = None
        if value is None or tuple(value.shape) != tuple(variable.shape):
            got = "not convertible" if value is None else list(value.shape)
            wrong.append(f"{key} {list(np.shape(state[key]))} -> {ours} {got} "
                         f"(model {list(variable.shape)})")
            continue
        pairs.append((variable, value))
    if wrong:
        problems.append(f"wrong shape ({len(wrong)}): " + "; ".join(wrong[:10]))
    if problems:
        raise WeightsMismatchError(f"{source} does not fit torchvision's {arch_name}:\n  "
                           + "\n  ".join(problems))
    count = count_parameters(state, arch)
    if count != arch.num_parameters:
        raise WeightsMismatchError(
            f"{source} has {count:,} parameters; torchvision's {arch_name} with 91 classes has "
            f"{arch.num_parameters:,}. Is it another architecture or class count?")
    converted = {ours for ours, _ in rules.values()}
    left = sorted(set(variables) - converted)
    if left:
        raise WeightsMismatchError(
            f"tf_rcnn's model has weights no torchvision key fills: {left[:10]}; the recipe "
            f"does not build {arch_name}.")
    return pairs


def load_into(model: keras.Model, path: str, arch_name: str) -> None:
    """Reads a torchvision checkpoint (``.pth`` zip or legacy, ``.safetensors``, ``.npz``) and
    writes its weights into ``model`` (built from the architecture's recipe)."""
    state = load_state_dict(path)
    for variable, value in convert_state_dict(state, model, arch_name, source=path):
        variable.assign(value)
