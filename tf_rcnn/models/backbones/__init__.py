"""Backbones: images ``[B, H, W, 3]`` float32 (normalised) -> dict stage name -> feature map.

Every backbone exposes ``output_strides: dict[str, int]`` and ``output_channels: dict[str, int]``
keyed like its outputs (``"C<l>"`` has stride ``2**l``). ``build_backbone(name, **kwargs)`` maps
a config name to a constructor.
"""

from __future__ import annotations

from typing import Any

import keras

from tf_rcnn.layers.normalization import FrozenBatchNormalization
from tf_rcnn.models.backbones.resnet import ResNet, make_res5_head
from tf_rcnn.models.backbones.tiny import TinyBackbone
from tf_rcnn.models.backbones.vgg import VGG16

__all__ = [
    "BACKBONES",
    "FrozenBatchNormalization",
    "ResNet",
    "TinyBackbone",
    "VGG16",
    "build_backbone",
    "make_res5_head",
]


def _tiny(**kwargs: Any) -> keras.Model:
    return TinyBackbone(**kwargs)


def _resnet50(**kwargs: Any) -> keras.Model:
    return ResNet(depth=50, **kwargs)


def _resnet101(**kwargs: Any) -> keras.Model:
    return ResNet(depth=101, **kwargs)


def _vgg16(**kwargs: Any) -> keras.Model:
    return VGG16(**kwargs)


BACKBONES = {"resnet50": _resnet50, "resnet101": _resnet101, "vgg16": _vgg16, "tiny": _tiny}


def build_backbone(name: str, **kwargs: Any) -> keras.Model:
    """Build a backbone by name.

    Args:
        name: one of ``BACKBONES`` (``"resnet50"``, ``"resnet101"``, ``"vgg16"``, ``"tiny"``).
        **kwargs: constructor arguments of that backbone (e.g. ``freeze_at``, ``weights``).

    Returns:
        A ``keras.Model`` mapping images to a dict of feature maps.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}.")
    return BACKBONES[name](**kwargs)
