"""torchvision's four COCO R-CNN detectors on the CPU with given weights: inference speed (the
peer of ``benchmarks/pretrained.py``).

Run with the venv made by ``benchmarks/peers/setup_torchvision.sh`` (torch 2.14.1, torchvision
0.29.1, numpy, pillow)::

    /tmp/tvenv/bin/python benchmarks/peers/torchvision_pretrained_bench.py \\
        --arch=maskrcnn_resnet50_fpn --weights=WEIGHTS.npz --image=IMAGE.png [--runs=5]

``WEIGHTS.npz`` is a state dict as ``tf_rcnn.formats.torch_checkpoint.save_npz`` writes it (one
``<key>.npy`` per entry; ``benchmarks/pretrained.py`` writes the synthetic weights of
``tf_rcnn.pretrained.synthetic`` there). The model is built exactly as torchvision builds it for
its COCO_V1 weights, by ``make_torchvision_fixtures.build_model`` (v1: FrozenBatchNorm2d, eps set
to 0 after loading, as ``overwrite_eps`` does), but with torchvision's default transform sizes
``min_size=800, max_size=1333``; the weights are loaded with ``strict=True``; eval mode,
``torch.inference_mode()``, ``torch.set_num_threads(--threads)`` (default: all cores).

The image (RGB, uint8) is given to the model as torchvision's ``ObjectDetection`` preset does:
float32 CHW in [0, 1] (made once, outside the timings). Reported, in seconds:

- ``build_s``: build + load the weights + eval; ``first_forward_s``; ``first_call_s`` = both
  (from nothing to the first detections, the tf_rcnn benchmarks' definition);
- ``full_s``: median of ``--runs`` calls ``model([image])`` after 2 warm-ups: transform (normalise,
  resize, pad to 32), backbone + FPN, RPN, RoI heads and ``transform.postprocess`` (boxes back to
  the original size and, for Mask R-CNN, every mask pasted into a full-image canvas);
- ``network_s``: the same without the transform and postprocess, i.e. ``backbone``, ``rpn`` and
  ``roi_heads`` on the transformed batch (28x28 mask probabilities, boxes in the resized image):
  the work a tf_rcnn model call does on a preprocessed batch;
- ``transform_s`` and ``postprocess_s``: those two parts alone;
- ``backbone_fpn_s``: ``model.backbone`` on the transformed batch;
- ``detections``: the number of detections, with their ``boxes`` (x1, y1, x2, y2, original
  image), ``labels`` and ``scores``; ``peak_rss_mb`` (``ru_maxrss``).

Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms.functional import convert_image_dtype

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling peer scripts

from torchvision_bench import peak_rss_mb, timed_runs  # noqa: E402


def load_fixtures_module():
    """``make_torchvision_fixtures.py`` (its ``build_model`` and ``finish_v1``) by file path."""
    spec = importlib.util.spec_from_file_location("make_torchvision_fixtures",
                                                  HERE / "make_torchvision_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_weights(path: str) -> dict[str, torch.Tensor]:
    with np.load(path) as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


def measure(args: argparse.Namespace, fixtures) -> dict:
    array = np.asarray(Image.open(args.image).convert("RGB"))
    image = convert_image_dtype(
        torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), torch.float32)
    weights = load_weights(args.weights)

    start = time.perf_counter()
    model, _ = fixtures.build_model(args.arch, min_size=800, max_size=1333)
    model.load_state_dict(weights, strict=True)
    fixtures.finish_v1(model, args.arch)
    model.eval()
    build_s = time.perf_counter() - start
    del weights

    with torch.inference_mode():
        start = time.perf_counter()
        (out,) = model([image])
        first_forward_s = time.perf_counter() - start
        full = timed_runs(lambda: model([image]), args.runs)

        batch, _ = model.transform([image])
        features = model.backbone(batch.tensors)

        def network():
            feats = model.backbone(batch.tensors)
            proposals, _ = model.rpn(batch, feats)
            detections, _ = model.roi_heads(feats, proposals, batch.image_sizes)
            return detections

        net = timed_runs(network, args.runs)
        detections = network()
        transform = timed_runs(lambda: model.transform([image]), args.runs)
        post = timed_runs(lambda: model.transform.postprocess(  # it replaces dict entries
            [dict(d) for d in detections], batch.image_sizes, [tuple(image.shape[-2:])]),
            args.runs)
        backbone = timed_runs(lambda: model.backbone(batch.tensors), args.runs)
        proposals, _ = model.rpn(batch, features)

    result = {
        "framework": "torchvision",
        "arch": args.arch,
        "image_size": list(array.shape[:2]),
        "input_tensor_shape": list(batch.tensors.shape),
        "resized_size": list(batch.image_sizes[0]),
        "proposals_to_box_head": int(proposals[0].shape[0]),
        "detections": int(out["boxes"].shape[0]),
        "boxes": out["boxes"].tolist(),
        "labels": out["labels"].tolist(),
        "scores": out["scores"].tolist(),
        "build_s": build_s,
        "first_forward_s": first_forward_s,
        "first_call_s": build_s + first_forward_s,
        "full_s": statistics.median(full),
        "network_s": statistics.median(net),
        "transform_s": statistics.median(transform),
        "postprocess_s": statistics.median(post),
        "backbone_fpn_s": statistics.median(backbone),
        "full_times_s": full,
        "network_times_s": net,
        "backbone_fpn_times_s": backbone,
        "runs": args.runs,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "peak_rss_mb": peak_rss_mb(),
    }
    if "masks" in out:
        result["mask_shape"] = list(out["masks"].shape)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fixtures = load_fixtures_module()
    parser.add_argument("--arch", required=True, choices=fixtures.ARCHS)
    parser.add_argument("--weights", required=True, help="state dict .npz")
    parser.add_argument("--image", required=True, help="RGB image file")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: os.cpu_count())")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("RESULT " + json.dumps(measure(args, fixtures)), flush=True)


if __name__ == "__main__":
    main()
