// The per-plane max pooling of cpu/pool_cpu.cpp, also used by the fused LRN + max pooling
// (cpu/lrn_cpu.cpp): output rows [oy0, oy1) of one plane; xc points at input row y_base (rows
// before it are not read); acc: scratch of the caller's (see pool_cpu.cpp for its size).
#pragma once
#include "sppnet/layers.h"

namespace sppnet {
namespace cpu {

using PoolPlane = void (*)(const float* xc, int H, int W, int Wo, const Pool2dParams& p, float* acc, float* yc, int oy0, int oy1,
                          int y_base);
// The fastest version for this CPU (SPPNET_CPU_ISA) and p: AVX-512 or AVX2 for stride_w 1 or 2,
// else portable. Same results, bit for bit.
PoolPlane pool_plane_for(const Pool2dParams& p);

}  // namespace cpu
}  // namespace sppnet
