// A small dense GEMM for the CPU layers: C[M, N] = A[M, K] . B[K, N] (+ bias[m]) (then ReLU),
// row-major with leading dimensions. Packs 32-column strips of B and runs a 4 x 32 register-blocked
// micro-kernel, multithreaded over strips. Straightforward by design; the fast GEMM is its own work.
#pragma once
#include <cstdint>

namespace sppnet {
namespace cpu {

void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
             const float* bias, bool relu, bool parallel);

}  // namespace cpu
}  // namespace sppnet
