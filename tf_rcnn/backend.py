"""Backend guard: tf_rcnn runs on Keras 3 with the TensorFlow backend only.

Importing this module before Keras sets ``KERAS_BACKEND=tensorflow`` when the user has not
chosen a backend, and raises a clear error when another backend was chosen explicitly.

It also holds the export-target switch :func:`builtin_ops_only` (the ops without a TFLite builtin
trace builtin-only variants inside it; see docs/design.md, "On-device export").
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

_REQUIRED = "tensorflow"


def ensure_tensorflow_backend() -> None:
    """Select the TensorFlow backend for Keras or fail with an actionable message."""
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen is None:
        os.environ["KERAS_BACKEND"] = _REQUIRED
    elif chosen != _REQUIRED:
        raise RuntimeError(
            f"tf_rcnn needs KERAS_BACKEND={_REQUIRED!r} but the environment sets {chosen!r}. "
            f"Unset KERAS_BACKEND or run `export KERAS_BACKEND={_REQUIRED}`."
        )
    import keras  # start-up order: only after KERAS_BACKEND is set above

    if keras.backend.backend() != _REQUIRED:
        raise RuntimeError(
            f"Keras was imported with the {keras.backend.backend()!r} backend before tf_rcnn. "
            f"Import tf_rcnn first or set KERAS_BACKEND={_REQUIRED}."
        )


ensure_tensorflow_backend()


# --- Export target: builtin-only op variants (on-device LiteRT export) -------------------------
# Graph-building switch read by the ops that have no TFLite builtin (crop_and_resize,
# combined_non_max_suppression, dynamic_stitch): inside ``builtin_ops_only()`` they trace their
# builtin-only variants (tf_rcnn/ops/crop_and_resize.py, builtin_pooling.py, builtin_nms.py,
# builtin_roi_pool.py); outside it (the default) nothing changes. It is read when a graph is
# traced, so the detector must be traced (e.g. ``get_concrete_function``) inside the context.
_builtin_ops_only = contextvars.ContextVar("tf_rcnn_builtin_ops_only", default=False)


@contextlib.contextmanager
def builtin_ops_only(enabled: bool = True) -> Iterator[None]:
    """Trace tf_rcnn's ops as TFLite builtins only (``TFLITE_BUILTINS``, no Flex ops)."""
    token = _builtin_ops_only.set(bool(enabled))
    try:
        yield
    finally:
        _builtin_ops_only.reset(token)


def builtin_ops_only_enabled() -> bool:
    """True inside :func:`builtin_ops_only`: ops must trace their builtin-only variants."""
    return _builtin_ops_only.get()
