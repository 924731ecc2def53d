// What every cuda/*.cu shares: how kernels are launched and shared memory declared, the grid
// size rule, stream-ordered scratch memory and the end-of-call check.
//
// The launch and shared-memory macros have two meanings. Under nvcc they are CUDA's own syntax.
// With SPPNET_CUDA_EMULATE (tools/emu: these same .cu files compiled by g++ as C++ against a CPU
// model of the CUDA runtime) a launch runs the kernel on the CPU, one fiber per CUDA thread, in a
// seeded random order between barriers, with shared memory poisoned at every block start; see
// tools/emu/cuda_runtime.h. Write launches and shared arrays only through these macros:
//   SPP_LAUNCH(grid, block, smem_bytes, kernel)(args...);    kernel may be a template-id
//   SPP_SHARED(float, red, kThreads);                        a block's shared array (16-byte aligned)
//   SPP_DYNAMIC_SHARED(float, sm);                           the launch's dynamic shared memory
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "check.h"
#include "pool.h"
#include "sppnet/device.h"

// A launch is one expression statement: LaunchScope's temporary brackets it with the kernel-time
// events when this thread is timing kernels (sppnet/device.h, KernelTimes), and is a null check
// otherwise.
#ifdef SPPNET_CUDA_EMULATE
#define SPP_LAUNCH(grid, block, smem, ...) \
  ::sppnet::cuda::LaunchScope(#__VA_ARGS__), ::emu::launch<__VA_ARGS__>((grid), (block), (smem))
#define SPP_SHARED(T, name, n) \
  static char name##_site_;    \
  T* const name = ::emu::shared_array<T>(&name##_site_, (n))
#define SPP_DYNAMIC_SHARED(T, name) T* const name = ::emu::dynamic_shared<T>()
#else
#define SPP_LAUNCH(grid, block, smem, ...) \
  ::sppnet::cuda::LaunchScope(#__VA_ARGS__), __VA_ARGS__<<<(grid), (block), (smem), cudaStreamPerThread>>>
#define SPP_SHARED(T, name, n) __shared__ __align__(16) T name[n]
#define SPP_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]
#endif

namespace sppnet {
namespace cuda {

// The last i in [0, n) with table[i] <= v, for an ascending table whose table[0] <= v (0 if n <= 1):
// which map (or region) of a ragged batch an index numbered across all of them falls in.
template <typename T, typename V>
__host__ __device__ __forceinline__ int last_at_most(const T* table, int n, V v) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table[mid] <= v) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// This thread's KernelTimes while it is timing kernels, else null (cuda/device.cu).
KernelTimes* kernel_timing();

struct LaunchScope {
  KernelTimes* t;
  const char* kernel;
  cudaEvent_t start = nullptr, stop = nullptr;
  explicit LaunchScope(const char* k) : t(kernel_timing()), kernel(k) {
    if (!t) return;
    if (cudaEventCreate(&start) != cudaSuccess || cudaEventCreate(&stop) != cudaSuccess || cudaEventRecord(start, cudaStreamPerThread) != cudaSuccess) {
      if (start) cudaEventDestroy(start);
      if (stop) cudaEventDestroy(stop);
      (void)cudaGetLastError();  // timing is best effort: the launch's own error must not be hidden by ours
      t = nullptr;
    }
  }
  ~LaunchScope() {
    if (!t) return;
    (void)cudaEventRecord(stop, cudaStreamPerThread);
    t->pending.push_back({kernel, start, stop});
  }
  LaunchScope(const LaunchScope&) = delete;
  LaunchScope& operator=(const LaunchScope&) = delete;
};

// Blocks of `threads` for n items, `per_thread` items each, at least 1 and at most 65535 * 16
// (grid-stride loops cover the rest).
inline int grid_for(int64_t n, int threads, int per_thread = 1) {
  const int64_t per_block = int64_t{threads} * per_thread;
  const int64_t blocks = (n + per_block - 1) / per_block;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

// Device scratch memory from the pool, stream-ordered on this thread's stream, freed after the
// work queued so far (cuda/pool.h).
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Status alloc(size_t bytes, const char* what) { return pool_alloc(&p_, bytes, what); }
  ~Scratch() { pool_free(p_); }
  char* get() const { return static_cast<char*>(p_); }

 private:
  void* p_ = nullptr;
};

// After the launches of one call: a launch error, else whatever the kernels hit, as a Status.
inline Status finish(const char* what) {
  SPP_CUDA_TRY(cudaGetLastError(), what);
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), what);
  return Status::Ok();
}

}  // namespace cuda
}  // namespace sppnet
