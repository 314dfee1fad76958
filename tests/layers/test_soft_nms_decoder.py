"""DetectionDecoder with Soft-NMS (``model.roi_head.nms_method``): a hand case against hard NMS,
the layer contract, the config keys (also on a run saved before they existed), a SavedModel
round trip, and R-FCN / Mask R-CNN decoding through it (masks follow the kept boxes)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.layer_contract import check_layer_contract
from tests.support import tiny_batch, tiny_config
from tf_rcnn.config import ConfigError, config_from_dict, default_config, find_unknown_overrides
from tf_rcnn.layers.detection_decoder import DetectionDecoder
from tf_rcnn.models import builder

# Two RoIs of class 1 (probabilities given directly, background first): A = [0, 0, 10, 10]
# scores 0.9 and C = [0, 2, 10, 12] scores 0.8; iou(A, C) = 80 / 120 = 2/3. Zero deltas keep
# the RoIs as boxes.
PROBS = tf.constant([[[0.1, 0.9, 0.0], [0.2, 0.8, 0.0]]])
ROIS = tf.constant([[[0.0, 0.0, 10.0, 10.0], [0.0, 2.0, 10.0, 12.0]]])


def _decode(**kwargs):
    decoder = DetectionDecoder(score_threshold=0.05, nms_threshold=0.5, max_detections=4,
                               **kwargs)
    return decoder(tf.zeros([1, 2, 3]), tf.zeros([1, 2, 3, 4]), ROIS, tf.ones([1, 2], tf.bool),
                   tf.constant([[20, 20]]), class_probs=PROBS)


@pytest.mark.parametrize("method, second", [
    ("hard", None),  # iou 2/3 > 0.5: C suppressed
    ("linear", 0.8 * (1 - 2 / 3)),  # 2/3 >= Nt 0.5: 0.8 * 1/3 = 0.266667
    ("gaussian", 0.8 * np.exp(-(2 / 3) ** 2 / 0.5)),  # 0.8 * exp(-8/9) = 0.328890
])
def test_decoder_hand_case(method, second):
    out = _decode(nms_method=method)
    expected = [0.9] if second is None else [0.9, second]
    assert int(out["num_detections"][0]) == len(expected)
    np.testing.assert_allclose(out["detection_scores"][0, :len(expected)], expected, rtol=1e-6)
    np.testing.assert_array_equal(out["detection_classes"][0], [1] * len(expected)
                                  + [0] * (4 - len(expected)))
    np.testing.assert_allclose(out["detection_boxes"][0, :len(expected)],
                               ROIS[0, :len(expected)], atol=1e-5)


def test_decoder_contract_and_config():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(2, 6, 3)), tf.float32)
    deltas = tf.constant(rng.normal(scale=0.1, size=(2, 6, 3, 4)), tf.float32)
    xy = rng.uniform(0, 50, (2, 6, 2))
    rois = tf.constant(np.concatenate([xy, xy + 20], -1), tf.float32)
    layer = DetectionDecoder(score_threshold=0.0, max_detections=4, nms_method="gaussian",
                             soft_nms_sigma=0.3, soft_nms_min_score=0.01)
    check_layer_contract(layer, (logits, deltas, rois, tf.ones([2, 6], tf.bool),
                                 tf.constant([[80, 80], [70, 90]])))
    config = layer.get_config()
    assert (config["nms_method"], config["soft_nms_sigma"], config["soft_nms_min_score"]) == (
        "gaussian", 0.3, 0.01)
    assert DetectionDecoder().get_config()["nms_method"] == "hard"


def test_config_keys_reach_the_decoder_and_bad_values_name_the_flag():
    config = tiny_config()
    config.model.roi_head.nms_method = "linear"
    decoder = builder.build_detection_decoder(config.model.roi_head)
    assert decoder.nms_method == "linear" and decoder.soft_nms_min_score == 0.001
    for key, value in (("nms_method", "soft"), ("soft_nms_sigma", -1.0),
                       ("soft_nms_min_score", 1.0)):
        bad = tiny_config()
        bad.model.roi_head.nms_method = "gaussian"  # the method that reads the settings
        bad.model.roi_head[key] = value
        with pytest.raises(ConfigError, match=f"--config.model.roi_head.{key}"):
            builder.build_model(bad)
    # Hard NMS does not read the Soft-NMS settings: a value it ignores is no error.
    unused = tiny_config()
    unused.model.roi_head.soft_nms_sigma = -1.0
    builder.build_model(unused)
    # A run saved before the keys existed: its config.json lacks them, they take the defaults
    # and eval.py's --config.model.roi_head.nms_method=... override is accepted.
    saved = default_config().to_dict()
    for key in ("nms_method", "soft_nms_sigma", "soft_nms_min_score"):
        del saved["model"]["roi_head"][key]
    old = config_from_dict(saved)
    assert old.model.roi_head.nms_method == "hard"
    assert find_unknown_overrides(old, ["model.roi_head.nms_method",
                                        "model.roi_head.soft_nms_sigma"]) == []


def test_saved_model_round_trip(tmp_path):
    decoder = DetectionDecoder(score_threshold=0.05, nms_threshold=0.5, max_detections=4,
                               nms_method="linear")
    module = tf.Module()
    module.decoder = decoder
    module.decode = tf.function(
        lambda probs, rois: decoder(tf.zeros_like(probs), tf.zeros([1, tf.shape(rois)[1], 3, 4]),
                                    rois, tf.ones(tf.shape(rois)[:2], tf.bool),
                                    tf.constant([[20, 20]]), class_probs=probs),
        input_signature=[tf.TensorSpec([1, None, 3]), tf.TensorSpec([1, None, 4])])
    path = str(tmp_path / "decoder")
    tf.saved_model.save(module, path)
    loaded = tf.saved_model.load(path)
    out = loaded.decode(PROBS, ROIS)
    np.testing.assert_allclose(out["detection_scores"][0, :2], [0.9, 0.8 / 3], rtol=1e-6)
    assert int(out["num_detections"][0]) == 2
    graph = module.decode.get_concrete_function().graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function
                                        for n in f.node_def}
    assert "While" in ops or "StatelessWhile" in ops
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    assert os.path.exists(os.path.join(path, "saved_model.pb"))


def test_every_family_builds_its_decoder_from_the_keys():
    for family in ("fast_rcnn", "faster_rcnn", "rfcn", "mask_rcnn"):
        config = tiny_config(family)
        config.model.roi_head.nms_method = "linear"
        config.model.roi_head.soft_nms_sigma = 0.7
        decoder = builder.build_model(config).roi_heads.decoder
        assert (decoder.nms_method, decoder.soft_nms_sigma) == ("linear", 0.7), family


def test_mask_rcnn_masks_follow_the_soft_nms_boxes():
    config = tiny_config("mask_rcnn")
    config.model.roi_head.nms_method = "gaussian"
    config.model.roi_head.score_threshold = 0.0
    model = builder.build_model(config)
    model.build_with_dummy_inputs()
    images, _ = tiny_batch()
    out = model(images)
    count = out["num_detections"].numpy()
    scores = out["detection_scores"].numpy()
    assert count.min() >= 1
    for b, n in enumerate(count):
        assert np.all(np.diff(scores[b, :n]) <= 1e-7)  # best first
        assert np.all(scores[b, n:] == 0) and np.all(out["detection_classes"][b, n:] == 0)
    masks = out["detection_masks"].numpy()
    assert masks.shape[:2] == scores.shape
    for b, n in enumerate(count):
        # Masks are predicted on the kept boxes: every kept row has one, padding none.
        assert np.all(masks[b, :n].max(axis=(1, 2)) > 0) and np.all(masks[b, n:] == 0)
