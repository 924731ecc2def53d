// The per-plane max pooling of cpu/pool_cpu.cpp, also used by the fused LRN + max pooling
// (cpu/lrn_cpu.cpp): output rows [oy0, oy1) of one plane; xc points at input row y_base (rows
// before it are not read); acc: scratch of the caller's (see pool_cpu.cpp for its size).
#pragma once
#include "sppnet/layers.h"

namespace sppnet {
namespace cpu {

void pool_plane_portable(const float* xc, int H, int W, int Wo, const Pool2dParams& p, float* acc, float* yc, int oy0, int oy1,
                         int y_base);
#if defined(__x86_64__) && defined(__GNUC__)
// stride_w 1 or 2, AVX-512 only.
void pool_plane_avx512(const float* xc, int H, int W, int Wo, const Pool2dParams& p, float* acc, float* yc, int oy0, int oy1,
                       int y_base);
#endif

}  // namespace cpu
}  // namespace sppnet
