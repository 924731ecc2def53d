// Built instead of the CUDA sources when nvcc was not found: every CUDA entry point reports
// why, so the library can say which path runs and why.
#include "sppnet/device.h"
#include "sppnet/spp.h"

namespace sppnet {
namespace cuda {
namespace {
const char* kWhy = "sppnet was built without CUDA (nvcc was not found when the addon was compiled)";
Status unavailable() { return Status::Error(Code::kUnavailable, kWhy); }
}  // namespace

DeviceInfo query() {
  DeviceInfo d;
  d.error = kWhy;
  return d;
}
Status malloc_device(size_t, void** ptr) {
  *ptr = nullptr;
  return unavailable();
}
void free_device(void*) {}
Status copy_h2d(void*, const void*, size_t) { return unavailable(); }
Status copy_d2h(void*, const void*, size_t) { return unavailable(); }
Status copy_d2d(void*, const void*, size_t) { return unavailable(); }
Status memory_info(size_t*, size_t*) { return unavailable(); }
Status spp_forward(const SppProblem&, const float*, float*) { return unavailable(); }
Status spp_backward(const SppProblem&, const float*, const float*, float*) { return unavailable(); }

}  // namespace cuda
}  // namespace sppnet
