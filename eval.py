"""Evaluate a trained tf_rcnn detector on the recipe's validation split.

    python eval.py --config=configs/shapes_faster_rcnn.py --checkpoint=runs/shapes \
        --output_dir=runs/shapes/eval

Writes ``OUT/metrics.json`` (``bbox/AP``, ``bbox/AP50``, ... all 12 COCO stats, ``segm/...`` for
Mask R-CNN; ``voc/mAP`` for VOC data; ``rpn/AR@100`` and ``rpn/AR@1000`` with
``--proposal_recall``), ``OUT/detections.json``
(COCO results format: dataset category ids, ``[x, y, w, h]`` in original-image pixels) and
``OUT/detections.png`` (a few validation images with their detections).
"""

from __future__ import annotations

import os

# TensorFlow's C++ warnings (e.g. the graph cost estimator on CropAndResize) drown the progress
# lines; set TF_CPP_MIN_LOG_LEVEL=0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys

from absl import app, flags
from ml_collections import config_flags

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import ConfigError, check_config_overrides

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/NAME.py).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Checkpoint prefix, or a run directory (its newest checkpoint).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where metrics and detections go.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", None, "Evaluate only the first N images.")
_PROPOSAL_RECALL = flags.DEFINE_bool(
    "proposal_recall", False, "Also report RPN proposal recall (AR@100, AR@1000).")
_VISUALIZE = flags.DEFINE_integer("visualize", None, "Images drawn into detections.png.")
flags.mark_flags_as_required(["config", "checkpoint", "output_dir"])


def main(argv):
    del argv
    from tf_rcnn.evaluation.evaluate import evaluate_checkpoint

    try:
        metrics = evaluate_checkpoint(
            _CONFIG.value, _CHECKPOINT.value, _OUTPUT_DIR.value, num_images=_NUM_IMAGES.value,
            proposal_recall=_PROPOSAL_RECALL.value, visualize=_VISUALIZE.value)
    except ConfigError as error:
        raise app.UsageError(str(error)) from error
    out = _OUTPUT_DIR.value
    print(f"Metrics written to {os.path.join(out, 'metrics.json')}")
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75",
                "voc/mAP", "rpn/AR@100", "rpn/AR@1000"):
        if key in metrics:
            print(f"  {key}: {metrics[key]:.4f}")


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    app.run(main)
