// bf16x3 products on Intel AMX tiles, for the conv and linear paths that SPPNET_AMX=1 turns on
// (conv_cpu.cpp, linear_cpu.cpp).
//
// Each FP32 input x is split into a bfloat16 high part h = bf16(x) and a low part l = bf16(x - h),
// and a . b is summed in FP32 as al bh + ah bh + ah bl: the tile unit (TDPBF16PS) takes 16 x 32
// by 32 x 16 bfloat16 products a time at 16x the FP32 FMA rate of AVX-512, so three of them still
// beat one FP32 FMA by far. Each of the parts dropped (al bl, and the roundings of x - h in a and
// in b) is below 2^-16 of |a b|, so a product is within 3 x 2^-16 (4.6e-5) of its own size, the
// sums in FP32 on top: each output within 5e-5 of sum |a b| (+ |bias|). That worst case needs
// every error in one direction (every input and weight at the same place between two bfloat16s);
// random data gives 1-4e-6 (the FP32 kernels ~1e-7; the CUDA 'fp32' mode's three TF32 products
// ~64x tighter). Not bit-equal to the FP32 kernels. An infinity goes into the low part (h = 0): a
// x inf is ah x inf, inf x b is inf x bh, so infinities give FP32's infinities and NaNs, except
// inf x inf (NaN: 0 x inf in al bh). A finite x that would round past the largest bfloat16 has its
// high part truncated instead. Values, low parts and products below 2^-126 (FP32's denormals) are
// flushed to zero by the conversions and the tile unit: below ~3e-36 a value keeps only its high
// part (error up to 2^-8 of its products), and an infinity times a denormal gives NaN.
//
// Layouts (bfloat16 pairs, kept in float buffers): A (the filters, M x K) as tiles of 16 rows x
// 32 k, [M / 16][K / 32][h, l][16][32]; B (K x N, im2col's) as tiles of 16 pairs of k x 16
// columns, each row the 16 columns' (k, k + 1) pairs, [N / 16][K / 32][h, l][16][16][2]. M, N and
// K padded with zeros to 32.
#pragma once
#include <cstdint>

namespace sppnet {
namespace cpu {

// Whether the kernels may run for FP32 work (bf16x3): SPPNET_AMX=1 on a CPU with AMX-BF16 and
// AVX-512 BF16, whose OS granted this process the tile state (settings.h asks for it once, as the
// settings are read).
bool amx_enabled();
// Whether they may run for BF16 products (linear's math 'bf16'): amx_enabled(), or, unless
// SPPNET_AMX=0, such a CPU whose OS grants the tile state when this is first called with
// settings().amx_products set (asked once; a process that never calls it is never asked).
bool amx_products_enabled();

inline int64_t amx_round(int64_t n) { return (n + 31) / 32 * 32; }
// Floats a packed A of M x K takes; a packed B of N columns and K rows (parts: below).
inline int64_t amx_a_floats(int64_t M, int64_t K, int parts) { return amx_round(M) * amx_round(K) * parts / 2; }
inline int64_t amx_b_floats(int64_t N, int64_t K, int parts) { return amx_round(N) * amx_round(K) * parts / 2; }

// Each with `parts` 2 (bf16x3, the layouts above) or 1 (BF16 products: the high parts alone,
// each operand rounded to its nearest bfloat16; half the bytes, a third of the products; conv2d's
// math 'bf16'). The floats these take: amx_a_floats / amx_b_floats with parts, below.
// Packs A (rows lda apart).
void amx_pack_a(int64_t M, int64_t K, const float* A, int64_t lda, float* Ap, int parts);
// Packs `panels` panels of im2col's layout (gemm_cpu.h: [K][32] each, one after another).
void amx_pack_panels(int64_t K, int64_t panels, const float* panels_f32, float* Bp, int parts);
// Packs N columns of a row-major B read in place (B[k][n] at B[k * ldb + n]), zeros past N.
void amx_pack_rows(int64_t K, int64_t N, const float* B, int64_t ldb, float* Bp, int parts);
// C rows [m0, m1) (m0 a multiple of 32), columns [0, N) = A . B (+ bias[m]) (then ReLU), C's rows
// ldc apart, on the calling thread (it loads its tile configuration and releases it after).
void amx_gemm(int64_t m0, int64_t m1, int64_t N, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc, const float* bias,
              bool relu, int parts);

// ---- Linear layers with many rows (linear_cpu.cpp): C[out][rows] = W . x^T ----
//
// `parts` 2 is bf16x3 as above; `parts` 1 is BF16 products (math 'bf16': each operand rounded
// to its nearest bfloat16, one exact product each, FP32 sums, as gemm_bf16_packed's), whose
// layouts keep the high parts only (half the bytes). A and B as above otherwise.
// Packs rows [m0, m1) of A (m0 a multiple of 16) into A's layout at Ap (the whole matrix's
// start), from FP32 rows or from bfloat16 ones (the high part exact, the low part zero).
void amx_pack_a_rows(int64_t m0, int64_t m1, int64_t M, int64_t K, const float* A, int64_t lda, float* Ap, int parts);
void amx_pack_a_bf16(int64_t m0, int64_t m1, int64_t M, int64_t K, const uint16_t* A, int64_t lda, float* Ap, int parts);
// Packs column blocks [nb0, nb1) (16 columns each) of B = X^T (B[k][n] = X[n][k]: a linear
// layer's input rows, ldx apart) into B's layout at Bp; columns past N zero.
void amx_pack_bt(int64_t nb0, int64_t nb1, int64_t N, int64_t K, const float* X, int64_t ldx, float* Bp, int parts);
// C rows [m0, m1) x columns [n0, n1) (m0 and n0 multiples of 32) = A . B (+ bias[m]) (then ReLU),
// on the calling thread: K in blocks (the block's A and B stay in L2 while the region's
// accumulators go to a scratch between blocks), for a K too long to keep a row block of A and a
// column block of B in L2 (fc6: 12,800).
void amx_gemm_kblocked(int parts, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const float* Ap, const float* Bp, float* C,
                       int64_t ldc, const float* bias, bool relu);

}  // namespace cpu
}  // namespace sppnet
