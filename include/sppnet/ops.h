// THE list of ops both backends implement: one X(return type, name, (parameters)) line each, with
// its contract in the comment above it. From it come the cpu:: and cuda:: declarations below, the
// no-CUDA stubs (cuda/unavailable.cpp) and the binding's backend table (binding/common.h,
// backend()). Adding an op: a line here, its cpu/ and cuda/ definitions, a binding entry point.
//
// Shapes are checked and output sizes computed by lib/ (PyTorch's formulas); the kernels get both
// layouts and trust them. CUDA pointers are device memory unless a line says host. Backward
// passes: every result buffer is overwritten (never accumulated into); weight gradients are summed
// over the whole batch; `in`/`out` are the forward's layouts, dx has the layout of x, dy the
// layout `out`; dx and db may be null (not wanted).
//
// Not in the list: cpu::conv_cache_floats and cpu::linear_cache_floats (layers.h: CPU only, not Status ops) and the device
// memory and stream calls of device.h (CUDA only, each with its own return type and no CPU twin).
#pragma once
#include <cstdint>

#include "crop.h"
#include "layers.h"
#include "spp.h"
#include "status.h"
#include "tensor.h"

// X(R, name, (params)): /* comments only */ inside, as the list is one macro.
#define SPPNET_OPS(X)                                                                                                                \
  /* output [num_regions, features()], rows as SppProblem (spp.h) says, every element written.                                  */ \
  X(Status, spp_forward, (const SppProblem& p, const float* input, float* output))                                                  \
  /* grad_in: input.total elements, overwritten: zero where no bin draws from, else the sum of the gradients routed there        */ \
  /* (max: to the first maximum in row-major order; avg: spread evenly).                                                         */ \
  X(Status, spp_backward, (const SppProblem& p, const float* input, const float* grad_out, float* grad_in))                         \
  /* weight [out, in/groups, kh, kw]; bias [out] or null. out: maps [out, Ho_i, Wo_i].                                           */ \
  X(Status, conv2d_forward,                                                                                                         \
    (const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias, const RaggedView& out,     \
     float* y))                                                                                                                     \
  /* Padded positions never win (PyTorch's -inf padding); NaN propagates.                                                        */ \
  X(Status, max_pool2d_forward, (const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, float* y))      \
  X(Status, lrn_forward, (const RaggedView& in, const float* x, const LrnParams& p, float* y))                                      \
  /* localResponseNorm then max_pool2d in one pass, without writing the LRN map (inference); the same values as the two calls.   */ \
  /* in/out: the pool's layouts (LRN keeps the input's).                                                                         */ \
  X(Status, lrn_max_pool2d_forward,                                                                                                 \
    (const RaggedView& in, const float* x, const LrnParams& lp, const Pool2dParams& pp, const RaggedView& out, float* y))           \
  /* y[n, out] = x[n, in] . w[out, in]^T + b[out], optionally ReLU; math: ConvMath (CUDA: each mode; CPU: kMathBf16 gives    */ \
  /* BF16 products where gemm_bf16_available() and rows >= kBf16ProductRows, FP32 otherwise, as for every other mode).         */ \
  /* CPU with SPPNET_AMX=1: AMX tiles from 128 rows, 16 with a cache (cpu/linear_cpu.cpp). cache: the caller's buffer of      */ \
  /* cpu::linear_cache_floats floats for the weights as that path packs them, kept between calls (null: none; CUDA: unused).   */ \
  X(Status, linear_forward,                                                                                                         \
    (int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* b, bool relu,            \
     int32_t math, float* y, float* cache, int64_t cache_len))                                                                      \
  /* linear_forward with bfloat16 weights (bf16.h: w holds out * in of them, row-major), FP32 products and sums; the same rows, */ \
  /* bias and ReLU. The result equals linear_forward on the weights widened to float32, up to the order of the sums; with math */ \
  /* kMathBf16, x is rounded to bfloat16 too where the CPU has BF16 products (from kBf16ProductRowsPacked rows).            */ \
  X(Status, linear_bf16_forward,                                                                                                    \
    (int64_t rows, int32_t in_features, int32_t out_features, const float* x, const uint16_t* w, const float* b, bool relu,         \
     int32_t math, float* y, float* cache, int64_t cache_len))                                                                      \
  X(Status, relu_forward, (int64_t n, const float* x, float* y))                                                                    \
  X(Status, softmax_forward, (int64_t rows, int32_t cols, const float* x, float* y))                                                \
  X(Status, conv2d_backward,                                                                                                        \
    (const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const RaggedView& out, const float* dy,       \
     float* dx, float* dw, float* db))                                                                                              \
  /* Routes each output's gradient to its window's argmax as PyTorch: the first maximum in row-major window order, a NaN wins    */ \
  /* (the last NaN, as PyTorch's `val > max || isnan(val)`).                                                                     */ \
  X(Status, max_pool2d_backward,                                                                                                    \
    (const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, const float* dy, float* dx))               \
  X(Status, lrn_backward, (const RaggedView& in, const float* x, const LrnParams& p, const float* dy, float* dx))                   \
  /* x [rows, in], w [out, in], dy [rows, out]; dx [rows, in] and db [out] may be null; dw [out, in].                            */ \
  X(Status, linear_backward,                                                                                                        \
    (int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* dy, float* dx,           \
     float* dw, float* db))                                                                                                         \
  /* dx = y <= 0 ? 0 : dy (PyTorch's threshold_backward on the forward output y).                                                */ \
  X(Status, relu_backward, (int64_t n, const float* y, const float* dy, float* dx))                                                 \
  /* mask = kept ? scale : 0; y = x * mask (dropout.h: which elements are kept).                                                 */ \
  X(Status, dropout_forward, (int64_t n, const float* x, const DropoutParams& p, float* y, float* mask))                            \
  /* y = a * b elementwise (dropout backward: dy * mask).                                                                        */ \
  X(Status, multiply, (int64_t n, const float* a, const float* b, float* y))                                                        \
  /* logits [rows, cols] (backend memory); labels: host memory, rows values in [0, cols). grad = (softmax - onehot) / rows       */ \
  /* (backend memory); row_loss (host, float64) = logsumexp - logit[label]; row_correct (host) = 1 when the row's argmax (first  */ \
  /* maximum, a NaN counts as the maximum) is the label.                                                                         */ \
  X(Status, softmax_cross_entropy,                                                                                                  \
    (int64_t rows, int32_t cols, const float* logits, const int32_t* labels, float* grad, double* row_loss, int32_t* row_correct))  \
  /* Channel concatenation of ragged maps (same count and sizes): part's maps are channels [channel_offset, channel_offset +    */ \
  /* part.channels) of whole's maps. to_whole: copies part into whole (concat); else whole into part (its gradient, split).    */ \
  /* Plain copies (no kernel): part and whole are different buffers.                                                           */ \
  X(Status, copy_channels, (const RaggedView& part, float* part_data, const RaggedView& whole, float* whole_data,                   \
                            int32_t channel_offset, bool to_whole))                                                                 \
  /* Batch norm's statistics and their gradient's: per (map m, channel c) plane, sums[2 (m C + c)] = sum of u and              */ \
  /* sums[2 (m C + c) + 1] = sum of u * v (v null: u * u), accumulated in float64; sums: host memory, 2 * count * C doubles.    */ \
  X(Status, channel_sums, (const RaggedView& in, const float* u, const float* v, double* sums))                                     \
  /* Per channel c: y = a[c] u + b[c] v + d[c] (v null: no b term), then max(y, 0) when relu. a, b, d: host memory, C floats    */ \
  /* each (b null when v is). Batch norm's forward in training (y = s x + t) and backward (dx = s dy + p x + q).                */ \
  X(Status, channel_affine,                                                                                                         \
    (const RaggedView& in, const float* u, const float* a, const float* v, const float* b, const float* d, bool relu, float* y))   \
  /* Non-maximum suppression as torchvision's CPU kernel (nms.h): boxes [n, 4] (x1, y1, x2, y2), scores [n], classes [n] or     */ \
  /* null (batched NMS: boxes interact within a class only), backend memory; iou: suppress when IoU > iou. keep: host, n int32:  */ \
  /* the kept indices, *kept of them (host), in nms's order (batched: ascending, then by score, as torchvision's vanilla path).  */ \
  X(Status, nms, (int32_t n, const float* boxes, const float* scores, const float* classes, double iou, int32_t* keep, int32_t* kept))  \
  /* Crop and resize (crop.h): boxes [k, 5] (image, x1, y1, x2, y2), backend memory, checked here (kInvalidArgument naming the  */ \
  /* box); y [k, in.channels, out_h, out_w], every element written: bilinear samples of each window, zero outside the image.    */ \
  X(Status, crop_resize, (const RaggedView& in, const float* x, int32_t k, const float* boxes, const CropParams& p, float* y))      \
  /* Optimizer steps, in place over n floats (layers.h: SgdParams, AdamParams).                                                  */ \
  X(Status, sgd_step, (int64_t n, float* param, const float* grad, float* momentum_buf, const SgdParams& p))                        \
  X(Status, adam_step, (int64_t n, float* param, const float* grad, float* m, float* v, const AdamParams& p))

#define SPPNET_DECLARE_OP(R, name, params) R name params;

namespace sppnet {
namespace cpu {
SPPNET_OPS(SPPNET_DECLARE_OP)
}  // namespace cpu
namespace cuda {
SPPNET_OPS(SPPNET_DECLARE_OP)
}  // namespace cuda
#undef SPPNET_DECLARE_OP

// One backend's ops as a table of function pointers (the binding picks cpu or cuda by where the
// buffers live: binding/common.h, backend()).
struct OpTable {
#define SPPNET_OP_POINTER(R, name, params) R(*name) params;
  SPPNET_OPS(SPPNET_OP_POINTER)
#undef SPPNET_OP_POINTER
};
}  // namespace sppnet
