"""Tiny on-disk datasets for the data tests (written with PIL, read back by the real readers)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image


def write_image(path: str, height: int, width: int, mode: str = "RGB", value: int = 100,
                fmt: str | None = None) -> str:
    """Write a ``height x width`` image with a constant colour; returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = np.full((height, width, channels), value, np.uint8)
    image = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=mode)
    image.save(path, format=fmt)
    return path


def write_boxes_image(path: str, height: int, width: int, boxes_yxyx: list[list[int]]) -> str:
    """Dark image (value 20) with each integer box painted white (255)."""
    arr = np.full((height, width, 3), 20, np.uint8)
    for y1, x1, y2, x2 in boxes_yxyx:
        arr[y1:y2, x1:x2] = 255
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_coco(path: str, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
               categories: list[dict[str, Any]]) -> str:
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path
