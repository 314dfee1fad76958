"""Backend guard: tf_rcnn runs on Keras 3 with the TensorFlow backend only.

Importing this module before Keras sets ``KERAS_BACKEND=tensorflow`` when the user has not
chosen a backend, and raises a clear error when another backend was chosen explicitly.
"""

from __future__ import annotations

import os

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
