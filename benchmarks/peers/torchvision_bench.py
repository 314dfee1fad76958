"""torchvision's Faster/Mask R-CNN R50-FPN on the CPU: inference and training speed (peer numbers).

Run with the venv made by ``benchmarks/peers/setup_torchvision.sh`` (PyPI's default torch 2.14.1
+ torchvision 0.29.1 wheels, CUDA builds running on the CPU with torchvision's own CPU kernels)::

    /tmp/tvenv/bin/python benchmarks/peers/torchvision_bench.py infer \\
        --model=fasterrcnn_resnet50_fpn --size=640 --proposals=1000 --runs=5
    /tmp/tvenv/bin/python benchmarks/peers/torchvision_bench.py train \\
        --model=maskrcnn_resnet50_fpn --size=512 --batch=2 --steps=5

Prints one line ``RESULT {json}``. Random weights, no download. All cores
(``torch.set_num_threads(os.cpu_count())``).

Model: by default (``--backbone_config=as_pretrained``) the architecture torchvision builds whenever
``weights`` or ``weights_backbone`` is given (FrozenBatchNorm2d, ``trainable_backbone_layers=3``,
torchvision's default), randomly initialised; this is what users of the COCO models run.
``--backbone_config=as_random`` is literally ``<model>(weights=None, weights_backbone=None)``, for
which torchvision switches to trainable BatchNorm2d and all 5 backbone stages trainable (it ignores
``trainable_backbone_layers`` without pretrained weights).

infer: the model is built with ``min_size=max_size=size`` (so GeneralizedRCNNTransform keeps a
size x size image at that size instead of resizing it to 800), ``rpn_pre_nms_top_n_test=1000``
(per FPN level, torchvision's meaning), ``rpn_post_nms_top_n_test=proposals``,
``box_detections_per_img=100`` and ``box_score_thresh`` = ``--score_thresh`` (default 0.0, so
that with random weights all proposals x 90 classes go through the full decoder + batched NMS
path whatever the random scores are; torchvision's default 0.05 makes the decoder's work depend
on the random init). Reported:
``build_s`` (model construction with random init), ``first_forward_s``, ``first_call_s`` =
build + first forward (the tf_rcnn benchmarks' definition: from un-built model to first
detections), ``full_s`` (median of ``--runs`` forwards after 2 warm-ups, eval mode,
``torch.inference_mode()``), ``backbone_fpn_s`` (median of ``model.backbone`` on the same
normalised 1x3xHxW tensor), ``ratio`` = full / backbone, ``peak_rss_mb`` (ru_maxrss).

train: ``model.train()``, SGD(lr=0.001, momentum=0.9, weight_decay=1e-4), ``--batch`` random
images with 3 random valid boxes each (and random elliptical instance masks for Mask R-CNN);
median seconds per step (and per image) over ``--steps`` steps after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torchvision
from torchvision.models import resnet50
from torchvision.models.detection import (
    FasterRCNN,
    MaskRCNN,
    fasterrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn,
)
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import misc as misc_nn_ops

MODELS = {
    "fasterrcnn_resnet50_fpn": (fasterrcnn_resnet50_fpn, FasterRCNN),
    "maskrcnn_resnet50_fpn": (maskrcnn_resnet50_fpn, MaskRCNN),
}


def build_model(name: str, backbone_config: str, **kwargs) -> torch.nn.Module:
    builder, cls = MODELS[name]
    if backbone_config == "as_random":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return builder(weights=None, weights_backbone=None, **kwargs)
    # What <builder>(weights_backbone=...) assembles, minus the download: random init.
    backbone = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(backbone, trainable_layers=3)
    return cls(backbone, num_classes=91, **kwargs)


def timed_runs(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _median_time(fn, runs: int, warmup: int = 2) -> tuple[float, list[float]]:
    times = timed_runs(fn, runs, warmup)
    return statistics.median(times), times


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _common(args) -> dict:
    return {
        "framework": "torchvision",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "backbone_config": args.backbone_config,
        "ops": "torchvision's own CPU kernels (PyPI default wheel, CUDA build "
        f"{torch.version.cuda}, cuda available: {torch.cuda.is_available()})",
    }


def infer(args) -> dict:
    size = args.size
    torch.manual_seed(0)
    image = torch.rand(3, size, size)
    start = time.perf_counter()
    model = build_model(
        args.model,
        args.backbone_config,
        min_size=size,
        max_size=size,
        rpn_pre_nms_top_n_test=args.pre_nms,
        rpn_post_nms_top_n_test=args.proposals,
        box_score_thresh=args.score_thresh,
        box_detections_per_img=100,
    )
    if args.full_proposals:
        with torch.no_grad():
            model.rpn.head.bbox_pred.weight.zero_()
            model.rpn.head.bbox_pred.bias.zero_()
        model.rpn.nms_thresh = 1.0
    model.eval()
    build_s = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        out = model([image])[0]
        first_forward_s = time.perf_counter() - start
        full_s, full_times = _median_time(lambda: model([image]), args.runs)
        images, _ = model.transform([image])
        tensor = images.tensors
        stage_proposals = model.rpn(images, model.backbone(tensor))[0][0].shape[0]
        backbone_s, backbone_times = _median_time(lambda: model.backbone(tensor), args.runs)
    result = {
        "mode": "infer",
        "model": args.model,
        "size": [size, size],
        "input_tensor_shape": list(tensor.shape),
        "proposals": args.proposals,
        "proposals_to_box_head": int(stage_proposals),
        "full_proposals": args.full_proposals,
        "rpn_pre_nms_top_n_test_per_level": args.pre_nms,
        "score_thresh": args.score_thresh,
        "detections": int(out["boxes"].shape[0]),
        "build_s": build_s,
        "first_forward_s": first_forward_s,
        "first_call_s": build_s + first_forward_s,
        "full_s": full_s,
        "backbone_fpn_s": backbone_s,
        "ratio": full_s / backbone_s,
        "full_min_s": min(full_times),
        "backbone_fpn_min_s": min(backbone_times),
        "full_times_s": full_times,
        "backbone_fpn_times_s": backbone_times,
        "runs": args.runs,
        "peak_rss_mb": peak_rss_mb(),
    }
    if "masks" in out:
        result["mask_shape"] = list(out["masks"].shape)
    result.update(_common(args))
    return result


def _random_targets(batch: int, size: int, with_masks: bool, gen: torch.Generator) -> list[dict]:
    targets = []
    ys = torch.arange(size, dtype=torch.float32)[:, None]
    xs = torch.arange(size, dtype=torch.float32)[None, :]
    for _ in range(batch):
        wh = (0.1 + 0.3 * torch.rand(3, 2, generator=gen)) * size
        xy = torch.rand(3, 2, generator=gen) * (size - wh)
        boxes = torch.cat([xy, xy + wh], 1)
        target = {"boxes": boxes, "labels": torch.randint(1, 91, (3,), generator=gen)}
        if with_masks:
            masks = []
            for x1, y1, x2, y2 in boxes.tolist():
                cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
                masks.append((((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0).to(torch.uint8))
            target["masks"] = torch.stack(masks)
        targets.append(target)
    return targets


def train(args) -> dict:
    size, batch = args.size, args.batch
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(args.model, args.backbone_config, min_size=size, max_size=size)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9, weight_decay=1e-4)
    images = [torch.rand(3, size, size, generator=gen) for _ in range(batch)]
    targets = _random_targets(batch, size, args.model.startswith("mask"), gen)
    losses = []

    def step():
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    start = time.perf_counter()
    step()
    first_step_s = time.perf_counter() - start
    step_s, step_times = _median_time(step, args.steps, warmup=2)
    result = {
        "mode": "train",
        "model": args.model,
        "size": [size, size],
        "batch": batch,
        "steps": args.steps,
        "first_step_s": first_step_s,
        "step_s": step_s,
        "per_image_s": step_s / batch,
        "images_per_s": batch / step_s,
        "step_min_s": min(step_times),
        "step_times_s": step_times,
        "losses": losses,
        "trainable_params": sum(p.numel() for p in params),
        "optimizer": "SGD(lr=0.001, momentum=0.9, weight_decay=1e-4)",
        "peak_rss_mb": peak_rss_mb(),
    }
    result.update(_common(args))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("infer", "train"):
        p = sub.add_parser(mode)
        p.add_argument("--model", choices=sorted(MODELS), default="fasterrcnn_resnet50_fpn")
        p.add_argument(
            "--backbone_config",
            "--backbone-config",
            choices=["as_pretrained", "as_random"],
            default="as_pretrained",
        )
        p.add_argument(
            "--threads",
            type=int,
            default=os.cpu_count(),
            help="torch.set_num_threads (default: os.cpu_count())",
        )
        if mode == "infer":
            p.add_argument("--size", type=int, default=640)
            p.add_argument("--proposals", type=int, default=1000)
            p.add_argument(
                "--pre_nms",
                "--pre-nms",
                type=int,
                default=1000,
                help="rpn_pre_nms_top_n_test (per FPN level)",
            )
            p.add_argument("--runs", type=int, default=5)
            p.add_argument("--score_thresh", "--score-thresh", type=float, default=0.0)
            p.add_argument(
                "--full_proposals",
                "--full-proposals",
                action="store_true",
                help="zero the RPN box-delta conv and set the RPN NMS IoU to 1.0 so exactly "
                "--proposals proposals (the top-scored anchors) reach the box head; random "
                "weights otherwise leave a data-dependent count",
            )
        else:
            p.add_argument("--size", type=int, default=512)
            p.add_argument("--batch", type=int, default=2)
            p.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = infer(args) if args.mode == "infer" else train(args)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
