// Dense GEMM for the CPU layers: C[M, N] = A[M, K] . B[K, N] (+ bias[m]) (then ReLU), row-major
// with leading dimensions.
//
// B is packed into panels of kGemmNR columns ([K][kGemmNR] each, panel j at Bp + j * K * kGemmNR,
// columns past N zero); A is read in place, a row block at a time. The micro-kernels are 12 x 32
// (AVX-512: 24 zmm accumulators, each B row two zmm loads, each A element an embedded broadcast),
// 6 x 16 (AVX2 + FMA: 12 ymm) and 4 x 32 (portable vector extension), picked at run time by
// detect_isa() (SPPNET_CPU_ISA can narrow it). K is cut into blocks of kc rows and the panels into
// groups whose kc x group block stays in L2; the threads take disjoint blocks of C (rows when the
// columns are few, columns otherwise) and share the packed B. Tuning knobs, read once:
// SPPNET_GEMM_KC (K block, default 512), SPPNET_GEMM_L2 (bytes of B per panel group, default
// half the core's L2: the other half holds A's rows as they stream through).
#pragma once
#include <cstdint>

namespace sppnet {
namespace cpu {

void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
             const float* bias, bool relu, bool parallel);

// The K block of the GEMMs: all of K up to 5/4 of SPPNET_GEMM_KC (default 512; a short last block
// is not worth a pass over C), else that; each block after the first reads and writes C again.
int64_t gemm_k_block(int64_t K);

// ---- the packed-B interface (im2col writes the panels directly) ----
constexpr int kGemmNR = 32;
inline int64_t gemm_panels(int64_t N) { return (N + kGemmNR - 1) / kGemmNR; }
// Floats a packed B of N columns and K rows takes.
inline int64_t gemm_packed_size(int64_t N, int64_t K) { return gemm_panels(N) * K * kGemmNR; }
// Packs B[K][N] (row stride ldb) into Bp, zeroing the last panel's columns past N.
void gemm_pack_b(int64_t N, int64_t K, const float* B, int64_t ldb, float* Bp, bool parallel);
// C = A . B with B packed by gemm_pack_b (or written in that layout).
void gemm_packed(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                 const float* bias, bool relu, bool parallel);


// C = A . B (+ bias[m]) (then ReLU) with B row-major [K][N] (rows ldb apart) read in place, not
// packed: a 1x1 convolution's input planes are its B. The AVX2 and AVX-512 kernels, where it was
// measured (bench/RESULTS.md, "1x1 convolutions without the copy"); false, with nothing done,
// elsewhere (the caller packs instead). The sums as gemm_packed's, in the same order.
bool gemm_unpacked(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                   const float* bias, bool relu, bool parallel);
// Whether gemm_unpacked has kernels for this CPU (and SPPNET_CPU_ISA): AVX2 or AVX-512.
bool gemm_unpacked_available();

// ---- bfloat16 products (AVX-512 BF16: vdpbf16ps), FP32 sums ----
// Whether this CPU (and SPPNET_CPU_ISA) allows them; the functions below are for when it does.
bool gemm_bf16_available();
// The packed rows of a bfloat16 B: K rounded up to pairs of k.
inline int64_t gemm_bf16_rows(int64_t K) { return K + (K & 1); }
// Packs B = X^T (B[k][n] = X[n][k], X's rows ldx apart) rounded to bfloat16, in panels of kGemmNR
// columns as pairs of k ([gemm_bf16_rows(K) / 2][kGemmNR][2] each), columns past N zero.
void gemm_bf16_pack_rows(int64_t N, int64_t K, const float* X, int64_t ldx, uint16_t* Bp, bool parallel);
// C = A . B (+ bias[m]) (then ReLU), A bfloat16 rows lda apart, B packed by gemm_bf16_pack_rows:
// each product of two bfloat16 exact in FP32, the sums in FP32 as gemm_packed's.
void gemm_bf16_packed(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* Bp, float* C, int64_t ldc,
                      const float* bias, bool relu, bool parallel);

}  // namespace cpu
}  // namespace sppnet
