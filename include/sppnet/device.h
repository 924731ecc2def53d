// CUDA device management used by the binding. In a build without nvcc these functions exist
// too and report that CUDA was not built (cuda/unavailable.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

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
// Tensor memory: stream-ordered blocks of the device's default memory pool (cuda/device.cu says
// why that is safe across the threads that use them).
// Makes the pool keep freed memory instead of returning it at every synchronisation. Idempotent;
// the binding calls it once per addon instance, before its first device allocation.
Status keep_pool_memory();
// On the JS thread. Out of memory: trims the pool and retries once. On return the block is
// usable by any thread's stream.
Status malloc_device(size_t bytes, void** ptr);
// Queues the free on the calling thread's stream and returns at once. Every use of the block must
// have finished (its op's stream synchronised). Never fails loudly: called from destructors.
void free_device(void* ptr);
// Waits for the work the calling thread queued on its stream (cudaStreamPerThread).
Status synchronize();
// Gives the memory the default pool keeps and nothing uses back to the driver, once the frees
// this thread queued are done (it waits for them: on the JS thread, that is only frees). For
// a model that frees its activation buffers; other threads' blocks in use are untouched.
Status trim_pool();
// The default pool's reserved (held from the driver) and used (handed out) bytes.
Status pool_info(size_t* reserved_bytes, size_t* used_bytes);
Status copy_h2d(void* dst, const void* src, size_t bytes);
Status copy_d2h(void* dst, const void* src, size_t bytes);
Status copy_d2d(void* dst, const void* src, size_t bytes);
Status memory_info(size_t* free_bytes, size_t* total_bytes);

// GPU time per kernel, for benchmarks (SPPNET_CUDA_KERNEL_TIMES=1: one per addon instance, filled
// by its CUDA executor thread). Between begin_kernel_timing(t) and end_kernel_timing() on a
// thread, every kernel that thread launches (SPP_LAUNCH) is bracketed by two CUDA events on its
// stream; end_kernel_timing(), called after that stream's synchronisation, reads them into
// t->totals. Each launch adds two event records (a few microseconds of host time).
struct KernelTimes {
  struct Launch {
    const char* kernel;  // SPP_LAUNCH's text, e.g. "linear_gemv_kernel<1>"
    void* start;         // cudaEvent_t
    void* stop;
  };
  std::vector<Launch> pending;  // the executor's thread only
  std::mutex m;                 // guards totals (read on the JS thread)
  std::map<std::string, std::pair<int64_t, double>> totals;  // kernel -> (launches, GPU ms)
};
void begin_kernel_timing(KernelTimes* t);
void end_kernel_timing();

}  // namespace cuda
}  // namespace sppnet
