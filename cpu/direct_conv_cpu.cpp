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

#include "filter_cache.h"
#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "vec.h"

namespace sppnet {
namespace cpu {
namespace {

// A tile: kPix output pixels x kCh output channels (a filter panel). AVX2: 6 x 16 (12 ymm
// accumulators); AVX-512: 12 x 32 (24 zmm, the GEMM tile's shape). Decided once (detect_isa()).
constexpr int kMaxPix = 12, kMaxCh = 32;
constexpr int kGroupPixels = 96;  // pixels a task takes: their input rows stay in L2 while the panels pass
constexpr int32_t kCacheValid = 0x54435244;  // "DRCT"
constexpr int64_t kCacheHeader = 16;          // floats: [valid, cin, cout, kh, kw, unused...], keeps the panels 64-byte aligned

#ifdef SPP_X86
bool wide() {
  static const bool w = detect_isa() == Isa::kAvx512;
  return w;
}
#else
bool wide() { return false; }
#endif
[[maybe_unused]] int pix() { return wide() ? kMaxPix : 6; }
int lanes() { return wide() ? 32 : 16; }

int64_t taps(const Conv2dParams& p) { return int64_t{p.in_channels} * p.kernel_h * p.kernel_w; }
int64_t panels_of(const Conv2dParams& p) { return (p.out_channels + lanes() - 1) / lanes(); }
int64_t packed_floats(const Conv2dParams& p) { return panels_of(p) * taps(p) * lanes(); }

// Channels a block of the input's layout (see conv2d_direct): 1 on AVX2 (the maps' own planes),
// up to 16 on AVX-512 (16 channels innermost: the tile's broadcasts of 16 successive products
// read one cache line a pixel).
int block_channels(int cin) { return wide() ? std::min(16, cin) : 1; }

// The products of a sum in the order the tiles take them, as k = (c x kh + i) x kw + j of the
// filters' own layout: by block of channels, kernel row, kernel column, then channel within the
// block (AVX2: blocks of 1, so the filters' order).
std::vector<int32_t> product_order(const Conv2dParams& p) {
  const int cin = p.in_channels, bw = block_channels(cin), nb = (cin + bw - 1) / bw;
  std::vector<int32_t> k;
  k.reserve(static_cast<size_t>(taps(p)));
  for (int b = 0; b < nb; ++b)
    for (int i = 0; i < p.kernel_h; ++i)
      for (int j = 0; j < p.kernel_w; ++j)
        for (int c = b * bw; c < std::min(cin, (b + 1) * bw); ++c) k.push_back((c * p.kernel_h + i) * p.kernel_w + j);
  return k;
}

// Filters [cout][K] -> panels [cout / kCh][K][kCh] in product_order, channels past cout zero.
void pack_filters(const Conv2dParams& p, const float* w, float* dst) {
  const int64_t K = taps(p);
  const int kCh = lanes();
  const std::vector<int32_t> order = product_order(p);
  parallel_for(panels_of(p), 1, [&](int64_t a, int64_t b) {
    for (int64_t q = a; q < b; ++q)
      for (int l = 0; l < kCh; ++l) {
        const int64_t m = q * kCh + l;
        float* d = dst + q * K * kCh + l;
        for (int64_t k = 0; k < K; ++k) d[k * kCh] = m < p.out_channels ? w[m * K + order[static_cast<size_t>(k)]] : 0.f;
      }
  });
}

// A tile's sums t[r][m] (pixel r, channel m; rows kMaxCh floats apart) to the output: pixel r's
// channel m at y0 + r + m * plane (the tile's pixels are consecutive in their map).
[[maybe_unused]] void store_tile(const float (*t)[kMaxCh], int R, int mvalid, float* y0, int64_t plane, bool relu) {
  for (int m = 0; m < mvalid; ++m) {
    float* y = y0 + m * plane;
    if (relu)
      for (int r = 0; r < R; ++r) y[r] = relu1(t[r][m]);
    else
      for (int r = 0; r < R; ++r) y[r] = t[r][m];
  }
}

// Where a map's input is read from: its (padded) blocks of channels, a block's floats, a row's
// floats, a pixel's floats (the block's channels).
struct MapIn {
  const float* base;
  int64_t plane;
  int64_t row;
  int64_t pixel;
};

#ifdef SPP_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
// R pixels (px[r]: each one's window origin) x 16 channels over K products (off[k] from the
// origin), weights wp [K][16]; bias16 the panel's 16 biases. The sums to the output by store_tile.
template <int R>
void tile(int64_t K, const float* const* px, const int32_t* off, const float* wp, const float* bias16, float* y0, int64_t plane,
          int mvalid, bool relu) {
  constexpr int kCh = 16;
  __m256 c[R][2];
  const __m256 b0 = _mm256_loadu_ps(bias16), b1 = _mm256_loadu_ps(bias16 + 8);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) c[r][0] = b0, c[r][1] = b1;
  const float* p[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) p[r] = px[r < R ? r : 0];
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
  alignas(64) float t[kMaxPix][kMaxCh];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) _mm256_store_ps(t[r], c[r][0]), _mm256_store_ps(t[r] + 8, c[r][1]);
  store_tile(t, R, mvalid, y0, plane, relu);
}
#pragma GCC pop_options

// AVX-512: R pixels (<= 12) x 16 NV channels, weights wp [K][32] (a panel of 32; NV = 1 reads
// its first 16: a last panel of at most 16 channels). As the AVX2 tile otherwise. J > 0: the
// pixels are consecutive ones of at most two rows of input blocks of 16 channels (stride 1), the
// first J on px[0]'s row, the rest at the start of the next: two base registers with constant
// displacements (pixel r at 16 r floats from its base) instead of R pointers, which do not fit
// the 16 general registers with the loop's own (spilled to vector registers and moved back at
// every product: 7-10% of the tile's speed).
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
template <int R, int NV, int J>
void tile512(int64_t K, const float* const* px, const int32_t* off, const float* wp, const float* bias32, float* y0, int64_t plane,
             int mvalid, bool relu) {
  constexpr int kCh = 32;
  __m512 c[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) c[r][v] = _mm512_loadu_ps(bias32 + 16 * v);
  const float* p[kMaxPix];
  const float* qa = px[0];
  const float* qb = J > 0 && J < R ? px[J] - 16 * J : px[0];
  if constexpr (J == 0) {
#pragma GCC unroll 12
    for (int r = 0; r < kMaxPix; ++r) p[r] = px[r < R ? r : 0];
  }
  // Pixel r's input at product offset o.
  auto at = [&](int r, int64_t o) __attribute__((always_inline)) { return J == 0 ? p[r] + o : (r < J ? qa : qb) + o + 16 * r; };
  for (int64_t k = 0; k < K; ++k) {
    const int64_t o = off[k];
    // The filters 8 products ahead (prefetching the first and last pixels' inputs too, as until
    // 2026-11-28, cost 1-2%: googlenet's `Model.run` 12.8 -> 12.7 ms at 1x224, 45.6 -> 44.7 at
    // 4x224, four alternating pairs; they are in L1 or L2, written by the blocked copy just before).
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(wp + (k + 8) * kCh + 16 * v), _MM_HINT_T0);
    __m512 w[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_ps(wp + k * kCh + 16 * v);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(*at(r, o));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_fmadd_ps(a, w[v], c[r][v]);
    }
  }
  // Out transposed: channel m's R pixels are one gather from t (a column) and one masked store.
  alignas(64) float t[kMaxPix][kMaxCh];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm512_store_ps(t[r] + 16 * v, c[r][v]);
  const __mmask16 mk = static_cast<__mmask16>((1u << R) - 1);
  const __m512i col = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(kMaxCh));
  const __m512 zero = _mm512_setzero_ps();
  for (int m = 0; m < mvalid; ++m) {
    __m512 v = _mm512_mask_i32gather_ps(zero, mk, col, &t[0][m], 4);
    if (relu) v = _mm512_max_ps(zero, v);  // max(0, NaN) = NaN: the second operand wins
    _mm512_mask_storeu_ps(y0 + m * plane, mk, v);
  }
}

template <int R, int J = 0>
void tile512_of(int64_t K, const float* const* px, const int32_t* off, const float* wp, const float* bias32, float* y0, int64_t plane,
                int mvalid, bool relu) {
  if (mvalid > 16)
    tile512<R, 2, J>(K, px, off, wp, bias32, y0, plane, mvalid, relu);
  else
    tile512<R, 1, J>(K, px, off, wp, bias32, y0, plane, mvalid, relu);
}

void interleave_row16(const float* src, int64_t HW, int cw, int Wd, float* dst) {
  const __mmask16 mk = static_cast<__mmask16>((1u << cw) - 1);
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(HW)));
  for (int xx = 0; xx < Wd; ++xx) _mm512_storeu_ps(dst + 16 * xx, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, idx, src + xx, 4));
}
#pragma GCC pop_options

// The tile for R (1 to pix()) pixels.
void run_tile(int R, int64_t K, const float* const* px, const int32_t* off, const float* wp, const float* bias, float* y0, int64_t plane,
              int mvalid, bool relu, int split) {
  if (wide()) {
    // The two-base tile of R pixels split after `split` (1 to R), as a template argument.
    if (split > 0 && R == 12) return with_rows<12>(split, [&](auto j) { tile512_of<12, decltype(j)::value>(K, px, off, wp, bias, y0, plane, mvalid, relu); });
    if (split > 0 && R == 11) return with_rows<11>(split, [&](auto j) { tile512_of<11, decltype(j)::value>(K, px, off, wp, bias, y0, plane, mvalid, relu); });
    return with_rows<kMaxPix>(R, [&](auto r) { tile512_of<decltype(r)::value>(K, px, off, wp, bias, y0, plane, mvalid, relu); });
  }
  with_rows<6>(R, [&](auto r) { tile<decltype(r)::value>(K, px, off, wp, bias, y0, plane, mvalid, relu); });
}
#endif

// One row of Wd pixels of cw planes (HW floats apart) into pixels of bw floats (channels
// innermost, zeros past cw). AVX2 (bw = 1): a copy of the row; AVX-512 (bw = 16): a pixel's
// channels are one gather.
void interleave_row(const float* src, int64_t HW, int cw, int bw, int Wd, float* dst) {
  if (bw == 1) return static_cast<void>(std::memcpy(dst, src, sizeof(float) * Wd));
#ifdef SPP_X86
  if (bw == 16 && HW * 15 < (int64_t{1} << 31)) return interleave_row16(src, HW, cw, Wd, dst);
#endif
  for (int xx = 0; xx < Wd; ++xx, dst += bw) {
    for (int c = 0; c < cw; ++c) dst[c] = src[c * HW + xx];
    for (int c = cw; c < bw; ++c) dst[c] = 0.f;
  }
}

}  // namespace

bool direct_applies(const Conv2dParams& p, const RaggedView& out) {
#ifdef SPP_X86
  static const Isa isa = detect_isa();
  if (isa != Isa::kAvx2 && isa != Isa::kAvx512) return false;
  if (p.groups != 1 || int64_t{p.kernel_h} * p.kernel_w < 2 || taps(p) < 64) return false;
  // A stride above 1. AVX2: on larger maps too where the products a sum are few (googlenet's and
  // ZF-5's conv1, 147: the AVX2 im2col's strided gathers cost most there); ZF-5's conv2 (2,400)
  // on a 387x412 image measured ~5% slower than im2col. AVX-512: never (its im2col is not slow:
  // googlenet's conv1 the same either way, ZF-5's conv2 at 224 5% slower direct).
  if (p.stride_h > 1 || p.stride_w > 1) {
    if (isa == Isa::kAvx512) return false;
    if (taps(p) <= 512) return true;
  }
  // Maps of more than 1024 pixels: im2col + GEMM, except on AVX-512 where the GEMM would take K
  // in blocks (each block after the first reads and writes C again) or the filters are at most
  // 64 (im2col's share of the work is 1 / cout): vgg16's 64 -> 64 at 224 x 224 and 128 -> 128 /
  // 128 -> 256 at 112 / 56 0.89-0.92x the time, googlenet's 64 -> 192 at 56 x 56 (K = 576) 1.06x.
  const bool big_ok = isa == Isa::kAvx512 && (gemm_k_block(taps(p)) < taps(p) || p.out_channels <= 64);
  for (int i = 0; i < out.count; ++i)
    if (int64_t{out.height[i]} * out.width[i] > 1024 && !big_ok) return false;
  return true;
#else
  (void)p, (void)out;
  return false;
#endif
}

bool direct_fits(const Conv2dParams& p, const RaggedView& in) {
  for (int i = 0; i < in.count; ++i) {
    const int64_t plane = (int64_t{in.height[i]} + 2 * p.pad_h) * (int64_t{in.width[i]} + 2 * p.pad_w);
    const int bw = block_channels(p.in_channels);
    if (plane * ((p.in_channels + bw - 1) / bw * bw) >= (int64_t{1} << 31)) return false;
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
  // The packed filters: from the caller's cache when it holds them, else packed here.
  static thread_local FloatBuffer wbuf, xbuf, bbuf;
  float* W = cached_filters(p, direct_cache_floats(p), kCacheValid, kCacheHeader, packed_floats(p), wbuf, [&](float* d) { pack_filters(p, weight, d); });
  // The biases by panel, kCh each (0 past cout).
  const int kCh = lanes(), kPix = pix();
  float* B = bbuf.get(static_cast<size_t>(panels * kCh));
  for (int64_t m = 0; m < panels * kCh; ++m) B[m] = bias && m < cout ? bias[m] : 0.f;

  // The maps' inputs: in place (AVX2, no padding), or copied into zero-bordered blocks of bw
  // channels, [cin / bw][H + 2 ph][W + 2 pw][bw] (the last block narrower when bw does not divide
  // cin; its pixels keep bw floats).
  const int bw = block_channels(cin), nb = (cin + bw - 1) / bw;
  std::vector<MapIn> maps(static_cast<size_t>(in.count));
  const bool padded = p.pad_h > 0 || p.pad_w > 0;
  if (padded || bw > 1) {
    std::vector<int64_t> at(static_cast<size_t>(in.count) + 1, 0);
    for (int i = 0; i < in.count; ++i) {
      const int64_t Hp = int64_t{in.height[i]} + 2 * p.pad_h, Wp = int64_t{in.width[i]} + 2 * p.pad_w;
      at[static_cast<size_t>(i) + 1] = at[static_cast<size_t>(i)] + nb * Hp * Wp * bw;
    }
    float* xp = xbuf.get(static_cast<size_t>(std::max<int64_t>(1, at.back())));
    for (int i = 0; i < in.count; ++i) {
      const int64_t Wp = int64_t{in.width[i]} + 2 * p.pad_w;
      maps[static_cast<size_t>(i)] = {xp + at[static_cast<size_t>(i)], (int64_t{in.height[i]} + 2 * p.pad_h) * Wp * bw, Wp * bw, bw};
    }
    parallel_for(int64_t{in.count} * nb, 1, [&](int64_t a, int64_t b) {
      for (int64_t t = a; t < b; ++t) {
        const int i = static_cast<int>(t / nb), blk = static_cast<int>(t % nb);
        const int H = in.height[i], Wd = in.width[i], c0 = blk * bw, cw = std::min(cin - c0, bw);
        const MapIn& m = maps[static_cast<size_t>(i)];
        float* d = const_cast<float*>(m.base) + blk * m.plane;
        const float* s = x + in.offset[i] + int64_t{c0} * H * Wd;
        const int64_t HW = int64_t{H} * Wd;
        std::fill(d, d + p.pad_h * m.row, 0.f);
        for (int yy = 0; yy < H; ++yy) {
          float* r = d + (yy + p.pad_h) * m.row;
          std::fill(r, r + p.pad_w * bw, 0.f);
          interleave_row(s + int64_t{yy} * Wd, HW, cw, bw, Wd, r + p.pad_w * bw);
          std::fill(r + (p.pad_w + Wd) * bw, r + m.row, 0.f);
        }
        std::fill(d + (H + p.pad_h) * m.row, d + m.plane, 0.f);
      }
    });
  } else {
    for (int i = 0; i < in.count; ++i)
      maps[static_cast<size_t>(i)] = {x + in.offset[i], int64_t{in.height[i]} * in.width[i], int64_t{in.width[i]}, 1};
  }

  // k's offset within a window of a map's input, in product_order: one table per distinct plane
  // shape (a ragged batch of many maps of few sizes keeps few), table[i] the one of map i.
  std::vector<int32_t> offs;
  const std::vector<size_t> table = tables_by_key(
      in.count, offs, [&](int i) { return std::make_pair(maps[static_cast<size_t>(i)].plane, maps[static_cast<size_t>(i)].row); },
      [&](int i, std::vector<int32_t>& o) {
        const MapIn& m = maps[static_cast<size_t>(i)];
        for (int blk = 0; blk < nb; ++blk)
          for (int ki = 0; ki < p.kernel_h; ++ki)
            for (int kj = 0; kj < p.kernel_w; ++kj)
              for (int c = 0; c < std::min(bw, cin - blk * bw); ++c)
                o.push_back(static_cast<int32_t>(blk * m.plane + int64_t{ki} * p.dilation_h * m.row + int64_t{kj} * p.dilation_w * m.pixel + c));
      });
  // Tasks: (map, run of tiles, run of panels). A map's tiles in groups of about kGroupPixels, their
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
    const int64_t group = kGroupPixels / kPix;
    // AVX-512: a map of at most 32 tiles (googlenet's 14 x 14 and 7 x 7 maps) has its panels
    // split among the threads instead, each taking all the tiles: no thread waits on the odd tile
    // (7 x 7 is 5 tiles), and each reads only its share of the filters (`/tmp` bench of
    // conv2d_forward, input and filters out of L2, medians: 192 -> 384 and 160 -> 320 at 7 x 7
    // 0.34-0.39 -> 0.33 ms and 0.27-0.29 -> 0.25; 144 -> 288, 128 -> 256, 96 -> 208 at 14 x 14
    // 3-10% faster). AVX2 unmeasured, unchanged.
    const int64_t g = wide() && tiles <= 32 && panels >= T ? 1 : std::min(tiles, ((tiles + group - 1) / group + T - 1) / T * T);
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
    const bool two_rows = wide() && m.pixel == 16 && p.stride_w == 1;
    auto one = [&](int64_t q, int64_t t) {
      const int mvalid = static_cast<int>(std::min<int64_t>(kCh, cout - q * kCh));
      // The map's P pixels in `tiles` tiles of as even a size as can be (169 = 14 x 12 + 1 would
      // leave a tile of one pixel that streams the whole panel for it).
      const int64_t tiles = (P + kPix - 1) / kPix, n0 = P * t / tiles;
      const int R = static_cast<int>(P * (t + 1) / tiles - n0);
      const float* px[kMaxPix];
      for (int r = 0; r < R; ++r) {
        const int64_t n = n0 + r, oy = n / Wo, ox = n % Wo;
        px[r] = m.base + oy * p.stride_h * m.row + ox * p.stride_w * m.pixel;
      }
      // AVX-512 over blocks of 16 channels at stride 1: the pixels on the first row (split), the
      // rest on the next (tile512's J), when they span at most two rows.
      const int64_t first = Wo - n0 % Wo;
      const int split = two_rows && R - std::min<int64_t>(R, first) <= Wo ? static_cast<int>(std::min<int64_t>(R, first)) : 0;
      run_tile(R, K, px, off, W + q * K * kCh, B + q * kCh, ymap + q * kCh * P + n0, P, mvalid, relu, split);
    };
    // AVX-512: a tile across the panels, its input rows (blocks of 16 channels) kept in L1 while the
    // panels' filters come from L2 (googlenet's 28 x 28 3x3 convs 5-10% faster than panel by
    // panel); AVX2 as measured on Zen 3, a panel across the tiles.
    if (wide()) {
      for (int64_t t = tk.t0; t < tk.t1; ++t)
        for (int64_t q = tk.q0; q < tk.q1; ++q) one(q, t);
    } else {
      for (int64_t q = tk.q0; q < tk.q1; ++q)
        for (int64_t t = tk.t0; t < tk.t1; ++t) one(q, t);
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
