"""VGG16 trunk (Simonyan & Zisserman, 2015) as used by Fast/Faster R-CNN: conv1_1..conv5_3.

Conventions:
    Input images are ``[B, H, W, 3]`` float32, already normalised by the data pipeline (for
    ImageNet weights from ``keras.applications`` that is Caffe-style BGR mean subtraction, see
    ``keras.applications.vgg16.preprocess_input``), NHWC, dynamic H and W. The last max pool is
    dropped, so the single output ``"C4"`` (``conv5_3`` after ReLU, 512 channels) has stride 16
    (key by level: 16 = 2**4). Max pools use "same" padding, giving ``ceil(H / 2)`` rows; the data
    pipeline pads images to a multiple of 16, where this equals Keras' "valid" pools.

Shape shorthand:
    B batch, H/W input size.

Naming: convs are named like ``keras.applications.VGG16`` (``block<b>_conv<i>``) so ImageNet
weights copy by name; the paper's conv<b>_<i> is block<b>_conv<i>.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf
from absl import logging

_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, convs) per block


def copy_keras_vgg16_weights(target: VGG16, source: keras.Model) -> int:
    """Copy ``keras.applications.VGG16`` conv weights into ``target`` by layer name.

    Keras' VGG16 takes Caffe-style BGR input; ``block1_conv1``'s input channels are reversed
    here so the backbone takes RGB (minus the Caffe mean, std 1).

    Args:
        target: a built ``VGG16``.
        source: e.g. ``keras.applications.VGG16(include_top=False, weights="imagenet")``.

    Returns:
        Number of conv layers copied (13).

    Raises:
        ValueError: if a layer is missing in ``source`` or shapes differ.
    """
    count = 0
    for conv in target.convs():
        try:
            src = source.get_layer(conv.name)
        except ValueError as err:
            raise ValueError(f"Source model {source.name!r} has no layer {conv.name!r}; pass "
                             "keras.applications.VGG16.") from err
        weights = src.get_weights()
        if [w.shape for w in weights] != [tuple(w.shape) for w in conv.weights]:
            raise ValueError(f"Shape mismatch copying {conv.name}.")
        if conv.name == "block1_conv1":
            weights = [weights[0][:, :, ::-1, :], *weights[1:]]  # BGR -> RGB input channels
        conv.set_weights(weights)
        count += 1
    return count


@keras.saving.register_keras_serializable(package="tf_rcnn")
class VGG16(keras.Model):
    """VGG16 conv1_1..conv5_3 without the last max pool; output ``{"C4": conv5_3}``.

    Args:
        freeze_at: number of conv blocks frozen from the input (0..5). Fast R-CNN (Sec. 4.5)
            fine-tunes from conv3_1 up, i.e. ``freeze_at=2`` freezes conv1 and conv2 (default).
        weights: ``None`` random init (He normal); ``"imagenet"`` copies
            ``keras.applications.VGG16`` (needs a download); or a ``.weights.h5``/``.keras`` path
            saved from this class. Not kept in ``get_config``.
        **kwargs: forwarded to ``keras.Model`` (default name ``"vgg16"``).

    Call arguments:
        images: ``[B, H, W, 3]`` float32 normalised images.
        training: unused (no normalisation or dropout layers).

    Returns:
        dict ``{"C4": [B, ceil(H / 16), ceil(W / 16), 512]}`` float32.
    """

    def __init__(self, freeze_at: int = 2, weights: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("name", "vgg16")
        super().__init__(**kwargs)
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5 (conv blocks frozen), got {freeze_at}.")
        if weights not in (None, "imagenet") and not (
            isinstance(weights, str) and weights.endswith((".weights.h5", ".keras"))
        ):
            raise ValueError(
                "VGG16 weights must be None, 'imagenet' or a path ending in .weights.h5/.keras; "
                f"got {weights!r}."
            )
        self.freeze_at = freeze_at
        self.weights_source = weights
        self.blocks = []
        for b, (channels, num_convs) in enumerate(_BLOCKS, start=1):
            block = [
                keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                                    kernel_initializer="he_normal", name=f"block{b}_conv{i}")
                for i in range(1, num_convs + 1)
            ]
            for conv in block:
                conv.trainable = b > freeze_at
            self.blocks.append(block)
        self.build((None, None, None, 3))
        if weights is None:
            logging.debug("VGG16 backbone: random initialisation (no model.backbone.weights)")
        elif weights == "imagenet":
            copy_keras_vgg16_weights(
                self, keras.applications.VGG16(include_top=False, weights="imagenet"))
            logging.info("VGG16 backbone: ImageNet weights copied from keras.applications.VGG16")
        else:
            self.load_weights(weights)
            logging.info("VGG16 backbone: weights loaded from %s", weights)

    @property
    def output_strides(self) -> dict[str, int]:
        """``{"C4": 16}``."""
        return {"C4": 16}

    @property
    def output_channels(self) -> dict[str, int]:
        """``{"C4": 512}``."""
        return {"C4": 512}

    def convs(self) -> Iterator[keras.layers.Conv2D]:
        """All 13 convs, input to output."""
        for block in self.blocks:
            yield from block

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        for conv in self.convs():
            conv.build((None, None, None, channels))
            channels = conv.filters
        self.built = True

    def call(self, images: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        del training
        x = images
        for b, block in enumerate(self.blocks):
            if b > 0:
                # Pool between blocks (after conv1_2 .. conv4_3), none after conv5_3.
                x = tf.nn.max_pool2d(x, 2, 2, "SAME")
            for conv in block:
                x = conv(x)
        return {"C4": x}

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, "freeze_at": self.freeze_at,
                "weights": None}
