// CPU network layers over ragged batches: conv2d (im2col + GEMM), max_pool2d, LRN, linear, ReLU,
// softmax. Multithreaded; vectorised where it pays (GEMM, dot products).
#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "sppnet/ops.h"
#include "vec.h"
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
                            int64_t k0, int64_t k1, float* Bp, int64_t qbase = 0) {
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

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,bmi2")
// Panels [q0, q1), rows [k0, k1), 16 lanes at a time. Where the lanes' windows start at
// consecutive (stride 1) or every other (stride 2) element of one map, in at most three runs, a
// row of B is one or two masked loads per run (plus a permute for stride 2); otherwise a masked
// gather. Masks: the window's row and column inside the map (padding reads as 0).
void im2col_panels_avx512(const float* x, const RunCols& t, const Conv2dParams& p, int64_t K, int64_t q0, int64_t q1, int64_t k0,
                          int64_t k1, float* Bp, int64_t qbase = 0) {
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
#endif

// Fills the packed B of one run (group g) on all threads. Tasks of (block of rows, panel), the
// panels inner: a block's rows read a few input channels (kernel_h x kernel_w rows each), which
// stay in L1/L2 while every panel takes its columns from them.
void im2col_packed(const float* x, const RunCols& t, const Conv2dParams& p, int64_t K, int64_t panels, float* Bp) {
  const int64_t khw = int64_t{p.kernel_h} * p.kernel_w;
  const int64_t kb = std::min<int64_t>(K, khw * std::max<int64_t>(1, 64 / khw)), kblocks = (K + kb - 1) / kb;
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = detect_isa() == Isa::kAvx512;
  const bool fast = avx512 && t.fits32;
#else
  const bool fast = false;
#endif
  parallel_for(panels * kblocks, 16, [&](int64_t a, int64_t e) {
    for (int64_t task = a; task < e; ++task) {
      const int64_t q = task % panels, k0 = task / panels * kb, k1 = std::min(K, k0 + kb);
#if defined(__x86_64__) && defined(__GNUC__)
      if (fast) {
        im2col_panels_avx512(x, t, p, K, q, q + 1, k0, k1, Bp);
        continue;
      }
#endif
      im2col_panels_portable(x, t, p, K, q, q + 1, k0, k1, Bp);
    }
  });
}

// One large map, small K (conv1: K = 147, 12,100 columns): instead of writing every panel (7 MB)
// and reading it back from L3, each thread packs a few panels at a time into its own buffer
// (L2-sized) and multiplies them at once. Only where the weights (M x K) are small enough to stay
// in L2 too, as every group reads all of them.
bool fused_fits(int64_t M, int64_t K, int64_t panels) {
  return K <= 640 && M * K * 4 <= (256 << 10) && panels >= 16;
}

void conv_fused(const float* x, const RunCols& t, const Conv2dParams& p, int64_t M, int64_t K, int64_t cols, int64_t panels,
                const float* w, const float* bias, float* C) {
  // Panels per group: ~160 KiB of packed B.
  const int64_t gp = std::max<int64_t>(1, std::min<int64_t>(8, (160 << 10) / (K * NR * 4)));
  const int64_t groups = (panels + gp - 1) / gp;
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = detect_isa() == Isa::kAvx512;
  const bool fast = avx512 && t.fits32;
#else
  const bool fast = false;
#endif
  parallel_for(groups, 1, [&](int64_t g0, int64_t g1) {
    static thread_local FloatBuffer local;
    float* Bp = local.get(static_cast<size_t>(gp * K * NR));
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t q0 = g * gp, q1 = std::min(panels, q0 + gp);
#if defined(__x86_64__) && defined(__GNUC__)
      if (fast)
        im2col_panels_avx512(x, t, p, K, q0, q1, 0, K, Bp, q0);
      else
#endif
        im2col_panels_portable(x, t, p, K, q0, q1, 0, K, Bp, q0);
      const int64_t n0 = q0 * NR, n1 = std::min(cols, q1 * NR);
      gemm_packed(M, n1 - n0, K, w, K, Bp, C + n0, cols, bias, p.relu, false);
    }
  });
}

}  // namespace

Status conv2d_forward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                      const RaggedView& out, float* y) {
  if (winograd_applies(p, out)) return conv2d_winograd(in, x, p, weight, bias, out, y);
  const int G = p.groups, cin_g = p.in_channels / G, cout_g = p.out_channels / G;
  const int64_t K = int64_t{cin_g} * p.kernel_h * p.kernel_w;
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
    while (i1 < in.count && cols < kRunColumns && (cols + int64_t{out.height[i1]} * out.width[i1]) * K <= kColFloats)
      cols += int64_t{out.height[i1]} * out.width[i1], ++i1;
    const int64_t panels = gemm_panels(cols);
    float* Bp = nullptr;  // the whole run's packed B, unless every group takes the fused path
    const bool single = i1 == i0 + 1;
    float* R = single ? nullptr : res.get(static_cast<size_t>(int64_t{cout_g} * cols));
    for (int g = 0; g < G; ++g) {
      const RunCols t = run_cols(in, out, i0, i1, g, cin_g, p, panels * NR);
      const int64_t P0 = int64_t{out.height[i0]} * out.width[i0];
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

// Output rows [oy0, oy1) of one plane; xc points at input row y_base (rows before it are not read).
void pool_plane_portable(const float* xc, int H, int W, int Wo, const Pool2dParams& p, float* acc, float* yc, int oy0, int oy1,
                         int y_base) {
  for (int oy = oy0; oy < oy1; ++oy) {
    const int ys = std::max(0, oy * p.stride_h - p.pad_h), ye = std::min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
    pool_rows(xc, W, ys - y_base, ye - y_base, acc);
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

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f")
// max(a, b), NaN if either is (vmaxps alone returns its second operand when either is NaN).
inline __m512 nanmax16(__m512 a, __m512 b) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_max_ps(a, b), a);
}

// One plane, stride_w 1 or 2, 16 output columns at a time. Per output row: the max over the
// window's rows into acc (acc[pad_w + x] = column x, -inf on both sides, where the padding and
// any window overhang read), then per output column the max over kernel_w entries of acc:
// consecutive entries (stride 1) or every other one, as the even lanes of two loads (stride 2).
// Output rows [oy0, oy1); xc points at input row y_base (rows before it are not read).
void pool_plane_avx512(const float* xc, int H, int W, int Wo, const Pool2dParams& p, float* acc, float* yc, int oy0, int oy1,
                       int y_base) {
  const int sw = p.stride_w, kw = p.kernel_w;
  const int64_t span = int64_t{(Wo + 15) / 16 * 16} * sw + kw + 32;  // entries the last block may read
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t e = 0; e < span; e += 16) _mm512_storeu_ps(acc + e, ninf);
  for (int oy = oy0; oy < oy1; ++oy) {
    const int ys = std::max(0, oy * p.stride_h - p.pad_h), ye = std::min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
    float* a = acc + p.pad_w;
    for (int x = 0; x < W; x += 16) {
      const __mmask16 m = W - x >= 16 ? __mmask16(0xffff) : __mmask16((1u << (W - x)) - 1);
      __m512 v = ninf;
      for (int y = ys; y < ye; ++y) v = nanmax16(_mm512_mask_loadu_ps(ninf, m, xc + int64_t{y - y_base} * W + x), v);
      _mm512_mask_storeu_ps(a + x, m, v);
    }
    float* yr = yc + int64_t{oy} * Wo;
    for (int ox = 0; ox < Wo; ox += 16) {
      const __mmask16 m = Wo - ox >= 16 ? __mmask16(0xffff) : __mmask16((1u << (Wo - ox)) - 1);
      const float* b = acc + int64_t{ox} * sw;
      __m512 v = ninf;
      if (sw == 1) {
        for (int j = 0; j < kw; ++j) v = nanmax16(_mm512_loadu_ps(b + j), v);
      } else {
        for (int j = 0; j < kw; ++j) v = nanmax16(_mm512_permutex2var_ps(_mm512_loadu_ps(b + j), evens, _mm512_loadu_ps(b + j + 16)), v);
      }
      _mm512_mask_storeu_ps(yr + ox, m, v);
    }
  }
}
#pragma GCC pop_options
#endif

Status max_pool2d_forward(const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, float* y) {
  const int64_t C = in.channels;
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = detect_isa() == Isa::kAvx512;
  const bool fast = avx512 && (p.stride_w == 1 || p.stride_w == 2);
#else
  const bool fast = false;
#endif
  int64_t acc_len = 1;
  for (int i = 0; i < in.count; ++i)
    acc_len = std::max<int64_t>({acc_len, in.width[i], int64_t{(out.width[i] + 15) / 16 * 16} * p.stride_w + p.kernel_w + 32 + p.pad_w});
  parallel_for(int64_t{in.count} * C, 4, [&](int64_t t0, int64_t t1) {
    std::vector<float> acc(static_cast<size_t>(acc_len + 16));
    for (int64_t t = t0; t < t1; ++t) {
      const int i = static_cast<int>(t / C), c = static_cast<int>(t % C);
      const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
      const float* xc = x + in.offset[i] + c * H * W;
      float* yc = y + out.offset[i] + c * Ho * Wo;
#if defined(__x86_64__) && defined(__GNUC__)
      if (fast) {
        pool_plane_avx512(xc, H, W, Wo, p, acc.data(), yc, 0, Ho, 0);
        continue;
      }
#endif
      pool_plane_portable(xc, H, W, Wo, p, acc.data(), yc, 0, Ho, 0);
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

// sum[w] = sum over channels c0..c1 of x[c][w]^2 (rows HW apart), in channel order.
SPP_ISA_CLONES
void lrn_window_sum(const float* __restrict xb, int64_t HW, int c0, int c1, int W, float* __restrict sum) {
  for (int w = 0; w < W; ++w) sum[w] = 0.f;
  for (int cc = c0; cc <= c1; ++cc) {
    const float* xr = xb + cc * HW;
    for (int w = 0; w < W; ++w) sum[w] += xr[w] * xr[w];
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
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
#endif

// LRN of one row of one map, every channel: input channel c at xb + c * HW, output at yb + c * ys.
void lrn_row_all_channels(const float* xb, float* yb, int64_t HW, int64_t ys, int C, int W, const LrnParams& p, bool fast,
                          std::vector<float>& sum) {
  const int before = p.size / 2, after = (p.size - 1) / 2;
  const float scale = p.alpha / static_cast<float>(p.size);
#if defined(__x86_64__) && defined(__GNUC__)
  if (fast) {
    sum.resize(static_cast<size_t>(C) * 16 + 16);
    float* raw = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(sum.data()) + 63) & ~uintptr_t{63});
    lrn_rows_avx512(xb, yb, HW, ys, C, W, before, after, p.k, scale, raw);
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

Status lrn_forward(const RaggedView& in, const float* x, const LrnParams& p, float* y) {
  const int C = in.channels;
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = detect_isa() == Isa::kAvx512;
  const bool fast = avx512 && p.beta == 0.75f;
#else
  const bool fast = false;
#endif
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
  const int C = in.channels;
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = detect_isa() == Isa::kAvx512;
  const bool fast_lrn = avx512 && lp.beta == 0.75f, fast_pool = avx512 && (pp.stride_w == 1 || pp.stride_w == 2);
#else
  const bool fast_lrn = false, fast_pool = false;
  (void)fast_pool;
#endif
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
#if defined(__x86_64__) && defined(__GNUC__)
        if (fast_pool) {
          pool_plane_avx512(s + c * plane, H, W, Wo, pp, acc, yc, oy0, oy1, ys);
          continue;
        }
#endif
        pool_plane_portable(s + c * plane, H, W, Wo, pp, acc, yc, oy0, oy1, ys);
      }
    }
  });
  return Status::Ok();
}

namespace {

// Up to kLinRows input rows against OB weight rows at a time: the weight rows stream from memory
// once, and each 16-float chunk of x serves OB outputs (OB x NR accumulators, 8 loads per 16 FMAs
// at 4 x 4). For the few rows a fully connected layer sees at inference, where the weights'
// bandwidth is the floor.
template <int OB, int NR>
SPP_ISA_CLONES void linear_tile_small(int64_t o, const float* x, int64_t in, int64_t out, const float* w, const float* b,
                                      bool relu, float* y) {
  v16 a[OB][NR];
  for (int i = 0; i < OB; ++i)
    for (int r = 0; r < NR; ++r) a[i][r] = v16{};
  int64_t k = 0;
  for (; k + 16 <= in; k += 16) {
    v16 xv[NR];
    for (int r = 0; r < NR; ++r) xv[r] = v16_load(x + r * in + k);
    for (int i = 0; i < OB; ++i) {
      const v16 wv = v16_load(w + (o + i) * in + k);
      for (int r = 0; r < NR; ++r) a[i][r] += wv * xv[r];
    }
  }
  for (int i = 0; i < OB; ++i)
    for (int r = 0; r < NR; ++r) {
      const float* wo = w + (o + i) * in;
      float s = v16_sum(a[i][r]);
      for (int64_t j = k; j < in; ++j) s += x[r * in + j] * wo[j];
      if (b) s += b[o + i];
      y[r * out + o + i] = relu ? relu1(s) : s;
    }
}
template <int NR>
void linear_rows_small(int64_t o0, int64_t o1, const float* x, int64_t in, int64_t out, const float* w, const float* b,
                       bool relu, float* y) {
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) linear_tile_small<4, NR>(o, x, in, out, w, b, relu, y);
  for (; o < o1; ++o) linear_tile_small<1, NR>(o, x, in, out, w, b, relu, y);
}
constexpr int64_t kLinRows = 4;        // rows per pass of the small-batch kernel
constexpr int64_t kLinGemmRows = 8;    // from this many rows on, the packed GEMM

}  // namespace

Status linear_forward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* b,
                      bool relu, int32_t /*math: FP32 always on the CPU*/, float* y) {
  const int64_t in = in_features, out = out_features;
  if (rows <= 0 || out <= 0) return Status::Ok();
  if (rows < kLinGemmRows) {
    parallel_for(out, 16, [&](int64_t o0, int64_t o1) {
      for (int64_t r0 = 0; r0 < rows; r0 += kLinRows) {
        const float* xr = x + r0 * in;
        float* yr = y + r0 * out;
        switch (std::min(kLinRows, rows - r0)) {
          case 1: linear_rows_small<1>(o0, o1, xr, in, out, w, b, relu, yr); break;
          case 2: linear_rows_small<2>(o0, o1, xr, in, out, w, b, relu, yr); break;
          case 3: linear_rows_small<3>(o0, o1, xr, in, out, w, b, relu, yr); break;
          default: linear_rows_small<4>(o0, o1, xr, in, out, w, b, relu, yr); break;
        }
      }
    });
    return Status::Ok();
  }
  // C[out][rows] = W[out][in] . x^T[in][rows] through the packed GEMM (bias per row of C, i.e. per
  // output feature), then transposed into y[rows][out]. x^T is packed straight from x.
  static thread_local FloatBuffer packed, tmp;
  float* Bp = packed.get(static_cast<size_t>(gemm_packed_size(rows, in)));
  float* C = tmp.get(static_cast<size_t>(out * rows));
  const int64_t panels = gemm_panels(rows);
  parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t pj = p0; pj < p1; ++pj) {
      float* dst = Bp + pj * in * NR;
      const int64_t n0 = pj * NR, nn = std::min<int64_t>(NR, rows - n0);
      if (nn < NR)
        for (int64_t k = 0; k < in; ++k)
          for (int64_t j = nn; j < NR; ++j) dst[k * NR + j] = 0.f;
      for (int64_t j = 0; j < nn; ++j) {
        const float* src = x + (n0 + j) * in;
        for (int64_t k = 0; k < in; ++k) dst[k * NR + j] = src[k];
      }
    }
  });
  gemm_packed(out, rows, in, w, in, Bp, C, rows, b, relu, true);
  parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t o = 0; o < out; ++o) y[r * out + o] = C[o * rows + r];
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
