"""tf_rcnn's four torchvision recipes compute what torchvision 0.29.1 computes, stage by stage.

``benchmarks/peers/make_torchvision_fixtures.py`` ran torchvision's ``fasterrcnn_resnet50_fpn``,
``maskrcnn_resnet50_fpn`` and their v2 variants on two images with weights drawn by
``tf_rcnn.pretrained.synthetic`` and stored what every stage gave (``tests/fixtures/torchvision``,
layout in each ``<arch>.json``). Here the same weights are drawn again from the fixture's spec
and seed, written to an ``.npz`` and imported as a user imports a downloaded file
(``tf_rcnn.tools.import_weights``: a run directory), then every stage is compared at the
tolerances the port promises:

* preprocessing: resized sizes equal, padded batch equal to 1e-5;
* FPN maps within 1e-4 of the level's largest value (sample points and per-channel statistics of
  the whole maps), RPN logits and deltas likewise;
* proposals equal to 1e-2 px, objectness to 1e-4;
* box head logits and deltas on torchvision's proposals within 1e-4 relative;
* detections: >= 98% of torchvision's matched by one of ours with the same class, IoU >= 0.99
  and score within 1e-3, and >= 98% of ours matched by one of torchvision's (near-ties at the
  NMS, score threshold and 100-detection cuts may flip the rest);
* 28x28 mask probabilities within 1e-3, pasted masks equal.

The images are non-square and not multiples of 32 (347x523 is shrunk, 389x235 enlarged). The
recipes' 800/1333 resize is replaced by torchvision's ``min_size=320, max_size=512`` of the
fixtures (``--config.data.scales``/``max_size``), everything else is the recipe.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.reference import numpy_boxes
from tests.support import REPO
from tf_rcnn.config import load_config_file
from tf_rcnn.export import PreprocessConfig, export_saved_model, preprocess_batch
from tf_rcnn.formats.torch_checkpoint import save_npz
from tf_rcnn.models import builder
from tf_rcnn.models.backbones.torchvision_resnet import WeightsMismatchError
from tf_rcnn.models.checkpoint import restore_detector
from tf_rcnn.models.roi_heads.base import pool_features
from tf_rcnn.ops import poolers as pooler_ops
from tf_rcnn.ops.masks import paste_masks
from tf_rcnn.pretrained import synthetic
from tf_rcnn.pretrained import torchvision as tvp
from tf_rcnn.tools.import_weights import import_weights

FIXTURES = Path(REPO) / "tests" / "fixtures" / "torchvision"
LEVELS = {"0": "P2", "1": "P3", "2": "P4", "3": "P5", "pool": "P6"}
YX = [1, 0, 3, 2]  # (x1, y1, x2, y2) <-> (y1, x1, y2, x2); (dx, dy, dw, dh) <-> (dy, dx, dh, dw)

FEATURE_TOL = 1e-4  # relative to the level's largest |value|
PROPOSAL_TOL = 1e-2  # px
DETECTION_SHARE = 0.98
SCORE_TOL = 1e-3
MIN_IOU = 0.99
MASK_TOL = 1e-3


@dataclasses.dataclass
class Ported:
    arch: str
    meta: dict
    ref: dict
    model: object
    config: object
    run_dir: str
    images: list
    batch: dict
    features: dict


def fixture_meta(arch: str) -> dict:
    return json.loads((FIXTURES / f"{arch}.json").read_text())


def fixture_weights(meta: dict) -> dict[str, np.ndarray]:
    spec = [(k, tuple(s), d) for k, s, d in meta["spec"]]
    return synthetic.synthetic_state_dict(spec, meta["seed"])


def fixture_config(arch: str, meta: dict):
    config = load_config_file(tvp.recipe_path(arch))
    config.model.num_classes = tvp.NUM_CLASSES  # what the import sets (no data here)
    config.data.scales = (meta["min_size"],)
    config.data.max_size = meta["max_size"]
    return config


@pytest.fixture(scope="class")
def ported(request, tmp_path_factory) -> Ported:
    """The class's architecture imported from the fixture's weights, restored from its run."""
    arch = request.cls.arch
    meta = fixture_meta(arch)
    with np.load(FIXTURES / f"{arch}.npz") as z:
        ref = {k: z[k] for k in z.files}
    with np.load(FIXTURES / "transform.npz") as z:
        ref.update({k: z[k] for k in z.files})
    root = tmp_path_factory.mktemp(arch)
    weights = root / f"{arch}.npz"
    save_npz(fixture_weights(meta), weights)
    run_dir = str(root / "run")
    import_weights(arch, str(weights), run_dir, fixture_config(arch, meta))
    os.remove(weights)
    model, config, _ = restore_detector(run_dir)  # what predict/eval/export do with the run
    images = [np.asarray(Image.open(FIXTURES / im["file"]).convert("RGB"))
              for im in meta["images"]]
    batch = preprocess_batch(images, PreprocessConfig.from_recipe(config))
    features = model.extract_features(batch["images"])
    return Ported(arch, meta, ref, model, config, run_dir, images, batch, features)


# ----------------------------------------------------------------------------- helpers


def match(ref_boxes, ref_labels, ref_scores, boxes, labels, scores) -> np.ndarray:
    """For each reference detection, the index of a detection of ours with its class, IoU >=
    0.99 and score within 1e-3, or -1."""
    iou = numpy_boxes.iou(ref_boxes, boxes)  # the parity fixtures' boxes are [y1, x1, y2, x2]
    ok = ((iou >= MIN_IOU) & (ref_labels[:, None] == labels[None, :])
          & (np.abs(ref_scores[:, None] - scores[None, :]) <= SCORE_TOL))
    return np.where(ok.any(axis=1), np.argmax(np.where(ok, iou, -1.0), axis=1), -1)


def check_detections(ref: tuple, ours: tuple, what: str) -> np.ndarray:
    """Both directions matched at >= 98%; returns ref -> ours indices."""
    forward = match(*ref, *ours)
    backward = match(*ours, *ref)
    assert len(ref[0]) >= 20, f"{what}: the fixture has too few detections to test anything"
    share = np.mean(forward >= 0)
    assert share >= DETECTION_SHARE, (
        f"{what}: {share:.1%} of torchvision's {len(forward)} detections matched; unmatched "
        f"rows {np.flatnonzero(forward < 0).tolist()}")
    back = np.mean(backward >= 0) if len(backward) else 0.0
    assert back >= DETECTION_SHARE, (
        f"{what}: {back:.1%} of our {len(backward)} detections matched; unmatched rows "
        f"{np.flatnonzero(backward < 0).tolist()}")
    return forward


def image_features(p: Ported, names, i: int) -> list[tf.Tensor]:
    return [p.features[n][i:i + 1] for n in names]


def _keras_detections(p: Ported) -> list[tuple]:
    out = p.model({"images": p.batch["images"], "image_shape": p.batch["image_shape"]})
    result = []
    for i in range(len(p.images)):
        n = int(out["num_detections"][i])
        masks = out["detection_masks"][i, :n].numpy() if "detection_masks" in out else None
        result.append((out["detection_boxes"][i, :n].numpy(),
                       out["detection_classes"][i, :n].numpy(),
                       out["detection_scores"][i, :n].numpy(), masks))
    return result


# ----------------------------------------------------------------------------- stages


class Stages:
    """Every stage of the imported model against torchvision's (``arch``: the class's)."""

    def test_preprocessing(self, ported):
        p, ref = ported, ported.ref
        assert p.batch["image_shape"].numpy().tolist() == ref["transform.image_sizes"].tolist()
        n, c, h, w = ref["transform.batch_shape"].tolist()
        images = p.batch["images"].numpy()
        assert images.shape == (n, h, w, c)
        rows, cols = ref["transform.row_index"], ref["transform.col_index"]
        np.testing.assert_allclose(images[:, rows], ref["transform.rows"].transpose(0, 2, 3, 1),
                                   atol=1e-5)
        np.testing.assert_allclose(images[:, :, cols], ref["transform.cols"].transpose(0, 2, 3, 1),
                                   atol=1e-5)
        flat = images.reshape(n, -1, 3).astype(np.float64)
        np.testing.assert_allclose(flat.mean(1), ref["transform.batch_mean"], atol=1e-6)
        np.testing.assert_allclose(flat.std(1), ref["transform.batch_std"], atol=1e-6)

    def test_fpn_maps(self, ported):
        for level, name in LEVELS.items():
            ours = ported.features[name].numpy()  # [B, H, W, C]
            nchw = ported.ref[f"features.{level}.shape"]
            assert list(ours.shape) == [nchw[i] for i in (0, 2, 3, 1)]
            pos = ported.ref[f"features.{level}.positions"]  # [B, P, 2] (y, x)
            want = ported.ref[f"features.{level}.values"]  # [B, P, C]
            got = np.stack([ours[i, pos[i, :, 0], pos[i, :, 1]] for i in range(len(ours))])
            scale = np.abs(want).max()
            assert np.abs(got - want).max() <= FEATURE_TOL * scale, level
            flat = ours.reshape(len(ours), -1, ours.shape[-1]).astype(np.float64)
            for stat, value in (("mean", flat.mean(1)), ("std", flat.std(1))):
                assert np.abs(value - ported.ref[f"features.{level}.{stat}"]).max() <= (
                    FEATURE_TOL * scale), (level, stat)

    def test_rpn_head(self, ported):
        model, ref = ported.model, ported.ref
        maps = [ported.features[n] for n in model.rpn_in_features]
        logits, deltas = (t.numpy() for t in model.rpn.head(maps))  # [B, N], [B, N, 4]
        a = model.rpn.anchor_generator.num_anchors_per_location
        counts = [int(np.prod(m.shape[1:3])) * a for m in maps]
        assert counts == ref["rpn.num_anchors_per_level"].tolist()
        offsets = np.cumsum([0] + counts)
        for k, (level, name) in enumerate(LEVELS.items()):
            width = ported.features[name].shape[2]
            pos = ref[f"features.{level}.positions"]
            for i in range(len(pos)):
                # row (y * W + x) * A + a of our flat head output is torchvision's (a, y, x)
                rows = offsets[k] + ((pos[i, :, 0] * width + pos[i, :, 1])[:, None] * a
                                     + np.arange(a)[None, :])  # [P, A]
                want_logits = ref[f"rpn.{level}.logits"][i]  # [P, A]
                want_deltas = ref[f"rpn.{level}.deltas"][i].reshape(-1, a, 4)[..., YX]
                np.testing.assert_allclose(logits[i][rows], want_logits,
                                           atol=FEATURE_TOL * np.abs(want_logits).max())
                np.testing.assert_allclose(deltas[i][rows], want_deltas,
                                           atol=FEATURE_TOL * np.abs(want_deltas).max())

    def test_proposals(self, ported):
        out = ported.model.propose({"images": ported.batch["images"],
                                    "image_shape": ported.batch["image_shape"]})
        for i in range(len(ported.images)):
            valid = out["proposal_valid"][i].numpy()
            ours = out["proposals"][i].numpy()[valid]
            scores = out["proposal_scores"][i].numpy()[valid]
            want = ported.ref[f"rpn.proposals.{i}"][:, YX]
            want_scores = ported.ref[f"rpn.scores.{i}"]
            assert len(ours) == len(want)
            # same order up to near-ties: compare each torchvision proposal with its nearest
            dist = np.abs(want[:, None, :] - ours[None, :, :]).max(-1)  # [K, K] px
            nearest = dist.argmin(1)
            close = dist[np.arange(len(want)), nearest] <= PROPOSAL_TOL
            same_score = np.abs(scores[nearest] - want_scores) <= 1e-4
            assert np.mean(close & same_score) >= 0.995, (i, np.mean(close), np.mean(same_score))
            assert np.mean(nearest == np.arange(len(want))) >= 0.99  # and the order

    def test_fpn_levels_and_roi_features(self, ported):
        heads, ref = ported.model.roi_heads, ported.ref
        names = ported.model.roi_in_features
        pooler = heads.pooler
        min_level = int(np.log2(pooler.strides[0]))
        for i in range(len(ported.images)):
            rois = tf.constant(ref[f"rpn.proposals.{i}"][:, YX][None])
            levels = pooler_ops.assign_fpn_levels(
                rois, min_level, min_level + len(pooler.strides) - 1, pooler.canonical_level,
                pooler.canonical_size).numpy()[0] - min_level
            np.testing.assert_array_equal(levels, ref[f"box.roi_levels.{i}"])
            rows = ref[f"box.roi_rows.{i}"]
            pooled = pool_features(pooler, image_features(ported, names, i),
                                   tf.gather(rois, rows, axis=1)).numpy()[0]  # [R, 7, 7, C]
            want = ref[f"box.roi_features.{i}"].transpose(0, 2, 3, 1)
            np.testing.assert_allclose(pooled, want, atol=FEATURE_TOL * np.abs(want).max())

    def test_box_head_on_torchvision_proposals(self, ported):
        heads, ref = ported.model.roi_heads, ported.ref
        for i in range(len(ported.images)):
            want_logits = ref[f"box.class_logits.{i}"]  # [B, 91]
            rois = ref[f"rpn.proposals.{i}"][: len(want_logits), YX]
            logits, deltas = heads.predict_boxes(
                image_features(ported, ported.model.roi_in_features, i), tf.constant(rois[None]))
            np.testing.assert_allclose(logits.numpy()[0], want_logits,
                                       atol=FEATURE_TOL * np.abs(want_logits).max())
            want = ref[f"box.box_regression.{i}"].reshape(len(rois), -1, 4)[..., YX]
            np.testing.assert_allclose(deltas.numpy()[0], want,
                                       atol=FEATURE_TOL * np.abs(want).max())

    def test_detections_and_masks(self, ported):
        ref = ported.ref
        for i, (boxes, labels, scores, masks) in enumerate(_keras_detections(ported)):
            want = (ref[f"det.boxes_resized.{i}"][:, YX], ref[f"det.labels.{i}"],
                    ref[f"det.scores.{i}"])
            matched = check_detections(want, (boxes, labels, scores), f"{ported.arch} image {i}")
            if masks is None:
                assert "mask.probs.0" not in ref
                continue
            rows = np.flatnonzero(matched >= 0)
            assert np.abs(masks[matched[rows]] - ref[f"mask.probs.{i}"][rows]).max() <= MASK_TOL

    def test_mask_head_on_torchvision_detections(self, ported):
        heads, ref = ported.model.roi_heads, ported.ref
        if not ported.arch.startswith("mask"):  # no mask branch on either side
            assert not hasattr(heads, "predict_masks") and "mask.probs.0" not in ref
            return
        for i in range(len(ported.images)):
            boxes = ref[f"det.boxes_resized.{i}"][:, YX]
            logits = heads.predict_masks(image_features(ported, ported.model.roi_in_features, i),
                                         tf.constant(boxes[None]),
                                         tf.constant(ref[f"det.labels.{i}"][None], tf.int32))
            probs = tf.sigmoid(logits).numpy()[0]
            assert np.abs(probs - ref[f"mask.probs.{i}"]).max() <= MASK_TOL
            # torchvision's paste of its own probabilities, with our paste rule
            m = len(ref[f"mask.pasted.{i}"])
            pasted = paste_masks(ref[f"mask.probs.{i}"][None, :m],
                                 ref[f"det.boxes.{i}"][None, :m, YX],
                                 ported.images[i].shape[:2], threshold=None,
                                 rule="torchvision").numpy()[0]
            row = ref[f"mask.pasted_row_index.{i}"]
            np.testing.assert_allclose(pasted[np.arange(m), row], ref[f"mask.pasted_rows.{i}"],
                                       atol=5e-5)
            binary = pasted > 0.5
            assert np.mean(binary != ref[f"mask.pasted.{i}"].astype(bool)) <= 1e-4

    def test_legacy_key_spellings_load_alike(self, ported):
        # old key -> current key; v2 checkpoints were only ever written with the current spellings
        renames = {new: old for old, new in ported.meta["legacy_keys"].items()}
        assert bool(renames) == (not ported.arch.endswith("_v2"))
        state = fixture_weights(ported.meta)
        legacy = {renames.get(k, k): v for k, v in state.items()}
        assert len(set(legacy) - set(state)) == len(renames)
        new = tvp.convert_state_dict(state, ported.model, ported.arch)
        old = tvp.convert_state_dict(legacy, ported.model, ported.arch)
        assert [v.path for v, _ in new] == [v.path for v, _ in old]
        for (_, a), (_, b) in zip(new, old, strict=True):
            np.testing.assert_array_equal(a, b)
        # and the imported run holds exactly these values
        for variable, value in new:
            np.testing.assert_array_equal(variable.numpy(), value)

    def test_a_state_dict_that_does_not_fit_lists_the_keys(self, ported):
        state = fixture_weights(ported.meta)
        other = "maskrcnn_resnet50_fpn" if ported.arch == "fasterrcnn_resnet50_fpn" else None
        broken = dict(state)
        first, second = list(state)[:2]  # conv1.weight (4-D) and bn1.weight
        del broken[first]
        broken["roi_heads.extra.weight"] = np.zeros(3, np.float32)
        broken[second] = np.zeros((1, 2), np.float32)
        broken["backbone.body.layer1.0.conv1.weight"] = np.zeros((64, 64), np.float32)
        with pytest.raises(WeightsMismatchError) as error:
            tvp.convert_state_dict(broken, ported.model, ported.arch, source="broken.pth")
        message = str(error.value)
        assert f"missing from broken.pth (1): {first}" in message
        assert "roi_heads.extra.weight" in message and f"{second} [1, 2]" in message
        assert "layer1.0.conv1.weight [64, 64] -> " in message and "not convertible" in message
        if other is not None:  # a Faster R-CNN file given as Mask R-CNN: the mask keys are missing
            mask_model = builder.build_model(fixture_config(other, fixture_meta(other)))
            mask_model.build_with_dummy_inputs()
            with pytest.raises(WeightsMismatchError, match=r"mask_head\.0\.0\.weight"):
                tvp.convert_state_dict(state, mask_model, other, source="faster.pth")
        count = tvp.count_parameters(state, tvp.arch_of(ported.arch))
        assert count == ported.meta["num_params"] == tvp.arch_of(ported.arch).num_parameters


class ServedBySavedModel:
    def test_saved_model_serves_the_same_detections(self, ported, tmp_path):
        """The exported SavedModel (``image_bytes`` signature, both images in one request: the same
        512x512 padded batch as torchvision's) gives torchvision's detections in original pixels."""
        export_dir = export_saved_model(ported.model, str(tmp_path / "exported"),
                                        PreprocessConfig.from_recipe(ported.config))
        loaded = tf.saved_model.load(export_dir)
        data = [(FIXTURES / im["file"]).read_bytes() for im in ported.meta["images"]]
        out = loaded.signatures["image_bytes"](images=tf.constant(data))
        label_map = {c["id"]: c["dataset_id"] for c in tvp.coco_label_map().to_dict()["classes"]}
        assert all(k == v for k, v in label_map.items())  # COCO ids are the class ids
        for i, image in enumerate(ported.images):
            n = int(out["num_detections"][i])
            h, w = image.shape[:2]
            boxes = out["detection_boxes"][i, :n].numpy() * np.array([h, w, h, w], np.float32)
            ours = (boxes, out["detection_classes"][i, :n].numpy(),
                    out["detection_scores"][i, :n].numpy())
            want = (ported.ref[f"det.boxes.{i}"][:, YX], ported.ref[f"det.labels.{i}"],
                    ported.ref[f"det.scores.{i}"])
            matched = check_detections(want, ours, f"{ported.arch} SavedModel image {i}")
            if "detection_masks" in out:
                rows = np.flatnonzero(matched >= 0)
                masks = out["detection_masks"][i, :n].numpy()
                assert np.abs(masks[matched[rows]] - ported.ref[f"mask.probs.{i}"][rows]).max() <= (
                    MASK_TOL)


class ServedByPredict:
    def test_predict_on_the_imported_run(self, ported, tmp_path):
        """``python -m tf_rcnn.predict --checkpoint=RUN`` (one image at a time, in original pixels)
        gives what torchvision gives for each image alone."""
        from tf_rcnn import predict as predict_lib

        predict, names = predict_lib.load_predictor(checkpoint=ported.run_dir)
        assert names[1] == "person" and names[90] == "toothbrush"
        paths = [str(FIXTURES / im["file"]) for im in ported.meta["images"]]
        json_path, failures = predict_lib.predict_images(paths, predict, names, str(tmp_path), 0.0)
        assert failures == 0
        with open(json_path) as f:
            results = json.load(f)
        for i, result in enumerate(results):
            dets = result["detections"]
            ours = (np.array([d["box"] for d in dets], np.float32).reshape(-1, 4),
                    np.array([d["class_id"] for d in dets]), np.array([d["score"] for d in dets]))
            ref = ported.ref
            want = (ref[f"single.det.boxes.{i}"][:, YX], ref[f"single.det.labels.{i}"],
                    ref[f"single.det.scores.{i}"])
            check_detections(want, ours, f"{ported.arch} predict image {i}")


# Each architecture runs every stage. The two serving paths, which share everything after the
# model with each other and with the other architectures, each take one Faster and one Mask R-CNN
# (v1 and v2 both served) to keep the suite's time in check; the SavedModel is an R50-FPN export
# of about half a minute.


class TestFasterRCNNResNet50FPN(Stages, ServedByPredict):
    arch = "fasterrcnn_resnet50_fpn"


class TestMaskRCNNResNet50FPN(Stages, ServedBySavedModel):
    arch = "maskrcnn_resnet50_fpn"


class TestFasterRCNNResNet50FPNv2(Stages, ServedBySavedModel):
    arch = "fasterrcnn_resnet50_fpn_v2"


class TestMaskRCNNResNet50FPNv2(Stages, ServedByPredict):
    arch = "maskrcnn_resnet50_fpn_v2"
