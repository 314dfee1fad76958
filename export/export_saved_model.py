"""Export a trained tf_rcnn detector as a SavedModel for TF Serving.

    python export/export_saved_model.py --config=configs/shapes_faster_rcnn.py \
        --checkpoint=runs/shapes --output_dir=exported/shapes/1

The SavedModel has the signatures ``serving_default`` (uint8 images ``[B, H, W, 3]``),
``image_bytes`` (encoded JPEG/PNG strings ``[B]``) and ``tf_example`` (serialized
``tf.train.Example`` with ``image/encoded``); detectors without an RPN (Fast R-CNN) also take
``proposals [B, P, 4]`` in original-image pixels. Outputs: ``num_detections``,
``detection_boxes`` (normalised ``[y1, x1, y2, x2]`` of the original image),
``detection_scores``, ``detection_classes`` (dataset category ids) and, for Mask R-CNN,
``detection_masks``. ``label_map.json`` is written beside ``saved_model.pb``. See
``tf_rcnn/export.py`` and ``export/client.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import check_config_overrides

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/NAME.py).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Checkpoint prefix, or a run directory (its newest checkpoint).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "SavedModel directory (for TF Serving: MODEL_BASE/<version>).")
flags.mark_flags_as_required(["config", "checkpoint", "output_dir"])


def main(argv):
    del argv
    from tf_rcnn.export import export_from_checkpoint

    out = export_from_checkpoint(_CONFIG.value, _CHECKPOINT.value, _OUTPUT_DIR.value)
    print(f"SavedModel written to {out} (label map: {os.path.join(out, 'label_map.json')})")
    print(f"Check it: saved_model_cli show --dir {out} --all")


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    app.run(main)
