// Device queries and memory management for the binding.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "check.h"
#include "pool.h"
#include "sppnet/device.h"

#ifndef SPPNET_CUDA_ARCHS
#define SPPNET_CUDA_ARCHS "unknown"
#endif

namespace sppnet {
namespace cuda {

DeviceInfo query() {
  DeviceInfo d;
  d.built = true;
  d.archs = SPPNET_CUDA_ARCHS;
  cudaRuntimeGetVersion(&d.runtime_version);
  cudaDriverGetVersion(&d.driver_version);
  cudaError_t e = cudaGetDeviceCount(&d.device_count);
  if (e != cudaSuccess) {
    d.device_count = 0;
    d.error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return d;
  }
  if (d.device_count == 0) {
    d.error = "no CUDA device found";
    return d;
  }
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, 0);
  if (e != cudaSuccess) {
    d.error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    d.device_count = 0;
    cudaGetLastError();
    return d;
  }
  d.name = prop.name;
  d.cc_major = prop.major;
  d.cc_minor = prop.minor;
  d.sm_count = prop.multiProcessorCount;
  d.total_memory = prop.totalGlobalMem;
  return d;
}

// ---- memory ----
//
// Every device allocation (tensors and the kernels' scratch) is stream-ordered, from the device's
// default memory pool, on the calling thread's cudaStreamPerThread. Why this is correct:
//
// - Tensors are allocated on the JS thread (malloc_device, stream A) and then used by the ops
//   that the addon instance's CUDA executor thread queues on its own stream (B: one per instance,
//   a worker's included; the ops, copies and downloads in call order: binding/common.h,
//   Executor). A stream-ordered allocation is usable by another stream only once the allocating
//   stream has reached it, so malloc_device synchronises A before returning. That is cheap: the
//   JS thread queues nothing on A but pool allocations, pool frees and the copies it
//   synchronises at once (copy_h2d of a new tensor, copy_d2d of sp.ragged), so A never holds
//   kernels; at most it waits for an event the pool inserted so as to reuse a block that B
//   freed, i.e. for the end of the work B had queued before that free (which may be the op
//   running now). Those synchronous copies on A are outside B's call order.
// - A block is freed (free_device, cudaFreeAsync) when its last holder lets go, on the JS thread
//   (so on A): the JS object at dispose()/finalisation, or an in-flight op when its promise
//   settles. Every op that touched it synchronised B before its ticket was done (the CUDA
//   ticket's function, binding/common.cpp TaskWorker's constructor, on every path, errors and
//   exceptions included; a ticket that never ran queued nothing), and the JS thread's own copies
//   are synchronous, so every access has finished on the host's clock before the free is queued.
//   Scratch is freed on the stream that used it, after that work (pool_free), which stream order
//   alone makes safe.
// - The pool hands a freed block to another stream only after the free has completed or behind
//   an event on it (its default reuse policies), so reuse needs nothing from us.
//
// So no free ever waits (cudaFree would wait for the whole device, on the JS thread), and the
// only waits are the stream synchronisations each op does anyway.
//
// The pool keeps what is freed (keep_pool_memory: release threshold = everything) instead of
// giving it back to the driver at every synchronisation (the default threshold, 0); an
// allocation that fails trims the pool and retries once.

namespace {

cudaError_t default_pool(cudaMemPool_t* pool) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetDefaultMemPool(pool, dev);
  return e;
}

}  // namespace

Status keep_pool_memory() {
  cudaMemPool_t pool;
  SPP_CUDA_TRY(default_pool(&pool), "getting the device's default memory pool");
  uint64_t all = ~uint64_t{0};  // the attribute is a cuuint64_t
  SPP_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &all), "setting the memory pool's release threshold");
  return Status::Ok();
}

Status pool_alloc(void** ptr, size_t bytes, const char* what) {
  *ptr = nullptr;
  cudaError_t e = cudaMallocAsync(ptr, bytes, cudaStreamPerThread);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    // Free blocks the pool keeps may be enough, or too fragmented: give back what nothing uses
    // (frees queued on this stream count once it reaches them) and ask once more.
    cudaMemPool_t pool;
    if (cudaStreamSynchronize(cudaStreamPerThread) == cudaSuccess && default_pool(&pool) == cudaSuccess)
      (void)cudaMemPoolTrimTo(pool, 0);
    (void)cudaGetLastError();
    *ptr = nullptr;
    e = cudaMallocAsync(ptr, bytes, cudaStreamPerThread);
  }
  if (e != cudaSuccess) {
    *ptr = nullptr;
    return from_cuda(e, (std::string(what) + ": cudaMallocAsync of " + std::to_string(bytes) + " bytes").c_str());
  }
  return Status::Ok();
}

void pool_free(void* ptr) {
  if (ptr && cudaFreeAsync(ptr, cudaStreamPerThread) != cudaSuccess) (void)cudaGetLastError();
}

Status malloc_device(size_t bytes, void** ptr) {
  if (bytes == 0) bytes = 4;  // a valid, distinct pointer for empty tensors
  Status s = pool_alloc(ptr, bytes, "allocating a device tensor");
  if (!s.ok()) return s;
  // Usable by the other threads' streams from here on (see above).
  const cudaError_t e = cudaStreamSynchronize(cudaStreamPerThread);
  if (e != cudaSuccess) {
    pool_free(*ptr);
    *ptr = nullptr;
    return from_cuda(e, "allocating a device tensor");
  }
  return Status::Ok();
}

void free_device(void* ptr) { pool_free(ptr); }

namespace {
thread_local KernelTimes* t_kernel_timing = nullptr;  // this thread's, between begin and end
}  // namespace

KernelTimes* kernel_timing() { return t_kernel_timing; }
void begin_kernel_timing(KernelTimes* t) { t_kernel_timing = t; }

void end_kernel_timing() {
  KernelTimes* t = t_kernel_timing;
  t_kernel_timing = nullptr;
  if (!t) return;
  std::lock_guard<std::mutex> lk(t->m);
  for (const KernelTimes::Launch& l : t->pending) {
    const auto start = static_cast<cudaEvent_t>(l.start), stop = static_cast<cudaEvent_t>(l.stop);
    float ms = 0.f;
    if (cudaEventElapsedTime(&ms, start, stop) == cudaSuccess) {
      auto& e = t->totals[l.kernel];
      e.first += 1;
      e.second += ms;
    }
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
  }
  (void)cudaGetLastError();
  t->pending.clear();
}

Status synchronize() {
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), "synchronising the stream");
  return Status::Ok();
}

Status trim_pool() {
  cudaMemPool_t pool;
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), "waiting for this thread's frees");
  SPP_CUDA_TRY(default_pool(&pool), "getting the device's default memory pool");
  SPP_CUDA_TRY(cudaMemPoolTrimTo(pool, 0), "trimming the memory pool");
  return Status::Ok();
}

Status pool_info(size_t* reserved, size_t* used) {
  cudaMemPool_t pool;
  SPP_CUDA_TRY(default_pool(&pool), "getting the device's default memory pool");
  uint64_t r = 0, u = 0;
  SPP_CUDA_TRY(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &r), "reading the memory pool");
  SPP_CUDA_TRY(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &u), "reading the memory pool");
  *reserved = static_cast<size_t>(r);
  *used = static_cast<size_t>(u);
  return Status::Ok();
}

Status copy_h2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  SPP_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cudaStreamPerThread), "host-to-device copy");
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), "host-to-device copy");
  return Status::Ok();
}

Status copy_d2h(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  SPP_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cudaStreamPerThread), "device-to-host copy");
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), "device-to-host copy");
  return Status::Ok();
}

Status copy_d2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  SPP_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cudaStreamPerThread), "device-to-device copy");
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), "device-to-device copy");
  return Status::Ok();
}

Status memory_info(size_t* free_bytes, size_t* total_bytes) {
  SPP_CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace sppnet
