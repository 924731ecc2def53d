// SPP on the CPU: one task per (region, channel) plane, all levels computed while the plane is
// in cache, so each input element comes from memory once. Per bin row, a vectorised column
// reduction over the rows of the bin, then a short horizontal reduction per bin.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "isa.h"
#include "parallel.h"
#include "sppnet/ops.h"
#include "vec.h"


namespace sppnet {
namespace cpu {
namespace {

// NaN-propagating max, as PyTorch's pooling: a NaN anywhere in a bin makes the bin NaN.
// Written as two selects so that it vectorises and compiles without branches.
inline float nan_max(float m, float v) {
  const float r = (m > v) ? m : v;  // v when v is NaN
  return (m != m) ? m : r;          // m when m is NaN
}

// Max pooling of a plane known to hold no NaN: a plain max (one vector instruction, vmaxps)
// instead of the NaN-propagating pair of selects. Internal to this file.
constexpr int kPoolMaxNoNan = 2;

template <int POOL>
inline float reduce_op(float m, float v) {
  if (POOL == kPoolMax) return nan_max(m, v);
  if (POOL == kPoolMaxNoNan) return m > v ? m : v;
  return m + v;
}

// Whether rows [0, h) x columns [0, w) of a plane hold a NaN.
SPP_ISA_CLONES bool has_nan(const float* __restrict plane, int64_t stride, int h, int w) {
  int bad = 0;
  for (int y = 0; y < h; ++y) {
    const float* row = plane + y * stride;
    for (int x = 0; x < w; ++x) bad |= row[x] != row[x];
  }
  return bad != 0;
}

// acc[x] = max / sum over rows [y0, y1) of plane[y * stride + x], for x in [0, w).
template <int POOL>
SPP_ISA_CLONES void column_reduce(const float* __restrict plane, int64_t stride, int y0, int y1, int w,
                                  float* __restrict acc) {
  const float* row = plane + y0 * stride;
  for (int x = 0; x < w; ++x) acc[x] = row[x];
  for (int y = y0 + 1; y < y1; ++y) {
    row = plane + y * stride;
    for (int x = 0; x < w; ++x) acc[x] = reduce_op<POOL>(acc[x], row[x]);
  }
}

// max / sum of a[s..e) (e > s) with four independent chains, so that wide bins are bound by
// throughput rather than by the latency of one long dependency chain.
template <int POOL>
inline float row_reduce(const float* __restrict a, int s, int e) {
  auto op = [](float m, float v) { return reduce_op<POOL>(m, v); };
  if (e - s < 8) {
    float v = a[s];
    for (int x = s + 1; x < e; ++x) v = op(v, a[x]);
    return v;
  }
  float m0 = a[s], m1 = a[s + 1], m2 = a[s + 2], m3 = a[s + 3];
  int x = s + 4;
  for (; x + 3 < e; x += 4) {
    m0 = op(m0, a[x]);
    m1 = op(m1, a[x + 1]);
    m2 = op(m2, a[x + 2]);
    m3 = op(m3, a[x + 3]);
  }
  for (; x < e; ++x) m0 = op(m0, a[x]);
  return op(op(m0, m1), op(m2, m3));
}

// The bins of every level along both axes of one region size, computed once per size rather
// than once per bin (consecutive tasks share a region, and often a size).
//
// For max pooling, a bin whose rows are exactly the union of some bins of a finer level, and whose
// columns likewise, is the max of those finer bins: max is idempotent, so overlaps do no harm, and
// a NaN still reaches every bin that holds it. With {6, 3, 2, 1} over 13 x 13 that is 400 vector
// operations a block instead of 914. `from`, `cy` and `cx` say, per level, which finer level (if
// any) and which of its bins along each axis; the channel-vector path computes the levels finest first to use it.
struct BinTable {
  int h = -1, w = -1;
  std::vector<BinRange> y, x;  // level l's bins start at index first[l]
  std::vector<int> first;      // sum(levels[0..l))
  std::vector<int> base;       // sum of n * n over levels[0..l): level l's first bin in the output row / C
  std::vector<int> order;      // the levels, finest first
  std::vector<int> from;       // per level: the finer level its max bins are taken from, or -1
  std::vector<BinRange> cy, cx;  // per bin (indexed as y, x): the range of `from`'s bins covering it

  const BinTable& get(const SppProblem& p, int hh, int ww) {
    if (hh == h && ww == w) return *this;
    h = hh;
    w = ww;
    const int L = p.num_levels;
    y.clear();
    x.clear();
    first.assign(static_cast<size_t>(L), 0);
    base.assign(static_cast<size_t>(L), 0);
    for (int l = 0; l < L; ++l) {
      first[l] = static_cast<int>(y.size());
      base[l] = l == 0 ? 0 : base[l - 1] + p.levels[l - 1] * p.levels[l - 1];
      for (int i = 0; i < p.levels[l]; ++i) {
        y.push_back(bin_range(p.rule, i, p.levels[l], h));
        x.push_back(bin_range(p.rule, i, p.levels[l], w));
      }
    }
    order.resize(static_cast<size_t>(L));
    for (int l = 0; l < L; ++l) order[l] = l;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p.levels[a] > p.levels[b]; });
    from.assign(static_cast<size_t>(L), -1);
    cy.assign(y.size(), BinRange{0, 0});
    cx.assign(x.size(), BinRange{0, 0});
    std::vector<BinRange> ty(y.size()), tx(x.size());
    for (int oi = 0; oi < L; ++oi) {
      const int l = order[oi], n = p.levels[l];
      int64_t best = 0;  // the direct cost: every element of every bin
      {
        int64_t sy = 0, sx = 0;
        for (int i = 0; i < n; ++i) {
          sy += y[first[l] + i].end - y[first[l] + i].start;
          sx += x[first[l] + i].end - x[first[l] + i].start;
        }
        best = sy * sx;
      }
      for (int oj = 0; oj < oi; ++oj) {
        const int f = order[oj];
        if (p.levels[f] <= n) continue;
        int64_t sy = 0, sx = 0;
        if (!covers(y, first[l], n, first[f], p.levels[f], ty, sy) || !covers(x, first[l], n, first[f], p.levels[f], tx, sx)) continue;
        if (sy * sx >= best) continue;
        best = sy * sx;
        from[l] = f;
        for (int i = 0; i < n; ++i) {
          cy[first[l] + i] = ty[first[l] + i];
          cx[first[l] + i] = tx[first[l] + i];
        }
      }
    }
    return *this;
  }

 private:
  // Whether each of level l's n bins (at b[fl..]) is exactly the union of a run of level f's nf
  // bins (at b[ff..]); the runs go to c[fl + i], and their total length to cost.
  static bool covers(const std::vector<BinRange>& b, int fl, int n, int ff, int nf, std::vector<BinRange>& c, int64_t& cost) {
    cost = 0;
    int k = 0;
    for (int i = 0; i < n; ++i) {
      const BinRange r = b[fl + i];
      // Bin starts and ends never decrease with the index, so the bins inside r are a run.
      while (k < nf && b[ff + k].start < r.start) ++k;
      int e = k;
      int32_t reach = r.start;
      while (e < nf && b[ff + e].end <= r.end) {
        if (b[ff + e].start > reach) return false;  // a gap
        reach = std::max(reach, b[ff + e].end);
        ++e;
      }
      if (e == k || reach != r.end) return false;
      c[fl + i] = BinRange{k, e};
      cost += e - k;
    }
    return true;
  }
};

// All levels of one (region, channel) plane, finest first: for max, a level the BinTable covers
// comes from the finer level's bins, already in `out`. out points at this region's output row.
template <int POOL>
void pool_plane(const SppProblem& p, const BinTable& bt, const float* plane, int64_t stride, int c, float* out, float* acc) {
  const int64_t C = p.input.channels;
  for (int oi = 0; oi < p.num_levels; ++oi) {
    const int l = bt.order[oi], n = p.levels[l], fl = bt.first[l];
    float* o = out + C * bt.base[l] + static_cast<int64_t>(c) * n * n;
    const int f = POOL == kPoolAvg ? -1 : bt.from[l];
    if (f >= 0) {
      const int nf = p.levels[f];
      const float* of = out + C * bt.base[f] + static_cast<int64_t>(c) * nf * nf;
      for (int i = 0; i < n; ++i) {
        const BinRange cy = bt.cy[fl + i];
        for (int j = 0; j < n; ++j) {
          const BinRange cx = bt.cx[fl + j];
          float v = of[cy.start * nf + cx.start];
          for (int yy = cy.start; yy < cy.end; ++yy)
            for (int xx = cx.start; xx < cx.end; ++xx) v = reduce_op<POOL>(v, of[yy * nf + xx]);
          o[i * n + j] = v;
        }
      }
      continue;
    }
    for (int i = 0; i < n; ++i) {
      const BinRange ry = bt.y[fl + i];
      column_reduce<POOL>(plane, stride, ry.start, ry.end, bt.w, acc);
      for (int j = 0; j < n; ++j) {
        const BinRange rx = bt.x[fl + j];
        float v = row_reduce<POOL>(acc, rx.start, rx.end);
        if (POOL == kPoolAvg) v /= static_cast<float>((ry.end - ry.start) * (rx.end - rx.start));
        o[i * n + j] = v;
      }
    }
  }
}

// Small regions: rows are too short for vectors along W, so vectorise across channels instead
// (cpu/spp_lanes.inc), compiled for AVX-512, AVX2 and portable code, chosen at run time.
constexpr int kLanes = 16;
// Regions narrower than this take the channel-vector path, if their interleaved planes fit in
// kSmallArea x kLanes floats (1 MiB). Measured on W3 (48-96 px maps, 512 channels): 10-14% faster
// than the row path; 40 and 4096 before.
constexpr int kSmallWidth = 128;
constexpr int kSmallArea = 16384;

namespace portable {
struct V {
  float a[kLanes];
  static V load(const float* p) {
    V v;
    for (int k = 0; k < kLanes; ++k) v.a[k] = p[k];
    return v;
  }
  static void store(float* p, const V& v) {
    for (int k = 0; k < kLanes; ++k) p[k] = v.a[k];
  }
  static V max(V m, const V& v) {
    for (int k = 0; k < kLanes; ++k) m.a[k] = nan_max(m.a[k], v.a[k]);
    return m;
  }
  static V max_plain(V m, const V& v) {
    for (int k = 0; k < kLanes; ++k) m.a[k] = m.a[k] > v.a[k] ? m.a[k] : v.a[k];
    return m;
  }
  static V add(V m, const V& v) {
    for (int k = 0; k < kLanes; ++k) m.a[k] += v.a[k];
    return m;
  }
  static V div(V m, float d) {
    for (int k = 0; k < kLanes; ++k) m.a[k] /= d;
    return m;
  }
};
inline bool interleave(const float* base, int64_t cstride, int64_t rstride, int cb, int h, int w, float* buf, int64_t) {
  int bad = 0;
  for (int k = 0; k < kLanes; ++k) {
    const float* src = base + (k < cb ? k : 0) * cstride;  // spare lanes repeat channel 0
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const float v = src[y * rstride + x];
        bad |= v != v;
        buf[(y * w + x) * kLanes + k] = v;
      }
  }
  return bad != 0;
}
inline void deinterleave(const float* stage, int nn, int cb, float* out) {
  for (int k = 0; k < cb; ++k)
    for (int b = 0; b < nn; ++b) out[k * nn + b] = stage[b * kLanes + k];
}
#include "spp_lanes.inc"
}  // namespace portable

#ifdef SPP_X86
#define SPP_HAVE_X86_LANES 1
// The interleave for both x86 builds: 8 x 8 transposes in AVX2 registers (two groups of 8 lanes
// make the 16 lanes), so that each plane is read in order a row of 8 at a time and the buffer is
// written a whole vector at a time; a row's tail (w not a multiple of 8) comes in by masked loads.
#define SPP_AVX2 __attribute__((target("avx2")))
SPP_AVX2 inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
// Lanes that are NaN in any of the 8 vectors (an unordered compare tests two at once).
SPP_AVX2 inline __m256 any_nan(const __m256 r[8]) {
  const __m256 a = _mm256_or_ps(_mm256_cmp_ps(r[0], r[1], _CMP_UNORD_Q), _mm256_cmp_ps(r[2], r[3], _CMP_UNORD_Q));
  const __m256 b = _mm256_or_ps(_mm256_cmp_ps(r[4], r[5], _CMP_UNORD_Q), _mm256_cmp_ps(r[6], r[7], _CMP_UNORD_Q));
  return _mm256_or_ps(a, b);
}
// Lanes [0, n) of a mask for maskload / maskstore.
SPP_AVX2 inline __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
SPP_AVX2 bool interleave_x86(const float* base, int64_t cstride, int64_t rstride, int cb, int h, int w, float* buf, int64_t ahead) {
  __m256 bad = _mm256_setzero_ps();
  // Rows back to back (a whole map, not a window of one): the plane is one row of h * w pixels,
  // 8 at a time across the rows' ends (13 x 13: 22 transposes instead of 26, 4 of them masked).
  if (rstride == w) w *= h, h = 1;
  const int w8 = w & ~7, rem = w - w8;
  const __m256i tail = first_lanes(rem);
  for (int g = 0; g < kLanes; g += 8) {
    const float* src[8];
    for (int k = 0; k < 8; ++k) src[k] = base + (g + k < cb ? g + k : 0) * cstride;  // spare lanes repeat channel 0
    for (int y = 0; y < h; ++y) {
      float* dst = buf + static_cast<int64_t>(y) * w * kLanes + g;
      if (ahead)  // the same rows of a block ahead: its planes are short streams the hardware prefetches late
        for (int k = 0; k < 8; ++k) {
          _mm_prefetch(reinterpret_cast<const char*>(src[k] + ahead + y * rstride), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(src[k] + ahead + y * rstride + w - 1), _MM_HINT_T0);
        }
      __m256 r[8];
      for (int x = 0; x < w8; x += 8) {
        if (ahead && h == 1 && (x & 15) == 0)  // a long row: its lines a block ahead, as it goes
          for (int k = 0; k < 8; ++k) _mm_prefetch(reinterpret_cast<const char*>(src[k] + ahead + x + 16), _MM_HINT_T0);
        for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src[k] + y * rstride + x);
        bad = _mm256_or_ps(bad, any_nan(r));
        transpose8(r);
        for (int t = 0; t < 8; ++t) _mm256_storeu_ps(dst + (x + t) * kLanes, r[t]);
      }
      if (rem) {
        for (int k = 0; k < 8; ++k) r[k] = _mm256_maskload_ps(src[k] + y * rstride + w8, tail);
        bad = _mm256_or_ps(bad, any_nan(r));
        transpose8(r);
        for (int t = 0; t < rem; ++t) _mm256_storeu_ps(dst + (w8 + t) * kLanes, r[t]);
      }
    }
  }
  return !_mm256_testz_ps(bad, bad);
}
// AMD's masked stores are slow (microcoded), so the tail of a row of bins goes out as a whole
// vector that runs into the next channel's row, written after it; only where that would pass
// this group's last row does it go a float at a time.
SPP_AVX2 void deinterleave_x86(const float* stage, int nn, int cb, float* out) {
  const int full = nn & ~7, rem = nn - full;
  for (int g = 0; g < cb; g += 8) {
    const int kg = std::min(8, cb - g);
    float* o = out + static_cast<int64_t>(g) * nn;
    __m256 r[8];
    if (rem) {
      for (int t = 0; t < 8; ++t) r[t] = t < rem ? _mm256_loadu_ps(stage + (full + t) * kLanes + g) : _mm256_setzero_ps();
      transpose8(r);
      for (int k = 0; k < kg; ++k) {
        float* dst = o + static_cast<int64_t>(k) * nn + full;
        if (static_cast<int64_t>(k) * nn + full + 8 <= static_cast<int64_t>(kg) * nn) {
          _mm256_storeu_ps(dst, r[k]);
        } else {
          alignas(32) float tmp[8];
          _mm256_store_ps(tmp, r[k]);
          for (int t = 0; t < rem; ++t) dst[t] = tmp[t];
        }
      }
    }
    for (int b = 0; b < full; b += 8) {
      for (int t = 0; t < 8; ++t) r[t] = _mm256_loadu_ps(stage + (b + t) * kLanes + g);
      transpose8(r);
      for (int k = 0; k < kg; ++k) _mm256_storeu_ps(o + static_cast<int64_t>(k) * nn + b, r[k]);
    }
  }
}

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
struct V {
  __m512 a;
  static V load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static void store(float* p, const V& v) { _mm512_storeu_ps(p, v.a); }
  // max_ps(v, m) returns m when either is NaN, which keeps a NaN in m; then a NaN in v wins.
  static V max(const V& m, const V& v) {
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(v.a, v.a, _CMP_UNORD_Q), _mm512_max_ps(v.a, m.a), v.a)};
  }
  static V max_plain(const V& m, const V& v) { return {_mm512_max_ps(v.a, m.a)}; }
  static V add(const V& m, const V& v) { return {_mm512_add_ps(m.a, v.a)}; }
  static V div(const V& m, float d) { return {_mm512_div_ps(m.a, _mm512_set1_ps(d))}; }
};
inline bool interleave(const float* base, int64_t cstride, int64_t rstride, int cb, int h, int w, float* buf, int64_t ahead) {
  return interleave_x86(base, cstride, rstride, cb, h, w, buf, ahead);
}
inline void deinterleave(const float* stage, int nn, int cb, float* out) { deinterleave_x86(stage, nn, cb, out); }
#include "spp_lanes.inc"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
struct V {
  __m256 a, b;
  static V load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static void store(float* p, const V& v) {
    _mm256_storeu_ps(p, v.a);
    _mm256_storeu_ps(p + 8, v.b);
  }
  static __m256 max1(__m256 m, __m256 v) { return _mm256_blendv_ps(_mm256_max_ps(v, m), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); }
  static V max(const V& m, const V& v) { return {max1(m.a, v.a), max1(m.b, v.b)}; }
  static V max_plain(const V& m, const V& v) { return {_mm256_max_ps(v.a, m.a), _mm256_max_ps(v.b, m.b)}; }
  static V add(const V& m, const V& v) { return {_mm256_add_ps(m.a, v.a), _mm256_add_ps(m.b, v.b)}; }
  static V div(const V& m, float d) {
    const __m256 q = _mm256_set1_ps(d);
    return {_mm256_div_ps(m.a, q), _mm256_div_ps(m.b, q)};
  }
};
inline bool interleave(const float* base, int64_t cstride, int64_t rstride, int cb, int h, int w, float* buf, int64_t ahead) {
  return interleave_x86(base, cstride, rstride, cb, h, w, buf, ahead);
}
inline void deinterleave(const float* stage, int nn, int cb, float* out) { deinterleave_x86(stage, nn, cb, out); }
#include "spp_lanes.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

template <int POOL>
void pool_channel_block(Isa isa, const SppProblem& p, const BinTable& bt, const float* base, int64_t cstride, int64_t rstride,
                        int cb, int c0, float* out, float* buf, float* stage, int64_t ahead) {
#ifdef SPP_HAVE_X86_LANES
  if (isa == Isa::kAvx512) return avx512::pool_channel_block<POOL>(p, bt, base, cstride, rstride, cb, c0, out, buf, stage, ahead);
  if (isa == Isa::kAvx2) return avx2::pool_channel_block<POOL>(p, bt, base, cstride, rstride, cb, c0, out, buf, stage, ahead);
#endif
  portable::pool_channel_block<POOL>(p, bt, base, cstride, rstride, cb, c0, out, buf, stage, ahead);
}

template <int POOL>
void pool_interleaved_block(Isa isa, const SppProblem& p, const BinTable& bt, const float* ibuf, int64_t rs, bool nan, int cb, int c0,
                            float* out, float* stage) {
#ifdef SPP_HAVE_X86_LANES
  if (isa == Isa::kAvx512) return avx512::pool_interleaved_block<POOL>(p, bt, ibuf, rs, nan, cb, c0, out, stage);
  if (isa == Isa::kAvx2) return avx2::pool_interleaved_block<POOL>(p, bt, ibuf, rs, nan, cb, c0, out, stage);
#endif
  portable::pool_interleaved_block<POOL>(p, bt, ibuf, rs, nan, cb, c0, out, stage);
}

// cb channel planes (h x w, rows rstride apart) into buf[(y * w + x) * kLanes + k]; whether any is NaN.
bool interleave_block(Isa isa, const float* base, int64_t cstride, int64_t rstride, int cb, int h, int w, float* buf) {
#ifdef SPP_HAVE_X86_LANES
  if (isa == Isa::kAvx512) return avx512::interleave(base, cstride, rstride, cb, h, w, buf, 0);
  if (isa == Isa::kAvx2) return avx2::interleave(base, cstride, rstride, cb, h, w, buf, 0);
#endif
  return portable::interleave(base, cstride, rstride, cb, h, w, buf, 0);
}

// At most this many floats of maps interleaved whole (1 GiB); maps past it interleave each window.
constexpr int64_t kWholeMapFloats = int64_t{1} << 28;

int max_region_width(const SppProblem& p) {
  int w = 1;
  for (int r = 0; r < p.num_regions; ++r) w = std::max(w, p.regions[r].w);
  return w;
}

}  // namespace

Status spp_forward(const SppProblem& p, const float* input, float* output) {
  const int64_t C = p.input.channels, F = p.features();
  const int maxw = max_region_width(p);
  int64_t all_bins = 0;  // of every level: the channel-vector path keeps them all, finer levels feeding coarser
  for (int l = 0; l < p.num_levels; ++l) all_bins += int64_t{p.levels[l]} * p.levels[l];
  const Isa isa = detect_isa();
  // A task is one channel of a large region, or a block of kLanes channels of a small one.
  const int64_t blocks = (C + kLanes - 1) / kLanes;
  std::vector<int64_t> first_task(static_cast<size_t>(p.num_regions) + 1, 0);
  std::vector<char> small(static_cast<size_t>(p.num_regions));
  int64_t max_area = 1;
  for (int r = 0; r < p.num_regions; ++r) {
    const Region& g = p.regions[r];
    small[r] = g.w < kSmallWidth && int64_t{g.h} * g.w <= kSmallArea;
    if (small[r]) max_area = std::max(max_area, int64_t{g.h} * g.w);
    first_task[r + 1] = first_task[r] + (small[r] ? blocks : C);
  }
  // Maps whose small regions cover more than the map (detection's thousands of overlapping windows
  // on one feature map): each block of kLanes channels interleaved once for the whole map, and its
  // windows pooled from that, instead of interleaving each window's pixels again (W4, 2,000
  // windows on a 60 x 80 map: the interleave was ~40% of its time).
  std::vector<int64_t> whole_at(static_cast<size_t>(p.input.count), -1);  // the map's first block in `whole`, in floats
  std::vector<int64_t> whole_task(static_cast<size_t>(p.input.count) + 1, 0);
  int64_t whole_floats = 0;
  {
    std::vector<int64_t> area(static_cast<size_t>(p.input.count), 0);
    for (int r = 0; r < p.num_regions; ++r)
      if (small[r]) area[static_cast<size_t>(p.regions[r].map)] += int64_t{p.regions[r].h} * p.regions[r].w;
    for (int m = 0; m < p.input.count; ++m) {
      const int64_t hw = int64_t{p.input.height[m]} * p.input.width[m], need = blocks * hw * kLanes;
      const bool whole = area[static_cast<size_t>(m)] > hw && whole_floats + need <= kWholeMapFloats;
      if (whole) whole_at[static_cast<size_t>(m)] = whole_floats, whole_floats += need;
      whole_task[static_cast<size_t>(m) + 1] = whole_task[static_cast<size_t>(m)] + (whole ? blocks : 0);
    }
  }
  // Kept by the calling thread between calls (grown, never zeroed: every float read is written first).
  static thread_local FloatBuffer whole_buf;
  float* const whole = whole_floats > 0 ? whole_buf.get(static_cast<size_t>(whole_floats)) : nullptr;
  std::vector<char> whole_nan(static_cast<size_t>(whole_task.back()));
  if (whole_task.back() > 0)
    parallel_for(whole_task.back(), 1, [&](int64_t b, int64_t e) {
      int m = static_cast<int>(std::upper_bound(whole_task.begin(), whole_task.end(), b) - whole_task.begin()) - 1;
      for (int64_t t = b; t < e; ++t) {
        while (t >= whole_task[static_cast<size_t>(m) + 1]) ++m;
        const int64_t k = t - whole_task[static_cast<size_t>(m)], H = p.input.height[m], W = p.input.width[m];
        const int c0 = static_cast<int>(k * kLanes), cb = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
        whole_nan[static_cast<size_t>(t)] = interleave_block(isa, input + p.input.offset[m] + c0 * H * W, H * W, W, cb, static_cast<int>(H),
                                                             static_cast<int>(W), whole + whole_at[static_cast<size_t>(m)] + k * H * W * kLanes);
      }
    });
  parallel_for(first_task.back(), 4, [&](int64_t b, int64_t e) {
    std::vector<float> acc(static_cast<size_t>(maxw));
    // The interleave buffer (every element it reads is written first): kept by each thread, not
    // allocated and zeroed per call (up to 1 MiB: most of a small call's time).
    static thread_local FloatBuffer interleave, bins_out;
    float* const buf = interleave.get(static_cast<size_t>(max_area) * kLanes);
    float* const stage = bins_out.get(static_cast<size_t>(all_bins) * kLanes);
    BinTable bins;
    int r = static_cast<int>(std::upper_bound(first_task.begin(), first_task.end(), b) - first_task.begin()) - 1;
    for (int64_t t = b; t < e; ++t) {
      while (t >= first_task[r + 1]) ++r;
      const Region& g = p.regions[r];
      const int64_t H = p.input.height[g.map], W = p.input.width[g.map];
      const float* origin = input + p.input.offset[g.map] + g.y0 * W + g.x0;
      const BinTable& bt = bins.get(p, g.h, g.w);
      const int64_t k = t - first_task[r];
      if (small[r] && whole_at[static_cast<size_t>(g.map)] >= 0) {
        const int c0 = static_cast<int>(k * kLanes), cb = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
        const float* ibuf = whole + whole_at[static_cast<size_t>(g.map)] + (k * H * W + g.y0 * W + g.x0) * kLanes;
        const bool nan = whole_nan[static_cast<size_t>(whole_task[static_cast<size_t>(g.map)] + k)] != 0;
        if (p.pool == kPoolMax)
          pool_interleaved_block<kPoolMax>(isa, p, bt, ibuf, W, nan, cb, c0, output + r * F, stage);
        else
          pool_interleaved_block<kPoolAvg>(isa, p, bt, ibuf, W, nan, cb, c0, output + r * F, stage);
      } else if (small[r]) {
        const int c0 = static_cast<int>(k * kLanes), cb = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
        // The block two ahead in this region, to prefetch (W2, 8 alternating runs: median 1.06 ms a
        // block ahead, 0.95 two ahead, 0.97 three, 1.27 none).
        const int64_t ahead = c0 + 2 * kLanes < C ? 2 * kLanes * H * W : 0;
        if (p.pool == kPoolMax)
          pool_channel_block<kPoolMax>(isa, p, bt, origin + c0 * H * W, H * W, W, cb, c0, output + r * F, buf, stage, ahead);
        else
          pool_channel_block<kPoolAvg>(isa, p, bt, origin + c0 * H * W, H * W, W, cb, c0, output + r * F, buf, stage, ahead);
      } else {
        const int c = static_cast<int>(k);
        const float* plane = origin + c * H * W;
        if (p.pool == kPoolMax && has_nan(plane, W, g.h, g.w))
          pool_plane<kPoolMax>(p, bt, plane, W, c, output + r * F, acc.data());
        else if (p.pool == kPoolMax)
          pool_plane<kPoolMaxNoNan>(p, bt, plane, W, c, output + r * F, acc.data());
        else
          pool_plane<kPoolAvg>(p, bt, origin + c * H * W, W, c, output + r * F, acc.data());
      }
    }
  });
  return Status::Ok();
}

Status spp_backward(const SppProblem& p, const float* input, const float* grad_out, float* grad_in) {
  const int64_t C = p.input.channels, F = p.features();
  parallel_for(p.input.total, int64_t{1} << 16, [&](int64_t b, int64_t e) {
    std::memset(grad_in + b, 0, static_cast<size_t>(e - b) * sizeof(float));
  });
  // Regions grouped by map, so that a task owns one (map, channel) plane of grad_in: no races,
  // and the same summation order whatever the thread count.
  std::vector<std::vector<int>> by_map(static_cast<size_t>(p.input.count));
  for (int r = 0; r < p.num_regions; ++r) by_map[static_cast<size_t>(p.regions[r].map)].push_back(r);
  const int64_t tasks = static_cast<int64_t>(p.input.count) * C;
  parallel_for(tasks, 16, [&](int64_t b, int64_t e) {
    BinTable bins;
    for (int64_t t = b; t < e; ++t) {
      const int m = static_cast<int>(t / C), c = static_cast<int>(t % C);
      const int64_t H = p.input.height[m], W = p.input.width[m];
      const int64_t plane_off = p.input.offset[m] + c * H * W;
      for (int r : by_map[static_cast<size_t>(m)]) {
        const Region& g = p.regions[r];
        const float* x = input + plane_off + g.y0 * W + g.x0;
        float* dx = grad_in + plane_off + g.y0 * W + g.x0;
        const BinTable& bt = bins.get(p, g.h, g.w);
        int64_t level_base = 0;
        int lb = 0;
        for (int l = 0; l < p.num_levels; ++l) {
          const int n = p.levels[l];
          const float* go = grad_out + r * F + level_base + static_cast<int64_t>(c) * n * n;
          for (int i = 0; i < n; ++i) {
            const BinRange ry = bt.y[lb + i];
            for (int j = 0; j < n; ++j) {
              const BinRange rx = bt.x[lb + j];
              const float gv = go[i * n + j];
              if (p.pool == kPoolMax) {
                int64_t best = ry.start * W + rx.start;
                float bv = x[best];
                for (int y = ry.start; y < ry.end && bv == bv; ++y)
                  for (int xx = rx.start; xx < rx.end; ++xx) {
                    const float v = x[y * W + xx];
                    if (v > bv || v != v) {
                      bv = v;
                      best = y * W + xx;
                      if (v != v) break;  // the first NaN takes the gradient
                    }
                  }
                dx[best] += gv;
              } else {
                const float share = gv / static_cast<float>((ry.end - ry.start) * (rx.end - rx.start));
                for (int y = ry.start; y < ry.end; ++y)
                  for (int xx = rx.start; xx < rx.end; ++xx) dx[y * W + xx] += share;
              }
            }
          }
          level_base += C * n * n;
          lb += n;
        }
      }
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
