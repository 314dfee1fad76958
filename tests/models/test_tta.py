"""TTADetector (tf_rcnn.models.tta) on tiny models: no augmentation is the plain model exactly,
Mask R-CNN's averaged masks, the recipe section and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support import decisive_model, tiny_batch, tiny_config
from tf_rcnn.config import ConfigError
from tf_rcnn.models import builder
from tf_rcnn.models.tta import TTADetector


def _inputs(family: str) -> dict:
    images, targets = tiny_batch(2, proposals=family == "fast_rcnn")
    # Image 1 is smaller than the padded canvas, so flips and clipping see a true width.
    inputs = {"images": images, "image_shape": tf.constant([[64, 64], [48, 56]], tf.int32)}
    if family == "fast_rcnn":
        inputs["proposals"] = targets["proposals"]
    return inputs


@pytest.fixture(scope="module")
def mask_model():
    model = decisive_model(tiny_config("mask_rcnn"))
    # The mask predictor starts at std 0.001 (probabilities ~0.5 everywhere); spread it so the
    # masks differ from their mirror images by far more than the tolerance below.
    kernels = [v for v in model.weights if v.path.endswith("mask_logits/kernel")]
    assert len(kernels) == 1
    kernels[0].assign(kernels[0] * 1000.0)
    return model


def test_one_unflipped_view_at_scale_one_is_the_plain_model(mask_model):
    # The boxes go through the view mapping, the merging NMS and back, the masks are
    # recomputed on the merged boxes: all must give back the plain model's outputs exactly.
    # (Given proposals: tests/test_tta_export.py runs Fast R-CNN through the graph.)
    model = mask_model
    inputs = _inputs("mask_rcnn")
    plain = {k: v.numpy() for k, v in model(inputs).items()}
    tta = TTADetector(model, scales=(1.0,), flip=False)
    got = {k: v.numpy() for k, v in tta(inputs).items()}
    assert sorted(got) == sorted(plain)
    assert plain["num_detections"].min() > 0
    for key, value in plain.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_masks_are_averaged_and_flipped_back(mask_model):
    # The views of an image X are 1.25 X and 1.25 flip(X); those of flip(X) are the same views
    # in the other order. So TTA on flip(X) must give the mirrored boxes and the
    # mirrored box-relative masks of TTA on X; without flipping the flipped views' masks back,
    # both would give the same (unmirrored) mean instead.
    tta = TTADetector(mask_model, scales=(1.25,), flip=True)
    images = tiny_batch(1)[0]
    out = {k: v.numpy() for k, v in tta({"images": images}).items()}
    mirrored = {k: v.numpy() for k, v in tta({"images": images[:, :, ::-1]}).items()}
    n = int(out["num_detections"][0])
    d = tta.detector.roi_heads.decoder.max_detections
    assert out["detection_masks"].shape == (1, d, 28, 28)
    assert 0 < n == int(mirrored["num_detections"][0])
    masks = out["detection_masks"][0]
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert (masks[n:] == 0).all()
    order, order_m = np.argsort(-out["detection_scores"][0, :n]), np.argsort(
        -mirrored["detection_scores"][0, :n])
    np.testing.assert_allclose(out["detection_scores"][0, order],
                               mirrored["detection_scores"][0, order_m], atol=1e-5)
    boxes, boxes_m = out["detection_boxes"][0, order], mirrored["detection_boxes"][0, order_m]
    np.testing.assert_allclose(boxes_m, np.stack([boxes[:, 0], 64 - boxes[:, 3], boxes[:, 2],
                                                  64 - boxes[:, 1]], 1), atol=1e-3)
    np.testing.assert_allclose(mirrored["detection_masks"][0, order_m],
                               masks[order][:, :, ::-1], atol=1e-4)
    # Not a symmetric case by accident: the masks themselves are not mirror images.
    assert np.abs(masks[order] - masks[order][:, :, ::-1]).max() > 0.05


def test_recipe_section_builds_the_wrapper_and_round_trips(mask_model):
    config = tiny_config("mask_rcnn")
    t = config.test.tta
    t.scales, t.flip, t.merge, t.nms_threshold = (0.8, 1.25), True, "vote", 0.6
    tta = builder.build_tta(mask_model, config)
    assert tta.views == [(0.8, False), (1.25, False), (0.8, True), (1.25, True)]
    assert tta.needs_masks and not tta.needs_proposals and tta.num_classes == 3
    assert tta.size_divisor == config.data.size_divisor and tta.built
    copy = TTADetector.from_config(tta.get_config())
    assert copy.views == tta.views and copy.merge == "vote" and copy.nms_threshold == 0.6
    assert type(copy.detector) is type(mask_model)


def test_with_tta_wraps_on_the_flag_or_the_recipe_switch_only(mask_model):
    config = tiny_config("mask_rcnn")
    assert builder.with_tta(mask_model, config) is mask_model
    assert builder.with_tta(mask_model, config, tta=True).detector is mask_model
    config.test.tta.enabled = True
    assert isinstance(builder.with_tta(mask_model, config), TTADetector)


@pytest.mark.parametrize("key,value,message", [
    ("scales", (), "--config.test.tta.scales"),
    ("scales", (1.0, -0.5), "--config.test.tta.scales"),
    ("scales", ("big",), "--config.test.tta.scales"),
    ("merge", "mean", "--config.test.tta.merge"),
    ("nms_threshold", 1.5, "--config.test.tta.nms_threshold"),
])
def test_bad_recipe_values_name_the_flag(key, value, message):
    config = tiny_config()
    config.test.tta[key] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        builder.build_tta(None, config)
