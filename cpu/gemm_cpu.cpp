#include "gemm_cpu.h"

#include <algorithm>
#include <vector>

#include "isa.h"
#include "parallel.h"
#include "vec.h"


namespace sppnet {
namespace cpu {
namespace {

constexpr int kNR = 32;  // columns per strip: two 16-float vectors
constexpr int kMR = 4;   // rows per micro-tile

// One 32-column strip: Bp is the packed strip [K][32] (zero beyond nvalid).
SPP_ISA_CLONES
void strip(int64_t M, int64_t K, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid,
           const float* bias, bool relu) {
  int64_t m = 0;
  for (; m + kMR <= M; m += kMR) {
    // Eight named accumulators: a local array would live on the stack (zeroed by rep stos).
    v16 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
    const float* a0 = A + m * lda;
    const float* a1 = a0 + lda;
    const float* a2 = a1 + lda;
    const float* a3 = a2 + lda;
    for (int64_t k = 0; k < K; ++k) {
      const v16 b0 = v16_load(Bp + k * kNR), b1 = v16_load(Bp + k * kNR + 16);
      c00 += a0[k] * b0;
      c01 += a0[k] * b1;
      c10 += a1[k] * b0;
      c11 += a1[k] * b1;
      c20 += a2[k] * b0;
      c21 += a2[k] * b1;
      c30 += a3[k] * b0;
      c31 += a3[k] * b1;
    }
    const v16 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
    for (int r = 0; r < kMR; ++r) {
      alignas(64) float row[kNR];
      v16_store(row, acc[r][0]);
      v16_store(row + 16, acc[r][1]);
      const float bv = bias ? bias[m + r] : 0.f;
      float* c = C + (m + r) * ldc;
      for (int j = 0; j < nvalid; ++j) {
        const float v = row[j] + bv;
        c[j] = relu ? (v > 0.f ? v : (v != v ? v : 0.f)) : v;
      }
    }
  }
  for (; m < M; ++m) {
    v16 acc0 = {}, acc1 = {};
    const float* a0 = A + m * lda;
    for (int64_t k = 0; k < K; ++k) {
      acc0 += a0[k] * v16_load(Bp + k * kNR);
      acc1 += a0[k] * v16_load(Bp + k * kNR + 16);
    }
    alignas(64) float row[kNR];
    v16_store(row, acc0);
    v16_store(row + 16, acc1);
    const float bv = bias ? bias[m] : 0.f;
    float* c = C + m * ldc;
    for (int j = 0; j < nvalid; ++j) {
      const float v = row[j] + bv;
      c[j] = relu ? (v > 0.f ? v : (v != v ? v : 0.f)) : v;
    }
  }
}

}  // namespace

void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
             const float* bias, bool relu, bool parallel) {
  const int64_t strips = (N + kNR - 1) / kNR;
  auto run = [&](int64_t s0, int64_t s1) {
    std::vector<float> Bp(static_cast<size_t>(K * kNR));
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t n0 = s * kNR;
      const int nvalid = static_cast<int>(std::min<int64_t>(kNR, N - n0));
      for (int64_t k = 0; k < K; ++k) {
        const float* b = B + k * ldb + n0;
        float* d = Bp.data() + k * kNR;
        int j = 0;
        for (; j < nvalid; ++j) d[j] = b[j];
        for (; j < kNR; ++j) d[j] = 0.f;
      }
      strip(M, K, A, lda, Bp.data(), C + n0, ldc, nvalid, bias, relu);
    }
  };
  if (parallel)
    parallel_for(strips, 1, run);
  else
    run(0, strips);
}

}  // namespace cpu
}  // namespace sppnet
