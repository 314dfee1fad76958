"""Shared pytest set-up: TensorFlow backend, quiet C++ logs, deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

import tf_rcnn  # noqa: F401


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same random state (Python, NumPy, TensorFlow and Keras's own
    seed generator, which drives layer initialisers)."""
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
