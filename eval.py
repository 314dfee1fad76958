"""Evaluate a trained tf_rcnn detector on its validation split.

    python eval.py --checkpoint=runs/shapes --output_dir=runs/shapes/eval \
        [--config=configs/shapes_faster_rcnn.py] [--config.a.b=v ...]

The run directory's ``config.json`` and ``label_map.json`` (written by ``train.py``) describe the
model and its data, so ``--config`` is optional; overrides apply on top of it. Writes
``OUT/metrics.json`` (``bbox/AP``, ``bbox/AP50``, ... all 12 COCO stats, ``segm/...`` for Mask
R-CNN; ``voc/mAP`` for VOC data; ``rpn/AR@100`` and ``rpn/AR@1000`` with ``--proposal_recall``),
``OUT/detections.json`` (COCO results format: dataset category ids, ``[x, y, w, h]`` in
original-image pixels, and the ``file_name`` of each image as its annotations name it) and
``OUT/detections.png`` (a few validation images with detections). ``--tta`` evaluates with
test-time augmentation (``test.tta`` of the config: flipped / rescaled views merged by NMS or
box voting; ``--config.test.tta.scales=...`` etc. change it). ``--verbose`` shows
TensorFlow's start-up and C++ log lines, hidden by default (as in every command).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import ConfigError
from tf_rcnn.evaluation.evaluate import evaluate_checkpoint
from tf_rcnn.tools import cli

_RUN = cli.define_run_flags(sys.argv, "Where metrics and detections go.")
_CONFIG, _CHECKPOINT, _OUTPUT_DIR = _RUN.config, _RUN.checkpoint, _RUN.output_dir
_NUM_IMAGES = flags.DEFINE_integer("num_images", None, "Evaluate only the first N images.")
_PROPOSAL_RECALL = flags.DEFINE_bool(
    "proposal_recall", False, "Also report RPN proposal recall (AR@100, AR@1000).")
_VISUALIZE = flags.DEFINE_integer("visualize", None, "Images drawn into detections.png.")
_PRECISION = cli.define_precision_flag("the detector")
_TTA = flags.DEFINE_bool(
    "tta", False, "Test-time augmentation with the recipe's test.tta values (flip, scale "
    "factors, merge; --config.test.tta.* to change them).")


def main(argv):
    del argv
    try:
        metrics = evaluate_checkpoint(
            _CHECKPOINT.value, _OUTPUT_DIR.value, config=_CONFIG.resolve(),
            num_images=_NUM_IMAGES.value, proposal_recall=_PROPOSAL_RECALL.value,
            visualize=_VISUALIZE.value, precision=_PRECISION.value, tta=_TTA.value)
    except (ConfigError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    out = _OUTPUT_DIR.value
    print(f"Metrics written to {os.path.join(out, 'metrics.json')}")
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75",
                "voc/mAP", "rpn/AR@100", "rpn/AR@1000"):
        if key in metrics:
            print(f"  {key}: {metrics[key]:.4f}")


if __name__ == "__main__":
    app.run(main, argv=_CONFIG.argv)
