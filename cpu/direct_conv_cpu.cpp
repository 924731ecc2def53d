// Direct convolution for the CPU's conv2d forward on AVX2: no im2col.
//
// The im2col path writes every input element kernel_h x kernel_w times into packed panels and then
// multiplies them (googlenet at 224: ~4 ms of im2col in ~40 ms on one Zen 3 core, and its 3x3
// convs at 80-88 GFLOP/s against onnxruntime's 92-97). Here a tile is 6 output pixels x 16 output
// channels (12 ymm accumulators): for each k = (c, i, j) of the K = cin x kh x kw products, the 16
// filters' weights are two loads from filters packed once ([cout / 16][K][16], kept in the
// layer's filter cache between calls), and each pixel's input element is a broadcast straight from
// the map: the pixel's window origin plus k's offset within the window (c x plane + i x dh x row +
// j x dw), so any stride and dilation is a table of offsets. Padding: the maps are copied into
// zero-bordered planes first (a copy of the input, 1/9 of what im2col writes for a 3x3). The tile's
// 6 x 16 sums are stored transposed: pixel r of channel m at its map's [m][oy][ox].
//
// A tile never spans two maps (each map's planes have their own size, so their own offsets);
// a map's last tile may have fewer than 6 pixels. Threads claim (map, run of tiles, run of filter
// panels) tasks; each sum runs over k in order, the same for every thread count.
#include "direct_conv_cpu.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "isa.h"
#include "parallel.h"
#include "vec.h"

namespace sppnet {
namespace cpu {
namespace {

constexpr int kPix = 6;   // output pixels a tile
constexpr int kCh = 16;   // output channels a tile (a filter panel)
constexpr int kGroup = 16;  // tiles a task takes (96 pixels: their input rows stay in L2 while the panels pass)
constexpr int32_t kCacheValid = 0x54435244;  // "DRCT"
constexpr int64_t kCacheHeader = 16;          // floats: [valid, cin, cout, kh, kw, unused...], keeps the panels 64-byte aligned

int64_t taps(const Conv2dParams& p) { return int64_t{p.in_channels} * p.kernel_h * p.kernel_w; }
int64_t panels_of(const Conv2dParams& p) { return (p.out_channels + kCh - 1) / kCh; }
int64_t packed_floats(const Conv2dParams& p) { return panels_of(p) * taps(p) * kCh; }

// Filters [cout][K] -> panels [cout / 16][K][16], channels past cout zero.
void pack_filters(const Conv2dParams& p, const float* w, float* dst) {
  const int64_t K = taps(p);
  parallel_for(panels_of(p), 1, [&](int64_t a, int64_t b) {
    for (int64_t q = a; q < b; ++q)
      for (int l = 0; l < kCh; ++l) {  // each filter read in order
        const int64_t m = q * kCh + l;
        float* d = dst + q * K * kCh + l;
        for (int64_t k = 0; k < K; ++k) d[k * kCh] = m < p.out_channels ? w[m * K + k] : 0.f;
      }
  });
}

// Where a map's input is read from: its (padded) planes, their size and row length.
struct MapIn {
  const float* base;
  int64_t plane;
  int64_t row;
};

#ifdef SPP_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
// R pixels (px[r]: each one's window origin) x 16 channels over K products (off[k] from the
// origin), weights wp [K][16]; bias16 the panel's 16 biases. Pixel r's channel m goes to
// yo[r] + m * plane, for m < mvalid.
template <int R>
void tile(int64_t K, const float* const* px, const int32_t* off, const float* wp, const float* bias16, float* const* yo, int64_t plane,
          int mvalid, bool relu) {
  __m256 c[R][2];
  const __m256 b0 = _mm256_loadu_ps(bias16), b1 = _mm256_loadu_ps(bias16 + 8);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) c[r][0] = b0, c[r][1] = b1;
  const float* p[kPix];
#pragma GCC unroll 6
  for (int r = 0; r < kPix; ++r) p[r] = px[r < R ? r : 0];
  for (int64_t k = 0; k < K; ++k) {
    const int64_t o = off[k];
    const __m256 w0 = _mm256_loadu_ps(wp + k * kCh), w1 = _mm256_loadu_ps(wp + k * kCh + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(p[r] + o);
      c[r][0] = _mm256_fmadd_ps(a, w0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(a, w1, c[r][1]);
    }
  }
  alignas(32) float t[kPix][kCh];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) _mm256_store_ps(t[r], c[r][0]), _mm256_store_ps(t[r] + 8, c[r][1]);
  for (int r = 0; r < R; ++r) {
    float* y = yo[r];
    if (relu)
      for (int m = 0; m < mvalid; ++m) y[m * plane] = relu1(t[r][m]);
    else
      for (int m = 0; m < mvalid; ++m) y[m * plane] = t[r][m];
  }
}

// The tile for R (1-6) pixels.
void run_tile(int R, int64_t K, const float* const* px, const int32_t* off, const float* wp, const float* bias16, float* const* yo,
              int64_t plane, int mvalid, bool relu) {
  switch (R) {
    case 6: return tile<6>(K, px, off, wp, bias16, yo, plane, mvalid, relu);
    case 5: return tile<5>(K, px, off, wp, bias16, yo, plane, mvalid, relu);
    case 4: return tile<4>(K, px, off, wp, bias16, yo, plane, mvalid, relu);
    case 3: return tile<3>(K, px, off, wp, bias16, yo, plane, mvalid, relu);
    case 2: return tile<2>(K, px, off, wp, bias16, yo, plane, mvalid, relu);
    default: return tile<1>(K, px, off, wp, bias16, yo, plane, mvalid, relu);
  }
}
#pragma GCC pop_options
#endif

}  // namespace

bool direct_applies(const Conv2dParams& p, const RaggedView& out) {
#ifdef SPP_X86
  static const Isa isa = detect_isa();
  if (isa != Isa::kAvx2) return false;  // AVX-512: its 12 x 32 GEMM tile (not measured against this)
  if (p.groups != 1 || int64_t{p.kernel_h} * p.kernel_w < 2 || taps(p) < 64) return false;
  // A stride above 1 on larger maps: where the products a sum are few (googlenet's and ZF-5's
  // conv1, 147: im2col's strided gathers cost most there); ZF-5's conv2 (2,400) on a 387x412 image
  // measured ~5% slower than im2col.
  if (p.stride_h > 1 || p.stride_w > 1)
    if (taps(p) <= 512) return true;
  for (int i = 0; i < out.count; ++i)
    if (int64_t{out.height[i]} * out.width[i] > 1024) return false;
  return true;
#else
  (void)p, (void)out;
  return false;
#endif
}

bool direct_fits(const Conv2dParams& p, const RaggedView& in) {
  for (int i = 0; i < in.count; ++i) {
    const int64_t plane = (int64_t{in.height[i]} + 2 * p.pad_h) * (int64_t{in.width[i]} + 2 * p.pad_w);
    if (plane * p.in_channels >= (int64_t{1} << 31)) return false;
  }
  return true;
}

// The packing rounded up to 512 floats: the Winograd cache of a layer is 16 + 256 x (an odd
// number) floats, so the two never have the same size, and a model whose layer changes path with
// the batch (Winograd needs 48 tiles in the batch) never hands one path's cache to the other.
int64_t direct_cache_floats(const Conv2dParams& p) { return kCacheHeader + (packed_floats(p) + 511) / 512 * 512; }

Status conv2d_direct(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                     const RaggedView& out, float* y) {
#ifdef SPP_X86
  const int cin = p.in_channels, cout = p.out_channels;
  const int64_t K = taps(p), panels = panels_of(p);
  // The packed filters: from the caller's cache when it holds them, else packed here (into the
  // cache when there is one, marking it valid after).
  static thread_local FloatBuffer wbuf, xbuf, bbuf;
  const bool cached = p.filter_cache && p.filter_cache_len == direct_cache_floats(p);
  int32_t* header = cached ? reinterpret_cast<int32_t*>(p.filter_cache) : nullptr;
  const bool hit = cached && __atomic_load_n(header, __ATOMIC_ACQUIRE) == kCacheValid && header[1] == cin && header[2] == cout &&
                   header[3] == p.kernel_h && header[4] == p.kernel_w;
  float* W = cached ? p.filter_cache + kCacheHeader : wbuf.get(static_cast<size_t>(packed_floats(p)));
  if (!hit) {
    pack_filters(p, weight, W);
    if (cached) {
      header[1] = cin, header[2] = cout, header[3] = p.kernel_h, header[4] = p.kernel_w;
      __atomic_store_n(header, kCacheValid, __ATOMIC_RELEASE);
    }
  }
  // The biases by panel, 16 each (0 past cout).
  float* B = bbuf.get(static_cast<size_t>(panels * kCh));
  for (int64_t m = 0; m < panels * kCh; ++m) B[m] = bias && m < cout ? bias[m] : 0.f;

  // The maps' inputs: in place, or copied into zero-bordered planes.
  std::vector<MapIn> maps(static_cast<size_t>(in.count));
  const bool padded = p.pad_h > 0 || p.pad_w > 0;
  if (padded) {
    std::vector<int64_t> at(static_cast<size_t>(in.count) + 1, 0);
    for (int i = 0; i < in.count; ++i) {
      const int64_t Hp = int64_t{in.height[i]} + 2 * p.pad_h, Wp = int64_t{in.width[i]} + 2 * p.pad_w;
      at[static_cast<size_t>(i) + 1] = at[static_cast<size_t>(i)] + cin * Hp * Wp;
    }
    float* xp = xbuf.get(static_cast<size_t>(std::max<int64_t>(1, at.back())));
    for (int i = 0; i < in.count; ++i) {
      const int64_t Wp = int64_t{in.width[i]} + 2 * p.pad_w;
      maps[static_cast<size_t>(i)] = {xp + at[static_cast<size_t>(i)], (int64_t{in.height[i]} + 2 * p.pad_h) * Wp, Wp};
    }
    parallel_for(int64_t{in.count} * cin, 8, [&](int64_t a, int64_t b) {
      for (int64_t t = a; t < b; ++t) {
        const int i = static_cast<int>(t / cin), c = static_cast<int>(t % cin);
        const int H = in.height[i], Wd = in.width[i];
        const MapIn& m = maps[static_cast<size_t>(i)];
        float* d = const_cast<float*>(m.base) + c * m.plane;
        const float* s = x + in.offset[i] + int64_t{c} * H * Wd;
        std::fill(d, d + p.pad_h * m.row, 0.f);
        for (int yy = 0; yy < H; ++yy) {
          float* r = d + (yy + p.pad_h) * m.row;
          std::fill(r, r + p.pad_w, 0.f);
          std::memcpy(r + p.pad_w, s + int64_t{yy} * Wd, sizeof(float) * Wd);
          std::fill(r + p.pad_w + Wd, r + m.row, 0.f);
        }
        std::fill(d + (H + p.pad_h) * m.row, d + m.plane, 0.f);
      }
    });
  } else {
    for (int i = 0; i < in.count; ++i)
      maps[static_cast<size_t>(i)] = {x + in.offset[i], int64_t{in.height[i]} * in.width[i], int64_t{in.width[i]}};
  }

  // k's offset within a window of a map's planes: one table per distinct plane shape (a ragged
  // batch of many maps of few sizes keeps few), table[i] the one of map i.
  std::vector<int32_t> offs;
  const std::vector<size_t> table = tables_by_key(
      in.count, offs, [&](int i) { return std::make_pair(maps[static_cast<size_t>(i)].plane, maps[static_cast<size_t>(i)].row); },
      [&](int i, std::vector<int32_t>& o) {
        const MapIn& m = maps[static_cast<size_t>(i)];
        for (int c = 0; c < cin; ++c)
          for (int ki = 0; ki < p.kernel_h; ++ki)
            for (int kj = 0; kj < p.kernel_w; ++kj)
              o.push_back(static_cast<int32_t>(c * m.plane + int64_t{ki} * p.dilation_h * m.row + int64_t{kj} * p.dilation_w));
      });
  // Tasks: (map, run of tiles, run of panels). A map's tiles in groups of about kGroup, their
  // count a multiple of the threads (equal shares of one map); a map of fewer tiles than threads
  // splits its panels instead. Claimed one at a time, so maps of different sizes share out too.
  struct Task {
    int map;
    int64_t t0, t1, q0, q1;
  };
  std::vector<Task> tasks;
  const int64_t T = num_threads();
  for (int i = 0; i < in.count; ++i) {
    const int64_t tiles = (int64_t{out.height[i]} * out.width[i] + kPix - 1) / kPix;
    const int64_t g = std::min(tiles, ((tiles + kGroup - 1) / kGroup + T - 1) / T * T);
    const int64_t pc = g < T ? std::min(panels, T) : 1;
    for (int64_t j = 0; j < g; ++j)
      for (int64_t c = 0; c < pc; ++c) tasks.push_back({i, tiles * j / g, tiles * (j + 1) / g, panels * c / pc, panels * (c + 1) / pc});
  }
  const bool relu = p.relu != 0;
  parallel_tasks(static_cast<int64_t>(tasks.size()), [&](int64_t ti) {
    const Task& tk = tasks[static_cast<size_t>(ti)];
    const MapIn& m = maps[static_cast<size_t>(tk.map)];
    const int32_t* off = offs.data() + table[static_cast<size_t>(tk.map)];
    const int Wo = out.width[tk.map];
    const int64_t P = int64_t{out.height[tk.map]} * Wo;
    float* ymap = y + out.offset[tk.map];
    for (int64_t q = tk.q0; q < tk.q1; ++q) {
      const int mvalid = static_cast<int>(std::min<int64_t>(kCh, cout - q * kCh));
      const float* wq = W + q * K * kCh;
      for (int64_t t = tk.t0; t < tk.t1; ++t) {
        const int64_t n0 = t * kPix;
        const int R = static_cast<int>(std::min<int64_t>(kPix, P - n0));
        const float* px[kPix];
        float* yo[kPix];
        for (int r = 0; r < R; ++r) {
          const int64_t n = n0 + r, oy = n / Wo, ox = n % Wo;
          px[r] = m.base + oy * p.stride_h * m.row + ox * p.stride_w;
          yo[r] = ymap + q * kCh * P + n;
        }
        run_tile(R, K, px, off, wq, B + q * kCh, yo, P, mvalid, relu);
      }
    }
  });
  return Status::Ok();
#else
  (void)in, (void)x, (void)p, (void)weight, (void)bias, (void)out, (void)y;
  return Status::Error(Code::kInternal, "conv2d_direct: not built for this CPU");
#endif
}

}  // namespace cpu
}  // namespace sppnet
