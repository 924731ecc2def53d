// Built instead of the CUDA sources when nvcc was not found: every CUDA entry point reports
// why, so the library can say which path runs and why.
#include "sppnet/device.h"
#include "sppnet/layers.h"
#include "sppnet/spp.h"

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
Status spp_forward(const SppProblem&, const float*, float*) { return unavailable(); }
Status spp_backward(const SppProblem&, const float*, const float*, float*) { return unavailable(); }

}  // namespace cuda
}  // namespace sppnet

namespace sppnet {
namespace cuda {
Status conv2d_forward(const RaggedView&, const float*, const Conv2dParams&, const float*, const float*, const RaggedView&, float*) {
  return unavailable();
}
Status max_pool2d_forward(const RaggedView&, const float*, const Pool2dParams&, const RaggedView&, float*) {
  return unavailable();
}
Status lrn_forward(const RaggedView&, const float*, const LrnParams&, float*) { return unavailable(); }
Status lrn_max_pool2d_forward(const RaggedView&, const float*, const LrnParams&, const Pool2dParams&, const RaggedView&, float*) {
  return unavailable();
}
Status linear_forward(int64_t, int32_t, int32_t, const float*, const float*, const float*, bool, int32_t, float*) {
  return unavailable();
}
Status relu_forward(int64_t, const float*, float*) { return unavailable(); }
Status softmax_forward(int64_t, int32_t, const float*, float*) { return unavailable(); }
Status conv2d_backward(const RaggedView&, const float*, const Conv2dParams&, const float*, const RaggedView&, const float*, float*,
                       float*, float*) {
  return unavailable();
}
Status max_pool2d_backward(const RaggedView&, const float*, const Pool2dParams&, const RaggedView&, const float*, float*) {
  return unavailable();
}
Status lrn_backward(const RaggedView&, const float*, const LrnParams&, const float*, float*) { return unavailable(); }
Status linear_backward(int64_t, int32_t, int32_t, const float*, const float*, const float*, float*, float*, float*) {
  return unavailable();
}
Status relu_backward(int64_t, const float*, const float*, float*) { return unavailable(); }
Status dropout_forward(int64_t, const float*, const DropoutParams&, float*, float*) { return unavailable(); }
Status multiply(int64_t, const float*, const float*, float*) { return unavailable(); }
Status softmax_cross_entropy(int64_t, int32_t, const float*, const int32_t*, float*, double*, int32_t*) { return unavailable(); }
Status sgd_step(int64_t, float*, const float*, float*, const SgdParams&) { return unavailable(); }
Status adam_step(int64_t, float*, const float*, float*, float*, const AdamParams&) { return unavailable(); }
}  // namespace cuda
}  // namespace sppnet
