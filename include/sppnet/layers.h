// The network layers over ragged batches: the signatures both backends implement.
// Shapes are checked and output sizes computed by lib/ (PyTorch's formulas); the kernels get
// both layouts and trust them.
#pragma once
#include <cstdint>

#include "status.h"
#include "tensor.h"

namespace sppnet {

struct Conv2dParams {
  int32_t in_channels = 0, out_channels = 0;
  int32_t kernel_h = 1, kernel_w = 1;
  int32_t stride_h = 1, stride_w = 1;
  int32_t pad_h = 0, pad_w = 0;
  int32_t dilation_h = 1, dilation_w = 1;
  int32_t groups = 1;
  bool relu = false;  // fused ReLU after the bias
};

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
};

namespace cpu {
// weight [out, in/groups, kh, kw]; bias [out] or null. out: maps [out, Ho_i, Wo_i].
Status conv2d_forward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                      const RaggedView& out, float* y);
// Padded positions never win (PyTorch's -inf padding); NaN propagates.
Status max_pool2d_forward(const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, float* y);
Status lrn_forward(const RaggedView& in, const float* x, const LrnParams& p, float* y);
// y[n, out] = x[n, in] . w[out, in]^T + b[out], optionally ReLU.
Status linear_forward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* b,
                      bool relu, float* y);
Status relu_forward(int64_t n, const float* x, float* y);
Status softmax_forward(int64_t rows, int32_t cols, const float* x, float* y);
}  // namespace cpu

namespace cuda {
Status conv2d_forward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                      const RaggedView& out, float* y);
Status max_pool2d_forward(const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, float* y);
Status lrn_forward(const RaggedView& in, const float* x, const LrnParams& p, float* y);
Status linear_forward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* b,
                      bool relu, float* y);
Status relu_forward(int64_t n, const float* x, float* y);
Status softmax_forward(int64_t rows, int32_t cols, const float* x, float* y);
}  // namespace cuda

}  // namespace sppnet
