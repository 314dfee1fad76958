"""Shared pytest set-up: TensorFlow backend, quiet logs, deterministic seeds, small thread pools."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import tf_rcnn  # noqa: F401


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same random state."""
    np.random.seed(0)
    tf.random.set_seed(0)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
