// CUDA backward passes of the layers and the optimizer steps: straightforward, deterministic
// kernels (no atomics). Input gradients are gathered, one thread per input element; weight and
// bias gradients take one block per weight element with a fixed-order block reduction. One launch
// per layer covers the whole ragged batch (maps found by binary search over prefix sums).

#include "kernel.h"
#include "ragged_tables.cuh"
#include "sppnet/dropout.h"
#include "sppnet/lrn_within.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Sum over a block (blockDim.x == kThreads) in a fixed order; the result in thread 0.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const T r = red[0];
  __syncthreads();
  return r;
}

// Output positions o with o * s - pad + k * d == a for some k in [0, K): for the kernel tap k,
// o = (a + pad - k * d) / s when divisible and in [0, n).
__global__ void conv2d_dx_kernel(Maps m, const float* __restrict__ w, const float* __restrict__ dy, Conv2dParams p,
                                 float* __restrict__ dx, int64_t total) {
  const int cin_g = p.in_channels / p.groups, cout_g = p.out_channels / p.groups;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = last_at_most(m.in_start, m.count, idx);
    const int H = m.in_h[i], W = m.in_w[i], Ho = m.out_h[i], Wo = m.out_w[i];
    const int64_t rem = idx - m.in_start[i];
    const int c = static_cast<int>(rem / (int64_t{H} * W));
    const int pix = static_cast<int>(rem - int64_t{c} * H * W), yy = pix / W, xx = pix - yy * W;
    const int g = c / cin_g, ci = c - g * cin_g;
    const float* dyi = dy + m.out_off[i];
    float acc = 0.f;
    for (int ky = 0; ky < p.kernel_h; ++ky) {
      const int ty = yy + p.pad_h - ky * p.dilation_h;
      if (ty < 0 || ty % p.stride_h) continue;
      const int oy = ty / p.stride_h;
      if (oy >= Ho) continue;
      for (int kx = 0; kx < p.kernel_w; ++kx) {
        const int tx = xx + p.pad_w - kx * p.dilation_w;
        if (tx < 0 || tx % p.stride_w) continue;
        const int ox = tx / p.stride_w;
        if (ox >= Wo) continue;
        for (int cm = 0; cm < cout_g; ++cm) {
          const int co = g * cout_g + cm;
          acc += dyi[(int64_t{co} * Ho + oy) * Wo + ox] * w[((int64_t{co} * cin_g + ci) * p.kernel_h + ky) * p.kernel_w + kx];
        }
      }
    }
    dx[m.in_off[i] + rem] = acc;
  }
}

// One block per weight element (co, ci, ky, kx): its threads stride over every output pixel of
// every map, then a block reduction.
__global__ void conv2d_dw_kernel(Maps m, const float* __restrict__ x, const float* __restrict__ dy, Conv2dParams p,
                                 float* __restrict__ dw, int64_t weights) {
  SPP_SHARED(float, red, kThreads);
  const int cin_g = p.in_channels / p.groups, cout_g = p.out_channels / p.groups;
  for (int64_t e = blockIdx.x; e < weights; e += gridDim.x) {
    const int kx = static_cast<int>(e % p.kernel_w);
    const int ky = static_cast<int>((e / p.kernel_w) % p.kernel_h);
    const int ci = static_cast<int>((e / (int64_t{p.kernel_w} * p.kernel_h)) % cin_g);
    const int co = static_cast<int>(e / (int64_t{p.kernel_w} * p.kernel_h * cin_g));
    const int c = (co / cout_g) * cin_g + ci;
    float acc = 0.f;
    for (int i = 0; i < m.count; ++i) {
      const int H = m.in_h[i], W = m.in_w[i], Ho = m.out_h[i], Wo = m.out_w[i];
      const float* xc = x + m.in_off[i] + int64_t{c} * H * W;
      const float* dc = dy + m.out_off[i] + int64_t{co} * Ho * Wo;
      const int P = Ho * Wo;
      for (int q = threadIdx.x; q < P; q += blockDim.x) {
        const int oy = q / Wo, ox = q - oy * Wo;
        const int yy = oy * p.stride_h - p.pad_h + ky * p.dilation_h, xx = ox * p.stride_w - p.pad_w + kx * p.dilation_w;
        if (yy >= 0 && yy < H && xx >= 0 && xx < W) acc += dc[q] * xc[int64_t{yy} * W + xx];
      }
    }
    const float s = block_sum(acc, red);
    if (threadIdx.x == 0) dw[e] = s;
  }
}

// One block per output channel: the sum of its gradient over every pixel of every map.
__global__ void conv2d_db_kernel(Maps m, const float* __restrict__ dy, int channels, float* __restrict__ db) {
  SPP_SHARED(float, red, kThreads);
  for (int co = blockIdx.x; co < channels; co += gridDim.x) {
    float acc = 0.f;
    for (int i = 0; i < m.count; ++i) {
      const int P = m.out_h[i] * m.out_w[i];
      const float* dc = dy + m.out_off[i] + int64_t{co} * P;
      for (int q = threadIdx.x; q < P; q += blockDim.x) acc += dc[q];
    }
    const float s = block_sum(acc, red);
    if (threadIdx.x == 0) db[co] = s;
  }
}

// PyTorch's argmax of one pooling window: strictly greater replaces, any NaN replaces.
__device__ __forceinline__ int64_t pool_argmax(const float* xc, int H, int W, const Pool2dParams& p, int oy, int ox) {
  const int ys = max(0, oy * p.stride_h - p.pad_h), ye = min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
  const int xs = max(0, ox * p.stride_w - p.pad_w), xe = min(W, ox * p.stride_w - p.pad_w + p.kernel_w);
  int64_t best = int64_t{ys} * W + xs;
  float mv = -INFINITY;
  for (int yy = ys; yy < ye; ++yy)
    for (int xx = xs; xx < xe; ++xx) {
      const float v = xc[int64_t{yy} * W + xx];
      if (v > mv || v != v) {
        mv = v;
        best = int64_t{yy} * W + xx;
      }
    }
  return best;
}

// One thread per input element: the gradients of the windows whose argmax it is, in window order.
__global__ void max_pool2d_backward_kernel(Maps m, const float* __restrict__ x, const float* __restrict__ dy, Pool2dParams p,
                                           float* __restrict__ dx, int64_t total) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = last_at_most(m.in_start, m.count, idx);
    const int H = m.in_h[i], W = m.in_w[i], Ho = m.out_h[i], Wo = m.out_w[i];
    const int64_t rem = idx - m.in_start[i];
    const int c = static_cast<int>(rem / (int64_t{H} * W));
    const int64_t pix = rem - int64_t{c} * H * W;
    const int yy = static_cast<int>(pix / W), xx = static_cast<int>(pix - int64_t{yy} * W);
    const float* xc = x + m.in_off[i] + int64_t{c} * H * W;
    const float* dc = dy + m.out_off[i] + int64_t{c} * Ho * Wo;
    // Windows oy with oy*s - pad <= yy < oy*s - pad + k.
    const int oy0 = max(0, (yy + p.pad_h - p.kernel_h + p.stride_h) / p.stride_h), oy1 = min(Ho - 1, (yy + p.pad_h) / p.stride_h);
    const int ox0 = max(0, (xx + p.pad_w - p.kernel_w + p.stride_w) / p.stride_w), ox1 = min(Wo - 1, (xx + p.pad_w) / p.stride_w);
    float acc = 0.f;
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox)
        if (pool_argmax(xc, H, W, p, oy, ox) == pix) acc += dc[int64_t{oy} * Wo + ox];
    dx[m.in_off[i] + rem] = acc;
  }
}

// See cpu::lrn_backward for the formula. One thread per element; the window sums recomputed.
__global__ void lrn_backward_kernel(Maps m, const float* __restrict__ x, const float* __restrict__ dy, LrnParams p, int C,
                                    float* __restrict__ dx, int64_t total) {
  const int before = p.size / 2, after = (p.size - 1) / 2;
  const float scale = p.alpha / static_cast<float>(p.size), coef = 2.f * p.alpha * p.beta / static_cast<float>(p.size);
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = last_at_most(m.in_start, m.count, idx);
    const int64_t HW = int64_t{m.in_h[i]} * m.in_w[i];
    const int64_t rem = idx - m.in_start[i];
    const int j = static_cast<int>(rem / HW);
    const int64_t pix = rem - j * HW;
    if (p.within) {
      const int W = m.in_w[i];
      const int64_t plane = m.in_off[i] + j * HW;
      dx[m.in_off[i] + rem] = lrn_within_backward_at(x + plane, dy + plane, m.in_h[i], W, static_cast<int>(pix / W), static_cast<int>(pix % W), p);
      continue;
    }
    const float* xb = x + m.in_off[i] + pix;
    const float* gb = dy + m.in_off[i] + pix;
    float own = 0.f, t = 0.f;
    for (int c = max(0, j - after); c <= min(C - 1, j + before); ++c) {
      float s = 0.f;
      for (int cc = max(0, c - before); cc <= min(C - 1, c + after); ++cc) s += xb[cc * HW] * xb[cc * HW];
      const float D = p.k + scale * s;
      const float Dp = powf(D, -p.beta);
      if (c == j) own = Dp;
      t += gb[c * HW] * xb[c * HW] * Dp / D;
    }
    dx[m.in_off[i] + rem] = gb[j * HW] * own - coef * xb[j * HW] * t;
  }
}

// dx[r, k] = sum_o dy[r, o] w[o, k]: one thread per element (neighbouring threads read neighbouring k).
__global__ void linear_dx_kernel(int64_t rows, int in_f, int out_f, const float* __restrict__ w, const float* __restrict__ dy,
                                 float* __restrict__ dx) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < rows * in_f; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / in_f;
    const int k = static_cast<int>(e - r * in_f);
    const float* g = dy + r * out_f;
    float s = 0.f;
    for (int o = 0; o < out_f; ++o) s += g[o] * w[int64_t{o} * in_f + k];
    dx[e] = s;
  }
}

// dw[o, k] = sum_r dy[r, o] x[r, k]: one thread per weight.
__global__ void linear_dw_kernel(int64_t rows, int in_f, int out_f, const float* __restrict__ x, const float* __restrict__ dy,
                                 float* __restrict__ dw) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < int64_t{out_f} * in_f; e += int64_t{gridDim.x} * blockDim.x) {
    const int o = static_cast<int>(e / in_f);
    const int k = static_cast<int>(e - int64_t{o} * in_f);
    float s = 0.f;
    for (int64_t r = 0; r < rows; ++r) s += dy[r * out_f + o] * x[r * in_f + k];
    dw[e] = s;
  }
}

__global__ void linear_db_kernel(int64_t rows, int out_f, const float* __restrict__ dy, float* __restrict__ db) {
  for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < out_f; o += gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int64_t r = 0; r < rows; ++r) s += dy[r * out_f + o];
    db[o] = s;
  }
}

__global__ void relu_backward_kernel(int64_t n, const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dx[i] = y[i] <= 0.f ? 0.f : dy[i];
}

__global__ void dropout_kernel(int64_t n, const float* __restrict__ x, DropoutParams p, float* __restrict__ y, float* __restrict__ mask) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float mk = dropout_bits(p.seed, static_cast<uint64_t>(i)) >= p.threshold ? p.scale : 0.f;
    mask[i] = mk;
    y[i] = x[i] * mk;
  }
}

__global__ void multiply_kernel(int64_t n, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) y[i] = a[i] * b[i];
}

// One block per row: max and argmax (first maximum, a NaN counts as the maximum), then the float64
// sum of exponentials, the row's loss and the gradient.
__global__ void softmax_xent_kernel(int cols, const float* __restrict__ x, const int32_t* __restrict__ labels, double inv_rows,
                                    float* __restrict__ grad, double* __restrict__ loss, int32_t* __restrict__ correct) {
  SPP_SHARED(float, mv, kThreads);
  SPP_SHARED(int, mi, kThreads);
  SPP_SHARED(double, red, kThreads);
  const int64_t r = blockIdx.x;
  const float* xr = x + r * cols;
  float* gr = grad + r * cols;
  float m = -INFINITY;
  int am = cols;  // none yet
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = xr[j];
    if (m == m && (v > m || v != v || am == cols)) m = v, am = j;
  }
  mv[threadIdx.x] = m;
  mi[threadIdx.x] = am;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float a = mv[threadIdx.x], b = mv[threadIdx.x + s];
      const int ia = mi[threadIdx.x], ib = mi[threadIdx.x + s];
      // Prefer: a NaN (the lower index among NaNs), else the greater value (the lower index on ties).
      bool take_b;
      if (ib == cols) take_b = false;
      else if (ia == cols) take_b = true;
      else if (a != a) take_b = b != b && ib < ia;
      else if (b != b) take_b = true;
      else take_b = b > a || (b == a && ib < ia);
      if (take_b) mv[threadIdx.x] = b, mi[threadIdx.x] = ib;
    }
    __syncthreads();
  }
  m = mv[0];
  am = mi[0];
  double s = 0;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) s += exp(static_cast<double>(xr[j]) - m);
  s = block_sum(s, red);
  const int label = labels[r];
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    const double sm = exp(static_cast<double>(xr[j]) - m) / s;
    gr[j] = static_cast<float>((sm - (j == label ? 1.0 : 0.0)) * inv_rows);
  }
  if (threadIdx.x == 0) {
    loss[r] = log(s) + m - static_cast<double>(xr[label]);
    correct[r] = am == label ? 1 : 0;
  }
}

__global__ void sgd_kernel(int64_t n, float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ buf, SgdParams p) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    float d = grad[i];
    if (p.weight_decay != 0.f) d = d + p.weight_decay * param[i];
    if (p.momentum != 0.f) {
      const float b = p.first_step ? d : p.momentum * buf[i] + (1.f - p.dampening) * d;
      buf[i] = b;
      d = p.nesterov ? d + p.momentum * b : b;
    }
    param[i] = param[i] - p.lr * d;
  }
}

__global__ void adam_kernel(int64_t n, float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                            float* __restrict__ v, AdamParams p) {
  const float w1 = 1.f - p.beta1, w2 = 1.f - p.beta2, decay = 1.f - p.lr * p.weight_decay;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    float g = grad[i], x = param[i];
    if (p.weight_decay != 0.f) {
      if (p.decoupled) x = x * decay;
      else g = g + p.weight_decay * x;
    }
    const float mi = w1 < 0.5f ? m[i] + w1 * (g - m[i]) : g - (g - m[i]) * (1.f - w1);
    const float vi = v[i] * p.beta2 + w2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / p.bias_correction2_sqrt + p.eps;
    param[i] = x - p.step_size * (mi / denom);
  }
}

int blocks_for(int64_t n) { return static_cast<int>(n < 1 ? 1 : (n > (int64_t{1} << 30) ? (int64_t{1} << 30) : n)); }

}  // namespace

Status conv2d_backward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const RaggedView& out,
                       const float* dy, float* dx, float* dw, float* db) {
  (void)cudaGetLastError();
  const int64_t weights = int64_t{p.out_channels} * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w;
  if (in.count == 0) {
    SPP_CUDA_TRY(cudaMemsetAsync(dw, 0, sizeof(float) * weights, cudaStreamPerThread), "conv2d backward");
    if (db) SPP_CUDA_TRY(cudaMemsetAsync(db, 0, sizeof(float) * p.out_channels, cudaStreamPerThread), "conv2d backward");
    return finish("conv2d backward");
  }
  MapTables t;
  Status s = t.upload(in, out);
  if (!s.ok()) return s;
  if (dx && t.in_total > 0) SPP_LAUNCH(grid_for(t.in_total, kThreads), kThreads, 0, conv2d_dx_kernel)(t.m, weight, dy, p, dx, t.in_total);
  SPP_LAUNCH(blocks_for(weights), kThreads, 0, conv2d_dw_kernel)(t.m, x, dy, p, dw, weights);
  if (db) SPP_LAUNCH(blocks_for(p.out_channels), kThreads, 0, conv2d_db_kernel)(t.m, dy, p.out_channels, db);
  return finish("conv2d backward kernels");
}

Status max_pool2d_backward(const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, const float* dy,
                           float* dx) {
  (void)cudaGetLastError();
  if (in.count == 0) return Status::Ok();
  MapTables t;
  Status s = t.upload(in, out);
  if (!s.ok()) return s;
  if (t.in_total == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(t.in_total, kThreads), kThreads, 0, max_pool2d_backward_kernel)(t.m, x, dy, p, dx, t.in_total);
  return finish("max_pool2d backward kernel");
}

Status lrn_backward(const RaggedView& in, const float* x, const LrnParams& p, const float* dy, float* dx) {
  (void)cudaGetLastError();
  if (in.count == 0) return Status::Ok();
  MapTables t;
  Status s = t.upload(in, in);
  if (!s.ok()) return s;
  if (t.in_total == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(t.in_total, kThreads), kThreads, 0, lrn_backward_kernel)(t.m, x, dy, p, in.channels, dx, t.in_total);
  return finish("local_response_norm backward kernel");
}

Status linear_backward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* dy,
                       float* dx, float* dw, float* db) {
  (void)cudaGetLastError();
  if (dx && rows * in_features > 0)
    SPP_LAUNCH(grid_for(rows * in_features, kThreads), kThreads, 0, linear_dx_kernel)(rows, in_features, out_features, w, dy, dx);
  if (int64_t{in_features} * out_features > 0)
    SPP_LAUNCH(grid_for(int64_t{in_features} * out_features, kThreads), kThreads, 0, linear_dw_kernel)(rows, in_features, out_features,
                                                                                                          x, dy, dw);
  if (db && out_features > 0) SPP_LAUNCH(grid_for(out_features, kThreads), kThreads, 0, linear_db_kernel)(rows, out_features, dy, db);
  return finish("linear backward kernels");
}

Status relu_backward(int64_t n, const float* y, const float* dy, float* dx) {
  (void)cudaGetLastError();
  if (n == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(n, kThreads), kThreads, 0, relu_backward_kernel)(n, y, dy, dx);
  return finish("relu backward kernel");
}

Status dropout_forward(int64_t n, const float* x, const DropoutParams& p, float* y, float* mask) {
  (void)cudaGetLastError();
  if (n == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(n, kThreads), kThreads, 0, dropout_kernel)(n, x, p, y, mask);
  return finish("dropout kernel");
}

Status multiply(int64_t n, const float* a, const float* b, float* y) {
  (void)cudaGetLastError();
  if (n == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(n, kThreads), kThreads, 0, multiply_kernel)(n, a, b, y);
  return finish("multiply kernel");
}

Status softmax_cross_entropy(int64_t rows, int32_t cols, const float* logits, const int32_t* labels, float* grad, double* row_loss,
                             int32_t* row_correct) {
  (void)cudaGetLastError();
  if (rows == 0) return Status::Ok();
  if (rows > 2147483647) return Status::Error(Code::kInvalidArgument, "softmax_cross_entropy: too many rows");
  const size_t lb = sizeof(int32_t) * rows, db = sizeof(double) * rows, cb = sizeof(int32_t) * rows;
  Scratch sc;
  Status s = sc.alloc(db + lb + cb, "allocating the loss buffers");
  if (!s.ok()) return s;
  double* d_loss = reinterpret_cast<double*>(sc.get());
  int32_t* d_labels = reinterpret_cast<int32_t*>(sc.get() + db);
  int32_t* d_correct = reinterpret_cast<int32_t*>(sc.get() + db + lb);
  SPP_CUDA_TRY(cudaMemcpyAsync(d_labels, labels, lb, cudaMemcpyHostToDevice, cudaStreamPerThread), "uploading labels");
  SPP_LAUNCH(static_cast<unsigned>(rows), kThreads, 0, softmax_xent_kernel)(cols, logits, d_labels, 1.0 / static_cast<double>(rows), grad,
                                                                         d_loss, d_correct);
  SPP_CUDA_TRY(cudaGetLastError(), "softmax cross-entropy kernel");
  SPP_CUDA_TRY(cudaMemcpyAsync(row_loss, d_loss, db, cudaMemcpyDeviceToHost, cudaStreamPerThread), "downloading the loss");
  SPP_CUDA_TRY(cudaMemcpyAsync(row_correct, d_correct, cb, cudaMemcpyDeviceToHost, cudaStreamPerThread), "downloading the loss");
  return finish("softmax cross-entropy kernel");
}

Status sgd_step(int64_t n, float* param, const float* grad, float* momentum_buf, const SgdParams& p) {
  (void)cudaGetLastError();
  if (n == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(n, kThreads), kThreads, 0, sgd_kernel)(n, param, grad, momentum_buf, p);
  return finish("sgd kernel");
}

Status adam_step(int64_t n, float* param, const float* grad, float* m, float* v, const AdamParams& p) {
  (void)cudaGetLastError();
  if (n == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(n, kThreads), kThreads, 0, adam_kernel)(n, param, grad, m, v, p);
  return finish("adam kernel");
}

}  // namespace cuda
}  // namespace sppnet
