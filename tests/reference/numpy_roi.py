"""Pure NumPy reference implementations of the RoI ops, written from their definitions.

Slow on purpose: plain loops over RoIs, bins and samples, so each line can be read against the
papers (Fast R-CNN Sec. 2.1, R-FCN Eq. 1, Mask R-CNN Sec. 3 RoIAlign) and the documented
torchvision semantics (``roi_align``, ``roi_pool``, ``ps_roi_align``, ``ps_roi_pool``).

Conventions: features NHWC ``[B, H, W, C]``; ``rois [B, R, 4]`` ``[y1, x1, y2, x2]`` pixels;
outputs ``[B, R, S_h, S_w, C]``. Bin bounds of the quantised ops are computed in float32, as
the torchvision kernels do for float32 inputs, so that boundary cases round identically.
"""

from __future__ import annotations

import math

import numpy as np


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def bilinear_taps(y: float, x: float, height: int, width: int) -> list[tuple[int, int, float]]:
    """``[(row, col, weight)]`` of the bilinear sample at ``(y, x)`` on an ``height x width``
    map with the RoIAlign boundary rule; ``[]`` (value 0) when the point is outside.

    Outside ``[-1, H] x [-1, W]`` -> no taps; a coordinate in ``[-1, 0]`` is clamped to 0; a
    coordinate at or beyond the last row/column reads that row/column.
    """
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y = max(y, 0.0)
    x = max(x, 0.0)
    y0 = int(math.floor(y))
    x0 = int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return [(y0, x0, hy * hx), (y0, x1, hy * lx), (y1, x0, ly * hx), (y1, x1, ly * lx)]


def bilinear(fmap: np.ndarray, y: float, x: float) -> np.ndarray:
    """Bilinear value of ``fmap [H, W, C]`` at ``(y, x)`` (see :func:`bilinear_taps`)."""
    value = np.zeros(fmap.shape[2], np.float64)
    for row, col, weight in bilinear_taps(y, x, fmap.shape[0], fmap.shape[1]):
        value = value + weight * fmap[row, col]
    return value


def roi_align(features, rois, output_size, spatial_scale, sampling_ratio=2, aligned=True):
    """RoIAlign: each bin averages sampling_ratio**2 bilinear samples at sub-grid centres."""
    features = np.asarray(features, np.float64)
    rois = np.asarray(rois, np.float64)
    out_h, out_w = _pair(output_size)
    batch, num_rois = rois.shape[:2]
    out = np.zeros((batch, num_rois, out_h, out_w, features.shape[-1]), np.float64)
    offset = 0.5 if aligned else 0.0
    for b in range(batch):
        for r in range(num_rois):
            y1, x1, y2, x2 = rois[b, r] * spatial_scale - offset
            roi_h, roi_w = y2 - y1, x2 - x1
            if not aligned:
                roi_h, roi_w = max(roi_h, 1.0), max(roi_w, 1.0)
            bin_h, bin_w = roi_h / out_h, roi_w / out_w
            for i in range(out_h):
                for j in range(out_w):
                    acc = 0.0
                    for sy in range(sampling_ratio):
                        y = y1 + i * bin_h + (sy + 0.5) * bin_h / sampling_ratio
                        for sx in range(sampling_ratio):
                            x = x1 + j * bin_w + (sx + 0.5) * bin_w / sampling_ratio
                            acc = acc + bilinear(features[b], y, x)
                    out[b, r, i, j] = acc / sampling_ratio**2
    return out


def _c_round(v: np.float32) -> int:
    """C ``round``: half away from zero."""
    return int(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))


def _quantised_bins(start_px, end_px, scale, num_bins, plus_one, limit):
    """Fast R-CNN bins along one axis, float32 arithmetic: list of (lo, hi) cell ranges."""
    start = _c_round(np.float32(start_px) * np.float32(scale))
    end = _c_round(np.float32(end_px) * np.float32(scale))
    size = max(end - start + (1 if plus_one else 0), 1)
    bin_size = np.float32(size) / np.float32(num_bins)
    bins = []
    for p in range(num_bins):
        lo = int(math.floor(np.float32(p) * bin_size)) + start
        hi = int(math.ceil(np.float32(p + 1) * bin_size)) + start
        bins.append((min(max(lo, 0), limit), min(max(hi, 0), limit)))
    return bins


def roi_pool(features, rois, output_size, spatial_scale):
    """Fast R-CNN RoI max pooling (torchvision ``roi_pool`` bins); empty bin -> 0."""
    features = np.asarray(features, np.float32)
    rois = np.asarray(rois, np.float32)
    out_h, out_w = _pair(output_size)
    batch, num_rois = rois.shape[:2]
    height, width = features.shape[1:3]
    out = np.zeros((batch, num_rois, out_h, out_w, features.shape[-1]), np.float32)
    for b in range(batch):
        for r in range(num_rois):
            y1, x1, y2, x2 = rois[b, r]
            rows = _quantised_bins(y1, y2, spatial_scale, out_h, True, height)
            cols = _quantised_bins(x1, x2, spatial_scale, out_w, True, width)
            for i, (h_lo, h_hi) in enumerate(rows):
                for j, (w_lo, w_hi) in enumerate(cols):
                    if h_hi <= h_lo or w_hi <= w_lo:
                        continue
                    out[b, r, i, j] = features[b, h_lo:h_hi, w_lo:w_hi].max(axis=(0, 1))
    return out


def ps_channel(c: int, i: int, j: int, k: int) -> int:
    """Score-map channel of output channel c in bin (i, j): R-FCN/torchvision layout."""
    return (c * k + i) * k + j


def ps_roi_align(score_maps, rois, k, spatial_scale, sampling_ratio=2):
    """Position-sensitive RoIAlign (always aligned: -0.5 shift, no minimum size)."""
    score_maps = np.asarray(score_maps, np.float64)
    rois = np.asarray(rois, np.float64)
    batch, num_rois = rois.shape[:2]
    channels = score_maps.shape[-1] // (k * k)
    out = np.zeros((batch, num_rois, k, k, channels), np.float64)
    for b in range(batch):
        for r in range(num_rois):
            y1, x1, y2, x2 = rois[b, r] * spatial_scale - 0.5
            bin_h, bin_w = (y2 - y1) / k, (x2 - x1) / k
            for i in range(k):
                for j in range(k):
                    acc = np.zeros(score_maps.shape[-1])
                    for sy in range(sampling_ratio):
                        y = y1 + i * bin_h + (sy + 0.5) * bin_h / sampling_ratio
                        for sx in range(sampling_ratio):
                            x = x1 + j * bin_w + (sx + 0.5) * bin_w / sampling_ratio
                            acc = acc + bilinear(score_maps[b], y, x)
                    acc = acc / sampling_ratio**2
                    for c in range(channels):
                        out[b, r, i, j, c] = acc[ps_channel(c, i, j, k)]
    return out


def ps_roi_pool(score_maps, rois, k, spatial_scale):
    """Position-sensitive average pooling with torchvision ``ps_roi_pool`` bins.

    RoI size ``max(end - start, 1)`` (no +1) and bins clipped to ``[0, H - 1]``.
    """
    score_maps = np.asarray(score_maps, np.float64)
    rois = np.asarray(rois, np.float32)
    batch, num_rois = rois.shape[:2]
    height, width = score_maps.shape[1:3]
    channels = score_maps.shape[-1] // (k * k)
    out = np.zeros((batch, num_rois, k, k, channels), np.float64)
    for b in range(batch):
        for r in range(num_rois):
            y1, x1, y2, x2 = rois[b, r]
            rows = _quantised_bins(y1, y2, spatial_scale, k, False, height - 1)
            cols = _quantised_bins(x1, x2, spatial_scale, k, False, width - 1)
            for i, (h_lo, h_hi) in enumerate(rows):
                for j, (w_lo, w_hi) in enumerate(cols):
                    if h_hi <= h_lo or w_hi <= w_lo:
                        continue
                    for c in range(channels):
                        region = score_maps[b, h_lo:h_hi, w_lo:w_hi, ps_channel(c, i, j, k)]
                        out[b, r, i, j, c] = region.mean()
    return out


def fpn_level(box, min_level, max_level, canonical_level=4, canonical_size=224.0):
    """FPN Eq. 1 for one ``[y1, x1, y2, x2]`` box."""
    y1, x1, y2, x2 = box
    size = math.sqrt(max((y2 - y1) * (x2 - x1), 1e-12))
    level = math.floor(canonical_level + math.log2(size / canonical_size) + 1e-6)
    return min(max(level, min_level), max_level)
