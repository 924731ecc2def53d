// Tensor-core GEMMs with mma.sync (sm_80+): host side. The kernels and their design notes are in
// gemm_tc_kernels.cuh; this file builds the per-layer tables, picks tile sizes and split-K, and
// launches. See gemm_tc.h.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "gemm_tc.h"
#include "gemm_tc_kernels.cuh"
#include "kernel.h"

namespace sppnet {
namespace cuda {
namespace tc {
namespace {

using namespace kern;

Status device_sms(int* sms) {
  int dev = 0;
  SPP_CUDA_TRY(cudaGetDevice(&dev), "cudaGetDevice");
  SPP_CUDA_TRY(cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev), "querying the multiprocessor count");
  return Status::Ok();
}

// FP32 (3xTF32) runs with 64-row tiles only (see tile_rows).
template <int BM>
void launch_conv(int32_t math, dim3 grid, const ConvArgs& a) {
  if (math == kMathBf16) SPP_LAUNCH(grid, kThreads, 0, conv_tc_kernel<BM, kMathBf16>)(a);
  else if (math == kMathTf32) SPP_LAUNCH(grid, kThreads, 0, conv_tc_kernel<BM, kMathTf32>)(a);
  else if constexpr (BM == 64) SPP_LAUNCH(grid, kThreads, 0, conv_tc_kernel<BM, kMathFp32>)(a);
}

template <int BM>
void launch_gemm(int32_t math, dim3 grid, const GemmArgs& a) {
  if (math == kMathBf16) SPP_LAUNCH(grid, kThreads, 0, gemm_tc_kernel<BM, kMathBf16>)(a);
  else if (math == kMathTf32) SPP_LAUNCH(grid, kThreads, 0, gemm_tc_kernel<BM, kMathTf32>)(a);
  else if constexpr (BM == 64) SPP_LAUNCH(grid, kThreads, 0, gemm_tc_kernel<BM, kMathFp32>)(a);
}

}  // namespace

bool supported() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 8;
}

Status conv2d(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
              const RaggedView& out, float* y) {
  if (in.count == 0) return Status::Ok();
  const int64_t K64 = int64_t{p.in_channels / p.groups} * p.kernel_h * p.kernel_w;
  if (K64 > (int64_t{1} << 30)) return Status::Error(Code::kInvalidArgument, "conv2d: in channels x kernel area exceeds 2^30");
  const ConvTables t = conv_tables(in, out, p);
  if (t.M == 0) return Status::Ok();
  int sms = 0;
  Status s = device_sms(&sms);
  if (!s.ok()) return s;
  const Plan pl = conv_plan(t.M, p.out_channels / p.groups, p.groups, t.K, p.math, sms);
  if (pl.ntiles > 65535 || p.groups * pl.splits > 65535)
    return Status::Error(Code::kInvalidArgument, "conv2d: too many out channels or groups for one launch");
  if (pl.mtiles > 2147483647) return Status::Error(Code::kInvalidArgument, "conv2d: too many output pixels for one launch");
  Scratch d;
  s = d.alloc(t.bytes.size(), "allocating conv2d tables");
  if (!s.ok()) return s;
  SPP_CUDA_TRY(cudaMemcpyAsync(d.get(), t.bytes.data(), t.bytes.size(), cudaMemcpyHostToDevice, cudaStreamPerThread),
               "uploading conv2d tables");
  ConvArgs a = conv_args(t, d.get(), in, p, x, weight, bias, y);
  Scratch part;
  if (pl.splits > 1) {
    s = part.alloc(sizeof(float) * size_t(pl.splits) * size_t(t.M) * size_t(p.out_channels), "allocating conv2d split-K partial sums");
    if (!s.ok()) return s;
    a.partial = reinterpret_cast<float*>(part.get());
    a.kchunk = pl.kchunk;
    a.splits = static_cast<int32_t>(pl.splits);
  }
  const dim3 grid(static_cast<unsigned>(pl.mtiles), static_cast<unsigned>(pl.ntiles), static_cast<unsigned>(p.groups * pl.splits));
  if (pl.bm == 64) launch_conv<64>(p.math, grid, a);
  else launch_conv<128>(p.math, grid, a);
  if (pl.splits > 1) {
    const int64_t MN = t.M * p.out_channels;
    const int64_t nb = std::min<int64_t>((MN + 255) / 256, 65535 * 16);
    SPP_LAUNCH(static_cast<unsigned>(std::max<int64_t>(nb, 1)), 256, 0, conv_splitk_reduce_kernel)(a, p.out_channels);
  }
  return finish("conv2d tensor-core kernel");
}

Status gemm_tn(int64_t M, int32_t N, int32_t K, const float* A, const float* B, const float* bias, bool relu, int32_t math,
               float* C) {
  if (M == 0 || N == 0) return Status::Ok();
  int sms = 0;
  Status s = device_sms(&sms);
  if (!s.ok()) return s;
  const Plan pl = gemm_plan(M, N, K, math, sms);
  if (pl.mtiles > 2147483647 || pl.ntiles > 65535) return Status::Error(Code::kInvalidArgument, "linear: matrix too large for one launch");
  GemmArgs a;
  std::memset(&a, 0, sizeof a);  // padding too: the kernel's parameter bytes are then all defined
  a.A = A, a.B = B, a.bias = bias, a.C = C, a.partial = nullptr, a.M = M, a.N = N, a.K = K, a.kchunk = pl.kchunk, a.relu = relu;
  Scratch part;
  if (pl.splits > 1) {
    s = part.alloc(sizeof(float) * size_t(pl.splits) * size_t(M) * size_t(N), "allocating split-K partial sums");
    if (!s.ok()) return s;
    a.partial = reinterpret_cast<float*>(part.get());
  }
  const dim3 grid(static_cast<unsigned>(pl.mtiles), static_cast<unsigned>(pl.ntiles), static_cast<unsigned>(pl.splits));
  if (pl.bm == 64) launch_gemm<64>(math, grid, a);
  else launch_gemm<128>(math, grid, a);
  if (pl.splits > 1) {
    const int64_t MN = M * N;
    const int64_t nb = std::min<int64_t>((MN + 255) / 256, 65535 * 16);
    SPP_LAUNCH(static_cast<unsigned>(std::max<int64_t>(nb, 1)), 256, 0, splitk_reduce_kernel)(
        MN, N, static_cast<int32_t>(pl.splits), a.partial, bias, relu, C);
  }
  return finish("linear tensor-core kernel");
}

}  // namespace tc
}  // namespace cuda
}  // namespace sppnet
