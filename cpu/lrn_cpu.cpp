// CPU local response norm (PyTorch's local_response_norm across channels): forward, backward, and
// the forward fused with the max pooling that follows it at inference.
#include <algorithm>
#include <cmath>
#include <vector>

#include "isa.h"
#include "parallel.h"
#include "pool_cpu.h"
#include "sppnet/lrn_within.h"
#include "sppnet/ops.h"
#include "vec.h"

namespace sppnet {
namespace cpu {

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

// sum[w] = sum over channels c0..c1 of x[c][w]^2 (rows HW apart), in channel order.
SPP_ISA_CLONES
void lrn_window_sum(const float* __restrict xb, int64_t HW, int c0, int c1, int W, float* __restrict sum) {
  for (int w = 0; w < W; ++w) sum[w] = 0.f;
  for (int cc = c0; cc <= c1; ++cc) {
    const float* xr = xb + cc * HW;
    for (int w = 0; w < W; ++w) sum[w] += xr[w] * xr[w];
  }
}

#ifdef SPP_X86
#pragma GCC push_options
#pragma GCC target("avx512f")
// One row of one map, every channel, beta = 0.75: per 16 columns, the window's sum of squares
// (recomputed: a running sum would drift, and a NaN or inf that left the window would stay in
// it), then x * b^-3/4 with b = k + scale * sum. Per 16-column chunk the row's C channel values
// are first copied into raw (C x 16 floats, 64-byte aligned: L1), one masked load each, so the
// window sums then read aligned L1 lines instead of 6 unaligned loads per output from channel
// planes HW apart. Output channel c goes to yb + c * ys.
void lrn_rows_avx512(const float* xb, float* yb, int64_t HW, int64_t ys, int C, int W, int before, int after, float k, float scale,
                     float* raw) {
  const __m512 vk = _mm512_set1_ps(k), vs = _mm512_set1_ps(scale);
  const __m512 half = _mm512_set1_ps(0.5f), three_halves = _mm512_set1_ps(1.5f), lo = _mm512_set1_ps(1e-30f), hi = _mm512_set1_ps(1e30f);
  for (int w = 0; w < W; w += 16) {
    const __mmask16 m = W - w >= 16 ? __mmask16(0xffff) : __mmask16((1u << (W - w)) - 1);
    for (int c = 0; c < C; ++c) {
      // C streams HW apart are more than the hardware prefetchers follow: fetch the next chunk's
      // line of each (past the row's end, the same channel's next row: the next task's).
      _mm_prefetch(reinterpret_cast<const char*>(xb + c * HW + w + 32), _MM_HINT_T0);
      _mm512_store_ps(raw + c * 16, _mm512_maskz_loadu_ps(m, xb + c * HW + w));
    }
    for (int c = 0; c < C; ++c) {
      const int c0 = std::max(0, c - before), c1 = std::min(C - 1, c + after);
      __m512 s = _mm512_setzero_ps();
      for (int cc = c0; cc <= c1; ++cc) {
        const __m512 v = _mm512_load_ps(raw + cc * 16);
        s = _mm512_fmadd_ps(v, v, s);
      }
      const __m512 b = _mm512_fmadd_ps(vs, s, vk);
      const __m512 xv = _mm512_load_ps(raw + c * 16);
      // b^-3/4 = r * sqrt(r), r = b^-1/2, sqrt(r) = r * r^-1/2: two rsqrt14 estimates, each
      // refined by one Newton step (y (1.5 - 0.5 a y^2): a relative error ~1e-8 before rounding,
      // a few ulp after) instead of two sqrt and a divide. Lanes with b outside (1e-30, 1e30)
      // (0, negative, inf, NaN, where the refinement would not hold) take the exact sqrt /
      // divide, so inf and NaN behave as in x / b^0.75.
      __m512 r = _mm512_rsqrt14_ps(b);
      r = _mm512_mul_ps(r, _mm512_fnmadd_ps(_mm512_mul_ps(half, b), _mm512_mul_ps(r, r), three_halves));
      __m512 t = _mm512_rsqrt14_ps(r);
      t = _mm512_mul_ps(t, _mm512_fnmadd_ps(_mm512_mul_ps(half, r), _mm512_mul_ps(t, t), three_halves));
      __m512 res = _mm512_mul_ps(xv, _mm512_mul_ps(r, _mm512_mul_ps(r, t)));
      const __mmask16 ok = _mm512_cmp_ps_mask(b, lo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(b, hi, _CMP_LT_OQ);
      if ((ok & m) != m) {
        const __m512 q = _mm512_sqrt_ps(b);
        res = _mm512_mask_div_ps(res, static_cast<__mmask16>(~ok), xv, _mm512_mul_ps(q, _mm512_sqrt_ps(q)));
      }
      _mm512_mask_storeu_ps(yb + c * ys + w, m, res);
    }
  }
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
// lrn_rows_avx512 with 8 columns at a time: the chunk's C channel values into raw (C x 8 floats,
// 32-byte aligned; the row's last chunk by masked loads, zeros past W), the window sums from raw,
// b^-3/4 from two rsqrt estimates (12 bits) each refined by one Newton step (a relative error
// ~2e-7 each, a few ulp in all), lanes with b outside (1e-30, 1e30) exact. No masked stores
// (microcoded on AMD): the last chunk's outputs go through a small buffer.
void lrn_rows_avx2(const float* xb, float* yb, int64_t HW, int64_t ys, int C, int W, int before, int after, float k, float scale,
                   float* raw) {
  const __m256 vk = _mm256_set1_ps(k), vs = _mm256_set1_ps(scale);
  const __m256 half = _mm256_set1_ps(0.5f), three_halves = _mm256_set1_ps(1.5f), lo = _mm256_set1_ps(1e-30f), hi = _mm256_set1_ps(1e30f);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int w = 0; w < W; w += 8) {
    const int nv = std::min(8, W - w);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv), lanes);
    for (int c = 0; c < C; ++c) {
      if ((w & 15) == 0) _mm_prefetch(reinterpret_cast<const char*>(xb + c * HW + w + 32), _MM_HINT_T0);
      _mm256_store_ps(raw + c * 8, nv == 8 ? _mm256_loadu_ps(xb + c * HW + w) : _mm256_maskload_ps(xb + c * HW + w, m));
    }
    for (int c = 0; c < C; ++c) {
      const int c0 = std::max(0, c - before), c1 = std::min(C - 1, c + after);
      __m256 s = _mm256_setzero_ps();
      for (int cc = c0; cc <= c1; ++cc) {
        const __m256 v = _mm256_load_ps(raw + cc * 8);
        s = _mm256_fmadd_ps(v, v, s);
      }
      const __m256 b = _mm256_fmadd_ps(vs, s, vk);
      const __m256 xv = _mm256_load_ps(raw + c * 8);
      __m256 r = _mm256_rsqrt_ps(b);
      r = _mm256_mul_ps(r, _mm256_fnmadd_ps(_mm256_mul_ps(half, b), _mm256_mul_ps(r, r), three_halves));
      __m256 t = _mm256_rsqrt_ps(r);
      t = _mm256_mul_ps(t, _mm256_fnmadd_ps(_mm256_mul_ps(half, r), _mm256_mul_ps(t, t), three_halves));
      __m256 res = _mm256_mul_ps(xv, _mm256_mul_ps(r, _mm256_mul_ps(r, t)));
      const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(b, lo, _CMP_GT_OQ), _mm256_cmp_ps(b, hi, _CMP_LT_OQ));
      if ((_mm256_movemask_ps(ok) & ((1 << nv) - 1)) != (1 << nv) - 1) {
        const __m256 q = _mm256_sqrt_ps(b);
        res = _mm256_blendv_ps(_mm256_div_ps(xv, _mm256_mul_ps(q, _mm256_sqrt_ps(q))), res, ok);
      }
      if (nv == 8) {
        _mm256_storeu_ps(yb + c * ys + w, res);
      } else {
        alignas(32) float tail[8];
        _mm256_store_ps(tail, res);
        std::copy(tail, tail + nv, yb + c * ys + w);
      }
    }
  }
}
#pragma GCC pop_options
#endif

// Whether the vector rows (AVX-512 or AVX2, beta = 0.75) take p on this CPU.
static bool lrn_fast(const LrnParams& p) {
#ifdef SPP_X86
  static const Isa isa = detect_isa();
  return isa != Isa::kPortable && p.beta == 0.75f;
#else
  (void)p;
  return false;
#endif
}

// LRN of one row of one map, every channel: input channel c at xb + c * HW, output at yb + c * ys.
void lrn_row_all_channels(const float* xb, float* yb, int64_t HW, int64_t ys, int C, int W, const LrnParams& p, bool fast,
                          std::vector<float>& sum) {
  const int before = p.size / 2, after = (p.size - 1) / 2;
  const float scale = p.alpha / static_cast<float>(p.size);
#ifdef SPP_X86
  if (fast) {
    sum.resize(static_cast<size_t>(C) * 16 + 16);
    float* raw = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(sum.data()) + 63) & ~uintptr_t{63});
    static const Isa isa = detect_isa();
    if (isa == Isa::kAvx512)
      lrn_rows_avx512(xb, yb, HW, ys, C, W, before, after, p.k, scale, raw);
    else
      lrn_rows_avx2(xb, yb, HW, ys, C, W, before, after, p.k, scale, raw);
    return;
  }
#else
  (void)fast;
#endif
  sum.resize(static_cast<size_t>(W));
  for (int c = 0; c < C; ++c) {
    // The window's sum of squares, recomputed per channel (no running sum to drift).
    lrn_window_sum(xb, HW, std::max(0, c - before), std::min(C - 1, c + after), W, sum.data());
    lrn_row(xb + c * HW, sum.data(), W, p.k, scale, p.beta, yb + c * ys);
  }
}

// WITHIN_CHANNEL (lrn_within.h): one task per (map, channel) plane.
static Status lrn_within(const RaggedView& in, const float* x, const LrnParams& p, const float* dy, float* out) {
  const int64_t planes = int64_t{in.count} * in.channels;
  parallel_for(planes, 1, [&](int64_t a, int64_t e) {
    for (int64_t t = a; t < e; ++t) {
      const int i = static_cast<int>(t / in.channels), c = static_cast<int>(t % in.channels), H = in.height[i], W = in.width[i];
      const int64_t at = in.offset[i] + int64_t{c} * H * W;
      for (int py = 0; py < H; ++py)
        for (int px = 0; px < W; ++px)
          out[at + int64_t{py} * W + px] = dy ? lrn_within_backward_at(x + at, dy + at, H, W, py, px, p) : lrn_within_forward_at(x + at, H, W, py, px, p);
    }
  });
  return Status::Ok();
}

Status lrn_forward(const RaggedView& in, const float* x, const LrnParams& p, float* y) {
  if (p.within) return lrn_within(in, x, p, nullptr, y);
  const int C = in.channels;
  const bool fast = lrn_fast(p);
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
      lrn_row_all_channels(xb, yb, HW, HW, C, W, p, fast, sum);
    }
  });
  return Status::Ok();
}

// LRN then max pooling in one pass: per task a block of output rows of one map; LRN runs over the
// input rows those windows read (every channel, into a per-thread scratch [C][rows][W] that stays
// in L2), then each channel's rows are pooled from the scratch. The LRN map itself is never
// written to memory: at ZF-5's conv1 (96 x 110 x 110 a map) this saves writing and re-reading it.
// Values are the same as lrn_forward then max_pool2d_forward (the same LRN row code, the same
// max), bit for bit.
Status lrn_max_pool2d_forward(const RaggedView& in, const float* x, const LrnParams& lp, const Pool2dParams& pp, const RaggedView& out,
                              float* y) {
  if (lp.within) return Status::Error(Code::kInvalidArgument, "lrn_max_pool2d: within-channel LRN is not fused (run lrn, then max_pool2d)");
  const int C = in.channels;
  const bool fast_lrn = lrn_fast(lp);
  const PoolPlane pool_plane = pool_plane_for(pp);
  constexpr int kRowsPerTask = 4;  // output rows: (4 - 1) * stride + kernel input rows, i.e. 9 at 3 s2
  std::vector<int64_t> first(static_cast<size_t>(in.count) + 1, 0);
  int64_t acc_len = 1;
  for (int i = 0; i < in.count; ++i) {
    first[i + 1] = first[i] + (out.height[i] + kRowsPerTask - 1) / kRowsPerTask;
    acc_len = std::max<int64_t>({acc_len, in.width[i], int64_t{(out.width[i] + 15) / 16 * 16} * pp.stride_w + pp.kernel_w + 32 + pp.pad_w});
  }
  parallel_for(first.back(), 1, [&](int64_t t0, int64_t t1) {
    static thread_local FloatBuffer scratch, accbuf;
    std::vector<float> sum;
    float* acc = accbuf.get(static_cast<size_t>(acc_len + 16));
    int i = static_cast<int>(std::upper_bound(first.begin(), first.end(), t0) - first.begin()) - 1;
    for (int64_t t = t0; t < t1; ++t) {
      while (t >= first[i + 1]) ++i;
      const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
      const int oy0 = static_cast<int>(t - first[i]) * kRowsPerTask, oy1 = std::min(Ho, oy0 + kRowsPerTask);
      // Input rows the windows of output rows [oy0, oy1) read (an empty range pools to -inf).
      const int ys = std::max(0, oy0 * pp.stride_h - pp.pad_h);
      const int ye = std::max(ys, std::min(H, (oy1 - 1) * pp.stride_h - pp.pad_h + pp.kernel_h));
      const int nr = ye - ys;
      const int64_t HW = int64_t{H} * W, plane = int64_t{nr} * W;
      float* s = scratch.get(static_cast<size_t>(std::max<int64_t>(1, plane * C)));
      for (int r = 0; r < nr; ++r)
        lrn_row_all_channels(x + in.offset[i] + int64_t{ys + r} * W, s + int64_t{r} * W, HW, plane, C, W, lp, fast_lrn, sum);
      for (int c = 0; c < C; ++c) {
        float* yc = y + out.offset[i] + int64_t{c} * Ho * Wo;
        pool_plane(s + c * plane, H, W, Wo, pp, acc, yc, oy0, oy1, ys);
      }
    }
  });
  return Status::Ok();
}

// y_c = x_c * D_c^-beta with D_c = k + alpha/size * sum_{c' in win(c)} x_c'^2, win(c) = [c - size/2, c + (size-1)/2]:
// dx_j = dy_j D_j^-beta - 2 alpha beta / size * x_j * sum_{c : j in win(c)} dy_c x_c D_c^(-beta-1),
// and j in win(c) exactly when c is in [j - (size-1)/2, j + size/2].
namespace {

constexpr int kLrnBwdCols = 16;  // pixels of a row per chunk of the backward

// The backward on up to kLrnBwdCols pixels of one row (n of them), every channel: the chunk's x
// and dy copied first (channel-major, kLrnBwdCols floats each: L1), then per channel the
// window's sum of squares (recomputed, as the forward), D = k + scale s, P = D^-beta (beta 0.75:
// 1 / (sqrt(D) sqrt(sqrt(D))), as the forward's exact lanes) and t = dy x P / D, then dx. FP32
// throughout, each inner loop over the chunk's pixels (vectorised per instruction set).
SPP_ISA_CLONES
void lrn_backward_chunk(const float* xb, const float* gb, float* dxb, int64_t HW, int C, int n, int before, int after, float k,
                        float scale, float beta, float coef, float* buf) {
  constexpr int V = kLrnBwdCols;
  float* X = buf;
  float* G = X + C * V;
  float* P = G + C * V;
  float* T = P + C * V;
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < V; ++j) {
      X[c * V + j] = j < n ? xb[c * HW + j] : 0.f;
      G[c * V + j] = j < n ? gb[c * HW + j] : 0.f;
    }
  const bool b34 = beta == 0.75f;
  for (int c = 0; c < C; ++c) {
    float s[V] = {};
    for (int cc = std::max(0, c - before); cc <= std::min(C - 1, c + after); ++cc)
      for (int j = 0; j < V; ++j) s[j] += X[cc * V + j] * X[cc * V + j];
    for (int j = 0; j < V; ++j) {
      const float D = k + scale * s[j];
      const float r = std::sqrt(D);
      const float q = b34 ? 1.f / (r * std::sqrt(r)) : std::pow(D, -beta);
      P[c * V + j] = q;
      T[c * V + j] = G[c * V + j] * (X[c * V + j] * (q / D));  // q / D first: dy x alone may overflow
    }
  }
  for (int c = 0; c < C; ++c) {
    float s[V] = {};
    for (int cc = std::max(0, c - after); cc <= std::min(C - 1, c + before); ++cc)
      for (int j = 0; j < V; ++j) s[j] += T[cc * V + j];
    float d[V];
    for (int j = 0; j < V; ++j) d[j] = G[c * V + j] * P[c * V + j] - coef * X[c * V + j] * s[j];
    for (int j = 0; j < n; ++j) dxb[c * HW + j] = d[j];
  }
}

}  // namespace

Status lrn_backward(const RaggedView& in, const float* x, const LrnParams& p, const float* dy, float* dx) {
  if (p.within) return lrn_within(in, x, p, dy, dx);
  const int C = in.channels, before = p.size / 2, after = (p.size - 1) / 2;
  const float scale = p.alpha / p.size, beta = p.beta, coef = 2.f * p.alpha * p.beta / p.size;
  std::vector<int64_t> first(static_cast<size_t>(in.count) + 1, 0);
  for (int i = 0; i < in.count; ++i) first[i + 1] = first[i] + in.height[i];
  parallel_for(first.back(), 2, [&](int64_t t0, int64_t t1) {
    static thread_local FloatBuffer chunk;
    float* buf = chunk.get(static_cast<size_t>(4 * C * kLrnBwdCols));
    int i = static_cast<int>(std::upper_bound(first.begin(), first.end(), t0) - first.begin()) - 1;
    for (int64_t task = t0; task < t1; ++task) {
      while (task >= first[i + 1]) ++i;
      const int W = in.width[i], row = static_cast<int>(task - first[i]);
      const int64_t HW = int64_t{in.height[i]} * W;
      const int64_t base = in.offset[i] + int64_t{row} * W;
      for (int w = 0; w < W; w += kLrnBwdCols)
        lrn_backward_chunk(x + base + w, dy + base + w, dx + base + w, HW, C, std::min(kLrnBwdCols, W - w), before, after, p.k, scale, beta,
                           coef, buf);
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
