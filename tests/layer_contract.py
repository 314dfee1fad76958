"""One contract every tf_rcnn Keras layer satisfies, checked by every layer test alike.

``check_layer_contract(layer, inputs)`` verifies:
  1. config round trip: ``from_config(get_config())`` rebuilds an equal config, and the layer
     survives ``keras.saving.serialize_keras_object`` / ``deserialize_keras_object`` (which
     needs the class to be registered serialisable);
  2. symbolic call: calling on ``keras.Input``-like symbolic tensors builds and gives outputs whose
     static shapes agree with the eager outputs (where the symbolic shape is known);
  3. eager call: outputs are finite and deterministic for the same weights;
  4. ``tf.function`` call: the traced call gives the same numbers as the eager one;
  5. the rebuilt layer with copied weights gives the same numbers.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


def _flatten(x: Any) -> list[tf.Tensor]:
    return [t for t in tf.nest.flatten(x) if t is not None]


def _as_symbolic(inputs: Any) -> Any:
    def make(t):
        t = tf.convert_to_tensor(t)
        return keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype.name)

    return tf.nest.map_structure(make, inputs)


def _call(layer: keras.layers.Layer, inputs: Any, call_kwargs: dict) -> Any:
    if isinstance(inputs, tuple):
        return layer(*inputs, **call_kwargs)
    return layer(inputs, **call_kwargs)


def check_layer_contract(
    layer: keras.layers.Layer,
    inputs: Any,
    call_kwargs: dict | None = None,
    atol: float = 1e-5,
    check_symbolic: bool = True,
) -> Any:
    """Run the shared contract on ``layer``; return the eager outputs for further checks.

    Args:
        layer: an unbuilt layer instance.
        inputs: one tensor, a dict/list of tensors (passed as the first argument) or a tuple
            of positional arguments.
        call_kwargs: extra keyword arguments for ``call`` (e.g. ``training``).
        atol: tolerance for the eager / graph / rebuilt comparisons.
        check_symbolic: set False only for layers whose call needs concrete values.
    """
    call_kwargs = dict(call_kwargs or {})

    # 1. Config round trip and registration.
    config = layer.get_config()
    rebuilt = layer.__class__.from_config(config)
    assert rebuilt.get_config() == config, "from_config(get_config()) changed the config"
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(layer), "layer is not registered serialisable"
    assert restored.get_config() == config

    # 3. Eager call.
    eager = _call(layer, inputs, call_kwargs)
    for t in _flatten(eager):
        arr = np.asarray(t)
        if arr.dtype.kind == "f":
            assert np.all(np.isfinite(arr)), f"{layer.name}: non-finite eager output"
    again = _call(layer, inputs, call_kwargs)
    for a, b in zip(_flatten(eager), _flatten(again), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)

    # 4. tf.function call.
    graph_fn = tf.function(lambda *args: _call(layer, args if len(args) > 1 else args[0],
                                               call_kwargs))
    graph = graph_fn(*inputs) if isinstance(inputs, tuple) else graph_fn(inputs)
    for a, b in zip(_flatten(eager), _flatten(graph), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)

    # 5. Rebuilt layer with copied weights.
    _call(rebuilt, inputs, call_kwargs)
    rebuilt.set_weights(layer.get_weights())
    again = _call(rebuilt, inputs, call_kwargs)
    for a, b in zip(_flatten(eager), _flatten(again), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)

    # 2. Symbolic call on a fresh instance.
    if check_symbolic:
        fresh = layer.__class__.from_config(config)
        symbolic = _call(fresh, _as_symbolic(inputs), call_kwargs)
        for s, e in zip(_flatten(symbolic), _flatten(eager), strict=True):
            for ds, de in zip(s.shape, e.shape, strict=True):
                assert ds is None or ds == de, f"symbolic shape {s.shape} vs eager {e.shape}"
    return eager
