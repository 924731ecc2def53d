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

// One row of each of B's two tiles (high, low) from rows k and k + 1 of 16 columns; the tiles
// 512 bfloat16s apart.
inline void pair_row(__m512 v0, __m512 v1, uint16_t* row) {
  __m512i h0, l0, h1, l1;
  split(v0, &h0, &l0);
  split(v1, &h1, &l1);
  _mm512_storeu_si512(row, _mm512_or_si512(h0, _mm512_slli_epi32(h1, 16)));
  _mm512_storeu_si512(row + 512, _mm512_or_si512(l0, _mm512_slli_epi32(l1, 16)));
}

// bfloat16s of a high and a low tile (16 rows of A or 16 columns of B, 32 k): one k step of a
// row block of A or a column block of B, which both layouts store one after another.
constexpr int64_t kStep = 1024;

struct TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

}  // namespace

void amx_pack_a(int64_t M, int64_t K, const float* A, int64_t lda, float* Ap) {
  const int64_t Mp = amx_round(M), KS = amx_round(K) / 32;
  uint16_t* d = reinterpret_cast<uint16_t*>(Ap);
  for (int64_t m = 0; m < Mp; ++m)
    for (int64_t ks = 0; ks < KS; ++ks) {
      uint16_t* t = d + ((m / 16) * KS + ks) * kStep + (m % 16) * 32;
      for (int half = 0; half < 2; ++half) {
        const int64_t k0 = ks * 32 + half * 16;
        const __m512 v = _mm512_maskz_loadu_ps(m < M ? first_lanes16(K - k0) : 0, A + m * lda + k0);
        __m512i h, l;
        split(v, &h, &l);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(t + half * 16), _mm512_cvtepi32_epi16(h));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(t + 512 + half * 16), _mm512_cvtepi32_epi16(l));
      }
    }
}

void amx_pack_panels(int64_t K, int64_t panels, const float* P, float* Bp) {
  const int64_t KS = amx_round(K) / 32;
  uint16_t* d = reinterpret_cast<uint16_t*>(Bp);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t q = 0; q < panels; ++q) {
    const float* src = P + q * K * 32;
    uint16_t* b0 = d + (2 * q) * KS * kStep;  // columns 0-15 of the panel
    uint16_t* b1 = b0 + KS * kStep;           // 16-31
    for (int64_t ks = 0; ks < KS; ++ks)
      for (int r = 0; r < 16; ++r) {
        const int64_t k = ks * 32 + 2 * r;
        const float* r0 = src + k * 32;
        const bool has0 = k < K, has1 = k + 1 < K;
        const int64_t o = ks * kStep + r * 32;
        pair_row(has0 ? _mm512_loadu_ps(r0) : zero, has1 ? _mm512_loadu_ps(r0 + 32) : zero, b0 + o);
        pair_row(has0 ? _mm512_loadu_ps(r0 + 16) : zero, has1 ? _mm512_loadu_ps(r0 + 48) : zero, b1 + o);
      }
  }
}

void amx_pack_rows(int64_t K, int64_t N, const float* B, int64_t ldb, float* Bp) {
  const int64_t KS = amx_round(K) / 32, NB = amx_round(N) / 16;
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
        pair_row(v0, v1, d + (nb * KS + ks) * kStep + r * 32);
      }
    }
}

void amx_gemm(int64_t m0, int64_t m1, int64_t N, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc, const float* bias,
              bool relu) {
  alignas(64) TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int i = 0; i < 8; ++i) cfg.colsb[i] = 64, cfg.rows[i] = 16;
  _tile_loadconfig(&cfg);
  const int64_t KS = amx_round(K) / 32, T = KS * kStep;  // bfloat16s of a row block of A, a column block of B
  const uint16_t* A = reinterpret_cast<const uint16_t*>(Ap);
  const uint16_t* B = reinterpret_cast<const uint16_t*>(Bp);
  alignas(64) float acc[4][16][16];
  const __m512 zero = _mm512_setzero_ps();
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
      for (int64_t o = 0; o < T; o += kStep) {
        _tile_loadd(4, a0 + o + 512, 64);  // A low x B high
        _tile_loadd(6, b0 + o, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b1 + o, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a1 + o + 512, 64);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(4, a0 + o, 64);  // A high x B high
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a1 + o, 64);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(6, b0 + o + 512, 64);  // A high x B low
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        _tile_loadd(7, b1 + o + 512, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, acc[0], 64);
      _tile_stored(1, acc[1], 64);
      _tile_stored(2, acc[2], 64);
      _tile_stored(3, acc[3], 64);
      for (int t = 0; t < 4; ++t) {
        const int64_t c = n0 + (t % 2) * 16;
        if (c >= N) continue;
        const __mmask16 cm = first_lanes16(N - c);
        const int64_t r0 = mb + (t / 2) * 16, rows = std::min<int64_t>(16, m1 - r0);
        for (int64_t r = 0; r < rows; ++r) {
          __m512 v = _mm512_load_ps(acc[t][r]);
          if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[r0 + r]));
          if (relu) v = _mm512_max_ps(zero, v);  // max(0, NaN) = NaN: the second operand wins
          _mm512_mask_storeu_ps(C + (r0 + r) * ldc + c, cm, v);
        }
      }
    }
  }
  _tile_release();
}
#pragma GCC pop_options

#else  // no AMX in this build (not x86, or a compiler without it): never called (amx_enabled() is false)
void amx_pack_a(int64_t, int64_t, const float*, int64_t, float*) {}
void amx_pack_panels(int64_t, int64_t, const float*, float*) {}
void amx_pack_rows(int64_t, int64_t, const float*, int64_t, float*) {}
void amx_gemm(int64_t, int64_t, int64_t, int64_t, const float*, const float*, float*, int64_t, const float*, bool) {}
#endif

}  // namespace cpu
}  // namespace sppnet
