// Turning CUDA runtime errors into Status values (never exit, never abort).
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "sppnet/status.h"

namespace sppnet {
namespace cuda {

inline Status from_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  (void)cudaGetLastError();  // clear it (non-sticky errors), so the next call on this thread starts clean
  const Code code = (e == cudaErrorMemoryAllocation) ? Code::kOutOfMemory : Code::kCudaError;
  return Status::Error(code, std::string(what) + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace sppnet

#define SPP_CUDA_TRY(expr, what)                                     \
  do {                                                              \
    ::sppnet::Status s_ = ::sppnet::cuda::from_cuda((expr), (what)); \
    if (!s_.ok()) return s_;                                        \
  } while (0)
