"""Export a trained tf_rcnn detector as a SavedModel for TF Serving.

    python export/export_saved_model.py --checkpoint=runs/shapes \
        --output_dir=exported/shapes/1 [--config=configs/shapes_faster_rcnn.py]

The run's ``config.json`` (so the preprocessing it was trained with) and ``label_map.json`` are
used unless ``--config`` is given; ``--config.a.b=v`` overrides apply on top. The SavedModel has
the signatures ``serving_default`` (uint8 images ``[B, H, W, 3]``), ``image_bytes`` (encoded
JPEG/PNG strings ``[B]``) and ``tf_example`` (serialized ``tf.train.Example`` with
``image/encoded``); detectors without an RPN (Fast R-CNN) also take ``proposals [B, P, 4]`` in
original-image pixels. Outputs: ``num_detections``, ``detection_boxes`` (normalised
``[y1, x1, y2, x2]`` of the original image), ``detection_scores``, ``detection_classes``
(dataset category ids) and, for Mask R-CNN, ``detection_masks``. ``label_map.json`` is written
beside ``saved_model.pb``. ``--tta`` bakes the recipe's test-time augmentation (``test.tta``:
horizontal flip, scale factors, NMS or box-voting merge) into the graph. See
``tf_rcnn/export/saved_model.py`` and ``export/client.py``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_rcnn  # noqa: F401  (selects the TensorFlow backend before Keras loads)
from tf_rcnn.config import ConfigError
from tf_rcnn.export import export_from_checkpoint
from tf_rcnn.tools import cli

_RUN = cli.define_run_flags(sys.argv,
                            "SavedModel directory (for TF Serving: MODEL_BASE/<version>).")
_CONFIG, _CHECKPOINT, _OUTPUT_DIR = _RUN.config, _RUN.checkpoint, _RUN.output_dir
_PRECISION = cli.define_precision_flag("the exported graph")
_TTA = flags.DEFINE_bool(
    "tta", False, "Bake test-time augmentation into the graph with the recipe's test.tta values "
    "(flip, scale factors, merge; --config.test.tta.* to change them).")


def main(argv):
    del argv
    try:
        out = export_from_checkpoint(_CHECKPOINT.value, _OUTPUT_DIR.value,
                                     config=_CONFIG.resolve(), precision=_PRECISION.value,
                                     tta=_TTA.value)
    except (ConfigError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    print(f"SavedModel written to {out} (label map: {os.path.join(out, 'label_map.json')})")
    print(f"Check it: saved_model_cli show --dir {out} --all")


if __name__ == "__main__":
    app.run(main, argv=_CONFIG.argv)
