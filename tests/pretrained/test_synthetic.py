"""tf_rcnn.pretrained.synthetic and the torchvision fixtures made with it.

The files in tests/fixtures/torchvision were written by torchvision 0.29.1 through
benchmarks/peers/make_torchvision_fixtures.py (see its docstring to re-create them); torch is
not needed here. These tests check the generator (deterministic, order-free, every key of each
fixture's spec with its shape and dtype, the very weights the fixtures were made with) and that
the fixture files have the documented layout; the comparisons of tf_rcnn's detectors with the
recorded outputs live with the detectors' tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import imported_roots, run_module_by_path
from tf_rcnn.pretrained import synthetic

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "torchvision"
MODULE_FILE = Path(synthetic.__file__)
ARCHS = [
    "fasterrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "maskrcnn_resnet50_fpn_v2",
]
LEVELS = ["0", "1", "2", "3", "pool"]
NUM_PARAMS = {  # torchvision's weight metadata (num_params) for the COCO_V1 weights
    "fasterrcnn_resnet50_fpn": 41_755_286,
    "maskrcnn_resnet50_fpn": 44_401_393,
    "fasterrcnn_resnet50_fpn_v2": 43_712_278,
    "maskrcnn_resnet50_fpn_v2": 46_359_409,
}
SMALL_SPEC = [
    ("body.conv1.weight", (8, 3, 3, 3), "float32"),
    ("body.bn1.weight", (8,), "float32"),
    ("body.bn1.bias", (8,), "float32"),
    ("body.bn1.running_mean", (8,), "float32"),
    ("body.bn1.running_var", (8,), "float32"),
    ("body.bn1.num_batches_tracked", (), "int64"),
    ("body.layer1.0.bn3.weight", (8,), "float32"),
    ("body.layer1.0.bn3.running_var", (8,), "float32"),
    ("head.fc.weight", (5, 16), "float32"),
    ("head.fc.bias", (5,), "float32"),
    ("roi_heads.box_predictor.cls_score.weight", (4, 16), "float32"),
    ("roi_heads.box_predictor.cls_score.bias", (4,), "float32"),
    ("roi_heads.mask_predictor.conv5_mask.weight", (6, 4, 2, 2), "float32"),
    ("odd.scale", (3,), "float64"),
]


def _meta(arch: str) -> dict:
    return json.loads((FIXTURES / f"{arch}.json").read_text())


def _spec(meta: dict) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(shape), dtype) for k, shape, dtype in meta["spec"]]


@pytest.fixture(scope="module")
def metas() -> dict[str, dict]:
    return {arch: _meta(arch) for arch in ARCHS}


# --------------------------------------------------------------------------------------------
# the generator


def test_same_seed_same_arrays_and_key_order_does_not_matter():
    a = synthetic.synthetic_state_dict(SMALL_SPEC, 3)
    b = synthetic.synthetic_state_dict(SMALL_SPEC, 3)
    c = synthetic.synthetic_state_dict(list(reversed(SMALL_SPEC)), 3)
    assert list(a) == [k for k, _, _ in SMALL_SPEC]
    assert list(c) == [k for k, _, _ in reversed(SMALL_SPEC)]
    for key, value in a.items():
        np.testing.assert_array_equal(value, b[key], err_msg=key)
        np.testing.assert_array_equal(value, c[key], err_msg=key)
        assert value.dtype == c[key].dtype and value.shape == c[key].shape


def test_an_entry_depends_on_its_key_and_seed_not_on_the_other_entries():
    full = synthetic.synthetic_state_dict(SMALL_SPEC, 3)
    alone = synthetic.synthetic_state_dict([SMALL_SPEC[-3]], 3)
    np.testing.assert_array_equal(alone[SMALL_SPEC[-3][0]], full[SMALL_SPEC[-3][0]])
    other_seed = synthetic.synthetic_state_dict(SMALL_SPEC, 4)
    for key, value in full.items():
        if key.endswith("num_batches_tracked"):
            continue
        assert not np.array_equal(value, other_seed[key]), key
    # the same shape under another key gets other values
    renamed = synthetic.synthetic_state_dict([("head.fc2.weight", (5, 16), "float32")], 3)
    assert not np.array_equal(renamed["head.fc2.weight"], full["head.fc.weight"])


def test_rules_by_kind():
    sd = synthetic.synthetic_state_dict(SMALL_SPEC, 0)
    assert sd["body.bn1.num_batches_tracked"].dtype == np.int64
    assert sd["body.bn1.num_batches_tracked"].shape == ()
    assert sd["body.bn1.num_batches_tracked"] == 0
    low, high = synthetic.NORM_GAMMA
    assert np.all((sd["body.bn1.weight"] >= low) & (sd["body.bn1.weight"] <= high))
    low, high = synthetic.RESIDUAL_GAMMA
    assert np.all(
        (sd["body.layer1.0.bn3.weight"] >= low) & (sd["body.layer1.0.bn3.weight"] <= high)
    )
    assert np.all((sd["body.bn1.running_var"] >= 0.5) & (sd["body.bn1.running_var"] <= 1.5))
    # conv / linear weights are centred over their fan-in axes
    np.testing.assert_allclose(sd["body.conv1.weight"].mean(axis=(1, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(sd["head.fc.weight"].mean(axis=1), 0, atol=1e-6)
    # the transposed convolution's fan in is its axis 0
    np.testing.assert_allclose(
        sd["roi_heads.mask_predictor.conv5_mask.weight"].mean(axis=0), 0, atol=1e-6
    )
    # the background class gets the large bias
    bias = sd["roi_heads.box_predictor.cls_score.bias"]
    assert bias[0] == pytest.approx(synthetic.BACKGROUND_BIAS, abs=0.1)
    assert np.all(np.abs(bias[1:]) < 0.1)
    assert sd["odd.scale"].dtype == np.float64
    for key, value in sd.items():
        assert value.flags.c_contiguous and value.dtype.isnative, key
        assert np.all(np.isfinite(value)), key


def test_spec_of_round_trips():
    sd = synthetic.synthetic_state_dict(SMALL_SPEC, 1)
    assert synthetic.spec_of(sd) == [(k, tuple(s), d) for k, s, d in SMALL_SPEC]


def test_duplicate_keys_and_negative_seed_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        synthetic.synthetic_state_dict([SMALL_SPEC[0], SMALL_SPEC[0]], 0)
    with pytest.raises(ValueError, match="seed"):
        synthetic.synthetic_state_dict(SMALL_SPEC[:1], -1)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_key_of_each_fixture_spec(arch, metas):
    meta = metas[arch]
    spec = _spec(meta)
    sd = synthetic.synthetic_state_dict(spec, meta["seed"])
    assert list(sd) == [k for k, _, _ in spec]
    for key, shape, dtype in spec:
        assert sd[key].shape == shape, key
        assert sd[key].dtype == np.dtype(dtype), key
    assert sum(v.size for v in sd.values()) == meta["state_dict_numel"]
    # the very weights the fixtures were made with
    for key, probe in meta["weight_probes"].items():
        flat = sd[key].reshape(-1).astype(np.float64)
        np.testing.assert_allclose(flat[:4], probe["first"], rtol=1e-7, atol=0, err_msg=key)
        np.testing.assert_allclose(flat.sum(), probe["sum"], rtol=1e-6, atol=1e-5, err_msg=key)
        np.testing.assert_allclose((flat * flat).sum(), probe["sum_sq"], rtol=1e-6, err_msg=key)


def test_fixture_specs_and_parameter_counts(metas):
    for arch, meta in metas.items():
        assert meta["num_params"] == NUM_PARAMS[arch], arch
        spec = _spec(meta)
        keys = [k for k, _, _ in spec]
        has_nbt = any(k.endswith("num_batches_tracked") for k in keys)
        if arch.endswith("_v2"):
            assert not meta["frozen_bn"] and meta["norm_eps"] == 1e-5
            assert "backbone.fpn.inner_blocks.0.1.running_var" in keys
            assert meta["norm_eps_other"] == 1e-5 and has_nbt
        else:
            # FrozenBatchNorm2d with eps 0 (what loading the COCO_V1 weights gives); it has no
            # num_batches_tracked buffer
            assert meta["frozen_bn"] and meta["norm_eps"] == 0.0 and not has_nbt
            assert "backbone.fpn.inner_blocks.0.0.bias" in keys
            assert meta["legacy_keys"]["rpn.head.conv.weight"] == "rpn.head.conv.0.0.weight"
    # Faster and Mask R-CNN share every key but the mask branch
    for v in ("", "_v2"):
        faster = _spec(metas[f"fasterrcnn_resnet50_fpn{v}"])
        mask = _spec(metas[f"maskrcnn_resnet50_fpn{v}"])
        assert [e for e in mask if not e[0].startswith("roi_heads.mask_")] == faster


def test_module_loads_by_path_without_tf_rcnn():
    run_module_by_path(MODULE_FILE, "\n".join([
        "sd = module.synthetic_state_dict([('a.weight', (2, 3), 'float32')], 0)",
        "assert sd['a.weight'].shape == (2, 3)",
    ]))


def test_module_imports_only_stdlib_and_numpy():
    roots = imported_roots(MODULE_FILE)
    assert roots <= {"__future__", "collections", "numpy", "zlib"}, roots


# --------------------------------------------------------------------------------------------
# the fixture files


def test_images_and_transform(metas):
    with np.load(FIXTURES / "transform.npz") as z:
        t = {k: z[k] for k in z.files}
    assert set(t) == {
        "transform.image_sizes",
        "transform.batch_shape",
        "transform.row_index",
        "transform.rows",
        "transform.col_index",
        "transform.cols",
    }
    n, c, h, w = t["transform.batch_shape"].tolist()
    assert (n, c) == (2, 3) and h % 32 == 0 and w % 32 == 0
    assert t["transform.rows"].shape == (2, 3, len(t["transform.row_index"]), w)
    assert t["transform.cols"].shape == (2, 3, h, len(t["transform.col_index"]))
    assert t["transform.rows"].dtype == np.float32
    for i, (rh, rw) in enumerate(t["transform.image_sizes"].tolist()):
        # padding (bottom and right) is zero
        rows = t["transform.row_index"]
        assert np.all(t["transform.rows"][i][:, rows >= rh] == 0)
        assert np.all(t["transform.rows"][i][:, rows < rh][..., rw:] == 0)
    for meta in metas.values():
        assert meta["min_size"] == 320 and meta["max_size"] == 512
        for i, image in enumerate(meta["images"]):
            with Image.open(FIXTURES / image["file"]) as im:
                assert im.mode == "RGB"
                assert [im.height, im.width] == image["original_size"]
            assert image["resized_size"] == t["transform.image_sizes"][i].tolist()
            assert all(s % 32 for s in image["original_size"])
    # 347x523 -> 320x482 (short side binds); 389x235 -> 511x309 (long side binds and
    # 389 * (512 / 389) = 511.99999999999994 in float64, floored)
    assert t["transform.image_sizes"].tolist() == [[320, 482], [511, 309]]


@pytest.mark.parametrize("arch", ARCHS)
def test_fixture_layout(arch, metas):
    meta = metas[arch]
    with np.load(FIXTURES / f"{arch}.npz") as z:
        a = {k: z[k] for k in z.files}
    for key, value in a.items():
        if value.dtype.kind == "f":
            assert value.dtype == np.float32, key
            assert np.all(np.isfinite(value)), key
    n = 2
    sizes = a["transform.image_sizes"]
    assert sizes.shape == (n, 2) and a["transform.batch_shape"].tolist() == [n, 3, 512, 512]
    for name in ("valid_mean", "valid_std", "batch_mean", "batch_std"):
        assert a[f"transform.{name}"].shape == (n, 3)
    p = meta["sample_points"]
    for lvl, stride in zip(LEVELS, (4, 8, 16, 32, 64), strict=True):
        shape = a[f"features.{lvl}.shape"].tolist()
        assert shape == [n, 256, 512 // stride, 512 // stride], lvl
        assert a[f"features.{lvl}.mean"].shape == (n, 256)
        assert a[f"features.{lvl}.std"].shape == (n, 256)
        pos = a[f"features.{lvl}.positions"]
        assert pos.shape == (n, p, 2) and pos.dtype == np.int64
        assert pos.min() >= 0 and np.all(pos.max(axis=(0, 1)) < shape[2:])
        assert a[f"features.{lvl}.values"].shape == (n, p, 256)
        assert a[f"rpn.{lvl}.logits_shape"].tolist() == [n, 3] + shape[2:]
        assert a[f"rpn.{lvl}.deltas_shape"].tolist() == [n, 12] + shape[2:]
        assert a[f"rpn.{lvl}.logits"].shape == (n, p, 3)
        assert a[f"rpn.{lvl}.deltas"].shape == (n, p, 12)
        assert np.all(a[f"features.{lvl}.std"].max(axis=1) > 0.1), lvl
    assert a["rpn.num_anchors_per_level"].tolist() == [
        3 * (512 // s) ** 2 for s in (4, 8, 16, 32, 64)
    ]
    is_mask = arch.startswith("mask")
    counts = []
    for i in range(n):
        h, w = sizes[i].tolist()
        props, scores = a[f"rpn.proposals.{i}"], a[f"rpn.scores.{i}"]
        k = len(props)
        assert props.shape == (k, 4) and scores.shape == (k,) and 0 < k <= 1000
        assert np.all(np.diff(scores) <= 0)  # descending objectness
        assert np.all(props >= 0) and np.all(props[:, 2] <= w) and np.all(props[:, 3] <= h)
        assert a[f"box.roi_levels.{i}"].shape == (k,)
        rows = a[f"box.roi_rows.{i}"]
        assert a[f"box.roi_features.{i}"].shape == (len(rows), 256, 7, 7)
        assert len(set(a[f"box.roi_levels.{i}"][rows].tolist())) == len(rows) >= 2
        b = min(meta["box_head_rows"], k)
        assert a[f"box.head_features.{i}"].shape == (min(8, k), 1024)
        assert a[f"box.class_logits.{i}"].shape == (b, 91)
        assert a[f"box.box_regression.{i}"].shape == (b, 364)
        d = len(a[f"det.scores.{i}"])
        counts.append(d)
        assert a[f"det.boxes.{i}"].shape == (d, 4) and a[f"det.boxes_resized.{i}"].shape == (d, 4)
        assert a[f"det.labels.{i}"].dtype == np.int64
        assert np.all((a[f"det.labels.{i}"] >= 1) & (a[f"det.labels.{i}"] <= 90))
        assert np.all(a[f"det.scores.{i}"] > 0.05) and np.all(np.diff(a[f"det.scores.{i}"]) <= 0)
        oh, ow = meta["images"][i]["original_size"]
        boxes = a[f"det.boxes.{i}"]
        assert np.all(boxes >= 0) and np.all(boxes[:, 2] <= ow + 1e-3)
        assert np.all(boxes[:, 3] <= oh + 1e-3)
        single = len(a[f"single.det.scores.{i}"])  # the image alone (predict's batch of one)
        assert a[f"single.det.boxes.{i}"].shape == (single, 4) and single >= 20
        assert a[f"single.det.labels.{i}"].dtype == np.int64
        assert np.all(np.diff(a[f"single.det.scores.{i}"]) <= 0)
        if is_mask:
            assert a[f"mask.probs.{i}"].shape == (d, 28, 28)
            probs = a[f"mask.probs.{i}"]
            assert np.all((probs > 0) & (probs < 1))
            m = min(meta["pasted_masks"], d)
            pasted = a[f"mask.pasted.{i}"]
            assert pasted.shape == (m, oh, ow) and pasted.dtype == np.uint8
            assert set(np.unique(pasted).tolist()) <= {0, 1} and pasted.any()
            assert a[f"mask.pasted_row_index.{i}"].shape == (m,)
            assert a[f"mask.pasted_rows.{i}"].shape == (m, ow)
        else:
            assert not any(key.startswith("mask.") for key in a)
    assert counts == meta["detections_per_image"]
    assert min(counts) >= 20 and max(counts) <= 100


def test_faster_and_mask_rcnn_agree_up_to_the_masks():
    # same keys, same synthetic weights: identical outputs until the mask branch
    for v in ("", "_v2"):
        with (
            np.load(FIXTURES / f"fasterrcnn_resnet50_fpn{v}.npz") as f,
            np.load(FIXTURES / f"maskrcnn_resnet50_fpn{v}.npz") as m,
        ):
            assert set(f.files) == {k for k in m.files if not k.startswith("mask.")}
            for key in f.files:
                np.testing.assert_array_equal(f[key], m[key], err_msg=f"{v} {key}")
