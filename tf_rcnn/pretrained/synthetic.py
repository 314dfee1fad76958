"""Deterministic synthetic state dicts for torchvision's R-CNN detectors, made with NumPy alone.

tf_rcnn's tests compare its detectors with torchvision's without torch: the fixture generator
``benchmarks/peers/make_torchvision_fixtures.py`` loads the weights made here into torchvision and
records what torchvision computes, and a test rebuilds the very same weights here and checks that
tf_rcnn computes the same. Random weights as a framework initialises them would make a test that
passes trivially (no detection survives the score threshold, every RPN proposal is the anchor it
came from); the rules below are chosen so that a ResNet-50-FPN Faster/Mask R-CNN (v1 and v2) with
these weights keeps every stage well scaled and busy on a natural-looking image: no NaN/inf, no
all-zero feature map, FPN maps with a standard deviation of order one, RPN proposals that move
away from their anchors, and dozens of detections per image above the 0.05 score threshold.

This module imports only the standard library and NumPy, so a script can load it from its file
path (``importlib.util.spec_from_file_location``) in an environment that has torch but not
TensorFlow, or TensorFlow but not torch.

Inputs:

* ``spec``: a list of ``(key, shape, dtype_name)`` entries, the state dict's keys in order, their
  shapes and NumPy dtype names (``"float32"``, ``"int64"``). :func:`spec_of` makes one from a
  dict of arrays; the fixture files under ``tests/fixtures/torchvision`` store the spec of each
  torchvision model.
* ``seed``: a non-negative integer.

Determinism: the array of a key is drawn from ``np.random.default_rng([seed, crc32(key)])``
(``zlib.crc32`` of the key's UTF-8 bytes), in float64, then cast to the entry's dtype. It
depends on the key, its shape and dtype, the seed, and on one fact about the spec as a whole,
whether the key's module is a normalisation layer (below); not on the order of the spec nor on
the other keys' values. NumPy's ``Generator`` streams (PCG64 with ``SeedSequence``) are stable
across NumPy versions for ``standard_normal`` and ``random`` in float64, which are the only draws
used.

Rules. ``module`` is the key without its last dotted part, ``name`` the last part. A module is a
*normalisation layer* (``BatchNorm2d`` or ``FrozenBatchNorm2d``) when the spec also has
``<module>.running_var``. ``N(0, s)`` is a normal draw with standard deviation ``s``, ``U(a, b)``
a uniform draw.

1. ``name == "num_batches_tracked"``, and any integer or bool entry: zeros.
2. Normalisation layers (eval mode computes ``(x - running_mean) / sqrt(running_var + eps) *
   weight + bias``):

   * ``running_mean``: ``N(0, 0.1)``; ``running_var``: ``U(0.5, 1.5)`` (never near zero, so
     eps = 0, what torchvision's v1 COCO weights use, is safe);
   * ``bias`` (beta): ``N(0, 0.05)``;
   * ``weight`` (gamma): ``U(0.8, 1.2)`` (:data:`NORM_GAMMA`), except for the last
     normalisation of a ResNet bottleneck's residual branch, ``*.bn3``, whose output is added
     to the identity path: ``U(0.2, 0.4)`` (:data:`RESIDUAL_GAMMA`). Without that the
     variance grows at each of ResNet-50's 16 additions and ``layer4`` ends up orders of
     magnitude above ``layer1``; with it every stage's output (``layer1`` to ``layer4``) has a
     mean of about 0.4 and a standard deviation of about 0.55-0.75. (The projection
     shortcut's ``downsample.1`` is an ordinary one: it carries the main path at the start of
     each stage.)
3. Convolution weights (4-D): He-normal on fan in, ``N(0, sqrt(gain / fan_in))``, then centred
   (rule 6). ``fan_in`` is ``in_channels * kh * kw`` = ``shape[1] * shape[2] * shape[3]`` for
   ``Conv2d`` (layout ``(out, in, kh, kw)``). The Mask R-CNN predictor's ``*.conv5_mask.weight``
   is a ``ConvTranspose2d`` (layout ``(in, out, kh, kw)``, kernel = stride = 2, so every output
   pixel sees exactly one tap of each input channel): its ``fan_in`` is ``shape[0]``.
   ``gain`` is 2 (a ReLU follows) except for the convolutions that feed no ReLU:

   * FPN lateral convolutions (``backbone.fpn.inner_blocks.<i>.*``): gain 1; FPN output
     convolutions (``backbone.fpn.layer_blocks.<i>.*``): gain ``FPN_LEVEL_GAIN ** i``
     (:data:`FPN_LEVEL_GAIN` = 2, so gains 1, 2, 4, 8 for levels '0' to '3'). The coarser
     levels come out of the top-down sum with a smaller spread; this evens the FPN maps' standard
     deviations out to about 1.0-1.6 on every level (v1 and v2), so the RPN, whose head is
     shared by the levels, scores the anchors of all levels alike and the final proposals
     include large boxes that RoIAlign takes from the coarser levels;
   * ``*.mask_fcn_logits.weight``: :data:`MASK_LOGIT_GAIN` = 4, so the 28x28 mask
     probabilities spread over (0, 1) around 0.5 (standard deviation 0.25-0.3);
   * ``rpn.head.cls_logits.weight`` (objectness): :data:`RPN_LOGIT_GAIN` = 1, logits spread
     by about 1 on every level, so sigmoid scores do not saturate and the per-level top-n and NMS
     choose proposals all over the image;
   * ``rpn.head.bbox_pred.weight`` (anchor deltas): :data:`RPN_DELTA_GAIN` = 0.01, deltas of
     about 0.1: proposals move off their anchors by a fraction of their size.
4. Linear weights (2-D, layout ``(out, in)``): ``N(0, sqrt(2 / in))``, then centred (rule 6),
   except the box predictor's (``roi_heads.box_predictor.*``, ``FastRCNNPredictor``):

   * ``cls_score.weight``: ``N(0, CLS_SCORE_STD / sqrt(in))`` with :data:`CLS_SCORE_STD` = 2,
     then centred; ``cls_score.bias``: ``N(0, 0.01)`` plus :data:`BACKGROUND_BIAS` = 10.75 on
     entry 0, the background class. Class scores are a softmax over 91 classes; the spread lifts
     some (proposal, class) pairs above torchvision's 0.05 threshold and the background bias
     keeps them few, so that each test image keeps a few dozen detections after the per-class
     NMS, below the cap of 100, with 17-32 distinct labels and scores from 0.05 up to 0.45-0.86.
   * ``bbox_pred.weight``: ``N(0, BOX_DELTA_STD / sqrt(in))``, :data:`BOX_DELTA_STD` = 1, then
     centred. Its outputs are divided by the box coder weights (10, 10, 5, 5): boxes move by
     about a tenth of the proposal's size.
5. Every other ``bias`` (convolutions, linear layers): ``N(0, 0.01)``. Anything else no rule
   names (a float entry that is neither a weight of 2 or 4 dimensions nor a bias nor part of a
   normalisation layer): ``N(0, 0.1)``.
6. Centring: every convolution and linear weight (rules 3 and 4) has its mean over the fan-in
   axes subtracted (axes 1, 2, 3 of a ``Conv2d`` weight, axis 1 of a ``Linear`` weight, axis 0
   of the ``ConvTranspose2d`` weight), so every output unit sums its inputs with zero total
   weight. A random network otherwise passes each channel's mean (positive, after a ReLU) on
   as a fixed offset that grows into a class-score offset shared by all proposals of an image:
   a handful of classes would win everywhere. Centred filters respond to image structure, and
   detections spread over many classes.

The constants were tuned on torchvision 0.29.1's four ResNet-50-FPN detectors with
``min_size=320, max_size=512`` on the two synthetic images of the fixtures (see
``benchmarks/peers/make_torchvision_fixtures.py``, which checks the outcome).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "BACKGROUND_BIAS",
    "BOX_DELTA_STD",
    "CLS_SCORE_STD",
    "MASK_LOGIT_GAIN",
    "NORM_GAMMA",
    "RESIDUAL_GAMMA",
    "RPN_DELTA_GAIN",
    "RPN_LOGIT_GAIN",
    "Spec",
    "key_seed",
    "spec_of",
    "synthetic_array",
    "synthetic_state_dict",
]

#: One state-dict entry: key, shape, NumPy dtype name.
Spec = Sequence[tuple[str, Sequence[int], str]]

#: Gamma range of ordinary normalisation layers.
NORM_GAMMA = (0.8, 1.2)
#: Gamma range of the last normalisation of a bottleneck's residual branch (``bn3``).
RESIDUAL_GAMMA = (0.2, 0.4)
#: Variance gain of the RPN objectness convolution (fan-in scaled).
RPN_LOGIT_GAIN = 1.0
#: Variance gain of the RPN anchor-delta convolution (fan-in scaled).
RPN_DELTA_GAIN = 0.01
#: Logit spread of the box predictor's class scores (std of the weight times sqrt(in)).
CLS_SCORE_STD = 2.0
#: Added to the background (class 0) bias of the box predictor's class scores.
BACKGROUND_BIAS = 10.75
#: Variance gain of the mask predictor's per-class logits (fan-in scaled).
MASK_LOGIT_GAIN = 4.0
#: Variance gain of the FPN output convolution of level i is FPN_LEVEL_GAIN ** i.
FPN_LEVEL_GAIN = 2.0
#: Spread of the box predictor's raw box deltas (std of the weight times sqrt(in)).
BOX_DELTA_STD = 1.0

_NO_RELU_CONVS = ("backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks.")


def key_seed(key: str) -> int:
    """The per-key part of the seed: ``zlib.crc32`` of the key's UTF-8 bytes."""
    return zlib.crc32(key.encode("utf-8"))


def _split(key: str) -> tuple[str, str]:
    module, _, name = key.rpartition(".")
    return module, name


def _is_residual_norm(module: str) -> bool:
    last = module.rpartition(".")[2]
    return last == "bn3"


def _is_transposed(key: str) -> bool:
    return key.endswith("conv5_mask.weight")


def _fan_in_axes(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4 and _is_transposed(key):
        return (0,)
    return tuple(range(1, len(shape)))


def _conv_fan_in(key: str, shape: tuple[int, ...]) -> int:
    return int(np.prod([shape[a] for a in _fan_in_axes(key, shape)]))


def synthetic_array(
    key: str, shape: Sequence[int], dtype_name: str, seed: int, is_norm: bool = False
) -> np.ndarray:
    """The array :func:`synthetic_state_dict` gives ``key`` (see the module docstring's rules).

    ``is_norm`` tells whether the key's module is a normalisation layer (rule 2); the other
    rules follow from the key, shape and dtype alone.
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype_name)
    module, name = _split(key)
    if name == "num_batches_tracked" or not np.issubdtype(dtype, np.floating):
        return np.zeros(shape, dtype=dtype)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rng = np.random.default_rng([int(seed), key_seed(key)])

    def normal(std: float) -> np.ndarray:
        return rng.standard_normal(shape) * std

    def uniform(low: float, high: float) -> np.ndarray:
        return low + (high - low) * rng.random(shape)

    if is_norm:
        if name == "running_mean":
            values = normal(0.1)
        elif name == "running_var":
            values = uniform(0.5, 1.5)
        elif name == "bias":
            values = normal(0.05)
        elif name == "weight":
            values = uniform(*(RESIDUAL_GAMMA if _is_residual_norm(module) else NORM_GAMMA))
        else:
            values = normal(0.1)
    elif module == "roi_heads.box_predictor.cls_score":
        if name == "weight" and len(shape) == 2:
            values = normal(CLS_SCORE_STD / np.sqrt(shape[1]))
        else:
            values = normal(0.01)
            if name == "bias" and values.size:
                values.reshape(-1)[0] += BACKGROUND_BIAS
    elif module == "roi_heads.box_predictor.bbox_pred" and name == "weight" and len(shape) == 2:
        values = normal(BOX_DELTA_STD / np.sqrt(shape[1]))
    elif name == "weight" and len(shape) == 4:
        fan_in = max(_conv_fan_in(key, shape), 1)
        if module == "rpn.head.cls_logits":
            gain = RPN_LOGIT_GAIN
        elif module == "rpn.head.bbox_pred":
            gain = RPN_DELTA_GAIN
        elif module.endswith("mask_fcn_logits"):
            gain = MASK_LOGIT_GAIN
        elif key.startswith(_NO_RELU_CONVS):
            gain = 1.0
            if key.startswith("backbone.fpn.layer_blocks."):
                gain = FPN_LEVEL_GAIN ** int(key.split(".")[3])
        else:
            gain = 2.0
        values = normal(np.sqrt(gain / fan_in))
    elif name == "weight" and len(shape) == 2:
        values = normal(np.sqrt(2.0 / max(shape[1], 1)))
    elif name == "bias":
        values = normal(0.01)
    else:
        values = normal(0.1)
    if name == "weight" and len(shape) >= 2 and not is_norm:
        values = values - values.mean(axis=_fan_in_axes(key, shape), keepdims=True)
    return np.ascontiguousarray(values, dtype=dtype)


def _norm_modules(keys: Iterable[str]) -> set[str]:
    return {module for module, name in map(_split, keys) if name == "running_var"}


def synthetic_state_dict(spec: Spec, seed: int) -> dict[str, np.ndarray]:
    """A state dict with the keys, shapes and dtypes of ``spec``, filled by the module's rules.

    The result keeps the spec's key order. Each array depends only on its key, shape, dtype,
    ``seed`` and whether its module is a normalisation layer, never on the order of ``spec``.
    """
    entries = [(str(k), tuple(int(s) for s in shape), str(dt)) for k, shape, dt in spec]
    keys = [k for k, _, _ in entries]
    if len(set(keys)) != len(keys):
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"spec has duplicate keys: {duplicates[:5]}")
    norms = _norm_modules(keys)
    return {
        key: synthetic_array(key, shape, dtype, seed, is_norm=_split(key)[0] in norms)
        for key, shape, dtype in entries
    }


def spec_of(state_dict: Mapping[str, np.ndarray]) -> list[tuple[str, tuple[int, ...], str]]:
    """The ``(key, shape, dtype_name)`` spec of a dict of NumPy arrays (or array-likes), in its
    key order."""
    spec = []
    for key, value in state_dict.items():
        array = np.asarray(value)
        spec.append((str(key), tuple(int(s) for s in array.shape), array.dtype.name))
    return spec
