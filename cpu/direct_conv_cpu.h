// Direct convolution for the CPU's conv2d forward on AVX2 (see direct_conv_cpu.cpp).
#pragma once
#include <cstdint>

#include "sppnet/layers.h"

namespace sppnet {
namespace cpu {

// True for the calls it serves, where it measured faster than im2col + GEMM (bench/RESULTS.md,
// "Direct convolution"): the AVX2 kernels are the ones dispatched to, one group, a kernel larger
// than 1x1 (a 1x1 conv is a plain GEMM over the input), at least 64 products a sum (the
// transposed store of a tile costs as much as ~30 of its steps), and small output maps (at most
// 1024 pixels each: googlenet's 28x28 and smaller) or a stride above 1 with at most 512 products
// a sum (conv1s: strided im2col is slow). Large maps at stride 1 (vgg16's 224x224 and 112x112)
// keep im2col's fused path.
bool direct_applies(const Conv2dParams& p, const RaggedView& out);
// Whether every offset it reads within a map of `in` (padded) fits 32 bits: a call it serves.
bool direct_fits(const Conv2dParams& p, const RaggedView& in);
// Floats its packed filters take in Conv2dParams::filter_cache (a header, then the packing).
int64_t direct_cache_floats(const Conv2dParams& p);
// Same contract as conv2d_forward.
Status conv2d_direct(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                     const RaggedView& out, float* y);

}  // namespace cpu
}  // namespace sppnet
