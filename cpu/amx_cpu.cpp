// bf16x3 products on AMX tiles (amx_cpu.h has the numbers and the layouts).
//
// The block of C a kernel call keeps in tiles is 32 x 32: four FP32 accumulator tiles (tmm0-3)
// and four operand tiles (tmm4-5 for A's two row tiles, tmm6-7 for B's two column tiles). For
// each 32 of k it loads A low and B high (4 tiles: the 4 products al bh), A high (2: ah bh), then
// B low (2: ah bl): 8 tile loads for 12 products. On this VM's Xeon a tile load takes
// ~13 ns from L1 or L2 and a product ~4.4 ns, so the loads set the pace: one core, with B packed
// in the call, 260-330 GFLOP/s of FP32-equivalent work on googlenet's shapes against 120-170 for
// the AVX-512 FP32 kernels (bench/RESULTS.md, "AMX").
#include "amx_cpu.h"

#include <algorithm>
#include <cstring>

#include "isa.h"
#include "vec.h"

namespace sppnet {
namespace cpu {

bool amx_enabled() { return settings().amx; }

bool amx_products_enabled() {
  if (settings().amx) return true;
  if (!settings().amx_products) return false;
  static const bool granted = amx_bf16_usable();  // asked once, by the first caller (a thread-safe static)
  return granted;
}

#ifdef SPP_AMX
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16")
namespace {

// 16 floats split into bfloat16 parts, each zero-extended into 32-bit lanes: the high part with
// infinities as zeros (`hi`), and the low part (`lo`), which is the infinity where x is one (so
// an infinity meets the other operand's high part in one product, amx_cpu.h). A finite x that
// bf16 rounding would carry past the largest bfloat16 (|x| >= ~3.3961e38) has its high part
// truncated instead, so it stays finite.
inline void split(__m512 v, __m512i* hi, __m512i* lo) {
  const __mmask16 inf = _mm512_fpclass_ps_mask(v, 0x18);  // +Inf, -Inf
  __m512i h = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
  const __mmask16 over = static_cast<__mmask16>(_mm512_fpclass_ps_mask(_mm512_castsi512_ps(_mm512_slli_epi32(h, 16)), 0x18) & ~inf);
  h = _mm512_mask_mov_epi32(h, over, _mm512_srli_epi32(_mm512_castps_si512(v), 16));
  const __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
  const __m512i l = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_maskz_sub_ps(static_cast<__mmask16>(~inf), v, hf))));
  *hi = _mm512_maskz_mov_epi32(static_cast<__mmask16>(~inf), h);
  *lo = _mm512_mask_mov_epi32(l, inf, h);
}

// The high part alone, rounded to the nearest bfloat16 (an infinity, NaN and overflow as
// float_to_bf16's): BF16 products' operand (parts 1).
inline __m512i high(__m512 v) { return _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v))); }

// One row of each of B's tiles (high, low; parts 1: the high one) from rows k and k + 1 of 16
// columns; the tiles 512 bfloat16s apart.
inline void pair_row(__m512 v0, __m512 v1, uint16_t* row, int parts) {
  if (parts == 1) {
    _mm512_storeu_si512(row, _mm512_or_si512(high(v0), _mm512_slli_epi32(high(v1), 16)));
    return;
  }
  __m512i h0, l0, h1, l1;
  split(v0, &h0, &l0);
  split(v1, &h1, &l1);
  _mm512_storeu_si512(row, _mm512_or_si512(h0, _mm512_slli_epi32(h1, 16)));
  _mm512_storeu_si512(row + 512, _mm512_or_si512(l0, _mm512_slli_epi32(l1, 16)));
}

// The bfloat16s of one k step of a row block of A or a column block of B (16 rows of A or 16
// columns of B, 32 k), which both layouts store one after another: a high and a low tile, or with
// parts 1 the high one alone.
constexpr int64_t step_of(int parts) { return 512 * int64_t{parts}; }

struct TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// 16 of a row's 32 k of A's layout (t: the row in its first part) from 16 floats.
inline void a_half(__m512 v, uint16_t* t, int parts) {
  if (parts == 1) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(t), _mm512_cvtepi32_epi16(high(v)));
    return;
  }
  __m512i h, l;
  split(v, &h, &l);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(t), _mm512_cvtepi32_epi16(h));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(t + 512), _mm512_cvtepi32_epi16(l));
}

// Rows [m0, m1) of A's layout (rows from M on zero), each row's 16 floats at k0 from load(m, k0, mask).
template <typename Load>
void pack_a_rows(int64_t m0, int64_t m1, int64_t M, int64_t K, float* Ap, int parts, Load&& load) {
  const int64_t KS = amx_round(K) / 32, step = step_of(parts);
  uint16_t* d = reinterpret_cast<uint16_t*>(Ap);
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t ks = 0; ks < KS; ++ks) {
      uint16_t* t = d + ((m / 16) * KS + ks) * step + (m % 16) * 32;
      for (int half = 0; half < 2; ++half) {
        const int64_t k0 = ks * 32 + half * 16;
        a_half(load(m, k0, m < M ? first_lanes16(K - k0) : 0), t + half * 16, parts);
      }
    }
}

}  // namespace

void amx_pack_a(int64_t M, int64_t K, const float* A, int64_t lda, float* Ap, int parts) {
  amx_pack_a_rows(0, amx_round(M), M, K, A, lda, Ap, parts);
}

void amx_pack_a_rows(int64_t m0, int64_t m1, int64_t M, int64_t K, const float* A, int64_t lda, float* Ap, int parts) {
  pack_a_rows(m0, m1, M, K, Ap, parts, [&](int64_t m, int64_t k0, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, A + m * lda + k0); });
}

void amx_pack_a_bf16(int64_t m0, int64_t m1, int64_t M, int64_t K, const uint16_t* A, int64_t lda, float* Ap, int parts) {
  // Widened to FP32 (exact) and split as FP32 rows are: the low part zero, an infinity in it.
  pack_a_rows(m0, m1, M, K, Ap, parts, [&](int64_t m, int64_t k0, __mmask16 mask) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, A + m * lda + k0)), 16));
  });
}

void amx_pack_bt(int64_t nb0, int64_t nb1, int64_t N, int64_t K, const float* X, int64_t ldx, float* Bp, int parts) {
  const int64_t KS = amx_round(K) / 32, step = step_of(parts);
  uint16_t* d = reinterpret_cast<uint16_t*>(Bp);
  // Each column's 32 k (one row of X) as 16 pairs, then the 16 columns' pairs transposed into
  // the tile's 16 rows of 16 pairs.
  alignas(64) uint32_t cols[2][16][16];
  const __m512i across = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(16));
  for (int64_t nb = nb0; nb < nb1; ++nb)
    for (int64_t ks = 0; ks < KS; ++ks) {
      const int64_t k0 = ks * 32;
      for (int c = 0; c < 16; ++c) {
        const int64_t n = nb * 16 + c;
        const float* row = X + n * ldx + k0;
        const __m512 v0 = _mm512_maskz_loadu_ps(n < N ? first_lanes16(K - k0) : 0, row);
        const __m512 v1 = _mm512_maskz_loadu_ps(n < N ? first_lanes16(K - k0 - 16) : 0, row + 16);
        __m512i h0, l0, h1, l1;
        if (parts == 1) {
          h0 = high(v0), h1 = high(v1);
        } else {
          split(v0, &h0, &l0);
          split(v1, &h1, &l1);
          _mm512_store_si512(cols[1][c], _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(l0)), _mm512_cvtepi32_epi16(l1), 1));
        }
        _mm512_store_si512(cols[0][c], _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(h0)), _mm512_cvtepi32_epi16(h1), 1));
      }
      uint16_t* t = d + (nb * KS + ks) * step;
      for (int part = 0; part < parts; ++part)
        for (int r = 0; r < 16; ++r)
          _mm512_storeu_si512(t + part * 512 + r * 32, _mm512_i32gather_epi32(_mm512_add_epi32(across, _mm512_set1_epi32(r)), cols[part], 4));
    }
}

void amx_pack_panels(int64_t K, int64_t panels, const float* P, float* Bp, int parts) {
  const int64_t KS = amx_round(K) / 32, step = step_of(parts);
  uint16_t* d = reinterpret_cast<uint16_t*>(Bp);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t q = 0; q < panels; ++q) {
    const float* src = P + q * K * 32;
    uint16_t* b0 = d + (2 * q) * KS * step;  // columns 0-15 of the panel
    uint16_t* b1 = b0 + KS * step;           // 16-31
    for (int64_t ks = 0; ks < KS; ++ks)
      for (int r = 0; r < 16; ++r) {
        const int64_t k = ks * 32 + 2 * r;
        const float* r0 = src + k * 32;
        const bool has0 = k < K, has1 = k + 1 < K;
        const int64_t o = ks * step + r * 32;
        pair_row(has0 ? _mm512_loadu_ps(r0) : zero, has1 ? _mm512_loadu_ps(r0 + 32) : zero, b0 + o, parts);
        pair_row(has0 ? _mm512_loadu_ps(r0 + 16) : zero, has1 ? _mm512_loadu_ps(r0 + 48) : zero, b1 + o, parts);
      }
  }
}

void amx_pack_rows(int64_t K, int64_t N, const float* B, int64_t ldb, float* Bp, int parts) {
  const int64_t KS = amx_round(K) / 32, NB = amx_round(N) / 16, step = step_of(parts);
  uint16_t* d = reinterpret_cast<uint16_t*>(Bp);
  const __m512 zero = _mm512_setzero_ps();
  // Along B's rows (a pair at a time, every column block): each row read as it lies, not a
  // cache line of each of K rows per column block (192 x 3136 from L3: 0.89 -> 0.69 ms).
  for (int64_t ks = 0; ks < KS; ++ks)
    for (int r = 0; r < 16; ++r) {
      const int64_t k = ks * 32 + 2 * r;
      const float* row0 = B + k * ldb;
      for (int64_t nb = 0; nb < NB; ++nb) {
        const int64_t c0 = nb * 16;
        const __mmask16 cm = first_lanes16(N - c0);
        const __m512 v0 = k < K ? _mm512_maskz_loadu_ps(cm, row0 + c0) : zero;
        const __m512 v1 = k + 1 < K ? _mm512_maskz_loadu_ps(cm, row0 + ldb + c0) : zero;
        pair_row(v0, v1, d + (nb * KS + ks) * step + r * 32, parts);
      }
    }
}

namespace {

void load_tile_config() {
  alignas(64) TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int i = 0; i < 8; ++i) cfg.colsb[i] = 64, cfg.rows[i] = 16;
  _tile_loadconfig(&cfg);
}

// acc[t] (t = 2 x row half + column half: four 16 x 16 FP32 tiles) + bias, ReLU, into C's rows
// [r0, r0 + 32) and columns [c0, c0 + 32), those under (m1, N).
inline void store_block(const float (*acc)[16][16], int64_t r0, int64_t m1, int64_t c0, int64_t N, float* C, int64_t ldc, const float* bias,
                        bool relu) {
  const __m512 zero = _mm512_setzero_ps();
  for (int t = 0; t < 4; ++t) {
    const int64_t c = c0 + (t % 2) * 16;
    if (c >= N) continue;
    const __mmask16 cm = first_lanes16(N - c);
    const int64_t rt = r0 + (t / 2) * 16, rows = std::min<int64_t>(16, m1 - rt);
    for (int64_t r = 0; r < rows; ++r) {
      __m512 v = _mm512_loadu_ps(acc[t][r]);
      if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[rt + r]));
      if (relu) v = _mm512_max_ps(zero, v);  // max(0, NaN) = NaN: the second operand wins
      _mm512_mask_storeu_ps(C + (rt + r) * ldc + c, cm, v);
    }
  }
}

// The products of one k step of a 32 x 32 block (tiles 0-3 += a0/a1 rows x b0/b1 columns):
// bf16x3 (the low parts 512 bfloat16s after the high ones) or, parts 1, the high parts alone.
template <int Parts>
inline void kstep(const uint16_t* a0, const uint16_t* a1, const uint16_t* b0, const uint16_t* b1) {
  if constexpr (Parts == 2) {
    _tile_loadd(4, a0 + 512, 64);  // A low x B high
    _tile_loadd(6, b0, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b1, 64);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1 + 512, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
    _tile_loadd(4, a0, 64);  // A high x B high
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
    _tile_loadd(6, b0 + 512, 64);  // A high x B low
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    _tile_loadd(7, b1 + 512, 64);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
  } else {
    _tile_loadd(4, a0, 64);
    _tile_loadd(6, b0, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b1, 64);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
}

// k steps [ks0, ks1) of a 32 x 32 block whose row blocks of A start at a0 / a1 and column blocks
// of B at b0 / b1; the accumulators from acc (zero where first) and back to it.
template <int Parts>
void kblock(const uint16_t* a0, const uint16_t* a1, const uint16_t* b0, const uint16_t* b1, int64_t ks0, int64_t ks1, float* acc,
            bool first) {
  constexpr int64_t step = step_of(Parts);
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, acc, 64);
    _tile_loadd(1, acc + 256, 64);
    _tile_loadd(2, acc + 512, 64);
    _tile_loadd(3, acc + 768, 64);
  }
  for (int64_t o = ks0 * step; o < ks1 * step; o += step) kstep<Parts>(a0 + o, a1 + o, b0 + o, b1 + o);
  _tile_stored(0, acc, 64);
  _tile_stored(1, acc + 256, 64);
  _tile_stored(2, acc + 512, 64);
  _tile_stored(3, acc + 768, 64);
}

// K steps (of 32) per block of amx_gemm_kblocked: a 128 x 128 region's A and B blocks take 512
// KiB each in bf16x3, its accumulators 64 KiB: within a core's 2 MiB L2 (fc6 on 2,000 rows, 2
// threads: 304-312 ms against 316-330 with 256 x 256 regions and blocks of 16 steps).
constexpr int64_t kKBlockSteps = 32;

template <int Parts>
void gemm_kblocked(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc,
                   const float* bias, bool relu) {
  constexpr int64_t step = step_of(Parts);
  const int64_t KS = amx_round(K) / 32, T = KS * step;  // bfloat16s of a row block of A, a column block of B
  const uint16_t* A = reinterpret_cast<const uint16_t*>(Ap);
  const uint16_t* B = reinterpret_cast<const uint16_t*>(Bp);
  const int64_t MB = (m1 - m0 + 31) / 32, NB = (n1 - n0 + 31) / 32;
  static thread_local FloatBuffer accbuf;
  float* acc = accbuf.get(static_cast<size_t>(MB * NB * 1024));
  if (KS == 0) std::fill(acc, acc + MB * NB * 1024, 0.f);  // no k: the sums are 0 (then the bias)
  load_tile_config();
  for (int64_t ks0 = 0; ks0 < KS; ks0 += kKBlockSteps) {
    const int64_t ks1 = std::min(KS, ks0 + kKBlockSteps);
    for (int64_t nb = 0; nb < NB; ++nb) {
      const uint16_t* b0 = B + (n0 / 16 + 2 * nb) * T;
      for (int64_t mb = 0; mb < MB; ++mb) {
        const uint16_t* a0 = A + (m0 / 16 + 2 * mb) * T;
        kblock<Parts>(a0, a0 + T, b0, b0 + T, ks0, ks1, acc + (nb * MB + mb) * 1024, ks0 == 0);
      }
    }
  }
  _tile_release();
  for (int64_t nb = 0; nb < NB; ++nb)
    for (int64_t mb = 0; mb < MB; ++mb)
      store_block(reinterpret_cast<const float(*)[16][16]>(acc + (nb * MB + mb) * 1024), m0 + 32 * mb, m1, n0 + 32 * nb, n1, C, ldc, bias, relu);
}

}  // namespace

template <int Parts>
void gemm_whole(int64_t m0, int64_t m1, int64_t N, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc, const float* bias,
                bool relu) {
  constexpr int64_t step = step_of(Parts);
  load_tile_config();
  const int64_t KS = amx_round(K) / 32, T = KS * step;  // bfloat16s of a row block of A, a column block of B
  const uint16_t* A = reinterpret_cast<const uint16_t*>(Ap);
  const uint16_t* B = reinterpret_cast<const uint16_t*>(Bp);
  alignas(64) float acc[4][16][16];
  for (int64_t n0 = 0; n0 < N; n0 += 32) {
    const uint16_t* b0 = B + (n0 / 16) * T;
    const uint16_t* b1 = b0 + T;
    for (int64_t mb = m0; mb < m1; mb += 32) {
      const uint16_t* a0 = A + (mb / 16) * T;
      const uint16_t* a1 = a0 + T;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t o = 0; o < T; o += step) kstep<Parts>(a0 + o, a1 + o, b0 + o, b1 + o);
      _tile_stored(0, acc[0], 64);
      _tile_stored(1, acc[1], 64);
      _tile_stored(2, acc[2], 64);
      _tile_stored(3, acc[3], 64);
      store_block(acc, mb, m1, n0, N, C, ldc, bias, relu);
    }
  }
  _tile_release();
}

void amx_gemm(int64_t m0, int64_t m1, int64_t N, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc, const float* bias,
              bool relu, int parts) {
  if (parts == 1)
    gemm_whole<1>(m0, m1, N, K, Ap, Bp, C, ldc, bias, relu);
  else
    gemm_whole<2>(m0, m1, N, K, Ap, Bp, C, ldc, bias, relu);
}

void amx_gemm_kblocked(int parts, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float* Ap, const float* Bp, float* C,
                       int64_t ldc, const float* bias, bool relu) {
  if (parts == 1)
    gemm_kblocked<1>(m0, m1, n0, n1, K, Ap, Bp, C, ldc, bias, relu);
  else
    gemm_kblocked<2>(m0, m1, n0, n1, K, Ap, Bp, C, ldc, bias, relu);
}
#pragma GCC pop_options

#else  // no AMX in this build (not x86, or a compiler without it): never called (amx_enabled() is false)
void amx_pack_a(int64_t, int64_t, const float*, int64_t, float*, int) {}
void amx_pack_panels(int64_t, int64_t, const float*, float*, int) {}
void amx_pack_rows(int64_t, int64_t, const float*, int64_t, float*, int) {}
void amx_gemm(int64_t, int64_t, int64_t, int64_t, const float*, const float*, float*, int64_t, const float*, bool, int) {}
void amx_pack_a_rows(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, float*, int) {}
void amx_pack_a_bf16(int64_t, int64_t, int64_t, int64_t, const uint16_t*, int64_t, float*, int) {}
void amx_pack_bt(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, float*, int) {}
void amx_gemm_kblocked(int, int64_t, int64_t, int64_t, int64_t, int64_t, const float*, const float*, float*, int64_t, const float*, bool) {}
#endif

}  // namespace cpu
}  // namespace sppnet
