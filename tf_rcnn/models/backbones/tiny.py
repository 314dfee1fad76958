"""A small, fast convolutional backbone for tests and the CPU demo.

Conventions:
    Input images are ``[B, H, W, 3]`` float32, already normalised by the data pipeline, NHWC.
    Outputs are a dict stage name -> feature map, ``"C2".."C5"`` at strides 4, 8, 16, 32
    (``C_l`` has stride ``2**l``). H and W are dynamic; the data pipeline pads images to a multiple
    of the coarsest stride (32) so that every stride divides the input exactly. Other sizes work
    ("same" padding gives ``ceil(H / stride)`` rows) but the maps then cover a little more than
    the image. With ``dilate_c5=True`` C5 keeps stride 16 (R-FCN's dilated conv5, see below).

Shape shorthand:
    B batch, H/W input height/width, C channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf


def _num_groups(channels: int, max_groups: int = 8) -> int:
    """Largest group count <= ``max_groups`` dividing ``channels`` (GroupNorm needs a divisor)."""
    return math.gcd(channels, max_groups)


@keras.saving.register_keras_serializable(package="tf_rcnn")
class TinyBackbone(keras.Model):
    """Five stride-2 stages of 3x3 conv + GroupNorm + ReLU giving C2..C5.

    Layout: a stem (3x3 conv, stride 2) then, for each of C2..C5, a stride-2 3x3 conv and a
    stride-1 3x3 conv, every conv followed by GroupNorm and ReLU. With the default widths it has
    about 0.3M parameters and runs a 128x128 batch of 8 in a few milliseconds per image on CPU.

    Why GroupNorm: the demo trains from scratch with a handful of images per batch, where
    BatchNorm's batch statistics are noisy and differ between training and inference; GroupNorm
    (Wu & He, 2018) normalises each image on its own, so it trains from random init as fast as
    BatchNorm at large batch and behaves identically in ``predict``. Without any normalisation a
    from-scratch net of this depth trains noticeably slower.

    Args:
        widths: channels of C2, C3, C4, C5 (four positive ints).
        dilate_c5: C5's first conv has stride 1 and both its 3x3 convs dilation 2, so C5 has
            stride 16 like C4 (the R-FCN change to ResNet's conv5, Dai et al. 2016 Sec. 2.2;
            the same option as ``ResNet(dilate_c5=True)``), giving the R-FCN demo a stride-16
            map with C5's depth and receptive field.
        **kwargs: forwarded to ``keras.Model`` (``name``, ``trainable``, ...).

    Call arguments:
        images: ``[B, H, W, 3]`` float32 normalised images.
        training: unused by GroupNorm; accepted for the Keras API.

    Returns:
        dict ``{"C2": [B, H/4, W/4, widths[0]], ..., "C5": [B, H/32, W/32, widths[3]]}``
        (C5 ``[B, H/16, W/16, widths[3]]`` with ``dilate_c5``).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), dilate_c5: bool = False,
                 **kwargs: Any) -> None:
        kwargs.setdefault("name", "tiny_backbone")
        super().__init__(**kwargs)
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) <= 0:
            raise ValueError(
                f"widths must be four positive channel counts for C2..C5, got {widths}."
            )
        self.widths = widths
        self.dilate_c5 = bool(dilate_c5)
        self.stem = self._conv_block(widths[0], 2, "stem")
        self.stages = []
        for level, width in zip(range(2, 6), widths, strict=True):
            dilated = self.dilate_c5 and level == 5
            self.stages.append(
                [self._conv_block(width, 1 if dilated else 2, f"c{level}_down",
                                  dilation=2 if dilated else 1),
                 self._conv_block(width, 1, f"c{level}_conv", dilation=2 if dilated else 1)]
            )

    @staticmethod
    def _conv_block(width: int, stride: int, name: str, dilation: int = 1
                    ) -> list[keras.layers.Layer]:
        return [
            keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                                dilation_rate=dilation, kernel_initializer="he_normal",
                                name=f"{name}_conv"),
            keras.layers.GroupNormalization(groups=_num_groups(width), name=f"{name}_gn"),
        ]

    @property
    def output_strides(self) -> dict[str, int]:
        """Stride of each output relative to the input image."""
        return {"C2": 4, "C3": 8, "C4": 16, "C5": 16 if self.dilate_c5 else 32}

    @property
    def output_channels(self) -> dict[str, int]:
        """Channels of each output."""
        return dict(zip(("C2", "C3", "C4", "C5"), self.widths, strict=True))

    def call(self, images: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        def run(block: list[keras.layers.Layer], x: tf.Tensor) -> tf.Tensor:
            conv, norm = block
            return tf.nn.relu(norm(conv(x), training=training))

        x = run(self.stem, images)
        outputs = {}
        for level, (down, conv) in zip(range(2, 6), self.stages, strict=True):
            x = run(conv, run(down, x))
            outputs[f"C{level}"] = x
        return outputs

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, "widths": list(self.widths),
                "dilate_c5": self.dilate_c5}
