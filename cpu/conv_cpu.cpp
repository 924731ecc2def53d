// CPU conv2d: the forward as im2col straight into the GEMM's packed panels (or Winograd, see
// winograd_cpu.cpp), the backward as im2col + gemm_nn with every reduction in a fixed order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "amx_cpu.h"
#include "filter_cache.h"
#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "sppnet/ops.h"
#include "vec.h"
#include "direct_conv_cpu.h"
#include "lanes_conv_cpu.h"
#include "winograd_cpu.h"

namespace sppnet {
namespace cpu {

namespace {

// ---- im2col straight into the GEMM's packed-B layout ----
//
// B[k][n], k = (c * kh + i) * kw + j over one group's input channels, n = the output pixels of a
// run of maps side by side, = x_map[c][oy*sh - ph + i*dh][ox*sw - pw + j*dw] (0 outside), stored
// as panels of kGemmNR columns: B[k][n] at Bp[(n / NR) * K * NR + k * NR + n % NR].
constexpr int NR = kGemmNR;

// The run of maps [i0, i1) (one group g of cin_g channels each): per column, where its window starts.
struct RunCols {
  int64_t base = 0;             // element offset in x that the 32-bit starts count from
  std::vector<int32_t> start;   // base + start = the window's top-left element (may lie outside)
  std::vector<int32_t> iy0, ix0, H, W, HW;  // window top-left, map size; H = 0 beyond N (all masked)
  bool fits32 = true;           // every element a run touches is within 2^31 of base
};

RunCols run_cols(const RaggedView& in, const RaggedView& out, int i0, int i1, int g, int cin_g, const Conv2dParams& p,
                 int64_t padded) {
  RunCols t;
  t.base = in.offset[i0];
  for (int i = i0; i < i1; ++i) t.base = std::min(t.base, in.offset[i]);
  for (auto* v : {&t.start, &t.iy0, &t.ix0, &t.H, &t.W, &t.HW}) v->assign(static_cast<size_t>(padded), 0);
  int64_t n = 0;
  for (int i = i0; i < i1; ++i) {
    const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
    const int64_t map0 = in.offset[i] + int64_t{g} * cin_g * H * W - t.base;
    if (map0 + int64_t{cin_g} * H * W + 2 * int64_t{W} + 2 >= (int64_t{1} << 31) || int64_t{H} * W >= (int64_t{1} << 31)) t.fits32 = false;
    for (int oy = 0; oy < Ho; ++oy)
      for (int ox = 0; ox < Wo; ++ox, ++n) {
        const int y = oy * p.stride_h - p.pad_h, x = ox * p.stride_w - p.pad_w;
        t.start[n] = static_cast<int32_t>(map0 + int64_t{y} * W + x);
        t.iy0[n] = y, t.ix0[n] = x, t.H[n] = H, t.W[n] = W, t.HW[n] = H * W;
      }
  }
  return t;
}

// Panels [q0, q1), rows [k0, k1): portable, one element at a time from the column table.
// Panel q lands at Bp + (q - qbase) * K * NR (qbase: the first panel of a buffer that holds a few).
void im2col_panels_portable(const float* x, const RunCols& t, const Conv2dParams& p, int64_t K, int64_t q0, int64_t q1,
                            int64_t k0, int64_t k1, float* Bp, int64_t qbase) {
  const int khw = p.kernel_h * p.kernel_w;
  for (int64_t q = q0; q < q1; ++q)
    for (int64_t k = k0; k < k1; ++k) {
      const int c = static_cast<int>(k / khw), i = static_cast<int>(k % khw) / p.kernel_w, j = static_cast<int>(k % khw) % p.kernel_w;
      float* d = Bp + (q - qbase) * K * NR + k * NR;
      for (int l = 0; l < NR; ++l) {
        const size_t n = static_cast<size_t>(q * NR + l);
        const int y = t.iy0[n] + i * p.dilation_h, xx = t.ix0[n] + j * p.dilation_w;
        const bool in = y >= 0 && y < t.H[n] && xx >= 0 && xx < t.W[n];
        d[l] = in ? x[t.base + int64_t{t.start[n]} + int64_t{c} * t.HW[n] + int64_t{i} * p.dilation_h * t.W[n] + j * p.dilation_w] : 0.f;
      }
    }
}

#ifdef SPP_X86
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,bmi2")
// Panels [q0, q1), rows [k0, k1), 16 lanes at a time. Where the lanes' windows start at
// consecutive (stride 1) or every other (stride 2) element of one map, in at most three runs, a
// row of B is one or two masked loads per run (plus a permute for stride 2); otherwise a masked
// gather. Masks: the window's row and column inside the map (padding reads as 0).
void im2col_panels_avx512(const float* x, const RunCols& t, const Conv2dParams& p, int64_t K, int64_t q0, int64_t q1, int64_t k0,
                          int64_t k1, float* Bp, int64_t qbase) {
  const int khw = p.kernel_h * p.kernel_w;
  const float* xb = x + t.base;
  const __m512 zero = _mm512_setzero_ps();
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t q = q0; q < q1; ++q)
    for (int h = 0; h < 2; ++h) {
      const size_t n = static_cast<size_t>(q * NR + 16 * h);
      const __m512i start = _mm512_loadu_si512(t.start.data() + n), iy0 = _mm512_loadu_si512(t.iy0.data() + n);
      const __m512i ix0 = _mm512_loadu_si512(t.ix0.data() + n), H = _mm512_loadu_si512(t.H.data() + n);
      const __m512i W = _mm512_loadu_si512(t.W.data() + n), HW = _mm512_loadu_si512(t.HW.data() + n);
      const __m512i dW = _mm512_mullo_epi32(W, _mm512_set1_epi32(p.dilation_h));
      float* d = Bp + (q - qbase) * K * NR + 16 * h;
      int c = static_cast<int>(k0 / khw), i = static_cast<int>(k0 % khw) / p.kernel_w, j = static_cast<int>(k0 % khw) % p.kernel_w;
      // Runs of lanes whose window starts are consecutive elements of one map (stride 1): each
      // row of B is then one masked load per run, not a gather.
      int nseg = 0, segL[3] = {0, 0, 0};
      __mmask16 segm[3] = {0, 0, 0};
      int64_t segp[3] = {0, 0, 0}, segHW[3] = {0, 0, 0}, segW[3] = {0, 0, 0};
      const int sw = p.stride_w;
      if (sw == 1 || sw == 2) {
        for (int l = 0; l < 16 && nseg <= 3; ++l) {
          const size_t nl = n + l;
          if (t.H[nl] == 0) break;  // past N: masked anyway
          if (l == 0 || t.start[nl] != t.start[nl - 1] + sw || t.HW[nl] != t.HW[nl - 1] || t.W[nl] != t.W[nl - 1]) {
            if (nseg == 3) {
              nseg = 4;
              break;
            }
            segL[nseg] = l, segp[nseg] = int64_t{t.start[nl]} - int64_t{sw} * l, segHW[nseg] = t.HW[nl], segW[nseg] = int64_t{t.W[nl]} * p.dilation_h;
            ++nseg;
          }
          segm[nseg - 1] |= __mmask16(1u << l);
        }
      }
      if (nseg >= 1 && nseg <= 3) {
        __m512i iy = _mm512_add_epi32(iy0, _mm512_set1_epi32(i * p.dilation_h));
        __mmask16 row_in = _mm512_cmplt_epu32_mask(iy, H);
        int64_t off = int64_t{c}, ioff = i;  // channel and kernel row of the current k
        for (int64_t k = k0; k < k1; ++k) {
          const __m512i ix = _mm512_add_epi32(ix0, _mm512_set1_epi32(j * p.dilation_w));
          const __mmask16 m = row_in & _mm512_cmplt_epu32_mask(ix, W);
          __m512 v = zero;
          if (sw == 1) {
            for (int sgi = 0; sgi < nseg; ++sgi)
              v = _mm512_mask_loadu_ps(v, m & segm[sgi], xb + segp[sgi] + off * segHW[sgi] + ioff * segW[sgi] + j * p.dilation_w);
          } else {
            // Lane l wants P[2l]: two loads of 16 under the lane mask spread to even positions,
            // then the even elements of the pair.
            __m512 v1 = zero;
            for (int sgi = 0; sgi < nseg; ++sgi) {
              const float* P = xb + segp[sgi] + off * segHW[sgi] + ioff * segW[sgi] + j * p.dilation_w;
              const uint32_t wide = _pdep_u32(m & segm[sgi], 0x55555555u);
              v = _mm512_mask_loadu_ps(v, __mmask16(wide), P);
              v1 = _mm512_mask_loadu_ps(v1, __mmask16(wide >> 16), P + 16);
            }
            v = _mm512_permutex2var_ps(v, evens, v1);
          }
          _mm512_store_ps(d + k * NR, v);
          if (++j == p.kernel_w) {
            j = 0;
            if (++i == p.kernel_h) {
              i = 0, ++off;
              iy = iy0;
            } else {
              iy = _mm512_add_epi32(iy, _mm512_set1_epi32(p.dilation_h));
            }
            ioff = i;
            row_in = _mm512_cmplt_epu32_mask(iy, H);
          }
        }
        continue;
      }
      __m512i cbase = _mm512_add_epi32(start, _mm512_mullo_epi32(HW, _mm512_set1_epi32(c)));
      __m512i rbase = _mm512_add_epi32(cbase, _mm512_mullo_epi32(dW, _mm512_set1_epi32(i)));
      __m512i iy = _mm512_add_epi32(iy0, _mm512_set1_epi32(i * p.dilation_h));
      __mmask16 row_in = _mm512_cmplt_epu32_mask(iy, H);  // unsigned: negative rows are out too
      for (int64_t k = k0; k < k1; ++k) {
        const __m512i ix = _mm512_add_epi32(ix0, _mm512_set1_epi32(j * p.dilation_w));
        const __mmask16 m = row_in & _mm512_cmplt_epu32_mask(ix, W);
        const __m512i idx = _mm512_add_epi32(rbase, _mm512_set1_epi32(j * p.dilation_w));
        _mm512_store_ps(d + k * NR, _mm512_mask_i32gather_ps(zero, m, idx, xb, 4));
        if (++j == p.kernel_w) {
          j = 0;
          if (++i == p.kernel_h) {
            i = 0, ++c;
            cbase = _mm512_add_epi32(cbase, HW);
            rbase = cbase;
            iy = iy0;
          } else {
            rbase = _mm512_add_epi32(rbase, dW);
            iy = _mm512_add_epi32(iy, _mm512_set1_epi32(p.dilation_h));
          }
          row_in = _mm512_cmplt_epu32_mask(iy, H);
        }
      }
    }
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
// im2col_panels_avx512 for AVX2: 8 lanes at a time, the same runs of consecutive (stride 1) or
// every other (stride 2) window starts, each a masked load (vmaskmovps: lanes off the mask read
// nothing, so a window's padding may point outside x); stride 2 loads 16 and keeps the even
// elements. Otherwise a masked gather. Lanes' masks as vectors: the window's row and column
// inside the map, AND the run's lanes.
void im2col_panels_avx2(const float* x, const RunCols& t, const Conv2dParams& p, int64_t K, int64_t q0, int64_t q1, int64_t k0,
                        int64_t k1, float* Bp, int64_t qbase) {
  const int khw = p.kernel_h * p.kernel_w;
  const float* xb = x + t.base;
  const __m256 zero = _mm256_setzero_ps();
  const __m256i none = _mm256_set1_epi32(-1);  // compares against -1: "x >= 0"
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i lo_of = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3), hi_of = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
  const __m256i evens = _mm256_setr_epi32(-1, 0, -1, 0, -1, 0, -1, 0);
  // -1 where 0 <= v < lim (signed: lim > 0 or every lane is out).
  auto inside = [&](__m256i v, __m256i lim) __attribute__((always_inline)) {
    return _mm256_and_si256(_mm256_cmpgt_epi32(v, none), _mm256_cmpgt_epi32(lim, v));
  };
  const int sw = p.stride_w;
  for (int64_t q = q0; q < q1; ++q)
    for (int h = 0; h < NR / 8; ++h) {
      const size_t n = static_cast<size_t>(q * NR + 8 * h);
      const __m256i start = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.start.data() + n));
      const __m256i iy0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.iy0.data() + n));
      const __m256i ix0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.ix0.data() + n));
      const __m256i H = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.H.data() + n));
      const __m256i W = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.W.data() + n));
      const __m256i HW = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.HW.data() + n));
      const __m256i dW = _mm256_mullo_epi32(W, _mm256_set1_epi32(p.dilation_h));
      float* d = Bp + (q - qbase) * K * NR + 8 * h;
      int c = static_cast<int>(k0 / khw), i = static_cast<int>(k0 % khw) / p.kernel_w, j = static_cast<int>(k0 % khw) % p.kernel_w;
      int nseg = 0, segL[4] = {0, 0, 0, 8};
      int64_t segp[3] = {0, 0, 0}, segHW[3] = {0, 0, 0}, segW[3] = {0, 0, 0};
      if (sw == 1 || sw == 2) {
        for (int l = 0; l < 8; ++l) {
          const size_t nl = n + l;
          if (t.H[nl] == 0) break;  // past N: masked anyway
          if (l == 0 || t.start[nl] != t.start[nl - 1] + sw || t.HW[nl] != t.HW[nl - 1] || t.W[nl] != t.W[nl - 1]) {
            if (nseg == 3) {
              nseg = 4;
              break;
            }
            segL[nseg] = l, segp[nseg] = int64_t{t.start[nl]} - int64_t{sw} * l, segHW[nseg] = t.HW[nl], segW[nseg] = int64_t{t.W[nl]} * p.dilation_h;
            ++nseg;
          }
        }
      }
      if (nseg >= 1 && nseg <= 3) {
        // Run s holds lanes [segL[s], segL[s + 1]) (the last to lane 7: lanes past N are masked by H = 0).
        __m256i segm[3];
        for (int s = 0; s < nseg; ++s) {
          const int L1 = s + 1 < nseg ? segL[s + 1] : 8;
          segm[s] = _mm256_and_si256(_mm256_cmpgt_epi32(lanes, _mm256_set1_epi32(segL[s] - 1)),
                                     _mm256_cmpgt_epi32(_mm256_set1_epi32(L1), lanes));
        }
        __m256i iy = _mm256_add_epi32(iy0, _mm256_set1_epi32(i * p.dilation_h));
        __m256i row_in = inside(iy, H);
        int64_t off = int64_t{c}, ioff = i;  // channel and kernel row of the current k
        for (int64_t k = k0; k < k1; ++k) {
          const __m256i ix = _mm256_add_epi32(ix0, _mm256_set1_epi32(j * p.dilation_w));
          const __m256i m = _mm256_and_si256(row_in, inside(ix, W));
          __m256 v = zero;
          if (sw == 1) {
            for (int s = 0; s < nseg; ++s)
              v = _mm256_or_ps(v, _mm256_maskload_ps(xb + segp[s] + off * segHW[s] + ioff * segW[s] + j * p.dilation_w,
                                                     _mm256_and_si256(m, segm[s])));
          } else {
            // Lane l wants P[2 l]: lanes 0-3 from P[0..7], lanes 4-7 from P[8..15], then the evens.
            __m256 a = zero, b = zero;
            for (int s = 0; s < nseg; ++s) {
              const float* P = xb + segp[s] + off * segHW[s] + ioff * segW[s] + j * p.dilation_w;
              const __m256i ms = _mm256_and_si256(m, segm[s]);
              a = _mm256_or_ps(a, _mm256_maskload_ps(P, _mm256_and_si256(_mm256_permutevar8x32_epi32(ms, lo_of), evens)));
              b = _mm256_or_ps(b, _mm256_maskload_ps(P + 8, _mm256_and_si256(_mm256_permutevar8x32_epi32(ms, hi_of), evens)));
            }
            // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]
            v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
          }
          _mm256_store_ps(d + k * NR, v);
          if (++j == p.kernel_w) {
            j = 0;
            if (++i == p.kernel_h) {
              i = 0, ++off;
              iy = iy0;
            } else {
              iy = _mm256_add_epi32(iy, _mm256_set1_epi32(p.dilation_h));
            }
            ioff = i;
            row_in = inside(iy, H);
          }
        }
        continue;
      }
      __m256i cbase = _mm256_add_epi32(start, _mm256_mullo_epi32(HW, _mm256_set1_epi32(c)));
      __m256i rbase = _mm256_add_epi32(cbase, _mm256_mullo_epi32(dW, _mm256_set1_epi32(i)));
      __m256i iy = _mm256_add_epi32(iy0, _mm256_set1_epi32(i * p.dilation_h));
      __m256i row_in = inside(iy, H);
      for (int64_t k = k0; k < k1; ++k) {
        const __m256i ix = _mm256_add_epi32(ix0, _mm256_set1_epi32(j * p.dilation_w));
        const __m256i m = _mm256_and_si256(row_in, inside(ix, W));
        const __m256i idx = _mm256_add_epi32(rbase, _mm256_set1_epi32(j * p.dilation_w));
        _mm256_store_ps(d + k * NR, _mm256_mask_i32gather_ps(zero, xb, idx, _mm256_castsi256_ps(m), 4));
        if (++j == p.kernel_w) {
          j = 0;
          if (++i == p.kernel_h) {
            i = 0, ++c;
            cbase = _mm256_add_epi32(cbase, HW);
            rbase = cbase;
            iy = iy0;
          } else {
            rbase = _mm256_add_epi32(rbase, dW);
            iy = _mm256_add_epi32(iy, _mm256_set1_epi32(p.dilation_h));
          }
          row_in = inside(iy, H);
        }
      }
    }
}
#pragma GCC pop_options
#endif

// The im2col of a run: AVX-512 or AVX2 (masked loads, or 32-bit gathers: the run's offsets must
// fit them), else portable. Same signature and result.
using Im2colPanels = void (*)(const float*, const RunCols&, const Conv2dParams&, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                              int64_t);
static Im2colPanels im2col_for(const RunCols& t) {
#ifdef SPP_X86
  static const Isa isa = detect_isa();
  if (t.fits32 && isa == Isa::kAvx512) return im2col_panels_avx512;
  if (t.fits32 && isa == Isa::kAvx2) return im2col_panels_avx2;
#endif
  (void)t;
  return im2col_panels_portable;
}

// Whether panel q's NR columns are one run of consecutive pixels of one map size, none past N:
// for a 1x1 conv without padding, each row of the panel is then NR contiguous input floats.
bool pointwise_panel(const RunCols& t, int64_t q) {
  const size_t n = static_cast<size_t>(q * NR);
  for (size_t l = 0; l < static_cast<size_t>(NR); ++l)
    if (t.H[n + l] == 0 || int64_t{t.start[n + l]} != int64_t{t.start[n]} + static_cast<int64_t>(l) || t.HW[n + l] != t.HW[n]) return false;
  return true;
}

// Panels [q0, q1), rows [k0, k1) by f (im2col_for's), except that a 1x1 conv's panel of NR
// consecutive pixels is copied: row k is channel k's NR floats (no masks; googlenet's 1x1 im2col
// 3x faster on AVX2 than by masked loads).
void im2col_panels(Im2colPanels f, const float* x, const RunCols& t, const Conv2dParams& p, int64_t K, int64_t q0, int64_t q1,
                   int64_t k0, int64_t k1, float* Bp, int64_t qbase) {
  if (!(p.kernel_h == 1 && p.kernel_w == 1 && p.pad_h == 0 && p.pad_w == 0)) return f(x, t, p, K, q0, q1, k0, k1, Bp, qbase);
  for (int64_t q = q0; q < q1; ++q) {
    if (!pointwise_panel(t, q)) {
      f(x, t, p, K, q, q + 1, k0, k1, Bp, qbase);
      continue;
    }
    const float* P = x + t.base + t.start[static_cast<size_t>(q * NR)];
    const int64_t hw = t.HW[static_cast<size_t>(q * NR)];
    float* d = Bp + (q - qbase) * K * NR;
    for (int64_t k = k0; k < k1; ++k) std::memcpy(d + k * NR, P + k * hw, sizeof(float) * NR);
  }
}

// Fills the packed B of one run (group g) on all threads. Tasks of (block of rows, panel), the
// panels inner: a block's rows read a few input channels (kernel_h x kernel_w rows each), which
// stay in L1/L2 while every panel takes its columns from them.
void im2col_packed(const float* x, const RunCols& t, const Conv2dParams& p, int64_t K, int64_t panels, float* Bp) {
  const int64_t khw = int64_t{p.kernel_h} * p.kernel_w;
  const int64_t kb = std::min<int64_t>(K, khw * std::max<int64_t>(1, 64 / khw)), kblocks = (K + kb - 1) / kb;
  const Im2colPanels im2col = im2col_for(t);
  parallel_for(panels * kblocks, 16, [&](int64_t a, int64_t e) {
    for (int64_t task = a; task < e; ++task) {
      const int64_t q = task % panels, k0 = task / panels * kb, k1 = std::min(K, k0 + kb);
      im2col_panels(im2col, x, t, p, K, q, q + 1, k0, k1, Bp, 0);
    }
  });
}

// One large map, small K (conv1: K = 147, 12,100 columns): instead of writing every panel (7 MB)
// and reading it back from L3, each thread packs a few panels at a time into its own buffer
// (L2-sized) and multiplies them at once. Only where the weights (M x K) are small enough to stay
// in L2 (1 MiB a core on Zen 5) too, as every group reads all of them. Up to K = 1152 and 1 MiB
// of weights (was 640 and 256 KiB): googlenet's 64->192 at 56x56 2.35 -> 1.93 ms, 96->128 at
// 28x28 0.71 -> 0.53, vgg16's 128->128 at 112x112 15.5 -> 14.4 (bench/RESULTS.md, "Winograd
// only with >= 160 channels").
bool fused_fits(int64_t M, int64_t K, int64_t panels) {
  return K <= 1152 && M * K * 4 <= (1 << 20) && panels >= 16;
}

// A 1x1 conv, stride 1, no padding: its input planes are its B (K x pixels) as they lie.
bool pointwise(const Conv2dParams& p) {
  return p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

// A 1x1 conv of one map, stride 1, no padding: the input planes are B as they are. On maps of
// 128-1024 pixels that skips the copy into panels and its pass (googlenet's 14x14 and 28x28 1x1
// convs); on AVX-512, larger maps too where the planes fit one core's L2 (a Xeon's 2 MiB: googlenet's
// 64 -> 64 at 56 x 56 0.13 -> 0.10 ms, 64 -> 256 and 128 -> 128 at 56 x 56 0.52 -> 0.47 and 0.45 ->
// 0.37 ms; planes over L2 were slower in place: 256 -> 64 at 56 x 56 0.46 -> 0.61, 64 -> 64 at
// 112 x 112 0.60 -> 0.88). gemm_unpacked still says false where its kernels are not the ones
// dispatched to.
bool unpacked_fits(const Conv2dParams& p, int64_t pixels) {
  static const int64_t big = detect_isa() == Isa::kAvx512 ? l2_cache_bytes() : 0;  // measured on AVX-512 only
  return pointwise(p) && pixels >= 128 &&
         (pixels <= 1024 || int64_t{p.in_channels / p.groups} * pixels * 4 <= big);
}

// A batch of 1x1 convs that gemm_unpacked takes map by map (unpacked_fits), shared among the
// threads a map each instead of splitting each map's small product in two: googlenet's 1x1s at
// batch 4 scale 1.55x from one thread to two split (M of 16-384 filters, N of 196-784 pixels;
// `build-tools/conv_check googlenet 7 4`). Where the maps divide evenly enough: the threads'
// share of the maps (claimed in order, whole maps) at most 1.2x an even share of the pixels.
bool maps_shared_fits(const Conv2dParams& p, const RaggedView& out) {
  const int64_t T = num_threads();
  if (out.count < 2 || T < 2 || !gemm_unpacked_available()) return false;
  int64_t total = 0, largest = 0;
  for (int i = 0; i < out.count; ++i) {
    const int64_t P = int64_t{out.height[i]} * out.width[i];
    if (!unpacked_fits(p, P)) return false;
    total += P, largest = std::max(largest, P);
  }
  return 10 * ((out.count + T - 1) / T) * largest * T <= 12 * total;
}

void conv_fused(const float* x, const RunCols& t, const Conv2dParams& p, int64_t M, int64_t K, int64_t cols, int64_t panels,
                const float* w, const float* bias, float* C) {
  // Panels per group: ~160 KiB of packed B.
  const int64_t gp = std::max<int64_t>(1, std::min<int64_t>(8, (160 << 10) / (K * NR * 4)));
  const int64_t groups = (panels + gp - 1) / gp;
  const Im2colPanels im2col = im2col_for(t);
  parallel_for(groups, 1, [&](int64_t g0, int64_t g1) {
    static thread_local FloatBuffer local;
    float* Bp = local.get(static_cast<size_t>(gp * K * NR));
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t q0 = g * gp, q1 = std::min(panels, q0 + gp);
      im2col_panels(im2col, x, t, p, K, q0, q1, 0, K, Bp, q0);
      const int64_t n0 = q0 * NR, n1 = std::min(cols, q1 * NR);
      gemm_packed(M, n1 - n0, K, w, K, Bp, C + n0, cols, bias, p.relu, false);
    }
  });
}

// ---- AMX tiles (amx_cpu.h): bf16x3 products under SPPNET_AMX=1, BF16 products for math 'bf16' ----
//
// Every map's columns in chunks of ~384 KiB of packed B (im2col's panels converted, or a 1x1
// conv's planes read in place), each chunk a task that packs its B and multiplies all the
// filters (packed once, kept in the caller's filter cache) by it; where there are fewer than two
// chunks a thread (small maps, few images) the filters are split too, in blocks of 32 rows.
constexpr int32_t kAmxCacheValid[2] = {0x42584d41, 0x31584d41};  // "AMXB" (BF16 parts), "AMX1" (bf16x3)
constexpr int64_t kAmxCacheHeader = 16;                            // floats: [valid, cin, cout, kh, kw, unused...]

// The parts of its products (amx_cpu.h), where it measured faster than the FP32 kernels; 0 where
// the path does not run (the FP32 kernels: also math 'bf16' without AMX, as every mode):
// - 1 where math 'bf16' asks for BF16 products and the tiles take them (amx_products_enabled: by
//   default on a CPU with AMX): one group, at least 16 filters, a 1x1 conv from 64 input channels
//   (googlenet in a run, its 1x1s of fewer filters or inputs: 0.65 ms FP32 -> 0.43 from 32
//   filters and 64 inputs -> 0.35 from 16 filters at batch 1, 2.15 -> 1.40 ms at batch 4);
// - 2 (bf16x3) under SPPNET_AMX=1 (bench/RESULTS.md, "AMX"): one group and at least 64 filters
//   (fewer leave most of a 32-row block empty, and the packing of B weighs more against three
//   products), and a 1x1 conv only from 128 input channels (below, the FP32 kernels read its
//   planes in place while this path packs them: googlenet's 64 -> 64 at 56 x 56, batch 4, 0.49 ->
//   0.68 ms).
int amx_parts(const Conv2dParams& p) {
  if (p.groups != 1) return 0;
  if (p.math == kMathBf16 && p.out_channels >= 16 && (p.kernel_h * p.kernel_w > 1 || p.in_channels >= 64) && amx_products_enabled()) return 1;
  if (p.out_channels < 64 || (p.kernel_h * p.kernel_w == 1 && p.in_channels < 128)) return 0;
  return amx_enabled() ? 2 : 0;
}
bool amx_applies(const Conv2dParams& p) { return amx_parts(p) > 0; }

int64_t amx_cache_floats(const Conv2dParams& p) {
  return kAmxCacheHeader + amx_a_floats(p.out_channels, int64_t{p.in_channels} * p.kernel_h * p.kernel_w, amx_parts(p));
}

Status conv2d_amx(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                  const RaggedView& out, float* y) {
  const int64_t M = p.out_channels, K = int64_t{p.in_channels} * p.kernel_h * p.kernel_w;
  const int pp = amx_parts(p);
  static thread_local FloatBuffer wbuf;
  const float* A = cached_filters(p, amx_cache_floats(p), kAmxCacheValid[pp - 1], kAmxCacheHeader, amx_a_floats(M, K, pp), wbuf,
                                  [&](float* d) { amx_pack_a(M, K, weight, K, d, pp); });
  const int64_t chunk = std::max<int64_t>(NR, std::min<int64_t>(256, (96 << 10) / amx_round(K) / NR * NR));
  const bool planes = pointwise(p);  // B read from the input planes, else from im2col's panels
  std::vector<RunCols> cols(planes ? 0 : static_cast<size_t>(in.count));
  std::vector<int64_t> first(static_cast<size_t>(in.count) + 1, 0);  // the first chunk of each map
  for (int i = 0; i < in.count; ++i) {
    const int64_t P = int64_t{out.height[i]} * out.width[i];
    first[i + 1] = first[i] + (P + chunk - 1) / chunk;
    if (!planes && P > 0) cols[i] = run_cols(in, out, i, i + 1, 0, p.in_channels, p, gemm_panels(P) * NR);
  }
  const int64_t chunks = first[in.count], mblocks = amx_round(M) / 32;
  const int64_t splits = std::min(mblocks, std::max<int64_t>(1, (2 * num_threads() + chunks - 1) / std::max<int64_t>(chunks, 1)));
  parallel_tasks(chunks * splits, [&](int64_t task) {
    static thread_local FloatBuffer fbuf, bbuf;
    const int64_t c = task / splits, part = task % splits;
    const int i = static_cast<int>(std::upper_bound(first.begin(), first.end(), c) - first.begin()) - 1;
    const int64_t P = int64_t{out.height[i]} * out.width[i], n0 = (c - first[i]) * chunk, nc = std::min(chunk, P - n0);
    float* Bb = bbuf.get(static_cast<size_t>(amx_b_floats(nc, K, pp)));
    if (planes) {
      amx_pack_rows(K, nc, x + in.offset[i] + n0, P, Bb, pp);
    } else {
      const int64_t q0 = n0 / NR, q1 = (n0 + nc + NR - 1) / NR;
      float* F = fbuf.get(static_cast<size_t>((q1 - q0) * K * NR));
      im2col_panels(im2col_for(cols[i]), x, cols[i], p, K, q0, q1, 0, K, F, q0);
      amx_pack_panels(K, q1 - q0, F, Bb, pp);
    }
    amx_gemm(mblocks * part / splits * 32, std::min(M, mblocks * (part + 1) / splits * 32), nc, K, A, Bb, y + out.offset[i] + n0, P,
             bias, p.relu, pp);
  });
  return Status::Ok();
}

}  // namespace

int64_t conv_cache_floats(const Conv2dParams& p, const RaggedView& out) {
  if (lanes_applies(p, out)) return lanes_cache_floats(p);
  if (amx_applies(p)) return amx_cache_floats(p);
  if (winograd_applies(p, out)) return winograd_cache_floats(p);
  return direct_applies(p, out) ? direct_cache_floats(p) : 0;
}

Status conv2d_forward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                      const RaggedView& out, float* y) {
  if (lanes_applies(p, out) && lanes_fits(p, in)) return conv2d_lanes(in, x, p, weight, bias, out, y);
  if (amx_applies(p)) return conv2d_amx(in, x, p, weight, bias, out, y);
  if (winograd_applies(p, out)) return conv2d_winograd(in, x, p, weight, bias, out, y);
  if (direct_applies(p, out) && direct_fits(p, in)) return conv2d_direct(in, x, p, weight, bias, out, y);
  const int G = p.groups, cin_g = p.in_channels / G, cout_g = p.out_channels / G;
  const int64_t K = int64_t{cin_g} * p.kernel_h * p.kernel_w;
  if (G == 1 && maps_shared_fits(p, out)) {
    // Each map's product on one thread, the maps shared among the threads (nested, gemm_unpacked
    // runs serially); the same sums as below.
    parallel_tasks(out.count, [&](int64_t i) {
      const int64_t P = int64_t{out.height[i]} * out.width[i];
      gemm_unpacked(cout_g, P, K, weight, K, x + in.offset[i], P, y + out.offset[i], P, bias, p.relu, true);
    });
    return Status::Ok();
  }
  // Small maps are taken in runs whose columns sit side by side in one packed B (enough columns
  // to share among cores, one thread start); a run ends once it has kRunColumns columns or would
  // pass kColFloats, and its result is scattered to each map's [cout, Ho, Wo]. A large map is a
  // run of its own, written in place.
  constexpr int64_t kColFloats = int64_t{1} << 24;  // 64 MiB
  constexpr int64_t kRunColumns = 1024;
  // Kept per thread between calls: a fresh multi-megabyte buffer costs its page faults each time.
  static thread_local FloatBuffer col, res;
  for (int i0 = 0; i0 < in.count;) {
    int64_t cols = int64_t{out.height[i0]} * out.width[i0];
    int i1 = i0 + 1;
    // A 1x1 conv's map that gemm_unpacked takes is a run of its own (its planes read in place
    // beat packing it beside others and scattering the result: googlenet's 1x1 convs at batch 4,
    // build-tools/conv_check googlenet 11 4, 14.9 -> 12.3 ms); the same sums either way.
    const bool own = G == 1 && unpacked_fits(p, cols) && gemm_unpacked_available();
    while (!own && i1 < in.count && cols < kRunColumns && (cols + int64_t{out.height[i1]} * out.width[i1]) * K <= kColFloats)
      cols += int64_t{out.height[i1]} * out.width[i1], ++i1;
    const int64_t panels = gemm_panels(cols);
    float* Bp = nullptr;  // the whole run's packed B, unless every group takes the fused path
    const bool single = i1 == i0 + 1;
    float* R = single ? nullptr : res.get(static_cast<size_t>(int64_t{cout_g} * cols));
    for (int g = 0; g < G; ++g) {
      const RunCols t = run_cols(in, out, i0, i1, g, cin_g, p, panels * NR);
      const int64_t P0 = int64_t{out.height[i0]} * out.width[i0];
      if (single && unpacked_fits(p, P0) &&
          gemm_unpacked(cout_g, P0, K, weight + int64_t{g} * cout_g * K, K, x + in.offset[i0] + int64_t{g} * cin_g * P0, P0,
                        y + out.offset[i0] + int64_t{g} * cout_g * P0, P0, bias ? bias + int64_t{g} * cout_g : nullptr, p.relu, true))
        continue;
      if (single && fused_fits(cout_g, K, panels)) {
        conv_fused(x, t, p, cout_g, K, cols, panels, weight + int64_t{g} * cout_g * K, bias ? bias + int64_t{g} * cout_g : nullptr,
                   y + out.offset[i0] + int64_t{g} * cout_g * P0);
        continue;
      }
      if (!Bp) Bp = col.get(static_cast<size_t>(gemm_packed_size(cols, K)));
      im2col_packed(x, t, p, K, panels, Bp);
      // One map: write straight into its output; several: into R, then scatter.
      float* C = single ? y + out.offset[i0] + int64_t{g} * cout_g * P0 : R;
      gemm_packed(cout_g, cols, K, weight + int64_t{g} * cout_g * K, K, Bp, C, cols, bias ? bias + int64_t{g} * cout_g : nullptr,
                  p.relu, true);
      if (single) continue;
      int64_t n0 = 0;
      for (int i = i0; i < i1; ++i) {
        const int64_t P = int64_t{out.height[i]} * out.width[i];
        float* yi = y + out.offset[i] + int64_t{g} * cout_g * P;
        for (int m = 0; m < cout_g; ++m) std::copy(R + m * cols + n0, R + m * cols + n0 + P, yi + m * P);
        n0 += P;
      }
    }
    i0 = i1;
  }
  return Status::Ok();
}

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

}  // namespace cpu
}  // namespace sppnet
