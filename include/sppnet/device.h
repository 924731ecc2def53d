// CUDA device management used by the binding. In a build without nvcc these functions exist
// too and report that CUDA was not built (cuda/unavailable.cpp).
#pragma once
#include <cstddef>
#include <string>

#include "status.h"

namespace sppnet {
namespace cuda {

struct DeviceInfo {
  bool built = false;       // compiled with nvcc
  int device_count = 0;     // devices the runtime sees
  int runtime_version = 0;  // e.g. 13000
  int driver_version = 0;   // 0 when no driver
  std::string error;        // why no device answers, when device_count == 0
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  size_t total_memory = 0;
  std::string archs;        // the architectures compiled in
};

DeviceInfo query();
Status malloc_device(size_t bytes, void** ptr);
void free_device(void* ptr);  // never fails loudly: called from destructors
Status copy_h2d(void* dst, const void* src, size_t bytes);
Status copy_d2h(void* dst, const void* src, size_t bytes);
Status copy_d2d(void* dst, const void* src, size_t bytes);
Status memory_info(size_t* free_bytes, size_t* total_bytes);
// Waits for the work the calling thread queued on its stream (cudaStreamPerThread).
Status synchronize();

}  // namespace cuda
}  // namespace sppnet
