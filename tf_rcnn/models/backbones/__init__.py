"""Backbones: images ``[B, H, W, 3]`` float32 (normalised) -> dict stage name -> feature map.

Every backbone exposes ``output_strides: dict[str, int]`` and ``output_channels: dict[str, int]``
keyed like its outputs (``"C<l>"`` has stride ``2**l``). ``build_backbone(name, **kwargs)`` maps
a config name to a constructor.
"""

from __future__ import annotations

from typing import Any

import keras

from tf_rcnn.models.backbones.frozen_bn import FrozenBatchNormalization
from tf_rcnn.models.backbones.tiny import TinyBackbone

__all__ = ["BACKBONES", "FrozenBatchNormalization", "TinyBackbone", "build_backbone"]


def _tiny(**kwargs: Any) -> keras.Model:
    return TinyBackbone(**kwargs)


BACKBONES = {"tiny": _tiny}


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
