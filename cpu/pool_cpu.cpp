// CPU max_pool2d, forward and backward. The per-plane forward (pool_cpu.h) also serves the fused
// LRN + max pooling (lrn_cpu.cpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "isa.h"
#include "parallel.h"
#include "pool_cpu.h"
#include "sppnet/ops.h"
#include "vec.h"

namespace sppnet {
namespace cpu {

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

#ifdef SPP_X86
#pragma GCC push_options
#pragma GCC target("avx512f")
// max(a, b), NaN if either is (vmaxps alone returns its second operand when either is NaN).
inline __m512 nanmax16(__m512 a, __m512 b) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_max_ps(a, b), a);
}

// Stride 2 along rows, windows of KW <= 4 columns: each output row from registers.
// The column maxima of the 48 input columns a block of 16 outputs may touch (2 ox - pad_w on) are
// three vectors (masked loads, -inf outside the map), and window column j of the 16 outputs is the
// even lanes of those shifted by j (valignd, then one permute), with no trip through a row buffer
// (whose masked store and overlapping reloads stalled store forwarding: googlenet's 832 x 14 x 14,
// 2 x 2 / 2 pools, ~75% of their time there). The next block starts 32 columns on, so its first
// vector is this block's third: each input column's maximum is taken once (wide rows read 48
// columns a block without that, 20-25% slower than the row buffer on googlenet's 112 and 56 wide
// maps). The same maxima in the same order as the other paths.
template <int KW>
void pool_rows_s2(const float* xc, int H, int W, int Wo, const Pool2dParams& p, float* yc, int oy0, int oy1, int y_base) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int oy = oy0; oy < oy1; ++oy) {
    const int ys = std::max(0, oy * p.stride_h - p.pad_h), ye = std::min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
    float* yr = yc + int64_t{oy} * Wo;
    __m512 v[3] = {ninf, ninf, ninf};
    for (int ox = 0; ox < Wo; ox += 16) {
      const int64_t c0 = int64_t{2} * ox - p.pad_w;
      // The maximum over the window's rows of columns [c, c + 16) (masked loads, -inf outside).
      auto columns = [&](int64_t c) __attribute__((always_inline)) {
        __m512 m = ninf;
        const __mmask16 in = lanes16(-c, W - c);  // the columns from c on that lie in [0, W)
        if (!in) return m;
        // The block may start left of the row (c < 0, masked off): its address as an integer,
        // not a pointer before the plane.
        const intptr_t col = static_cast<intptr_t>(c) * static_cast<intptr_t>(sizeof(float));
        for (int y = ys; y < ye; ++y) {
          const float* row = xc + int64_t{y - y_base} * W;
          m = nanmax16(_mm512_mask_loadu_ps(ninf, in, reinterpret_cast<const float*>(reinterpret_cast<intptr_t>(row) + col)), m);
        }
        return m;
      };
      // KW > 2: columns [c0, c0 + 16) are the last block's third vector
      v[0] = KW > 2 && ox > 0 ? v[2] : columns(c0);
      v[1] = columns(c0 + 16);
      if constexpr (KW > 2) v[2] = columns(c0 + 32);
      __m512 r = ninf;
      auto column = [&](auto j) __attribute__((always_inline)) {
        constexpr int J = decltype(j)::value;
        const __m512 a = J == 0 ? v[0] : _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(v[1]), _mm512_castps_si512(v[0]), J));
        const __m512 b = J == 0 ? v[1] : _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(v[2]), _mm512_castps_si512(v[1]), J));
        r = nanmax16(_mm512_permutex2var_ps(a, evens, b), r);
      };
      column(std::integral_constant<int, 0>{});
      if constexpr (KW > 1) column(std::integral_constant<int, 1>{});
      if constexpr (KW > 2) column(std::integral_constant<int, 2>{});
      if constexpr (KW > 3) column(std::integral_constant<int, 3>{});
      _mm512_mask_storeu_ps(yr + ox, first_lanes16(Wo - ox), r);
    }
  }
}

// One plane, stride_w 1 or 2, 16 output columns at a time. Per output row: the max over the
// window's rows into acc (acc[pad_w + x] = column x, -inf on both sides, where the padding and
// any window overhang read), then per output column the max over kernel_w entries of acc:
// consecutive entries (stride 1) or every other one, as the even lanes of two loads (stride 2).
// Output rows [oy0, oy1); xc points at input row y_base (rows before it are not read).
void pool_plane_avx512(const float* xc, int H, int W, int Wo, const Pool2dParams& p, float* acc, float* yc, int oy0, int oy1,
                       int y_base) {
  const int sw = p.stride_w, kw = p.kernel_w;
  if (sw == 2 && kw >= 1 && kw <= 4) {
    with_rows<4>(kw, [&](auto k) { pool_rows_s2<decltype(k)::value>(xc, H, W, Wo, p, yc, oy0, oy1, y_base); });
    return;
  }
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

// pool_same_avx2's flat passes with 16 lanes and masks instead of guards and mask tables: the
// column max v[f] = max of x[f + dy W] over the rows inside the map (a masked load per dy and side,
// the lanes whose row exists), then y[f] = max of v[f + dx] over the columns inside (the lanes'
// columns kept in a vector, (f + l) mod W, compared with dx and W - dx). NaN is looked for in the
// same pass (every element is some lane's centre): a plane with NaN returns false having written
// nothing to yc, and takes the row-by-row path, which propagates it. v: HW + 16 floats of scratch.
// Googlenet's 3x3 / 1 / 1 pools: about a third of pool_same_avx2's instructions, one pass fewer.
bool pool_same_avx512(const float* xc, int H, int W, int ph, int pw, float* v, float* yc) {
  const int64_t HW = int64_t{H} * W;
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  __mmask16 nan = 0;
  for (int64_t f = 0; f < HW; f += 16) {
    const __mmask16 mt = lanes16(0, HW - f);
    __m512 r = _mm512_mask_loadu_ps(ninf, mt, xc + f);
    nan |= _mm512_mask_cmp_ps_mask(mt, r, r, _CMP_UNORD_Q);
    for (int dy = 1; dy <= ph && dy < H; ++dy) {
      const int64_t d = int64_t{dy} * W;
      // above: lanes with f + l >= d; below: lanes with f + l + d < HW (addresses as integers:
      // the masked-off lanes' may lie outside the plane)
      const __mmask16 mu = lanes16(d - f, HW - f), md = lanes16(0, HW - d - f);
      if (mu)
        r = _mm512_max_ps(r, _mm512_mask_loadu_ps(ninf, mu, reinterpret_cast<const float*>(reinterpret_cast<intptr_t>(xc) + (f - d) * int64_t{sizeof(float)})));
      if (md) r = _mm512_max_ps(r, _mm512_mask_loadu_ps(ninf, md, xc + f + d));
    }
    _mm512_storeu_ps(v + f, r);
  }
  if (nan) return false;
  // lane l's column, l mod W, by subtraction (no division per plane: 7 x 7 planes have 49 outputs)
  const __m512i wv = _mm512_set1_epi32(W);
  __m512i col = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (__mmask16 over; (over = _mm512_cmpge_epi32_mask(col, wv)) != 0;) col = _mm512_mask_sub_epi32(col, over, col, wv);
  const __m512i step = _mm512_set1_epi32(W > 16 ? 16 : 16 % W);
  for (int64_t f = 0; f < HW; f += 16) {
    const __mmask16 mt = lanes16(0, HW - f);
    __m512 r = _mm512_loadu_ps(v + f);
    for (int dx = 1; dx <= pw && dx < W; ++dx) {
      const __mmask16 ml = _mm512_mask_cmpge_epi32_mask(mt, col, _mm512_set1_epi32(dx));
      const __mmask16 mr = _mm512_mask_cmplt_epi32_mask(mt, col, _mm512_set1_epi32(W - dx));
      r = _mm512_max_ps(r, _mm512_mask_loadu_ps(ninf, ml, reinterpret_cast<const float*>(reinterpret_cast<intptr_t>(v) + (f - dx) * int64_t{sizeof(float)})));
      r = _mm512_max_ps(r, _mm512_mask_loadu_ps(ninf, mr, v + f + dx));
    }
    _mm512_mask_storeu_ps(yc + f, mt, r);
    // (f + 16 + l) mod W from (f + l) mod W
    col = _mm512_add_epi32(col, step);
    col = _mm512_mask_sub_epi32(col, _mm512_cmpge_epi32_mask(col, wv), col, wv);
  }
  return true;
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
// max(a, b), NaN if either is (vmaxps returns its second operand when either is NaN).
inline __m256 nanmax8(__m256 a, __m256 b) { return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q)); }

// pool_plane_avx512 with 8 columns at a time. No masked stores (microcoded on AMD): a row block
// past W is loaded under a mask and its lanes past W set to -inf before the full store into acc
// (those entries are -inf anyway); an output block past Wo goes through a small buffer.
void pool_plane_avx2(const float* xc, int H, int W, int Wo, const Pool2dParams& p, float* acc, float* yc, int oy0, int oy1,
                     int y_base) {
  const int sw = p.stride_w, kw = p.kernel_w;
  const int64_t span = int64_t{(Wo + 15) / 16 * 16} * sw + kw + 32;  // entries the last block may read
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t e = 0; e < span; e += 8) _mm256_storeu_ps(acc + e, ninf);
  for (int oy = oy0; oy < oy1; ++oy) {
    const int ys = std::max(0, oy * p.stride_h - p.pad_h), ye = std::min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
    float* a = acc + p.pad_w;
    int x = 0;
    for (; x + 8 <= W; x += 8) {
      __m256 v = ninf;
      for (int y = ys; y < ye; ++y) v = nanmax8(_mm256_loadu_ps(xc + int64_t{y - y_base} * W + x), v);
      _mm256_storeu_ps(a + x, v);
    }
    if (x < W) {
      const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(W - x), lanes);
      __m256 v = ninf;
      for (int y = ys; y < ye; ++y)
        v = nanmax8(_mm256_blendv_ps(ninf, _mm256_maskload_ps(xc + int64_t{y - y_base} * W + x, m), _mm256_castsi256_ps(m)), v);
      _mm256_storeu_ps(a + x, v);
    }
    float* yr = yc + int64_t{oy} * Wo;
    for (int ox = 0; ox < Wo; ox += 8) {
      const float* b = acc + int64_t{ox} * sw;
      __m256 v = ninf;
      if (sw == 1) {
        for (int j = 0; j < kw; ++j) v = nanmax8(_mm256_loadu_ps(b + j), v);
      } else {
        // the even entries of b[j .. j + 16): [b0 b2 b8 b10 | b4 b6 b12 b14] -> in order
        for (int j = 0; j < kw; ++j) {
          const __m256 ev = _mm256_shuffle_ps(_mm256_loadu_ps(b + j), _mm256_loadu_ps(b + j + 8), 0x88);
          v = nanmax8(_mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)), v);
        }
      }
      if (Wo - ox >= 8) {
        _mm256_storeu_ps(yr + ox, v);
      } else {
        alignas(32) float tail[8];
        _mm256_store_ps(tail, v);
        std::copy(tail, tail + (Wo - ox), yr + ox);
      }
    }
  }
}

// A plane whose output has the input's size (stride 1, odd kernels, padding (k - 1) / 2: the
// 3x3 / 1 / 1 pools of googlenet's Inception blocks), without NaN, as flat passes over the whole
// plane with no per-row loops: the column max v[f] = max of x[f + dy W] over the rows inside the
// map (one pass per dy over the range where row y + dy exists), then the row max over v[f + dx]
// for the dx whose column is inside (a mask per dx and side, periodic in W, from `masks`). v has 8
// entries of -inf before and after it. googlenet's 14x14 and 7x7 pools: ~2-3x fewer instructions
// than row by row. Same values as pool_plane_avx2 (a max over the same window, no NaN).
void pool_same_avx2(const float* xc, int H, int W, int ph, int pw, const int32_t* masks, float* v, float* yc) {
  const int64_t HW = int64_t{H} * W;
  std::copy(xc, xc + HW, v);
  for (int dy = 1; dy <= ph && dy < H; ++dy) {
    const int64_t d = int64_t{dy} * W;
    // rows below (f < HW - d reads f + d) and above (f >= d reads f - d)
    int64_t f = 0;
    for (; f + 8 <= HW - d; f += 8) _mm256_storeu_ps(v + f, _mm256_max_ps(_mm256_loadu_ps(xc + f + d), _mm256_loadu_ps(v + f)));
    for (; f < HW - d; ++f) v[f] = std::max(xc[f + d], v[f]);
    f = d;
    for (; f + 8 <= HW; f += 8) _mm256_storeu_ps(v + f, _mm256_max_ps(_mm256_loadu_ps(xc + f - d), _mm256_loadu_ps(v + f)));
    for (; f < HW; ++f) v[f] = std::max(xc[f - d], v[f]);
  }
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  int64_t f = 0;
  for (; f + 8 <= HW; f += 8) {
    __m256 r = _mm256_loadu_ps(v + f);
    for (int dx = 1; dx <= pw; ++dx) {
      const int32_t* ml = masks + (2 * dx - 2) * HW, *mr = masks + (2 * dx - 1) * HW;
      const __m256 l = _mm256_blendv_ps(ninf, _mm256_loadu_ps(v + f - dx), _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ml + f))));
      const __m256 rr = _mm256_blendv_ps(ninf, _mm256_loadu_ps(v + f + dx), _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(mr + f))));
      r = _mm256_max_ps(l, _mm256_max_ps(rr, r));
    }
    _mm256_storeu_ps(yc + f, r);
  }
  for (; f < HW; ++f) {
    float r = v[f];
    for (int dx = 1; dx <= pw; ++dx) {
      if (masks[(2 * dx - 2) * HW + f]) r = std::max(v[f - dx], r);
      if (masks[(2 * dx - 1) * HW + f]) r = std::max(v[f + dx], r);
    }
    yc[f] = r;
  }
}

bool has_nan_avx2(const float* x, int64_t n) {
  __m256 u = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(x + i);
    u = _mm256_or_ps(u, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
  bool nan = _mm256_movemask_ps(u) != 0;
  for (; i < n; ++i) nan = nan || x[i] != x[i];
  return nan;
}
#pragma GCC pop_options
#endif

PoolPlane pool_plane_for(const Pool2dParams& p) {
#ifdef SPP_X86
  static const Isa isa = detect_isa();
  if (p.stride_w == 1 || p.stride_w == 2) {
    if (isa == Isa::kAvx512) return pool_plane_avx512;
    if (isa == Isa::kAvx2) return pool_plane_avx2;
  }
#endif
  (void)p;
  return pool_plane_portable;
}

Status max_pool2d_forward(const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, float* y) {
  const int64_t C = in.channels;
  const PoolPlane pool_plane = pool_plane_for(p);
  int64_t acc_len = 1;
  for (int i = 0; i < in.count; ++i)
    acc_len = std::max<int64_t>({acc_len, in.width[i], int64_t{(out.width[i] + 15) / 16 * 16} * p.stride_w + p.kernel_w + 32 + p.pad_w});
#ifdef SPP_X86
  // Output the input's size (stride 1, odd kernels, padding (k - 1) / 2): flat passes over each
  // plane, pool_same_avx512 (a plane with NaN goes row by row), or on AVX2 pool_same_avx2 for the
  // planes without NaN (at most 8 columns of padding: v's guard).
  static const Isa isa = detect_isa();
  const bool same_size = p.stride_h == 1 && p.stride_w == 1 && p.kernel_h % 2 == 1 && p.kernel_w % 2 == 1 &&
                         p.pad_h == p.kernel_h / 2 && p.pad_w == p.kernel_w / 2;
  const bool same512 = isa == Isa::kAvx512 && same_size;
  const bool same = isa == Isa::kAvx2 && same_size && p.pad_w <= 8;
#else
  const bool same512 = false, same = false;
#endif
  // pool_same_avx2's column masks, one table per distinct map size (a ragged batch of many maps
  // of few sizes keeps few), made once before the threads start: mask_at[i] is map i's.
  std::vector<int32_t> masks;
  const std::vector<size_t> mask_at =
      same ? tables_by_key(
                 in.count, masks, [&](int i) { return std::make_pair(in.height[i], in.width[i]); },
                 [&](int i, std::vector<int32_t>& ms) {
                   const int W = in.width[i];
                   const int64_t HW = int64_t{in.height[i]} * W;
                   const size_t base = ms.size();
                   ms.resize(base + static_cast<size_t>(2 * p.pad_w * HW));
                   int32_t* m = ms.data() + base;
                   for (int dx = 1; dx <= p.pad_w; ++dx)
                     for (int64_t f = 0; f < HW; ++f) {
                       const int col = static_cast<int>(f % W);
                       m[(2 * dx - 2) * HW + f] = col >= dx ? -1 : 0;
                       m[(2 * dx - 1) * HW + f] = col + dx < W ? -1 : 0;
                     }
                 })
           : std::vector<size_t>();
  parallel_for(int64_t{in.count} * C, 4, [&](int64_t t0, int64_t t1) {
    std::vector<float> acc(static_cast<size_t>(acc_len + 16));
    std::vector<float> v;  // pool_same_avx2's column maxima for planes of vh x vw, 8 guards of -inf each side
    int vh = -1, vw = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int i = static_cast<int>(t / C), c = static_cast<int>(t % C);
      const int H = in.height[i], W = in.width[i], Ho = out.height[i], Wo = out.width[i];
      const float* xc = x + in.offset[i] + int64_t{c} * H * W;
      float* yc = y + out.offset[i] + int64_t{c} * Ho * Wo;
#ifdef SPP_X86
      const int64_t HW = int64_t{H} * W;
      if (same512) {
        if (vh != H || vw != W) v.resize(static_cast<size_t>(HW + 16)), vh = H, vw = W;
        if (pool_same_avx512(xc, H, W, p.pad_h, p.pad_w, v.data(), yc)) continue;
      } else if (same && !has_nan_avx2(xc, HW)) {
        if (vh != H || vw != W) {  // the guards after the plane must be -inf: reset for each size
          v.assign(static_cast<size_t>(HW + 16), -INFINITY);
          vh = H, vw = W;
        }
        pool_same_avx2(xc, H, W, p.pad_h, p.pad_w, masks.data() + mask_at[static_cast<size_t>(i)], v.data() + 8, yc);
        continue;
      }
#endif
      pool_plane(xc, H, W, Wo, p, acc.data(), yc, 0, Ho, 0);
    }
  });
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

}  // namespace cpu
}  // namespace sppnet
