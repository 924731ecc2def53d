// CPU linear (fully connected) layer: forward (a small-batch kernel, else the packed GEMM) and
// backward.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "amx_cpu.h"
#include "filter_cache.h"
#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "sppnet/bf16.h"
#include "sppnet/ops.h"
#include "vec.h"

namespace sppnet {
namespace cpu {

namespace {

constexpr int NR = kGemmNR;  // the GEMM's panel width (packed B columns)

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
// Weight rows streamed at once for NR input rows: a core's bandwidth grows with the streams in
// flight (at few rows the kernels are latency-bound), up to what the accumulators' registers allow.
template <int NR>
constexpr int kStreamRows = NR <= 2 ? 16 : 8;

#ifdef SPP_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
// linear_tile_small with ymm vectors, for AVX2's 16 registers: OB x NR accumulators of 8 floats
// (a v16 there is two ymm, and linear_tile_small's 16 x 1 or 8 x 4 of them spill). Weights T:
// float, or bfloat16 bits (uint16_t), widened 8 at a time as they load (zero-extended to 32 bits,
// shifted up: a bf16 is the upper half of its float), so x is read as it is.
inline __m256 load_w8(const float* w) { return _mm256_loadu_ps(w); }
inline __m256 load_w8(const uint16_t* w) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))), 16));
}
inline float widen1(float v) { return v; }
inline float widen1(uint16_t v) { return bf16_to_float(v); }

template <int OB, int NR, typename T>
void linear_tile_avx2(int64_t o, const float* x, int64_t in, int64_t out, const T* w, const float* b, bool relu, float* y) {
  __m256 a[OB][NR];
  for (int i = 0; i < OB; ++i)
    for (int r = 0; r < NR; ++r) a[i][r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= in; k += 8) {
    __m256 xv[NR];
    for (int r = 0; r < NR; ++r) xv[r] = _mm256_loadu_ps(x + r * in + k);
    for (int i = 0; i < OB; ++i) {
      const __m256 wv = load_w8(w + (o + i) * in + k);
      for (int r = 0; r < NR; ++r) a[i][r] = _mm256_fmadd_ps(wv, xv[r], a[i][r]);
    }
  }
  for (int i = 0; i < OB; ++i)
    for (int r = 0; r < NR; ++r) {
      const T* wo = w + (o + i) * in;
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(a[i][r]), _mm256_extractf128_ps(a[i][r], 1));
      const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
      float s = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
      for (int64_t j = k; j < in; ++j) s += x[r * in + j] * widen1(wo[j]);
      if (b) s += b[o + i];
      y[r * out + o + i] = relu ? relu1(s) : s;
    }
}
#pragma GCC pop_options
#endif

// The few-row kernels of this CPU are linear_tile_avx2 (AVX2 without AVX-512).
inline bool linear_avx2() {
#ifdef SPP_X86
  static const bool avx2 = detect_isa() == Isa::kAvx2;
  return avx2;
#else
  return false;
#endif
}

// Weight rows streamed at once on AVX2: as many as 16 ymm registers hold with NR rows of x.
template <int NR>
constexpr int kStreamRowsAvx2 = NR == 1 ? 12 : NR == 2 ? 6 : NR == 3 ? 4 : 3;

// Outputs [o0, o1) by linear_tile_avx2 (weights T: float or bfloat16) where this CPU takes it; false otherwise.
template <int NR, typename T>
bool linear_rows_avx2(int64_t o0, int64_t o1, const float* x, int64_t in, int64_t out, const T* w, const float* b, bool relu, float* y) {
#ifdef SPP_X86
  if (!linear_avx2()) return false;
  constexpr int OB = kStreamRowsAvx2<NR>;
  int64_t o = o0;
  for (; o + OB <= o1; o += OB) linear_tile_avx2<OB, NR>(o, x, in, out, w, b, relu, y);
  for (; o < o1; ++o) linear_tile_avx2<1, NR>(o, x, in, out, w, b, relu, y);
  return true;
#else
  return false;
#endif
}

template <int NR>
void linear_rows_small(int64_t o0, int64_t o1, const float* x, int64_t in, int64_t out, const float* w, const float* b,
                       bool relu, float* y) {
  if (linear_rows_avx2<NR>(o0, o1, x, in, out, w, b, relu, y)) return;
  int64_t o = o0;
  constexpr int OB = kStreamRows<NR>;
  for (; o + OB <= o1; o += OB) linear_tile_small<OB, NR>(o, x, in, out, w, b, relu, y);
  for (; o < o1; ++o) linear_tile_small<1, NR>(o, x, in, out, w, b, relu, y);
}
constexpr int64_t kLinRows = 4;        // rows per pass of the small-batch kernel
constexpr int64_t kLinGemmRows = 8;    // from this many rows on, the packed GEMM

}  // namespace

// bfloat16 weights, 32 at a time: one 64-byte load holds weights k, k+1, ... k+31 as 16 pairs;
// a shift gives the even ones as floats and a mask the odd ones (a bf16 is the upper half of its
// float), with no shuffles, against x deinterleaved the same way (xd: per 32 floats of a row, the
// 16 even then the 16 odd). The last in % 32 columns go one by one.
typedef unsigned int u32x16v __attribute__((vector_size(64)));
template <int OB, int NR>
SPP_ISA_CLONES void linear_tile_bf16(int64_t o, const float* x, const float* xd, int64_t in, int64_t out, const uint16_t* w,
                                     const float* b, bool relu, float* y) {
  v16 a[OB][NR];
  for (int i = 0; i < OB; ++i)
    for (int r = 0; r < NR; ++r) a[i][r] = v16{};
  int64_t k = 0;
  for (; k + 32 <= in; k += 32) {
    v16 xe[NR], xo[NR];
    for (int r = 0; r < NR; ++r) xe[r] = v16_load(xd + r * in + k), xo[r] = v16_load(xd + r * in + k + 16);
    for (int i = 0; i < OB; ++i) {
      u32x16v u;
      std::memcpy(&u, w + (o + i) * in + k, sizeof u);
      const v16 we = (v16)(u << 16), wo = (v16)(u & 0xffff0000u);
      for (int r = 0; r < NR; ++r) a[i][r] += we * xe[r] + wo * xo[r];
    }
  }
  for (int i = 0; i < OB; ++i)
    for (int r = 0; r < NR; ++r) {
      const uint16_t* wo = w + (o + i) * in;
      float s = v16_sum(a[i][r]);
      for (int64_t j = k; j < in; ++j) s += x[r * in + j] * bf16_to_float(wo[j]);
      if (b) s += b[o + i];
      y[r * out + o + i] = relu ? relu1(s) : s;
    }
}
template <int NR>
void linear_rows_small(int64_t o0, int64_t o1, const float* x, const float* xd, int64_t in, int64_t out, const uint16_t* w,
                       const float* b, bool relu, float* y) {
  // linear_tile_bf16's v16 accumulators spill on AVX2 (4 rows: 0.5x FP32)
  if (linear_rows_avx2<NR>(o0, o1, x, in, out, w, b, relu, y)) return;
  int64_t o = o0;
  constexpr int OB = kStreamRows<NR>;
  for (; o + OB <= o1; o += OB) linear_tile_bf16<OB, NR>(o, x, xd, in, out, w, b, relu, y);
  for (; o < o1; ++o) linear_tile_bf16<1, NR>(o, x, xd, in, out, w, b, relu, y);
}

namespace {

// The few-rows path: the weights stream once per kLinRows rows, split over the threads by output.
// run(nr, o0, o1, r0): outputs [o0, o1) of input rows r0 .. r0 + nr (nr an integral_constant).
template <typename Run>
void linear_small(int64_t rows, int64_t out, Run&& run) {
  parallel_for(out, 16, [&](int64_t o0, int64_t o1) {
    for (int64_t r0 = 0; r0 < rows; r0 += kLinRows) {
      switch (std::min(kLinRows, rows - r0)) {
        case 1: run(std::integral_constant<int, 1>{}, o0, o1, r0); break;
        case 2: run(std::integral_constant<int, 2>{}, o0, o1, r0); break;
        case 3: run(std::integral_constant<int, 3>{}, o0, o1, r0); break;
        default: run(std::integral_constant<int, 4>{}, o0, o1, r0); break;
      }
    }
  });
}

// The many-rows path: C[out][rows] = W[out][in] . x^T[in][rows] by multiply(C) (bias per row of C,
// i.e. per output feature), then transposed into y[rows][out].
template <typename Multiply>
void linear_via_gemm(int64_t rows, int64_t out, float* y, Multiply&& multiply) {
  static thread_local FloatBuffer tmp;
  float* C = tmp.get(static_cast<size_t>(out * rows));
  multiply(C);
  parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t o = 0; o < out; ++o) y[r * out + o] = C[o * rows + r];
  });
}

// FP32 through the packed GEMM: x^T packed straight from x. `weights(o0, o1)` gives rows [o0, o1)
// of W as float32 (W itself, or a widened copy), `block` rows at a time.
template <typename Rows>
void linear_gemm(int64_t rows, int64_t in, int64_t out, const float* x, Rows&& weights, int64_t block, const float* b, bool relu,
                 float* y) {
  static thread_local FloatBuffer packed;
  float* Bp = packed.get(static_cast<size_t>(gemm_packed_size(rows, in)));
  parallel_for(gemm_panels(rows), 1, [&](int64_t p0, int64_t p1) {
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
  linear_via_gemm(rows, out, y, [&](float* C) {
    for (int64_t o0 = 0; o0 < out; o0 += block) {
      const int64_t m = std::min(block, out - o0);
      gemm_packed(m, rows, in, weights(o0, o0 + m), in, Bp, C + o0 * rows, rows, b ? b + o0 : nullptr, relu, true);
    }
  });
}

// BF16 products (math kMathBf16 where gemm_bf16_available()): x rounded to bfloat16 as it is
// packed; `weights(o0, o1)` gives rows [o0, o1) of W as bfloat16, `block` rows at a time.
template <typename Rows>
void linear_gemm_bf16(int64_t rows, int64_t in, int64_t out, const float* x, Rows&& weights, int64_t block, const float* b, bool relu,
                      float* y) {
  static thread_local FloatBuffer packed;  // bfloat16, two to a float
  uint16_t* Bp = reinterpret_cast<uint16_t*>(packed.get(static_cast<size_t>(gemm_panels(rows) * gemm_bf16_rows(in) * NR / 2)));
  gemm_bf16_pack_rows(rows, in, x, in, Bp, true);
  linear_via_gemm(rows, out, y, [&](float* C) {
    for (int64_t o0 = 0; o0 < out; o0 += block) {
      const int64_t m = std::min(block, out - o0);
      gemm_bf16_packed(m, rows, in, weights(o0, o0 + m), in, Bp, C + o0 * rows, rows, b ? b + o0 : nullptr, relu, true);
    }
  });
}

// AMX tiles (amx_linear_parts says when), from kAmxLinearRows rows (kAmxLinearRowsCached with the
// caller's cache, kAmxLinearRowsBf16 for a BF16Matrix's BF16 products): C[out][rows] = W . x^T on AMX tiles (amx_cpu.h), bf16x3 products (parts 2) or, where math 'bf16'
// takes BF16 products, those (parts 1). x^T is packed at each call; W once into the caller's cache
// (linear_cache_floats), or without one a slab of kAmxSlab rows at a time; each slab's product is
// shared out in regions of kAmxRegion x kAmxRegion. Without a cache, from 128 rows: below, packing W at each call
// costs more than the tiles save (fc6, 2 threads, bench/RESULTS.md "AMX for fc layers": 32 rows 16
// ms FP32 against 29-30 with the tiles, 96 rows 36 against 33-35, 128 rows 43-48 against 37; 2,000
// rows 765-814 against 304-330).
constexpr int64_t kAmxLinearRows = 128;
constexpr int64_t kAmxLinearRowsCached = 16;
// A BF16Matrix's BF16 products from 32 rows without a cache: its packing is a copy of bfloat16s,
// not a split of FP32s (fc6, 2 threads: 32 rows 21-22 ms with vdpbf16ps against 13.4-13.7 on the
// tiles, 64 rows 40-42 against 15, 96 rows 55-57 against 16-17; 16 rows 12.5-12.8 against 13.6).
constexpr int64_t kAmxLinearRowsBf16 = 32;
constexpr int64_t kAmxSlab = 512, kAmxRegion = 128;
constexpr int32_t kAmxLinearCacheValid = 0x314c4d41;  // "AML1"
constexpr int64_t kAmxLinearCacheHeader = 16;          // floats: [valid, in, out, parts, bf16 weights, unused...]

// The AMX path's parts for this call, 0 where it does not run: BF16 products (1) where math 'bf16'
// takes them, on the tiles whenever amx_products_enabled() (no SPPNET_AMX=1 needed: the arithmetic
// is the AVX-512 BF16 kernels', one rounding of each operand, FP32 sums); bf16x3 (2) for FP32
// products under SPPNET_AMX=1 only.
int amx_linear_parts(int64_t rows, int32_t in_features, int32_t math, bool bf16_weights, bool cached) {
  if (in_features <= 0) return 0;
  const bool bf16_products = math == kMathBf16 && rows >= (bf16_weights ? kBf16ProductRowsPacked : kBf16ProductRows);
  if (rows < (cached ? kAmxLinearRowsCached : bf16_products && bf16_weights ? kAmxLinearRowsBf16 : kAmxLinearRows)) return 0;
  if (bf16_products) return amx_products_enabled() ? 1 : 0;
  return amx_enabled() ? 2 : 0;
}

// linear_amx's buffers, one set per thread for both instantiations: x^T packed, a slab of W.
struct AmxLinearScratch {
  FloatBuffer x, w;
};
AmxLinearScratch& amx_linear_scratch() {
  static thread_local AmxLinearScratch s;
  return s;
}

// linear_forward / linear_bf16_forward (W: float or bfloat16 weights) on the tiles where
// amx_linear_parts takes the call, with the caller's cache when it is this call's size; false
// (nothing done) where it does not take it.
template <typename W>
bool linear_amx(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const W* w, const float* b, bool relu,
                int32_t math, float* y, float* cache, int64_t cache_len) {
  constexpr bool bf16_weights = std::is_same_v<W, uint16_t>;
  const int64_t in = in_features, out = out_features;
  const int with_cache = amx_linear_parts(rows, in_features, math, bf16_weights, true);
  const bool cached = cache && with_cache && cache_len == kAmxLinearCacheHeader + amx_a_floats(out, in, with_cache);
  const int parts = cached ? with_cache : amx_linear_parts(rows, in_features, math, bf16_weights, false);
  if (!parts) return false;
  // The m rows of W from row o0 into A's layout at Ap, on the threads.
  auto pack = [&](int64_t o0, int64_t m, float* Ap) {
    parallel_for(amx_round(m) / 16, 1, [&](int64_t b0, int64_t b1) {
      if constexpr (bf16_weights)
        amx_pack_a_bf16(b0 * 16, b1 * 16, m, in, w + o0 * in, in, Ap, parts);
      else
        amx_pack_a_rows(b0 * 16, b1 * 16, m, in, w + o0 * in, in, Ap, parts);
    });
  };
  FloatBuffer& packed_x = amx_linear_scratch().x;
  FloatBuffer& packed_w = amx_linear_scratch().w;
  float* Bp = packed_x.get(static_cast<size_t>(amx_b_floats(rows, in, parts)));
  parallel_for(amx_round(rows) / 16, 1, [&](int64_t nb0, int64_t nb1) { amx_pack_bt(nb0, nb1, rows, in, x, in, Bp, parts); });
  const int32_t key[4] = {in_features, out_features, parts, bf16_weights ? 1 : 0};
  const float* whole = !cached ? nullptr
                               : cached_packing(cache, cache_len, cache_len, kAmxLinearCacheValid, key, kAmxLinearCacheHeader, 0, packed_w,
                                                [&](float* d) { pack(0, out, d); });
  float* slab = whole ? nullptr : packed_w.get(static_cast<size_t>(amx_a_floats(std::min(kAmxSlab, out), in, parts)));
  linear_via_gemm(rows, out, y, [&](float* C) {
    for (int64_t o0 = 0; o0 < out; o0 += kAmxSlab) {
      const int64_t m = std::min(kAmxSlab, out - o0);
      if (!whole) pack(o0, m, slab);
      const float* Ap = whole ? whole + amx_a_floats(o0, in, parts) : slab;  // o0: a multiple of the slab's rows
      const int64_t mr = (m + kAmxRegion - 1) / kAmxRegion, nr = (rows + kAmxRegion - 1) / kAmxRegion;
      parallel_tasks(mr * nr, [&](int64_t t) {
        const int64_t i = t % mr, j = t / mr;
        amx_gemm_kblocked(parts, i * kAmxRegion, std::min(m, (i + 1) * kAmxRegion), j * kAmxRegion, std::min(rows, (j + 1) * kAmxRegion),
                          in, Ap, Bp, C + o0 * rows, rows, b ? b + o0 : nullptr, relu);
      });
    }
  });
  return true;
}

// bfloat16 weight rows widened (or FP32 ones rounded, for BF16 products) a block at a time for the
// GEMM: 256 rows (fc6's 12,800 inputs: 13 MB), small next to the GEMM's own work on them.
constexpr int64_t kBf16Block = 256;


}  // namespace

int64_t linear_cache_floats(int64_t rows, int32_t in_features, int32_t out_features, int32_t math, bool bf16_weights) {
  const int parts = amx_linear_parts(rows, in_features, math, bf16_weights, true);
  return parts ? kAmxLinearCacheHeader + amx_a_floats(out_features, in_features, parts) : 0;
}

Status linear_forward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* b,
                      bool relu, int32_t math, float* y, float* cache, int64_t cache_len) {
  const int64_t in = in_features, out = out_features;
  if (rows <= 0 || out <= 0) return Status::Ok();
  if (linear_amx(rows, in_features, out_features, x, w, b, relu, math, y, cache, cache_len)) return Status::Ok();
  if (math == kMathBf16 && rows >= kBf16ProductRows && gemm_bf16_available()) {
    static thread_local FloatBuffer narrow;  // bfloat16, two to a float
    uint16_t* wb = reinterpret_cast<uint16_t*>(narrow.get(static_cast<size_t>((std::min(kBf16Block, out) * in + 1) / 2)));
    auto round = [&](int64_t o0, int64_t o1) {
      parallel_for((o1 - o0) * in, 4096, [&](int64_t i0, int64_t i1) {
        const float* src = w + o0 * in;
        for (int64_t i = i0; i < i1; ++i) wb[i] = float_to_bf16(src[i]);
      });
      return static_cast<const uint16_t*>(wb);
    };
    linear_gemm_bf16(rows, in, out, x, round, kBf16Block, b, relu, y);
    return Status::Ok();
  }
  if (rows < kLinGemmRows) {
    linear_small(rows, out, [&](auto nr, int64_t o0, int64_t o1, int64_t r0) {
      linear_rows_small<decltype(nr)::value>(o0, o1, x + r0 * in, in, out, w, b, relu, y + r0 * out);
    });
    return Status::Ok();
  }
  linear_gemm(rows, in, out, x, [&](int64_t o0, int64_t) { return w + o0 * in; }, out, b, relu, y);
  return Status::Ok();
}

Status linear_bf16_forward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const uint16_t* w,
                           const float* b, bool relu, int32_t math, float* y, float* cache, int64_t cache_len) {
  const int64_t in = in_features, out = out_features;
  if (rows <= 0 || out <= 0) return Status::Ok();
  if (linear_amx(rows, in_features, out_features, x, w, b, relu, math, y, cache, cache_len)) return Status::Ok();
  if (math == kMathBf16 && rows >= kBf16ProductRowsPacked && gemm_bf16_available()) {
    linear_gemm_bf16(rows, in, out, x, [&](int64_t o0, int64_t) { return w + o0 * in; }, out, b, relu, y);
    return Status::Ok();
  }
  if (rows < kLinGemmRows) {
    // x deinterleaved for linear_tile_bf16, once per call (rows x in floats: fc6's 12,800 a row).
    static thread_local FloatBuffer deinterleaved;
    float* xd = linear_avx2() ? nullptr : deinterleaved.get(static_cast<size_t>(rows * in));  // AVX2 reads x as it is
    for (int64_t r = 0; xd && r < rows; ++r)
      for (int64_t k = 0; k + 32 <= in; k += 32)
        for (int j = 0; j < 16; ++j) xd[r * in + k + j] = x[r * in + k + 2 * j], xd[r * in + k + 16 + j] = x[r * in + k + 2 * j + 1];
    linear_small(rows, out, [&](auto nr, int64_t o0, int64_t o1, int64_t r0) {
      linear_rows_small<decltype(nr)::value>(o0, o1, x + r0 * in, xd ? xd + r0 * in : nullptr, in, out, w, b, relu, y + r0 * out);
    });
    return Status::Ok();
  }
  static thread_local FloatBuffer wide;
  float* wf = wide.get(static_cast<size_t>(std::min(kBf16Block, out) * in));
  auto widen = [&](int64_t o0, int64_t o1) {
    parallel_for((o1 - o0) * in, 4096, [&](int64_t i0, int64_t i1) {
      const uint16_t* src = w + o0 * in;
      for (int64_t i = i0; i < i1; ++i) wf[i] = bf16_to_float(src[i]);
    });
    return static_cast<const float*>(wf);
  };
  linear_gemm(rows, in, out, x, widen, kBf16Block, b, relu, y);
  return Status::Ok();
}

namespace {

// dx[r][i0 .. i0 + 16 CW) = sum over o of dy[r][o] w[o][i0 ..] for NR rows: CW x NR accumulators
// over a 16 CW-column stripe of w, read row by row (each weight read once, from memory).
template <int NR, int CW>
SPP_ISA_CLONES void linear_dx_stripe(int64_t i0, int64_t in, int64_t out, const float* dy, const float* w, float* dx) {
  v16 a[NR][CW];
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < CW; ++c) a[r][c] = v16{};
  for (int64_t o = 0; o < out; ++o) {
    const float* wo = w + o * in + i0;
    // The stripe's rows are `in` floats apart: fetch a few rows ahead.
    if (o + 8 < out)
      for (int c = 0; c < CW; ++c) __builtin_prefetch(wo + 8 * in + 16 * c);
    v16 wv[CW];
    for (int c = 0; c < CW; ++c) wv[c] = v16_load(wo + 16 * c);
    for (int r = 0; r < NR; ++r) {
      const v16 d = v16_splat(dy[r * out + o]);
      for (int c = 0; c < CW; ++c) a[r][c] += d * wv[c];
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < CW; ++c) v16_store(dx + r * in + i0 + 16 * c, a[r][c]);
}

// The same for the last columns (fewer than 16 CW), element by element.
void linear_dx_tail(int64_t i0, int64_t i1, int64_t rows, int64_t in, int64_t out, const float* dy, const float* w, float* dx) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = i0; i < i1; ++i) {
      float s = 0.f;
      for (int64_t o = 0; o < out; ++o) s += dy[r * out + o] * w[o * in + i];
      dx[r * in + i] = s;
    }
}

constexpr int64_t kDxRows = 4;       // rows per pass of the streaming dx kernel
constexpr int64_t kDxGemmRows = 8;   // from this many rows on, the packed GEMM (w packed once)

}  // namespace

Status linear_backward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* dy,
                       float* dx, float* dw, float* db) {
  // dx [rows, in] = dy [rows, out] . w [out, in]. Few rows: stream w once in column stripes (the
  // GEMM would first pack all of w: fc6's 210 MB, for 4 rows); more: the packed GEMM.
  if (dx && rows > 0 && rows < kDxGemmRows) {
    const int64_t in = in_features, out = out_features;
    constexpr int CW = 4;  // 64 columns a stripe
    const int64_t stripes = in / (16 * CW);
    parallel_for(stripes + 1, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t st = s0; st < s1; ++st) {
        if (st == stripes) {
          linear_dx_tail(stripes * 16 * CW, in, rows, in, out, dy, w, dx);
          continue;
        }
        for (int64_t r0 = 0; r0 < rows; r0 += kDxRows) {
          const float* d = dy + r0 * out;
          float* o = dx + r0 * in;
          switch (std::min(kDxRows, rows - r0)) {
            case 1: linear_dx_stripe<1, CW>(st * 16 * CW, in, out, d, w, o); break;
            case 2: linear_dx_stripe<2, CW>(st * 16 * CW, in, out, d, w, o); break;
            case 3: linear_dx_stripe<3, CW>(st * 16 * CW, in, out, d, w, o); break;
            default: linear_dx_stripe<4, CW>(st * 16 * CW, in, out, d, w, o); break;
          }
        }
      }
    });
  } else if (dx) {
    gemm_nn(rows, in_features, out_features, dy, out_features, w, in_features, dx, in_features, nullptr, false, true);
  }
  // dw [out, in] = dy^T [out, rows] . x [rows, in]
  std::vector<float> dyT(static_cast<size_t>(rows * out_features));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out_features; ++o) dyT[o * rows + r] = dy[r * out_features + o];
  if (rows == 0)
    std::fill(dw, dw + int64_t{in_features} * out_features, 0.f);
  else
    gemm_nn(out_features, in_features, rows, dyT.data(), rows, x, in_features, dw, in_features, nullptr, false, true);
  if (db)
    parallel_for(out_features, 64, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        double s = 0;
        for (int64_t r = 0; r < rows; ++r) s += dyT[o * rows + r];
        db[o] = static_cast<float>(s);
      }
    });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
