// Stream-ordered device memory for the CUDA sources: every allocation, tensors' and scratch's,
// comes from the device's default memory pool (see cuda/device.cu for the ordering rules).
#pragma once
#include <cstddef>

#include "sppnet/status.h"

namespace sppnet {
namespace cuda {

// cudaMallocAsync on this thread's cudaStreamPerThread. Out of memory: trims the pool and
// retries once, then reports kOutOfMemory with the CUDA message, `what` and the size. The block
// is usable by work queued on this thread's stream from now on; another stream may use it only
// after this stream has been synchronised (malloc_device does that for tensors).
Status pool_alloc(void** ptr, size_t bytes, const char* what);
// cudaFreeAsync on this thread's cudaStreamPerThread: never blocks, never fails loudly. Every
// access to the block must be queued earlier on this stream or finished (host-synchronised).
void pool_free(void* ptr);

}  // namespace cuda
}  // namespace sppnet
