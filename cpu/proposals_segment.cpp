// Selective search, part 1 (include/sppnet/proposals.h): colour spaces, Felzenszwalb-Huttenlocher
// graph segmentation (as the authors' segment-image.h, with one graph on the colour distance, the
// form selective search's code uses) and each pixel's colour and texture histogram bins.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "sppnet/proposals.h"

namespace sppnet {
namespace cpu {

namespace {

// sRGB 8-bit value -> linear light, for Lab.
struct SrgbTable {
  float lin[256];
  SrgbTable() {
    for (int i = 0; i < 256; ++i) {
      const double c = i / 255.0;
      lin[i] = static_cast<float>(c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4));
    }
  }
};

inline float lab_f(float t) { return t > 0.008856f ? std::cbrt(t) : 7.787f * t + 16.f / 116.f; }

// Felzenszwalb's filter.h: the even half of a normalised Gaussian, ceil(4 sigma) + 1 taps.
std::vector<float> gauss_mask(double sigma) {
  sigma = std::max(sigma, 0.01);
  const int len = static_cast<int>(std::ceil(sigma * 4.0)) + 1;
  std::vector<float> m(static_cast<size_t>(len));
  for (int i = 0; i < len; ++i) m[i] = static_cast<float>(std::exp(-0.5 * (i / sigma) * (i / sigma)));
  float sum = 0;
  for (int i = 1; i < len; ++i) sum += std::fabs(m[i]);
  sum = 2 * sum + std::fabs(m[0]);
  for (int i = 0; i < len; ++i) m[i] /= sum;
  return m;
}

// Separable smoothing of one h x w plane (rows, then columns), borders clamped: filter.h's
// convolve_even twice, each output sum in the same order (taps from the centre out).
void smooth(const float* src, int32_t w, int32_t h, const std::vector<float>& m, float* dst, float* tmp) {
  const int len = static_cast<int>(m.size());
  for (int32_t y = 0; y < h; ++y) {
    const float* s = src + static_cast<int64_t>(y) * w;
    float* t = tmp + static_cast<int64_t>(y) * w;
    const auto clamped = [&](int32_t x) {
      float sum = m[0] * s[x];
      for (int i = 1; i < len; ++i) sum += m[i] * (s[std::max(x - i, 0)] + s[std::min(x + i, w - 1)]);
      t[x] = sum;
    };
    const int32_t lo = std::min(len - 1, w), hi = std::max(lo, w - len + 1);  // [lo, hi): no tap leaves the row
    for (int32_t x = 0; x < lo; ++x) clamped(x);
    for (int32_t x = lo; x < hi; ++x) t[x] = m[0] * s[x];
    for (int i = 1; i < len; ++i) {
      const float mi = m[i];
      for (int32_t x = lo; x < hi; ++x) t[x] += mi * (s[x - i] + s[x + i]);
    }
    for (int32_t x = hi; x < w; ++x) clamped(x);
  }
  for (int32_t y = 0; y < h; ++y) {
    float* d = dst + static_cast<int64_t>(y) * w;
    for (int32_t x = 0; x < w; ++x) d[x] = m[0] * tmp[static_cast<int64_t>(y) * w + x];
    for (int i = 1; i < len; ++i) {
      const float* up = tmp + static_cast<int64_t>(std::max(y - i, 0)) * w;
      const float* dn = tmp + static_cast<int64_t>(std::min(y + i, h - 1)) * w;
      for (int32_t x = 0; x < w; ++x) d[x] += m[i] * (up[x] + dn[x]);
    }
  }
}

// Union by rank with path compression; a root's threshold beside its parent link (UfNode), its
// size and rank apart (read only when two components join).
struct DisjointSet {
  UfNode* node;
  int32_t* size;
  uint8_t* rank;
  DisjointSet(int64_t n, float k, SegScratch* s)
      : node(s->node.get(static_cast<size_t>(n))), size(s->size.get(static_cast<size_t>(n))), rank(s->rank.get(static_cast<size_t>(n))) {
    for (int64_t i = 0; i < n; ++i) node[i] = UfNode{static_cast<int32_t>(i), k};
    std::fill(size, size + n, 1);
    std::fill(rank, rank + n, uint8_t{0});
  }
  int32_t find(int32_t x) {
    int32_t r = x;
    while (node[r].parent != r) r = node[r].parent;
    while (node[x].parent != r) {
      const int32_t nx = node[x].parent;
      node[x].parent = r;
      x = nx;
    }
    return r;
  }
  // Joins two roots; returns the new root.
  int32_t join(int32_t x, int32_t y) {
    if (rank[x] > rank[y]) {
      node[y].parent = x;
      size[x] += size[y];
      return x;
    }
    node[x].parent = y;
    size[y] += size[x];
    if (rank[x] == rank[y]) ++rank[y];
    return y;
  }
};

// keys[0, n) sorted by their high 32 bits, stably (LSD radix sort, three 11-bit passes, through
// buf); returns where the result is (keys or buf).
uint64_t* sort_keys(uint64_t* keys, uint64_t* buf, size_t n) {
  uint64_t* a = keys;
  uint64_t* b = buf;
  uint32_t cnt[2049];
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = 32 + 11 * pass;
    std::fill(cnt, cnt + 2049, 0u);
    for (size_t i = 0; i < n; ++i) ++cnt[((a[i] >> shift) & 2047) + 1];
    bool one = false;  // every key has the same digit: nothing to move
    for (int d = 1; d <= 2048; ++d) one = one || cnt[d] == n;
    if (one) continue;
    for (int d = 1; d <= 2048; ++d) cnt[d] += cnt[d - 1];
    for (size_t i = 0; i < n; ++i) b[cnt[(a[i] >> shift) & 2047]++] = a[i];
    std::swap(a, b);
  }
  return a;
}

}  // namespace

void convert_color(const uint8_t* rgb, int64_t n, int32_t space, float* out) {
  float* c0 = out;
  float* c1 = out + n;
  float* c2 = out + 2 * n;
  if (space == kSpaceRgb) {
    for (int64_t i = 0; i < n; ++i) {
      c0[i] = rgb[3 * i];
      c1[i] = rgb[3 * i + 1];
      c2[i] = rgb[3 * i + 2];
    }
  } else if (space == kSpaceHsv) {
    // H, S, V in [0, 1] (H of a grey pixel 0), scaled to [0, 255].
    for (int64_t i = 0; i < n; ++i) {
      const float r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
      const float mx = std::max(r, std::max(g, b)), mn = std::min(r, std::min(g, b)), d = mx - mn;
      float hue = 0;
      if (d > 0) {
        if (mx == r)
          hue = (g - b) / d;
        else if (mx == g)
          hue = 2 + (b - r) / d;
        else
          hue = 4 + (r - g) / d;
        hue /= 6;
        if (hue < 0) hue += 1;
      }
      c0[i] = std::min(hue * 255.f, 255.f);
      c1[i] = mx > 0 ? 255.f * d / mx : 0.f;
      c2[i] = mx;
    }
  } else {
    // CIE Lab of sRGB (D65), as OpenCV's 8-bit form: L * 255 / 100, a + 128, b + 128, clamped.
    static const SrgbTable table;  // const after construction (thread-safe initialisation)
    for (int64_t i = 0; i < n; ++i) {
      const float r = table.lin[rgb[3 * i]], g = table.lin[rgb[3 * i + 1]], b = table.lin[rgb[3 * i + 2]];
      const float X = (0.412453f * r + 0.357580f * g + 0.180423f * b) / 0.950456f;
      const float Y = 0.212671f * r + 0.715160f * g + 0.072169f * b;
      const float Z = (0.019334f * r + 0.119193f * g + 0.950227f * b) / 1.088754f;
      const float fx = lab_f(X), fy = lab_f(Y), fz = lab_f(Z);
      const float L = Y > 0.008856f ? 116.f * fy - 16.f : 903.3f * Y;
      c0[i] = std::min(std::max(L * 2.55f, 0.f), 255.f);
      c1[i] = std::min(std::max(500.f * (fx - fy) + 128.f, 0.f), 255.f);
      c2[i] = std::min(std::max(200.f * (fy - fz) + 128.f, 0.f), 255.f);
    }
  }
}

size_t sorted_edges(const float* planes, int32_t w, int32_t h, double sigma, SegScratch* sc, uint64_t* keys) {
  const int64_t n = static_cast<int64_t>(w) * h;
  float* sm = sc->smooth.get(static_cast<size_t>(3 * n));
  float* tmp = sc->tmp.get(static_cast<size_t>(n));
  const std::vector<float> mask = gauss_mask(sigma);
  for (int c = 0; c < 3; ++c) smooth(planes + c * n, w, h, mask, sm + c * n, tmp);
  const float* s0 = sm;
  const float* s1 = s0 + n;
  const float* s2 = s1 + n;
  // The 8-neighbour grid graph, edges in segment-image.h's order: per pixel (row-major), right,
  // down, down-right, up-right. Edge e = 4 p + direction; a key = (weight's bits << 32) | e, the
  // missing edges (past a border) keyed last with +inf. Sorted by weight, ties in edge order.
  const int64_t step[4] = {1, w, int64_t{w} + 1, 1 - int64_t{w}};
  constexpr uint64_t kNone = uint64_t{0x7f800000} << 32;
  for (int32_t y = 0; y < h; ++y) {
    const int64_t row = static_cast<int64_t>(y) * w;
    for (int d = 0; d < 4; ++d) {
      const bool ok_y = (d == 1 || d == 2) ? y < h - 1 : d == 3 ? y > 0 : true;
      const int32_t xend = d == 1 ? w : w - 1;
      const int64_t q0 = step[d];
      for (int32_t x = 0; x < w; ++x) {
        const int64_t p = row + x;
        uint64_t key = kNone | static_cast<uint64_t>(4 * p + d);
        if (ok_y && x < xend) {
          const float d0 = s0[p] - s0[p + q0], d1 = s1[p] - s1[p + q0], d2 = s2[p] - s2[p + q0];
          const float wt = std::sqrt(d0 * d0 + d1 * d1 + d2 * d2);
          uint32_t bits;
          std::memcpy(&bits, &wt, 4);
          key = (uint64_t{bits} << 32) | static_cast<uint64_t>(4 * p + d);
        }
        keys[static_cast<size_t>(4 * p + d)] = key;
      }
    }
  }
  const uint64_t* sorted = sort_keys(keys, sc->keys2.get(static_cast<size_t>(4 * n)), static_cast<size_t>(4 * n));
  if (sorted != keys) std::memcpy(keys, sorted, static_cast<size_t>(4 * n) * sizeof(uint64_t));
  size_t m = static_cast<size_t>(4 * n);
  while (m > 0 && (keys[m - 1] >> 32) == (kNone >> 32)) --m;
  return m;
}

void segment_edges(const uint64_t* keys, size_t m, int32_t w, int32_t h, double k, int32_t min_size, SegScratch* sc, int32_t* labels,
                   int32_t* count) {
  const int64_t n = static_cast<int64_t>(w) * h;
  const int64_t step[4] = {1, w, int64_t{w} + 1, 1 - int64_t{w}};
  const float kf = static_cast<float>(k);
  DisjointSet u(n, kf, sc);
  const auto ends = [&](uint64_t key, int32_t* a, int32_t* b) {
    const int64_t e = static_cast<int64_t>(key & 0xffffffffu);
    *a = static_cast<int32_t>(e >> 2);
    *b = static_cast<int32_t>((e >> 2) + step[e & 3]);
  };
  constexpr size_t kAhead = 16;  // edges: the nodes of edge j + kAhead are fetched while j is joined
  for (size_t j = 0; j < m; ++j) {
    int32_t a, b;
    if (j + kAhead < m) {
      ends(keys[j + kAhead], &a, &b);
      __builtin_prefetch(&u.node[a]);
      __builtin_prefetch(&u.node[b]);
    }
    ends(keys[j], &a, &b);
    a = u.find(a);
    b = u.find(b);
    if (a == b) continue;
    const uint32_t bits = static_cast<uint32_t>(keys[j] >> 32);
    float wt;
    std::memcpy(&wt, &bits, 4);
    if (wt <= u.node[a].thr && wt <= u.node[b].thr) {
      a = u.join(a, b);
      u.node[a].thr = wt + kf / static_cast<float>(u.size[a]);
    }
  }
  // Components under min_size joined, in the same edge order. Only an edge touching a component
  // that is small now can join anything (components only grow): the others are skipped unread.
  uint8_t* small = sc->small.get(static_cast<size_t>(n));
  bool any = false;
  for (int64_t p = 0; p < n; ++p) {
    small[p] = u.size[u.find(static_cast<int32_t>(p))] < min_size;
    any = any || small[p];
  }
  for (size_t j = 0; any && j < m; ++j) {
    int32_t a, b;
    ends(keys[j], &a, &b);
    if (!small[a] && !small[b]) continue;
    a = u.find(a);
    b = u.find(b);
    if (a != b && (u.size[a] < min_size || u.size[b] < min_size)) u.join(a, b);
  }
  int32_t* id = sc->ids.get(static_cast<size_t>(n));
  std::fill(id, id + n, -1);
  int32_t next = 0;
  for (int64_t p = 0; p < n; ++p) {
    const int32_t r = u.find(static_cast<int32_t>(p));
    if (id[r] < 0) id[r] = next++;
    labels[p] = id[r];
  }
  *count = next;
}

void felzenszwalb(const float* planes, int32_t w, int32_t h, double sigma, double k, int32_t min_size, SegScratch* sc, int32_t* labels,
                  int32_t* count) {
  uint64_t* keys = sc->keys.get(static_cast<size_t>(4) * w * h);
  const size_t m = sorted_edges(planes, w, h, sigma, sc, keys);
  segment_edges(keys, m, w, h, k, min_size, sc, labels, count);
}

void pixel_bins(const float* planes, int32_t w, int32_t h, SegScratch* sc, uint8_t* colour, uint8_t* texture) {
  const int64_t n = static_cast<int64_t>(w) * h;
  for (int c = 0; c < 3; ++c) {
    const float* src = planes + c * n;
    for (int64_t p = 0; p < n; ++p) colour[3 * p + c] = static_cast<uint8_t>(std::min(24, std::max(0, static_cast<int>(src[p] * (25.f / 256.f)))));
  }
  // Gaussian derivatives (sigma 1: the smoothed plane's central differences) in 8 orientations,
  // o * 45 degrees: max(0, gx cos + gy sin); each (channel, orientation) binned over [0, its max].
  // Two sweeps of the gradients: the maxima, then the bins.
  const std::vector<float> mask = gauss_mask(1.0);
  float* sm = sc->smooth.get(static_cast<size_t>(n));
  float* tmp = sc->tmp.get(static_cast<size_t>(n));
  const float c45 = static_cast<float>(std::sqrt(0.5));
  for (int c = 0; c < 3; ++c) {
    smooth(planes + c * n, w, h, mask, sm, tmp);
    float mx[8] = {0, 0, 0, 0, 0, 0, 0, 0}, scale[8];
    for (int sweep = 0; sweep < 2; ++sweep) {
      for (int32_t y = 0; y < h; ++y) {
        const float* row = sm + static_cast<int64_t>(y) * w;
        const float* up = sm + static_cast<int64_t>(std::max(y - 1, 0)) * w;
        const float* dn = sm + static_cast<int64_t>(std::min(y + 1, h - 1)) * w;
        uint8_t* t = texture + 24 * static_cast<int64_t>(y) * w + 8 * c;
        for (int32_t x = 0; x < w; ++x) {
          const float gx = 0.5f * (row[std::min(x + 1, w - 1)] - row[std::max(x - 1, 0)]);
          const float gy = 0.5f * (dn[x] - up[x]);
          const float d[8] = {gx, c45 * (gx + gy), gy, c45 * (gy - gx), -gx, -c45 * (gx + gy), -gy, -c45 * (gy - gx)};
          if (sweep == 0) {
            for (int o = 0; o < 8; ++o) mx[o] = std::max(mx[o], d[o]);
          } else {
            for (int o = 0; o < 8; ++o) t[24 * x + o] = static_cast<uint8_t>(std::min(9, static_cast<int>(std::max(d[o], 0.f) * scale[o])));
          }
        }
      }
      for (int o = 0; o < 8; ++o) scale[o] = mx[o] > 0 ? 10.f / mx[o] : 0.f;
    }
  }
}

}  // namespace cpu
}  // namespace sppnet
