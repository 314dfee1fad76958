"""A tiny stand-in for the detectors: same ``compute_losses`` contract, trains in milliseconds.

``StandInModel`` regresses two numbers from an image with conv -> BatchNorm -> pool -> dense.
``make_dataset_fn`` yields ``(images [B, 8, 8, 3] float32, {"value": [B, 2]})`` where the
target is a fixed linear function of the per-channel image means, so the loss can go to ~0.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

IMAGE_SIZE = 8
_MIX = np.array([[1.0, -1.0], [0.5, 2.0], [-1.5, 0.5]], np.float32)  # [3 channels, 2 outputs]


class StandInModel(keras.Model):
    """conv(4) -> BN -> ReLU -> global average pool -> dense(num_outputs)."""

    def __init__(self, num_outputs: int = 2, use_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.num_outputs = num_outputs
        self.use_norm = use_norm
        self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
        # BatchNorm statistics are per replica, so replica-count equivalence tests drop it.
        self.norm = keras.layers.BatchNormalization(name="norm") if use_norm else None
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = keras.layers.Dense(num_outputs, name="head")

    def call(self, images, training=False):
        x = self.conv(images)
        if self.norm is not None:
            x = self.norm(x, training=training)
        return self.head(self.pool(tf.nn.relu(x)))

    def compute_losses(self, images, targets, training=True):
        pred = tf.cast(self(images, training=training), tf.float32)  # float16 under mixed
        target = targets["value"]
        regression = tf.reduce_mean(tf.square(pred - target))
        aux = 0.1 * tf.reduce_mean(tf.abs(pred - target))
        return {"regression_loss": regression, "aux_loss": aux, "total_loss": regression + aux}


def build_model(num_outputs: int = 2, use_norm: bool = True) -> StandInModel:
    model = StandInModel(num_outputs, use_norm=use_norm)
    model(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]))
    return model


def make_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """64 images ``[64, 8, 8, 3]`` and their targets ``[64, 2]`` (float32)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, size=(64, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    images += rng.uniform(-1, 1, size=(64, 1, 1, 3)).astype(np.float32)
    values = images.mean(axis=(1, 2)) @ _MIX
    return images, values


def full_batch_loss(model: StandInModel, seed: int = 0) -> float:
    """``total_loss`` on all 64 images (batch statistics), a low-noise progress measure."""
    images, values = make_arrays(seed)
    return float(model.compute_losses(images, {"value": values}, training=True)["total_loss"])


def make_dataset(batch: int, seed: int = 0) -> tf.data.Dataset:
    """Infinite dataset of ``batch``-sized elements (deterministic for a seed)."""
    images, values = make_arrays(seed)
    ds = tf.data.Dataset.from_tensor_slices((images, {"value": values}))
    return ds.repeat().batch(batch, drop_remainder=True)


def make_dataset_fn(per_replica_batch: int):
    """``input_context -> dataset`` for ``distribute_datasets_from_function``."""

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(per_replica_batch, seed=input_context.input_pipeline_id)

    return dataset_fn
