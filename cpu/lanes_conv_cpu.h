// Strided convolution with output pixels in the vector lanes, AVX-512 (see lanes_conv_cpu.cpp).
#pragma once
#include <cstdint>

#include "sppnet/layers.h"

namespace sppnet {
namespace cpu {

// True for the calls it serves: AVX-512, one group, a stride of 2 to 8 along rows, at most 4 input
// channels or a kernel of at least 4x the stride's area, at most 1024 products a sum, and output
// rows wide enough that at least 90% of the 16-pixel segments' lanes hold pixels (the conv1s of
// googlenet and ZF-5 at 224; not AlexNet's or Overfeat's, 55-57 wide, nor ZF-5's conv2, 27 wide).
bool lanes_applies(const Conv2dParams& p, const RaggedView& out);
// Whether every offset it reads within a map of `in` fits 32 bits: a call it serves.
bool lanes_fits(const Conv2dParams& p, const RaggedView& in);
// Floats its packed filters take in Conv2dParams::filter_cache (a header, then the packing; a
// size neither the direct nor the Winograd path gives).
int64_t lanes_cache_floats(const Conv2dParams& p);
// Same contract as conv2d_forward.
Status conv2d_lanes(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                    const RaggedView& out, float* y);

}  // namespace cpu
}  // namespace sppnet
