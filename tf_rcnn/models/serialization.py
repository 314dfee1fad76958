"""Helpers for composite layers and models whose constructor takes other layers.

Keras serialises such objects by storing each child's own serialised config in the parent's
``get_config`` and rebuilding the children in ``from_config``.

Children are stored WITHOUT their ``build_config``: Keras would otherwise build each child while
deserialising it, outside its parent's name scope, and its variables would get other paths
(checkpoint keys) than the same model made by the builder, whose children build on their first
call inside the parent. Unbuilt children build the same way on every route (builder,
``from_config``, ``keras.models.load_model``), so a checkpoint fits them all: a weight's name
there is :func:`weight_key`.
"""

from __future__ import annotations

from typing import Any

import keras


def serialize_optional(obj: Any) -> dict | None:
    """``keras.saving.serialize_keras_object`` without ``build_config`` (module docstring);
    ``None`` passes through."""
    if obj is None:
        return None
    config = keras.saving.serialize_keras_object(obj)
    if isinstance(config, dict):
        config.pop("build_config", None)
    return config


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


def weight_key(variable: Any) -> str:
    """A model variable's checkpoint name: its Keras path without the root model's name
    (``rpn/rpn_head/conv/kernel``), the same on every construction route."""
    path = getattr(variable, "path", None) or variable.name
    return path.split("/", 1)[1] if "/" in path else path
