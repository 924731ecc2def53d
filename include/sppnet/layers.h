// The network layers' parameter types (the ops themselves are listed in ops.h).
#pragma once
#include <cstdint>

#include "status.h"
#include "tensor.h"

namespace sppnet {

// How the CUDA backend multiplies in conv2d and linear (the CPU computes in FP32 and ignores it,
// except kBf16 in linear on a CPU with AVX-512 BF16: see kBf16ProductRows). kTf32 / kBf16: inputs rounded to TF32 (10-bit mantissa) or BF16 (7-bit) for the
// tensor cores, FP32 accumulation; kFp32: three TF32 products per term (each input split into a
// TF32 value and a TF32 remainder, the remainder x remainder term dropped), about FP32 accuracy
// on the tensor cores; kDirect: the plain FP32 kernels (one thread per output; no tensor cores),
// also what runs on a GPU older than compute capability 8.0.
enum ConvMath : int32_t { kMathTf32 = 0, kMathBf16 = 1, kMathFp32 = 2, kMathDirect = 3 };
// The CPU's linear with kMathBf16, where it has BF16 products, takes them from this many rows of x
// on: FP32 weights are rounded to bfloat16 at each call, which costs more than the faster products
// save on fewer rows; bfloat16 weights (linear_bf16_forward) need no rounding.
constexpr int64_t kBf16ProductRows = 256;
constexpr int64_t kBf16ProductRowsPacked = 8;

struct Conv2dParams {
  int32_t in_channels = 0, out_channels = 0;
  int32_t kernel_h = 1, kernel_w = 1;
  int32_t stride_h = 1, stride_w = 1;
  int32_t pad_h = 0, pad_w = 0;
  int32_t dilation_h = 1, dilation_w = 1;
  int32_t groups = 1;
  // int32_t, not bool, in every struct a kernel takes: no padding bytes, whose garbage tools/emu's
  // host-pointer check of each argument word can read as a pointer (a flaky CI failure, 2026-11-26).
  int32_t relu = 0;  // fused ReLU after the bias
  int32_t math = kMathTf32;  // ConvMath (CUDA only)
  int32_t unused = 0;        // fills what would be padding before the pointer
  // CPU only, optional: where the Winograd, direct or lanes path keeps its transformed or packed filters between calls (the
  // caller's memory, e.g. a Model's, whose weights do not change between its runs): a header the
  // kernel marks valid once the transform is written, then the transform. Whenever the weights
  // change the caller must stop passing the buffer (take a fresh, zeroed one): clearing the header
  // is not enough, as a call in flight that missed may still write it and mark it valid. Ignored
  // where neither runs or when filter_cache_len is not cpu::conv_cache_floats(p, out).
  float* filter_cache = nullptr;
  int64_t filter_cache_len = 0;
};

// No padding in the structs kernels take (see Conv2dParams::relu).
static_assert(sizeof(Conv2dParams) == 14 * 4 + 8 + 8, "Conv2dParams has padding");

struct Pool2dParams {
  int32_t kernel_h = 1, kernel_w = 1;
  int32_t stride_h = 1, stride_w = 1;
  int32_t pad_h = 0, pad_w = 0;
};

// PyTorch's local_response_norm across channels:
// y_c = x_c / (k + alpha / size * sum_{c' in [c - size/2, c + (size-1)/2]} x_c'^2)^beta
struct LrnParams {
  int32_t size = 5;
  float alpha = 1e-4f, beta = 0.75f, k = 1.0f;
  // 0: across channels (PyTorch's local_response_norm, Caffe's ACROSS_CHANNELS); 1: Caffe's
  // WITHIN_CHANNEL, a size x size window in the map's own plane (lrn_within.h; size odd).
  int32_t within = 0;
};


// Optimizer steps (PyTorch's torch.optim formulas, in place over n floats). lib/ computes the
// per-step scalars in float64, as PyTorch does in Python.
struct SgdParams {
  static constexpr bool kNoPointers = true;  // numbers only (see DropoutParams)
  float lr = 0.f, momentum = 0.f, dampening = 0.f, weight_decay = 0.f;
  int32_t nesterov = 0;    // bools as int32_t: see Conv2dParams::relu
  int32_t first_step = 0;  // buf = d at the first step (PyTorch's momentum_buffer is None then)
};

struct AdamParams {
  static constexpr bool kNoPointers = true;  // numbers only (see DropoutParams)
  float lr = 0.f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.f;
  int32_t decoupled = 0;            // AdamW: p *= 1 - lr * weight_decay before the update (int32_t: see Conv2dParams::relu)
  float step_size = 0.f;            // lr / (1 - beta1^step)
  float bias_correction2_sqrt = 1;  // sqrt(1 - beta2^step)
};
static_assert(sizeof(SgdParams) == 6 * 4 && sizeof(AdamParams) == 8 * 4, "optimizer params have padding");

// Dropout: element i is kept when the top 24 bits of hash(seed, i) are >= threshold (a 24-bit
// fraction of p), the same integer arithmetic on every backend; kept elements are scaled by `scale`.
struct DropoutParams {
  // Numbers only: tools/emu does not read its words as possible host pointers (a random seed
  // lands in the host heap's address range now and then: a false "points into host memory").
  static constexpr bool kNoPointers = true;
  uint64_t seed = 0;
  uint32_t threshold = 0;
  float scale = 1.f;
};

namespace cpu {
// Floats a Conv2dParams::filter_cache takes for this layer and output layout: the Winograd path's
// transformed filters (cpu/winograd_cpu.cpp), or the direct or lanes path's packed ones
// (cpu/direct_conv_cpu.cpp, cpu/lanes_conv_cpu.cpp); 0 where none runs, so no cache is worth keeping.
int64_t conv_cache_floats(const Conv2dParams& p, const RaggedView& out);
// Floats linear_forward's / linear_bf16_forward's cache takes for this call (bf16_weights: the
// latter): the AMX path's packed weights (cpu/linear_cpu.cpp); 0 where it does not run.
int64_t linear_cache_floats(int64_t rows, int32_t in_features, int32_t out_features, int32_t math, bool bf16_weights);
}  // namespace cpu

}  // namespace sppnet
