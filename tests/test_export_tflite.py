"""LiteRT export: every family converts with TFLITE_BUILTINS only, runs on the stock
``ai_edge_litert`` interpreter and returns what the Keras model returns on the same tensors.

The reference: ``preprocess_batch`` (the eager twin of the serving preprocessing) with a recipe
whose resize equals the export's letterbox for the test image (20x32 -> content 40x64:
letterbox ``s = min(64/20, 64/32) = 2``, recipe ``s = min(40/20, 64/32) = 2``), zero-padded to
the export's 64x64 canvas, then the model, then the serving postprocessing written out here
(boxes / scale, clipped, normalised by the original size; classes -> dataset ids). Tolerances:
normalised boxes 1e-4 (6e-3 px of the 64 px canvas), scores and masks 1e-4 (float32
differences of the gather-based sampling and the TFLite kernels).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.support import DATASET_IDS, decisive_model, tiny_config
from tf_rcnn import export as export_lib
from tf_rcnn.export import tflite
from tf_rcnn.predict import load_predictor, predict_images

FAMILIES = {  # name -> tiny_config arguments
    "faster_rcnn_fpn": {"family": "faster_rcnn"},
    "faster_rcnn_c4": {"family": "faster_rcnn", "variant": "c4"},
    "fast_rcnn": {"family": "fast_rcnn"},
    "rfcn": {"family": "rfcn"},
    "mask_rcnn": {"family": "mask_rcnn"},
    # The paper recipes' quantised-bin poolings (bin tables, float32 summed-area table).
    "fast_rcnn_roi_pool": {"family": "fast_rcnn", "pooler": "roi_pool"},
    "rfcn_ps_roi_pool": {"family": "rfcn", "pool_mode": "pool"},
    # Three box stages, each decoding the previous stage's boxes; mask head on the last.
    "cascade_rcnn": {"family": "cascade_rcnn"},
    "cascade_mask_rcnn": {"family": "cascade_mask_rcnn"},
}
IMAGE = np.random.default_rng(5).integers(0, 256, (20, 32, 3), dtype=np.uint8)
# Original-pixel proposals of IMAGE for Fast R-CNN; the export takes 6 rows, 2 are padding.
PROPOSALS = np.array([[1, 2, 15, 20], [5, 5, 19, 31], [0, 0, 10, 10], [8, 12, 20, 30]],
                     np.float32)


def _reference(model, pre, proposals):
    batch = export_lib.preprocess_batch([IMAGE], pre)
    scale = batch["scale"].numpy()  # [1, 2]
    # The export's canvas is the fixed 64x64 (the recipe pads only to its size_divisor).
    padded = tf.image.pad_to_bounding_box(batch["images"], 0, 0, 64, 64)
    inputs = {"images": padded, "image_shape": batch["image_shape"]}
    if proposals is not None:
        rows = np.zeros((1, 6, 4), np.float32)
        rows[0, :len(proposals)] = proposals * np.tile(scale, 2)
        inputs["proposals"] = tf.constant(rows)
    out = {k: v.numpy() for k, v in model(inputs, training=False).items()}
    size = np.array([20, 32, 20, 32], np.float32)
    boxes = np.clip(out["detection_boxes"] / np.tile(scale, 2)[:, None], 0, size) / size
    valid = np.arange(boxes.shape[1])[None] < out["num_detections"][:, None]
    want = {"num_detections": out["num_detections"],
            "detection_boxes": np.where(valid[..., None], boxes, 0),
            "detection_scores": np.where(valid, out["detection_scores"], 0),
            "detection_classes": np.where(
                valid, np.array([0, *DATASET_IDS])[out["detection_classes"]], 0)}
    if "detection_masks" in out:
        want["detection_masks"] = np.where(valid[..., None, None], out["detection_masks"], 0)
    return want


def assert_same_detections(got: dict, want: dict) -> None:
    """Row by row, allowing a different order of rows whose scores tie within 1e-4 (the
    scaled random logits saturate some scores to 1.0 in several classes, and the two NMS
    implementations order exact ties differently)."""
    n = int(want["num_detections"][0])
    free = list(range(n))
    for row in range(n):
        candidates = [r for r in free
                      if got["detection_classes"][0, r] == want["detection_classes"][0, row]
                      and abs(got["detection_scores"][0, r] - want["detection_scores"][0, row])
                      <= 1e-4
                      and np.abs(got["detection_boxes"][0, r]
                                 - want["detection_boxes"][0, row]).max() <= 1e-4]
        assert candidates, f"row {row} of the model has no match in the .tflite outputs"
        match = min(candidates, key=lambda r: abs(r - row))
        free.remove(match)
        assert abs(match - row) == 0 or abs(got["detection_scores"][0, match]
                                            - got["detection_scores"][0, row]) <= 1e-4
        if "detection_masks" in want:
            np.testing.assert_allclose(got["detection_masks"][0, match],
                                       want["detection_masks"][0, row], atol=1e-4)
    np.testing.assert_array_equal(got["detection_boxes"][0, n:], 0.0)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Lazily exported families: name -> (model, preprocess, output_dir)."""
    root = tmp_path_factory.mktemp("tflite")
    cache = {}

    def get(name):
        if name not in cache:
            config = tiny_config(**FAMILIES[name])
            config.data.scales = (40,)
            config.data.max_size = 64
            model = decisive_model(config)
            pre = export_lib.PreprocessConfig.from_recipe(config)
            out = str(root / name)
            export_lib.export_tflite(model, out, pre, (64, 64), num_proposals=6)
            cache[name] = (model, pre, out)
        return cache[name]

    return get


# One family in make test (FPN: multi-level pooling, both NMS, the letterbox) keeps the suite
# within its budget; each further export costs ~10 s of CPU (make test-extended runs them).
@pytest.mark.parametrize("name", [
    name if name == "faster_rcnn_fpn" else pytest.param(name, marks=pytest.mark.extended)
    for name in FAMILIES])
def test_family_exports_builtin_only_and_matches_the_model(exports, name):
    model, pre, out = exports(name)
    detector = export_lib.TFLiteDetector(os.path.join(out, tflite.TFLITE_FILE))
    ops = detector.ops()
    # Only builtins: no Flex delegate op, no custom op.
    assert not [op for op in ops if "FLEX" in op.upper() or op.upper() == "CUSTOM"], ops
    assert "NON_MAX_SUPPRESSION_V5" in ops and "GATHER" in ops
    got = detector(IMAGE, PROPOSALS if model.needs_proposals else None)
    want = _reference(model, pre, PROPOSALS if model.needs_proposals else None)
    assert set(got) == set(want)
    assert want["num_detections"][0] > 0
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    assert_same_detections(got, want)
    with open(os.path.join(out, tflite.TFLITE_INFO_FILE)) as f:
        info = json.load(f)
    assert info["input_size"] == [64, 64] and info["model"] == type(model).__name__
    with open(os.path.join(out, "label_map.json")) as f:
        assert [c["dataset_id"] for c in json.load(f)["classes"]] == list(DATASET_IDS)


def test_input_size_flag_is_checked():
    assert tflite.parse_input_size("64x96", 32) == (64, 96)
    assert tflite.parse_input_size("128", 32) == (128, 128)
    with pytest.raises(ValueError, match=r"--input_size='100x64'.*size_divisor \(32\).*128x64"):
        tflite.parse_input_size("100x64", 32)
    with pytest.raises(ValueError, match="HxW"):
        tflite.parse_input_size("64x", 32)


def test_int8_float_layers_are_found_in_fused_tensor_names():
    # The converter fuses names with ";" and Keras suffixes name scopes with "_<n>" (one per
    # FPN level / cascade stage); the op's own name (last component) is not a layer scope.
    fused = ("faster_rcnn_1/rpn_1/rpn_head_1/deltas_3/BiasAdd;"
             "faster_rcnn_1/rpn_1/rpn_head_1/deltas_3/convolution")
    assert tflite._float_layer(fused) == "deltas"
    assert tflite._float_layer("m/roi_heads_1/stage2_1/box_predictor_1/class_logits_1/MatMul") \
        == "class_logits"
    assert tflite._float_layer("m/roi_heads_1/box_head_1/fc1_1/MatMul") == ""
    assert tflite._float_layer("m/fpn_1/fpn_deltas_like_1/convolution") == ""
    assert tflite._float_layer("m/head_1/conv_1/objectness") == ""  # op name, not a layer


def test_predict_runs_a_tflite_model(exports, tmp_path):
    model, pre, out = exports("faster_rcnn_fpn")
    image_path = str(tmp_path / "shape.png")
    Image.fromarray(IMAGE).save(image_path)
    predict, names = load_predictor(tflite=os.path.join(out, tflite.TFLITE_FILE))
    assert names == {10: "square", 20: "circle", 30: "triangle"}
    json_path, failures = predict_images([image_path], predict, names, str(tmp_path / "pred"))
    with open(json_path) as f:
        (entry,) = json.load(f)
    want = _reference(model, pre, None)
    n = int(want["num_detections"][0])
    assert failures == 0 and len(entry["detections"]) == n
    got = np.array([d["box"] for d in entry["detections"]])
    np.testing.assert_allclose(got, want["detection_boxes"][0, :n] * [20, 32, 20, 32], atol=1e-2)
    assert os.path.exists(tmp_path / "pred" / entry["annotated"])
    with pytest.raises(ValueError, match="--tflite=.*not a .tflite file"):
        load_predictor(tflite=out)
    with pytest.raises(ValueError, match="exactly one of"):
        load_predictor(saved_model=out, tflite=os.path.join(out, tflite.TFLITE_FILE))


@pytest.mark.extended  # two more conversions with calibration: ~25 s of CPU
@pytest.mark.parametrize("name,quantize", [("faster_rcnn_fpn", "dynamic"), ("fast_rcnn", "int8")])
def test_quantized_exports_are_builtin_only_and_quantized(tmp_path, name, quantize):
    config = tiny_config(**FAMILIES[name])
    config.data.scales = (40,)
    config.data.max_size = 64
    model = decisive_model(config)
    pre = export_lib.PreprocessConfig.from_recipe(config)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 32, 3), dtype=np.uint8) for _ in range(3)]
    path = export_lib.export_tflite(model, str(tmp_path), pre, (64, 64), quantize=quantize,
                                    representative_images=lambda: images, num_proposals=6)
    detector = export_lib.TFLiteDetector(path)
    assert not [op for op in detector.ops() if "FLEX" in op.upper() or op.upper() == "CUSTOM"]
    dtypes = {d["dtype"] for d in detector.interpreter.get_tensor_details()}
    assert np.int8 in dtypes  # int8 weights (dynamic) or weights and activations (int8)
    if quantize == "int8":
        assert "QUANTIZE" in detector.ops()
        with open(os.path.join(str(tmp_path), tflite.TFLITE_INFO_FILE)) as f:
            kept = json.load(f)["int8"]
        # Convolutions / FCs int8, the prediction layers (decoded outputs) float32.
        assert "FULLY_CONNECTED" in kept["int8_op_types"] and kept["int8_ops"] > 0
        assert kept["float_layers"] == ["box_deltas", "class_logits"]
    out = detector(IMAGE, PROPOSALS if model.needs_proposals else None)
    assert out["detection_boxes"].shape == (1, 10, 4)
    assert 0 <= int(out["num_detections"][0]) <= 10
