"""Correctness checks of the torchvision CPU shim against NumPy references written here.

    /tmp/tvenv/bin/python benchmarks/peers/check_shim.py

Checks (each prints an ``OK`` line; the first failure raises):
  * nms: kept indices identical to a NumPy greedy NMS (float32 and float64, several sizes and
    IoU thresholds, spread-out and clustered boxes), through torch.ops.torchvision.nms,
    torchvision.ops.nms and torchvision.ops.batched_nms (both of its code paths);
  * roi_align forward vs a NumPy bilinear RoIAlign (aligned True/False, sampling_ratio 2 and -1,
    two spatial scales, RoIs partly outside the map and smaller than a pixel): max abs error
    <= 1e-5 in float32, <= 1e-10 in float64; also vs torchvision's own pure-PyTorch fallback
    ``_roi_align`` (eager) on RoIs inside the image (that fallback clamps out-of-map samples
    instead of zeroing them, so it differs from the C++ kernels on RoIs sticking out);
  * roi_align backward (torchvision's autograd -> our _roi_align_backward) vs the NumPy adjoint,
    and torch.autograd.gradcheck in float64 on a tiny case;
  * parallel and serial kernels give bit-identical results; half/bfloat16 run; unimplemented ops
    raise a clear error.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The repo root, for tests.reference (plain NumPy, no TensorFlow).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import tv_shim

torchvision = tv_shim.import_torchvision()
import torch  # noqa: E402

# The RoIAlign sampling rule of the project's own NumPy reference (plain NumPy, no TensorFlow).
from tests.reference.numpy_roi import bilinear_taps  # noqa: E402

RNG = np.random.default_rng(1234)


def ok(msg: str) -> None:
    print(f"OK  {msg}", flush=True)


# --------------------------------------------------------------------------- NumPy references


def np_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    """Greedy NMS: highest score first; drop boxes with IoU > thr to a kept box.

    Arithmetic in the boxes' own dtype (as the kernel does), comparison with thr in float64.
    """
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1) * (y2 - y1)
    zero = b.dtype.type(0)
    removed = np.zeros(len(b), bool)
    keep = []
    for i in range(len(b)):
        if removed[i]:
            continue
        keep.append(order[i])
        w = np.maximum(zero, np.minimum(x2[i], x2[i + 1 :]) - np.maximum(x1[i], x1[i + 1 :]))
        h = np.maximum(zero, np.minimum(y2[i], y2[i + 1 :]) - np.maximum(y1[i], y1[i + 1 :]))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (area[i] + area[i + 1 :] - inter)
        removed[i + 1 :] |= iou.astype(np.float64) > thr
    return np.asarray(keep, np.int64)


def _roi_bins(roi, spatial_scale, ph_n, pw_n, sampling_ratio, aligned, height, width):
    """Yield (batch, ph, pw, taps, count) for every output bin of one RoI (float64 geometry)."""
    batch = int(roi[0])
    shift = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) * spatial_scale - shift for v in roi[1:])
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / ph_n, roi_w / pw_n
    gh = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph_n)
    gw = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw_n)
    count = max(gh * gw, 1)
    for ph in range(ph_n):
        for pw in range(pw_n):
            taps = []
            for iy in range(max(gh, 0)):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh
                for ix in range(max(gw, 0)):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / gw
                    taps += bilinear_taps(y, x, height, width)
            yield batch, ph, pw, taps, count


def np_roi_align(feat, rois, spatial_scale, ph_n, pw_n, sampling_ratio, aligned):
    """feat [N, C, H, W], rois [K, 5] -> [K, C, ph_n, pw_n], float64."""
    feat = np.asarray(feat, np.float64)
    _, channels, height, width = feat.shape
    out = np.zeros((len(rois), channels, ph_n, pw_n))
    for k, roi in enumerate(np.asarray(rois, np.float64)):
        for b, ph, pw, taps, count in _roi_bins(
            roi, spatial_scale, ph_n, pw_n, sampling_ratio, aligned, height, width
        ):
            acc = np.zeros(channels)
            for r, c, w in taps:
                acc += w * feat[b, :, r, c]
            out[k, :, ph, pw] = acc / count
    return out


def np_roi_align_backward(grad, rois, shape, spatial_scale, sampling_ratio, aligned):
    """Adjoint of np_roi_align: grad [K, C, PH, PW] -> d(input) [N, C, H, W]."""
    grad = np.asarray(grad, np.float64)
    _, _, ph_n, pw_n = grad.shape
    out = np.zeros(shape)
    for k, roi in enumerate(np.asarray(rois, np.float64)):
        for b, ph, pw, taps, count in _roi_bins(
            roi, spatial_scale, ph_n, pw_n, sampling_ratio, aligned, shape[2], shape[3]
        ):
            for r, c, w in taps:
                out[b, :, r, c] += w * grad[k, :, ph, pw] / count
    return out


# --------------------------------------------------------------------------- data


def random_boxes(n: int, clustered: bool, dtype) -> tuple[np.ndarray, np.ndarray]:
    if clustered:  # few centres, heavy overlap -> lots of suppression
        centres = RNG.uniform(20, 180, size=(max(n // 20, 1), 2))
        c = centres[RNG.integers(0, len(centres), n)] + RNG.normal(0, 4, size=(n, 2))
        wh = RNG.uniform(10, 40, size=(n, 2))
        boxes = np.concatenate([c - wh / 2, c + wh / 2], 1)
    else:
        xy = RNG.uniform(0, 200, size=(n, 2))
        wh = RNG.uniform(0, 50, size=(n, 2))
        wh[RNG.random(n) < 0.02] = 0  # a few degenerate boxes
        boxes = np.concatenate([xy, xy + wh], 1)
    return boxes.astype(dtype), RNG.random(n).astype(dtype)


def random_rois(k: int, batch: int, img_h: float, img_w: float) -> np.ndarray:
    """RoIs in image coordinates; some stick out of the image, some are tiny."""
    x1 = RNG.uniform(-0.2 * img_w, img_w, k)
    y1 = RNG.uniform(-0.2 * img_h, img_h, k)
    w = RNG.uniform(0.0, 0.8 * img_w, k)
    h = RNG.uniform(0.0, 0.8 * img_h, k)
    tiny = RNG.random(k) < 0.25
    w[tiny] *= 0.02
    h[tiny] *= 0.02
    return np.stack([RNG.integers(0, batch, k), x1, y1, x1 + w, y1 + h], 1)


# --------------------------------------------------------------------------- checks


def check_nms() -> None:
    for dtype in (np.float32, np.float64):
        for n in (0, 1, 7, 300, 2000):
            for clustered in (False, True):
                boxes, scores = random_boxes(n, clustered, dtype)
                tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
                for thr in (0.3, 0.5, 0.7):
                    ref = np_nms(boxes, scores, thr)
                    got = torch.ops.torchvision.nms(tb, ts, thr).numpy()
                    assert got.dtype == np.int64
                    assert np.array_equal(got, ref), (dtype, n, clustered, thr, got[:10], ref[:10])
                    got2 = torchvision.ops.nms(tb, ts, thr).numpy()
                    assert np.array_equal(got2, ref)
        ok(
            f"nms == NumPy greedy NMS ({np.dtype(dtype).name}; N in 0..2000; IoU 0.3/0.5/0.7; "
            "spread and clustered boxes)"
        )

    # batched_nms: coordinate-offset path (<= 4000 numbers) and per-class loop (> 4000)
    for n in (300, 3000):
        boxes, scores = random_boxes(n, True, np.float32)
        idxs = RNG.integers(0, 5, n)
        got = torchvision.ops.batched_nms(
            torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.5
        ).numpy()
        kept = np.concatenate(
            [
                np.flatnonzero(idxs == c)[np_nms(boxes[idxs == c], scores[idxs == c], 0.5)]
                for c in range(5)
            ]
        )
        ref = kept[np.argsort(-scores[kept], kind="stable")]
        assert np.array_equal(got, ref), (n, got[:10], ref[:10])
    ok("batched_nms (coordinate trick and per-class loop) == per-class NumPy NMS")


def check_roi_align_forward() -> None:
    ra_module = sys.modules["torchvision.ops.roi_align"]
    tv_python_roi_align = ra_module._roi_align.__wrapped__  # torchvision's own eager fallback
    batch, channels, height, width = 2, 3, 13, 17
    feat64 = RNG.normal(size=(batch, channels, height, width))
    for spatial_scale in (1.0, 0.25):
        img_h, img_w = height / spatial_scale, width / spatial_scale
        rois = random_rois(24, batch, img_h, img_w)
        for aligned in (False, True):
            for sampling_ratio in (2, -1):
                for ph_n, pw_n in ((7, 7), (3, 5)):
                    ref = np_roi_align(
                        feat64, rois, spatial_scale, ph_n, pw_n, sampling_ratio, aligned
                    )
                    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
                        x = torch.tensor(feat64, dtype=dtype)
                        r = torch.tensor(rois, dtype=dtype)
                        got = torch.ops.torchvision.roi_align(
                            x, r, spatial_scale, ph_n, pw_n, sampling_ratio, aligned
                        )
                        err = np.abs(got.double().numpy() - ref).max()
                        assert err <= tol, (spatial_scale, aligned, sampling_ratio, dtype, err)
                        got2 = torchvision.ops.roi_align(
                            x, r, (ph_n, pw_n), spatial_scale, sampling_ratio, aligned
                        )
                        assert torch.equal(got, got2)
                    # torchvision's eager fallback clamps every sample into the map (it has no
                    # "more than 1 px outside -> 0" rule), so compare it on RoIs inside the image.
                    # (Without `aligned` a RoI is at least 1x1 on the map, so measure it so.)
                    sr_ = rois[:, 1:] * spatial_scale
                    min_size = 0.0 if aligned else 1.0
                    inside = (
                        (sr_[:, 0] >= 0)
                        & (sr_[:, 1] >= 0)
                        & (sr_[:, 0] + np.maximum(sr_[:, 2] - sr_[:, 0], min_size) <= width)
                        & (sr_[:, 1] + np.maximum(sr_[:, 3] - sr_[:, 1], min_size) <= height)
                    )
                    tvp = tv_python_roi_align(
                        torch.tensor(feat64),
                        torch.tensor(rois[inside]),
                        spatial_scale,
                        ph_n,
                        pw_n,
                        sampling_ratio,
                        aligned,
                    )
                    err_tv = np.abs(tvp.numpy() - ref[inside]).max()
                    assert inside.sum() >= 5 and err_tv <= 1e-10, ("torchvision fallback", err_tv)
                ok(
                    f"roi_align fwd == NumPy RoIAlign (aligned={aligned}, "
                    f"sampling_ratio={sampling_ratio:2d}, "
                    f"spatial_scale={spatial_scale}): f32 <= 1e-5, f64 <= 1e-10; "
                    f"torchvision's eager _roi_align agrees on in-image RoIs"
                )


def check_roi_align_backward() -> None:
    batch, channels, height, width = 2, 4, 11, 9
    feat = RNG.normal(size=(batch, channels, height, width))
    rois = random_rois(10, batch, height * 2.0, width * 2.0)
    for aligned in (False, True):
        for sampling_ratio in (2, -1):
            x = torch.tensor(feat, requires_grad=True)
            r = torch.tensor(rois)
            y = torchvision.ops.roi_align(x, r, (5, 4), 0.5, sampling_ratio, aligned)
            g = torch.tensor(RNG.normal(size=tuple(y.shape)))
            y.backward(g)
            ref = np_roi_align_backward(g.numpy(), rois, feat.shape, 0.5, sampling_ratio, aligned)
            err = np.abs(x.grad.numpy() - ref).max()
            assert err <= 1e-10, (aligned, sampling_ratio, err)
            x32 = torch.tensor(feat, dtype=torch.float32, requires_grad=True)
            torchvision.ops.roi_align(
                x32, r.float(), (5, 4), 0.5, sampling_ratio, aligned
            ).backward(g.float())
            err32 = np.abs(x32.grad.double().numpy() - ref).max()
            assert err32 <= 1e-5, (aligned, sampling_ratio, err32)
            ok(
                f"roi_align bwd (torchvision autograd -> shim) == NumPy adjoint "
                f"(aligned={aligned}, sampling_ratio={sampling_ratio:2d}): "
                f"f64 {err:.1e}, f32 {err32:.1e}"
            )

    tiny = torch.rand(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    tiny_rois = torch.tensor(
        [[0, 0.3, 0.7, 4.1, 5.2], [1, -1.0, 1.5, 3.0, 3.5], [1, 2.2, 0.1, 2.6, 0.4]],
        dtype=torch.float64,
    )
    for aligned in (False, True):
        for sampling_ratio in (2, -1):
            assert torch.autograd.gradcheck(
                lambda inp, sr=sampling_ratio, al=aligned: torchvision.ops.roi_align(
                    inp, tiny_rois, (3, 2), 1.0, sr, al
                ),
                (tiny,),
                eps=1e-6,
                atol=1e-8,
            )
    ok("torch.autograd.gradcheck(roi_align) float64 (aligned True/False, sampling_ratio 2/-1)")
    try:
        yy = torchvision.ops.roi_align(tiny, tiny_rois, 2, 1.0, 2, True)
        v = torch.ones_like(yy, requires_grad=True)
        (gi,) = torch.autograd.grad(yy, tiny, grad_outputs=v, create_graph=True)
        gi.sum().backward()
        raise AssertionError("double backward should raise")
    except RuntimeError as e:
        assert "double backwards" in str(e), e
    ok("double backward raises, as torchvision's registration says")


def check_misc() -> None:
    x = torch.randn(2, 64, 50, 60)
    rois = torch.tensor(random_rois(300, 2, 200.0, 240.0), dtype=torch.float32)
    tv_shim.set_roi_align_parallel(True)
    a = torch.ops.torchvision.roi_align(x, rois, 0.25, 7, 7, -1, True)
    xg = x.clone().requires_grad_()
    torchvision.ops.roi_align(xg, rois, 7, 0.25, 2, False).sum().backward()
    tv_shim.set_roi_align_parallel(False)
    b = torch.ops.torchvision.roi_align(x, rois, 0.25, 7, 7, -1, True)
    xs = x.clone().requires_grad_()
    torchvision.ops.roi_align(xs, rois, 7, 0.25, 2, False).sum().backward()
    tv_shim.set_roi_align_parallel(True)
    assert torch.equal(a, b) and torch.equal(xg.grad, xs.grad)
    ok(
        "parallel == serial roi_align fwd/bwd bit-for-bit "
        f"(torch threads: {torch.get_num_threads()})"
    )

    for dt in (torch.float16, torch.bfloat16):
        y = torch.ops.torchvision.roi_align(x.to(dt), rois.to(dt), 0.25, 7, 7, 2, True)
        assert y.dtype == dt and torch.isfinite(y.float()).all()
        k = torch.ops.torchvision.nms(rois[:, 1:].to(dt), torch.rand(len(rois)).to(dt), 0.5)
        assert k.dtype == torch.int64
    ok("float16/bfloat16 inputs run (computed in float32)")

    y = torch.ops.torchvision.roi_align(x, rois[:0], 0.25, 7, 7, 2, True)
    assert y.shape == (0, 64, 7, 7)
    assert torch.ops.torchvision.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    ok("empty inputs")

    try:
        torchvision.ops.roi_pool(x, rois, 7, 0.25)
        raise AssertionError("roi_pool should raise")
    except RuntimeError as e:
        assert "not implemented in this CPU shim" in str(e), e
    ok("unimplemented ops raise 'not implemented in this CPU shim' (e.g. roi_pool)")


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}; {tv_shim.info()}")
    check_nms()
    check_roi_align_forward()
    check_roi_align_backward()
    check_misc()
    print("ALL OK")
