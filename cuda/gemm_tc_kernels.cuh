// The tensor-core kernels (mma.sync, sm_80+) of gemm_tc.cu: the implicit-GEMM convolution over
// ragged batches and the dense C = A . B^T of linear layers. tools/cuda_emulate compiles this
// same file for the CPU (see kernel.h), with a fiber per thread and mma.sync emulated from the PTX
// fragment layouts and the tensor cores' truncating accumulation, and checks it there (no GPU).
//
// One kernel shape for both: a block of 256 threads (8 warps as 2 along M x 4 along N) computes
// a BM x 128 tile of C (BM = 128 or 64) in steps of BK = 16 along K. Each step's A and B tiles
// are loaded from global memory into registers while the tensor cores work on the previous
// step's tiles in shared memory (two shared buffers, one barrier per step). Shared layouts:
//   As[k][m] (row stride BM + 8) and Bs[n][k] (row stride BK + 4),
// chosen so that every fragment read of a warp hits 32 different banks (TF32; BF16 has 2-way
// conflicts on A). Values stay FP32 in shared memory; each mode converts at fragment load:
//   TF32: cvt.rna.tf32.f32, one m16n8k8 per 8 k;
//   BF16: pairs packed with cvt.rn.bf16x2.f32, one m16n8k16 per 16 k;
//   FP32: v = big + small (both TF32), three m16n8k8 (small.big, big.small, big.big) into a
//         fresh accumulator per 8 k, added to the running sum in FP32 (see mma_step).
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k8 / m16n8k16"), with lane =
// 4 * g + t: A (16 x k, row-major): TF32 reg r holds A[g + 8 (r & 1)][t + 4 (r >> 1)];
// BF16 reg r holds A[g + 8 (r & 1)][2t + 8 (r >> 1) + {0, 1}] (low half first).
// B (k x 8, "col"): TF32 reg r holds B[t + 4r][g]; BF16 reg r holds B[2t + 8r + {0, 1}][g].
// C (16 x 8): reg r holds C[g + 8 (r >> 1)][2t + (r & 1)].
//
// Convolution: C[pixel][out channel], pixels numbered across all maps (a tile may hold the end
// of one map and the start of the next), A[pixel][k] gathered from the map at load time (k =
// (ci, ky, kx) through a per-layer table), zero outside the map; B = the weights [out][k] as
// stored; the epilogue adds the bias, applies ReLU and scatters into each map's [C, Ho, Wo].
// Split-K (both): when the tiles fill less than two waves of the device (a batch of one image
// deep in the network: 12 tiles for ZF-5's conv3 at 224), K is cut into `splits` chunks, each
// block writes its chunk's sums to a partial buffer, and a reduce kernel adds the chunks in order
// (the same bits on every run on one device), then the bias and ReLU.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel.h"
#include "sppnet/layers.h"

namespace sppnet {
namespace cuda {
namespace tc {
namespace kern {

constexpr int kThreads = 256;
constexpr int BN = 128, BK = 16;
[[maybe_unused]] constexpr int kBStride = BK + 4;

#if defined(SPPNET_CUDA_EMULATE) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define SPPNET_TC_DEVICE 1
#endif

__device__ __forceinline__ float relu1(float v) { return v > 0.f ? v : (v != v ? v : 0.f); }

#if defined(SPPNET_CUDA_EMULATE)
// tools/emu/cuda_runtime.h defines to_tf32, pack_bf16, mma_tf32 and mma_bf16 on the CPU.
using emu::mma_bf16;
using emu::mma_tf32;
using emu::pack_bf16;
using emu::to_tf32;
#elif defined(SPPNET_TC_DEVICE)
__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

// lo goes to the low half (the lower k index), as the fragments want.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

#endif

#ifdef SPPNET_TC_DEVICE
// v = big + small, both TF32. The correction terms use small and finite_or_0(big) only, so they
// are finite whatever the inputs: an infinite input reaches the result through big . big alone,
// as in FP32 (Inf stays Inf, Inf . 0 = NaN), instead of meeting a zero remainder (Inf . 0 = NaN
// where FP32 gives Inf).
__device__ __forceinline__ void split_tf32(float v, uint32_t& big, uint32_t& small) {
  big = to_tf32(v);
  const float b = __uint_as_float(big), d = v - b;
  small = fabsf(b) <= 3.402823466e38f && fabsf(d) <= 3.402823466e38f ? to_tf32(d) : 0u;
}
// big where it is finite, else 0.
__device__ __forceinline__ uint32_t finite_or_0(uint32_t big) { return (big & 0x7f800000u) == 0x7f800000u ? 0u : big; }
#endif

// ---- operand loaders: global -> registers (load) -> shared (store) ----

struct ConvArgs {
  const float* x;
  const float* w;
  const float* bias;
  float* y;
  const int4* ktab;       // per k: {ci, ky * dilation_h, kx * dilation_w, 0}
  const int64_t* in_off;  // per map
  const int64_t* out_off;
  const int64_t* pix_off;  // count + 1: output pixels before map i; the last is M
  const int32_t* in_h;
  const int32_t* in_w;
  const int32_t* out_w;
  float* partial;  // split-K: [splits][M][groups * cout_g], else null
  int64_t M;
  int32_t count, cin_g, cout_g, K, stride_h, stride_w, pad_h, pad_w;
  int32_t relu;  // not bool: no padding in a kernel argument (see Conv2dParams::relu)
  int32_t kchunk, splits;  // K per split (K itself when not split), and how many
  int32_t unused = 0;
};
static_assert(sizeof(ConvArgs) == 12 * 8 + 8 + 12 * 4, "ConvArgs has padding");

// The map that output pixel gm (numbered across all maps) belongs to: the last i with
// pix_off[i] <= gm.
__device__ __forceinline__ int map_of_pixel(const ConvArgs& a, int64_t gm) { return last_at_most(a.pix_off, a.count, gm); }

// A[pixel][k] of the convolution: this thread's pixel is fixed (row ml of the tile); it loads
// k rows kr, kr + kStep, ... of each BK step.
template <int BM>
struct ConvA {
  static constexpr int kStep = kThreads / BM;
  static constexpr int kPer = BK / kStep;
  const float* xb;
  const int4* ktab;
  int64_t hw;
  int iy0, ix0, h, w, K, ml, kr;
  bool valid;
  int64_t out_base;  // y offset of (this pixel, the group's first channel); -1 past M
  int howo;

  __device__ void init(const ConvArgs& a, int64_t m0, int tid, int group) {
    ml = tid % BM;
    kr = tid / BM;
    ktab = a.ktab;
    K = a.K;
    const int64_t gm = m0 + ml;
    valid = gm < a.M;
    xb = a.x;
    hw = 0, iy0 = ix0 = h = w = howo = 0;
    out_base = -1;
    if (!valid) return;
    const int lo = map_of_pixel(a, gm);
    const int p = static_cast<int>(gm - a.pix_off[lo]);
    howo = static_cast<int>(a.pix_off[lo + 1] - a.pix_off[lo]);
    const int wo = a.out_w[lo], oy = p / wo, ox = p - oy * wo;
    h = a.in_h[lo];
    w = a.in_w[lo];
    hw = int64_t{h} * w;
    iy0 = oy * a.stride_h - a.pad_h;
    ix0 = ox * a.stride_w - a.pad_w;
    xb = a.x + a.in_off[lo] + int64_t{group} * a.cin_g * hw;
    out_base = a.out_off[lo] + int64_t{group} * a.cout_g * howo + p;
  }
  __device__ __forceinline__ void load(int k0, int k_end, float (&r)[kPer]) const {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int k = k0 + kr + j * kStep;
      float v = 0.f;
      if (valid && k < k_end) {
        const int4 t = __ldg(ktab + k);
        const int iy = iy0 + t.y, ix = ix0 + t.z;
        if (static_cast<unsigned>(iy) < static_cast<unsigned>(h) && static_cast<unsigned>(ix) < static_cast<unsigned>(w))
          v = __ldg(xb + t.x * hw + iy * w + ix);
      }
      r[j] = v;
    }
  }
  __device__ __forceinline__ void store(float* As, const float (&r)[kPer]) const {
#pragma unroll
    for (int j = 0; j < kPer; ++j) As[(kr + j * kStep) * (BM + 8) + ml] = r[j];
  }
};

// A row-major [rows][ld] matrix read as k-contiguous tiles (dense A, and every B): this thread
// loads column k0 + kl of rows rl, rl + 16, ...
template <int ROWS>
struct RowsK {
  static constexpr int kPer = ROWS / 16;
  const float* base;  // row 0 of the tile
  int64_t ld;
  int rows_left;      // rows of the tile that exist
  int kl, rl;
  __device__ void init(const float* m, int64_t ld_, int64_t row0, int64_t rows, int tid) {
    kl = tid & 15;
    rl = tid >> 4;
    ld = ld_;
    base = m + row0 * ld_;
    const int64_t left = rows - row0;
    rows_left = left > ROWS ? ROWS : static_cast<int>(left);
  }
  __device__ __forceinline__ void load(int k0, int k_end, float (&r)[kPer]) const {
    const int k = k0 + kl;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int row = rl + 16 * j;
      r[j] = (row < rows_left && k < k_end) ? __ldg(base + row * ld + k) : 0.f;
    }
  }
  // As[k][m] (stride BM + 8): the dense A operand.
  __device__ __forceinline__ void store_km(float* As, const float (&r)[kPer]) const {
#pragma unroll
    for (int j = 0; j < kPer; ++j) As[kl * (ROWS + 8) + rl + 16 * j] = r[j];
  }
  // Bs[n][k] (stride BK + 4): the B operand.
  __device__ __forceinline__ void store_nk(float* Bs, const float (&r)[kPer]) const {
#pragma unroll
    for (int j = 0; j < kPer; ++j) Bs[(rl + 16 * j) * kBStride + kl] = r[j];
  }
};

// ---- the tensor-core part of one BK step: acc += As . Bs for this warp's (BM/2) x 32 ----

template <int BM, int MODE>
__device__ __forceinline__ void mma_step(const float* As, const float* Bs, float (&acc)[BM / 32][4][4], int wm, int wn, int g,
                                         int t) {
#ifdef SPPNET_TC_DEVICE
  constexpr int AS = BM + 8, MI = BM / 32;
  const float* Aw = As + wm * (BM / 2) + g;
  const float* Bw = Bs + (wn * 32 + g) * kBStride;
  if constexpr (MODE == kMathBf16) {
    uint32_t a[MI][4], b[4][2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
      const float* p = Aw + mi * 16;
      a[mi][0] = pack_bf16(p[(2 * t) * AS], p[(2 * t + 1) * AS]);
      a[mi][1] = pack_bf16(p[(2 * t) * AS + 8], p[(2 * t + 1) * AS + 8]);
      a[mi][2] = pack_bf16(p[(2 * t + 8) * AS], p[(2 * t + 9) * AS]);
      a[mi][3] = pack_bf16(p[(2 * t + 8) * AS + 8], p[(2 * t + 9) * AS + 8]);
    }
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const float* p = Bw + ni * 8 * kBStride;
      b[ni][0] = pack_bf16(p[2 * t], p[2 * t + 1]);
      b[ni][1] = pack_bf16(p[2 * t + 8], p[2 * t + 9]);
    }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) mma_bf16(acc[mi][ni], a[mi][0], a[mi][1], a[mi][2], a[mi][3], b[ni][0], b[ni][1]);
  } else {
#pragma unroll
    for (int ks = 0; ks < BK; ks += 8) {
      float af[MI][4], bf[4][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        const float* p = Aw + mi * 16 + (ks + t) * AS;
        af[mi][0] = p[0];
        af[mi][1] = p[8];
        af[mi][2] = p[4 * AS];
        af[mi][3] = p[4 * AS + 8];
      }
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const float* p = Bw + ni * 8 * kBStride + ks + t;
        bf[ni][0] = p[0];
        bf[ni][1] = p[4];
      }
      if constexpr (MODE == kMathTf32) {
        uint32_t a[MI][4], b[4][2];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int r = 0; r < 4; ++r) a[mi][r] = to_tf32(af[mi][r]);
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) b[ni][0] = to_tf32(bf[ni][0]), b[ni][1] = to_tf32(bf[ni][1]);
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) mma_tf32(acc[mi][ni], a[mi][0], a[mi][1], a[mi][2], a[mi][3], b[ni][0], b[ni][1]);
      } else {  // kMathFp32: 3xTF32, one A fragment at a time (register pressure)
        uint32_t bb[4][2], bs[4][2];
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
          for (int r = 0; r < 2; ++r) split_tf32(bf[ni][r], bb[ni][r], bs[ni][r]);
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          uint32_t ab[4], as[4];
#pragma unroll
          for (int r = 0; r < 4; ++r) split_tf32(af[mi][r], ab[r], as[r]);
          // The three MMAs of these 8 k go into a fresh accumulator, which an FP32 add (round to
          // nearest) then moves into acc. The tensor cores truncate their FP32 sum toward zero, so
          // an accumulator that ran over all of K would lose up to an ulp of the whole sum per
          // MMA, all in one direction (1e-4 of sum |w x| at K = 12800 with same-sign data); here
          // each truncation is an ulp of an 8-term partial sum, and acc is an ordinary FP32 sum.
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) {
            float part[4] = {0.f, 0.f, 0.f, 0.f};
            mma_tf32(part, as[0], as[1], as[2], as[3], finite_or_0(bb[ni][0]), finite_or_0(bb[ni][1]));
            mma_tf32(part, finite_or_0(ab[0]), finite_or_0(ab[1]), finite_or_0(ab[2]), finite_or_0(ab[3]), bs[ni][0], bs[ni][1]);
            mma_tf32(part, ab[0], ab[1], ab[2], ab[3], bb[ni][0], bb[ni][1]);
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mi][ni][r] += part[r];
          }
        }
      }
    }
  }
#endif
}

// Visits this thread's accumulators after the K loop: f(row in the tile, column in the tile, value),
// the C fragment layout of mma_step's warps (2 along M x 4 along N).
template <int BM, class F>
__device__ __forceinline__ void for_each_acc(const float (&acc)[BM / 32][4][4], F f) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp & 1, wn = warp >> 1, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < BM / 32; ++mi)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int c = 0; c < 2; ++c) f(wm * (BM / 2) + mi * 16 + g + 8 * hh, wn * 32 + ni * 8 + 2 * t + c, acc[mi][ni][2 * hh + c]);
}

// The K loop: registers prefetch step kt + 1 while the tensor cores run step kt.
// LA: the A loader (load, and store into As[k][m]); LB: RowsK<BN> for B.
template <int BM, int MODE, class LA, class StoreA>
__device__ __forceinline__ void main_loop(const LA& la, StoreA store_a, const RowsK<BN>& lb, int k_begin, int k_end, float* As,
                                          float* Bs, float (&acc)[BM / 32][4][4]) {
  constexpr int ASZ = BK * (BM + 8), BSZ = BN * kBStride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = warp & 1, wn = warp >> 1, g = lane >> 2, t = lane & 3;
  const int nk = (k_end - k_begin + BK - 1) / BK;
  if (nk <= 0) return;
  float ra[LA::kPer], rb[RowsK<BN>::kPer];
  la.load(k_begin, k_end, ra);
  lb.load(k_begin, k_end, rb);
  store_a(As, ra);
  lb.store_nk(Bs, rb);
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < nk;
    if (more) {
      la.load(k_begin + (kt + 1) * BK, k_end, ra);
      lb.load(k_begin + (kt + 1) * BK, k_end, rb);
    }
    mma_step<BM, MODE>(As + cur * ASZ, Bs + cur * BSZ, acc, wm, wn, g, t);
    if (more) {
      store_a(As + (cur ^ 1) * ASZ, ra);
      lb.store_nk(Bs + (cur ^ 1) * BSZ, rb);
    }
    __syncthreads();
  }
}

template <int BM, int MODE>
__global__ void __launch_bounds__(kThreads, 1) conv_tc_kernel(ConvArgs a) {
#ifdef SPPNET_TC_DEVICE
  SPP_SHARED(float, As, 2 * BK * (BM + 8));
  SPP_SHARED(float, Bs, 2 * BN * kBStride);
  SPP_SHARED(int64_t, s_out, BM);
  SPP_SHARED(int32_t, s_howo, BM);
  const int groups = static_cast<int>(gridDim.z) / a.splits;  // blockIdx.z = split * groups + group
  const int tid = threadIdx.x, group = static_cast<int>(blockIdx.z) % groups, split = static_cast<int>(blockIdx.z) / groups;
  const int64_t m0 = int64_t{blockIdx.x} * BM;
  const int n0 = blockIdx.y * BN;
  const int k_begin = split * a.kchunk, k_end = min(a.K, k_begin + a.kchunk);
  ConvA<BM> la;
  la.init(a, m0, tid, group);
  if (tid < BM) {  // ml == tid: the epilogue's table of where each pixel goes
    s_out[tid] = la.out_base;
    s_howo[tid] = la.howo;
  }
  RowsK<BN> lb;
  lb.init(a.w + int64_t{group} * a.cout_g * a.K, a.K, n0, a.cout_g, tid);
  float acc[BM / 32][4][4];
#pragma unroll
  for (int mi = 0; mi < BM / 32; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.f;
  main_loop<BM, MODE>(la, [&la](float* s, const float (&r)[ConvA<BM>::kPer]) { la.store(s, r); }, lb, k_begin, k_end, As, Bs,
                      acc);
  __syncthreads();  // s_out / s_howo visible even when the loop ran no step

  if (a.partial) {  // split-K: this chunk's sums, [split][pixel][group * cout_g + n]
    const int64_t ctot = int64_t{groups} * a.cout_g;
    float* dst = a.partial + int64_t{split} * a.M * ctot + int64_t{group} * a.cout_g;
    for_each_acc<BM>(acc, [&](int ml, int nl, float v) {
      const int64_t m = m0 + ml;
      const int n = n0 + nl;
      if (m < a.M && n < a.cout_g) dst[m * ctot + n] = v;
    });
    return;
  }
  const float* bias = a.bias ? a.bias + int64_t{group} * a.cout_g : nullptr;
  for_each_acc<BM>(acc, [&](int ml, int nl, float v) {
    const int64_t base = s_out[ml];
    const int n = n0 + nl;
    if (base < 0 || n >= a.cout_g) return;
    if (bias) v += __ldg(bias + n);
    a.y[base + n * int64_t{s_howo[ml]}] = a.relu ? relu1(v) : v;
  });
#endif
}

struct GemmArgs {
  const float* A;
  const float* B;
  const float* bias;
  float* C;
  float* partial;  // [splits][M][N] when split-K, else null
  int64_t M;
  int32_t N, K, kchunk;
  int32_t relu;  // not bool: no padding in a kernel argument (see Conv2dParams::relu)
};
static_assert(sizeof(GemmArgs) == 5 * 8 + 8 + 4 * 4, "GemmArgs has padding");

template <int BM, int MODE>
__global__ void __launch_bounds__(kThreads, 1) gemm_tc_kernel(GemmArgs a) {
#ifdef SPPNET_TC_DEVICE
  SPP_SHARED(float, As, 2 * BK * (BM + 8));
  SPP_SHARED(float, Bs, 2 * BN * kBStride);
  const int tid = threadIdx.x, split = blockIdx.z;
  const int64_t m0 = int64_t{blockIdx.x} * BM;
  const int n0 = blockIdx.y * BN;
  const int k_begin = split * a.kchunk, k_end = min(a.K, k_begin + a.kchunk);
  RowsK<BM> la;
  la.init(a.A, a.K, m0, a.M, tid);
  RowsK<BN> lb;
  lb.init(a.B, a.K, n0, a.N, tid);
  float acc[BM / 32][4][4];
#pragma unroll
  for (int mi = 0; mi < BM / 32; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.f;
  main_loop<BM, MODE>(la, [&la](float* s, const float (&r)[RowsK<BM>::kPer]) { la.store_km(s, r); }, lb, k_begin, k_end, As, Bs,
                      acc);

  float* dst = a.partial ? a.partial + int64_t{split} * a.M * a.N : a.C;
  for_each_acc<BM>(acc, [&](int ml, int nl, float v) {
    const int64_t m = m0 + ml;
    const int n = n0 + nl;
    if (m >= a.M || n >= a.N) return;
    if (!a.partial) {
      if (a.bias) v += __ldg(a.bias + n);
      if (a.relu) v = relu1(v);
    }
    dst[m * a.N + n] = v;
  });
#endif
}

// The convolution's split-K sums: y[pixel's map][n][pixel] = sum over splits in split order, + bias,
// ReLU; one thread per (pixel, out channel), channels fastest (the partial reads coalesce).
__global__ void conv_splitk_reduce_kernel(ConvArgs a, int32_t ctot) {
  const int64_t MN = a.M * ctot;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < MN; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t gm = i / ctot;
    const int n = static_cast<int>(i - gm * ctot);
    float v = a.partial[i];
    for (int s = 1; s < a.splits; ++s) v += a.partial[s * MN + i];
    if (a.bias) v += __ldg(a.bias + n);
    const int m = map_of_pixel(a, gm);
    const int64_t howo = a.pix_off[m + 1] - a.pix_off[m];
    a.y[a.out_off[m] + n * howo + (gm - a.pix_off[m])] = a.relu ? relu1(v) : v;
  }
}

// C = sum over splits in split order (deterministic), + bias, ReLU.
__global__ void splitk_reduce_kernel(int64_t MN, int32_t N, int32_t splits, const float* __restrict__ partial,
                                     const float* __restrict__ bias, bool relu, float* __restrict__ C) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < MN; i += int64_t{gridDim.x} * blockDim.x) {
    float v = partial[i];
    for (int s = 1; s < splits; ++s) v += partial[s * MN + i];
    if (bias) v += bias[i % N];
    C[i] = relu ? relu1(v) : v;
  }
}


// ---- host side shared with the emulator: the per-layer tables and the launch plans ----

// Everything conv_tc_kernel reads besides x, w, bias and y, as one byte block (16-byte ktab
// entries first, then the int64 offsets, then the int32 sizes), and where each part starts.
struct ConvTables {
  std::vector<char> bytes;
  size_t ktab_bytes = 0, off_bytes = 0;
  int64_t M = 0;  // output pixels of all maps
  int K = 0;
};

inline ConvTables conv_tables(const RaggedView& in, const RaggedView& out, const Conv2dParams& p) {
  ConvTables t;
  const int N = in.count;
  t.K = (p.in_channels / p.groups) * p.kernel_h * p.kernel_w;
  std::vector<int64_t> pix(N + 1, 0);
  for (int i = 0; i < N; ++i) pix[i + 1] = pix[i] + int64_t{out.height[i]} * out.width[i];
  t.M = pix[N];
  t.ktab_bytes = sizeof(int4) * t.K;
  t.off_bytes = sizeof(int64_t) * (3 * N + 1);
  t.bytes.resize(t.ktab_bytes + t.off_bytes + sizeof(int32_t) * 3 * N);
  int4* kt = reinterpret_cast<int4*>(t.bytes.data());
  const int area = p.kernel_h * p.kernel_w;
  for (int k = 0; k < t.K; ++k) {
    const int ci = k / area, r = k - ci * area, ky = r / p.kernel_w, kx = r - ky * p.kernel_w;
    kt[k] = make_int4(ci, ky * p.dilation_h, kx * p.dilation_w, 0);
  }
  int64_t* offs = reinterpret_cast<int64_t*>(t.bytes.data() + t.ktab_bytes);
  std::memcpy(offs, in.offset, sizeof(int64_t) * N);
  std::memcpy(offs + N, out.offset, sizeof(int64_t) * N);
  std::memcpy(offs + 2 * N, pix.data(), sizeof(int64_t) * (N + 1));
  int32_t* sizes = reinterpret_cast<int32_t*>(t.bytes.data() + t.ktab_bytes + t.off_bytes);
  std::memcpy(sizes, in.height, sizeof(int32_t) * N);
  std::memcpy(sizes + N, in.width, sizeof(int32_t) * N);
  std::memcpy(sizes + 2 * N, out.width, sizeof(int32_t) * N);
  return t;
}

// The kernel's arguments once the tables are at `tables` (device memory, or host for the emulator).
inline ConvArgs conv_args(const ConvTables& t, const char* tables, const RaggedView& in, const Conv2dParams& p, const float* x,
                          const float* w, const float* bias, float* y) {
  const int N = in.count;
  ConvArgs a;
  std::memset(&a, 0, sizeof a);  // padding too: the kernel's parameter bytes are then all defined
  a.x = x, a.w = w, a.bias = bias, a.y = y;
  a.ktab = reinterpret_cast<const int4*>(tables);
  const int64_t* off = reinterpret_cast<const int64_t*>(tables + t.ktab_bytes);
  a.in_off = off, a.out_off = off + N, a.pix_off = off + 2 * N;
  const int32_t* sz = reinterpret_cast<const int32_t*>(tables + t.ktab_bytes + t.off_bytes);
  a.in_h = sz, a.in_w = sz + N, a.out_w = sz + 2 * N;
  a.M = t.M, a.count = N, a.cin_g = p.in_channels / p.groups, a.cout_g = p.out_channels / p.groups, a.K = t.K;
  a.stride_h = p.stride_h, a.stride_w = p.stride_w, a.pad_h = p.pad_h, a.pad_w = p.pad_w;
  a.relu = p.relu;
  a.kchunk = t.K, a.splits = 1;  // conv2d sets the split when its plan has one
  return a;
}

// Tiles: BM = 128 pixels unless that leaves the device less than two waves of blocks, or the
// mode is FP32 (3xTF32 needs more registers than 128-row tiles leave: ptxas spills there on
// sm_80-89; its three MMAs per term keep the tensor cores busy with 64-row tiles too).
struct Plan {
  int bm = 128;
  int64_t mtiles = 0, ntiles = 0, splits = 1;
  int32_t kchunk = 0;
};

inline int tile_rows(int64_t M, int64_t other_tiles, int32_t math, int sms) {
  return math == kMathFp32 || ((M + 127) / 128) * other_tiles < 2 * int64_t{sms} ? 64 : 128;
}

// Split K while `blocks` tiles fill less than two waves, keeping >= 8 steps of BK per split and no
// empty split (pl.splits, pl.kchunk; one split of all of K otherwise).
inline void split_k(Plan& pl, int64_t blocks, int32_t K, int sms) {
  const int64_t ksteps = (int64_t{K} + BK - 1) / BK;
  int64_t splits = 1;
  if (blocks < 2 * sms && ksteps >= 16) splits = std::min<int64_t>((2 * sms + blocks - 1) / blocks, std::min<int64_t>(ksteps / 8, 64));
  const int64_t chunk_steps = std::max<int64_t>(1, (ksteps + splits - 1) / splits);
  pl.splits = std::max<int64_t>(1, (ksteps + chunk_steps - 1) / chunk_steps);
  pl.kchunk = static_cast<int32_t>(std::max<int64_t>(1, chunk_steps * BK));
}

// Convolution: tiles over (pixels, out channels of a group), a grid z of groups x splits.
inline Plan conv_plan(int64_t M, int cout_g, int groups, int32_t K, int32_t math, int sms) {
  Plan pl;
  pl.ntiles = (cout_g + BN - 1) / BN;
  pl.bm = tile_rows(M, pl.ntiles * groups, math, sms);
  pl.mtiles = (M + pl.bm - 1) / pl.bm;
  split_k(pl, pl.mtiles * pl.ntiles * groups, K, sms);
  return pl;
}

// Dense: the same tile rule and split.
inline Plan gemm_plan(int64_t M, int32_t N, int32_t K, int32_t math, int sms) {
  Plan pl;
  pl.ntiles = (N + BN - 1) / BN;
  pl.bm = tile_rows(M, pl.ntiles, math, sms);
  pl.mtiles = (M + pl.bm - 1) / pl.bm;
  split_k(pl, pl.mtiles * pl.ntiles, K, sms);
  return pl;
}

}  // namespace kern
}  // namespace tc
}  // namespace cuda
}  // namespace sppnet
