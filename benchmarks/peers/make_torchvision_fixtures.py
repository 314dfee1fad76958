"""Record what torchvision's four ResNet-50-FPN R-CNN detectors compute, stage by stage, on
synthetic weights, so tf_rcnn's tests can check its port of them without torch.

Re-run it from the repository root with the torchvision venv (torch 2.14.1, torchvision 0.29.1,
numpy, pillow), then run the tests and commit the files::

    bash benchmarks/peers/setup_torchvision.sh /tmp/tvenv
    /tmp/tvenv/bin/python benchmarks/peers/make_torchvision_fixtures.py \
        [--out=tests/fixtures/torchvision] [--arch=NAME ...] [--threads=2]

It takes about two minutes on two CPU cores. The outputs are deterministic (fixed seeds, CPU
kernels, one thread count); a re-run should reproduce the files' arrays bit for bit on the same
machine type, and to float rounding elsewhere.

What it does, per architecture (``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``,
``fasterrcnn_resnet50_fpn_v2``, ``maskrcnn_resnet50_fpn_v2``):

1. Build the model as torchvision builds it for its COCO weights, but without downloading them,
   with ``num_classes=91`` and a small input size, ``min_size=320, max_size=512``:

   * v2 models: ``torchvision.models.detection.<arch>(weights=None, weights_backbone=None,
     num_classes=91, min_size=320, max_size=512)``; this is the same module tree as with
     ``weights=COCO_V1`` (``nn.BatchNorm2d`` everywhere, eps 1e-5, eval mode uses the running
     statistics).
   * v1 models: with ``weights=None`` the builder would put ``nn.BatchNorm2d`` in the backbone,
     but with the COCO weights it uses ``FrozenBatchNorm2d`` (``is_trained`` is true) and, after
     loading ``COCO_V1``, sets the eps of every ``FrozenBatchNorm2d`` to 0.0
     (``_utils.overwrite_eps``). This script replays those builder steps:
     ``resnet50(weights=None, norm_layer=FrozenBatchNorm2d)``, ``_resnet_fpn_extractor(backbone,
     3)``, ``FasterRCNN``/``MaskRCNN(backbone, num_classes=91, min_size=320, max_size=512)``,
     load the weights, ``overwrite_eps(model, 0.0)``; and checks that the state-dict keys equal
     those of the ``weights=None`` build less the ``num_batches_tracked`` buffers that
     ``FrozenBatchNorm2d`` does not have.

2. Load ``tf_rcnn.pretrained.synthetic.synthetic_state_dict(spec, seed=SEED)`` (imported from
   its file path, no tf_rcnn import) with ``strict=True``, where ``spec`` is the model's own
   state dict's ``(key, shape, dtype)`` list; switch to ``eval()``.
3. v1 models: check that torchvision's key upgrade accepts the same weights under their old
   spellings (FPN ``inner_blocks.<i>.weight``, RPN ``conv.weight``, Mask R-CNN
   ``mask_fcn<i+1>.weight``): load them into a fresh model and compare.
4. Run ``model([image_0, image_1])`` once (both images in one batch) with hooks on every stage,
   and record the results.
5. Run each image alone, ``model([image_i])``, and record its detections: a single image is
   padded to its own size (multiples of 32) instead of the batch's 512x512, which changes the
   features near the bottom and right edges, so ``python -m tf_rcnn.predict`` (one image at a
   time) is compared with these.

The inputs are two RGB uint8 images made from a NumPy seed (smooth colour gradients, Gaussian
blobs, rectangles and ellipses, a little noise), ``image_0.png`` of 347x523 (height x width) and
``image_1.png`` of 389x235, saved as PNG. The model gets them as float32 CHW tensors in [0, 1],
``uint8 / 255`` (what the weights' ``ObjectDetection`` preset transform does,
``convert_image_dtype``). With ``min_size=320, max_size=512``, image 0 is *downsampled* to 320x482
(the short side binds) and image 1 *upsampled* to 511x309 (the long side binds, and
``389 * (512 / 389)`` is 511.99999999999994 in float64, floored to 511); the padded batch is
2x3x512x512.

Files written to ``--out`` (default ``tests/fixtures/torchvision``):

* ``image_0.png``, ``image_1.png``: the inputs.
* ``<arch>.json``: ``arch``, ``seed`` (of the synthetic weights), ``image_seed``, ``min_size``,
  ``max_size``, ``image_mean``, ``image_std``, ``size_divisible``, ``frozen_bn`` (bool) and
  ``norm_eps`` (eps of the backbone normalisation layers: 0.0 for v1 = FrozenBatchNorm2d after
  ``overwrite_eps``, 1e-05 for v2 = BatchNorm2d), ``norm_eps_other`` (eps of BatchNorm2d outside
  the backbone body, v2 only), ``num_params`` (``sum(p.numel() for p in model.parameters())``, the
  figure torchvision's weight metadata quotes; FrozenBatchNorm2d buffers are not parameters),
  ``num_params_weights_none`` (the same for the plain ``weights=None`` build),
  ``state_dict_numel`` (elements of all state-dict entries), ``spec`` (list of ``[key, shape,
  dtype]`` in state-dict order), ``legacy_keys`` (old key -> new key pairs checked in step 3),
  ``images`` (file, original size, resized size), ``feature_levels``, ``sample_points``,
  ``box_head_rows``, ``pasted_masks``, ``detections_per_image``, ``weight_probes`` (for a few
  keys of the synthetic weights: first 4 values, float64 sum and sum of squares), ``versions``
  (torch, torchvision, numpy, python) and ``layout`` (a copy of the npz layout below).
* ``transform.npz``: the transform's output, the same for all four archs (the script checks
  that): ``transform.image_sizes`` int64 (2, 2), ``transform.batch_shape`` int64 (4,) as below;
  ``transform.row_index`` int64 (R,) and ``transform.rows`` (2, 3, R, W_pad): full rows of the
  normalised, resized and padded batch; ``transform.col_index`` int64 (Q,) and
  ``transform.cols`` (2, 3, H_pad, Q): full columns (both include rows/columns of padding).
* ``<arch>.npz`` (``np.savez_compressed``; float32 unless stated; ``i`` is the image index 0/1;
  CHW/NCHW layouts as torch has them; boxes are ``(x1, y1, x2, y2)``):

  transform (``GeneralizedRCNNTransform``, same for all four archs):
    ``transform.image_sizes`` int64 (2, 2): resized (height, width) before padding;
    ``transform.batch_shape`` int64 (4,): padded batch (N, C, H, W);
    ``transform.valid_mean``, ``transform.valid_std`` (2, 3): per image and channel over the
    resized (unpadded) region; ``transform.batch_mean``, ``transform.batch_std`` (2, 3): the same
    over the padded image;
    (full rows and columns of the padded batch are in ``transform.npz``).
  backbone + FPN, for each level ``L`` in ``0 1 2 3 pool``:
    ``features.L.shape`` int64 (4,); ``features.L.mean``, ``features.L.std`` (2, 256): per image
    and channel over the whole (padded) map; ``features.L.positions`` int64 (2, P, 2): (y, x)
    sample points (P = 64, drawn once per level and image from a fixed seed, the four corners
    first); ``features.L.values`` (2, P, 256): the feature vectors there.
  RPN (``RPNHead`` outputs and ``RegionProposalNetwork.filter_proposals``):
    ``rpn.L.logits_shape`` int64 (4,) (N, A, H, W) and ``rpn.L.deltas_shape`` (N, 4A, H, W);
    ``rpn.L.logits`` (2, P, A) and ``rpn.L.deltas`` (2, P, 4A) at ``features.L.positions``
    (channel ``4a + k`` is delta ``k`` in (dx, dy, dw, dh) of anchor ``a``);
    ``rpn.num_anchors_per_level`` int64 (5,);
    ``rpn.proposals.i`` (K_i, 4): all final proposals of image i, in the resized image's
    coordinates, in torchvision's order (descending objectness); ``rpn.scores.i`` (K_i,): their
    objectness probabilities (sigmoid of the logit).
  box head (``roi_heads``, evaluated on all proposals):
    ``box.roi_levels.i`` int64 (K_i,): the pyramid level (0 = ``'0'`` ... 3 = ``'3'``)
    ``MultiScaleRoIAlign``'s ``LevelMapper`` gives each proposal;
    ``box.roi_rows.i`` int64 (R_i,) and ``box.roi_features.i`` (R_i, 256, 7, 7): the
    ``box_roi_pool`` output (RoIAlign, 7x7, sampling ratio 2) for the first proposal mapped to
    each level that has one (R_i <= 3), given by their row in ``rpn.proposals.i``;
    ``box.head_features.i`` (8, 1024): ``box_head`` output for the first 8 proposals;
    ``box.class_logits.i`` (B_i, 91) and ``box.box_regression.i`` (B_i, 364): ``box_predictor``
    outputs for the first B_i = min(200, K_i) proposals (column ``4c + k`` is delta ``k`` of
    class ``c``).
  detections (``postprocess_detections`` then ``transform.postprocess``):
    ``det.boxes.i`` (D_i, 4): in the ORIGINAL image's coordinates, as the model returns them;
    ``det.boxes_resized.i`` (D_i, 4): the same boxes before ``transform.postprocess`` (resized
    image's coordinates); ``det.labels.i`` int64 (D_i,); ``det.scores.i`` (D_i,).
  Mask R-CNN only:
    ``mask.probs.i`` (D_i, 28, 28): ``maskrcnn_inference``'s output, the sigmoid of the mask
    logits of each detection's own label, before pasting (from a hook on
    ``mask_predictor`` and checked against the model's pre-paste result);
    ``mask.pasted.i`` uint8 (M_i, H_orig, W_orig): ``paste_masks_in_image`` output of the first
    M_i = min(4, D_i) detections, thresholded ``> 0.5`` (0/1);
    ``mask.pasted_row_index.i`` int64 (M_i,) and ``mask.pasted_rows.i`` (M_i, W_orig): the
    pasted probabilities (before thresholding) along one image row through each of those boxes
    (the row of the box centre).
  each image alone (step 5; batch of one, padded to 320x512 and 512x320):
    ``single.det.boxes.i`` (S_i, 4) in the original image's coordinates, ``single.det.labels.i``
    int64 (S_i,), ``single.det.scores.i`` (S_i,).

The script fails (non-zero exit) if any recorded float is not finite, if an image has fewer
than 20 detections, if a feature level is all zeros, or if the files exceed the size budget.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import platform
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from synthetic_images import make_image  # benchmarks/peers/, torch-free
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import misc as misc_nn_ops

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC_FILE = REPO / "tf_rcnn" / "pretrained" / "synthetic.py"

ARCHS = [
    "fasterrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "maskrcnn_resnet50_fpn_v2",
]
SEED = 20240611
IMAGE_SEED = 7
IMAGE_SIZES = [(347, 523), (389, 235)]  # (height, width); neither side a multiple of 32
MIN_SIZE = 320
MAX_SIZE = 512
NUM_CLASSES = 91
LEVELS = ["0", "1", "2", "3", "pool"]
SAMPLE_POINTS = 64
BOX_HEAD_ROWS = 200
ROI_FEATURE_ROWS = 3
HEAD_FEATURE_ROWS = 8
PASTED_MASKS = 4
MIN_DETECTIONS = 20
SIZE_BUDGET = 8 * 1024 * 1024  # bytes, all files together
TRANSFORM_ROWS = [0, 1, 2, 100, 255, 319, 320, 321, 400, 509, 510, 511]
TRANSFORM_SHARED = (
    "transform.row_index",
    "transform.rows",
    "transform.col_index",
    "transform.cols",
)
TRANSFORM_COLS = [0, 1, 2, 150, 307, 308, 309, 310, 400, 480, 481, 482, 483, 511]


def load_synthetic():
    spec = importlib.util.spec_from_file_location("tf_rcnn_synthetic", SYNTHETIC_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# inputs


def make_images() -> list[np.ndarray]:
    rng = np.random.default_rng(IMAGE_SEED)
    return [make_image(rng, h, w) for h, w in IMAGE_SIZES]


# --------------------------------------------------------------------------------------------
# models


def build_model(
    arch: str, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE
) -> tuple[torch.nn.Module, dict]:
    """The model torchvision builds for ``arch``'s COCO_V1 weights, before loading them
    (``min_size``/``max_size``: its transform's resize; torchvision's defaults are 800/1333)."""
    kwargs = {"num_classes": NUM_CLASSES, "min_size": min_size, "max_size": max_size}
    plain = getattr(torchvision.models.detection, arch)(
        weights=None, weights_backbone=None, **kwargs
    )
    info = {"num_params_weights_none": sum(p.numel() for p in plain.parameters())}
    if arch.endswith("_v2"):
        model = plain
        info["frozen_bn"] = False
    else:
        # faster_rcnn.fasterrcnn_resnet50_fpn / mask_rcnn.maskrcnn_resnet50_fpn with weights given:
        # is_trained -> FrozenBatchNorm2d, trainable_backbone_layers 3 (no effect in eval).
        backbone = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(backbone, 3)
        cls = MaskRCNN if arch.startswith("mask") else FasterRCNN
        model = cls(backbone, **kwargs)
        want = [k for k in plain.state_dict() if not k.endswith("num_batches_tracked")]
        assert list(model.state_dict()) == want, "v1 replay differs from torchvision's builder"
        info["frozen_bn"] = True
    info["num_params"] = sum(p.numel() for p in model.parameters())
    return model, info


def finish_v1(model: torch.nn.Module, arch: str) -> None:
    if not arch.endswith("_v2"):
        det_utils.overwrite_eps(model, 0.0)  # what loading COCO_V1 does
    frozen = [m for m in model.modules() if isinstance(m, misc_nn_ops.FrozenBatchNorm2d)]
    if arch.endswith("_v2"):
        assert not frozen
    else:
        assert frozen and all(m.eps == 0.0 for m in frozen)


def weight_probes(weights: dict[str, np.ndarray]) -> dict[str, dict]:
    """A few values of the synthetic weights, so a reader can check it rebuilt the very weights
    these outputs came from: per probed key the first 4 values, the float64 sum and sum of
    squares."""
    keys = list(weights)
    probed = [keys[0], keys[1], keys[-1], keys[-2]] + [
        k
        for k in keys
        if k.endswith(("layer4.2.bn3.weight", "fpn.layer_blocks.3.0.weight"))
        or k.startswith(("rpn.head.cls_logits.", "roi_heads.box_predictor.cls_score."))
        or k.endswith("conv5_mask.weight")
    ]
    out = {}
    for key in dict.fromkeys(probed):
        flat = weights[key].reshape(-1).astype(np.float64)
        out[key] = {
            "first": flat[:4].tolist(),
            "sum": float(flat.sum()),
            "sum_sq": float((flat * flat).sum()),
        }
    return out


def norm_eps(model: torch.nn.Module) -> dict:
    """The eps of the normalisation layers, in the backbone body and elsewhere (None: none)."""
    kinds = (torch.nn.BatchNorm2d, misc_nn_ops.FrozenBatchNorm2d)
    body = {m.eps for m in model.backbone.body.modules() if isinstance(m, kinds)}
    body_ids = {id(m) for m in model.backbone.body.modules()}
    other = {m.eps for m in model.modules() if isinstance(m, kinds) and id(m) not in body_ids}
    assert len(body) == 1 and len(other) <= 1, (body, other)
    return {"norm_eps": body.pop(), "norm_eps_other": other.pop() if other else None}


def legacy_keys(keys: list[str]) -> dict[str, str]:
    """Old spelling -> current key, for the renames torchvision's _load_from_state_dict hooks
    undo (FeaturePyramidNetwork / RPNHead / MaskRCNNHeads version < 2)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        name = parts[-1]
        if name not in ("weight", "bias"):
            continue
        if key.startswith("backbone.fpn.") and len(parts) == 6 and parts[4] == "0":
            # backbone.fpn.inner_blocks.<i>.0.weight <- backbone.fpn.inner_blocks.<i>.weight
            out[".".join(parts[:4] + [name])] = key
        elif key.startswith("rpn.head.conv.0.0."):
            out[f"rpn.head.conv.{name}"] = key
        elif key.startswith("roi_heads.mask_head.") and len(parts) == 5 and parts[3] == "0":
            out[f"roi_heads.mask_head.mask_fcn{int(parts[2]) + 1}.{name}"] = key
    return out


# --------------------------------------------------------------------------------------------
# running


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def sample_positions(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    corners = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
    rest = SAMPLE_POINTS - len(corners)
    ys = rng.integers(0, h, size=rest)
    xs = rng.integers(0, w, size=rest)
    return np.array(corners + list(zip(ys.tolist(), xs.tolist(), strict=True)), dtype=np.int64)


def run(model: torch.nn.Module, images: list[np.ndarray], is_mask: bool) -> tuple[dict, dict]:
    cap: dict = {}
    hooks = []

    def keep(name):
        def hook(module, inputs, output):
            cap[name] = output

        return hook

    hooks.append(model.transform.register_forward_hook(keep("transform")))
    hooks.append(model.backbone.register_forward_hook(keep("features")))
    hooks.append(model.rpn.head.register_forward_hook(keep("rpn_head")))
    hooks.append(model.roi_heads.box_roi_pool.register_forward_hook(keep("box_roi")))
    hooks.append(model.roi_heads.box_head.register_forward_hook(keep("box_head")))
    hooks.append(model.roi_heads.box_predictor.register_forward_hook(keep("box_predictor")))
    if is_mask:
        hooks.append(model.roi_heads.mask_predictor.register_forward_hook(keep("mask_logits")))

    rpn = model.rpn
    filter_proposals = rpn.filter_proposals

    def filter_and_keep(*args, **kwargs):
        out = filter_proposals(*args, **kwargs)
        cap["proposals"] = out
        return out

    rpn.filter_proposals = filter_and_keep
    postprocess = model.transform.postprocess

    def postprocess_and_keep(result, *args, **kwargs):
        cap["pre_postprocess"] = [{k: v.clone() for k, v in r.items()} for r in result]
        return postprocess(result, *args, **kwargs)

    model.transform.postprocess = postprocess_and_keep
    inputs = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images]
    inputs = [
        torchvision.transforms.functional.convert_image_dtype(t, torch.float32) for t in inputs
    ]
    try:
        with torch.no_grad():
            detections = model(inputs)
    finally:
        for h in hooks:
            h.remove()
        del rpn.filter_proposals
        del model.transform.postprocess
    return cap, detections


def record(
    model: torch.nn.Module, cap: dict, detections: list, images: list[np.ndarray], is_mask: bool
) -> dict:
    out: dict[str, np.ndarray] = {}
    n = len(images)
    image_list, _ = cap["transform"]
    batch = to_np(image_list.tensors)
    sizes = np.array([list(s) for s in image_list.image_sizes], dtype=np.int64)
    out["transform.image_sizes"] = sizes
    out["transform.batch_shape"] = np.array(batch.shape, dtype=np.int64)
    vm, vs = [], []
    for i, (h, w) in enumerate(sizes):
        valid = batch[i, :, :h, :w].reshape(3, -1).astype(np.float64)
        vm.append(valid.mean(1))
        vs.append(valid.std(1))
    out["transform.valid_mean"] = np.array(vm, np.float32)
    out["transform.valid_std"] = np.array(vs, np.float32)
    flat = batch.reshape(n, 3, -1).astype(np.float64)
    out["transform.batch_mean"] = flat.mean(2).astype(np.float32)
    out["transform.batch_std"] = flat.std(2).astype(np.float32)
    rows = np.array([r for r in TRANSFORM_ROWS if r < batch.shape[2]], np.int64)
    cols = np.array([c for c in TRANSFORM_COLS if c < batch.shape[3]], np.int64)
    out["transform.row_index"], out["transform.rows"] = rows, batch[:, :, rows, :]
    out["transform.col_index"], out["transform.cols"] = cols, batch[:, :, :, cols]

    features = cap["features"]
    assert list(features) == LEVELS, list(features)
    logits, deltas = cap["rpn_head"]
    rng = np.random.default_rng(12345)
    for lvl, (name, fmap) in enumerate(features.items()):
        f = to_np(fmap)
        out[f"features.{name}.shape"] = np.array(f.shape, np.int64)
        f64 = f.reshape(n, f.shape[1], -1).astype(np.float64)
        out[f"features.{name}.mean"] = f64.mean(2).astype(np.float32)
        out[f"features.{name}.std"] = f64.std(2).astype(np.float32)
        pos = np.stack([sample_positions(rng, f.shape[2], f.shape[3]) for _ in range(n)])
        out[f"features.{name}.positions"] = pos
        lg, dl = to_np(logits[lvl]), to_np(deltas[lvl])
        out[f"rpn.{name}.logits_shape"] = np.array(lg.shape, np.int64)
        out[f"rpn.{name}.deltas_shape"] = np.array(dl.shape, np.int64)
        vals, lvals, dvals = [], [], []
        for i in range(n):
            ys, xs = pos[i, :, 0], pos[i, :, 1]
            vals.append(f[i][:, ys, xs].T)
            lvals.append(lg[i][:, ys, xs].T)
            dvals.append(dl[i][:, ys, xs].T)
        out[f"features.{name}.values"] = np.stack(vals)
        out[f"rpn.{name}.logits"] = np.stack(lvals)
        out[f"rpn.{name}.deltas"] = np.stack(dvals)
    out["rpn.num_anchors_per_level"] = np.array(
        [int(np.prod(to_np(lg).shape[1:])) for lg in logits], np.int64
    )

    boxes, scores = cap["proposals"]
    counts = [len(b) for b in boxes]
    roi = to_np(cap["box_roi"])
    head = to_np(cap["box_head"])
    class_logits, box_regression = (to_np(t) for t in cap["box_predictor"])
    assert roi.shape[0] == head.shape[0] == class_logits.shape[0] == sum(counts)
    start = 0
    for i in range(n):
        out[f"rpn.proposals.{i}"] = to_np(boxes[i])
        out[f"rpn.scores.{i}"] = to_np(scores[i])
        stop = start + counts[i]
        levels = to_np(model.roi_heads.box_roi_pool.map_levels([boxes[i]])).astype(np.int64)
        out[f"box.roi_levels.{i}"] = levels
        rows, seen = [], set()
        for r, lvl in enumerate(levels.tolist()):
            if lvl not in seen and len(rows) < ROI_FEATURE_ROWS:
                rows.append(r)
                seen.add(lvl)
        out[f"box.roi_rows.{i}"] = np.array(rows, np.int64)
        out[f"box.roi_features.{i}"] = roi[start + np.array(rows, np.int64)]
        out[f"box.head_features.{i}"] = head[start : start + min(HEAD_FEATURE_ROWS, counts[i])]
        rows_i = min(BOX_HEAD_ROWS, counts[i])
        out[f"box.class_logits.{i}"] = class_logits[start : start + rows_i]
        out[f"box.box_regression.{i}"] = box_regression[start : start + rows_i]
        start = stop

    pre = cap["pre_postprocess"]
    if is_mask:
        mask_logits = cap["mask_logits"]
        labels = torch.cat([r["labels"] for r in pre])
        probs = mask_logits.sigmoid()[torch.arange(len(labels)), labels]
        probs = to_np(probs)
    start = 0
    for i, det in enumerate(detections):
        out[f"det.boxes.{i}"] = to_np(det["boxes"])
        out[f"det.boxes_resized.{i}"] = to_np(pre[i]["boxes"])
        out[f"det.labels.{i}"] = to_np(det["labels"]).astype(np.int64)
        out[f"det.scores.{i}"] = to_np(det["scores"])
        if is_mask:
            d = len(det["labels"])
            mine = probs[start : start + d]
            start += d
            model_probs = to_np(pre[i]["masks"])[:, 0]
            np.testing.assert_array_equal(mine, model_probs)
            out[f"mask.probs.{i}"] = mine
            pasted = to_np(det["masks"])[:PASTED_MASKS, 0]
            out[f"mask.pasted.{i}"] = (pasted > 0.5).astype(np.uint8)
            centre = to_np(det["boxes"])[:PASTED_MASKS]
            row_idx = np.clip(
                ((centre[:, 1] + centre[:, 3]) / 2).astype(np.int64), 0, pasted.shape[1] - 1
            )
            out[f"mask.pasted_row_index.{i}"] = row_idx
            out[f"mask.pasted_rows.{i}"] = pasted[np.arange(len(row_idx)), row_idx]
    return out


def run_alone(model: torch.nn.Module, images: list[np.ndarray]) -> dict:
    """Detections of each image run as a batch of one (step 5)."""
    out: dict[str, np.ndarray] = {}
    for i, image in enumerate(images):
        tensor = torchvision.transforms.functional.convert_image_dtype(
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.float32)
        with torch.no_grad():
            (det,) = model([tensor])
        out[f"single.det.boxes.{i}"] = to_np(det["boxes"])
        out[f"single.det.labels.{i}"] = to_np(det["labels"]).astype(np.int64)
        out[f"single.det.scores.{i}"] = to_np(det["scores"])
    return out


def check(arrays: dict, arch: str) -> list[int]:
    for key, value in arrays.items():
        if value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), f"{arch}: {key} has non-finite values"
            assert value.dtype == np.float32, f"{arch}: {key} is {value.dtype}"
    for name in LEVELS:
        std = arrays[f"features.{name}.std"]
        assert np.all(std.max(axis=1) > 0), f"{arch}: level {name} is constant"
    counts = [len(arrays[f"det.scores.{i}"]) for i in range(len(IMAGE_SIZES))]
    if min(counts) < MIN_DETECTIONS:
        raise SystemExit(
            f"{arch}: detections per image {counts} < {MIN_DETECTIONS}; "
            "tune the rules of tf_rcnn/pretrained/synthetic.py"
        )
    return counts


def dump_json(meta: dict) -> str:
    """JSON with one spec entry per line (readable, and half the size of indent=1 throughout)."""
    spec = meta.pop("spec")
    text = json.dumps(meta, indent=1)
    lines = ",\n".join("  " + json.dumps(entry) for entry in spec)
    return text[:-2] + ',\n "spec": [\n' + lines + "\n ]\n}\n"


def summary(arrays: dict) -> str:
    parts = []
    for name in LEVELS:
        parts.append(f"{name}: std {arrays[f'features.{name}.std'].mean():.3g}")
    n = len(IMAGE_SIZES)
    parts.append("proposals " + "/".join(str(len(arrays[f"rpn.proposals.{i}"])) for i in range(n)))
    parts.append(
        "rpn score range "
        + "/".join(
            f"{arrays[f'rpn.scores.{i}'].min():.3f}..{arrays[f'rpn.scores.{i}'].max():.3f}"
            for i in range(n)
        )
    )
    parts.append("detections " + "/".join(str(len(arrays[f"det.scores.{i}"])) for i in range(n)))
    return "; ".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "torchvision"))
    parser.add_argument("--arch", action="append", choices=ARCHS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    synthetic = load_synthetic()

    images = make_images()
    for i, image in enumerate(images):
        Image.fromarray(image).save(out_dir / f"image_{i}.png", optimize=True)
        back = np.asarray(Image.open(out_dir / f"image_{i}.png").convert("RGB"))
        assert np.array_equal(back, image)

    versions = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    transform_arrays = None
    for arch in args.arch or ARCHS:
        t0 = time.perf_counter()
        model, info = build_model(arch)
        spec = synthetic.spec_of({k: v.numpy() for k, v in model.state_dict().items()})
        weights = synthetic.synthetic_state_dict(spec, SEED)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
        finish_v1(model, arch)
        model.eval()
        info.update(norm_eps(model))

        # Only v1 checkpoints were ever written with the old spellings (v2 came later).
        renames = {} if arch.endswith("_v2") else legacy_keys([k for k, _, _ in spec])
        if renames:
            old = {new: old for old, new in renames.items()}
            legacy = OrderedDict((old.get(k, k), torch.from_numpy(v)) for k, v in weights.items())
            fresh = copy.deepcopy(model)
            for p in fresh.state_dict().values():
                p.zero_() if p.is_floating_point() else None
            fresh.load_state_dict(legacy, strict=True)
            for k, v in fresh.state_dict().items():
                assert torch.equal(v, model.state_dict()[k]), f"legacy key upgrade broke {k}"
            del fresh

        is_mask = arch.startswith("mask")
        cap, detections = run(model, images, is_mask)
        arrays = record(model, cap, detections, images, is_mask)
        arrays.update(run_alone(model, images))
        counts = check(arrays, arch)
        shared = {k: arrays.pop(k) for k in list(arrays) if k in TRANSFORM_SHARED}
        shared["transform.image_sizes"] = arrays["transform.image_sizes"]
        shared["transform.batch_shape"] = arrays["transform.batch_shape"]
        if transform_arrays is None:
            transform_arrays = shared
            np.savez_compressed(out_dir / "transform.npz", **shared)
        else:
            for k, v in shared.items():
                assert np.array_equal(v, transform_arrays[k]), f"{arch}: transform differs at {k}"
        np.savez_compressed(out_dir / f"{arch}.npz", **arrays)
        meta = {
            "arch": arch,
            "seed": SEED,
            "image_seed": IMAGE_SEED,
            "min_size": MIN_SIZE,
            "max_size": MAX_SIZE,
            "num_classes": NUM_CLASSES,
            "image_mean": list(model.transform.image_mean),
            "image_std": list(model.transform.image_std),
            "size_divisible": model.transform.size_divisible,
            **info,
            "state_dict_numel": int(sum(int(np.prod(s)) for _, s, _ in spec)),
            "images": [
                {
                    "file": f"image_{i}.png",
                    "original_size": list(IMAGE_SIZES[i]),
                    "resized_size": arrays["transform.image_sizes"][i].tolist(),
                }
                for i in range(len(images))
            ],
            "feature_levels": LEVELS,
            "sample_points": SAMPLE_POINTS,
            "box_head_rows": BOX_HEAD_ROWS,
            "pasted_masks": PASTED_MASKS if is_mask else 0,
            "detections_per_image": counts,
            "versions": versions,
            "layout": __doc__[__doc__.index("* ``<arch>.npz``") :].split("\nThe script fails")[0],
            "weight_probes": weight_probes(weights),
            "legacy_keys": renames,
            "spec": [[k, list(s), d] for k, s, d in spec],
        }
        (out_dir / f"{arch}.json").write_text(dump_json(meta))
        print(f"{arch}: {time.perf_counter() - t0:.1f}s; {summary(arrays)}", flush=True)

    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(f"fixtures: {total / 1e6:.2f} MB in {out_dir}")
    if total > SIZE_BUDGET:
        raise SystemExit(f"fixtures take {total} bytes > budget {SIZE_BUDGET}")


if __name__ == "__main__":
    main()
