// sp.cropResize: windows of images cropped and warped (bilinear, aspect not kept) to a fixed
// size, shared by both backends (cpu/crop_cpu.cpp, cuda/crop_cuda.cu): the check of the boxes and
// each window's sampling grid (host), and the sampling of one output element (host and device).
//
// A box (image, x1, y1, x2, y2) holds 0-based inclusive pixel indices: the window is the
// continuous [x1, x2 + 1) x [y1, y2 + 1), where pixel i covers [i, i + 1). With context p (R-CNN's
// padding) each axis is first enlarged about the window's centre by out / (out - 2p), so that p
// output pixels of context lie on each side. The window's ends, computed in double, are rounded
// to float: lo, hi.
//
// align 'pixels' (default): output column o samples the source at (pixel-index coordinates)
//   s(o) = (start + o * bin) + 0.5 * bin,  start = lo - 0.5,  bin = ((hi - 0.5) - start) / out,
// each operation in float, rounded in that order: exactly torchvision.ops.roi_align(aligned=True,
// sampling_ratio=1)'s sample position for the box [lo, hi) (roi_align_kernel.cpp), i.e. pixel
// centres, align_corners=False.
// align 'corners': s(o) = lo + o * step, step = (hi - 1 - lo) / (out - 1) (double, then float;
//   0 when out = 1): the first and last samples at the centres of the window's first and last
//   pixels (F.interpolate's align_corners=True on the crop).
//
// Bilinear sampling at s: neighbours i0 = floor(s) and i0 + 1 with weights 1 - l and l (l = s - i0);
// a neighbour outside [0, n) reads 0 (the image is taken as extended by zeros: after mean
// subtraction, the mean). Per output element, with hy = 1 - ly, hx = 1 - lx:
//   (hy * hx) * v00 + (hy * lx) * v01 + (ly * hx) * v10 + (ly * lx) * v11, summed left to right,
// roi_align's expression, so where all four neighbours are inside the image the value is roi_align's
// bit for bit. (roi_align itself instead clamps a sample in (-1, 0) to 0 and one in [n - 1, n] to
// n - 1: it differs within a pixel of the image's border; roi_align of the image zero-padded by one
// pixel is this rule.) A neighbour outside is never read, so a NaN or infinity at the border does
// not leak into samples that do not touch it.
//
// Built with -ffp-contract=off (host) and __fmul_rn/__fadd_rn (device): no FMA contraction, so the
// CPU, the GPU and torchvision round alike.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common.h"
#include "status.h"
#include "tensor.h"

namespace sppnet {

enum CropAlign : int32_t { kCropPixels = 0, kCropCorners = 1 };

struct CropParams {
  int32_t out_h = 1, out_w = 1;  // [1, 4096] each (lib/ops/crop.ts)
  int32_t context = 0;           // 0 <= 2 * context < min(out_h, out_w)
  int32_t align = kCropPixels;
};

// One window's grid: where its image's channel planes start, the image's size, and per axis the
// start and step of the samples (their meaning depends on align, above).
struct CropWindow {
  int64_t offset;
  int32_t h, w;
  float y_start, y_step, x_start, x_step;
};

// Coordinates beyond this (2^24) would leave float's integers behind: such boxes are refused.
constexpr double kCropMaxCoord = 16777216.0;

SPP_HD float crop_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SPP_HD float crop_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// The sample position of output index o along one axis.
SPP_HD float crop_coord(float start, float step, int32_t o, int32_t align) {
  const float t = crop_add(start, crop_mul(static_cast<float>(o), step));
  return align == kCropPixels ? crop_add(t, crop_mul(0.5f, step)) : t;
}

// One axis of a bilinear sample at s over [0, n): the lower neighbour i0, the weights of i0 (h)
// and i0 + 1 (l), and whether each is inside. A sample that touches no pixel (s <= -1, s >= n,
// NaN) has both outside.
struct CropTap {
  int32_t i0;
  float h, l;
  bool in0, in1;
};
SPP_HD CropTap crop_tap(float s, int32_t n) {
  CropTap t;
  if (!(s > -1.f && s < static_cast<float>(n))) {
    t.i0 = -2, t.h = 0.f, t.l = 0.f, t.in0 = t.in1 = false;
    return t;
  }
  t.i0 = static_cast<int32_t>(floorf(s));
  t.l = crop_add(s, -static_cast<float>(t.i0));
  t.h = crop_add(1.f, -t.l);
  t.in0 = t.i0 >= 0;
  t.in1 = t.i0 + 1 <= n - 1;
  return t;
}

// The output element at taps (ty, tx) of the plane `src` (w columns): roi_align's expression.
SPP_HD float crop_sample(const float* src, int32_t w, const CropTap& ty, const CropTap& tx) {
  const int64_t r0 = int64_t{ty.i0} * w + tx.i0, r1 = r0 + w;  // only read where inside
  const float v00 = ty.in0 && tx.in0 ? src[r0] : 0.f, v01 = ty.in0 && tx.in1 ? src[r0 + 1] : 0.f;
  const float v10 = ty.in1 && tx.in0 ? src[r1] : 0.f, v11 = ty.in1 && tx.in1 ? src[r1 + 1] : 0.f;
  const float a = crop_mul(crop_mul(ty.h, tx.h), v00), b = crop_mul(crop_mul(ty.h, tx.l), v01);
  const float c = crop_mul(crop_mul(ty.l, tx.h), v10), d = crop_mul(crop_mul(ty.l, tx.l), v11);
  return crop_add(crop_add(crop_add(a, b), c), d);
}

// One axis of a window: the box's inclusive [a1, a2] to (start, step).
inline void crop_axis(double a1, double a2, int32_t out, int32_t context, int32_t align, float* start, float* step) {
  double lo = a1, hi = a2 + 1.0;
  if (context > 0) {
    const double half = (hi - lo) * 0.5 * out / (out - 2 * context), c = (lo + hi) * 0.5;
    lo = c - half;
    hi = c + half;
  }
  const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
  if (align == kCropPixels) {
    *start = flo - 0.5f;
    *step = ((fhi - 0.5f) - *start) / static_cast<float>(out);
  } else {
    *start = flo;
    *step = out > 1 ? static_cast<float>((static_cast<double>(fhi) - 1.0 - static_cast<double>(flo)) / (out - 1)) : 0.f;
  }
}

// Checks the k boxes [k, 5] (host memory) against the images `in` and computes their windows.
// Errors (kInvalidArgument) name the box: an image index that is not an integer in [0, count), a
// coordinate that is not finite or beyond 2^24 in magnitude, x2 < x1 or y2 < y1.
inline Status crop_windows(const RaggedView& in, int32_t k, const float* boxes, const CropParams& p, std::vector<CropWindow>* out) {
  if (p.out_h < 1 || p.out_w < 1 || p.context < 0 || 2 * int64_t{p.context} >= p.out_h || 2 * int64_t{p.context} >= p.out_w ||
      (p.align != kCropPixels && p.align != kCropCorners))
    return Status::Error(Code::kInternal, "cropResize: bad parameters");
  out->resize(static_cast<size_t>(k));
  for (int32_t i = 0; i < k; ++i) {
    const float* b = boxes + int64_t{i} * 5;
    auto where = [&]() {
      char s[200];
      std::snprintf(s, sizeof s, "boxes[%d] = (%.9g, %.9g, %.9g, %.9g, %.9g)", i, b[0], b[1], b[2], b[3], b[4]);
      return std::string(s);
    };
    const double m = b[0];
    if (!(m >= 0 && m < in.count && m == std::floor(m)))
      return Status::Error(Code::kInvalidArgument, where() + ": the image index must be an integer in [0, " + std::to_string(in.count) +
                                                       ") (the images hold " + std::to_string(in.count) + " image(s))");
    for (int j = 1; j < 5; ++j)
      if (!(std::fabs(static_cast<double>(b[j])) <= kCropMaxCoord))
        return Status::Error(Code::kInvalidArgument, where() + ": coordinates must be finite numbers within +-2^24");
    if (!(b[3] >= b[1]) || !(b[4] >= b[2]))
      return Status::Error(Code::kInvalidArgument, where() + ": the window is empty: need x1 <= x2 and y1 <= y2 (inclusive pixel indices)");
    const int32_t mi = static_cast<int32_t>(m);
    CropWindow& w = (*out)[static_cast<size_t>(i)];
    w.offset = in.offset[mi];
    w.h = in.height[mi];
    w.w = in.width[mi];
    crop_axis(b[2], b[4], p.out_h, p.context, p.align, &w.y_start, &w.y_step);
    crop_axis(b[1], b[3], p.out_w, p.context, p.align, &w.x_start, &w.x_step);
  }
  return Status::Ok();
}

}  // namespace sppnet
