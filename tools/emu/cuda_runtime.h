// A CPU model of the CUDA runtime, for compiling cuda/*.cu with g++ (tools/emu, see cuda/kernel.h).
// It stands in for <cuda_runtime.h> (this folder comes first on the include path), so the same
// sources that nvcc builds run here, host code and kernels alike:
//
// - Every CUDA thread is a fiber. A block's fibers run one at a time, each until its next barrier
//   (__syncthreads, or a warp collective: a shuffle, an mma.sync), in an order drawn from a seeded
//   generator; the blocks of a grid also run in a random order. Code that reads what another
//   thread wrote without a barrier between them sees the wrong value in some orders.
// - Shared memory (SPP_SHARED, SPP_DYNAMIC_SHARED) is filled with a poison byte at every block
//   start; the dynamic part ends at a guard page, as does every "device" allocation (cudaMalloc,
//   cudaMallocAsync, emu::device_alloc), so an access past the end faults and the fault is
//   reported with the kernel, block, thread and allocation. New device memory is poisoned too.
// - Launch limits are checked (block and grid sizes, 48 KiB of shared memory); a kernel argument
//   that points into host memory is an error. A __syncthreads or warp collective that not every
//   thread reaches is reported as a deadlock.
// - mma.sync is computed as the tensor cores do: exact products, added in blocks with the
//   operands aligned to the largest exponent and truncated, the sum truncated toward zero to FP32.
//
// State is thread_local where kernels run, so several host threads may launch at once.
#pragma once
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <string>

#define SPPNET_CUDA_EMULATE 1

// ---- keywords ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// ---- vector types and built-in variables ----
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ---- runtime API (the subset sppnet uses) ----
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4, cudaMemPoolAttrReservedMemCurrent = 5, cudaMemPoolAttrUsedMemCurrent = 7 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUmemPoolHandle_st;
using cudaMemPool_t = CUmemPoolHandle_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;
#define cudaStreamPerThread (reinterpret_cast<cudaStream_t>(0x2))
#define cudaStreamLegacy (reinterpret_cast<cudaStream_t>(0x1))

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor, multiProcessorCount;
};

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemset(void* p, int v, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int d);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void* v);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void* v);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep);
// Events: the host's clock when recorded (emulated work is done when its call returns).
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// ---- device functions ----
using std::max;
using std::min;
inline long long min(long long a, int b) { return a < b ? a : b; }
inline long long min(int a, long long b) { return a < b ? a : b; }
inline long long max(long long a, int b) { return a > b ? a : b; }
inline long long max(int a, long long b) { return a > b ? a : b; }
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

namespace emu {

// ---- allocations ----
// Device memory: poisoned, between guard pages; `align` is the start's alignment. Which end meets
// its guard page is drawn per allocation (seeded), so over runs an access just before the start
// and one just past the end both fault. Thread-safe.
// pool: a cudaMallocAsync block (its free returns the bytes to the default pool's count).
void* device_alloc(size_t bytes, size_t align, const char* label, bool pool = false);
void pool_release_to_threshold();
// The multiprocessor count the device reports from now on (tools/cuda_emulate; <= 0: the default, 132).
void set_device_sms(int sms);
void pool_trim(size_t keep);
void device_free(void* p);
// The allocation holding [p, p + bytes), or false.
bool is_device(const void* p, size_t bytes = 1);
// Checks a pointer-sized word found in a kernel argument: fails (reports, exits) when it points
// into mapped host memory that is not a device allocation.
void check_argument_words(const char* kernel, const void* arg, size_t bytes);

// ---- the scheduler ----
// Runs body once per thread of every block of the grid (see the top of this file). Returns
// cudaErrorInvalidConfiguration, without running anything, where CUDA would refuse the launch.
cudaError_t run_grid(const char* kernel, dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body);

void syncthreads();
void warp_sync(int kind);  // all live lanes of the warp meet; kind: what they meet at (checked equal)
enum WarpOp { kShuffle = 1, kMma = 2, kSyncwarp = 3 };
// A lane's word exchange board for warp collectives: 8 words per lane.
uint32_t* warp_board();
char* shared_array_bytes(const void* site, size_t bytes, size_t align);
char* dynamic_shared_bytes();

template <class T>
T* shared_array(const void* site, int64_t n) {
  return reinterpret_cast<T*>(shared_array_bytes(site, sizeof(T) * static_cast<size_t>(n), alignof(T) > 16 ? alignof(T) : 16));
}
template <class T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(dynamic_shared_bytes());
}

// The kernel's name as the compiler spells it, from "... [with auto K = ns::kernel<1, 2>]".
std::string name_from_signature(const char* pretty_function);
template <auto K>
const char* kernel_name() {
  static const std::string name = name_from_signature(__PRETTY_FUNCTION__);
  return name.c_str();
}

void set_last_error(cudaError_t e);

// Whether A says it holds numbers only (a `static constexpr bool kNoPointers = true` member).
template <class A, class = void>
struct declares_no_pointers : std::false_type {};
template <class A>
struct declares_no_pointers<A, std::void_t<decltype(A::kNoPointers)>> : std::bool_constant<A::kNoPointers> {};

// Pointers and structs are searched for host pointers; numbers, and structs that declare they
// hold only numbers, are not (a 64-bit seed or count can look like an address).
template <class A>
void check_argument(const char* kernel, const A& a) {
  if constexpr (!std::is_arithmetic_v<A> && !std::is_enum_v<A> && !declares_no_pointers<A>::value)
    check_argument_words(kernel, &a, sizeof(A));
}

// SPP_LAUNCH(grid, block, smem, kernel)(args...): the arguments are copied (and converted to the
// kernel's parameter types at each thread's call), as a launch copies them to the device.
template <auto K>
struct Launcher {
  dim3 grid, block;
  size_t smem;
  template <class... A>
  void operator()(const A&... a) const {
    const char* name = kernel_name<K>();
    (check_argument(name, a), ...);
    const cudaError_t e = run_grid(name, grid, block, smem, [&] { K(a...); });
    if (e != cudaSuccess) set_last_error(e);
  }
};
template <auto K>
Launcher<K> launch(dim3 grid, dim3 block, size_t smem) {
  return Launcher<K>{grid, block, smem};
}

// ---- the tensor cores ----
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits (low 13 bits 0).
uint32_t to_tf32(float v);
// cvt.rn.bf16x2.f32 of (lo, hi): lo in the low half.
uint32_t pack_bf16(float lo, float hi);
void mma_tf32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1);
void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1);

// The accumulation model: how many products an MMA adds at once (with the accumulator), and
// whether alignment and the result truncate (the hardware) or round to nearest (an ideal FP32 sum).
struct MmaModel {
  int tf32_block = 4, bf16_block = 8;
  bool truncate = true;
};
MmaModel& mma_model();

// ---- what ran ----
// Kernel name -> launches, over the whole process.
void for_each_launched(const std::function<void(const std::string&, long)>& f);
// Seeds the schedule and placement generator (and the poison byte choice); printed by the tools.
void seed(uint64_t s);
// From now on an invalid access in a kernel is reported (kernel, block, thread, allocation) and
// ends the process; for the tools. Without it (the emulated addon) the process just faults.
void report_faults();

template <class T>
T shfl_xor(T v, int lane_mask) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  uint32_t* board = warp_board();  // this lane's 8 words; lane l's board at board + 8 * (l - lane)
  const int lane = static_cast<int>(threadIdx.x & 31);
  std::memcpy(board, &v, sizeof(T));
  warp_sync(kShuffle);
  T r;
  std::memcpy(&r, board + 8 * ((lane ^ lane_mask) - lane), sizeof(T));
  warp_sync(kShuffle);
  return r;
}

[[noreturn]] void fail(const std::string& what);

}  // namespace emu

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) emu::fail("__syncwarp with a partial mask is not modelled");
  emu::warp_sync(emu::kSyncwarp);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu || width != 32) emu::fail("__shfl_xor_sync with a partial mask or width is not modelled");
  return emu::shfl_xor(v, lane_mask);
}
template <class T>
T __ldg(const T* p) {
  if (alignof(T) >= 16 && (reinterpret_cast<uintptr_t>(p) & 15) != 0) emu::fail("misaligned 16-byte load (__ldg)");
  return *p;
}
