"""Exporting trained detectors: SavedModel for TF Serving (``saved_model``) and LiteRT / TFLite
with builtin ops only for devices (``tflite``).

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
from tf_rcnn.export.tflite import TFLiteDetector, export_tflite, export_tflite_from_checkpoint

__all__ = [
    "SIGNATURES",
    "TFLiteDetector",
    "PreprocessConfig",
    "decode_image_bytes",
    "export_from_checkpoint",
    "export_saved_model",
    "export_tflite",
    "export_tflite_from_checkpoint",
    "label_map_entries",
    "make_serving_functions",
    "preprocess_batch",
    "write_export_info",
    "write_label_map",
]
