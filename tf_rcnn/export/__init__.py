"""Exporting trained detectors: SavedModel for TF Serving (``saved_model``).

Everything runs in the TensorFlow graph (decode, resize, normalise, detect, map back to the
original image); the exported files need no tf_rcnn to run.
"""

from tf_rcnn.export.saved_model import (
    SIGNATURES,
    PreprocessConfig,
    decode_image_bytes,
    export_from_checkpoint,
    export_saved_model,
    label_map_entries,
    make_serving_functions,
    preprocess_batch,
    write_export_info,
    write_label_map,
)

__all__ = [
    "SIGNATURES",
    "PreprocessConfig",
    "decode_image_bytes",
    "export_from_checkpoint",
    "export_saved_model",
    "label_map_entries",
    "make_serving_functions",
    "preprocess_batch",
    "write_export_info",
    "write_label_map",
]
