// Built instead of the CUDA sources when nvcc was not found: every CUDA entry point reports
// why, so the library can say which path runs and why.
#include "sppnet/device.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cuda {
namespace {
#ifndef SPPNET_NO_CUDA
#define SPPNET_NO_CUDA "nvcc was not found when the addon was compiled"
#endif
const char* const kWhy = "sppnet was built without CUDA (" SPPNET_NO_CUDA ")";
Status unavailable() { return Status::Error(Code::kUnavailable, kWhy); }
}  // namespace

DeviceInfo query() {
  DeviceInfo d;
  d.error = kWhy;
  return d;
}
Status keep_pool_memory() { return unavailable(); }
Status malloc_device(size_t, void** ptr) {
  *ptr = nullptr;
  return unavailable();
}
void free_device(void*) {}
Status synchronize() { return unavailable(); }
Status trim_pool() { return unavailable(); }
Status pool_info(size_t*, size_t*) { return unavailable(); }
Status copy_h2d(void*, const void*, size_t) { return unavailable(); }
Status copy_d2h(void*, const void*, size_t) { return unavailable(); }
Status copy_d2d(void*, const void*, size_t) { return unavailable(); }
Status memory_info(size_t*, size_t*) { return unavailable(); }
void begin_kernel_timing(KernelTimes*) {}
void end_kernel_timing() {}
// Every op of ops.h (its parameters named and unused).
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#define SPPNET_UNAVAILABLE_OP(R, name, params) \
  R name params { return unavailable(); }
SPPNET_OPS(SPPNET_UNAVAILABLE_OP)
#undef SPPNET_UNAVAILABLE_OP
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

}  // namespace cuda
}  // namespace sppnet
