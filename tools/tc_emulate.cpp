// The tensor-core kernels of cuda/gemm_tc_kernels.cuh, compiled for the CPU and run there: each
// CUDA thread is a fiber (ucontext), a block's 256 fibers run in rounds between barriers
// (__syncthreads, and the two halves of every mma.sync), and mma.sync / cvt are emulated from the
// PTX ISA's definitions (fragment layouts of m16n8k8 .tf32 and m16n8k16 .bf16, cvt.rna.tf32.f32,
// cvt.rn.bf16x2.f32). So the kernels' indexing (loaders, shared layouts, fragments, epilogues,
// split-K, tiles across map boundaries) is checked without a GPU, against float64 references and
// sppnet's CPU conv2d, with each math mode held to its tolerance of sum |w x|.
//
//   g++ -std=c++17 -O2 -Iinclude tools/tc_emulate.cpp -Lbuild-... (see CMakeLists.txt: tc_emulate)
//   ./tc_emulate [seed]          prints one line per case; exit status 1 on any failure
//
// What this cannot check: timing, the real hardware's rounding inside the MMA (the emulator
// accumulates each product in FP32 in k order), memory-model races the fiber rounds would hide
// (none expected: one barrier per k step, two shared buffers).
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "sppnet/layers.h"

// ---- CUDA keywords and built-ins for the CPU ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct int4 {
  int x, y, z, w;
};
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
template <class T>
inline T __ldg(const T* p) { return *p; }
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
using std::max;
using std::min;

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
// One fiber runs at a time, so plain globals hold the running thread's coordinates.
Dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
};
ucontext_t scheduler;
Fiber* running = nullptr;
std::function<void()>* body = nullptr;

void yield() { swapcontext(&running->ctx, &scheduler); }

void trampoline() {
  (*body)();
  running->done = true;  // uc_link returns to the scheduler
}

// Runs `threads` fibers of f in rounds: each round resumes every unfinished fiber once, in
// thread order, until its next barrier. Every thread of the kernels meets the same barriers in
// the same order, so a round is one barrier interval.
void run_block(int threads, std::function<void()> f) {
  std::vector<Fiber> fib(threads);
  body = &f;
  for (int i = 0; i < threads; ++i) {
    fib[i].stack.resize(256 * 1024);
    getcontext(&fib[i].ctx);
    fib[i].ctx.uc_stack.ss_sp = fib[i].stack.data();
    fib[i].ctx.uc_stack.ss_size = fib[i].stack.size();
    fib[i].ctx.uc_link = &scheduler;
    makecontext(&fib[i].ctx, trampoline, 0);
  }
  for (bool any = true; any;) {
    any = false;
    for (int i = 0; i < threads; ++i) {
      if (fib[i].done) continue;
      threadIdx.x = i;
      running = &fib[i];
      swapcontext(&scheduler, &fib[i].ctx);
      any = true;
    }
  }
}

// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits (low 13 bits 0).
uint32_t to_tf32(float v) {
  uint32_t u = float_bits(v);
  if ((u & 0x7f800000u) == 0x7f800000u) return u;  // Inf, NaN
  return (u + 0x1000u) & 0xffffe000u;
}

// cvt.rn.bf16: round to nearest even; NaN stays NaN.
uint16_t bf16(float v) {
  uint32_t u = float_bits(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
uint32_t pack_bf16(float lo, float hi) { return uint32_t{bf16(lo)} | (uint32_t{bf16(hi)} << 16); }
float from_bf16(uint16_t h) { return __uint_as_float(uint32_t{h} << 16); }

// The operands every lane of a warp holds at an mma.sync.
struct Slot {
  uint32_t a[4], b[2];
};
Slot slots[8][32];  // [warp][lane]

// D = A . B + C for one m16n8k{8,16} over the warp: each lane posts its fragments, all lanes
// meet (a round), each computes its four outputs from everyone's fragments, all meet again.
template <bool BF16>
void mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  slots[warp][lane] = Slot{{a0, a1, a2, a3}, {b0, b1}};
  yield();
  constexpr int K = BF16 ? 16 : 8;
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const Slot& s = slots[warp][l];
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r & 1);
      if (BF16) {
        const int col = 2 * t + 8 * (r >> 1);
        A[row][col] = from_bf16(static_cast<uint16_t>(s.a[r] & 0xffff));
        A[row][col + 1] = from_bf16(static_cast<uint16_t>(s.a[r] >> 16));
      } else {
        A[row][t + 4 * (r >> 1)] = __uint_as_float(s.a[r] & 0xffffe000u);  // the MMA reads 19 bits
      }
    }
    for (int r = 0; r < 2; ++r) {
      if (BF16) {
        const int k = 2 * t + 8 * r;
        B[k][g] = from_bf16(static_cast<uint16_t>(s.b[r] & 0xffff));
        B[k + 1][g] = from_bf16(static_cast<uint16_t>(s.b[r] >> 16));
      } else {
        B[t + 4 * r][g] = __uint_as_float(s.b[r] & 0xffffe000u);
      }
    }
  }
  const int g = lane >> 2, t = lane & 3;
  for (int r = 0; r < 4; ++r) {
    const int row = g + 8 * (r >> 1), col = 2 * t + (r & 1);
    float acc = d[r];
    for (int k = 0; k < K; ++k) acc += A[row][k] * B[k][col];
    d[r] = acc;
  }
  yield();
}
inline void mma_tf32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  mma<false>(d, a0, a1, a2, a3, b0, b1);
}
inline void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  mma<true>(d, a0, a1, a2, a3, b0, b1);
}

}  // namespace emu

inline void __syncthreads() { emu::yield(); }

#define SPPNET_TC_EMULATE 1
#include "../cuda/gemm_tc_kernels.cuh"

using namespace sppnet;
using namespace sppnet::cuda::tc::kern;

namespace {

template <class F>
void launch(unsigned gx, unsigned gy, unsigned gz, unsigned threads, F kernel) {
  gridDim = {gx, gy, gz};
  blockDim = {threads, 1, 1};
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        blockIdx = {x, y, z};
        emu::run_block(static_cast<int>(threads), kernel);
      }
}

// gemm_tc.cu's conv2d and gemm_tn with the emulator in place of the GPU (same tables, same plans).
void emu_conv2d(const RaggedView& in, const float* x, const Conv2dParams& p, const float* w, const float* b, const RaggedView& out,
                float* y, int sms) {
  const ConvTables t = conv_tables(in, out, p);
  const Plan pl = conv_plan(t.M, p.out_channels / p.groups, p.groups, sms);
  const ConvArgs a = conv_args(t, t.bytes.data(), in, p, x, w, b, y);
  auto go = [&](auto bm) {
    constexpr int BM = decltype(bm)::value;
    launch(unsigned(pl.mtiles), unsigned(pl.ntiles), unsigned(p.groups), kThreads, [&] {
      if (p.math == kMathBf16) conv_tc_kernel<BM, kMathBf16>(a);
      else if (p.math == kMathFp32) conv_tc_kernel<BM, kMathFp32>(a);
      else conv_tc_kernel<BM, kMathTf32>(a);
    });
  };
  if (pl.bm == 64) go(std::integral_constant<int, 64>{});
  else go(std::integral_constant<int, 128>{});
}

void emu_gemm(int64_t M, int32_t N, int32_t K, const float* A, const float* B, const float* bias, bool relu, int32_t math, float* C,
              int sms, int64_t* splits_out) {
  const Plan pl = gemm_plan(M, N, K, sms);
  *splits_out = pl.splits;
  std::vector<float> part(pl.splits > 1 ? size_t(pl.splits * M * N) : 0);
  GemmArgs a;
  a.A = A, a.B = B, a.bias = bias, a.C = C, a.partial = pl.splits > 1 ? part.data() : nullptr, a.M = M, a.N = N, a.K = K;
  a.kchunk = pl.kchunk, a.relu = relu;
  auto go = [&](auto bm) {
    constexpr int BM = decltype(bm)::value;
    launch(unsigned(pl.mtiles), unsigned(pl.ntiles), unsigned(pl.splits), kThreads, [&] {
      if (math == kMathBf16) gemm_tc_kernel<BM, kMathBf16>(a);
      else if (math == kMathFp32) gemm_tc_kernel<BM, kMathFp32>(a);
      else gemm_tc_kernel<BM, kMathTf32>(a);
    });
  };
  if (pl.bm == 64) go(std::integral_constant<int, 64>{});
  else go(std::integral_constant<int, 128>{});
  if (pl.splits > 1) launch(1, 1, 1, 1, [&] { splitk_reduce_kernel(M * N, N, int32_t(pl.splits), part.data(), bias, relu, C); });
}

std::mt19937 rng;
float normal() { return std::normal_distribution<float>(0.f, 1.f)(rng); }

const char* mode_name(int m) { return m == kMathTf32 ? "tf32" : m == kMathBf16 ? "bf16" : "fp32"; }
double tolerance(int m) { return m == kMathTf32 ? 2e-3 : m == kMathBf16 ? 1.6e-2 : 1e-5; }

// Worst |got - ref| / sum |w x| + |b|; NaN-ness and infinities must match exactly (returns inf).
double judge(const std::vector<float>& got, const std::vector<double>& ref, const std::vector<double>& mag, int64_t* bad_at) {
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], g = got[i];
    if (std::isnan(r) || std::isinf(r)) {
      if (std::isnan(r) ? !std::isnan(g) : g != r) return *bad_at = int64_t(i), INFINITY;
      continue;
    }
    const double e = std::fabs(g - r) / (mag[i] + 1e-30);
    if (!(e <= worst)) worst = e, *bad_at = int64_t(i);
  }
  return worst;
}

struct ConvCase {
  const char* name;
  int cin, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups;
  bool relu;
  std::vector<std::pair<int, int>> sizes;
  bool poison_inf = false;
};

int run_conv(const ConvCase& c, int math, int sms) {
  Conv2dParams p;
  p.in_channels = c.cin, p.out_channels = c.cout, p.kernel_h = c.kh, p.kernel_w = c.kw, p.stride_h = c.sh, p.stride_w = c.sw;
  p.pad_h = c.ph, p.pad_w = c.pw, p.dilation_h = c.dh, p.dilation_w = c.dw, p.groups = c.groups, p.relu = c.relu, p.math = math;
  const int n = int(c.sizes.size());
  std::vector<int64_t> ioff(n), ooff(n);
  std::vector<int32_t> ih(n), iw(n), oh(n), ow(n);
  int64_t itot = 0, otot = 0;
  for (int i = 0; i < n; ++i) {
    ih[i] = c.sizes[i].first, iw[i] = c.sizes[i].second;
    oh[i] = (ih[i] + 2 * c.ph - c.dh * (c.kh - 1) - 1) / c.sh + 1;
    ow[i] = (iw[i] + 2 * c.pw - c.dw * (c.kw - 1) - 1) / c.sw + 1;
    ioff[i] = itot, ooff[i] = otot;
    itot += int64_t{c.cin} * ih[i] * iw[i];
    otot += int64_t{c.cout} * oh[i] * ow[i];
  }
  RaggedView in{n, c.cin, ioff.data(), ih.data(), iw.data(), itot}, out{n, c.cout, ooff.data(), oh.data(), ow.data(), otot};
  const int cin_g = c.cin / c.groups, cout_g = c.cout / c.groups;
  std::vector<float> x(itot), w(int64_t{c.cout} * cin_g * c.kh * c.kw), b(c.cout), y(otot, 7.77e30f), ycpu(otot);
  for (auto& v : x) v = normal();
  for (auto& v : w) v = 0.2f * normal();
  for (auto& v : b) v = normal();
  if (c.poison_inf) x[3] = NAN, x[itot - 5] = INFINITY;
  emu_conv2d(in, x.data(), p, w.data(), b.data(), out, y.data(), sms);
  // float64 reference and magnitude
  std::vector<double> ref(otot), mag(otot);
  for (int i = 0; i < n; ++i)
    for (int co = 0; co < c.cout; ++co) {
      const int g = co / cout_g;
      for (int oy = 0; oy < oh[i]; ++oy)
        for (int ox = 0; ox < ow[i]; ++ox) {
          double s = b[co], m = std::fabs(b[co]);
          for (int ci = 0; ci < cin_g; ++ci)
            for (int ky = 0; ky < c.kh; ++ky)
              for (int kx = 0; kx < c.kw; ++kx) {
                const int yy = oy * c.sh - c.ph + ky * c.dh, xx = ox * c.sw - c.pw + kx * c.dw;
                if (yy < 0 || yy >= ih[i] || xx < 0 || xx >= iw[i]) continue;
                const double xv = x[ioff[i] + (int64_t(g * cin_g + ci) * ih[i] + yy) * iw[i] + xx];
                const double wv = w[((int64_t(co) * cin_g + ci) * c.kh + ky) * c.kw + kx];
                s += xv * wv, m += std::fabs(xv * wv);
              }
          const int64_t at = ooff[i] + (int64_t(co) * oh[i] + oy) * ow[i] + ox;
          ref[at] = c.relu ? (s > 0 || std::isnan(s) ? s : 0) : s;
          mag[at] = m;
        }
    }
  int64_t bad = -1;
  const double worst = judge(y, ref, mag, &bad);
  // and sppnet's CPU conv2d on the same data, held to the same bound
  cpu::conv2d_forward(in, x.data(), p, w.data(), b.data(), out, ycpu.data());
  int64_t bad_cpu = -1;
  const double worst_cpu = judge(ycpu, ref, mag, &bad_cpu);
  const bool ok = worst <= tolerance(math) && worst_cpu <= 1e-5;
  const Plan pl = conv_plan(otot / c.cout, cout_g, c.groups, sms);
  std::printf("%s conv %-44s %s BM=%d grid %lldx%lldx%d: worst %.2e of sum|wx| (tolerance %.0e); cpu %.2e\n", ok ? "ok  " : "FAIL", c.name,
              mode_name(math), pl.bm, (long long)pl.mtiles, (long long)pl.ntiles, c.groups, worst, tolerance(math), worst_cpu);
  if (!ok && bad >= 0) std::printf("     element %lld: got %g, want %g\n", (long long)bad, y[bad], ref[bad]);
  return ok ? 0 : 1;
}

int run_gemm(int64_t M, int N, int K, bool relu, int math, int sms) {
  std::vector<float> A(M * K), B(int64_t(N) * K), bias(N), C(M * N, 7.77e30f);
  for (auto& v : A) v = normal();
  for (auto& v : B) v = 0.1f * normal();
  for (auto& v : bias) v = normal();
  int64_t splits = 0;
  emu_gemm(M, N, K, A.data(), B.data(), bias.data(), relu, math, C.data(), sms, &splits);
  std::vector<double> ref(M * N), mag(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = bias[n], g = std::fabs(bias[n]);
      for (int k = 0; k < K; ++k) s += double(A[m * K + k]) * B[int64_t(n) * K + k], g += std::fabs(double(A[m * K + k]) * B[int64_t(n) * K + k]);
      ref[m * N + n] = relu ? (s > 0 ? s : 0) : s;
      mag[m * N + n] = g;
    }
  int64_t bad = -1;
  const double worst = judge(C, ref, mag, &bad);
  const bool ok = worst <= tolerance(math);
  std::printf("%s gemm %lldx%dx%d%s %s splits %lld: worst %.2e of sum|wx| (tolerance %.0e)\n", ok ? "ok  " : "FAIL", (long long)M, N, K,
              relu ? " relu" : "", mode_name(math), (long long)splits, worst, tolerance(math));
  if (!ok && bad >= 0) std::printf("     element %lld: got %g, want %g\n", (long long)bad, C[bad], ref[bad]);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned seed = argc > 1 ? unsigned(std::strtoul(argv[1], nullptr, 10)) : std::random_device{}();
  rng.seed(seed);
  std::printf("tc_emulate: the tensor-core kernels on the CPU (fibers, emulated mma.sync), seed %u\n", seed);
  std::uniform_int_distribution<int> tiny(1, 4);
  std::vector<std::pair<int, int>> tinies;
  for (int i = 0; i < 40; ++i) tinies.push_back({tiny(rng), tiny(rng)});
  const std::vector<ConvCase> cases = {
      {"ZF-5 conv1 7x7/2 p1 3->96, maps 5x5..40x33", 3, 96, 7, 7, 2, 2, 1, 1, 1, 1, 1, true, {{5, 5}, {40, 33}, {6, 11}, {19, 23}}},
      {"1x1 200->130 (2 N tiles, K=200), 40 maps 1..4", 200, 130, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, tinies},
      {"3x5 dil (2,1) str (1,2) pad (1,2) groups 3", 6, 9, 3, 5, 1, 2, 1, 2, 2, 1, 3, true, {{9, 12}, {20, 7}, {3, 5}}},
      {"3x3 p1 24->20 with NaN and Inf", 24, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, {{7, 9}, {1, 1}, {12, 5}}, true},
  };
  int failures = 0;
  for (int math : {kMathTf32, kMathBf16, kMathFp32}) {
    for (const ConvCase& c : cases) failures += run_conv(c, math, 132);
    failures += run_conv(cases[0], math, 1);  // one SM: 128-pixel tiles
    failures += run_gemm(3, 257, 1000, false, math, 132);  // split-K
    failures += run_gemm(150, 130, 70, true, math, 1);     // BM = 128, two N tiles, no split
    failures += run_gemm(1, 1, 1, false, math, 132);
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "all cases passed", failures);
  return failures ? 1 : 0;
}
