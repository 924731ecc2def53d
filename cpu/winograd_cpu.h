// Winograd F(2x2, 3x3) for the CPU's conv2d (see winograd_cpu.cpp).
#pragma once
#include "sppnet/layers.h"

namespace sppnet {
namespace cpu {

// True for the layers it serves: 3x3, stride 1, no dilation, one group, >= 32 channels in and out,
// at most 2^22 (in, out) channel pairs, >= 48 2x2 output tiles in the batch (and SPPNET_WINOGRAD
// is not "0").
bool winograd_applies(const Conv2dParams& p, const RaggedView& out);
// Floats its transformed filters take in Conv2dParams::filter_cache.
int64_t winograd_cache_floats(const Conv2dParams& p);
// Same contract as conv2d_forward.
Status conv2d_winograd(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                       const RaggedView& out, float* y);

}  // namespace cpu
}  // namespace sppnet
