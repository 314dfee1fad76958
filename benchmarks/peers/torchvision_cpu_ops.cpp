// CPU-only stand-in for torchvision's `_C` operator library (benchmark use only).
//
// Why this exists: PyPI's torchvision 0.28.0 wheel ships a `_C.so` linked
// against CUDA builds of libtorch, so it cannot be loaded next to the CPU-only
// torch 2.13.0 wheel on this machine.  torchvision's Python side then refuses
// to import (it registers fake kernels for `torchvision::nms` unconditionally).
//
// This file is written for the tf_rcnn benchmarks from the operator
// definitions (schemas as torchvision's Python side calls them, RoIAlign as
// defined in the Mask R-CNN paper / Detectron, greedy NMS), not copied from
// torchvision.  It:
//   * declares every `torchvision::` schema that torchvision 0.28's Python code
//     touches at import time or calls from torchvision.ops;
//   * implements CPU kernels for the ops two-stage detection models need:
//       nms, roi_align, _roi_align_backward  (float32/float64; half and
//       bfloat16 are computed in float32 and cast back);
//   * registers CPU kernels for every other op that raise a clear
//     "not implemented in this CPU shim" error;
//   * registers NO Autograd / Meta / Autocast kernels: torchvision 0.28 adds
//     those itself from Python (torchvision/_autograd_registrations.py and
//     torchvision/_meta_registrations.py) once it believes `_C` is loaded.
//     See benchmarks/peers/tv_shim.py for how that is arranged.
//
// Threading (a deliberate, documented difference from upstream's CPU kernels,
// which to our knowledge run roi_align single-threaded):
//   * roi_align forward: at::parallel_for over RoIs, handed out in chunks of 4
//     by an atomic counter (each RoI owns its output slice: no synchronisation).
//   * _roi_align_backward: at::parallel_for over channel chunks (a chunk owns
//     whole channel planes of grad_input, so accumulation is race-free,
//     atomic-free and deterministic).
//   * nms: serial (greedy NMS is inherently sequential); the IoU sweep is
//     branch-free so the compiler vectorises it.
// `torch.ops.tv_shim.set_roi_align_parallel(False)` or the environment variable
// TV_SHIM_ROI_ALIGN_SERIAL=1 (read at load time) makes roi_align serial, for
// like-for-like comparisons with a single-threaded kernel.  Parallel and serial
// results are bit-identical.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

namespace tv_cpu_shim {

// ---------------------------------------------------------------------------
// Runtime knobs
// ---------------------------------------------------------------------------

static bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

static std::atomic<bool> g_roi_align_parallel{!env_flag("TV_SHIM_ROI_ALIGN_SERIAL")};

// Runs body(begin, end) over [0, n) in chunks of `chunk`, handed out dynamically
// (atomic counter) to the intra-op threads, or serially when parallelism is off.
// Dynamic hand-out keeps all threads busy when work items differ in cost
// (adaptive sampling grids) or when a core is shared with another process;
// each index is still processed by exactly one thread.
template <typename F>
static void parallel_chunks(int64_t n, int64_t chunk, const F& body) {
  if (n <= 0) {
    return;
  }
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t num_chunks = (n + chunk - 1) / chunk;
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), num_chunks);
  if (!g_roi_align_parallel.load(std::memory_order_relaxed) || workers <= 1 || at::in_parallel_region()) {
    body(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      for (;;) {
        const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
        if (begin >= n) {
          break;
        }
        body(begin, std::min(n, begin + chunk));
      }
    }
  });
}

// Float32 / float64 run natively; reduced-precision inputs are promoted.
static bool is_native_float(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

// ---------------------------------------------------------------------------
// NMS
// ---------------------------------------------------------------------------
//
// Boxes are (x1, y1, x2, y2); area = (x2 - x1) * (y2 - y1) (no "+1").
// Boxes are visited in decreasing score order; a box is kept unless an
// already-kept box overlaps it with IoU > iou_threshold.  Returns the kept
// indices (int64) in decreasing score order.  Ties in score are broken by the
// original index (stable sort); NaN scores sort first, as in torch.sort.

// Largest T not above `thr`, so that for any T value v: v > result  <=>  double(v) > thr.
// (The comparison is then done in T, which lets the loop below vectorise, with exactly the
// result of comparing in double as the reference kernels do.)
template <typename T>
static T threshold_in(double thr) {
  T t = static_cast<T>(thr);
  if (static_cast<double>(t) > thr) {
    t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  }
  return t;
}

// Marks every box j in [j0, n) whose IoU with box i exceeds thr.  Branch-free so that GCC
// vectorises it (checked with -fopt-info-vec for float).
template <typename T>
static void suppress_overlaps(int64_t j0, int64_t n, T ix1, T iy1, T ix2, T iy2, T iarea, T thr,
                              const T* __restrict X1, const T* __restrict Y1, const T* __restrict X2,
                              const T* __restrict Y2, const T* __restrict A, uint8_t* __restrict sup) {
  for (int64_t j = j0; j < n; ++j) {
    const T w = std::max(T(0), std::min(ix2, X2[j]) - std::max(ix1, X1[j]));
    const T h = std::max(T(0), std::min(iy2, Y2[j]) - std::max(iy1, Y1[j]));
    const T inter = w * h;
    const T iou = inter / (iarea + A[j] - inter);
    sup[j] |= static_cast<uint8_t>(iou > thr);
  }
}

template <typename T>
static at::Tensor nms_kernel(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = dets.size(0);
  const at::Tensor d = dets.contiguous();
  const at::Tensor s = scores.contiguous();
  const T* dp = d.data_ptr<T>();
  const T* sp = s.data_ptr<T>();

  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [sp](int64_t a, int64_t b) {
    const T sa = sp[a];
    const T sb = sp[b];
    const bool na = std::isnan(sa);
    const bool nb = std::isnan(sb);
    if (na || nb) {
      return na && !nb;
    }
    return sa > sb;
  });

  // Structure-of-arrays copy in sorted order: the inner loop below is then a
  // contiguous, branch-free sweep the compiler can vectorise.
  std::vector<T> x1(n), y1(n), x2(n), y2(n), area(n);
  for (int64_t i = 0; i < n; ++i) {
    const T* b = dp + 4 * order[i];
    x1[i] = b[0];
    y1[i] = b[1];
    x2[i] = b[2];
    y2[i] = b[3];
    area[i] = (b[2] - b[0]) * (b[3] - b[1]);
  }

  std::vector<uint8_t> suppressed(n, 0);
  std::vector<int64_t> keep;
  keep.reserve(static_cast<size_t>(n));
  const T thr = threshold_in<T>(iou_threshold);
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) {
      continue;
    }
    keep.push_back(order[i]);
    suppress_overlaps<T>(i + 1, n, x1[i], y1[i], x2[i], y2[i], area[i], thr, x1.data(), y1.data(),
                         x2.data(), y2.data(), area.data(), suppressed.data());
  }

  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())}, dets.options().dtype(at::kLong));
  if (!keep.empty()) {
    std::memcpy(out.data_ptr<int64_t>(), keep.data(), keep.size() * sizeof(int64_t));
  }
  return out;
}

static at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK(dets.device().is_cpu() && scores.device().is_cpu(), "tv_cpu_shim nms: CPU tensors expected");
  TORCH_CHECK(dets.dim() == 2, "boxes should be a 2d tensor, got ", dets.dim(), "D");
  TORCH_CHECK(dets.size(1) == 4, "boxes should have 4 elements in dimension 1, got ", dets.size(1));
  TORCH_CHECK(scores.dim() == 1, "scores should be a 1d tensor, got ", scores.dim(), "D");
  TORCH_CHECK(dets.size(0) == scores.size(0),
              "boxes and scores should have same number of elements in dimension 0, got ",
              dets.size(0), " and ", scores.size(0));
  TORCH_CHECK(dets.scalar_type() == scores.scalar_type(),
              "dets should have the same type as scores");
  TORCH_CHECK(at::isFloatingType(dets.scalar_type()), "tv_cpu_shim nms: floating point boxes expected");
  if (dets.numel() == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  if (dets.scalar_type() == at::kDouble) {
    return nms_kernel<double>(dets, scores, iou_threshold);
  }
  if (dets.scalar_type() == at::kFloat) {
    return nms_kernel<float>(dets, scores, iou_threshold);
  }
  return nms_kernel<float>(dets.to(at::kFloat), scores.to(at::kFloat), iou_threshold);
}

// ---------------------------------------------------------------------------
// RoIAlign
// ---------------------------------------------------------------------------
//
// rois: [K, 5] = (batch_index, x1, y1, x2, y2) in input-image coordinates.
// For RoI k the box is scaled by spatial_scale and, if `aligned`, shifted by
// -0.5 so that pixel centres sit at integer + 0.5.  Without `aligned` the
// scaled RoI is forced to be at least 1x1.  Each of the PH x PW output bins
// averages gh x gw bilinear samples placed at the centres of a regular
// sub-grid of the bin; gh = sampling_ratio if > 0 else ceil(roi_h / PH)
// (likewise gw).  A sample more than one pixel outside the feature map
// contributes 0; otherwise coordinates are clamped into [0, size - 1].
//
// The sampling pattern depends only on the RoI, not the channel, so it is
// computed once per RoI into a table of "taps" (4 pixel offsets + 4 weights
// per sample) and then replayed over all channels.

template <typename T>
struct Tap {
  int64_t p[4];
  T w[4];
};

template <typename T>
struct RoiTaps {
  int64_t batch = 0;
  int64_t per_bin = 0;  // samples per output bin (gh * gw, >= 0)
  T inv_count = T(1);   // 1 / max(gh * gw, 1)
  std::vector<Tap<T>> taps;  // PH * PW * per_bin entries, bin-major
};

template <typename T>
static void make_tap(T y, T x, int64_t height, int64_t width, Tap<T>& t) {
  if (y < T(-1) || y > T(height) || x < T(-1) || x > T(width)) {
    for (int i = 0; i < 4; ++i) {
      t.p[i] = 0;
      t.w[i] = T(0);
    }
    return;
  }
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  int64_t y0 = static_cast<int64_t>(y);
  int64_t x0 = static_cast<int64_t>(x);
  int64_t y1, x1;
  if (y0 >= height - 1) {
    y0 = y1 = height - 1;
    y = T(y0);
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= width - 1) {
    x0 = x1 = width - 1;
    x = T(x0);
  } else {
    x1 = x0 + 1;
  }
  const T ly = y - T(y0), lx = x - T(x0);
  const T hy = T(1) - ly, hx = T(1) - lx;
  t.p[0] = y0 * width + x0;
  t.p[1] = y0 * width + x1;
  t.p[2] = y1 * width + x0;
  t.p[3] = y1 * width + x1;
  t.w[0] = hy * hx;
  t.w[1] = hy * lx;
  t.w[2] = ly * hx;
  t.w[3] = ly * lx;
}

template <typename T>
static void build_roi_taps(const T* roi, double spatial_scale, int64_t ph_n, int64_t pw_n,
                           int64_t sampling_ratio, bool aligned, int64_t height, int64_t width,
                           RoiTaps<T>& out) {
  out.batch = static_cast<int64_t>(roi[0]);
  const T scale = static_cast<T>(spatial_scale);
  const T shift = aligned ? T(0.5) : T(0);
  const T start_w = roi[1] * scale - shift;
  const T start_h = roi[2] * scale - shift;
  T roi_w = roi[3] * scale - shift - start_w;
  T roi_h = roi[4] * scale - shift - start_h;
  if (!aligned) {
    roi_w = std::max(roi_w, T(1));
    roi_h = std::max(roi_h, T(1));
  }
  const T bin_h = roi_h / static_cast<T>(ph_n);
  const T bin_w = roi_w / static_cast<T>(pw_n);
  const int64_t gh = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(roi_h / static_cast<T>(ph_n)));
  const int64_t gw = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(roi_w / static_cast<T>(pw_n)));
  const int64_t ngh = std::max<int64_t>(gh, 0);
  const int64_t ngw = std::max<int64_t>(gw, 0);
  out.per_bin = ngh * ngw;
  out.inv_count = T(1) / static_cast<T>(std::max<int64_t>(gh * gw, 1));
  out.taps.resize(static_cast<size_t>(ph_n * pw_n * out.per_bin));
  Tap<T>* t = out.taps.data();
  for (int64_t ph = 0; ph < ph_n; ++ph) {
    for (int64_t pw = 0; pw < pw_n; ++pw) {
      for (int64_t iy = 0; iy < ngh; ++iy) {
        const T y = start_h + static_cast<T>(ph) * bin_h +
                    (static_cast<T>(iy) + T(0.5)) * bin_h / static_cast<T>(gh);
        for (int64_t ix = 0; ix < ngw; ++ix) {
          const T x = start_w + static_cast<T>(pw) * bin_w +
                      (static_cast<T>(ix) + T(0.5)) * bin_w / static_cast<T>(gw);
          make_tap(y, x, height, width, *t++);
        }
      }
    }
  }
}

static void check_roi_align_args(const at::Tensor& input, const at::Tensor& rois, const char* what) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(), "tv_cpu_shim ", what, ": CPU tensors expected");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "rois must have shape as Tensor[K, 5]");
  TORCH_CHECK(input.scalar_type() == rois.scalar_type(),
              "Expected tensor for ", what, " input to have the same type as tensor for rois; but type ",
              input.scalar_type(), " does not equal ", rois.scalar_type());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), "tv_cpu_shim ", what, ": floating point input expected");
}

template <typename T>
static void roi_align_forward_kernel(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                     int64_t ph_n, int64_t pw_n, int64_t sampling_ratio, bool aligned,
                                     at::Tensor& output) {
  const int64_t batch = input.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  const int64_t num_rois = rois.size(0);
  const int64_t plane = height * width;
  const int64_t bins = ph_n * pw_n;
  const T* in = input.data_ptr<T>();
  const T* rp = rois.data_ptr<T>();
  T* out = output.data_ptr<T>();

  parallel_chunks(num_rois, 4, [&](int64_t k0, int64_t k1) {
    RoiTaps<T> rt;
    for (int64_t k = k0; k < k1; ++k) {
      build_roi_taps(rp + 5 * k, spatial_scale, ph_n, pw_n, sampling_ratio, aligned, height, width, rt);
      TORCH_CHECK(rt.batch >= 0 && rt.batch < batch, "roi_align: RoI ", k, " has batch index ", rt.batch,
                  " outside [0, ", batch, ")");
      const Tap<T>* taps = rt.taps.data();
      const int64_t per_bin = rt.per_bin;
      const T inv = rt.inv_count;
      for (int64_t c = 0; c < channels; ++c) {
        const T* src = in + (rt.batch * channels + c) * plane;
        T* dst = out + (k * channels + c) * bins;
        const Tap<T>* t = taps;
        for (int64_t b = 0; b < bins; ++b) {
          T acc = T(0);
          for (int64_t s = 0; s < per_bin; ++s, ++t) {
            acc += t->w[0] * src[t->p[0]] + t->w[1] * src[t->p[1]] + t->w[2] * src[t->p[2]] +
                   t->w[3] * src[t->p[3]];
          }
          dst[b] = acc * inv;
        }
      }
    }
  });
}

static at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                bool aligned) {
  check_roi_align_args(input, rois, "roi_align");
  TORCH_CHECK(input.dim() == 4, "roi_align: input must be NCHW, got ", input.dim(), "D");
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, "roi_align: output size must be positive");
  if (!is_native_float(input)) {
    return roi_align_cpu(input.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height,
                         pooled_width, sampling_ratio, aligned)
        .to(input.scalar_type());
  }
  const at::Tensor x = input.contiguous();
  const at::Tensor r = rois.contiguous();
  at::Tensor output = at::zeros({r.size(0), x.size(1), pooled_height, pooled_width}, x.options());
  if (output.numel() == 0) {
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_cpu_shim_roi_align_forward", [&] {
    roi_align_forward_kernel<scalar_t>(x, r, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                       aligned, output);
  });
  return output;
}

template <typename T>
static void roi_align_backward_kernel(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                      int64_t ph_n, int64_t pw_n, int64_t sampling_ratio, bool aligned,
                                      at::Tensor& grad_input) {
  const int64_t batch = grad_input.size(0), channels = grad_input.size(1);
  const int64_t height = grad_input.size(2), width = grad_input.size(3);
  const int64_t num_rois = rois.size(0);
  const int64_t plane = height * width;
  const int64_t bins = ph_n * pw_n;
  const T* g = grad.data_ptr<T>();
  const T* rp = rois.data_ptr<T>();
  T* gi = grad_input.data_ptr<T>();

  for (int64_t k = 0; k < num_rois; ++k) {
    const int64_t b = static_cast<int64_t>(rp[5 * k]);
    TORCH_CHECK(b >= 0 && b < batch, "_roi_align_backward: RoI ", k, " has batch index ", b,
                " outside [0, ", batch, ")");
  }

  // Work is split by channel: a chunk of channels owns those whole planes of
  // grad_input for every image, so scatter-adds never race (no atomics, and
  // the summation order is fixed, so results are deterministic).  The tap
  // table of each RoI is rebuilt once per chunk (~ one channel's worth of
  // work), hence chunks of >= 8 channels.
  const int64_t chunk = std::max<int64_t>(8, channels / (4 * std::max(1, at::get_num_threads())));
  parallel_chunks(channels, chunk, [&](int64_t c0, int64_t c1) {
    RoiTaps<T> rt;
    for (int64_t k = 0; k < num_rois; ++k) {
      build_roi_taps(rp + 5 * k, spatial_scale, ph_n, pw_n, sampling_ratio, aligned, height, width, rt);
      const int64_t per_bin = rt.per_bin;
      if (per_bin == 0) {
        continue;
      }
      const T inv = rt.inv_count;
      const Tap<T>* taps = rt.taps.data();
      for (int64_t c = c0; c < c1; ++c) {
        const T* gsrc = g + (k * channels + c) * bins;
        T* dst = gi + (rt.batch * channels + c) * plane;
        const Tap<T>* t = taps;
        for (int64_t bin = 0; bin < bins; ++bin) {
          const T gv = gsrc[bin] * inv;
          for (int64_t s = 0; s < per_bin; ++s, ++t) {
            dst[t->p[0]] += t->w[0] * gv;
            dst[t->p[1]] += t->w[1] * gv;
            dst[t->p[2]] += t->w[2] * gv;
            dst[t->p[3]] += t->w[3] * gv;
          }
        }
      }
    }
  });
}

static at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                         int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                         int64_t channels, int64_t height, int64_t width,
                                         int64_t sampling_ratio, bool aligned) {
  check_roi_align_args(grad, rois, "_roi_align_backward");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "_roi_align_backward: grad must have shape [K, C, PH, PW]");
  if (!is_native_float(grad)) {
    return roi_align_backward_cpu(grad.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height,
                                  pooled_width, batch_size, channels, height, width, sampling_ratio, aligned)
        .to(grad.scalar_type());
  }
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (grad.numel() == 0 || grad_input.numel() == 0) {
    return grad_input;
  }
  const at::Tensor gc = grad.contiguous();
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "tv_cpu_shim_roi_align_backward", [&] {
    roi_align_backward_kernel<scalar_t>(gc, r, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                        aligned, grad_input);
  });
  return grad_input;
}

// ---------------------------------------------------------------------------
// Everything else: schema only, CPU kernel raises.
// ---------------------------------------------------------------------------

static void not_implemented(const c10::OperatorHandle& op, torch::jit::Stack* /*stack*/) {
  TORCH_CHECK(false, op.schema().name(),
              " is not implemented in this CPU shim (benchmarks/peers/torchvision_cpu_ops.cpp); "
              "only nms, roi_align and _roi_align_backward have kernels.");
}

}  // namespace tv_cpu_shim

TORCH_LIBRARY(torchvision, m) {
  m.def("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor");
  m.def("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor");
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, float rois_scale, "
      "int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
      "-> (Tensor, Tensor)");
  m.def(
      "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor");
  m.def(
      "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
      "int sampling_ratio) -> (Tensor, Tensor)");
  m.def(
      "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width) -> Tensor");
  m.def(
      "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
      "-> (Tensor, Tensor)");
  m.def(
      "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
      "SymInt width) -> Tensor");
  m.def(
      "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
      "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
      "SymInt offset_groups, bool use_mask) -> Tensor");
  m.def(
      "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, "
      "Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
      "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor");
  // torchvision.extension._check_cuda_version() asks this; -1 means "no CUDA".
  m.def("_cuda_version", []() -> int64_t { return -1; });
}

TORCH_LIBRARY_IMPL(torchvision, CPU, m) {
  m.impl("nms", TORCH_FN(tv_cpu_shim::nms_cpu));
  m.impl("roi_align", TORCH_FN(tv_cpu_shim::roi_align_cpu));
  m.impl("_roi_align_backward", TORCH_FN(tv_cpu_shim::roi_align_backward_cpu));
  for (const char* name :
       {"qnms", "qroi_align", "roi_pool", "_roi_pool_backward", "ps_roi_align", "_ps_roi_align_backward",
        "ps_roi_pool", "_ps_roi_pool_backward", "deform_conv2d", "_deform_conv2d_backward", "box_iou_rotated"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&tv_cpu_shim::not_implemented>());
  }
}

// Shim-specific controls live in their own namespace so they cannot collide
// with anything torchvision defines.
TORCH_LIBRARY(tv_shim, m) {
  m.def("set_roi_align_parallel", [](bool enabled) -> void {
    tv_cpu_shim::g_roi_align_parallel.store(enabled);
  });
  m.def("roi_align_parallel", []() -> bool { return tv_cpu_shim::g_roi_align_parallel.load(); });
  m.def("info", []() -> std::string {
    return std::string("tf_rcnn torchvision CPU shim: nms (serial), roi_align (parallel over RoIs: ") +
           (tv_cpu_shim::g_roi_align_parallel.load() ? "on" : "off") +
           "), _roi_align_backward (parallel over channels: " +
           (tv_cpu_shim::g_roi_align_parallel.load() ? "on" : "off") + "); other ops raise";
  });
}
