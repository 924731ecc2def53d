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

// col[(c * kh + i) * kw + j][oy * Wo + ox] = x[c][oy*sh - ph + i*dh][ox*sw - pw + j*dw] (0 outside).
void im2col(const float* x, int C, int H, int W, const Conv2dParams& p, int Ho, int Wo, float* col) {
  const int64_t K = int64_t{C} * p.kernel_h * p.kernel_w, P = int64_t{Ho} * Wo;
  parallel_for(K, 8, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int c = static_cast<int>(k / (p.kernel_h * p.kernel_w));
      const int rem = static_cast<int>(k % (p.kernel_h * p.kernel_w));
      const int i = rem / p.kernel_w, j = rem % p.kernel_w;
      const float* xc = x + int64_t{c} * H * W;
      float* d = col + k * P;
      for (int oy = 0; oy < Ho; ++oy) {
        const int y = oy * p.stride_h - p.pad_h + i * p.dilation_h;
        float* drow = d + int64_t{oy} * Wo;
        if (y < 0 || y >= H) {
          std::fill(drow, drow + Wo, 0.f);
          continue;
        }
        const float* xrow = xc + int64_t{y} * W;
        for (int ox = 0; ox < Wo; ++ox) {
          const int xx = ox * p.stride_w - p.pad_w + j * p.dilation_w;
          drow[ox] = (xx >= 0 && xx < W) ? xrow[xx] : 0.f;
        }
      }
    }
  });
}

}  // namespace

Status conv2d_forward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                      const RaggedView& out, float* y) {
  const int G = p.groups, cin_g = p.in_channels / G, cout_g = p.out_channels / G;
  const int64_t K = int64_t{cin_g} * p.kernel_h * p.kernel_w;
  const bool pointwise = p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
                         p.pad_w == 0;
  std::vector<float> col;
  for (int i = 0; i < in.count; ++i) {
    const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
    const int64_t P = int64_t{Ho} * Wo;
    for (int g = 0; g < G; ++g) {
      const float* xg = x + in.offset[i] + int64_t{g} * cin_g * H * W;
      const float* B = xg;
      if (!pointwise) {
        col.resize(static_cast<size_t>(K * P));
        im2col(xg, cin_g, H, W, p, Ho, Wo, col.data());
        B = col.data();
      }
      gemm_nn(cout_g, P, K, weight + int64_t{g} * cout_g * K, K, B, P, y + out.offset[i] + int64_t{g} * cout_g * P, P,
              bias ? bias + int64_t{g} * cout_g : nullptr, p.relu, true);
    }
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
