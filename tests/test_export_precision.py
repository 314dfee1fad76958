"""SavedModel export with --precision: a reduced compute type behind the same serving contract.

In a module of its own so that it runs beside, not after, test_export.py's fixtures.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.support import decisive_model, tiny_config
from tests.test_export import reference
from tf_rcnn import export as export_lib


def test_reduced_precision_export_computes_in_that_type_and_serves_float32(tmp_path):
    # --precision=bfloat16: the same float32 weights, layers computing in bfloat16 (a mixed
    # policy), outputs float32; the SavedModel equals the Python model built the same way, and
    # both stay near float32 (bfloat16 keeps 8 significant bits: ~0.4% relative error).
    import keras

    from tf_rcnn.config import ConfigError
    from tf_rcnn.models.checkpoint import restore_detector, save_weights

    config = tiny_config()
    config.data.scales = (64,)
    config.data.max_size = 96
    run_dir = str(tmp_path / "run")
    trained = decisive_model(config)
    save_weights(trained, run_dir)
    export_lib.write_label_map(trained, run_dir)  # the run's dataset ids, as train.py writes
    out = export_lib.export_from_checkpoint(run_dir, str(tmp_path / "bf16"), config=config,
                                            precision="bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone
    with open(os.path.join(out, "export_info.json")) as f:
        assert json.load(f)["compute_dtype"] == "bfloat16"
    model16, _, _ = restore_detector(run_dir, config, precision="bfloat16")
    model32, _, _ = restore_detector(run_dir, config)
    assert model16.backbone.compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model16.weights)

    image = np.random.default_rng(3).integers(0, 256, (1, 60, 90, 3), dtype=np.uint8)
    served = tf.saved_model.load(out).signatures["serving_default"](images=tf.constant(image))
    assert {k: v.dtype for k, v in served.items() if k != "detection_classes"} == {
        "num_detections": tf.int32, "detection_boxes": tf.float32,
        "detection_scores": tf.float32}
    pre = export_lib.PreprocessConfig.from_recipe(config)
    same16 = reference(model16, list(image), pre)
    got = {k: v.numpy() for k, v in served.items()}
    np.testing.assert_array_equal(got["num_detections"], same16["num_detections"])
    np.testing.assert_array_equal(got["detection_classes"], same16["detection_classes"])
    # The two graphs may round a bfloat16 sum differently: one bfloat16 step in [0.5, 1) is
    # 2**-8 = 0.0039.
    np.testing.assert_allclose(got["detection_scores"], same16["detection_scores"], atol=4e-3)
    np.testing.assert_allclose(got["detection_boxes"], same16["detection_boxes"], atol=1e-2)
    near32 = reference(model32, list(image), pre)
    n = int(near32["num_detections"][0])
    assert n > 0
    top = min(n, 5)  # the confident detections survive the lower precision unchanged
    np.testing.assert_array_equal(same16["detection_classes"][0, :top],
                                  near32["detection_classes"][0, :top])
    np.testing.assert_allclose(same16["detection_boxes"][0, :top],
                               near32["detection_boxes"][0, :top], atol=0.03)
    np.testing.assert_allclose(same16["detection_scores"][0, :top],
                               near32["detection_scores"][0, :top], atol=0.03)
    with pytest.raises(ConfigError, match="--precision='half' is not one of float32, "
                                          "bfloat16, float16"):
        restore_detector(run_dir, config, precision="half")
