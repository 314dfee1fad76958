"""Synthetic shapes dataset: squares, circles and triangles with exact boxes and masks.

Deterministic from a seed. Each RGB image (default 128x128) has a textured background (a few
random colour gratings plus pixel noise, never flat) and ``min_shapes..max_shapes`` shapes of
random colour, size and position. Shapes may overlap: a later shape is drawn on top, and a
placement is rejected (and re-drawn) when it would hide more than half of an earlier shape, so
every annotated instance stays clearly visible. Masks are the VISIBLE pixels of each shape and
boxes are their exact tight bounds ``[y1, x1, y2, x2]`` with ``x2 = last column + 1``.

The ``crowded`` variant (``data.shapes_variant``, cached in ``<shapes_dir>_crowded``) puts 6-12
shapes per image, most of them in clusters of one class that overlap heavily (same-class boxes
at IoU 0.3-0.7, up to 70% of a shape hidden): the case where the per-class NMS of the detector
decides whether a neighbour survives (Soft-NMS, ``model.roi_head.nms_method``).

Output layout (read back with :func:`tf_rcnn.data.coco.load_coco`, the same reader real data
uses)::

    output_dir/images/000000.png ...   RGB PNG files
    output_dir/annotations.json        COCO json, segmentation as compressed RLE
    output_dir/manifest.json           the generator arguments; a second call with the same
                                       arguments and all files present returns at once

Categories: 1 "square", 2 "circle", 3 "triangle" (COCO category ids). Image ids are 1..N.
Generating 1000 images of 128x128 takes about 6 s on one CPU core.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = ({"id": 1, "name": "square"}, {"id": 2, "name": "circle"},
              {"id": 3, "name": "triangle"})
_VERSION = 1
_MAX_HIDDEN_FRACTION = 0.5
_MAX_TRIES = 20


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``[size, size, 3]`` float background: base colour + 3 colour gratings + noise."""
    yy, xx = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32),
                         indexing="ij")
    img = np.broadcast_to(rng.uniform(40, 215, size=3).astype(np.float32), (size, size, 3)).copy()
    for _ in range(3):
        freq = rng.uniform(0.02, 0.15)
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        img += wave[..., None] * rng.uniform(-25, 25, size=3).astype(np.float32)
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return img


def _shape_mask(
    kind: int, y0: float, x0: float, s: float, yc: np.ndarray, xc: np.ndarray
) -> np.ndarray:
    """Pixels whose centre lies in the shape of category ``kind`` in the box at (y0, x0), side s.

    ``yc [H, 1]`` and ``xc [1, W]`` are pixel-centre coordinates.
    """
    if kind == 1:  # square
        return (yc >= y0) & (yc < y0 + s) & (xc >= x0) & (xc < x0 + s)
    if kind == 2:  # circle inscribed in the box
        r = s / 2.0
        return (yc - (y0 + r)) ** 2 + (xc - (x0 + r)) ** 2 <= r * r
    # Upright isosceles triangle: apex at the top centre, base on the bottom edge. A point is
    # inside when it is below the apex row and within the half-width that grows linearly.
    rel = (yc - y0) / s  # 0 at the apex, 1 at the base
    half = 0.5 * s * rel
    return (rel >= 0) & (rel < 1) & (np.abs(xc - (x0 + 0.5 * s)) <= half)


def _colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A random colour at least 60 (mean absolute over RGB) away from the background mean."""
    for _ in range(_MAX_TRIES):
        colour = rng.uniform(0, 255, size=3)
        if np.mean(np.abs(colour - background_mean)) > 60:
            return colour
    return 255.0 - background_mean


# The crowded variant (``variant="crowded"``): most shapes join a cluster of their own class.
# A new shape copies the class of a random earlier shape with probability _CROWD_JOIN, takes
# 0.8-1.25 times its side and is offset by 10-35% of that side along each axis (random signs),
# and may hide up to _CROWD_MAX_HIDDEN of an earlier shape (plain: half). Same-class ground
# truth boxes then overlap at IoU 0.3-0.7, where a per-class NMS at 0.5 suppresses true
# neighbours.
VARIANTS = ("plain", "crowded")
_CROWD_JOIN = 0.8
_CROWD_MAX_HIDDEN = 0.7
_CROWD_SIZE_RANGE = (0.8, 1.25)
_CROWD_OFFSET_RANGE = (0.10, 0.35)
# Shapes per image when the caller gives no count: (min, max) of each variant.
_DEFAULT_SHAPE_COUNTS = {"plain": (1, 4), "crowded": (6, 12)}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown shapes variant {variant!r} (--config.data.shapes_variant); "
                         f"choose one of {VARIANTS}.")


def variant_dir(shapes_dir: str, variant: str) -> str:
    """The cache folder of ``variant`` under the configured ``shapes_dir``: ``shapes_dir``
    itself for plain shapes, ``<shapes_dir>_<variant>`` otherwise (so a variant never
    overwrites or mixes with the plain cache)."""
    _check_variant(variant)
    return shapes_dir if variant == "plain" else f"{os.path.normpath(shapes_dir)}_{variant}"


def _propose_plain(rng: np.random.Generator, image_size: int, min_size: int, max_size: int,
                   placed: list[tuple[int, float, float, float]]
                   ) -> tuple[int, float, float, float]:
    del placed
    kind = int(rng.integers(1, 4))
    s = float(rng.uniform(min_size, max_size))
    y0 = float(rng.uniform(0, image_size - s))
    x0 = float(rng.uniform(0, image_size - s))
    return kind, y0, x0, s


def _propose_crowded(rng: np.random.Generator, image_size: int, min_size: int, max_size: int,
                     placed: list[tuple[int, float, float, float]]
                     ) -> tuple[int, float, float, float]:
    if not placed or rng.uniform() >= _CROWD_JOIN:
        return _propose_plain(rng, image_size, min_size, max_size, placed)
    kind, ay, ax, a_side = placed[int(rng.integers(len(placed)))]
    s = float(np.clip(a_side * rng.uniform(*_CROWD_SIZE_RANGE), min_size, max_size))
    dy, dx = rng.uniform(*_CROWD_OFFSET_RANGE, size=2) * a_side * rng.choice([-1.0, 1.0], 2)
    y0 = float(np.clip(ay + dy, 0, image_size - s))
    x0 = float(np.clip(ax + dx, 0, image_size - s))
    return kind, y0, x0, s


def render_image(
    rng: np.random.Generator,
    image_size: int,
    num_shapes: int,
    min_size: int,
    max_size: int,
    variant: str = "plain",
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Draw one image; returns ``(image [S, S, 3] uint8, [(category_id, mask [S, S] bool)])``.

    ``variant`` ``"plain"`` places shapes independently (each may hide at most half of an
    earlier one); ``"crowded"`` makes most of them join same-class clusters (module constants
    ``_CROWD_*``).
    """
    _check_variant(variant)
    propose = _propose_plain if variant == "plain" else _propose_crowded
    max_hidden = _MAX_HIDDEN_FRACTION if variant == "plain" else _CROWD_MAX_HIDDEN
    img = _background(rng, image_size)
    yc = (np.arange(image_size, dtype=np.float32) + 0.5)[:, None]
    xc = (np.arange(image_size, dtype=np.float32) + 0.5)[None, :]
    instances: list[tuple[int, np.ndarray]] = []
    placed: list[tuple[int, float, float, float]] = []  # (kind, y0, x0, side) of each instance
    texture = rng.normal(0, 4, size=img.shape).astype(np.float32)  # shared shape shading
    for _ in range(num_shapes):
        for _ in range(_MAX_TRIES):
            kind, y0, x0, s = propose(rng, image_size, min_size, max_size, placed)
            mask = _shape_mask(kind, y0, x0, s, yc, xc)
            if mask.sum() < 16:
                continue
            # Reject a placement that would hide too much of an earlier instance.
            if all(np.sum(m & ~mask) > (1 - max_hidden) * np.sum(m) for _, m in instances):
                break
        else:
            continue
        colour = _colour(rng, img.mean(axis=(0, 1)))
        img[mask] = colour + texture[mask]
        instances = [(k, m & ~mask) for k, m in instances]
        instances.append((kind, mask))
        placed.append((kind, y0, x0, s))
    return np.clip(img, 0, 255).astype(np.uint8), instances


def _manifest(args: dict[str, Any]) -> dict[str, Any]:
    return {"generator": "tf_rcnn.data.shapes", "version": _VERSION, **args}


def generate_shapes_dataset(
    output_dir: str,
    num_images: int,
    image_size: int = 128,
    seed: int = 0,
    min_shapes: int | None = None,
    max_shapes: int | None = None,
    min_shape_size: int | None = None,
    max_shape_size: int | None = None,
    overwrite: bool = False,
    variant: str = "plain",
) -> str:
    """Write the shapes dataset to ``output_dir`` and return the path of its COCO json.

    Args:
        output_dir: destination folder (created if needed).
        num_images: number of images N (ids 1..N, files ``images/000000.png`` ...).
        image_size: side of the square images in pixels.
        seed: the dataset is a pure function of the arguments.
        min_shapes: minimum shapes per image (>= 0; default 1 plain, 6 crowded).
        max_shapes: maximum shapes per image (default 4 plain, 12 crowded).
        min_shape_size: smallest shape side in pixels (default ``max(8, image_size // 10)``).
        max_shape_size: largest shape side in pixels (default ``image_size // 2``).
        overwrite: regenerate even when a matching manifest exists.
        variant: ``"plain"`` or ``"crowded"`` (clusters of same-class shapes, see
            :func:`render_image`); a crowded set belongs in its own folder
            (:func:`variant_dir`). The manifest records it, so a folder never mixes variants.

    Returns:
        Path of ``output_dir/annotations.json``.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}.")
    _check_variant(variant)
    default_min, default_max = _DEFAULT_SHAPE_COUNTS[variant]
    min_shapes = default_min if min_shapes is None else min_shapes
    max_shapes = default_max if max_shapes is None else max_shapes
    if not 0 <= min_shapes <= max_shapes:
        raise ValueError(
            f"Need 0 <= min_shapes <= max_shapes, got min_shapes={min_shapes}, "
            f"max_shapes={max_shapes}."
        )
    min_size = min_shape_size if min_shape_size is not None else max(8, image_size // 10)
    max_size = max_shape_size if max_shape_size is not None else image_size // 2
    if not 4 <= min_size <= max_size <= image_size:
        raise ValueError(
            f"Need 4 <= min_shape_size ({min_size}) <= max_shape_size ({max_size}) <= "
            f"image_size ({image_size})."
        )
    args = {"num_images": num_images, "image_size": image_size, "seed": seed,
            "min_shapes": min_shapes, "max_shapes": max_shapes, "min_shape_size": min_size,
            "max_shape_size": max_size}
    if variant != "plain":  # plain manifests stay as before, so existing caches are reused
        args["variant"] = variant
    image_dir = os.path.join(output_dir, "images")
    ann_path = os.path.join(output_dir, "annotations.json")
    manifest_path = os.path.join(output_dir, "manifest.json")
    file_names = [f"{i:06d}.png" for i in range(num_images)]
    if not overwrite and _is_complete(manifest_path, ann_path, image_dir, file_names, args):
        return ann_path

    os.makedirs(image_dir, exist_ok=True)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    images, annotations = [], []
    # One child generator per image: image i does not depend on how many draws image i-1 took.
    children = np.random.SeedSequence(seed).spawn(num_images)
    for index, (name, child) in enumerate(zip(file_names, children, strict=True)):
        rng = np.random.default_rng(child)
        num_shapes = int(rng.integers(min_shapes, max_shapes + 1))
        pixels, instances = render_image(rng, image_size, num_shapes, min_size, max_size,
                                         variant)
        Image.fromarray(pixels).save(os.path.join(image_dir, name), compress_level=1)
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "height": image_size,
                       "width": image_size})
        for kind, mask in instances:
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            x, y = int(cols[0]), int(rows[0])
            w, h = int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": kind,
                "bbox": [x, y, w, h], "area": int(mask.sum()), "iscrowd": 0,
                "segmentation": {"size": [image_size, image_size],
                                 "counts": rle["counts"].decode("ascii")},
            })
    coco = {"info": {"description": "tf_rcnn synthetic shapes", **args}, "images": images,
            "annotations": annotations, "categories": [dict(c) for c in CATEGORIES]}
    _write_json_atomic(ann_path, coco)
    _write_json_atomic(manifest_path, _manifest(args))
    return ann_path


def _write_json_atomic(path: str, data: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _is_complete(
    manifest_path: str, ann_path: str, image_dir: str, file_names: list[str],
    args: dict[str, Any],
) -> bool:
    if not (os.path.exists(manifest_path) and os.path.exists(ann_path)):
        return False
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest != _manifest(args):
        return False
    return all(os.path.exists(os.path.join(image_dir, n)) for n in file_names)
