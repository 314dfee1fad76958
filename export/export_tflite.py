"""Export a trained tf_rcnn detector as a LiteRT (TFLite) model with builtin ops only.

    python export/export_tflite.py --checkpoint=runs/shapes --output_dir=exported/shapes_tflite \
        [--config=configs/shapes_faster_rcnn.py] [--quantize=none|dynamic|int8] \
        [--input_size=HxW] [--num_proposals=P]

Writes ``OUTPUT/model.tflite`` (runs on the stock ``ai_edge_litert.interpreter.Interpreter``,
no Flex ops), ``OUTPUT/label_map.json`` and ``OUTPUT/tflite_info.json`` (input/output names,
input size, quantisation, preprocessing). The model takes one uint8 RGB image ``[1, h, w, 3]``
of any size (letterboxed inside to ``--input_size``, default the recipe's inference size) and,
for Fast R-CNN, ``proposals [1, P, 4]`` in original-image pixels; it returns the SavedModel's
outputs (normalised boxes of the original image, scores, dataset class ids, masks for Mask
R-CNN). ``--quantize=dynamic`` stores int8 weights; ``--quantize=int8`` also quantises
activations, calibrated on the first ``--num_calibration_images`` training images. See
``tf_rcnn/export/tflite.py`` and ``examples/litert_client.py``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import ConfigError
from tf_rcnn.export.tflite import QUANTIZE_MODES, export_tflite_from_checkpoint
from tf_rcnn.tools import cli

_RUN = cli.define_run_flags(
    sys.argv, "Directory for model.tflite, label_map.json and tflite_info.json.")
_CONFIG, _CHECKPOINT, _OUTPUT_DIR = _RUN.config, _RUN.checkpoint, _RUN.output_dir
_QUANTIZE = flags.DEFINE_enum(
    "quantize", "none", list(QUANTIZE_MODES),
    "none: float32; dynamic: int8 weights; int8: int8 weights and activations (calibrated on "
    "training images).")
_INPUT_SIZE = flags.DEFINE_string(
    "input_size", None, "Network input HxW (multiples of data.size_divisor), e.g. 640x640; "
    "default: the recipe's inference shorter side, square.")
_NUM_PROPOSALS = flags.DEFINE_integer(
    "num_proposals", None, "Proposal rows of the input of an RPN-less family (Fast R-CNN); "
    "default: the recipe's data.max_proposals.")
_NUM_CALIBRATION = flags.DEFINE_integer(
    "num_calibration_images", 32, "Training images int8 quantisation calibrates on.")


def main(argv):
    del argv
    try:
        path = export_tflite_from_checkpoint(
            _CHECKPOINT.value, _OUTPUT_DIR.value, config=_CONFIG.resolve(),
            input_size=_INPUT_SIZE.value, quantize=_QUANTIZE.value,
            num_proposals=_NUM_PROPOSALS.value,
            num_calibration_images=_NUM_CALIBRATION.value)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    size = os.path.getsize(path) / 2**20
    print(f"LiteRT model written to {path} ({size:.1f} MiB; label map and tflite_info.json "
          f"beside it)")


if __name__ == "__main__":
    app.run(main, argv=_CONFIG.argv)
