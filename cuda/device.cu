// Device queries and memory management for the binding.
#include <cuda_runtime.h>

#include "check.h"
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

Status malloc_device(size_t bytes, void** ptr) {
  *ptr = nullptr;
  if (bytes == 0) bytes = 4;  // a valid, distinct pointer for empty tensors
  cudaError_t e = cudaMalloc(ptr, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *ptr = nullptr;
    return from_cuda(e, ("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str());
  }
  return Status::Ok();
}

void free_device(void* ptr) {
  if (ptr) cudaFree(ptr);
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

Status synchronize() {
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), "synchronising the stream");
  return Status::Ok();
}

Status memory_info(size_t* free_bytes, size_t* total_bytes) {
  SPP_CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace sppnet
