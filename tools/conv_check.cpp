// Standalone check and timing harness for the CPU GEMM and convolution (no Node).
//
//   cmake -S . -B build-tools -DSPPNET_TOOLS=ON -DSPPNET_WITH_CUDA=OFF && cmake --build build-tools -j2
//   ./build-tools/conv_check [check|time|all|net|gemm|im2col|vgg16|vgg16-im2col] [reps] [batch]
//
// check: gemm_nn (and gemm_bf16_packed: AVX-512 BF16, or its fallback with SPPNET_CPU_ISA=avx2) on ragged shapes (M, N, K off the tile sizes, K = 1, leading dimensions wider
//        than the matrix, bias, ReLU, NaN) against a float64 reference, and conv2d_forward on
//        ZF-5-like layers and odd ones (groups, dilation, 1x1 maps) on sampled outputs.
// time:  conv2d_forward on the ZF-5 conv1-5 shapes at 224x224 (batch 1 and 4 by default):
//        median ms and GFLOP/s per layer. SPPNET_CPU_ISA and SPPNET_NUM_THREADS apply.
// vgg16, googlenet: the same for torchvision's vgg16 / googlenet conv layers (batch 1 by default).
// im2col, vgg16-im2col, googlenet-im2col: the same layers with one output channel (im2col and one pass over it).
// gemm, vgg16-gemm: gemm_packed alone on those layers' GEMM shapes.
// net:   the anchor ZF-5 of bench/zf5.js layer by layer (conv1, LRN, max pool 3/2/1, conv2, LRN,
//        pool, conv3-5, SPP {6,3,2,1} paper bins), kernels only (no Node): median ms per layer,
//        the im2col share of each conv (the same conv with one output channel), and the LRN and
//        pool outputs checked against float64 references (NaN inputs included).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../cpu/gemm_cpu.h"
#include "sppnet/bf16.h"
#include "sppnet/cpu_info.h"
#include "sppnet/ops.h"

using namespace sppnet;

namespace {

std::mt19937 rng(12345);
float unif() { return std::uniform_real_distribution<float>(-1.f, 1.f)(rng); }

int check_gemm() {
  struct S { int64_t M, N, K; };
  const S shapes[] = {{1, 1, 1},   {12, 32, 1},    {13, 33, 7},   {11, 17, 300}, {25, 31, 2},  {96, 12100 / 10, 147},
                      {256, 729, 2400 / 8}, {384, 196, 2304}, {7, 100, 1200}, {24, 64, 513}, {5, 3, 1100}, {37, 50, 640},
                      {4, 16, 16}, {6, 48, 9}, {100, 1, 33}};
  int bad = 0;
  for (const S& s : shapes)
    for (int variant = 0; variant < 4; ++variant) {
      const bool relu = variant & 1, bias = variant & 2;
      const int64_t lda = s.K + (variant == 3 ? 5 : 0), ldb = s.N + (variant >= 2 ? 3 : 0), ldc = s.N + (variant == 1 ? 7 : 0);
      std::vector<float> A(s.M * lda), B(s.K * ldb), bv(s.M), C(s.M * ldc, 777.f);
      for (auto& v : A) v = unif();
      for (auto& v : B) v = unif();
      for (auto& v : bv) v = unif();
      if (variant == 3 && s.K > 2) A[1] = NAN;  // row 0 all NaN
      cpu::gemm_nn(s.M, s.N, s.K, A.data(), lda, B.data(), ldb, C.data(), ldc, bias ? bv.data() : nullptr, relu, true);
      int64_t wrong = 0;
      for (int64_t m = 0; m < s.M; ++m) {
        for (int64_t n = 0; n < s.N; ++n) {
          double r = bias ? bv[m] : 0.0, mag = std::fabs(r);
          for (int64_t k = 0; k < s.K; ++k) r += double(A[m * lda + k]) * B[k * ldb + n], mag += std::fabs(double(A[m * lda + k]) * B[k * ldb + n]);
          if (relu && r < 0) r = 0;
          const float g = C[m * ldc + n];
          const bool ok = std::isnan(r) ? std::isnan(g) : std::fabs(g - r) <= 1e-5 * (mag + 1);
          if (!ok && wrong++ < 3)
            std::printf("  gemm %ldx%ldx%ld v%d: C[%ld][%ld] = %g, want %g\n", long(s.M), long(s.N), long(s.K), variant, long(m), long(n), g, r);
        }
        for (int64_t n = s.N; n < ldc; ++n)
          if (C[m * ldc + n] != 777.f && wrong++ < 3) std::printf("  gemm %ldx%ldx%ld v%d: wrote past N\n", long(s.M), long(s.N), long(s.K), variant);
      }
      bad += wrong != 0;
    }
  std::printf("gemm_nn: %d of %d shape/variant cases wrong (isa %s)\n", bad, int(sizeof shapes / sizeof shapes[0]) * 4, cpu::isa().c_str());
  return bad;
}

// gemm_bf16_packed (AVX-512 BF16, or the scalar fallback under SPPNET_CPU_ISA=avx2) against a
// float64 reference on the bfloat16-rounded operands: odd K, K blocks, ragged tiles, bias, ReLU,
// NaN in a row of A.
int check_gemm_bf16() {
  struct S { int64_t M, N, K; };
  const S shapes[] = {{1, 1, 1}, {12, 32, 2}, {13, 33, 7}, {11, 17, 301}, {25, 70, 1025}, {100, 1, 33}, {37, 50, 640}, {260, 45, 12}};
  int bad = 0;
  for (const S& s : shapes)
    for (int variant = 0; variant < 4; ++variant) {
      const bool relu = variant & 1, bias = variant & 2;
      const int64_t lda = s.K + (variant == 3 ? 5 : 0), ldc = s.N + (variant == 1 ? 7 : 0);
      std::vector<float> X(s.N * s.K), bv(s.M), C(s.M * ldc, 777.f);
      std::vector<uint16_t> A(s.M * lda);
      for (auto& v : A) v = float_to_bf16(unif());
      for (auto& v : X) v = unif();
      for (auto& v : bv) v = unif();
      if (variant == 3 && s.K > 2) A[1] = float_to_bf16(NAN);  // row 0 all NaN
      std::vector<uint16_t> Bp(static_cast<size_t>(cpu::gemm_panels(s.N) * cpu::gemm_bf16_rows(s.K) * cpu::kGemmNR), 0xffff);
      cpu::gemm_bf16_pack_rows(s.N, s.K, X.data(), s.K, Bp.data(), true);
      cpu::gemm_bf16_packed(s.M, s.N, s.K, A.data(), lda, Bp.data(), C.data(), ldc, bias ? bv.data() : nullptr, relu, true);
      int64_t wrong = 0;
      for (int64_t m = 0; m < s.M; ++m) {
        for (int64_t n = 0; n < s.N; ++n) {
          double r = bias ? bv[m] : 0.0, mag = std::fabs(r);
          for (int64_t k = 0; k < s.K; ++k) {
            const double t = double(bf16_to_float(A[m * lda + k])) * bf16_to_float(float_to_bf16(X[n * s.K + k]));
            r += t, mag += std::fabs(t);
          }
          if (relu && r < 0) r = 0;
          const float g = C[m * ldc + n];
          const bool ok = std::isnan(r) ? std::isnan(g) : std::fabs(g - r) <= 1e-5 * (mag + 1);
          if (!ok && wrong++ < 3)
            std::printf("  gemm bf16 %ldx%ldx%ld v%d: C[%ld][%ld] = %g, want %g\n", long(s.M), long(s.N), long(s.K), variant, long(m), long(n), g, r);
        }
        for (int64_t n = s.N; n < ldc; ++n)
          if (C[m * ldc + n] != 777.f && wrong++ < 3) std::printf("  gemm bf16 %ldx%ldx%ld v%d: wrote past N\n", long(s.M), long(s.N), long(s.K), variant);
      }
      bad += wrong != 0;
    }
  std::printf("gemm_bf16_packed: %d of %d shape/variant cases wrong (%s)\n", bad, int(sizeof shapes / sizeof shapes[0]) * 4,
              cpu::gemm_bf16_available() ? "AVX-512 BF16" : "scalar fallback");
  return bad;
}

struct Layer {
  const char* name;
  int cin, cout, k, stride, pad, H, W, groups, dil;
  bool relu;
};

struct Maps {
  std::vector<int64_t> off;
  std::vector<int32_t> h, w;
  RaggedView view(int C) const {
    RaggedView v;
    v.count = static_cast<int32_t>(h.size());
    v.channels = C;
    v.offset = off.data();
    v.height = h.data();
    v.width = w.data();
    v.total = 0;
    for (size_t i = 0; i < h.size(); ++i) v.total = std::max<int64_t>(v.total, off[i] + int64_t{C} * h[i] * w[i]);
    return v;
  }
};

Conv2dParams params(const Layer& l) {
  Conv2dParams p;
  p.in_channels = l.cin, p.out_channels = l.cout, p.kernel_h = p.kernel_w = l.k, p.stride_h = p.stride_w = l.stride;
  p.pad_h = p.pad_w = l.pad, p.dilation_h = p.dilation_w = l.dil, p.groups = l.groups, p.relu = l.relu;
  return p;
}

int out_size(int n, const Layer& l) { return (n + 2 * l.pad - l.dil * (l.k - 1) - 1) / l.stride + 1; }

struct Run {
  Maps in, out;
  std::vector<float> x, w, b, y;
  std::vector<float> cache;  // the layer's filter cache (Conv2dParams::filter_cache), as a model keeps it
  double flop = 0;
};

Run make(const Layer& l, const std::vector<std::pair<int, int>>& sizes) {
  Run r;
  int64_t ti = 0, to = 0;
  for (auto [h, w] : sizes) {
    const int ho = out_size(h, l), wo = out_size(w, l);
    r.in.off.push_back(ti), r.in.h.push_back(h), r.in.w.push_back(w), ti += int64_t{l.cin} * h * w;
    r.out.off.push_back(to), r.out.h.push_back(ho), r.out.w.push_back(wo), to += int64_t{l.cout} * ho * wo;
    r.flop += 2.0 * l.cout * (l.cin / l.groups) * l.k * l.k * ho * wo;
  }
  r.x.resize(ti), r.w.resize(int64_t{l.cout} * (l.cin / l.groups) * l.k * l.k), r.b.resize(l.cout), r.y.assign(to, 0.f);
  for (auto& v : r.x) v = unif();
  for (auto& v : r.w) v = unif() * 0.1f;
  for (auto& v : r.b) v = unif();
  return r;
}

// One conv2d_forward with the layer's filter cache, as Model.run calls it: the first call packs or
// transforms the filters into it, later ones reuse them (the timings are of a model's steady state).
Status run(const Layer& l, Run& r) {
  Conv2dParams p = params(l);
  const int64_t floats = cpu::conv_cache_floats(p, r.out.view(l.cout));
  if (floats > 0) {
    if (static_cast<int64_t>(r.cache.size()) != floats) r.cache.assign(static_cast<size_t>(floats), 0.f);
    p.filter_cache = r.cache.data(), p.filter_cache_len = floats;
  }
  return cpu::conv2d_forward(r.in.view(l.cin), r.x.data(), p, r.w.data(), r.b.data(), r.out.view(l.cout), r.y.data());
}

// Sampled outputs (all of them for small layers) against a float64 reference.
int check_conv(const Layer& l, const std::vector<std::pair<int, int>>& sizes) {
  Run r = make(l, sizes);
  std::fill(r.y.begin(), r.y.end(), NAN);
  if (!run(l, r).ok()) return std::printf("  %s: error\n", l.name), 1;
  const int cg = l.cin / l.groups, og = l.cout / l.groups;
  int64_t wrong = 0, tried = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int H = r.in.h[i], W = r.in.w[i], Ho = r.out.h[i], Wo = r.out.w[i];
    const int64_t n = int64_t{l.cout} * Ho * Wo;
    const int64_t step = std::max<int64_t>(1, n / 3000);
    for (int64_t e = 0; e < n; e += step + (step > 1 ? e % 7 : 0)) {
      const int o = static_cast<int>(e / (int64_t{Ho} * Wo)), oy = static_cast<int>(e / Wo % Ho), ox = static_cast<int>(e % Wo);
      const int g = o / og;
      double s = r.b[o], mag = std::fabs(s);
      for (int c = 0; c < cg; ++c)
        for (int ki = 0; ki < l.k; ++ki)
          for (int kj = 0; kj < l.k; ++kj) {
            const int y = oy * l.stride - l.pad + ki * l.dil, x = ox * l.stride - l.pad + kj * l.dil;
            if (y < 0 || y >= H || x < 0 || x >= W) continue;
            const double t = double(r.w[((int64_t{o} * cg + c) * l.k + ki) * l.k + kj]) * r.x[r.in.off[i] + (int64_t{g * cg + c} * H + y) * W + x];
            s += t, mag += std::fabs(t);
          }
      if (l.relu && s < 0) s = 0;
      const float got = r.y[r.out.off[i] + e];
      ++tried;
      if (!(std::fabs(got - s) <= 1e-5 * (mag + 1)) && wrong++ < 3)
        std::printf("  %s map %zu out[%d][%d][%d] = %g, want %g\n", l.name, i, o, oy, ox, got, s);
    }
  }
  std::printf("conv %-8s %3zu maps: %ld of %ld sampled outputs wrong\n", l.name, sizes.size(), long(wrong), long(tried));
  return wrong != 0;
}

// ZF-5 of the anchor net (bench/zf5.js) at 224x224: input sizes of each conv layer.
const Layer kZf5[] = {
    {"conv1", 3, 96, 7, 2, 1, 224, 224, 1, 1, true},  {"conv2", 96, 256, 5, 2, 1, 55, 55, 1, 1, true},
    {"conv3", 256, 384, 3, 1, 1, 14, 14, 1, 1, true}, {"conv4", 384, 384, 3, 1, 1, 14, 14, 1, 1, true},
    {"conv5", 384, 256, 3, 1, 1, 14, 14, 1, 1, true},
};

// torchvision's vgg16 at 224x224 (features.0 ... features.28; Winograd takes those with >= 160 channels).
const Layer kVgg16[] = {
    {"f.0", 3, 64, 3, 1, 1, 224, 224, 1, 1, true},     {"f.2", 64, 64, 3, 1, 1, 224, 224, 1, 1, true},
    {"f.5", 64, 128, 3, 1, 1, 112, 112, 1, 1, true},   {"f.7", 128, 128, 3, 1, 1, 112, 112, 1, 1, true},
    {"f.10", 128, 256, 3, 1, 1, 56, 56, 1, 1, true},   {"f.12", 256, 256, 3, 1, 1, 56, 56, 1, 1, true},
    {"f.14", 256, 256, 3, 1, 1, 56, 56, 1, 1, true},   {"f.17", 256, 512, 3, 1, 1, 28, 28, 1, 1, true},
    {"f.19", 512, 512, 3, 1, 1, 28, 28, 1, 1, true},   {"f.21", 512, 512, 3, 1, 1, 28, 28, 1, 1, true},
    {"f.24", 512, 512, 3, 1, 1, 14, 14, 1, 1, true},   {"f.26", 512, 512, 3, 1, 1, 14, 14, 1, 1, true},
    {"f.28", 512, 512, 3, 1, 1, 14, 14, 1, 1, true},
};

// torchvision's googlenet at 224x224: conv1-3 and each Inception block's six convs (branch 3's
// second conv is 3x3 in torchvision, as in its checkpoint).
const Layer kGooglenet[] = {
    {"conv1", 3, 64, 7, 2, 3, 224, 224, 1, 1, true},
    {"conv2", 64, 64, 1, 1, 0, 56, 56, 1, 1, true},
    {"conv3", 64, 192, 3, 1, 1, 56, 56, 1, 1, true},
    {"3a.b1", 192, 64, 1, 1, 0, 28, 28, 1, 1, true},
    {"3a.b2.0", 192, 96, 1, 1, 0, 28, 28, 1, 1, true},
    {"3a.b2.1", 96, 128, 3, 1, 1, 28, 28, 1, 1, true},
    {"3a.b3.0", 192, 16, 1, 1, 0, 28, 28, 1, 1, true},
    {"3a.b3.1", 16, 32, 3, 1, 1, 28, 28, 1, 1, true},
    {"3a.b4", 192, 32, 1, 1, 0, 28, 28, 1, 1, true},
    {"3b.b1", 256, 128, 1, 1, 0, 28, 28, 1, 1, true},
    {"3b.b2.0", 256, 128, 1, 1, 0, 28, 28, 1, 1, true},
    {"3b.b2.1", 128, 192, 3, 1, 1, 28, 28, 1, 1, true},
    {"3b.b3.0", 256, 32, 1, 1, 0, 28, 28, 1, 1, true},
    {"3b.b3.1", 32, 96, 3, 1, 1, 28, 28, 1, 1, true},
    {"3b.b4", 256, 64, 1, 1, 0, 28, 28, 1, 1, true},
    {"4a.b1", 480, 192, 1, 1, 0, 14, 14, 1, 1, true},
    {"4a.b2.0", 480, 96, 1, 1, 0, 14, 14, 1, 1, true},
    {"4a.b2.1", 96, 208, 3, 1, 1, 14, 14, 1, 1, true},
    {"4a.b3.0", 480, 16, 1, 1, 0, 14, 14, 1, 1, true},
    {"4a.b3.1", 16, 48, 3, 1, 1, 14, 14, 1, 1, true},
    {"4a.b4", 480, 64, 1, 1, 0, 14, 14, 1, 1, true},
    {"4b.b1", 512, 160, 1, 1, 0, 14, 14, 1, 1, true},
    {"4b.b2.0", 512, 112, 1, 1, 0, 14, 14, 1, 1, true},
    {"4b.b2.1", 112, 224, 3, 1, 1, 14, 14, 1, 1, true},
    {"4b.b3.0", 512, 24, 1, 1, 0, 14, 14, 1, 1, true},
    {"4b.b3.1", 24, 64, 3, 1, 1, 14, 14, 1, 1, true},
    {"4b.b4", 512, 64, 1, 1, 0, 14, 14, 1, 1, true},
    {"4c.b1", 512, 128, 1, 1, 0, 14, 14, 1, 1, true},
    {"4c.b2.0", 512, 128, 1, 1, 0, 14, 14, 1, 1, true},
    {"4c.b2.1", 128, 256, 3, 1, 1, 14, 14, 1, 1, true},
    {"4c.b3.0", 512, 24, 1, 1, 0, 14, 14, 1, 1, true},
    {"4c.b3.1", 24, 64, 3, 1, 1, 14, 14, 1, 1, true},
    {"4c.b4", 512, 64, 1, 1, 0, 14, 14, 1, 1, true},
    {"4d.b1", 512, 112, 1, 1, 0, 14, 14, 1, 1, true},
    {"4d.b2.0", 512, 144, 1, 1, 0, 14, 14, 1, 1, true},
    {"4d.b2.1", 144, 288, 3, 1, 1, 14, 14, 1, 1, true},
    {"4d.b3.0", 512, 32, 1, 1, 0, 14, 14, 1, 1, true},
    {"4d.b3.1", 32, 64, 3, 1, 1, 14, 14, 1, 1, true},
    {"4d.b4", 512, 64, 1, 1, 0, 14, 14, 1, 1, true},
    {"4e.b1", 528, 256, 1, 1, 0, 14, 14, 1, 1, true},
    {"4e.b2.0", 528, 160, 1, 1, 0, 14, 14, 1, 1, true},
    {"4e.b2.1", 160, 320, 3, 1, 1, 14, 14, 1, 1, true},
    {"4e.b3.0", 528, 32, 1, 1, 0, 14, 14, 1, 1, true},
    {"4e.b3.1", 32, 128, 3, 1, 1, 14, 14, 1, 1, true},
    {"4e.b4", 528, 128, 1, 1, 0, 14, 14, 1, 1, true},
    {"5a.b1", 832, 256, 1, 1, 0, 7, 7, 1, 1, true},
    {"5a.b2.0", 832, 160, 1, 1, 0, 7, 7, 1, 1, true},
    {"5a.b2.1", 160, 320, 3, 1, 1, 7, 7, 1, 1, true},
    {"5a.b3.0", 832, 32, 1, 1, 0, 7, 7, 1, 1, true},
    {"5a.b3.1", 32, 128, 3, 1, 1, 7, 7, 1, 1, true},
    {"5a.b4", 832, 128, 1, 1, 0, 7, 7, 1, 1, true},
    {"5b.b1", 832, 384, 1, 1, 0, 7, 7, 1, 1, true},
    {"5b.b2.0", 832, 192, 1, 1, 0, 7, 7, 1, 1, true},
    {"5b.b2.1", 192, 384, 3, 1, 1, 7, 7, 1, 1, true},
    {"5b.b3.0", 832, 48, 1, 1, 0, 7, 7, 1, 1, true},
    {"5b.b3.1", 48, 128, 3, 1, 1, 7, 7, 1, 1, true},
    {"5b.b4", 832, 128, 1, 1, 0, 7, 7, 1, 1, true},
};

int check_all() {
  int bad = check_gemm() + check_gemm_bf16();
  for (const Layer& l : kZf5) bad += check_conv(l, {{l.H, l.W}});
  bad += check_conv(kZf5[2], {{14, 14}, {9, 17}, {3, 3}, {1, 1}, {20, 11}});
  const Layer odd[] = {
      {"g3dil", 6, 9, 3, 1, 1, 0, 0, 3, 2, true}, {"1x1", 40, 13, 1, 1, 0, 0, 0, 1, 1, false},
      {"k5s3", 7, 29, 5, 3, 2, 0, 0, 1, 1, true}, {"g2", 64, 64, 3, 2, 1, 0, 0, 2, 1, false},
  };
  for (const Layer& l : odd) bad += check_conv(l, {{23, 29}, {l.k + 3, l.k + 4}, {8, 40}, {31, 6}});
  // One large map with a small K: packed and multiplied a few panels at a time (the fused path),
  // column counts off the panel and group sizes.
  const Layer big[] = {
      {"f7s2", 3, 20, 7, 2, 1, 0, 0, 1, 1, true}, {"f3g2d2", 8, 14, 3, 1, 2, 0, 0, 2, 2, false},
      {"f5s3", 5, 13, 5, 3, 2, 0, 0, 1, 1, true}, {"f1", 30, 7, 1, 1, 0, 0, 0, 1, 1, false},
  };
  for (const Layer& l : big) bad += check_conv(l, {{97, 101}});
  for (const Layer& l : big) bad += check_conv(l, {{211, 37}});
  return bad;
}

double now_ms() { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <size_t L>
void time_all(int reps, int batch, const Layer (&layers)[L], bool m1 = false) {
  std::printf("isa %s, %d threads, batch %d, %d reps (median ms)\n", cpu::isa().c_str(), cpu::threads(), batch, reps);
  double total = 0, flops = 0;
  for (Layer l : layers) {
    if (m1) l.cout = 1;  // im2col (and one pass over it) alone
    Run r = make(l, std::vector<std::pair<int, int>>(batch, {l.H, l.W}));
    run(l, r);
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      const double t0 = now_ms();
      run(l, r);
      t.push_back(now_ms() - t0);
    }
    std::sort(t.begin(), t.end());
    const double med = t[t.size() / 2];
    total += med, flops += r.flop;
    std::printf("  %-6s M=%3d N=%6d K=%5d  %7.3f ms (min %7.3f)  %6.1f GFLOP/s\n", l.name, l.cout,
                batch * out_size(l.H, l) * out_size(l.W, l), l.cin * l.k * l.k, med, t[0], r.flop / med * 1e-6);
  }
  std::printf("  total  %7.3f ms  %6.1f GFLOP/s  (%.1f img/s conv only)\n", total, flops / total * 1e-6, batch * 1000.0 / total);
}

// gemm_packed alone on the ZF-5 GEMM shapes (B packed once, outside the timing).
template <size_t L>
void time_gemm(int reps, int batch, const Layer (&layers)[L]) {
  std::printf("gemm_packed only: isa %s, %d threads, batch %d, %d reps\n", cpu::isa().c_str(), cpu::threads(), batch, reps);
  for (const Layer& l : layers) {
    const int64_t M = l.cout, N = int64_t{batch} * out_size(l.H, l) * out_size(l.W, l), K = int64_t{l.cin} * l.k * l.k;
    std::vector<float> A(M * K), B(K * N), C(M * N), bias(M), Bp(cpu::gemm_packed_size(N, K) + 16);
    for (auto& v : A) v = unif();
    for (auto& v : B) v = unif();
    float* bp = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(Bp.data()) + 63) & ~uintptr_t{63});
    cpu::gemm_pack_b(N, K, B.data(), N, bp, true);
    std::vector<double> t;
    for (int i = 0; i <= reps; ++i) {
      const double t0 = now_ms();
      cpu::gemm_packed(M, N, K, A.data(), K, bp, C.data(), N, bias.data(), true, true);
      if (i) t.push_back(now_ms() - t0);
    }
    std::sort(t.begin(), t.end());
    const double flop = 2.0 * M * N * K;
    std::printf("  %-6s M=%3ld N=%6ld K=%5ld  %7.3f ms (min %7.3f)  %6.1f GFLOP/s (best %6.1f)\n", l.name, long(M), long(N), long(K),
                t[t.size() / 2], t[0], flop / t[t.size() / 2] * 1e-6, flop / t[0] * 1e-6);
  }
}


// ---- the whole anchor ZF-5, layer by layer ----

template <typename F>
double median_ms(int reps, F&& f) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now_ms();
    f();
    t.push_back(now_ms() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Dense {
  int N, C, H, W;
  std::vector<int64_t> off;
  std::vector<int32_t> h, w;
  std::vector<float> v;
  Dense(int N_, int C_, int H_, int W_) : N(N_), C(C_), H(H_), W(W_), off(N_), h(N_, H_), w(N_, W_), v(size_t(N_) * C_ * H_ * W_) {
    for (int i = 0; i < N; ++i) off[i] = int64_t{i} * C * H * W;
  }
  RaggedView view() const {
    RaggedView r;
    r.count = N, r.channels = C, r.offset = off.data(), r.height = h.data(), r.width = w.data(), r.total = int64_t(v.size());
    return r;
  }
};

// LRN against float64 (PyTorch's formula); returns the number of wrong outputs.
int64_t check_lrn(const Dense& x, const Dense& y, const LrnParams& p) {
  int64_t wrong = 0;
  const int HW = x.H * x.W;
  for (int n = 0; n < x.N; ++n)
    for (int c = 0; c < x.C; ++c)
      for (int e = 0; e < HW; ++e) {
        double s = 0;
        for (int cc = std::max(0, c - p.size / 2); cc <= std::min(x.C - 1, c + (p.size - 1) / 2); ++cc) {
          const double v = x.v[x.off[n] + int64_t{cc} * HW + e];
          s += v * v;
        }
        const double xv = x.v[x.off[n] + int64_t{c} * HW + e];
        const double r = xv / std::pow(p.k + p.alpha / p.size * s, p.beta);
        const float g = y.v[y.off[n] + int64_t{c} * HW + e];
        const bool ok = std::isnan(r) ? std::isnan(g) : std::fabs(g - r) <= 1e-6 * std::fabs(r) + 1e-30;
        if (!ok && wrong++ < 3) std::printf("  lrn [%d][%d][%d] = %.9g, want %.9g\n", n, c, e, g, r);
      }
  return wrong;
}

int64_t check_pool(const Dense& x, const Dense& y, const Pool2dParams& p) {
  int64_t wrong = 0;
  for (int n = 0; n < x.N; ++n)
    for (int c = 0; c < x.C; ++c)
      for (int oy = 0; oy < y.H; ++oy)
        for (int ox = 0; ox < y.W; ++ox) {
          float m = -INFINITY;
          bool nan = false;
          for (int i = 0; i < p.kernel_h; ++i)
            for (int j = 0; j < p.kernel_w; ++j) {
              const int yy = oy * p.stride_h - p.pad_h + i, xx = ox * p.stride_w - p.pad_w + j;
              if (yy < 0 || yy >= x.H || xx < 0 || xx >= x.W) continue;
              const float v = x.v[x.off[n] + (int64_t{c} * x.H + yy) * x.W + xx];
              nan |= v != v, m = std::max(m, v);
            }
          const float g = y.v[y.off[n] + (int64_t{c} * y.H + oy) * y.W + ox];
          const bool ok = nan ? g != g : g == m;
          if (!ok && wrong++ < 3) std::printf("  pool [%d][%d][%d][%d] = %g, want %g\n", n, c, oy, ox, g, nan ? NAN : m);
        }
  return wrong;
}

int time_net(int reps, int batch) {
  std::printf("anchor ZF-5 per layer: isa %s, %d threads, batch %d, %d reps (median ms)\n", cpu::isa().c_str(), cpu::threads(), batch, reps);
  const int N = batch;
  LrnParams lp;
  lp.size = 5, lp.alpha = 1e-4f, lp.beta = 0.75f, lp.k = 1.f;
  Pool2dParams pp;
  pp.kernel_h = pp.kernel_w = 3, pp.stride_h = pp.stride_w = 2, pp.pad_h = pp.pad_w = 1;
  Dense x(N, 3, 224, 224), c1(N, 96, 110, 110), l1(N, 96, 110, 110), p1(N, 96, 55, 55), c2(N, 256, 27, 27), l2(N, 256, 27, 27),
      p2(N, 256, 14, 14), c3(N, 384, 14, 14), c4(N, 384, 14, 14), c5(N, 256, 14, 14);
  for (auto& v : x.v) v = unif();
  const Layer L[] = {{"conv1", 3, 96, 7, 2, 1, 224, 224, 1, 1, true}, {"conv2", 96, 256, 5, 2, 1, 55, 55, 1, 1, true},
                     {"conv3", 256, 384, 3, 1, 1, 14, 14, 1, 1, true}, {"conv4", 384, 384, 3, 1, 1, 14, 14, 1, 1, true},
                     {"conv5", 384, 256, 3, 1, 1, 14, 14, 1, 1, true}};
  std::vector<float> w[5], b[5], w1[5];
  for (int i = 0; i < 5; ++i) {
    const int K = L[i].cin * L[i].k * L[i].k;
    w[i].resize(size_t(L[i].cout) * K), b[i].resize(L[i].cout), w1[i].resize(K);
    for (auto& v : w[i]) v = unif() * std::sqrt(3.f / K);
    for (auto& v : b[i]) v = unif() * 0.1f;
    for (auto& v : w1[i]) v = unif();
  }
  std::vector<float> one(size_t(N) * 110 * 110);  // the cout = 1 output
  const Dense* in[5] = {&x, &p1, &p2, &c3, &c4};
  Dense* out[5] = {&c1, &c2, &c3, &c4, &c5};
  auto conv = [&](int i) {
    return cpu::conv2d_forward(in[i]->view(), in[i]->v.data(), params(L[i]), w[i].data(), b[i].data(), out[i]->view(), out[i]->v.data());
  };
  auto conv_m1 = [&](int i) {
    Layer l = L[i];
    l.cout = 1;
    Dense o(N, 1, out[i]->H, out[i]->W);
    RaggedView ov = o.view();
    return cpu::conv2d_forward(in[i]->view(), in[i]->v.data(), params(l), w1[i].data(), b[i].data(), ov, one.data());
  };
  std::vector<int32_t> levels = {6, 3, 2, 1};
  std::vector<Region> regions(N);
  for (int i = 0; i < N; ++i) regions[i] = Region{i, 0, 0, 14, 14};
  SppProblem sp;
  sp.input = c5.view(), sp.num_regions = N, sp.regions = regions.data(), sp.num_levels = 4, sp.rule = kBinsPaper, sp.pool = kPoolMax;
  for (int l = 0; l < 4; ++l) sp.levels[l] = levels[l];
  std::vector<float> feat(size_t(sp.output_elements()));
  struct Row { const char* name; double ms, floor_ms; };
  std::vector<Row> rows;
  // What each non-conv layer must move at least (its input read once, its output written once),
  // in MB: printed with the rate achieved (their arithmetic is far below the cores' peak: LRN
  // ~12 flops an element with two square roots and a division, pooling 8 comparisons an output).
  auto floor_ms = [](double bytes, double) { return bytes / 1e6; };
  const double e1 = double(N) * 96 * 110 * 110, e2 = double(N) * 256 * 27 * 27;
  double conv_total = 0, other_total = 0;
  for (int i = 0; i < 5; ++i) {
    const double t = median_ms(reps, [&] { conv(i); });
    const double t1 = median_ms(reps, [&] { conv_m1(i); });
    rows.push_back({L[i].name, t, 0});
    char* nm = new char[32];
    std::snprintf(nm, 32, "  (%s im2col)", L[i].name);
    rows.push_back({nm, t1, -1});
    conv_total += t;
    if (i == 0) {
      const double tl = median_ms(reps, [&] { cpu::lrn_forward(c1.view(), c1.v.data(), lp, l1.v.data()); });
      const double tp = median_ms(reps, [&] { cpu::max_pool2d_forward(l1.view(), l1.v.data(), pp, p1.view(), p1.v.data()); });
      rows.push_back({"lrn1", tl, floor_ms(8 * e1, 12 * e1)}), rows.push_back({"pool1", tp, floor_ms(4 * e1 * 1.25, 0)});
      other_total += tl + tp;
    }
    if (i == 1) {
      const double tl = median_ms(reps, [&] { cpu::lrn_forward(c2.view(), c2.v.data(), lp, l2.v.data()); });
      const double tp = median_ms(reps, [&] { cpu::max_pool2d_forward(l2.view(), l2.v.data(), pp, p2.view(), p2.v.data()); });
      rows.push_back({"lrn2", tl, floor_ms(8 * e2, 12 * e2)}), rows.push_back({"pool2", tp, floor_ms(4 * e2 * (1 + 196.0 / 729), 0)});
      other_total += tl + tp;
    }
  }
  const double ts = median_ms(reps, [&] { cpu::spp_forward(sp, c5.v.data(), feat.data()); });
  rows.push_back({"spp", ts, floor_ms(4.0 * N * (256 * 196 + 12800), 0)});
  other_total += ts;
  for (const Row& r : rows) {
    if (r.floor_ms > 0)
      std::printf("  %-16s %7.3f ms   moves %6.2f MB: %5.1f GB/s\n", r.name, r.ms, r.floor_ms, r.floor_ms / r.ms);
    else
      std::printf("  %-16s %7.3f ms\n", r.name, r.ms);
  }
  std::printf("  conv1-5 %.3f ms + LRN/pool/SPP %.3f ms = %.3f ms (%.1f img/s)\n", conv_total, other_total, conv_total + other_total,
              N * 1000.0 / (conv_total + other_total));
  // Correctness of LRN and pool on these maps, then with NaNs and infinities sprinkled in.
  int64_t bad = check_lrn(c1, l1, lp) + check_pool(l1, p1, pp) + check_lrn(c2, l2, lp) + check_pool(l2, p2, pp);
  for (size_t i = 0; i < c1.v.size(); i += 7919) c1.v[i] = (i / 7919) % 3 == 0 ? NAN : (i / 7919) % 3 == 1 ? INFINITY : -INFINITY;
  for (size_t i = 0; i < c2.v.size(); i += 911) c2.v[i] = (i / 911) % 2 ? NAN : -INFINITY;
  std::fill(l1.v.begin(), l1.v.end(), 12345.f), std::fill(p1.v.begin(), p1.v.end(), 12345.f);
  std::fill(l2.v.begin(), l2.v.end(), 12345.f), std::fill(p2.v.begin(), p2.v.end(), 12345.f);
  cpu::lrn_forward(c1.view(), c1.v.data(), lp, l1.v.data());
  cpu::lrn_forward(c2.view(), c2.v.data(), lp, l2.v.data());
  bad += check_lrn(c1, l1, lp) + check_lrn(c2, l2, lp);
  for (size_t i = 0; i < l1.v.size(); i += 4099) l1.v[i] = (i / 4099) % 2 ? NAN : -INFINITY;
  cpu::max_pool2d_forward(l1.view(), l1.v.data(), pp, p1.view(), p1.v.data());
  cpu::max_pool2d_forward(c2.view(), c2.v.data(), pp, p2.view(), p2.v.data());
  bad += check_pool(l1, p1, pp) + check_pool(c2, p2, pp);
  std::printf("  LRN and max pool against float64 (with NaN/inf inputs too): %ld wrong\n", long(bad));
  return bad != 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "all";
  const int reps = argc > 2 ? std::atoi(argv[2]) : 15;
  const int batch = argc > 3 ? std::atoi(argv[3]) : 0;
  int bad = 0;
  if (what == "check" || what == "all") bad = check_all();
  if (what == "im2col") time_all(reps, batch > 0 ? batch : 1, kZf5, true);
  if (what == "vgg16") time_all(reps, batch > 0 ? batch : 1, kVgg16);
  if (what == "vgg16-im2col") time_all(reps, batch > 0 ? batch : 1, kVgg16, true);
  if (what == "net") {
    if (batch > 0)
      bad += time_net(reps, batch);
    else
      bad += time_net(reps, 1) + time_net(reps, 4);
  }
  if (what == "gemm") time_gemm(reps, batch > 0 ? batch : 1, kZf5);
  if (what == "googlenet") time_all(reps, batch > 0 ? batch : 1, kGooglenet);
  if (what == "googlenet-im2col") time_all(reps, batch > 0 ? batch : 1, kGooglenet, true);
  if (what == "vgg16-gemm") time_gemm(reps, batch > 0 ? batch : 1, kVgg16);
  if (what == "time" || what == "all") {
    if (batch > 0)
      time_all(reps, batch, kZf5);
    else
      time_all(reps, 1, kZf5), time_all(reps, 4, kZf5);
  }
  return bad ? 1 : 0;
}
