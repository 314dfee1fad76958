"""Frozen batch normalisation: a fixed per-channel affine transform, as used by Detectron.

Conventions:
    Feature maps are NHWC float32 ``[B, H, W, C]`` (channels last). The layer normalises over the
    last axis with stored statistics; it never updates them and never exposes trainable weights.

Why: detection batches are small (1-2 images per device), so batch statistics are too noisy to
train BatchNorm. Detectron therefore replaces each BatchNorm of an ImageNet backbone by a fixed
affine ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` whose four vectors are copied from the
pretrained model and never change.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_rcnn")
class FrozenBatchNormalization(keras.layers.Layer):
    """BatchNorm whose statistics and affine parameters are constants.

    The weights are ``gamma, beta, moving_mean, moving_variance`` (the same order as
    ``keras.layers.BatchNormalization.get_weights()`` so weights copy across), all created
    non-trainable. ``call`` always uses the stored statistics, also with ``training=True``.

    Args:
        epsilon: added to the variance before the square root.
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call arguments:
        inputs: ``[..., C]`` float32 features.
        training: ignored; the layer behaves the same in training and inference.

    Returns:
        ``[..., C]`` float32, ``inputs * scale + shift``.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"{self.name}: the channel axis of the input must be known, got {input_shape}."
            )
        shape = (channels,)
        self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones",
                                     trainable=False)
        self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros",
                                    trainable=False)
        self.moving_mean = self.add_weight(name="moving_mean", shape=shape,
                                           initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=shape,
                                               initializer="ones", trainable=False)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        del training  # Frozen: identical behaviour in training and inference.
        # Fold the four vectors into one multiply-add: y = x * scale + shift.
        scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
        shift = self.beta - self.moving_mean * scale
        return inputs * tf.cast(scale, inputs.dtype) + tf.cast(shift, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
