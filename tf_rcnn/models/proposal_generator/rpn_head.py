"""Region Proposal Network head (Ren et al., 2015, "Faster R-CNN", Sec. 3.1).

Conventions:
    Feature maps are NHWC float32, a list ordered fine to coarse. Outputs are flattened over
    levels in the anchor order of docs/design.md: within a level ``index = (y * W + x) * A + a``
    (row-major cells, then anchors), levels concatenated fine to coarse. Deltas are encoded
    ``(dy, dx, dh, dw)`` relative to the anchor at the same index (RPN weights (1, 1, 1, 1)).

Shape shorthand:
    B batch, L levels, H_l/W_l size of level l, C channels, A anchors per cell,
    N = sum_l H_l * W_l * A anchors.

Naming:
    ``objectness_logits``: ``[B, N]`` logits in (-inf, inf), positive means "object";
    ``deltas``: ``[B, N, 4]`` encoded box regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf


def _init() -> dict[str, Any]:
    """Normal(0, 0.01) weights and zero bias (Faster R-CNN, Sec. 3.1.3).

    A fresh initializer per layer: one unseeded Keras initializer instance reused across layers
    returns the same numbers every call, which would make the three convs start correlated.
    """
    return {"kernel_initializer": keras.initializers.RandomNormal(stddev=0.01),
            "bias_initializer": "zeros"}


@keras.saving.register_keras_serializable(package="tf_rcnn")
class RPNHead(keras.layers.Layer):
    """3x3 conv(s) + ReLU and two sibling 1x1 convs, shared by every pyramid level.

    Init: weights normal with std 0.01, zero bias (Faster R-CNN, Sec. 3.1.3).

    Args:
        num_anchors: A, anchors per cell (the same on every level).
        channels: width of the 3x3 conv(s); ``None`` uses the input channel count.
        num_convs: 3x3 conv + ReLU layers before the sibling convs (1 in the paper, 2 in
            torchvision's ``*_fpn_v2`` models); the first is ``conv``, the next ``conv2``...
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        features: list of L maps ``[B, H_l, W_l, C]`` float32, fine to coarse, same C.

    Returns:
        ``(objectness_logits [B, N] float32, deltas [B, N, 4] float32)``.
    """

    def __init__(self, num_anchors: int, channels: int | None = None, num_convs: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(num_anchors) <= 0:
            raise ValueError(f"num_anchors must be a positive int, got {num_anchors}.")
        if channels is not None and int(channels) <= 0:
            raise ValueError(f"channels must be a positive int or None, got {channels}.")
        if int(num_convs) < 1:
            raise ValueError(f"num_convs (model.rpn.head_num_convs) must be >= 1, got "
                             f"{num_convs}.")
        self.num_anchors = int(num_anchors)
        self.channels = None if channels is None else int(channels)
        self.num_convs = int(num_convs)
        self.objectness_conv = keras.layers.Conv2D(self.num_anchors, 1, name="objectness",
                                                   **_init())
        self.deltas_conv = keras.layers.Conv2D(self.num_anchors * 4, 1, name="deltas",
                                               **_init())
        self.conv = None
        self.extra_convs = []

    def build(self, input_shape: Sequence[tuple]) -> None:
        if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(
            input_shape[0], (list, tuple)
        ):
            raise ValueError(
                "RPNHead expects a list of feature maps [B, H_l, W_l, C] (fine to coarse); "
                f"got input shape {input_shape}. Wrap a single map in a list."
            )
        in_channels = {s[-1] for s in input_shape}
        if len(in_channels) != 1 or None in in_channels:
            raise ValueError(
                f"RPNHead is shared over levels, so all levels need the same known channel "
                f"count; got {sorted(in_channels, key=str)}."
            )
        in_ch = in_channels.pop()
        width = self.channels or in_ch
        self.conv = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                        name="conv", **_init())
        self.conv.build((None, None, None, in_ch))
        self.extra_convs = [
            keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                name=f"conv{i + 2}", **_init())
            for i in range(self.num_convs - 1)
        ]
        for conv in self.extra_convs:
            conv.build((None, None, None, width))
        self.objectness_conv.build((None, None, None, width))
        self.deltas_conv.build((None, None, None, width))

    def call(self, features: Sequence[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        logits_per_level, deltas_per_level = [], []
        for x in features:
            shape = tf.shape(x)
            batch, cells = shape[0], shape[1] * shape[2]
            hidden = self.conv(x)
            for conv in self.extra_convs:
                hidden = conv(hidden)
            # [B, H, W, A] -> [B, H*W*A]: row-major (y, x) then anchor a, so the flat index is
            # (y * W + x) * A + a.
            logits_per_level.append(tf.reshape(self.objectness_conv(hidden),
                                               [batch, cells * self.num_anchors]))
            # [B, H, W, A*4] -> [B, H*W*A, 4]: channel a*4 + j holds coordinate j of anchor a.
            deltas_per_level.append(tf.reshape(self.deltas_conv(hidden),
                                               [batch, cells * self.num_anchors, 4]))
        return tf.concat(logits_per_level, axis=1), tf.concat(deltas_per_level, axis=1)

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple[tuple, tuple]:
        total = 0
        for s in input_shape:
            if s[1] is None or s[2] is None or total is None:
                total = None
            else:
                total += s[1] * s[2] * self.num_anchors
        batch = input_shape[0][0]
        return (batch, total), (batch, total, 4)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"num_anchors": self.num_anchors, "channels": self.channels,
                       "num_convs": self.num_convs})
        return config
