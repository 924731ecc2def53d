// CUDA network layers over ragged batches: straightforward, correct kernels (one thread per output
// element, the map found by binary search over the output offsets). conv2d and linear run on the
// tensor cores (gemm_tc.cu) unless math is kMathDirect or the GPU predates compute capability
// 8.0; the direct kernels here are their FP32 reference.

#include <initializer_list>
#include <utility>
#include <vector>

#include "gemm_tc.h"
#include "kernel.h"
#include "ragged_tables.cuh"
#include "sppnet/bf16.h"
#include "sppnet/lrn_within.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int find_map(const Maps& m, int64_t idx) { return last_at_most(m.out_off, m.count, idx); }

__device__ __forceinline__ float relu1(float v) { return v > 0.f ? v : (v != v ? v : 0.f); }

__global__ void conv2d_kernel(Maps m, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                              Conv2dParams p, float* __restrict__ y, int64_t total) {
  const int cin_g = p.in_channels / p.groups, cout_g = p.out_channels / p.groups;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = find_map(m, idx);
    const int Ho = m.out_h[i], Wo = m.out_w[i], H = m.in_h[i], W = m.in_w[i];
    const int64_t rem = idx - m.out_off[i];
    const int co = static_cast<int>(rem / (int64_t{Ho} * Wo));
    const int pix = static_cast<int>(rem - int64_t{co} * Ho * Wo), oy = pix / Wo, ox = pix - oy * Wo;
    const int g = co / cout_g;
    const float* xi = x + m.in_off[i] + int64_t{g} * cin_g * H * W;
    const float* wo = w + int64_t{co} * cin_g * p.kernel_h * p.kernel_w;
    float acc = b ? b[co] : 0.f;
    for (int ci = 0; ci < cin_g; ++ci)
      for (int ky = 0; ky < p.kernel_h; ++ky) {
        const int yy = oy * p.stride_h - p.pad_h + ky * p.dilation_h;
        if (yy < 0 || yy >= H) continue;
        for (int kx = 0; kx < p.kernel_w; ++kx) {
          const int xx = ox * p.stride_w - p.pad_w + kx * p.dilation_w;
          if (xx < 0 || xx >= W) continue;
          acc += xi[(int64_t{ci} * H + yy) * W + xx] * wo[(ci * p.kernel_h + ky) * p.kernel_w + kx];
        }
      }
    y[idx] = p.relu ? relu1(acc) : acc;
  }
}

__global__ void max_pool2d_kernel(Maps m, const float* __restrict__ x, Pool2dParams p, int C, float* __restrict__ y, int64_t total) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = find_map(m, idx);
    const int Ho = m.out_h[i], Wo = m.out_w[i], H = m.in_h[i], W = m.in_w[i];
    const int64_t rem = idx - m.out_off[i];
    const int c = static_cast<int>(rem / (int64_t{Ho} * Wo));
    const int pix = static_cast<int>(rem - int64_t{c} * Ho * Wo), oy = pix / Wo, ox = pix - oy * Wo;
    const float* xc = x + m.in_off[i] + int64_t{c} * H * W;
    const int ys = max(0, oy * p.stride_h - p.pad_h), ye = min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
    const int xs = max(0, ox * p.stride_w - p.pad_w), xe = min(W, ox * p.stride_w - p.pad_w + p.kernel_w);
    float v = -INFINITY;
    for (int yy = ys; yy < ye; ++yy)
      for (int xx = xs; xx < xe; ++xx) {
        const float e = xc[int64_t{yy} * W + xx];
        v = ((e > v || e != e) && v == v) ? e : v;
      }
    y[idx] = v;
    (void)C;
  }
}

__global__ void lrn_kernel(Maps m, const float* __restrict__ x, LrnParams p, int C, float* __restrict__ y, int64_t total) {
  const float scale = p.alpha / static_cast<float>(p.size);
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = find_map(m, idx);
    const int64_t HW = int64_t{m.in_h[i]} * m.in_w[i];
    const int64_t rem = idx - m.out_off[i];
    const int c = static_cast<int>(rem / HW);
    const int64_t pix = rem - c * HW;
    if (p.within) {
      const int W = m.in_w[i];
      y[idx] = lrn_within_forward_at(x + m.in_off[i] + c * HW, m.in_h[i], W, static_cast<int>(pix / W), static_cast<int>(pix % W), p);
      continue;
    }
    const float* xb = x + m.in_off[i] + pix;
    float s = 0.f;
    for (int cc = max(0, c - p.size / 2); cc <= min(C - 1, c + (p.size - 1) / 2); ++cc) s += xb[cc * HW] * xb[cc * HW];
    y[idx] = xb[c * HW] / powf(p.k + scale * s, p.beta);
  }
}

// LRN then max pooling, one thread per pooled output: each window element's LRN value computed in
// place (the same expression as lrn_kernel), so the LRN map is never written. At ZF-5's 3x3 s2
// windows an LRN value is computed ~2.25 times, from loads that hit L1/L2.
__global__ void lrn_max_pool2d_kernel(Maps m, const float* __restrict__ x, LrnParams lp, Pool2dParams p, int C, float* __restrict__ y,
                                      int64_t total) {
  const float scale = lp.alpha / static_cast<float>(lp.size);
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = find_map(m, idx);
    const int Ho = m.out_h[i], Wo = m.out_w[i], H = m.in_h[i], W = m.in_w[i];
    const int64_t HW = int64_t{H} * W;
    const int64_t rem = idx - m.out_off[i];
    const int c = static_cast<int>(rem / (int64_t{Ho} * Wo));
    const int pix = static_cast<int>(rem - int64_t{c} * Ho * Wo), oy = pix / Wo, ox = pix - oy * Wo;
    const float* xi = x + m.in_off[i];
    const int c0 = max(0, c - lp.size / 2), c1 = min(C - 1, c + (lp.size - 1) / 2);
    const int ys = max(0, oy * p.stride_h - p.pad_h), ye = min(H, oy * p.stride_h - p.pad_h + p.kernel_h);
    const int xs = max(0, ox * p.stride_w - p.pad_w), xe = min(W, ox * p.stride_w - p.pad_w + p.kernel_w);
    float v = -INFINITY;
    for (int yy = ys; yy < ye; ++yy)
      for (int xx = xs; xx < xe; ++xx) {
        const float* xb = xi + int64_t{yy} * W + xx;
        float s = 0.f;
        for (int cc = c0; cc <= c1; ++cc) s += xb[cc * HW] * xb[cc * HW];
        const float e = xb[c * HW] / powf(lp.k + scale * s, lp.beta);
        v = ((e > v || e != e) && v == v) ? e : v;
      }
    y[idx] = v;
  }
}

// One warp per output element: lanes stride the dot product, then a shuffle reduction.
__global__ void linear_kernel(int64_t rows, int in_f, int out_f, const float* __restrict__ x, const float* __restrict__ w,
                              const float* __restrict__ b, bool relu, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
  for (int64_t e = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) >> 5; e < rows * out_f; e += warps) {
    const int64_t r = e / out_f;
    const int o = static_cast<int>(e - r * out_f);
    const float* xr = x + r * in_f;
    const float* wo = w + int64_t{o} * in_f;
    float s = 0.f;
    for (int k = lane; k < in_f; k += 32) s += xr[k] * wo[k];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) {
      if (b) s += b[o];
      y[e] = relu ? relu1(s) : s;
    }
  }
}

// Linear layers of at most kGemvRows rows (fc6-fc8 for a few images): matrix-vector products,
// bound by reading the weights once (fc6 of ZF-5: 210 MB). Each warp makes kGemvOuts outputs for
// every row, its lanes reading the weight rows 16 bytes at a time (`vec`: in_f a multiple of 4 and
// x, w 16-byte aligned; else 4) and the input rows, which stay in L1/L2 (R x in_f floats), then
// a shuffle reduction. R: the rows rounded up to 1, 2, 4 or 8 (rows past `rows` read the last one
// and are not written). FP32 products and sums, so at least as exact as any math mode; the
// tensor-core GEMM (a 64-row tile for these few rows, split over K) took 0.61 ms for fc6 at
// batch 1 on an H100, 340 GB/s (2026-11-27).
constexpr int kGemvRows = 8;
constexpr int kGemvOuts = 2;
constexpr int kGemvWarps = 4;  // per block

template <int R>
__global__ void __launch_bounds__(kGemvWarps * 32) linear_gemv_kernel(int rows, int in_f, int out_f, const float* __restrict__ x,
                                                                      const float* __restrict__ w, const float* __restrict__ b,
                                                                      bool relu, bool vec, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int o0 = (static_cast<int>(blockIdx.x) * kGemvWarps + static_cast<int>(threadIdx.x >> 5)) * kGemvOuts;
  if (o0 >= out_f) return;  // the whole warp
  float s[kGemvOuts][R];
#pragma unroll
  for (int j = 0; j < kGemvOuts; ++j)
#pragma unroll
    for (int r = 0; r < R; ++r) s[j][r] = 0.f;
  int64_t wo[kGemvOuts];  // each output's weight row (an output past out_f reads the last one)
#pragma unroll
  for (int j = 0; j < kGemvOuts; ++j) wo[j] = int64_t{min(o0 + j, out_f - 1)} * in_f;
  if (vec) {
    const int n4 = in_f >> 2;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const float4* w4 = reinterpret_cast<const float4*>(w);
#pragma unroll 2
    for (int k = lane; k < n4; k += 32) {
      float4 wv[kGemvOuts];
#pragma unroll
      for (int j = 0; j < kGemvOuts; ++j) wv[j] = __ldg(w4 + (wo[j] >> 2) + k);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4 xv = __ldg(x4 + int64_t{min(r, rows - 1)} * n4 + k);
#pragma unroll
        for (int j = 0; j < kGemvOuts; ++j) {
          float t = s[j][r];
          t = fmaf(wv[j].x, xv.x, t);
          t = fmaf(wv[j].y, xv.y, t);
          t = fmaf(wv[j].z, xv.z, t);
          s[j][r] = fmaf(wv[j].w, xv.w, t);
        }
      }
    }
  } else {
    for (int k = lane; k < in_f; k += 32) {
      float wv[kGemvOuts];
#pragma unroll
      for (int j = 0; j < kGemvOuts; ++j) wv[j] = __ldg(w + wo[j] + k);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float xv = __ldg(x + int64_t{min(r, rows - 1)} * in_f + k);
#pragma unroll
        for (int j = 0; j < kGemvOuts; ++j) s[j][r] = fmaf(wv[j], xv, s[j][r]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kGemvOuts; ++j)
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) s[j][r] += __shfl_xor_sync(0xffffffffu, s[j][r], off);
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < kGemvOuts; ++j) {
      const int o = o0 + j;
      if (o >= out_f) break;
      const float bo = b ? b[o] : 0.f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= rows) break;
        const float v = s[j][r] + bo;
        y[int64_t{r} * out_f + o] = relu ? relu1(v) : v;
      }
    }
  }
}

// bfloat16 weights: one warp per (output, group of up to kBf16Rows rows), lanes striding the dot
// product, so each weight row is read once per group (half the bytes of float32), then a shuffle
// reduction. FP32 products and sums, on the CUDA cores.
constexpr int kBf16Rows = 4;
__global__ void linear_bf16_kernel(int64_t rows, int in_f, int out_f, const float* __restrict__ x, const uint16_t* __restrict__ w,
                                   const float* __restrict__ b, bool relu, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
  const int64_t groups = (rows + kBf16Rows - 1) / kBf16Rows;
  for (int64_t e = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) >> 5; e < groups * out_f; e += warps) {
    const int64_t g = e / out_f;
    const int o = static_cast<int>(e - g * out_f);
    const int64_t r0 = g * kBf16Rows;
    const int nr = static_cast<int>(rows - r0 < kBf16Rows ? rows - r0 : kBf16Rows);
    const uint16_t* wo = w + int64_t{o} * in_f;
    float s[kBf16Rows] = {};
    for (int k = lane; k < in_f; k += 32) {
      const float wv = bf16_to_float(wo[k]);
#pragma unroll
      for (int r = 0; r < kBf16Rows; ++r)
        if (r < nr) s[r] += x[(r0 + r) * in_f + k] * wv;
    }
#pragma unroll
    for (int r = 0; r < kBf16Rows; ++r) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) s[r] += __shfl_xor_sync(0xffffffffu, s[r], off);
    }
    // Unrolled with a guard, not a loop to nr: s indexed by a runtime r lived in local memory
    // (the SASS of the 2026-11-27 H100 run: LDL 29, STL 30-40 in this kernel).
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kBf16Rows; ++r) {
        if (r >= nr) break;
        float v = s[r];
        if (b) v += b[o];
        y[(r0 + r) * out_f + o] = relu ? relu1(v) : v;
      }
    }
  }
}

__global__ void relu_kernel(int64_t n, const float* __restrict__ x, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) y[i] = relu1(x[i]);
}

// One block per row: max, then sum of exponentials, through shared memory.
__global__ void softmax_kernel(int cols, const float* __restrict__ x, float* __restrict__ y) {
  SPP_SHARED(float, red, kThreads);
  const float* xr = x + int64_t{blockIdx.x} * cols;
  float* yr = y + int64_t{blockIdx.x} * cols;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) m = ((xr[j] > m || xr[j] != xr[j]) && m == m) ? xr[j] : m;
  red[threadIdx.x] = m;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float o = red[threadIdx.x + s], v = red[threadIdx.x];
      red[threadIdx.x] = ((o > v || o != o) && v == v) ? o : v;
    }
    __syncthreads();
  }
  m = red[0];
  __syncthreads();
  float sum = 0.f;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) sum += (yr[j] = expf(xr[j] - m));
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const float inv = 1.f / red[0];
  for (int j = threadIdx.x; j < cols; j += blockDim.x) yr[j] *= inv;
}

// Batch norm's per-plane sums and per-channel affine maps: one block per (map, channel) plane.
// The plane's map m = blockIdx.x / C, channel c = blockIdx.x % C; off/hw: per map, device tables.
__global__ void channel_sums_kernel(int32_t C, const int64_t* __restrict__ off, const int64_t* __restrict__ hw, const float* __restrict__ u,
                                    const float* __restrict__ v, double* __restrict__ sums) {
  SPP_SHARED(double, red, 2 * kThreads);
  const int32_t m = blockIdx.x / C, c = blockIdx.x % C;
  const int64_t n = hw[m], at = off[m] + c * n;
  double s = 0, q = 0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const float x = u[at + k];
    s += x;
    q += static_cast<double>(x) * (v ? v[at + k] : x);
  }
  red[threadIdx.x] = s;
  red[kThreads + threadIdx.x] = q;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) {
      red[threadIdx.x] += red[threadIdx.x + h];
      red[kThreads + threadIdx.x] += red[kThreads + threadIdx.x + h];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sums[2 * int64_t{blockIdx.x}] = red[0];
    sums[2 * int64_t{blockIdx.x} + 1] = red[kThreads];
  }
}

__global__ void channel_affine_kernel(int32_t C, const int64_t* __restrict__ off, const int64_t* __restrict__ hw, const float* __restrict__ u,
                                      const float* __restrict__ a, const float* __restrict__ v, const float* __restrict__ b,
                                      const float* __restrict__ d, bool relu, float* __restrict__ y) {
  const int32_t m = blockIdx.x / C, c = blockIdx.x % C;
  const int64_t n = hw[m], at = off[m] + c * n;
  const float ac = a[c], bc = v ? b[c] : 0.f, dc = d[c];
  for (int64_t k = at + threadIdx.x; k < at + n; k += blockDim.x) {
    const float r = ac * u[k] + (v ? bc * v[k] : 0.f) + dc;
    y[k] = relu ? (r > 0.f ? r : (r != r ? r : 0.f)) : r;
  }
}

int64_t out_total(const RaggedView& out) {
  if (out.count == 0) return 0;
  const int i = out.count - 1;
  return out.offset[i] + int64_t{out.channels} * out.height[i] * out.width[i];
}

}  // namespace

Status conv2d_forward(const RaggedView& in, const float* x, const Conv2dParams& p, const float* weight, const float* bias,
                      const RaggedView& out, float* y) {
  const int64_t total = out_total(out);
  if (total == 0) return Status::Ok();
  if (p.math != kMathDirect && tc::supported()) return tc::conv2d(in, x, p, weight, bias, out, y);
  MapTables t;
  Status s = t.upload(in, out);
  if (!s.ok()) return s;
  SPP_LAUNCH(grid_for(total, kThreads), kThreads, 0, conv2d_kernel)(t.m, x, weight, bias, p, y, total);
  return finish("conv2d kernel");
}

Status max_pool2d_forward(const RaggedView& in, const float* x, const Pool2dParams& p, const RaggedView& out, float* y) {
  const int64_t total = out_total(out);
  if (total == 0) return Status::Ok();
  MapTables t;
  Status s = t.upload(in, out);
  if (!s.ok()) return s;
  SPP_LAUNCH(grid_for(total, kThreads), kThreads, 0, max_pool2d_kernel)(t.m, x, p, in.channels, y, total);
  return finish("max_pool2d kernel");
}

Status lrn_forward(const RaggedView& in, const float* x, const LrnParams& p, float* y) {
  const int64_t total = out_total(in);
  if (total == 0) return Status::Ok();
  MapTables t;
  Status s = t.upload(in, in);
  if (!s.ok()) return s;
  SPP_LAUNCH(grid_for(total, kThreads), kThreads, 0, lrn_kernel)(t.m, x, p, in.channels, y, total);
  return finish("local_response_norm kernel");
}

Status lrn_max_pool2d_forward(const RaggedView& in, const float* x, const LrnParams& lp, const Pool2dParams& pp, const RaggedView& out,
                              float* y) {
  if (lp.within) return Status::Error(Code::kInvalidArgument, "lrn_max_pool2d: within-channel LRN is not fused (run lrn, then max_pool2d)");
  const int64_t total = out_total(out);
  if (total == 0) return Status::Ok();
  MapTables t;
  Status s = t.upload(in, out);
  if (!s.ok()) return s;
  SPP_LAUNCH(grid_for(total, kThreads), kThreads, 0, lrn_max_pool2d_kernel)(t.m, x, lp, pp, in.channels, y, total);
  return finish("local_response_norm + max_pool2d kernel");
}

Status linear_forward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const float* w, const float* b,
                      bool relu, int32_t math, float* y, float* /*cache*/, int64_t /*cache_len*/) {
  const int64_t total = rows * out_features;
  if (total == 0) return Status::Ok();
  if (math != kMathDirect && rows <= kGemvRows) {
    const int r = static_cast<int>(rows);
    const bool vec = in_features % 4 == 0 && ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w)) & 15) == 0;
    const int blocks = (out_features + kGemvWarps * kGemvOuts - 1) / (kGemvWarps * kGemvOuts);
    const int threads = kGemvWarps * 32;
    if (r == 1) SPP_LAUNCH(blocks, threads, 0, linear_gemv_kernel<1>)(r, in_features, out_features, x, w, b, relu, vec, y);
    else if (r == 2) SPP_LAUNCH(blocks, threads, 0, linear_gemv_kernel<2>)(r, in_features, out_features, x, w, b, relu, vec, y);
    else if (r <= 4) SPP_LAUNCH(blocks, threads, 0, linear_gemv_kernel<4>)(r, in_features, out_features, x, w, b, relu, vec, y);
    else SPP_LAUNCH(blocks, threads, 0, linear_gemv_kernel<8>)(r, in_features, out_features, x, w, b, relu, vec, y);
    return finish("linear matrix-vector kernel");
  }
  if (math != kMathDirect && tc::supported()) return tc::gemm_tn(rows, out_features, in_features, x, w, b, relu, math, y);
  SPP_LAUNCH(grid_for(total * 32, kThreads), kThreads, 0, linear_kernel)(rows, in_features, out_features, x, w, b, relu, y);
  return finish("linear kernel");
}

// FP32 products in every math mode (BF16 tensor cores for these weights: not written yet).
Status linear_bf16_forward(int64_t rows, int32_t in_features, int32_t out_features, const float* x, const uint16_t* w,
                           const float* b, bool relu, int32_t /*math*/, float* y, float* /*cache*/, int64_t /*cache_len*/) {
  const int64_t groups = (rows + kBf16Rows - 1) / kBf16Rows;
  if (groups * out_features == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(groups * out_features * 32, kThreads), kThreads, 0, linear_bf16_kernel)(rows, in_features, out_features, x, w, b,
                                                                                             relu, y);
  return finish("linear bf16 kernel");
}

Status relu_forward(int64_t n, const float* x, float* y) {
  if (n == 0) return Status::Ok();
  SPP_LAUNCH(grid_for(n, kThreads, 4), kThreads, 0, relu_kernel)(n, x, y);
  return finish("relu kernel");
}

Status softmax_forward(int64_t rows, int32_t cols, const float* x, float* y) {
  if (rows == 0) return Status::Ok();
  if (rows > 2147483647) return Status::Error(Code::kInvalidArgument, "softmax: too many rows");
  SPP_LAUNCH(static_cast<unsigned>(rows), kThreads, 0, softmax_kernel)(cols, x, y);
  return finish("softmax kernel");
}

// The per-map tables of the channel ops: map offsets and plane sizes, and `extra` host floats.
struct PlaneTables {
  TablePack pack;
  size_t off = 0, hw = 0;
  Status upload(const RaggedView& in, std::initializer_list<std::pair<const float*, size_t*>> extra) {
    std::vector<int64_t> planes(static_cast<size_t>(in.count));
    for (int32_t m = 0; m < in.count; ++m) planes[m] = int64_t{in.height[m]} * in.width[m];
    off = pack.add(in.offset, static_cast<size_t>(in.count));
    hw = pack.add(planes.data(), planes.size());
    for (const auto& e : extra)
      if (e.first) *e.second = pack.add(e.first, static_cast<size_t>(in.channels));
    return pack.upload(false, "allocating channel tables", "uploading channel tables");
  }
};

Status channel_sums(const RaggedView& in, const float* u, const float* v, double* sums) {
  const int64_t planes = int64_t{in.count} * in.channels;
  if (planes == 0) return Status::Ok();
  if (planes > 65535LL * 16) return Status::Error(Code::kInvalidArgument, "channel sums: more than 1048560 planes");
  PlaneTables t;
  Status s = t.upload(in, {});
  if (!s.ok()) return s;
  Scratch out;
  s = out.alloc(sizeof(double) * 2 * planes, "allocating channel sums");
  if (!s.ok()) return s;
  double* d = reinterpret_cast<double*>(out.get());
  SPP_LAUNCH(static_cast<unsigned>(planes), kThreads, 0, channel_sums_kernel)(in.channels, t.pack.at<int64_t>(t.off), t.pack.at<int64_t>(t.hw), u, v, d);
  SPP_CUDA_TRY(cudaGetLastError(), "channel sums kernel");
  SPP_CUDA_TRY(cudaMemcpyAsync(sums, d, sizeof(double) * 2 * planes, cudaMemcpyDeviceToHost, cudaStreamPerThread), "downloading channel sums");
  return finish("channel sums kernel");
}

Status channel_affine(const RaggedView& in, const float* u, const float* a, const float* v, const float* b, const float* d, bool relu,
                      float* y) {
  const int64_t planes = int64_t{in.count} * in.channels;
  if (planes == 0) return Status::Ok();
  if (planes > 65535LL * 16) return Status::Error(Code::kInvalidArgument, "channel affine: more than 1048560 planes");
  PlaneTables t;
  size_t ai = 0, bi = 0, di = 0;
  Status s = t.upload(in, {{a, &ai}, {v ? b : nullptr, &bi}, {d, &di}});
  if (!s.ok()) return s;
  SPP_LAUNCH(static_cast<unsigned>(planes), kThreads, 0, channel_affine_kernel)(in.channels, t.pack.at<int64_t>(t.off), t.pack.at<int64_t>(t.hw), u,
      t.pack.at<float>(ai), v, v ? t.pack.at<float>(bi) : nullptr, t.pack.at<float>(di), relu, y);
  return finish("channel affine kernel");
}

Status copy_channels(const RaggedView& part, float* part_data, const RaggedView& whole, float* whole_data, int32_t channel_offset,
                     bool to_whole) {
  // A map's channels of one part are one contiguous block in both layouts: one copy per map.
  for (int32_t m = 0; m < part.count; ++m) {
    const int64_t hw = int64_t{part.height[m]} * part.width[m];
    float* p = part_data + part.offset[m];
    float* w = whole_data + whole.offset[m] + int64_t{channel_offset} * hw;
    const size_t bytes = sizeof(float) * static_cast<size_t>(hw * part.channels);
    SPP_CUDA_TRY(cudaMemcpyAsync(to_whole ? w : p, to_whole ? p : w, bytes, cudaMemcpyDeviceToDevice, cudaStreamPerThread), "copying channels");
  }
  return Status::Ok();
}

}  // namespace cuda
}  // namespace sppnet
