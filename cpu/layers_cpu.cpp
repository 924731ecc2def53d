// CPU network layers over ragged batches: conv2d (im2col + GEMM), max_pool2d, LRN, linear, ReLU,
// softmax. Multithreaded; vectorised where it pays (GEMM, dot products).
#include <algorithm>
#include <cmath>
#include <vector>

#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "sppnet/layers.h"
#include "vec.h"

namespace sppnet {
namespace cpu {
namespace {

inline float relu1(float v) { return v > 0.f ? v : (v != v ? v : 0.f); }

// col[(c * kh + i) * kw + j][oy * Wo + ox] = x[c][oy*sh - ph + i*dh][ox*sw - pw + j*dw] (0 outside),
// with rows ld floats apart.
void im2col(const float* x, int C, int H, int W, const Conv2dParams& p, int Ho, int Wo, float* col, int64_t ld) {
  const int64_t K = int64_t{C} * p.kernel_h * p.kernel_w;
  parallel_for(K, 8, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int c = static_cast<int>(k / (p.kernel_h * p.kernel_w));
      const int rem = static_cast<int>(k % (p.kernel_h * p.kernel_w));
      const int i = rem / p.kernel_w, j = rem % p.kernel_w;
      const float* xc = x + int64_t{c} * H * W;
      float* d = col + k * ld;
      for (int oy = 0; oy < Ho; ++oy) {
        const int y = oy * p.stride_h - p.pad_h + i * p.dilation_h;
        float* drow = d + int64_t{oy} * Wo;
        if (y < 0 || y >= H) {
          std::fill(drow, drow + Wo, 0.f);
          continue;
        }
        const float* xrow = xc + int64_t{y} * W;
        // Columns ox whose source x = ox*sw - pw + j*dw lies in [0, W): [lo, hi); zeros around.
        const int shift = j * p.dilation_w - p.pad_w;
        int lo = shift >= 0 ? 0 : (-shift + p.stride_w - 1) / p.stride_w;
        int hi = (W - 1 - shift) < 0 ? 0 : (W - 1 - shift) / p.stride_w + 1;
        lo = std::min(lo, Wo);
        hi = std::max(lo, std::min(hi, Wo));
        std::fill(drow, drow + lo, 0.f);
        if (p.stride_w == 1)
          std::copy(xrow + lo + shift, xrow + hi + shift, drow + lo);
        else
          for (int ox = lo; ox < hi; ++ox) drow[ox] = xrow[ox * p.stride_w + shift];
        std::fill(drow + hi, drow + Wo, 0.f);
      }
    }
  });
}

}  // namespace

Status conv2d_forward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                      const RaggedView& out, float* y) {
  const int G = p.groups, cin_g = p.in_channels / G, cout_g = p.out_channels / G;
  const int64_t K = int64_t{cin_g} * p.kernel_h * p.kernel_w;
  // Small maps are taken in runs whose im2col columns sit side by side in one matrix [K][sum of P],
  // so that one GEMM covers the run (enough columns to share among cores, one thread start); a run
  // ends once it has kRunColumns columns or would pass kColFloats, and its result is scattered to
  // each map's [cout, Ho, Wo]. A large map is a run of its own, written in place.
  constexpr int64_t kColFloats = int64_t{1} << 24;  // 64 MiB
  constexpr int64_t kRunColumns = 1024;
  std::vector<float> col, res;  // (zero-filled on growth only)
  for (int i0 = 0; i0 < in.count;) {
    int64_t cols = int64_t{out.height[i0]} * out.width[i0];
    int i1 = i0 + 1;
    while (i1 < in.count && cols < kRunColumns && (cols + int64_t{out.height[i1]} * out.width[i1]) * K <= kColFloats)
      cols += int64_t{out.height[i1]} * out.width[i1], ++i1;
    col.resize(static_cast<size_t>(K * cols));
    res.resize(static_cast<size_t>(int64_t{cout_g} * cols));
    for (int g = 0; g < G; ++g) {
      int64_t n0 = 0;
      for (int i = i0; i < i1; ++i) {
        const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
        im2col(x + in.offset[i] + int64_t{g} * cin_g * H * W, cin_g, H, W, p, Ho, Wo, col.data() + n0, cols);
        n0 += int64_t{Ho} * Wo;
      }
      const bool single = i1 == i0 + 1;
      const int64_t P0 = int64_t{out.height[i0]} * out.width[i0];
      // One map: write straight into its output; several: into res, then scatter.
      float* C = single ? y + out.offset[i0] + int64_t{g} * cout_g * P0 : res.data();
      gemm_nn(cout_g, cols, K, weight + int64_t{g} * cout_g * K, K, col.data(), cols, C, cols,
              bias ? bias + int64_t{g} * cout_g : nullptr, p.relu, true);
      if (single) continue;
      n0 = 0;
      for (int i = i0; i < i1; ++i) {
        const int64_t P = int64_t{out.height[i]} * out.width[i];
        float* yi = y + out.offset[i] + int64_t{g} * cout_g * P;
        for (int m = 0; m < cout_g; ++m) std::copy(res.data() + m * cols + n0, res.data() + m * cols + n0 + P, yi + m * P);
        n0 += P;
      }
    }
    i0 = i1;
  }
  return Status::Ok();
}

// Max pooling per (map, channel) plane: for each output row, a vectorised NaN-propagating max over
// the window's rows, then the max over each window's columns of that row.
SPP_ISA_CLONES
void pool_rows(const float* __restrict xc, int W, int ys, int ye, float* __restrict acc) {
  for (int x = 0; x < W; ++x) acc[x] = -INFINITY;
  for (int y = ys; y < ye; ++y) {
    const float* row = xc + int64_t{y} * W;
    for (int x = 0; x < W; ++x) {
      const float v = row[x], m = acc[x];
      const float r = m > v ? m : v;
      acc[x] = m != m ? m : r;
    }
  }
}

Status max_pool2d_forward(const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, float* y) {
  const int64_t C = in.channels;
  int maxw = 1;
  for (int i = 0; i < in.count; ++i) maxw = std::max(maxw, in.width[i]);
  parallel_for(int64_t{in.count} * C, 4, [&](int64_t t0, int64_t t1) {
    std::vector<float> acc(static_cast<size_t>(maxw));
    for (int64_t t = t0; t < t1; ++t) {
      const int i = static_cast<int>(t / C), c = static_cast<int>(t % C);
      const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
      const float* xc = x + in.offset[i] + c * H * W;
      float* yc = y + out.offset[i] + c * Ho * Wo;
      for (int oy = 0; oy < Ho; ++oy) {
        const int ys = std::max(0, oy * p.stride_h - p.pad_h), ye = std::min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
        pool_rows(xc, W, ys, ye, acc.data());
        for (int ox = 0; ox < Wo; ++ox) {
          const int xs = std::max(0, ox * p.stride_w - p.pad_w), xe = std::min(W, ox * p.stride_w - p.pad_w + p.kernel_w);
          float m = -INFINITY;
          for (int xx = xs; xx < xe; ++xx) {
            const float v = acc[xx];
            m = (v > m || v != v) && m == m ? v : m;
          }
          yc[int64_t{oy} * Wo + ox] = m;
        }
      }
    }
  });
  return Status::Ok();
}

// x * (k + alpha/size * s)^-beta over a row, vectorised; beta = 0.75 (AlexNet, ZF) without pow.
SPP_ISA_CLONES
void lrn_row(const float* __restrict xc, const float* __restrict sum, int W, float k, float scale, float beta, float* __restrict yc) {
  if (beta == 0.75f) {
    for (int w = 0; w < W; ++w) {
      const float b = k + scale * sum[w];
      const float r = std::sqrt(b);
      yc[w] = xc[w] / (r * std::sqrt(r));
    }
  } else {
    for (int w = 0; w < W; ++w) yc[w] = xc[w] * std::pow(k + scale * sum[w], -beta);
  }
}

Status lrn_forward(const RaggedView& in, const float* x, const LrnParams& p, float* y) {
  const int C = in.channels, before = p.size / 2, after = (p.size - 1) / 2;
  const float scale = p.alpha / static_cast<float>(p.size);
  // Tasks: (map, row) so that small batches of large maps still spread over the cores.
  std::vector<int64_t> first(static_cast<size_t>(in.count) + 1, 0);
  for (int i = 0; i < in.count; ++i) first[i + 1] = first[i] + in.height[i];
  parallel_for(first.back(), 4, [&](int64_t t0, int64_t t1) {
    std::vector<float> sum;
    int i = static_cast<int>(std::upper_bound(first.begin(), first.end(), t0) - first.begin()) - 1;
    for (int64_t t = t0; t < t1; ++t) {
      while (t >= first[i + 1]) ++i;
      const int W = in.width[i], row = static_cast<int>(t - first[i]);
      const int64_t HW = int64_t{in.height[i]} * W;
      const float* xb = x + in.offset[i] + int64_t{row} * W;
      float* yb = y + in.offset[i] + int64_t{row} * W;
      sum.resize(static_cast<size_t>(W));
      for (int c = 0; c < C; ++c) {
        // The window's sum of squares, recomputed per channel (no running sum to drift).
        std::fill(sum.begin(), sum.end(), 0.f);
        for (int cc = std::max(0, c - before); cc <= std::min(C - 1, c + after); ++cc) {
          const float* xr = xb + cc * HW;
          for (int w = 0; w < W; ++w) sum[w] += xr[w] * xr[w];
        }
        lrn_row(xb + c * HW, sum.data(), W, p.k, scale, p.beta, yb + c * HW);
      }
    }
  });
  return Status::Ok();
}

Status linear_forward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* b,
                      bool relu, float* y) {
  // Each weight row is read once per call and reused for every input row: memory-bound on the
  // weights for the small batches this layer sees.
  parallel_for(out_features, 16, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const float* wo = w + o * in_features;
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * in_features;
        v16 acc0 = {}, acc1 = {};
        int k = 0;
        for (; k + 32 <= in_features; k += 32) {
          acc0 += v16_load(xr + k) * v16_load(wo + k);
          acc1 += v16_load(xr + k + 16) * v16_load(wo + k + 16);
        }
        float s = v16_sum(acc0 + acc1);
        for (; k < in_features; ++k) s += xr[k] * wo[k];
        if (b) s += b[o];
        y[r * out_features + o] = relu ? relu1(s) : s;
      }
    }
  });
  return Status::Ok();
}

Status relu_forward(int64_t n, const float* x, float* y) {
  parallel_for(n, int64_t{1} << 16, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) y[i] = relu1(x[i]);
  });
  return Status::Ok();
}

Status softmax_forward(int64_t rows, int32_t cols, const float* x, float* y) {
  parallel_for(rows, 8, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      float m = -INFINITY;
      for (int j = 0; j < cols; ++j) m = (xr[j] > m || xr[j] != xr[j]) && m == m ? xr[j] : m;
      double s = 0;
      for (int j = 0; j < cols; ++j) s += (yr[j] = std::exp(xr[j] - m));
      const float inv = static_cast<float>(1.0 / s);
      for (int j = 0; j < cols; ++j) yr[j] *= inv;
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
