"""Synthetic test images made with NumPy alone (no torch, no TensorFlow), so the torchvision
fixture generator (``make_torchvision_fixtures.py``, torch venv) and the speed benchmarks
(``benchmarks/pretrained.py``, TensorFlow venv) draw the same kind of picture."""

from __future__ import annotations

import numpy as np


def make_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An HxWx3 uint8 image with structure: a colour gradient, soft blobs, hard-edged
    rectangles and ellipses, and light noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    scale = float(max(height, width))
    image = np.empty((height, width, 3))
    for c in range(3):
        base, gy, gx = rng.uniform(0.2, 0.8), rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)
        image[..., c] = base + gy * yy / scale + gx * xx / scale
    for _ in range(10):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        sigma = rng.uniform(0.03, 0.15) * scale
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        image += blob[..., None] * rng.uniform(-0.5, 0.5, size=3)
    for _ in range(7):
        h, w = rng.uniform(0.06, 0.4) * height, rng.uniform(0.06, 0.4) * width
        y0, x0 = rng.uniform(-0.1 * height, height - h), rng.uniform(-0.1 * width, width - w)
        inside = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        alpha = rng.uniform(0.6, 1.0)
        image[inside] = (1 - alpha) * image[inside] + alpha * rng.uniform(0, 1, size=3)
    for _ in range(5):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.04, 0.2) * height, rng.uniform(0.04, 0.2) * width
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        image[inside] = rng.uniform(0, 1, size=3)
    image += rng.normal(0.0, 0.008, size=image.shape)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
