// Plain C++ shared by the CPU and CUDA backends: no Node, no CUDA runtime headers.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define SPP_HD __host__ __device__ __forceinline__
#else
#define SPP_HD inline
#endif
