#include "gemm_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "amx_cpu.h"
#include "isa.h"
#include "sppnet/bf16.h"
#include "parallel.h"
#include "vec.h"

namespace sppnet {
namespace cpu {
namespace {

constexpr int NR = kGemmNR;

// What a tile call does besides C (+)= A . B: first = overwrite C (else add to it) and add the
// bias; last = apply ReLU.
struct Epi {
  const float* bias;  // at this tile's first row, or null
  bool first, relu;
};


// ---------------------------------------------------------------- portable: 4 x 32, vector extension
namespace portable {
constexpr int MR = 4;

template <int R>
void tile(int64_t K, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid, Epi e) {
  v16 c[R][2];
  for (int r = 0; r < R; ++r) c[r][0] = c[r][1] = v16{};
  for (int64_t k = 0; k < K; ++k) {
    const v16 b0 = v16_load(Bp + k * NR), b1 = v16_load(Bp + k * NR + 16);
    for (int r = 0; r < R; ++r) {
      const float a = A[r * lda + k];
      c[r][0] += a * b0;
      c[r][1] += a * b1;
    }
  }
  for (int r = 0; r < R; ++r) {
    alignas(64) float row[NR];
    v16_store(row, c[r][0]);
    v16_store(row + 16, c[r][1]);
    float* cr = C + r * ldc;
    const float bv = e.first && e.bias ? e.bias[r] : 0.f;
    for (int j = 0; j < nvalid; ++j) {
      const float v = row[j] + bv + (e.first ? 0.f : cr[j]);
      cr[j] = e.relu ? relu1(v) : v;
    }
  }
}

void block(int64_t rows, int64_t K, const float* A, int64_t lda, const float* Bp, int64_t Kfull, int64_t panels, int64_t ncols,
           float* C, int64_t ldc, Epi e) {
  for (int64_t m = 0; m < rows; m += MR) {
    const int R = static_cast<int>(std::min<int64_t>(MR, rows - m));
    Epi em = e;
    if (em.bias) em.bias += m;
    for (int64_t p = 0; p < panels; ++p) {
      const int nv = static_cast<int>(std::min<int64_t>(NR, ncols - p * NR));
      const float* a = A + m * lda;
      const float* b = Bp + p * Kfull * NR;
      float* c = C + m * ldc + p * NR;
      switch (R) {
        case 4: tile<4>(K, a, lda, b, c, ldc, nv, em); break;
        case 3: tile<3>(K, a, lda, b, c, ldc, nv, em); break;
        case 2: tile<2>(K, a, lda, b, c, ldc, nv, em); break;
        default: tile<1>(K, a, lda, b, c, ldc, nv, em); break;
      }
    }
  }
}
}  // namespace portable

#ifdef SPP_X86
// ---------------------------------------------------------------- AVX-512: 12 x 32
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
namespace avx512 {
constexpr int MR = 12;

// A tile's accumulators into C: the first nvalid columns, bias (first K block) or C's old values
// (later blocks) added, then ReLU (last block).
template <int R, int NV>
__attribute__((always_inline)) inline void store(const __m512 (&c)[R][NV], float* C, int64_t ldc, int nvalid, Epi e) {
  const __mmask16 m0 = nvalid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nvalid) - 1);
  const __mmask16 m1 = nvalid >= 32 ? __mmask16(0xFFFF) : nvalid <= 16 ? __mmask16(0) : __mmask16((1u << (nvalid - 16)) - 1);
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    float* cr = C + r * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mk = v == 0 ? m0 : m1;
      __m512 x = c[r][v];
      if (e.first) {
        if (e.bias) x = _mm512_add_ps(x, _mm512_set1_ps(e.bias[r]));
      } else {
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk, cr + 16 * v));
      }
      if (e.relu) x = _mm512_max_ps(zero, x);  // max(0, NaN) = NaN: the second operand wins
      _mm512_mask_storeu_ps(cr + 16 * v, mk, x);
    }
  }
}

// R rows (<= 12) x NV zmm (1 or 2) of C. A rows lda apart; Bp rows ldb apart (NR in packed
// panels). PF: prefetch B 8 rows ahead. The hardware prefetchers fetch B's rows late, packed or
// read in place (rows a plane apart): gemm_packed 192 x 3136 x 576 on one Sapphire Rapids core,
// 131-143 -> 147-169 GFLOP/s; 4 to 24 rows ahead all alike.
template <int R, int NV, bool PF = false>
__attribute__((always_inline)) inline void tile(int64_t K, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C,
                                                int64_t ldc, int nvalid, Epi e) {
  __m512 c[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) c[r][v] = _mm512_setzero_ps();
  const float* a0 = A;
  const float* a4 = A + 4 * lda;
  const float* a8 = A + 8 * lda;
  for (int64_t k = 0; k < K; ++k) {
    if constexpr (PF) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(Bp + (k + 8) * ldb + 16 * v), _MM_HINT_T0);
    }
    __m512 b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(Bp + k * ldb + 16 * v);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const float* ar = r < 4 ? a0 + r * lda : r < 8 ? a4 + (r - 4) * lda : a8 + (r - 8) * lda;
      const __m512 av = _mm512_set1_ps(ar[k]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_fmadd_ps(av, b[v], c[r][v]);
    }
  }
  store<R, NV>(c, C, ldc, nvalid, e);
}

// R rows x up to 8 columns (one ymm): a last panel with <= 8 valid columns (conv3-5 at 14x14:
// 196 = 6 x 32 + 4). A zmm FMA takes both of Zen 4's 256-bit FMA pipes, a ymm one only one, so
// this takes half the time of the 16-column tile.
template <int R>
__attribute__((always_inline)) inline void tile8(int64_t K, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C,
                                                 int64_t ldc, int nvalid, Epi e) {
  __m256 c[R];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) c[r] = _mm256_setzero_ps();
  const float* a0 = A;
  const float* a4 = A + 4 * lda;
  const float* a8 = A + 8 * lda;
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b = _mm256_loadu_ps(Bp + k * ldb);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const float* ar = r < 4 ? a0 + r * lda : r < 8 ? a4 + (r - 4) * lda : a8 + (r - 8) * lda;
      c[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(ar + k), b, c[r]);
    }
  }
  // AVX2 masked moves (masked ymm ops of AVX-512 would need AVX-512VL): lane j if j < nvalid.
  const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(nvalid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    float* cr = C + r * ldc;
    __m256 x = c[r];
    if (e.first) {
      if (e.bias) x = _mm256_add_ps(x, _mm256_set1_ps(e.bias[r]));
    } else {
      x = _mm256_add_ps(x, _mm256_maskload_ps(cr, mk));
    }
    if (e.relu) x = _mm256_max_ps(zero, x);  // max(0, NaN) = NaN: the second operand wins
    _mm256_maskstore_ps(cr, mk, x);
  }
}

template <int R>
void tile_row(int64_t K, const float* A, int64_t lda, const float* Bp, int64_t Kfull, int64_t panels, int64_t ncols, float* C,
              int64_t ldc, Epi e) {
  for (int64_t p = 0; p < panels; ++p) {
    const int nv = static_cast<int>(std::min<int64_t>(NR, ncols - p * NR));
    const float* b = Bp + p * Kfull * NR;
    if (nv > 16)
      tile<R, 2, true>(K, A, lda, b, NR, C + p * NR, ldc, nv, e);
    else if (nv > 8)
      tile<R, 1>(K, A, lda, b, NR, C + p * NR, ldc, nv, e);
    else
      tile8<R>(K, A, lda, b, NR, C + p * NR, ldc, nv, e);
  }
}

// rows x (panels x NR, ncols valid) of C from K rows of packed B (panel stride Kfull * NR).
void block(int64_t rows, int64_t K, const float* A, int64_t lda, const float* Bp, int64_t Kfull, int64_t panels, int64_t ncols,
           float* C, int64_t ldc, Epi e) {
  for (int64_t m = 0; m < rows; m += MR) {
    const int R = static_cast<int>(std::min<int64_t>(MR, rows - m));
    Epi em = e;
    if (em.bias) em.bias += m;
    const float* a = A + m * lda;
    float* c = C + m * ldc;
    switch (R) {
      case 12: tile_row<12>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 11: tile_row<11>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 10: tile_row<10>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 9: tile_row<9>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 8: tile_row<8>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 7: tile_row<7>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 6: tile_row<6>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 5: tile_row<5>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 4: tile_row<4>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 3: tile_row<3>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 2: tile_row<2>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      default: tile_row<1>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
    }
  }
}

// R rows of C across column tiles [t0, t1) of 32: B's rows ldb apart for tiles < full, the last
// (tail columns) from `tail` ([K][32], zero past them). As avx2::row_unpacked, 32 columns a tile.
template <int R>
void row_unpacked(int64_t t0, int64_t t1, int64_t full, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                  const float* tail, float* C, int64_t ldc, Epi e) {
  for (int64_t t = t0; t < t1; ++t) {
    const int nv = static_cast<int>(std::min<int64_t>(NR, N - t * NR));
    if (t < full)
      tile<R, 2, true>(K, A, lda, B + t * NR, ldb, C + t * NR, ldc, NR, e);
    else if (nv > 16)
      tile<R, 2>(K, A, lda, tail, NR, C + t * NR, ldc, nv, e);
    else if (nv > 8)
      tile<R, 1>(K, A, lda, tail, NR, C + t * NR, ldc, nv, e);
    else
      tile8<R>(K, A, lda, tail, NR, C + t * NR, ldc, nv, e);
  }
}
}  // namespace avx512
#pragma GCC pop_options

// ---------------------------------------------------------------- AVX-512 BF16: 12 x 32, bfloat16 in
// A and B bfloat16 (sppnet/bf16.h), products and sums in FP32 by vdpbf16ps: each lane adds
// a[k] b[k] + a[k + 1] b[k + 1], so B is packed in pairs of k ([K / 2][NR][2] per panel, K rounded
// up to even with a zero row) and an A pair is one 32-bit broadcast straight from A's row. Twice
// the products per instruction of the FP32 kernel, on the same 24 accumulators.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bf16,avx2,fma")
namespace avx512bf16 {
constexpr int MR = 12;

template <int R, int NV>
__attribute__((always_inline)) inline void tile(int64_t K, const uint16_t* A, int64_t lda, const uint16_t* Bp, float* C,
                                                int64_t ldc, int nvalid, Epi e) {
  __m512 c[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) c[r][v] = _mm512_setzero_ps();
  const uint16_t* a0 = A;
  const uint16_t* a4 = A + 4 * lda;
  const uint16_t* a8 = A + 8 * lda;
  // One pair of k for every row; `half`: the last k of an odd K alone (the element after it may be
  // past A's end, or an Inf that 0 x Inf would turn into NaN), B's packed pair ending in a zero.
  auto step = [&](int64_t k, bool half) __attribute__((always_inline)) {
    __m512bh b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(Bp + k * NR + 32 * v);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const uint16_t* ar = r < 4 ? a0 + r * lda : r < 8 ? a4 + (r - 4) * lda : a8 + (r - 8) * lda;
      uint32_t pair = ar[k];
      if (!half) std::memcpy(&pair, ar + k, sizeof pair);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_dpbf16_ps(c[r][v], av, b[v]);
    }
  };
  const int64_t K2 = K & ~int64_t{1};
  for (int64_t k = 0; k < K2; k += 2) step(k, false);
  if (K2 < K) step(K2, true);
  avx512::store<R, NV>(c, C, ldc, nvalid, e);
}

template <int R>
void tile_row(int64_t K, const uint16_t* A, int64_t lda, const uint16_t* Bp, int64_t Kfull, int64_t panels, int64_t ncols, float* C,
              int64_t ldc, Epi e) {
  for (int64_t p = 0; p < panels; ++p) {
    const int nv = static_cast<int>(std::min<int64_t>(NR, ncols - p * NR));
    const uint16_t* b = Bp + p * Kfull * NR;
    if (nv > 16)
      tile<R, 2>(K, A, lda, b, C + p * NR, ldc, nv, e);
    else
      tile<R, 1>(K, A, lda, b, C + p * NR, ldc, nv, e);
  }
}

void block(int64_t rows, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* Bp, int64_t Kfull, int64_t panels, int64_t ncols,
           float* C, int64_t ldc, Epi e) {
  for (int64_t m = 0; m < rows; m += MR) {
    const int R = static_cast<int>(std::min<int64_t>(MR, rows - m));
    Epi em = e;
    if (em.bias) em.bias += m;
    with_rows<MR>(R, [&](auto r) { tile_row<decltype(r)::value>(K, A + m * lda, lda, Bp, Kfull, panels, ncols, C + m * ldc, ldc, em); });
  }
}
}  // namespace avx512bf16
#pragma GCC pop_options

// ---------------------------------------------------------------- AVX2 + FMA: 6 x 16
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
constexpr int MR = 6;

// R rows (<= 6) x NV ymm (8 or 16 columns) of C; Bp rows ldb apart (NR in packed panels).
template <int R, int NV>
__attribute__((always_inline)) inline void tile(int64_t K, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C,
                                                int64_t ldc, int nvalid, Epi e) {
  __m256 c[R][NV];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) c[r][v] = _mm256_setzero_ps();
  const float* a3 = A + 3 * lda;
  for (int64_t k = 0; k < K; ++k) {
    // B's rows are NR floats apart and this tile reads half of each: the hardware prefetchers
    // leave most of them to come from L2 as the FMAs need them (perf: the FMAs on B wait). 16
    // rows ahead: googlenet's convs 24 -> 21 ms (conv_check googlenet, Zen 3). Past the panel's
    // end it fetches lines it does not need; prefetches never fault.
    _mm_prefetch(reinterpret_cast<const char*>(Bp + (k + 16) * ldb), _MM_HINT_T0);
    __m256 b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(Bp + k * ldb + 8 * v);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const float* ar = r < 3 ? A + r * lda : a3 + (r - 3) * lda;
      const __m256 av = _mm256_broadcast_ss(ar + k);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) c[r][v] = _mm256_fmadd_ps(av, b[v], c[r][v]);
    }
  }
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    float* cr = C + r * ldc;
    __m256 x[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) x[v] = e.first && e.bias ? _mm256_add_ps(c[r][v], _mm256_set1_ps(e.bias[r])) : c[r][v];
    if (nvalid >= 8 * NV) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        if (!e.first) x[v] = _mm256_add_ps(x[v], _mm256_loadu_ps(cr + 8 * v));
        if (e.relu) x[v] = _mm256_max_ps(zero, x[v]);  // max(0, NaN) = NaN: the second operand wins
        _mm256_storeu_ps(cr + 8 * v, x[v]);
      }
    } else {
      alignas(32) float row[8 * NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) _mm256_store_ps(row + 8 * v, x[v]);
      for (int j = 0; j < nvalid; ++j) {
        const float v = row[j] + (e.first ? 0.f : cr[j]);
        cr[j] = e.relu ? relu1(v) : v;
      }
    }
  }
}

// A row block across the panels, 16 columns a tile; a last block of at most 8 columns (14 x 14
// maps: 196 = 12 x 16 + 4; 7 x 7: 49 = 3 x 16 + 1) takes the 8-column tile, half the FMAs.
template <int R>
void tile_row(int64_t K, const float* A, int64_t lda, const float* Bp, int64_t Kfull, int64_t panels, int64_t ncols, float* C,
              int64_t ldc, Epi e) {
  for (int64_t p = 0; p < panels; ++p)
    for (int h = 0; h < 2; ++h) {
      const int64_t j0 = p * NR + 16 * h;
      if (j0 >= ncols) break;
      const int nv = static_cast<int>(std::min<int64_t>(16, ncols - j0));
      if (nv > 8)
        tile<R, 2>(K, A, lda, Bp + p * Kfull * NR + 16 * h, NR, C + j0, ldc, nv, e);
      else
        tile<R, 1>(K, A, lda, Bp + p * Kfull * NR + 16 * h, NR, C + j0, ldc, nv, e);
    }
}

void block(int64_t rows, int64_t K, const float* A, int64_t lda, const float* Bp, int64_t Kfull, int64_t panels, int64_t ncols,
           float* C, int64_t ldc, Epi e) {
  for (int64_t m = 0; m < rows; m += MR) {
    const int R = static_cast<int>(std::min<int64_t>(MR, rows - m));
    Epi em = e;
    if (em.bias) em.bias += m;
    const float* a = A + m * lda;
    float* c = C + m * ldc;
    switch (R) {
      case 6: tile_row<6>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 5: tile_row<5>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 4: tile_row<4>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 3: tile_row<3>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      case 2: tile_row<2>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
      default: tile_row<1>(K, a, lda, Bp, Kfull, panels, ncols, c, ldc, em); break;
    }
  }
}
// C[rows m0..m1) x [column tiles t0..t1) of 16 = A . B, B row-major (rows ldb apart, read in
// place) for tiles < full, the last tile (tail columns) from `tail` ([K][16], zero past them).
// R rows of C across column tiles [t0, t1) of 16: B's rows ldb apart for tiles < full, the rest
// from tail (rows 16 apart). One function per R, as tile_row: the tile's registers stay its own.
template <int R>
void row_unpacked(int64_t t0, int64_t t1, int64_t full, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                  const float* tail, float* C, int64_t ldc, Epi e) {
  for (int64_t t = t0; t < t1; ++t) {
    const int nv = static_cast<int>(std::min<int64_t>(16, N - t * 16));
    if (t < full)
      tile<R, 2>(K, A, lda, B + t * 16, ldb, C + t * 16, ldc, 16, e);
    else if (nv > 8)
      tile<R, 2>(K, A, lda, tail, 16, C + t * 16, ldc, nv, e);
    else
      tile<R, 1>(K, A, lda, tail, 16, C + t * 16, ldc, nv, e);
  }
}
}  // namespace avx2
#pragma GCC pop_options
#endif  // SPP_X86

// A micro-kernel family: its block function over elements T (float, or bfloat16 bits) and its rows per tile.
template <typename T>
struct Kernel {
  void (*block)(int64_t, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t, float*, int64_t, Epi);
  int mr;
};

Kernel<float> kernel() {
#ifdef SPP_X86
  static const Isa isa = detect_isa();
  if (isa == Isa::kAvx512) return {avx512::block, avx512::MR};
  if (isa == Isa::kAvx2) return {avx2::block, avx2::MR};
#endif
  return {portable::block, portable::MR};
}


// One thread's block of C: rows [m0, m1), panels [p0, p1). K in blocks of kc; panels in groups
// whose kc x group slice of B is about L2-sized, each group swept by every row block. Kfull: the
// packed panels' row count (K, or K rounded up to pairs for bfloat16); kc stays even for pairs.
template <typename T>
void compute(const Kernel<T>& kr, int64_t m0, int64_t m1, int64_t p0, int64_t p1, int64_t N, int64_t K, int64_t Kfull, const T* A,
             int64_t lda, const T* Bp, float* C, int64_t ldc, const float* bias, bool relu) {
  const int64_t kL2 = settings().gemm_l2;
  int64_t kc = gemm_k_block(K);
  if (sizeof(T) == 2 && kc < K) kc += kc & 1;  // bfloat16: blocks start on a pair
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t kb = std::min(kc, K - k0);
    const int64_t group = std::max<int64_t>(1, kL2 / (kb * NR * static_cast<int64_t>(sizeof(T))));
    for (int64_t g0 = p0; g0 < p1; g0 += group) {
      const int64_t g1 = std::min(p1, g0 + group);
      Epi e{bias ? bias + m0 : nullptr, k0 == 0, relu && k0 + kb == K};
      kr.block(m1 - m0, kb, A + m0 * lda + k0, lda, Bp + g0 * Kfull * NR + k0 * NR, Kfull, g1 - g0, std::min(N, g1 * NR) - g0 * NR,
               C + m0 * ldc + g0 * NR, ldc, e);
    }
  }
}

// Threads for an M x N x K product: too little work for a second thread below ~1 MFLOP.
int64_t gemm_threads(int64_t M, int64_t N, int64_t K, bool parallel) {
  return parallel && 2 * M * N * K >= (int64_t{1} << 20) ? num_threads() : 1;
}

// The rows of a grid of tm x tn thread blocks (tm * tn = T) over rblocks row blocks and cblocks
// column blocks: the one with the least work on its busiest thread (rows split at row-block
// multiples, columns at column blocks).
int64_t grid_rows(int64_t T, int64_t rblocks, int64_t cblocks) {
  int64_t best_tm = 1, best_cost = INT64_MAX;
  for (int64_t tm = 1; tm <= T; ++tm) {
    if (T % tm) continue;
    const int64_t tn = T / tm;
    const int64_t cost = ((rblocks + tm - 1) / tm) * ((cblocks + tn - 1) / tn);
    if (cost < best_cost) best_cost = cost, best_tm = tm;
  }
  return best_tm;
}

// C = A . B over packed B with kernel kr, the threads sharing it out (gemm_packed's contract).
template <typename T>
void run_gemm(const Kernel<T>& kr, int64_t M, int64_t N, int64_t K, int64_t Kfull, const T* A, int64_t lda, const T* Bp, float* C,
              int64_t ldc, const float* bias, bool relu, bool parallel) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // C = bias (then ReLU)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        const float v = bias ? bias[m] : 0.f;
        C[m * ldc + n] = relu ? relu1(v) : v;
      }
    return;
  }
  const int64_t panels = gemm_panels(N);
  const int64_t rblocks = (M + kr.mr - 1) / kr.mr;
  const int64_t T_ = gemm_threads(M, N, K, parallel);
  if (T_ <= 1) {
    compute(kr, 0, M, 0, panels, N, K, Kfull, A, lda, Bp, C, ldc, bias, relu);
    return;
  }
  const int64_t tm = grid_rows(T_, rblocks, panels), tn = T_ / tm;
  parallel_for(T_, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / tn, j = t % tn;
      const int64_t m0 = std::min(M, (rblocks * i / tm) * kr.mr), m1 = std::min(M, (rblocks * (i + 1) / tm) * kr.mr);
      const int64_t p0 = panels * j / tn, p1 = panels * (j + 1) / tn;
      if (m0 < m1 && p0 < p1) compute(kr, m0, m1, p0, p1, N, K, Kfull, A, lda, Bp, C, ldc, bias, relu);
    }
  });
}

}  // namespace

int64_t gemm_k_block(int64_t K) {
  const int64_t kKc = settings().gemm_kc;
  return K <= kKc * 5 / 4 ? K : kKc;
}

void gemm_pack_b(int64_t N, int64_t K, const float* B, int64_t ldb, float* Bp, bool parallel) {
  const int64_t panels = gemm_panels(N);
  auto run = [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n0 = q * NR;
      const int nv = static_cast<int>(std::min<int64_t>(NR, N - n0));
      float* d = Bp + q * K * NR;
      for (int64_t k = 0; k < K; ++k, d += NR) {
        const float* b = B + k * ldb + n0;
        if (nv == NR) {
          std::memcpy(d, b, sizeof(float) * NR);
        } else {
          std::memcpy(d, b, sizeof(float) * nv);
          std::memset(d + nv, 0, sizeof(float) * (NR - nv));
        }
      }
    }
  };
  if (parallel && panels * K >= 4096)
    parallel_for(panels, 1, run);
  else
    run(0, panels);
}

void gemm_packed(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                 const float* bias, bool relu, bool parallel) {
  run_gemm(kernel(), M, N, K, K, A, lda, Bp, C, ldc, bias, relu, parallel);
}

#ifdef SPP_X86
// Rows [m0, m1) of C across column tiles [t0, t1) of W (gemm_unpacked's), K in the GEMMs' blocks
// (compute()'s: the same sums in the same order); rows(r, ...) is the kernel family's
// row_unpacked<r> for a tile of r <= MR rows.
template <int MR, int W, typename Rows>
void block_unpacked(int64_t m0, int64_t m1, int64_t t0, int64_t t1, int64_t full, int64_t N, int64_t K, const float* A, int64_t lda,
                    const float* B, int64_t ldb, const float* tail, float* C, int64_t ldc, const float* bias, bool relu, Rows rows) {
  const int64_t kc = gemm_k_block(K);
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t kb = std::min(kc, K - k0);
    for (int64_t m = m0; m < m1; m += MR) {
      const int R = static_cast<int>(std::min<int64_t>(MR, m1 - m));
      const Epi e{bias && k0 == 0 ? bias + m : nullptr, k0 == 0, relu && k0 + kb == K};
      with_rows<MR>(R, [&](auto r) {
        rows(r, t0, t1, full, N, kb, A + m * lda + k0, lda, B + k0 * ldb, ldb, tail ? tail + k0 * W : nullptr, C + m * ldc, ldc, e);
      });
    }
  }
}
#endif

bool gemm_unpacked_available() {
#ifdef SPP_X86
  static const Isa isa = detect_isa();
  return isa == Isa::kAvx2 || isa == Isa::kAvx512;
#else
  return false;
#endif
}

bool gemm_unpacked(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                   const float* bias, bool relu, bool parallel) {
#ifdef SPP_X86
  if (!gemm_unpacked_available() || K <= 0) return false;
  if (M <= 0 || N <= 0) return true;
  // Columns a tile: 16 (AVX2: two ymm), 32 (AVX-512: two zmm); rows a tile: the kernel's MR.
  static const bool wide = detect_isa() == Isa::kAvx512;
  const int64_t W = wide ? NR : 16, MR = wide ? avx512::MR : avx2::MR;
  const int64_t full = N / W, tiles = (N + W - 1) / W;
  // The last columns (N off W) packed with zeros after them: tiles read W floats a row, and
  // past B's last row there may be nothing to read.
  FloatBuffer tail_buf;
  float* tail = nullptr;
  if (tiles > full) {
    tail = tail_buf.get(static_cast<size_t>(K * W));
    const int64_t rem = N - full * W;
    for (int64_t k = 0; k < K; ++k) {
      std::memcpy(tail + k * W, B + k * ldb + full * W, sizeof(float) * rem);
      std::memset(tail + k * W + rem, 0, sizeof(float) * (W - rem));
    }
  }
  const int64_t rblocks = (M + MR - 1) / MR, T_ = gemm_threads(M, N, K, parallel);
  const int64_t tm = grid_rows(T_, rblocks, tiles), tn = T_ / tm;
  parallel_for(T_, 1, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      const int64_t i = t / tn, j = t % tn;
      const int64_t m0 = std::min(M, (rblocks * i / tm) * MR), m1 = std::min(M, (rblocks * (i + 1) / tm) * MR);
      const int64_t c0 = tiles * j / tn, c1 = tiles * (j + 1) / tn;
      if (m0 >= m1 || c0 >= c1) continue;
      if (wide)
        block_unpacked<avx512::MR, NR>(m0, m1, c0, c1, full, N, K, A, lda, B, ldb, tail, C, ldc, bias, relu,
                                       [](auto r, auto&&... a) { avx512::row_unpacked<decltype(r)::value>(a...); });
      else
        block_unpacked<avx2::MR, 16>(m0, m1, c0, c1, full, N, K, A, lda, B, ldb, tail, C, ldc, bias, relu,
                                     [](auto r, auto&&... a) { avx2::row_unpacked<decltype(r)::value>(a...); });
    }
  });
  return true;
#else
  (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc, (void)bias, (void)relu, (void)parallel;
  return false;
#endif
}

bool gemm_bf16_available() {
#ifdef SPP_X86
  static const bool ok = detect_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
  return ok;
#else
  return false;
#endif
}

void gemm_bf16_pack_rows(int64_t N, int64_t K, const float* X, int64_t ldx, uint16_t* Bp, bool parallel) {
  const int64_t panels = gemm_panels(N), Kp = gemm_bf16_rows(K);
  auto run = [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      uint16_t* d = Bp + q * Kp * NR;
      const int64_t n0 = q * NR;
      const int nv = static_cast<int>(std::min<int64_t>(NR, N - n0));
      for (int j = 0; j < NR; ++j) {
        uint16_t* dj = d + 2 * j;
        if (j >= nv) {
          for (int64_t k = 0; k < Kp; k += 2) dj[k * NR] = dj[k * NR + 1] = 0;
          continue;
        }
        const float* x = X + (n0 + j) * ldx;
        for (int64_t k = 0; k < K; ++k) dj[(k & ~int64_t{1}) * NR + (k & 1)] = float_to_bf16(x[k]);
        if (K & 1) dj[(K - 1) * NR + 1] = 0;
      }
    }
  };
  if (parallel && panels * K >= 4096)
    parallel_for(panels, 1, run);
  else
    run(0, panels);
}

void gemm_bf16_packed(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* Bp, float* C, int64_t ldc,
                      const float* bias, bool relu, bool parallel) {
#ifdef SPP_X86
  if (gemm_bf16_available()) return run_gemm(Kernel<uint16_t>{avx512bf16::block, avx512bf16::MR}, M, N, K, gemm_bf16_rows(K), A, lda,
                                              Bp, C, ldc, bias, relu, parallel);
#endif
  // Without BF16 products (callers check gemm_bf16_available() first): the same sums, one by one.
  (void)parallel;
  const int64_t Kp = gemm_bf16_rows(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const uint16_t* b = Bp + (n / NR) * Kp * NR + 2 * (n % NR);
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += bf16_to_float(A[m * lda + k]) * bf16_to_float(b[(k & ~int64_t{1}) * NR + (k & 1)]);
      const float v = s + (bias ? bias[m] : 0.f);
      C[m * ldc + n] = relu ? relu1(v) : v;
    }
}

namespace {

// SPPNET_AMX=1: gemm_nn as bf16x3 on AMX tiles (amx_cpu.h; the training's backward GEMMs), where
// every side is at least 32 and K at least 64 (a k step is 32: K below that is mostly padding).
// A and B packed (on the threads when `parallel`, B in 32-column blocks), then C in regions of
// kRegion x kRegion with K in blocks (amx_gemm_kblocked). False where it does not take the call.
bool gemm_nn_amx(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                 const float* bias, bool relu, bool parallel) {
  if (M < 32 || N < 32 || K < 64 || !amx_enabled()) return false;
  constexpr int64_t kRegion = 128;
  FloatBuffer abuf, bbuf;
  float* Ap = abuf.get(static_cast<size_t>(amx_a_floats(M, K, 2)));
  float* Bp = bbuf.get(static_cast<size_t>(amx_b_floats(N, K, 2)));
  const int64_t KR = amx_round(K);
  auto each = [&](int64_t n, auto&& f) {
    if (parallel)
      parallel_for(n, 1, [&](int64_t i0, int64_t i1) { for (int64_t i = i0; i < i1; ++i) f(i); });
    else
      for (int64_t i = 0; i < n; ++i) f(i);
  };
  each(amx_round(M) / 32, [&](int64_t i) { amx_pack_a_rows(32 * i, 32 * i + 32, M, K, A, lda, Ap, 2); });
  each(amx_round(N) / 32, [&](int64_t j) { amx_pack_rows(K, std::min<int64_t>(32, N - 32 * j), B + 32 * j, ldb, Bp + 32 * j * KR, 2); });
  const int64_t mr = (M + kRegion - 1) / kRegion, nr = (N + kRegion - 1) / kRegion;
  auto region = [&](int64_t t) {
    const int64_t i = t % mr, j = t / mr;
    amx_gemm_kblocked(2, i * kRegion, std::min(M, (i + 1) * kRegion), j * kRegion, std::min(N, (j + 1) * kRegion), K, Ap, Bp, C, ldc, bias, relu);
  };
  if (parallel)
    parallel_tasks(mr * nr, region);
  else
    for (int64_t t = 0; t < mr * nr; ++t) region(t);
  return true;
}

}  // namespace

void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
             const float* bias, bool relu, bool parallel) {
  if (M <= 0 || N <= 0) return;
  if (gemm_nn_amx(M, N, K, A, lda, B, ldb, C, ldc, bias, relu, parallel)) return;
  FloatBuffer buf;
  float* Bp = buf.get(static_cast<size_t>(gemm_packed_size(N, K)));
  gemm_pack_b(N, K, B, ldb, Bp, parallel);
  gemm_packed(M, N, K, A, lda, Bp, C, ldc, bias, relu, parallel);
}

}  // namespace cpu
}  // namespace sppnet
