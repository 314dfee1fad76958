"""A SavedModel exported with test-time augmentation gives the Python TTA path's detections."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.support import DATASET_IDS, decisive_model, tiny_config
from tf_rcnn import export as export_lib
from tf_rcnn.export.saved_model import EXPORT_INFO_FILE
from tf_rcnn.models import builder
from tf_rcnn.predict import load_predictor


def test_saved_model_with_tta_matches_the_python_tta_path(tmp_path):
    # Fast R-CNN: its given proposals are flipped and scaled with each view in the graph too.
    config = tiny_config("fast_rcnn")
    config.data.scales = (64,)
    config.data.max_size = 96
    config.test.tta.scales = (1.5,)  # two views, both augmented: 1.5x and 1.5x flipped
    config.test.tta.flip = True
    tta = builder.build_tta(decisive_model(config), config)
    pre = export_lib.PreprocessConfig.from_recipe(config)
    export_dir = export_lib.export_saved_model(tta, str(tmp_path / "tta"), pre)
    with open(os.path.join(export_dir, EXPORT_INFO_FILE)) as f:
        info = json.load(f)
    assert info["model"] == "FastRCNN"
    assert info["tta"] == {"scales": [1.5], "flip": True, "merge": "nms",
                           "nms_threshold": 0.5}

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8),
              rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)]
    # Original-pixel proposals; the last row of image 1 is padding (zero area).
    proposals = np.array([[[2, 3, 30, 40], [10, 20, 45, 66], [0, 0, 25, 25]],
                          [[5, 5, 40, 50], [20, 30, 48, 69], [0, 0, 0, 0]]], np.float32)
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    got = {k: v.numpy() for k, v in served(images=tf.constant(np.stack(images)),
                                           proposals=tf.constant(proposals)).items()}

    # The Python path: the same preprocessing, TTADetector, back to normalised original boxes.
    batch = export_lib.preprocess_batch(images, pre)
    scale = np.tile(batch["scale"].numpy(), 2)[:, None]
    out = {k: v.numpy() for k, v in tta({"images": batch["images"],
                                         "image_shape": batch["image_shape"],
                                         "proposals": tf.constant(proposals * scale)}).items()}
    hw = batch["original_shape"].numpy().astype(np.float32)
    size = np.concatenate([hw, hw], axis=1)[:, None, :]
    num = out["num_detections"]
    assert num.min() > 0
    valid = np.arange(out["detection_boxes"].shape[1])[None] < num[:, None]
    boxes = np.clip(out["detection_boxes"] / scale, 0, size) / size
    np.testing.assert_array_equal(got["num_detections"], num)
    np.testing.assert_array_equal(
        got["detection_classes"],
        np.where(valid, np.array([0, *DATASET_IDS])[out["detection_classes"]], 0))
    np.testing.assert_allclose(got["detection_boxes"], np.where(valid[..., None], boxes, 0),
                               atol=1e-5)
    np.testing.assert_allclose(got["detection_scores"],
                               np.where(valid, out["detection_scores"], 0), atol=1e-6)


def test_predict_refuses_tta_for_a_saved_model():
    with pytest.raises(ValueError, match="--tta applies to --checkpoint"):
        load_predictor(saved_model="exported/1", tta=True)
