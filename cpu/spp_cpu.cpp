// SPP on the CPU: one task per (region, channel) plane, all levels computed while the plane is
// in cache, so each input element comes from memory once. Per bin row, a vectorised column
// reduction over the rows of the bin, then a short horizontal reduction per bin.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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
struct BinTable {
  int h = -1, w = -1;
  std::vector<BinRange> y, x;  // level l's bins start at index sum(levels[0..l))
  const BinTable& get(const SppProblem& p, int hh, int ww) {
    if (hh == h && ww == w) return *this;
    h = hh;
    w = ww;
    y.clear();
    x.clear();
    for (int l = 0; l < p.num_levels; ++l)
      for (int i = 0; i < p.levels[l]; ++i) {
        y.push_back(bin_range(p.rule, i, p.levels[l], h));
        x.push_back(bin_range(p.rule, i, p.levels[l], w));
      }
    return *this;
  }
};

// All levels of one (region, channel) plane. out points at this region's output row.
template <int POOL>
void pool_plane(const SppProblem& p, const BinTable& bt, const float* plane, int64_t stride, int c, float* out, float* acc) {
  const int64_t C = p.input.channels;
  int64_t level_base = 0;
  int lb = 0;
  for (int l = 0; l < p.num_levels; ++l) {
    const int n = p.levels[l];
    float* o = out + level_base + static_cast<int64_t>(c) * n * n;
    for (int i = 0; i < n; ++i) {
      const BinRange ry = bt.y[lb + i];
      column_reduce<POOL>(plane, stride, ry.start, ry.end, bt.w, acc);
      for (int j = 0; j < n; ++j) {
        const BinRange rx = bt.x[lb + j];
        float v = row_reduce<POOL>(acc, rx.start, rx.end);
        if (POOL == kPoolAvg) v /= static_cast<float>((ry.end - ry.start) * (rx.end - rx.start));
        o[i * n + j] = v;
      }
    }
    level_base += C * n * n;
    lb += n;
  }
}

// Small regions: rows are too short for vectors along W, so vectorise across channels instead
// (cpu/spp_lanes.inc), compiled for AVX-512, AVX2 and portable code, chosen at run time.
constexpr int kLanes = 16;
constexpr int kSmallWidth = 40;   // regions narrower than this take the channel-vector path
constexpr int kSmallArea = 4096;  // ... if they fit the interleave buffer

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
  static V add(V m, const V& v) {
    for (int k = 0; k < kLanes; ++k) m.a[k] += v.a[k];
    return m;
  }
  static V div(V m, float d) {
    for (int k = 0; k < kLanes; ++k) m.a[k] /= d;
    return m;
  }
};
#include "spp_lanes.inc"
}  // namespace portable

#if defined(__GNUC__) && defined(__x86_64__)
#define SPP_HAVE_X86_LANES 1
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
  static V add(const V& m, const V& v) { return {_mm512_add_ps(m.a, v.a)}; }
  static V div(const V& m, float d) { return {_mm512_div_ps(m.a, _mm512_set1_ps(d))}; }
};
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
  static V add(const V& m, const V& v) { return {_mm256_add_ps(m.a, v.a), _mm256_add_ps(m.b, v.b)}; }
  static V div(const V& m, float d) {
    const __m256 q = _mm256_set1_ps(d);
    return {_mm256_div_ps(m.a, q), _mm256_div_ps(m.b, q)};
  }
};
#include "spp_lanes.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

template <int POOL>
void pool_channel_block(Isa isa, const SppProblem& p, const BinTable& bt, const float* base, int64_t cstride, int64_t rstride,
                        int cb, int c0, float* out, float* buf) {
#ifdef SPP_HAVE_X86_LANES
  if (isa == Isa::kAvx512) return avx512::pool_channel_block<POOL>(p, bt, base, cstride, rstride, cb, c0, out, buf);
  if (isa == Isa::kAvx2) return avx2::pool_channel_block<POOL>(p, bt, base, cstride, rstride, cb, c0, out, buf);
#endif
  portable::pool_channel_block<POOL>(p, bt, base, cstride, rstride, cb, c0, out, buf);
}

int max_region_width(const SppProblem& p) {
  int w = 1;
  for (int r = 0; r < p.num_regions; ++r) w = std::max(w, p.regions[r].w);
  return w;
}

}  // namespace

Status spp_forward(const SppProblem& p, const float* input, float* output) {
  const int64_t C = p.input.channels, F = p.features();
  const int maxw = max_region_width(p);
  const Isa isa = detect_isa();
  // A task is one channel of a large region, or a block of kLanes channels of a small one.
  const int64_t blocks = (C + kLanes - 1) / kLanes;
  std::vector<int64_t> first_task(static_cast<size_t>(p.num_regions) + 1, 0);
  std::vector<char> small(static_cast<size_t>(p.num_regions));
  for (int r = 0; r < p.num_regions; ++r) {
    const Region& g = p.regions[r];
    small[r] = g.w < kSmallWidth && int64_t{g.h} * g.w <= kSmallArea;
    first_task[r + 1] = first_task[r] + (small[r] ? blocks : C);
  }
  parallel_for(first_task.back(), 4, [&](int64_t b, int64_t e) {
    std::vector<float> acc(static_cast<size_t>(maxw));
    // The interleave buffer (every element it reads is written first): kept by each thread, not
    // allocated and zeroed per call (256 KiB: most of a small call's time).
    static thread_local FloatBuffer interleave;
    float* const buf = interleave.get(static_cast<size_t>(kSmallArea) * kLanes);
    BinTable bins;
    int r = static_cast<int>(std::upper_bound(first_task.begin(), first_task.end(), b) - first_task.begin()) - 1;
    for (int64_t t = b; t < e; ++t) {
      while (t >= first_task[r + 1]) ++r;
      const Region& g = p.regions[r];
      const int64_t H = p.input.height[g.map], W = p.input.width[g.map];
      const float* origin = input + p.input.offset[g.map] + g.y0 * W + g.x0;
      const BinTable& bt = bins.get(p, g.h, g.w);
      const int64_t k = t - first_task[r];
      if (small[r]) {
        const int c0 = static_cast<int>(k * kLanes), cb = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
        if (p.pool == kPoolMax)
          pool_channel_block<kPoolMax>(isa, p, bt, origin + c0 * H * W, H * W, W, cb, c0, output + r * F, buf);
        else
          pool_channel_block<kPoolAvg>(isa, p, bt, origin + c0 * H * W, H * W, W, cb, c0, output + r * F, buf);
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
