// Tensor-core GEMMs (mma.sync, sm_80 and newer): convolution as an implicit GEMM over the
// output pixels of every map of a ragged batch, and a dense C = A . B^T for linear layers.
// Internal to cuda/: layers_cuda.cu picks these or its direct kernels (see ConvMath).
#pragma once
#include <cstdint>

#include "sppnet/layers.h"

namespace sppnet {
namespace cuda {
namespace tc {

// True when the current device can run the tensor-core kernels (compute capability >= 8.0).
bool supported();

// conv2d over a ragged batch in p.math (kTf32, kBf16 or kFp32; the caller handles kDirect).
// M = the output pixels of all maps (tiles span map boundaries), N = out channels of a group,
// K = in channels of a group x kh x kw; one launch for all maps and groups.
Status conv2d(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
              const RaggedView& out, float* y);

// C[M, N] = A[M, K] . B[N, K]^T (+ bias[N]) (then ReLU), all row-major device memory; math as
// ConvMath (not kDirect). Split-K (partial sums in a scratch buffer, reduced in a fixed order:
// deterministic) when the tiles alone cannot fill the device.
Status gemm_tn(int64_t M, int32_t N, int32_t K, const float* A, const float* B, const float* bias, bool relu, int32_t math,
               float* C);

}  // namespace tc
}  // namespace cuda
}  // namespace sppnet
