"""Instance-mask helpers for the readers and the input pipeline (NumPy, load time).

Conventions:
    Boxes are float32 ``[y1, x1, y2, x2]`` pixels of the original image. Full masks are
    ``[H, W]`` uint8 in {0, 1}. A *box-cropped* mask is the instance mask sampled on an
    ``S x S`` grid spanning its GT box: cell ``(i, j)`` takes the mask pixel under the point
    ``(y1 + (i + 0.5) * h / S, x1 + (j + 0.5) * w / S)`` (nearest pixel, no blur).

Why box-cropped masks: they do not change when the image is resized (the box moves with the
image) and a horizontal flip of the image is exactly a left-right flip of the crop, so the
pipeline computes them once at load time and only flips them per step.

Shape shorthand: M instances, S ``mask_crop_size``, H/W original image size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def decode_segmentation(
    segm: Any, height: int, width: int, box: np.ndarray | None = None, file: str = ""
) -> np.ndarray:
    """Decode one instance's mask source to ``[H, W]`` uint8 in {0, 1}.

    Args:
        segm: COCO polygon list (``[[x0, y0, x1, y1, ...], ...]``), COCO RLE dict (compressed
            ``counts`` string or uncompressed list), an ``[H, W]`` array, a path to a
            single-channel PNG (non-zero = instance), or ``None`` (then the box is filled).
        height: image height.
        width: image width.
        box: ``[4]`` ``[y1, x1, y2, x2]`` used when ``segm`` is ``None``.
        file: image file named in errors.

    Raises:
        ValueError: for an unknown source type or a mask of the wrong size, naming ``file``.
    """
    if segm is None:
        out = np.zeros((height, width), np.uint8)
        if box is not None:
            y1, x1, y2, x2 = (int(round(float(v))) for v in box)
            out[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 1
        return out
    if isinstance(segm, np.ndarray):
        arr = segm
    elif isinstance(segm, str | os.PathLike):

        with Image.open(segm) as im:
            arr = np.asarray(im.convert("L"))
    elif isinstance(segm, list | dict):

        if isinstance(segm, list):
            rles = mask_utils.frPyObjects(segm, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(segm.get("counts"), list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = dict(segm)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        arr = mask_utils.decode(rle)
    else:
        raise ValueError(
            f"{file}: unsupported mask source of type {type(segm).__name__}; use a COCO "
            "polygon list, an RLE dict, an [H, W] array or a PNG path."
        )
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.shape != (height, width):
        raise ValueError(
            f"{file}: instance mask has shape {arr.shape}, the image is {height}x{width}; masks "
            "must cover the whole image."
        )
    return (arr > 0).astype(np.uint8)


def crop_masks_to_boxes(masks: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Sample each full mask on an ``S x S`` grid over its box (see module docstring).

    Args:
        masks: ``[M, H, W]`` uint8/bool full-image masks.
        boxes: ``[M, 4]`` float32 ``[y1, x1, y2, x2]`` pixels.
        size: S.

    Returns:
        ``[M, S, S]`` uint8 in {0, 1}.
    """
    masks = np.asarray(masks)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    num, height, width = masks.shape
    if num == 0:
        return np.zeros((0, size, size), np.uint8)
    frac = (np.arange(size) + 0.5) / size  # [S] cell centres in box units
    # [M, S] sample coordinates in pixels, then the index of the pixel containing them.
    ys = boxes[:, 0:1] + frac[None] * (boxes[:, 2:3] - boxes[:, 0:1])
    xs = boxes[:, 1:2] + frac[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    yi = np.clip(np.floor(ys).astype(np.int64), 0, height - 1)
    xi = np.clip(np.floor(xs).astype(np.int64), 0, width - 1)
    idx = np.arange(num)[:, None, None]
    return (masks[idx, yi[:, :, None], xi[:, None, :]] > 0).astype(np.uint8)
