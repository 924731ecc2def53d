// CPU backward passes of the layers and the optimizer steps. Multithreaded with parallel_for;
// every reduction (weight and bias gradients, overlapping pooling windows) runs in a fixed order,
// so results do not depend on the thread count or on scheduling. Straightforward by design:
// im2col + gemm_nn for the convolution, plain loops elsewhere.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "sppnet/dropout.h"
#include "sppnet/ops.h"
#include "vec.h"

namespace sppnet {
namespace cpu {
namespace {

// Transposed im2col of one map and group: colT[p][k] (rows ld floats apart) for output pixel
// p = oy * Wo + ox and k = (c * kh + i) * kw + j: x[c][oy*sh - ph + i*dh][ox*sw - pw + j*dw], 0 outside.
void im2col_t(const float* x, int C, int H, int W, const Conv2dParams& p, int Ho, int Wo, float* colT, int64_t ld) {
  parallel_for(Ho, 4, [&](int64_t y0, int64_t y1) {
    for (int64_t oy = y0; oy < y1; ++oy)
      for (int ox = 0; ox < Wo; ++ox) {
        float* d = colT + (oy * Wo + ox) * ld;
        for (int c = 0; c < C; ++c) {
          const float* xc = x + int64_t{c} * H * W;
          for (int i = 0; i < p.kernel_h; ++i) {
            const int yy = static_cast<int>(oy) * p.stride_h - p.pad_h + i * p.dilation_h;
            for (int j = 0; j < p.kernel_w; ++j, ++d) {
              const int xx = ox * p.stride_w - p.pad_w + j * p.dilation_w;
              *d = (yy < 0 || yy >= H || xx < 0 || xx >= W) ? 0.f : xc[int64_t{yy} * W + xx];
            }
          }
        }
      }
  });
}

// dx[c] = sum of the column entries that read it: col2im of dcol [K][ld], column offset given.
// Parallel over channels: each thread owns whole input planes, so no two threads add to one element.
void col2im(const float* dcol, int64_t ld, int C, int H, int W, const Conv2dParams& p, int Ho, int Wo, float* dx) {
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float* xc = dx + c * H * W;
      std::fill(xc, xc + int64_t{H} * W, 0.f);
      for (int i = 0; i < p.kernel_h; ++i)
        for (int j = 0; j < p.kernel_w; ++j) {
          const float* d = dcol + ((c * p.kernel_h + i) * p.kernel_w + j) * ld;
          for (int oy = 0; oy < Ho; ++oy) {
            const int yy = oy * p.stride_h - p.pad_h + i * p.dilation_h;
            if (yy < 0 || yy >= H) continue;
            float* xrow = xc + int64_t{yy} * W;
            const float* drow = d + int64_t{oy} * Wo;
            for (int ox = 0; ox < Wo; ++ox) {
              const int xx = ox * p.stride_w - p.pad_w + j * p.dilation_w;
              if (xx >= 0 && xx < W) xrow[xx] += drow[ox];
            }
          }
        }
    }
  });
}

}  // namespace

Status conv2d_backward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const RaggedView& out,
                       const float* dy, float* dx, float* dw, float* db) {
  const int G = p.groups, cin_g = p.in_channels / G, cout_g = p.out_channels / G;
  const int64_t K = int64_t{cin_g} * p.kernel_h * p.kernel_w;
  // Bias: per output channel, a float64 sum over maps then pixels (fixed order).
  if (db) {
    parallel_for(p.out_channels, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t co = c0; co < c1; ++co) {
        double s = 0;
        for (int i = 0; i < out.count; ++i) {
          const int64_t P = int64_t{out.height[i]} * out.width[i];
          const float* d = dy + out.offset[i] + co * P;
          for (int64_t q = 0; q < P; ++q) s += d[q];
        }
        db[co] = static_cast<float>(s);
      }
    });
  }
  std::fill(dw, dw + int64_t{p.out_channels} * K, 0.f);
  // Maps are taken in runs whose columns sit side by side (as in the forward), so that one GEMM
  // covers a run: dW_g += dY_run [cout_g, cols] . colT_run [cols, K]; dcol_run [K, cols] = W_g^T . dY_run.
  constexpr int64_t kRunFloats = int64_t{1} << 22;  // per scratch matrix, unless one map needs more
  std::vector<float> colT, dyrun, dcol, part, wT;
  if (dx) {
    // W_g^T [K, cout_g] per group, once.
    wT.resize(static_cast<size_t>(K * p.out_channels));
    for (int g = 0; g < G; ++g)
      for (int m = 0; m < cout_g; ++m)
        for (int64_t k = 0; k < K; ++k) wT[g * K * cout_g + k * cout_g + m] = weight[(int64_t{g} * cout_g + m) * K + k];
  }
  part.resize(static_cast<size_t>(int64_t{cout_g} * K));
  for (int i0 = 0; i0 < in.count;) {
    int64_t cols = int64_t{out.height[i0]} * out.width[i0];
    int i1 = i0 + 1;
    while (i1 < in.count && (cols + int64_t{out.height[i1]} * out.width[i1]) * std::max<int64_t>(K, cout_g) <= kRunFloats)
      cols += int64_t{out.height[i1]} * out.width[i1], ++i1;
    const bool single = i1 == i0 + 1;
    colT.resize(static_cast<size_t>(cols * K));
    if (!single) dyrun.resize(static_cast<size_t>(int64_t{cout_g} * cols));
    if (dx) dcol.resize(static_cast<size_t>(K * cols));
    for (int g = 0; g < G; ++g) {
      int64_t n0 = 0;
      for (int i = i0; i < i1; ++i) {
        const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
        const int64_t P = int64_t{Ho} * Wo;
        im2col_t(x + in.offset[i] + int64_t{g} * cin_g * H * W, cin_g, H, W, p, Ho, Wo, colT.data() + n0 * K, K);
        if (!single) {
          const float* src = dy + out.offset[i] + int64_t{g} * cout_g * P;
          for (int m = 0; m < cout_g; ++m) std::copy(src + m * P, src + (m + 1) * P, dyrun.data() + m * cols + n0);
        }
        n0 += P;
      }
      const float* A = single ? dy + out.offset[i0] + int64_t{g} * cout_g * cols : dyrun.data();
      gemm_nn(cout_g, K, cols, A, cols, colT.data(), K, part.data(), K, nullptr, false, true);
      float* dwg = dw + int64_t{g} * cout_g * K;
      for (int64_t e = 0; e < int64_t{cout_g} * K; ++e) dwg[e] += part[e];
      if (!dx) continue;
      gemm_nn(K, cols, cout_g, wT.data() + g * K * cout_g, cout_g, A, cols, dcol.data(), cols, nullptr, false, true);
      n0 = 0;
      for (int i = i0; i < i1; ++i) {
        const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
        col2im(dcol.data() + n0, cols, cin_g, H, W, p, Ho, Wo, dx + in.offset[i] + int64_t{g} * cin_g * H * W);
        n0 += int64_t{Ho} * Wo;
      }
    }
    i0 = i1;
  }
  return Status::Ok();
}

Status max_pool2d_backward(const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, const float* dy,
                           float* dx) {
  const int64_t C = in.channels;
  parallel_for(int64_t{in.count} * C, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int i = static_cast<int>(t / C), c = static_cast<int>(t % C);
      const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
      const float* xc = x + in.offset[i] + c * int64_t{H} * W;
      float* gc = dx + in.offset[i] + c * int64_t{H} * W;
      const float* dc = dy + out.offset[i] + c * int64_t{Ho} * Wo;
      std::fill(gc, gc + int64_t{H} * W, 0.f);
      for (int oy = 0; oy < Ho; ++oy) {
        const int ys = std::max(0, oy * p.stride_h - p.pad_h), ye = std::min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
        for (int ox = 0; ox < Wo; ++ox) {
          const int xs = std::max(0, ox * p.stride_w - p.pad_w), xe = std::min(W, ox * p.stride_w - p.pad_w + p.kernel_w);
          // PyTorch's rule: strictly greater replaces (first maximum wins ties), any NaN replaces.
          int64_t best = int64_t{ys} * W + xs;
          float m = -INFINITY;
          for (int yy = ys; yy < ye; ++yy)
            for (int xx = xs; xx < xe; ++xx) {
              const float v = xc[int64_t{yy} * W + xx];
              if (v > m || v != v) m = v, best = int64_t{yy} * W + xx;
            }
          gc[best] += dc[int64_t{oy} * Wo + ox];
        }
      }
    }
  });
  return Status::Ok();
}

// y_c = x_c * D_c^-beta with D_c = k + alpha/size * sum_{c' in win(c)} x_c'^2, win(c) = [c - size/2, c + (size-1)/2]:
// dx_j = dy_j D_j^-beta - 2 alpha beta / size * x_j * sum_{c : j in win(c)} dy_c x_c D_c^(-beta-1),
// and j in win(c) exactly when c is in [j - (size-1)/2, j + size/2].
Status lrn_backward(const RaggedView& in, const float* x, const LrnParams& p, const float* dy, float* dx) {
  const int C = in.channels, before = p.size / 2, after = (p.size - 1) / 2;
  const double scale = static_cast<double>(p.alpha) / p.size, beta = p.beta, coef = 2.0 * p.alpha * p.beta / p.size;
  std::vector<int64_t> first(static_cast<size_t>(in.count) + 1, 0);
  for (int i = 0; i < in.count; ++i) first[i + 1] = first[i] + in.height[i];
  parallel_for(first.back(), 2, [&](int64_t t0, int64_t t1) {
    std::vector<double> Dpow(static_cast<size_t>(C)), t(static_cast<size_t>(C));
    int i = static_cast<int>(std::upper_bound(first.begin(), first.end(), t0) - first.begin()) - 1;
    for (int64_t task = t0; task < t1; ++task) {
      while (task >= first[i + 1]) ++i;
      const int W = in.width[i], row = static_cast<int>(task - first[i]);
      const int64_t HW = int64_t{in.height[i]} * W;
      const int64_t base = in.offset[i] + int64_t{row} * W;
      for (int w = 0; w < W; ++w) {
        const float* xb = x + base + w;
        const float* gb = dy + base + w;
        for (int c = 0; c < C; ++c) {
          double s = 0;
          for (int cc = std::max(0, c - before); cc <= std::min(C - 1, c + after); ++cc) s += double{xb[cc * HW]} * xb[cc * HW];
          const double D = p.k + scale * s;
          Dpow[c] = std::pow(D, -beta);
          t[c] = double{gb[c * HW]} * xb[c * HW] * Dpow[c] / D;
        }
        for (int j = 0; j < C; ++j) {
          double s = 0;
          for (int c = std::max(0, j - after); c <= std::min(C - 1, j + before); ++c) s += t[c];
          dx[base + w + j * HW] = static_cast<float>(gb[j * HW] * Dpow[j] - coef * xb[j * HW] * s);
        }
      }
    }
  });
  return Status::Ok();
}

namespace {

// dx[r][i0 .. i0 + 16 CW) = sum over o of dy[r][o] w[o][i0 ..] for NR rows: CW x NR accumulators
// over a 16 CW-column stripe of w, read row by row (each weight read once, from memory).
template <int NR, int CW>
SPP_ISA_CLONES void linear_dx_stripe(int64_t i0, int64_t in, int64_t out, const float* dy, const float* w, float* dx) {
  v16 a[NR][CW];
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < CW; ++c) a[r][c] = v16{};
  for (int64_t o = 0; o < out; ++o) {
    const float* wo = w + o * in + i0;
    // The stripe's rows are `in` floats apart: fetch a few rows ahead.
    if (o + 8 < out)
      for (int c = 0; c < CW; ++c) __builtin_prefetch(wo + 8 * in + 16 * c);
    v16 wv[CW];
    for (int c = 0; c < CW; ++c) wv[c] = v16_load(wo + 16 * c);
    for (int r = 0; r < NR; ++r) {
      const v16 d = v16_splat(dy[r * out + o]);
      for (int c = 0; c < CW; ++c) a[r][c] += d * wv[c];
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < CW; ++c) v16_store(dx + r * in + i0 + 16 * c, a[r][c]);
}

// The same for the last columns (fewer than 16 CW), element by element.
void linear_dx_tail(int64_t i0, int64_t i1, int64_t rows, int64_t in, int64_t out, const float* dy, const float* w, float* dx) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = i0; i < i1; ++i) {
      float s = 0.f;
      for (int64_t o = 0; o < out; ++o) s += dy[r * out + o] * w[o * in + i];
      dx[r * in + i] = s;
    }
}

constexpr int64_t kDxRows = 4;       // rows per pass of the streaming dx kernel
constexpr int64_t kDxGemmRows = 8;   // from this many rows on, the packed GEMM (w packed once)

}  // namespace

Status linear_backward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* dy,
                       float* dx, float* dw, float* db) {
  // dx [rows, in] = dy [rows, out] . w [out, in]. Few rows: stream w once in column stripes (the
  // GEMM would first pack all of w: fc6's 210 MB, for 4 rows); more: the packed GEMM.
  if (dx && rows > 0 && rows < kDxGemmRows) {
    const int64_t in = in_features, out = out_features;
    constexpr int CW = 4;  // 64 columns a stripe
    const int64_t stripes = in / (16 * CW);
    parallel_for(stripes + 1, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t st = s0; st < s1; ++st) {
        if (st == stripes) {
          linear_dx_tail(stripes * 16 * CW, in, rows, in, out, dy, w, dx);
          continue;
        }
        for (int64_t r0 = 0; r0 < rows; r0 += kDxRows) {
          const float* d = dy + r0 * out;
          float* o = dx + r0 * in;
          switch (std::min(kDxRows, rows - r0)) {
            case 1: linear_dx_stripe<1, CW>(st * 16 * CW, in, out, d, w, o); break;
            case 2: linear_dx_stripe<2, CW>(st * 16 * CW, in, out, d, w, o); break;
            case 3: linear_dx_stripe<3, CW>(st * 16 * CW, in, out, d, w, o); break;
            default: linear_dx_stripe<4, CW>(st * 16 * CW, in, out, d, w, o); break;
          }
        }
      }
    });
  } else if (dx) {
    gemm_nn(rows, in_features, out_features, dy, out_features, w, in_features, dx, in_features, nullptr, false, true);
  }
  // dw [out, in] = dy^T [out, rows] . x [rows, in]
  std::vector<float> dyT(static_cast<size_t>(rows * out_features));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out_features; ++o) dyT[o * rows + r] = dy[r * out_features + o];
  if (rows == 0)
    std::fill(dw, dw + int64_t{in_features} * out_features, 0.f);
  else
    gemm_nn(out_features, in_features, rows, dyT.data(), rows, x, in_features, dw, in_features, nullptr, false, true);
  if (db)
    parallel_for(out_features, 64, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        double s = 0;
        for (int64_t r = 0; r < rows; ++r) s += dyT[o * rows + r];
        db[o] = static_cast<float>(s);
      }
    });
  return Status::Ok();
}

Status relu_backward(int64_t n, const float* y, const float* dy, float* dx) {
  parallel_for(n, int64_t{1} << 16, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) dx[i] = y[i] <= 0.f ? 0.f : dy[i];
  });
  return Status::Ok();
}

Status dropout_forward(int64_t n, const float* x, const DropoutParams& p, float* y, float* mask) {
  parallel_for(n, int64_t{1} << 15, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) {
      const float m = dropout_bits(p.seed, static_cast<uint64_t>(i)) >= p.threshold ? p.scale : 0.f;
      mask[i] = m;
      y[i] = x[i] * m;
    }
  });
  return Status::Ok();
}

Status multiply(int64_t n, const float* a, const float* b, float* y) {
  parallel_for(n, int64_t{1} << 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) y[i] = a[i] * b[i];
  });
  return Status::Ok();
}

Status softmax_cross_entropy(int64_t rows, int32_t cols, const float* logits, const int32_t* labels, float* grad, double* row_loss,
                             int32_t* row_correct) {
  const double inv_rows = rows > 0 ? 1.0 / static_cast<double>(rows) : 0.0;
  parallel_for(rows, 8, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r) {
      const float* xr = logits + r * cols;
      float* gr = grad + r * cols;
      // Max and argmax: the first maximum; a NaN counts as the maximum (its first occurrence).
      float m = -INFINITY;
      int32_t am = 0;
      for (int j = 0; j < cols; ++j)
        if (m == m && (xr[j] > m || xr[j] != xr[j])) m = xr[j], am = j;
      double s = 0;
      for (int j = 0; j < cols; ++j) s += std::exp(static_cast<double>(xr[j]) - m);
      const int32_t label = labels[r];
      row_loss[r] = std::log(s) + m - static_cast<double>(xr[label]);
      row_correct[r] = am == label ? 1 : 0;
      for (int j = 0; j < cols; ++j) {
        const double sm = std::exp(static_cast<double>(xr[j]) - m) / s;
        gr[j] = static_cast<float>((sm - (j == label ? 1.0 : 0.0)) * inv_rows);
      }
    }
  });
  return Status::Ok();
}

namespace {

// One SGD update of [a, e): the flags are template parameters so that each loop is branch-free
// and vectorises (ISA clones); the arithmetic is the same expression by expression.
template <bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
SPP_ISA_CLONES void sgd_range(int64_t a, int64_t e, float* param, const float* grad, float* buf,
                              SgdParams p) {
  const float damp = 1.f - p.dampening;
  for (int64_t i = a; i < e; ++i) {
    float d = grad[i];
    if (kDecay) d = d + p.weight_decay * param[i];
    if (kMomentum) {
      const float b = kFirst ? d : p.momentum * buf[i] + damp * d;
      buf[i] = b;
      d = kNesterov ? d + p.momentum * b : b;
    }
    param[i] = param[i] - p.lr * d;
  }
}

template <bool kDecay, bool kMomentum, bool kFirst>
void sgd_pick_nesterov(int64_t a, int64_t e, float* param, const float* grad, float* buf, const SgdParams& p) {
  if (p.nesterov)
    sgd_range<kDecay, kMomentum, kFirst, true>(a, e, param, grad, buf, p);
  else
    sgd_range<kDecay, kMomentum, kFirst, false>(a, e, param, grad, buf, p);
}

template <bool kDecay>
void sgd_pick(int64_t a, int64_t e, float* param, const float* grad, float* buf, const SgdParams& p) {
  if (p.momentum == 0.f)
    sgd_range<kDecay, false, false, false>(a, e, param, grad, buf, p);
  else if (p.first_step)
    sgd_pick_nesterov<kDecay, true, true>(a, e, param, grad, buf, p);
  else
    sgd_pick_nesterov<kDecay, true, false>(a, e, param, grad, buf, p);
}

}  // namespace

Status sgd_step(int64_t n, float* param, const float* grad, float* buf, const SgdParams& p) {
  parallel_for(n, int64_t{1} << 15, [&](int64_t a, int64_t e) {
    if (p.weight_decay != 0.f)
      sgd_pick<true>(a, e, param, grad, buf, p);
    else
      sgd_pick<false>(a, e, param, grad, buf, p);
  });
  return Status::Ok();
}

namespace {

// One Adam / AdamW update of [a, e) (kDecay: 0 none, 1 L2 into the gradient, 2 decoupled); the
// flags are template parameters so that the loop is branch-free and vectorises (ISA clones).
template <int kDecay, bool kLerpLow>
SPP_ISA_CLONES void adam_range(int64_t a, int64_t e, float* param, const float* grad, float* m, float* v, AdamParams p) {
  const float w1 = 1.f - p.beta1, w2 = 1.f - p.beta2;
  const float decay = 1.f - p.lr * p.weight_decay;
  for (int64_t i = a; i < e; ++i) {
    float g = grad[i], x = param[i];
    if (kDecay == 2) x = x * decay;
    if (kDecay == 1) g = g + p.weight_decay * x;
    // m.lerp_(g, 1 - beta1) as PyTorch computes it (weight < 0.5: m + w * (g - m)).
    const float mi = kLerpLow ? m[i] + w1 * (g - m[i]) : g - (g - m[i]) * (1.f - w1);
    const float vi = v[i] * p.beta2 + w2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / p.bias_correction2_sqrt + p.eps;
    param[i] = x - p.step_size * mi / denom;
  }
}

template <int kDecay>
void adam_pick(int64_t a, int64_t e, float* param, const float* grad, float* m, float* v, const AdamParams& p) {
  if (1.f - p.beta1 < 0.5f)
    adam_range<kDecay, true>(a, e, param, grad, m, v, p);
  else
    adam_range<kDecay, false>(a, e, param, grad, m, v, p);
}

}  // namespace

Status adam_step(int64_t n, float* param, const float* grad, float* m, float* v, const AdamParams& p) {
  parallel_for(n, int64_t{1} << 15, [&](int64_t a, int64_t e) {
    if (p.weight_decay == 0.f)
      adam_pick<0>(a, e, param, grad, m, v, p);
    else if (p.decoupled)
      adam_pick<2>(a, e, param, grad, m, v, p);
    else
      adam_pick<1>(a, e, param, grad, m, v, p);
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
