// Winograd F(2x2, 3x3) convolution for 3x3, stride-1, undilated, ungrouped layers (ZF-5's conv3-5):
// each 2x2 block of outputs from a 4x4 input tile with 16 multiplies per (input, output channel)
// pair instead of 36, so 2.25x fewer multiply-adds in the GEMMs (Lavin & Gray, 2015).
//
//   U_xi = (G g G^T)_xi    per (cout, cin): the 3x3 filter g to 4x4, xi = 0..15
//   V_xi = (B^T d B)_xi    per (cin, tile): the 4x4 input tile d (zero outside the map)
//   M_xi = U_xi . V_xi     16 GEMMs [cout x cin] . [cin x tiles], on the packed GEMM
//   y    = A^T M A         per (cout, tile): the 2x2 outputs (+ bias, ReLU), clipped at odd edges
//
// The tiles of every map of a ragged batch sit side by side in the GEMMs' N axis (one set of 16
// GEMMs per layer, as the im2col path does with its runs). The transforms use only +, - and x 0.5,
// so FP32 accuracy stays close to direct convolution's (tests hold it to the same tolerance).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "sppnet/layers.h"
#include "vec.h"
#include "winograd_cpu.h"

namespace sppnet {
namespace cpu {
namespace {

constexpr int NR = kGemmNR;
constexpr int64_t kWinogradMinTiles = 48;  // ZF-5 conv3-5 at 224: 49 tiles an image
// Fewer input or output channels than this: the transforms (per tile, in proportion to cin + cout)
// cost more than the GEMM (cin x cout) saves. Measured on Zen 5 with the filter cache, 2 threads
// (bench/RESULTS.md, "Winograd only with >= 160 channels"): 160->320 at 14x14 0.59 ms against im2col's
// 0.66; 128->192 at 28x28 1.49 against 1.40, 64->192 at 56x56 4.15 against 2.48, 96->256 at 27x27
// 1.59 against 1.23. The bound is settings().winograd_min_channels (settings.h: 160, or
// SPPNET_WINOGRAD_MIN_CHANNELS at the load; tests take the path on small layers that way).
// Above this many (cin, cout) pairs the transformed filters (16 floats each, 256 MiB here) are
// not worth their memory.
constexpr int64_t kWinogradMaxFilters = int64_t{1} << 22;
constexpr int64_t kChunkFloats = int64_t{1} << 24;  // V + M of one chunk of tiles: 64 MiB

// U[xi][co][ci] for co in [c0, c1): 16 input channels at a time as 16-lane vectors (the block's
// 16 x 9 weights are contiguous), so each of the 16 planes gets whole 64-byte stores.
template <int L>
inline void filter_lanes(const float* g, v16 (&f)[9]) {
  for (int k = 0; k < 9; ++k)
    for (int l = 0; l < 16; ++l) f[k][l] = l < L ? g[l * 9 + k] : 0.f;
}
SPP_ISA_CLONES
void filter_transform(const float* w, int cin, int c0, int c1, int64_t plane, float* U) {
  const v16 half = v16_splat(0.5f);
  for (int co = c0; co < c1; ++co)
    for (int ci = 0; ci < cin; ci += 16) {
      const int n = std::min(16, cin - ci);
      const float* g = w + (int64_t{co} * cin + ci) * 9;
      v16 f[9];
      if (n == 16)
        filter_lanes<16>(g, f);
      else
        for (int k = 0; k < 9; ++k)
          for (int l = 0; l < 16; ++l) f[k][l] = l < n ? g[l * 9 + k] : 0.f;
      v16 t[4][3];  // G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 of each column
      for (int j = 0; j < 3; ++j) {
        const v16 a = f[j], b = f[3 + j], c = f[6 + j];
        t[0][j] = a;
        t[1][j] = half * (a + b + c);
        t[2][j] = half * (a - b + c);
        t[3][j] = c;
      }
      float* u = U + int64_t{co} * cin + ci;
      v16 r[16];
      for (int i = 0; i < 4; ++i) {
        const v16 a = t[i][0], b = t[i][1], c = t[i][2];
        r[i * 4 + 0] = a;
        r[i * 4 + 1] = half * (a + b + c);
        r[i * 4 + 2] = half * (a - b + c);
        r[i * 4 + 3] = c;
      }
      if (n == 16)
        for (int xi = 0; xi < 16; ++xi) v16_store(u + xi * plane, r[xi]);
      else
        for (int xi = 0; xi < 16; ++xi)
          for (int l = 0; l < n; ++l) u[xi * plane + l] = r[xi][l];
    }
}

// Every tile of the batch, numbered map by map, row by row: its map and the top-left of its
// input window (may lie in the padding) and of its 2x2 outputs.
struct Tiles {
  int64_t count = 0;
  int pad_h = 0, pad_w = 0;
  const int32_t *map = nullptr, *iy = nullptr, *ix = nullptr;  // count entries each
};

// V_xi packed as the GEMM's B ([cin][tiles] in panels of NR columns), channels [c0, c1): 16 tiles
// at a time as vectors (each lane's 4x4 window read element by element, zero outside its map),
// stored as 16 consecutive columns of a panel row.
SPP_ISA_CLONES
void input_transform(const RaggedView& in, const float* x, const Tiles& tl, int c0, int c1, int64_t vsize, float* V) {
  const int cin = in.channels;
  for (int64_t t0 = 0; t0 < tl.count; t0 += 16) {
    const int n = static_cast<int>(std::min<int64_t>(16, tl.count - t0));
    for (int c = c0; c < c1; ++c) {
      v16 d[4][4];
      for (int l = 0; l < 16; ++l) {
        if (l >= n) {
          for (int r = 0; r < 4; ++r)
            for (int q = 0; q < 4; ++q) d[r][q][l] = 0.f;
          continue;
        }
        const int i = tl.map[t0 + l], y0 = tl.iy[t0 + l], x0 = tl.ix[t0 + l];
        const int H = in.height[i], W = in.width[i];
        const float* xc = x + in.offset[i] + int64_t{c} * H * W;
        if (y0 >= 0 && y0 + 4 <= H && x0 >= 0 && x0 + 4 <= W) {
          for (int r = 0; r < 4; ++r)
            for (int q = 0; q < 4; ++q) d[r][q][l] = xc[int64_t{y0 + r} * W + x0 + q];
        } else {
          for (int r = 0; r < 4; ++r)
            for (int q = 0; q < 4; ++q) {
              const int yy = y0 + r, xx = x0 + q;
              d[r][q][l] = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? xc[int64_t{yy} * W + xx] : 0.f;
            }
        }
      }
      // B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3; then the same on columns.
      v16 e[4][4];
      for (int q = 0; q < 4; ++q) {
        e[0][q] = d[0][q] - d[2][q];
        e[1][q] = d[1][q] + d[2][q];
        e[2][q] = d[2][q] - d[1][q];
        e[3][q] = d[1][q] - d[3][q];
      }
      float* v = V + (t0 / NR) * cin * NR + int64_t{c} * NR + t0 % NR;
      for (int r = 0; r < 4; ++r) {
        v16_store(v + (r * 4 + 0) * vsize, e[r][0] - e[r][2]);
        v16_store(v + (r * 4 + 1) * vsize, e[r][1] + e[r][2]);
        v16_store(v + (r * 4 + 2) * vsize, e[r][2] - e[r][1]);
        v16_store(v + (r * 4 + 3) * vsize, e[r][1] - e[r][3]);
      }
    }
  }
}

// The 2x2 outputs of output channel co at (oy, ox) of map i, directly (bias added, no ReLU);
// outputs past the map's edge are left as they are.
void direct_tile(const RaggedView& in, const float* x, const float* w, int cin, int pad_h, int pad_w, int i, int co, int oy, int ox, float b,
                 float (&v)[2][2]) {
  const int H = in.height[i], W = in.width[i];
  for (int r = 0; r < 2; ++r)
    for (int q = 0; q < 2; ++q) {
      float s = b;
      for (int ci = 0; ci < cin; ++ci) {
        const float* xc = x + in.offset[i] + int64_t{ci} * H * W;
        const float* g = w + (int64_t{co} * cin + ci) * 9;
        for (int ky = 0; ky < 3; ++ky) {
          const int yy = oy + r - pad_h + ky;
          if (yy < 0 || yy >= H) continue;
          for (int kx = 0; kx < 3; ++kx) {
            const int xx = ox + q - pad_w + kx;
            if (xx >= 0 && xx < W) s += xc[int64_t{yy} * W + xx] * g[ky * 3 + kx];
          }
        }
      }
      v[r][q] = s;
    }
}

// y = A^T M A per (cout, tile), + bias, ReLU, for output channels [c0, c1): 16 tiles at a time
// (16 consecutive columns of each M plane), each lane's 2x2 stored clipped to its map.
SPP_ISA_CLONES
void output_transform(const RaggedView& in, const float* x, const float* w, const RaggedView& out, bool relu, const Tiles& tl, const float* Mx,
                      int64_t T, int64_t mplane, const float* bias, int c0, int c1, float* y) {
  const int cin = in.channels;
  for (int co = c0; co < c1; ++co) {
    const float b = bias ? bias[co] : 0.f;
    for (int64_t t0 = 0; t0 < T; t0 += 16) {
      const int n = static_cast<int>(std::min<int64_t>(16, T - t0));
      const float* mrow = Mx + int64_t{co} * T + t0;
      v16 m[4][4];
      for (int xi = 0; xi < 16; ++xi) {
        if (n == 16) {
          m[xi / 4][xi % 4] = v16_load(mrow + xi * mplane);
        } else {
          v16 v = v16{};
          for (int l = 0; l < n; ++l) v[l] = mrow[xi * mplane + l];
          m[xi / 4][xi % 4] = v;
        }
      }
      // A^T m: rows m0 + m1 + m2, m1 - m2 - m3; then the same on columns.
      v16 a[2][4];
      for (int q = 0; q < 4; ++q) {
        a[0][q] = m[0][q] + m[1][q] + m[2][q];
        a[1][q] = m[1][q] - m[2][q] - m[3][q];
      }
      v16 o[2][2];
      for (int r = 0; r < 2; ++r) {
        o[r][0] = a[r][0] + a[r][1] + a[r][2] + b;
        o[r][1] = a[r][1] - a[r][2] - a[r][3] + b;
      }
      for (int l = 0; l < n; ++l) {
        const int i = tl.map[t0 + l];
        const int Ho = out.height[i], Wo = out.width[i];
        // The tile's outputs start where its window does, shifted by the padding.
        const int oy = tl.iy[t0 + l] + tl.pad_h, ox = tl.ix[t0 + l] + tl.pad_w;
        float* yc = y + out.offset[i] + int64_t{co} * Ho * Wo + int64_t{oy} * Wo + ox;
        float v[2][2] = {{o[0][0][l], o[0][1][l]}, {o[1][0][l], o[1][1][l]}};
        // A NaN or inf in a tile's 4x4 window reaches all four of its outputs through the
        // transforms (inf - inf), also those whose 3x3 window does not hold it: such a tile (and
        // one that overflowed) is computed directly, so non-finite values propagate as in a
        // direct convolution.
        if (!(std::isfinite(v[0][0]) && std::isfinite(v[0][1]) && std::isfinite(v[1][0]) && std::isfinite(v[1][1])))
          direct_tile(in, x, w, cin, tl.pad_h, tl.pad_w, i, co, oy, ox, b, v);
        for (int r = 0; r < 2 && oy + r < Ho; ++r) {
          yc[int64_t{r} * Wo] = relu ? relu1(v[r][0]) : v[r][0];
          if (ox + 1 < Wo) yc[int64_t{r} * Wo + 1] = relu ? relu1(v[r][1]) : v[r][1];
        }
      }
    }
  }
}

constexpr int32_t kCacheValid = 0x4F4E4957;  // "WINO"
constexpr int64_t kCacheHeader = 16;           // floats: [valid, cin, cout, unused...], keeps U 64-byte aligned
int64_t stagger(int64_t n) { return ((n + 15) / 16 | 1) * 16; }

// The cache's size for cin -> cout: the header, then 16 staggered planes.
int64_t cache_floats(int cin, int cout) { return kCacheHeader + 16 * stagger(int64_t{cout} * cin); }

}  // namespace

int64_t winograd_cache_floats(const Conv2dParams& p) { return cache_floats(p.in_channels, p.out_channels); }

bool winograd_applies(const Conv2dParams& p, const RaggedView& out) {
  if (!settings().winograd) return false;
  // Few channels: the transforms cost more than the GEMM saves. Few tiles: the filter transform
  // (16 x cout x cin floats written per call) outweighs the saving.
  if (!(p.groups == 1 && p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1 &&
        int64_t{p.in_channels} * p.out_channels <= kWinogradMaxFilters))
    return false;
  const int min_channels = settings().winograd_min_channels;
  if (p.in_channels < min_channels || p.out_channels < min_channels) return false;
  int64_t tiles = 0;
  for (int i = 0; i < out.count; ++i) tiles += int64_t{(out.height[i] + 1) / 2} * ((out.width[i] + 1) / 2);
  return tiles >= kWinogradMinTiles;
}

Status conv2d_winograd(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                       const RaggedView& out, float* y) {
  const int cin = p.in_channels, cout = p.out_channels;
  int64_t T = 0;
  for (int i = 0; i < in.count; ++i) T += int64_t{(out.height[i] + 1) / 2} * ((out.width[i] + 1) / 2);
  if (T == 0) return Status::Ok();
  std::vector<int32_t> tmap(static_cast<size_t>(T)), tiy(static_cast<size_t>(T)), tix(static_cast<size_t>(T));
  int64_t t = 0;
  for (int i = 0; i < in.count; ++i)
    for (int ty = 0; ty < (out.height[i] + 1) / 2; ++ty)
      for (int tx = 0; tx < (out.width[i] + 1) / 2; ++tx, ++t) {
        tmap[static_cast<size_t>(t)] = i;
        tiy[static_cast<size_t>(t)] = 2 * ty - p.pad_h;
        tix[static_cast<size_t>(t)] = 2 * tx - p.pad_w;
      }
  // Tiles in chunks whose V and M (16 x (cin + cout) floats a tile) stay within kChunkFloats, so
  // a large batch does not hold gigabytes of scratch (kept per thread between calls).
  // (SPPNET_WINOGRAD_CHUNK=N: N tiles, rounded up to whole panels; for tests.)
  int64_t chunk = std::max<int64_t>(NR, kChunkFloats / (16 * (int64_t{cin} + cout)) / NR * NR);
  if (settings().winograd_chunk > 0) chunk = (settings().winograd_chunk + NR - 1) / NR * NR;
  const int64_t TC = std::min(T, chunk);
  // The 16 planes of U, V and M are written (and read) 16 at a time, one element in each: a plane
  // stride that is a multiple of 4 KiB would put all 16 streams in one L1 set (ZF-5's conv4 U
  // took 4x its time that way), so each is padded to an odd number of 64-byte lines.
  const int64_t uplane = stagger(int64_t{cout} * cin), vsize = stagger(gemm_packed_size(TC, cin)), mplane = stagger(int64_t{cout} * TC);
  static thread_local FloatBuffer ubuf, vbuf, mbuf;
  // The transformed filters: from the caller's cache when it holds them, else computed (into the
  // cache when there is one, marking it valid after).
  const bool cached = p.filter_cache && p.filter_cache_len == cache_floats(cin, cout);
  int32_t* header = cached ? reinterpret_cast<int32_t*>(p.filter_cache) : nullptr;
  const bool hit = cached && __atomic_load_n(header, __ATOMIC_ACQUIRE) == kCacheValid && header[1] == cin && header[2] == cout;
  float* U = cached ? p.filter_cache + kCacheHeader : ubuf.get(static_cast<size_t>(16 * uplane));
  float* V = vbuf.get(static_cast<size_t>(16 * vsize));
  float* Mx = mbuf.get(static_cast<size_t>(16 * mplane));
  if (!hit) {
    parallel_for(cout, 8, [&](int64_t a, int64_t b) { filter_transform(weight, cin, static_cast<int>(a), static_cast<int>(b), uplane, U); });
    if (cached) {
      header[1] = cin, header[2] = cout;
      __atomic_store_n(header, kCacheValid, __ATOMIC_RELEASE);
    }
  }
  for (int64_t c0 = 0; c0 < T; c0 += chunk) {
    Tiles tl;
    tl.count = std::min(chunk, T - c0);
    tl.pad_h = p.pad_h, tl.pad_w = p.pad_w;
    tl.map = tmap.data() + c0, tl.iy = tiy.data() + c0, tl.ix = tix.data() + c0;
    const int64_t n = tl.count, panels = gemm_panels(n);
    // The last panel's columns past n stay zero (the GEMM reads them).
    if (n % NR)
      parallel_for(16, 1, [&](int64_t a, int64_t b) {
        for (int64_t xi = a; xi < b; ++xi) {
          float* last = V + xi * vsize + (panels - 1) * cin * NR;
          for (int64_t c = 0; c < cin; ++c)
            for (int64_t j = n % NR; j < NR; ++j) last[c * NR + j] = 0.f;
        }
      });
    parallel_for(cin, 4, [&](int64_t a, int64_t b) { input_transform(in, x, tl, static_cast<int>(a), static_cast<int>(b), vsize, V); });
    // 16 independent GEMMs, each on one thread.
    parallel_for(16, 1, [&](int64_t a, int64_t b) {
      for (int64_t xi = a; xi < b; ++xi) gemm_packed(cout, n, cin, U + xi * uplane, cin, V + xi * vsize, Mx + xi * mplane, n, nullptr, false, false);
    });
    parallel_for(cout, 8, [&](int64_t a, int64_t b) {
      output_transform(in, x, weight, out, p.relu, tl, Mx, n, mplane, bias, static_cast<int>(a), static_cast<int>(b), y);
    });
  }
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
