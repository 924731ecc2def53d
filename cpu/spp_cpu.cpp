// SPP on the CPU: one task per (region, channel) plane, all levels computed while the plane is
// in cache, so each input element comes from memory once. Per bin row, a vectorised column
// reduction over the rows of the bin, then a short horizontal reduction per bin.
#include <cmath>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "sppnet/spp.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SPP_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SPP_ISA_CLONES
#endif

namespace sppnet {
namespace cpu {
namespace {

// NaN-propagating max, as PyTorch's pooling: a NaN anywhere in a bin makes the bin NaN.
inline float nan_max(float m, float v) { return ((v > m) | (v != v)) ? v : m; }

// acc[x] = reduce over rows [y0, y1) of plane[y * stride + x], for x in [0, w).
SPP_ISA_CLONES
void column_max(const float* plane, int64_t stride, int y0, int y1, int w, float* __restrict acc) {
  const float* row = plane + y0 * stride;
  for (int x = 0; x < w; ++x) acc[x] = row[x];
  for (int y = y0 + 1; y < y1; ++y) {
    row = plane + y * stride;
    for (int x = 0; x < w; ++x) acc[x] = nan_max(acc[x], row[x]);
  }
}

SPP_ISA_CLONES
void column_sum(const float* plane, int64_t stride, int y0, int y1, int w, float* __restrict acc) {
  const float* row = plane + y0 * stride;
  for (int x = 0; x < w; ++x) acc[x] = row[x];
  for (int y = y0 + 1; y < y1; ++y) {
    row = plane + y * stride;
    for (int x = 0; x < w; ++x) acc[x] += row[x];
  }
}

// All levels of one (region, channel) plane. out points at this region's output row.
void pool_plane(const SppProblem& p, const float* plane, int64_t stride, int h, int w, int c,
                float* out, float* acc) {
  const int64_t C = p.input.channels;
  int64_t level_base = 0;
  for (int l = 0; l < p.num_levels; ++l) {
    const int n = p.levels[l];
    float* o = out + level_base + static_cast<int64_t>(c) * n * n;
    for (int i = 0; i < n; ++i) {
      const BinRange ry = bin_range(p.rule, i, n, h);
      if (p.pool == kPoolMax)
        column_max(plane, stride, ry.start, ry.end, w, acc);
      else
        column_sum(plane, stride, ry.start, ry.end, w, acc);
      for (int j = 0; j < n; ++j) {
        const BinRange rx = bin_range(p.rule, j, n, w);
        float v = acc[rx.start];
        if (p.pool == kPoolMax) {
          for (int x = rx.start + 1; x < rx.end; ++x) v = nan_max(v, acc[x]);
        } else {
          for (int x = rx.start + 1; x < rx.end; ++x) v += acc[x];
          v /= static_cast<float>((ry.end - ry.start) * (rx.end - rx.start));
        }
        o[i * n + j] = v;
      }
    }
    level_base += C * n * n;
  }
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
  const int64_t tasks = static_cast<int64_t>(p.num_regions) * C;
  parallel_for(tasks, 16, [&](int64_t b, int64_t e) {
    std::vector<float> acc(static_cast<size_t>(maxw));
    for (int64_t t = b; t < e; ++t) {
      const int r = static_cast<int>(t / C), c = static_cast<int>(t % C);
      const Region& g = p.regions[r];
      const int64_t H = p.input.height[g.map], W = p.input.width[g.map];
      const float* plane = input + p.input.offset[g.map] + c * H * W + g.y0 * W + g.x0;
      pool_plane(p, plane, W, g.h, g.w, c, output + r * F, acc.data());
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
    for (int64_t t = b; t < e; ++t) {
      const int m = static_cast<int>(t / C), c = static_cast<int>(t % C);
      const int64_t H = p.input.height[m], W = p.input.width[m];
      const int64_t plane_off = p.input.offset[m] + c * H * W;
      for (int r : by_map[static_cast<size_t>(m)]) {
        const Region& g = p.regions[r];
        const float* x = input + plane_off + g.y0 * W + g.x0;
        float* dx = grad_in + plane_off + g.y0 * W + g.x0;
        int64_t level_base = 0;
        for (int l = 0; l < p.num_levels; ++l) {
          const int n = p.levels[l];
          const float* go = grad_out + r * F + level_base + static_cast<int64_t>(c) * n * n;
          for (int i = 0; i < n; ++i) {
            const BinRange ry = bin_range(p.rule, i, n, g.h);
            for (int j = 0; j < n; ++j) {
              const BinRange rx = bin_range(p.rule, j, n, g.w);
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
        }
      }
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
