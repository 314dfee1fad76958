"""Helpers for composite layers and models whose constructor takes other layers.

Keras serialises such objects by storing each child's own serialised config in the parent's
``get_config`` and rebuilding the children in ``from_config``.
"""

from __future__ import annotations

from typing import Any

import keras


def serialize_optional(obj: Any) -> dict | None:
    """``keras.saving.serialize_keras_object`` that passes ``None`` through."""
    return None if obj is None else keras.saving.serialize_keras_object(obj)


def deserialize_optional(config: dict | None) -> Any:
    """Inverse of :func:`serialize_optional`."""
    return None if config is None else keras.saving.deserialize_keras_object(config)


def deserialize_keys(config: dict, keys: tuple[str, ...]) -> dict:
    """A copy of ``config`` with the named entries deserialised."""
    config = dict(config)
    for key in keys:
        if key in config:
            config[key] = deserialize_optional(config[key])
    return config
