"""Normalisation layers of the backbones, FPN and heads: frozen BatchNorm and the factory
that picks a norm by name (``norm="frozen_bn" | "bn" | "sync_bn"``, None for no norm).

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


NORMS = ("frozen_bn", "bn", "sync_bn")
# BatchNorm epsilon of the FPN and heads (torchvision and Detectron2 both use 1e-5).
NORM_EPSILON = 1e-5


def check_norm(norm: str | None, key: str = "norm") -> str | None:
    """``norm`` if it is None or one of :data:`NORMS`; ValueError naming ``key`` otherwise."""
    if norm is not None and norm not in NORMS:
        raise ValueError(f"{key} must be one of {NORMS} or None (no norm), got {norm!r}.")
    return norm


def make_norm(norm: str, name: str, epsilon: float = NORM_EPSILON) -> keras.layers.Layer:
    """A normalisation layer over the channel axis.

    Args:
        norm: ``"frozen_bn"`` (fixed statistics, :class:`FrozenBatchNormalization`), ``"bn"``
            (Keras BatchNormalization, momentum 0.9 = PyTorch's 0.1) or ``"sync_bn"``
            (cross-replica statistics).
        name: layer name.
        epsilon: added to the variance.
    """
    check_norm(norm)
    if norm == "frozen_bn":
        return FrozenBatchNormalization(epsilon=epsilon, name=name)
    return keras.layers.BatchNormalization(epsilon=epsilon, momentum=0.9,
                                           synchronized=norm == "sync_bn", name=name)
