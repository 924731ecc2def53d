// Strided convolution on AVX-512 with output pixels in the vector lanes: no im2col, and no
// transposed stores.
//
// The im2col path writes every input element about kernel_h x kernel_w / stride^2 times into
// packed panels before its GEMM (a 7x7 conv at stride 2 on 3 channels: 147 products a sum, 7 MB
// of panels for googlenet's conv1 at 224), and the blocked direct tile (direct_conv_cpu.cpp)
// keeps channels in its lanes, so its sums leave through a gather and a masked store each
// (~950 cycles a tile: a third of a tile's time at 147 products). Here a vector is 16
// consecutive output pixels of one row, as the output lies: a tile is kVec such segments x kCh
// output channels (24 zmm sums); for each product k = (c, i, j) the segments' inputs are one
// unaligned load each and the kCh filters' weights one broadcast each, and each channel's sums
// go out as one (masked) store a segment, bias and ReLU applied.
//
// Stride s along a row: the input is first copied into zero-padded planes split by column
// phase, phase f of channel c holding padded columns f, f + s, f + 2s, ...; so output pixel ox
// reads, for kernel column j, element ox + (j x dw) / s of phase (j x dw) % s of its row:
// consecutive pixels read consecutive floats. Rows need no split (a row's offset is a multiple
// of the row length). A table gives each product's offset from the segment's origin.
//
// Sums run over k in the filters' own order (c, i, j), the same for every thread count and tile.
#include "lanes_conv_cpu.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "filter_cache.h"
#include "isa.h"
#include "parallel.h"
#include "vec.h"

namespace sppnet {
namespace cpu {
namespace {

constexpr int kVec = 3;                       // segments of 16 pixels a tile
constexpr int kCh = 8;                        // output channels a tile (a panel)
constexpr int32_t kCacheValid = 0x454e414c;  // "LANE"
constexpr int64_t kCacheHeader = 16;          // floats: [valid, cin, cout, kh, kw, unused...]
constexpr int64_t kSlack = 64;                // floats past the last plane: a segment's lanes past its row read there

int64_t taps(const Conv2dParams& p) { return int64_t{p.in_channels} * p.kernel_h * p.kernel_w; }
int64_t panels_of(const Conv2dParams& p) { return (p.out_channels + kCh - 1) / kCh; }
int64_t packed_floats(const Conv2dParams& p) { return panels_of(p) * taps(p) * kCh; }

// A map's phase-split input: s phases of (H + 2 ph) rows of `row` floats for each channel.
struct Planes {
  int64_t row, phase, channel;  // floats a row, a phase plane, a channel (s phases)
};

Planes planes_of(const Conv2dParams& p, int H, int W) {
  const int64_t s = p.stride_w, Wp = int64_t{W} + 2 * p.pad_w, Hp = int64_t{H} + 2 * p.pad_h;
  const int64_t row = (Wp + s - 1) / s;
  return {row, Hp * row, s * Hp * row};
}

// A segment: up to 16 consecutive output pixels of one row.
struct Segment {
  int32_t oy, ox, n;
};

#ifdef SPP_X86
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
// V segments (origins src[v] in the map's planes, outputs dst[v] of n[v] pixels) x kCh channels
// over K products (off[k] from each origin); weights wp [K][kCh]; channel m's output plane at
// dst[v] + m * plane; mvalid channels stored.
template <int V>
void tile(int64_t K, const float* const* src, float* const* dst, const int* n, const int32_t* off, const float* wp,
          const float* bias8, int64_t plane, int mvalid, bool relu) {
  __m512 c[V][kCh];
#pragma GCC unroll 8
  for (int m = 0; m < kCh; ++m) {
    const __m512 b = _mm512_set1_ps(bias8[m]);
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) c[v][m] = b;
  }
  const float* s0 = src[0];
  const float* s1 = src[V > 1 ? 1 : 0];
  const float* s2 = src[V > 2 ? 2 : 0];
  for (int64_t k = 0; k < K; ++k) {
    const int64_t o = off[k];
    __m512 a[V];
    a[0] = _mm512_loadu_ps(s0 + o);
    if constexpr (V > 1) a[1] = _mm512_loadu_ps(s1 + o);
    if constexpr (V > 2) a[2] = _mm512_loadu_ps(s2 + o);
    const float* w = wp + k * kCh;
#pragma GCC unroll 8
    for (int m = 0; m < kCh; ++m) {
      const __m512 b = _mm512_set1_ps(w[m]);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) c[v][m] = _mm512_fmadd_ps(a[v], b, c[v][m]);
    }
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 3
  for (int v = 0; v < V; ++v) {
    const __mmask16 mk = static_cast<__mmask16>((1u << n[v]) - 1);
    for (int m = 0; m < mvalid; ++m) {
      __m512 r = c[v][m];
      if (relu) r = _mm512_max_ps(zero, r);  // max(0, NaN) = NaN: the second operand wins
      _mm512_mask_storeu_ps(dst[v] + m * plane, mk, r);
    }
  }
}
// 32 floats: the even ones to ev, the odd ones to od (16 each).
void deinterleave32(const float* x, float* ev, float* od) {
  const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  _mm512_storeu_ps(ev, _mm512_permutex2var_ps(a, ie, b));
  _mm512_storeu_ps(od, _mm512_permutex2var_ps(a, io, b));
}
#pragma GCC pop_options
#endif

// One input row (nullptr: a padding row) into its s phase rows (P.row floats each, P.phase apart):
// phase f's element u is padded column u s + f, i.e. input column u s + f - pw, zero outside.
void split_row(const float* src, int Wd, int s, int pw, const Planes& P, float* d) {
  if (!src) {
    for (int f = 0; f < s; ++f) std::fill(d + f * P.phase, d + f * P.phase + P.row, 0.f);
    return;
  }
  int64_t u = 0;
#ifdef SPP_X86
  if (s == 2) {
    // Both phases of 16 pixels from 32 consecutive input floats: evens and odds.
    for (; u < P.row && 2 * u - pw < 0; ++u)
      for (int f = 0; f < 2; ++f) {
        const int64_t xx = 2 * u + f - pw;
        d[f * P.phase + u] = xx >= 0 && xx < Wd ? src[xx] : 0.f;
      }
    for (; u + 16 <= P.row && 2 * u - pw + 32 <= Wd; u += 16) deinterleave32(src + 2 * u - pw, d + u, d + P.phase + u);
  }
#endif
  for (; u < P.row; ++u)
    for (int f = 0; f < s; ++f) {
      const int64_t xx = u * s + f - pw;
      d[f * P.phase + u] = xx >= 0 && xx < Wd ? src[xx] : 0.f;
    }
}

// Filters [cout][K] -> panels [cout / kCh][K][kCh], channels past cout zero.
void pack_filters(const Conv2dParams& p, const float* w, float* dst) {
  const int64_t K = taps(p);
  parallel_for(panels_of(p), 1, [&](int64_t a, int64_t b) {
    for (int64_t q = a; q < b; ++q)
      for (int64_t k = 0; k < K; ++k)
        for (int l = 0; l < kCh; ++l) {
          const int64_t m = q * kCh + l;
          dst[(q * K + k) * kCh + l] = m < p.out_channels ? w[m * K + k] : 0.f;
        }
  });
}

}  // namespace

bool lanes_applies(const Conv2dParams& p, const RaggedView& out) {
#ifdef SPP_X86
  if (!settings().lanes || detect_isa() != Isa::kAvx512) return false;
  if (p.groups != 1 || p.stride_w < 2 || p.stride_w > 8) return false;
  // Where im2col + GEMM loses: few input channels (the GEMM's K is tiny), or a kernel of at least 4x
  // the stride's area (im2col writes each input ~kh kw / (sh sw) times); at most 1024 products a
  // sum. `/tmp` bench of conv2d_forward, 2 threads, lanes / im2col: 3 -> 64 at 224, 7x7/2 0.76-0.83
  // / 0.89-0.95 ms, 3x3/2 0.28-0.29 / 0.35-0.44; 8 -> 64 and 16 -> 64, 7x7/2, 1.9-2.0 / 2.2 and 3.8 /
  // 4.5; but 3x3/2 at 16 -> 32, 32 -> 64 (224) and 256 -> 256 (64) 0.72-1.0 / 0.60, 2.4 / 1.8 and
  // 5.3-5.4 / 3.8-3.9.
  const int64_t taps = int64_t{p.in_channels} * p.kernel_h * p.kernel_w;
  if (!(p.in_channels <= 4 || p.kernel_h * p.kernel_w >= 4 * p.stride_h * p.stride_w) || taps > 1024) return false;
  // Lanes in use: a row of Wo pixels takes ceil(Wo / 16) segments; at least 90% of the lanes
  // (ZF-5's conv2, 27 wide, 84%: 10% slower than im2col + GEMM; AlexNet's conv1, 55 wide, 86%: 8%).
  int64_t used = 0, lanes = 0;
  for (int i = 0; i < out.count; ++i) {
    used += int64_t{out.height[i]} * out.width[i];
    lanes += int64_t{out.height[i]} * ((out.width[i] + 15) / 16) * 16;
  }
  return lanes > 0 && used * 10 >= lanes * 9;
#else
  (void)p, (void)out;
  return false;
#endif
}

bool lanes_fits(const Conv2dParams& p, const RaggedView& in) {
  for (int i = 0; i < in.count; ++i)
    if (planes_of(p, in.height[i], in.width[i]).channel * p.in_channels + kSlack >= (int64_t{1} << 31)) return false;
  return true;
}

int64_t lanes_cache_floats(const Conv2dParams& p) { return kCacheHeader + (packed_floats(p) + 511) / 512 * 512 + 128; }

Status conv2d_lanes(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                    const RaggedView& out, float* y) {
#ifdef SPP_X86
  const int cin = p.in_channels, cout = p.out_channels, s = p.stride_w;
  const int64_t K = taps(p), panels = panels_of(p);
  // The packed filters: from the caller's cache when it holds them, else packed here.
  static thread_local FloatBuffer wbuf, xbuf, bbuf;
  float* W = cached_filters(p, lanes_cache_floats(p), kCacheValid, kCacheHeader, packed_floats(p), wbuf, [&](float* d) { pack_filters(p, weight, d); });
  float* B = bbuf.get(static_cast<size_t>(panels * kCh));
  for (int64_t m = 0; m < panels * kCh; ++m) B[m] = bias && m < cout ? bias[m] : 0.f;

  // The maps' phase-split, zero-padded inputs, one after another (kSlack floats after the last).
  std::vector<int64_t> at(static_cast<size_t>(in.count) + 1, 0);
  std::vector<Planes> pl(static_cast<size_t>(in.count));
  for (int i = 0; i < in.count; ++i) {
    pl[static_cast<size_t>(i)] = planes_of(p, in.height[i], in.width[i]);
    at[static_cast<size_t>(i) + 1] = at[static_cast<size_t>(i)] + pl[static_cast<size_t>(i)].channel * cin;
  }
  float* xp = xbuf.get(static_cast<size_t>(at.back() + kSlack));
  std::fill(xp + at.back(), xp + at.back() + kSlack, 0.f);
  parallel_for(int64_t{in.count} * cin, 1, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      const int i = static_cast<int>(t / cin), c = static_cast<int>(t % cin);
      const int H = in.height[i], Wd = in.width[i];
      const Planes& P = pl[static_cast<size_t>(i)];
      const float* src = x + in.offset[i] + int64_t{c} * H * Wd;
      float* d = xp + at[static_cast<size_t>(i)] + c * P.channel;
      for (int64_t r = 0; r < P.phase / P.row; ++r) {
        const int64_t yy = r - p.pad_h;
        split_row(yy >= 0 && yy < H ? src + yy * Wd : nullptr, Wd, s, p.pad_w, P, d + r * P.row);
      }
    }
  });

  // Each product's offset from a segment's origin, one table per distinct plane shape.
  std::vector<int32_t> offs;
  const std::vector<size_t> table = tables_by_key(
      in.count, offs, [&](int i) { return std::make_pair(pl[static_cast<size_t>(i)].row, pl[static_cast<size_t>(i)].phase); },
      [&](int i, std::vector<int32_t>& o) {
        const Planes& P = pl[static_cast<size_t>(i)];
        for (int c = 0; c < cin; ++c)
          for (int ki = 0; ki < p.kernel_h; ++ki)
            for (int kj = 0; kj < p.kernel_w; ++kj) {
              const int64_t col = int64_t{kj} * p.dilation_w;
              o.push_back(static_cast<int32_t>(c * P.channel + (col % s) * P.phase + int64_t{ki} * p.dilation_h * P.row + col / s));
            }
      });

  // Segments of each map in raster order, kVec to a tile; tasks (map, run of tiles, run of panels).
  std::vector<std::vector<Segment>> segs(static_cast<size_t>(in.count));
  struct Task {
    int map;
    int64_t t0, t1, q0, q1;
  };
  std::vector<Task> tasks;
  const int64_t T = num_threads();
  for (int i = 0; i < in.count; ++i) {
    auto& sg = segs[static_cast<size_t>(i)];
    for (int oy = 0; oy < out.height[i]; ++oy)
      for (int ox = 0; ox < out.width[i]; ox += 16) sg.push_back({oy, ox, std::min(16, out.width[i] - ox)});
    const int64_t tiles = (static_cast<int64_t>(sg.size()) + kVec - 1) / kVec;
    // About 8 tiles a task, the count a multiple of the threads; a map of fewer tiles than
    // threads splits its panels instead.
    const int64_t g = std::min(tiles, ((tiles + 7) / 8 + T - 1) / T * T);
    const int64_t pc = g < T ? std::min(panels, T) : 1;
    for (int64_t j = 0; j < g; ++j)
      for (int64_t c = 0; c < pc; ++c) tasks.push_back({i, tiles * j / g, tiles * (j + 1) / g, panels * c / pc, panels * (c + 1) / pc});
  }
  const bool relu = p.relu != 0;
  parallel_tasks(static_cast<int64_t>(tasks.size()), [&](int64_t ti) {
    const Task& tk = tasks[static_cast<size_t>(ti)];
    const int i = tk.map;
    const auto& sg = segs[static_cast<size_t>(i)];
    const Planes& P = pl[static_cast<size_t>(i)];
    const float* base = xp + at[static_cast<size_t>(i)];
    const int32_t* off = offs.data() + table[static_cast<size_t>(i)];
    const int Wo = out.width[i];
    const int64_t plane = int64_t{out.height[i]} * Wo;
    float* ymap = y + out.offset[i];
    for (int64_t q = tk.q0; q < tk.q1; ++q) {
      const int mvalid = static_cast<int>(std::min<int64_t>(kCh, cout - q * kCh));
      for (int64_t t = tk.t0; t < tk.t1; ++t) {
        const float* src[kVec];
        float* dst[kVec];
        int n[kVec];
        const int64_t s0 = t * kVec, V = std::min<int64_t>(kVec, static_cast<int64_t>(sg.size()) - s0);
        for (int v = 0; v < V; ++v) {
          const Segment& e = sg[static_cast<size_t>(s0 + v)];
          src[v] = base + int64_t{e.oy} * p.stride_h * P.row + e.ox;
          dst[v] = ymap + q * kCh * plane + int64_t{e.oy} * Wo + e.ox;
          n[v] = e.n;
        }
        with_rows<kVec>(static_cast<int>(V), [&](auto r) {
          tile<decltype(r)::value>(K, src, dst, n, off, W + q * K * kCh, B + q * kCh, plane, mvalid, relu);
        });
      }
    }
  });
  return Status::Ok();
#else
  (void)in, (void)x, (void)p, (void)weight, (void)bias, (void)out, (void)y;
  return Status::Error(Code::kInternal, "conv2d_lanes: not built for this CPU");
#endif
}

}  // namespace cpu
}  // namespace sppnet
