"""SavedModel export: run the exported graph in a process that never imports tf_rcnn and compare
it with ``model.predict`` on the same preprocessed tensors.

The reference is computed here: ``preprocess_batch`` (the eager twin of the in-graph
preprocessing) -> ``model.predict`` -> boxes divided by the resize scale, clipped and normalised
by the original size, classes mapped to dataset ids. Tolerances from issue 9: boxes 1e-3 of the
image size (normalised units), scores 1e-4.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.support import DATASET_IDS, REPO, decisive_model, tiny_config
from tf_rcnn import export as export_lib
from tf_rcnn.models import builder

_spec = importlib.util.spec_from_file_location("serving_client",
                                               os.path.join(REPO, "export", "client.py"))
client = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(client)

# Runs in a fresh interpreter: only TensorFlow, never tf_rcnn.
RUNNER = textwrap.dedent("""
    import pickle, sys
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    export_dir, requests_file, out_file = sys.argv[1:4]
    with open(requests_file, "rb") as f:
        requests = pickle.load(f)
    # The ops saved_model_cli scan refuses, plus Python callbacks.
    banned = {"ReadFile", "WriteFile", "PrintV2", "PyFunc", "PyFuncStateless", "EagerPyFunc"}
    proto = saved_model_pb2.SavedModel()
    with open(export_dir + "/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    for meta in proto.meta_graphs:
        ops.update(n.op for n in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(n.op for n in fn.node_def)
    loaded = tf.saved_model.load(export_dir)
    results = {"banned_ops": sorted(ops & banned), "signatures": sorted(loaded.signatures)}
    for name, (signature, inputs) in requests.items():
        fn = loaded.signatures[signature]
        try:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
            results[name] = {k: v.numpy() for k, v in out.items()}
        except tf.errors.InvalidArgumentError as e:
            results[name] = {"error": "InvalidArgumentError", "message": e.message[:200]}
    results["tf_rcnn_imported"] = "tf_rcnn" in sys.modules
    with open(out_file, "wb") as f:
        pickle.dump(results, f)
""")


def _encode(image: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    pil = Image.fromarray(image)
    if mode is not None:
        pil = pil.convert(mode)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt)
    return buffer.getvalue()


def _example(data: bytes) -> bytes:
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _decoded(data: bytes) -> np.ndarray:
    """What TF decodes (RGB, alpha dropped, gray replicated) - the reference's input."""
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def reference(model, images: list[np.ndarray], pre: export_lib.PreprocessConfig,
              proposals: np.ndarray | None = None) -> dict[str, np.ndarray]:
    batch = export_lib.preprocess_batch(images, pre)
    inputs = {"images": batch["images"], "image_shape": batch["image_shape"]}
    scale = batch["scale"].numpy()
    if proposals is not None:
        inputs["proposals"] = tf.constant(proposals * np.tile(scale, 2)[:, None], tf.float32)
    out = model.predict(inputs, verbose=0, batch_size=len(images))
    hw = batch["original_shape"].numpy().astype(np.float32)
    size = np.concatenate([hw, hw], axis=1)[:, None, :]
    boxes = np.clip(out["detection_boxes"] / np.tile(scale, 2)[:, None], 0, size) / size
    table = np.array([0, *DATASET_IDS])
    num = out["num_detections"]
    valid = np.arange(boxes.shape[1])[None] < num[:, None]
    want = {"num_detections": num, "detection_boxes": np.where(valid[..., None], boxes, 0),
            "detection_scores": np.where(valid, out["detection_scores"], 0),
            "detection_classes": np.where(valid, table[out["detection_classes"]], 0)}
    if "detection_masks" in out:
        want["detection_masks"] = np.where(valid[..., None, None], out["detection_masks"], 0)
    return want


def assert_same(got: dict, want: dict) -> None:
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_array_equal(got["detection_classes"], want["detection_classes"])
    np.testing.assert_allclose(got["detection_boxes"], want["detection_boxes"], atol=1e-3)
    np.testing.assert_allclose(got["detection_scores"], want["detection_scores"], atol=1e-4)
    assert ("detection_masks" in got) == ("detection_masks" in want)
    if "detection_masks" in want:
        np.testing.assert_allclose(got["detection_masks"], want["detection_masks"], atol=1e-4)


def run_in_fresh_process(root, export_dirs: dict, requests: dict) -> dict:
    """Runs ``requests`` against each SavedModel in a subprocess without tf_rcnn."""
    results = {}
    runner = root / "runner.py"
    runner.write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name, export_dir in export_dirs.items():
        requests_file, out_file = root / f"{name}_requests.pkl", root / f"{name}_results.pkl"
        with open(requests_file, "wb") as f:
            pickle.dump(requests[name], f)
        result = subprocess.run(
            [sys.executable, str(runner), export_dir, str(requests_file), str(out_file)],
            capture_output=True, text=True, cwd=str(root), env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        with open(out_file, "rb") as f:
            results[name] = pickle.load(f)
    return results


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    config = tiny_config()
    config.data.scales = (64,)
    config.data.max_size = 96
    model = decisive_model(config)
    pre = export_lib.PreprocessConfig.from_recipe(config)
    export_dir = export_lib.export_saved_model(model, str(root / "saved_model"), pre)

    rng = np.random.default_rng(1)
    rgb = [rng.integers(0, 256, (333, 517, 3), dtype=np.uint8),
           rng.integers(0, 256, (90, 60, 3), dtype=np.uint8),
           rng.integers(0, 256, (41, 77, 3), dtype=np.uint8)]
    uint8_batch = rng.integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    gray_png = _encode(rgb[0], mode="L")
    rgba_png = _encode(rgb[1], mode="RGBA")
    jpeg = _encode(rgb[2], "JPEG")
    png_odd = _encode(rgb[0])
    requests = {
        "uint8": ("serving_default", {"images": uint8_batch}),
        "png_333x517": ("image_bytes", {"images": np.array([png_odd], object)}),
        "gray_png": ("image_bytes", {"images": np.array([gray_png], object)}),
        "rgba_png": ("image_bytes", {"images": np.array([rgba_png], object)}),
        "mixed": ("image_bytes", {"images": np.array([png_odd, rgba_png, jpeg], object)}),
        "example": ("tf_example", {"examples": np.array([_example(jpeg), _example(gray_png)],
                                                        object)}),
        "malformed": ("image_bytes", {"images": np.array([b"not an image at all"], object)}),
        "short_png": ("image_bytes", {"images": np.array([b"\x89PNG\r\n\x1a\n\xff"], object)}),
        "truncated_png": ("image_bytes", {"images": np.array([png_odd[:60]], object)}),
        "empty": ("image_bytes", {"images": np.array([b""], object)}),
        "rest_body": ("image_bytes", {"images": np.array(
            [base64.b64decode(item["b64"]) for item in
             client.rest_request_body([png_odd, jpeg])["inputs"]["images"]], object)}),
        "after_malformed": ("image_bytes", {"images": np.array([jpeg], object)}),
    }
    inputs_for = {
        "uint8": list(uint8_batch),
        "png_333x517": [_decoded(png_odd)],
        "gray_png": [_decoded(gray_png)],
        "rgba_png": [_decoded(rgba_png)],
        "mixed": [_decoded(png_odd), _decoded(rgba_png), _decoded(jpeg)],
        "example": [_decoded(jpeg), _decoded(gray_png)],
        "after_malformed": [_decoded(jpeg)],
        "rest_body": [_decoded(png_odd), _decoded(jpeg)],
    }
    requests_file = root / "requests.pkl"
    with open(requests_file, "wb") as f:
        pickle.dump(requests, f)
    runner = root / "runner.py"
    runner.write_text(RUNNER)
    out_file = root / "results.pkl"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(runner), export_dir, str(requests_file), str(out_file)],
        capture_output=True, text=True, cwd=str(root), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out_file, "rb") as f:
        served = pickle.load(f)
    return model, pre, export_dir, served, inputs_for


def test_saved_model_is_clean_and_standalone(exported):
    _, _, export_dir, served, _ = exported
    assert served["banned_ops"] == []
    assert not served["tf_rcnn_imported"]
    assert set(served["signatures"]) == {"serving_default", "image_bytes", "tf_example"}
    with open(os.path.join(export_dir, "label_map.json")) as f:
        label_map = json.load(f)
    assert [c["dataset_id"] for c in label_map["classes"]] == list(DATASET_IDS)
    assert [c["name"] for c in label_map["classes"]] == ["square", "circle", "triangle"]


@pytest.mark.parametrize("request_name", ["uint8", "png_333x517", "gray_png", "rgba_png",
                                          "mixed", "example", "after_malformed",
                                          "rest_body"])
def test_served_detections_match_model_predict(exported, request_name):
    model, pre, _, served, inputs_for = exported
    got = served[request_name]
    assert "error" not in got, got
    want = reference(model, inputs_for[request_name], pre)
    assert want["num_detections"].min() > 0  # the comparison is not vacuous
    assert got["detection_classes"].dtype == np.int32
    assert got["num_detections"].dtype == np.int32
    assert set(np.unique(got["detection_classes"])) <= {0, *DATASET_IDS}
    assert got["detection_boxes"].min() >= 0 and got["detection_boxes"].max() <= 1
    assert_same(got, want)


def test_malformed_bytes_fail_that_request_only(exported):
    served = exported[3]
    for name in ("malformed", "short_png", "truncated_png", "empty"):
        assert served[name].get("error") == "InvalidArgumentError", (name, served[name])
    assert "after_malformed" in served and "error" not in served["after_malformed"]


def test_gray_and_rgba_are_converted_like_pil(exported):
    # Grayscale replicated to 3 channels, alpha dropped: the decoded arrays equal PIL's RGB.
    inputs_for = exported[4]
    gray = inputs_for["gray_png"][0]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    assert inputs_for["rgba_png"][0].shape == (90, 60, 3)


def test_label_map_entries_reject_a_label_map_of_another_class_count():
    config = tiny_config()
    model = builder.build_model(config, label_map={"classes": [
        {"id": 1, "dataset_id": 5, "name": "a"}]})
    with pytest.raises(ValueError, match="has 3 classes"):
        export_lib.label_map_entries(model)


def test_export_refuses_an_unbuilt_model(tmp_path):
    config = tiny_config()
    model = builder.build_model(config)
    with pytest.raises(ValueError, match="build it first"):
        export_lib.export_saved_model(model, str(tmp_path),
                                      export_lib.PreprocessConfig.from_recipe(config))


def test_rest_body_and_grpc_message():
    body = client.rest_request_body([b"\x00\xffabc"])
    assert body["signature_name"] == "image_bytes"
    assert base64.b64decode(body["inputs"]["images"][0]["b64"]) == b"\x00\xffabc"
    json.dumps(body)  # JSON-serialisable
    if importlib.util.find_spec("tensorflow_serving") is None:
        with pytest.raises(ImportError, match="pip install tensorflow-serving-api"):
            client.grpc_request([b"x"], "shapes")
    else:
        request = client.grpc_request([b"x", b"yz"], "shapes")
        assert request.model_spec.signature_name == "image_bytes"
        assert list(request.inputs["images"].string_val) == [b"x", b"yz"]


# Every detector family but the one the tests above export (new families join by themselves).
OTHER_FAMILIES = sorted(set(builder.FAMILIES) - {"faster_rcnn"})


def _other_model_configs():
    """Tiny configs of the other detector families."""
    configs = {name: tiny_config(name) for name in OTHER_FAMILIES}
    for config in configs.values():
        config.data.scales, config.data.max_size = (64,), 96
    return configs


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_all")
    rng = np.random.default_rng(2)
    uint8_batch = rng.integers(0, 256, (2, 48, 56, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (100, 61, 3), dtype=np.uint8)
    png, gray = _encode(big), _encode(uint8_batch[0], mode="L")
    # Proposals in original pixels; the last row is padding.
    proposals = np.array([[[2, 3, 30, 40], [10, 5, 45, 50], [0, 0, 20, 20], [-1, -1, -1, -1]]]
                         * 2, np.float32)
    models, export_dirs, requests = {}, {}, {}
    for name, config in _other_model_configs().items():
        model = decisive_model(config)
        pre = export_lib.PreprocessConfig.from_recipe(config)
        models[name] = (model, pre)
        export_dirs[name] = export_lib.export_saved_model(model, str(root / name), pre)
        extra = {"proposals": proposals} if model.needs_proposals else {}
        requests[name] = {
            "uint8": ("serving_default", {"images": uint8_batch, **extra}),
            "mixed": ("image_bytes", {"images": np.array([png, gray], object), **extra}),
        }
    served = run_in_fresh_process(root, export_dirs, requests)
    inputs_for = {"uint8": list(uint8_batch), "mixed": [_decoded(png), _decoded(gray)]}
    return models, served, inputs_for, proposals


@pytest.mark.slow  # one export per family and a fresh TF process: ~2 min of CPU (five)
@pytest.mark.parametrize("model_type", OTHER_FAMILIES)
def test_every_detector_family_exports_and_matches(other_models, model_type):
    models, served, inputs_for, proposals = other_models
    model, pre = models[model_type]
    result = served[model_type]
    assert result["banned_ops"] == [] and not result["tf_rcnn_imported"]
    needs = proposals if model.needs_proposals else None
    for request in ("uint8", "mixed"):
        got = result[request]
        assert "error" not in got, got
        want = reference(model, inputs_for[request], pre, needs)
        assert want["num_detections"].min() > 0
        assert_same(got, want)
    if model.needs_masks:
        assert result["uint8"]["detection_masks"].shape[2:] == (28, 28)

