// Caffe's WITHIN_CHANNEL local response norm, shared by the CPU and CUDA backends (one expression,
// one order of additions): y(q) = x(q) * D(q)^-beta with D(q) = k + alpha / size^2 * the sum of x^2
// over the size x size window centred on q in q's own plane (zero outside it; size is odd). Caffe
// computes it as an average pooling of x^2 whose divisor is size^2 everywhere (its padding fills
// each window to size x size) and a power layer with shift 1: k is 1 there.
//   dx(q) = dy(q) D(q)^-beta - 2 beta alpha / size^2 x(q) sum over p in window(q) of dy(p) x(p) D(p)^(-beta-1)
// (the window is symmetric: p is in window(q) exactly when q is in window(p)).
#pragma once
#include <cmath>
#include <cstdint>

#include "common.h"
#include "layers.h"

namespace sppnet {

// D at (py, px) of a plane [H, W].
SPP_HD float lrn_within_d(const float* plane, int H, int W, int py, int px, const LrnParams& p) {
  const int r = p.size / 2;
  const int y0 = py - r < 0 ? 0 : py - r, y1 = py + r >= H ? H - 1 : py + r;
  const int x0 = px - r < 0 ? 0 : px - r, x1 = px + r >= W ? W - 1 : px + r;
  float s = 0.f;
  for (int yy = y0; yy <= y1; ++yy)
    for (int xx = x0; xx <= x1; ++xx) {
      const float v = plane[int64_t{yy} * W + xx];
      s += v * v;
    }
  return p.k + p.alpha / static_cast<float>(p.size * p.size) * s;
}

SPP_HD float lrn_within_forward_at(const float* plane, int H, int W, int py, int px, const LrnParams& p) {
  return plane[int64_t{py} * W + px] / powf(lrn_within_d(plane, H, W, py, px, p), p.beta);
}

// dx at (py, px) from the planes of x and dy.
SPP_HD float lrn_within_backward_at(const float* xp, const float* gp, int H, int W, int py, int px, const LrnParams& p) {
  const int r = p.size / 2;
  const int y0 = py - r < 0 ? 0 : py - r, y1 = py + r >= H ? H - 1 : py + r;
  const int x0 = px - r < 0 ? 0 : px - r, x1 = px + r >= W ? W - 1 : px + r;
  float own = 0.f, t = 0.f;
  for (int yy = y0; yy <= y1; ++yy)
    for (int xx = x0; xx <= x1; ++xx) {
      const float D = lrn_within_d(xp, H, W, yy, xx, p), Dp = powf(D, -p.beta);
      const int64_t at = int64_t{yy} * W + xx;
      if (yy == py && xx == px) own = Dp;
      t += gp[at] * xp[at] * Dp / D;
    }
  const int64_t q = int64_t{py} * W + px;
  return gp[q] * own - 2.f * p.beta * p.alpha / static_cast<float>(p.size * p.size) * xp[q] * t;
}

}  // namespace sppnet
