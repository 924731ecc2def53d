// Every CUDA kernel of cuda/, run on the CPU from its own .cu source (tools/emu: a fiber per CUDA
// thread, a seeded random order between barriers, poisoned shared memory, device memory between
// guard pages, the tensor cores' truncating arithmetic), through the same cuda:: entry points the
// addon calls, against sppnet's CPU backend and float64 references, on ragged batches with odd
// sizes. So the CUDA path's indexing, barriers, bounds and numerics are checked on every machine.
//
//   build/tools/cuda_emulate [seed] [--only SUBSTRING] [--rn]
//     seed: schedule, placement and data (printed; rerun with it to reproduce)
//     --only: run the cases whose name holds SUBSTRING
//     --rn: model an MMA that rounds to nearest instead of truncating (for comparison)
// One line per case ("ok" or "FAIL"), then "kernel NAME: N launches" for every kernel that ran,
// then "all cases passed: 0 failure(s)" or "FAILED: N failure(s)"; exit status 1 on a failure. An
// out-of-bounds access, a deadlock or a host pointer in a kernel argument stops the run (status 3)
// with a line "EMULATOR ERROR: ..." naming the kernel, block, thread and allocation.
//
// What this cannot check: timing; races within one thread's run between two barriers (a thread
// runs from barrier to barrier without being interrupted: compute-sanitizer racecheck on a GPU
// covers those); the GPU's own rounding of expf/powf and its FMA contraction.
#include <cuda_runtime.h>  // tools/emu/cuda_runtime.h

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

#include "sppnet/bf16.h"
#include "sppnet/bins.h"
#include "sppnet/dropout.h"
#include "sppnet/ops.h"

using namespace sppnet;

namespace {

std::mt19937_64 rng;
uint64_t g_seed = 0;
std::string only;
int failures = 0, cases = 0;

int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
float normal() { return std::normal_distribution<float>(0.f, 1.f)(rng); }

// ---- device buffers (emulated device memory: guard pages, poisoned) ----
template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  Dev(size_t count, const char* label) : n(count) {
    p = static_cast<T*>(emu::device_alloc(sizeof(T) * std::max<size_t>(n, 1), alignof(T), label));
    if (!p) emu::fail(std::string("emulated device memory exhausted allocating ") + label);
  }
  Dev(const std::vector<T>& h, const char* label) : Dev(h.size(), label) { std::memcpy(p, h.data(), sizeof(T) * n); }
  ~Dev() { emu::device_free(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> host() const { return std::vector<T>(p, p + n); }
};

// ---- ragged layouts ----
struct Layout {
  int C = 0;
  std::vector<int64_t> off;
  std::vector<int32_t> h, w;
  int64_t total = 0;
  RaggedView view() const { return RaggedView{static_cast<int32_t>(h.size()), C, off.data(), h.data(), w.data(), total}; }
  int64_t plane(int i) const { return int64_t{h[i]} * w[i]; }
};
Layout packed(int C, const std::vector<std::pair<int, int>>& sizes) {
  Layout l;
  l.C = C;
  for (const auto& s : sizes) {
    l.off.push_back(l.total);
    l.h.push_back(s.first);
    l.w.push_back(s.second);
    l.total += int64_t{C} * s.first * s.second;
  }
  return l;
}
std::vector<std::pair<int, int>> random_sizes(int count, int lo, int hi) {
  std::vector<std::pair<int, int>> s;
  for (int i = 0; i < count; ++i) s.push_back({uniform(lo, hi), uniform(lo, hi)});
  return s;
}
std::vector<float> random_data(int64_t n, float scale = 1.f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = scale * normal();
  return v;
}

// ---- comparisons ----
bool same_bits_or_both_nan(float a, float b) { return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, 4) == 0; }

std::string at(size_t i, double got, double want) {
  char b[160];
  std::snprintf(b, sizeof b, "element %zu: got %.9g, want %.9g", i, got, want);
  return b;
}

// Equal values: bit for bit, except that NaN matches any NaN and a zero either sign of zero (the
// CPU's vector max returns either zero of a tie; the contract is PyTorch's, which compares them equal).
bool exact(const std::vector<float>& got, const std::vector<float>& want, std::string* why) {
  if (got.size() != want.size()) return *why = "size mismatch", false;
  size_t zero_signs = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (same_bits_or_both_nan(got[i], want[i])) continue;
    if (got[i] == 0.f && want[i] == 0.f) {
      ++zero_signs;
      continue;
    }
    return *why = at(i, got[i], want[i]), false;
  }
  *why = zero_signs ? "identical but for the sign of " + std::to_string(zero_signs) + " zero(s)" : "bit-identical";
  return true;
}

// |got - want| <= atol + rtol |want|; NaN and infinities must match exactly.
bool close(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol, std::string* why) {
  if (got.size() != want.size()) return *why = "size mismatch", false;
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got[i], w = want[i];
    if (std::isnan(w) || std::isinf(w)) {
      if (!(std::isnan(w) ? std::isnan(g) : g == w)) return *why = at(i, g, w), false;
      continue;
    }
    const double e = std::fabs(g - w);
    if (!(e <= atol + rtol * std::fabs(w))) return *why = at(i, g, w), false;
    worst = std::max(worst, e / (atol + rtol * std::fabs(w)));
  }
  char b[64];
  std::snprintf(b, sizeof b, "worst %.2f of the tolerance", worst);
  *why = b;
  return true;
}

// Worst |got - ref| / mag over the elements, each judged against its own magnitude (sum |terms|).
bool against(const std::vector<float>& got, const std::vector<double>& ref, const std::vector<double>& mag, double tol, std::string* why) {
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], g = got[i];
    if (std::isnan(r) || std::isinf(r)) {
      if (!(std::isnan(r) ? std::isnan(g) : g == r)) return *why = at(i, g, r), false;
      continue;
    }
    const double e = std::fabs(g - r) / (mag[i] + 1e-30);
    if (!(e <= tol)) {
      char b[64];
      std::snprintf(b, sizeof b, " (%.2e of sum|terms|, tolerance %.0e)", e, tol);
      return *why = at(i, g, r) + b, false;
    }
    worst = std::max(worst, e);
  }
  char b[96];
  std::snprintf(b, sizeof b, "worst %.2e of sum|terms| (tolerance %.0e)", worst, tol);
  *why = b;
  return true;
}

// Whether to run the case; if so, its data and schedule are drawn from the seed and its name, so
// that --only reproduces them.
void reseed(const std::string& name) {
  const uint64_t s = g_seed ^ (std::hash<std::string>{}(name) * 0x9E3779B97F4A7C15ull);
  rng.seed(s);
  emu::seed(s);
}
bool selected(const std::string& name) {
  if (!only.empty() && name.find(only) == std::string::npos) return false;
  reseed(name);
  return true;
}

void report(const std::string& name, bool ok, const std::string& detail) {
  ++cases;
  if (!ok) ++failures;
  std::printf("%s %s: %s\n", ok ? "ok  " : "FAIL", name.c_str(), detail.c_str());
  std::fflush(stdout);
}

void expect_ok(const Status& s, const std::string& name) {
  if (!s.ok()) emu::fail(name + ": the call returned an error: " + s.message);
}

// =================================== SPP ===================================

struct SppCase {
  std::string name;
  int C;
  std::vector<std::pair<int, int>> sizes;
  std::vector<int> levels;
  int rule;
  int windows;  // 0: one region per map
  bool ties_and_nans;
};

bool bins_ok(int rule, const std::vector<int>& levels, int h, int w) {
  for (int n : levels)
    if (bin_check(rule, n, h) != kBinsOk || bin_check(rule, n, w) != kBinsOk) return false;
  return true;
}

void run_spp(const SppCase& c) {
  for (int pool : {kPoolMax, kPoolAvg}) {
    const std::string name = "spp " + std::string(pool == kPoolMax ? "max " : "avg ") + c.name;
    if (!selected(name)) continue;
    // maps that every level can bin under the rule
    std::vector<std::pair<int, int>> sizes = c.sizes;
    for (auto& s : sizes)
      while (!bins_ok(c.rule, c.levels, s.first, s.second)) s = {s.first + 1, s.second + 1};
    const Layout L = packed(c.C, sizes);
    std::vector<Region> regions;
    if (c.windows == 0) {
      for (int i = 0; i < static_cast<int>(sizes.size()); ++i) regions.push_back({i, 0, 0, L.h[i], L.w[i]});
    } else {
      while (static_cast<int>(regions.size()) < c.windows) {
        const int m = uniform(0, static_cast<int>(sizes.size()) - 1);
        const int h = uniform(1, L.h[m]), w = uniform(1, L.w[m]);
        if (!bins_ok(c.rule, c.levels, h, w)) continue;
        regions.push_back({m, uniform(0, L.h[m] - h), uniform(0, L.w[m] - w), h, w});
      }
    }
    std::vector<float> x = random_data(L.total);
    if (c.ties_and_nans)
      for (auto& v : x) v = uniform(0, 40) == 0 ? NAN : std::round(v * 2.f) / 2.f;  // many equal maxima, some NaN
    SppProblem sp;
    sp.input = L.view();
    sp.num_regions = static_cast<int32_t>(regions.size());
    sp.regions = regions.data();
    sp.num_levels = static_cast<int32_t>(c.levels.size());
    for (size_t l = 0; l < c.levels.size(); ++l) sp.levels[l] = c.levels[l];
    sp.rule = c.rule;
    sp.pool = pool;
    const int64_t F = sp.output_elements();
    std::vector<float> want(static_cast<size_t>(F));
    expect_ok(cpu::spp_forward(sp, x.data(), want.data()), name);
    Dev<float> dx_in(x, "spp input"), dy(static_cast<size_t>(F), "spp output");
    expect_ok(cuda::spp_forward(sp, dx_in.p, dy.p), name);
    std::string why;
    bool ok = pool == kPoolMax ? exact(dy.host(), want, &why) : close(dy.host(), want, 1e-5, 1e-6, &why);
    std::string detail = "forward " + why;
    if (ok) {
      const std::vector<float> g = random_data(F);
      std::vector<float> gwant(static_cast<size_t>(L.total));
      expect_ok(cpu::spp_backward(sp, x.data(), g.data(), gwant.data()), name);
      Dev<float> dg(g, "spp grad_out"), dgi(static_cast<size_t>(L.total), "spp grad_in");
      expect_ok(cuda::spp_backward(sp, dx_in.p, dg.p, dgi.p), name);
      ok = exact(dgi.host(), gwant, &why);
      detail += "; backward " + why;
    }
    char head[96];
    std::snprintf(head, sizeof head, "%zu maps, %zu regions, %lld features: ", sizes.size(), regions.size(), static_cast<long long>(F));
    report(name, ok, head + detail);
  }
}

// =================================== conv2d ===================================

struct ConvCase {
  std::string name;
  int cin, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups;
  bool relu;
  std::vector<std::pair<int, int>> sizes;
  bool nan_inf = false;
  bool same_sign = false;  // inputs and weights all positive: the worst case for a truncating sum
};

Conv2dParams conv_params(const ConvCase& c, int math) {
  Conv2dParams p;
  p.in_channels = c.cin, p.out_channels = c.cout, p.kernel_h = c.kh, p.kernel_w = c.kw, p.stride_h = c.sh, p.stride_w = c.sw;
  p.pad_h = c.ph, p.pad_w = c.pw, p.dilation_h = c.dh, p.dilation_w = c.dw, p.groups = c.groups, p.relu = c.relu, p.math = math;
  return p;
}

Layout conv_out(const ConvCase& c, const Layout& in) {
  std::vector<std::pair<int, int>> s;
  for (size_t i = 0; i < in.h.size(); ++i)
    s.push_back({(in.h[i] + 2 * c.ph - c.dh * (c.kh - 1) - 1) / c.sh + 1, (in.w[i] + 2 * c.pw - c.dw * (c.kw - 1) - 1) / c.sw + 1});
  return packed(c.cout, s);
}

// float64 conv and, per output, sum |w x| + |b|.
void conv_reference(const ConvCase& c, const Layout& in, const Layout& out, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& b, std::vector<double>* ref, std::vector<double>* mag) {
  const int cin_g = c.cin / c.groups, cout_g = c.cout / c.groups;
  ref->assign(static_cast<size_t>(out.total), 0);
  mag->assign(static_cast<size_t>(out.total), 0);
  for (size_t i = 0; i < in.h.size(); ++i)
    for (int co = 0; co < c.cout; ++co) {
      const int g = co / cout_g;
      for (int oy = 0; oy < out.h[i]; ++oy)
        for (int ox = 0; ox < out.w[i]; ++ox) {
          double s = b[co], m = std::fabs(b[co]);
          for (int ci = 0; ci < cin_g; ++ci)
            for (int ky = 0; ky < c.kh; ++ky)
              for (int kx = 0; kx < c.kw; ++kx) {
                const int yy = oy * c.sh - c.ph + ky * c.dh, xx = ox * c.sw - c.pw + kx * c.dw;
                if (yy < 0 || yy >= in.h[i] || xx < 0 || xx >= in.w[i]) continue;
                const double xv = x[in.off[i] + (int64_t(g * cin_g + ci) * in.h[i] + yy) * in.w[i] + xx];
                const double wv = w[((int64_t(co) * cin_g + ci) * c.kh + ky) * c.kw + kx];
                s += xv * wv, m += std::fabs(xv * wv);
              }
          const int64_t o = out.off[i] + (int64_t(co) * out.h[i] + oy) * out.w[i] + ox;
          (*ref)[o] = c.relu ? (s > 0 || std::isnan(s) ? s : 0) : s;
          (*mag)[o] = m;
        }
    }
}

const char* math_name(int m) { return m == kMathTf32 ? "tf32" : m == kMathBf16 ? "bf16" : m == kMathFp32 ? "fp32" : "direct"; }
// Of sum |w x|: TF32 and BF16 round the inputs (2^-11, 2^-8 relative each); FP32 (3xTF32) and the
// direct kernels are FP32 sums.
double math_tolerance(int m) { return m == kMathTf32 ? 2e-3 : m == kMathBf16 ? 1.6e-2 : 1e-5; }

void run_conv(const ConvCase& c, int math, int sms) {
  const std::string name = std::string("conv2d ") + math_name(math) + " " + c.name + (sms == 1 ? " (1 SM)" : "");
  if (!selected(name)) return;
  emu::set_device_sms(sms);
  const Layout in = packed(c.cin, c.sizes), out = conv_out(c, in);
  const Conv2dParams p = conv_params(c, math);
  std::vector<float> x = random_data(in.total), w = random_data(int64_t{c.cout} * (c.cin / c.groups) * c.kh * c.kw, 0.2f), b = random_data(c.cout);
  if (c.same_sign) {
    for (auto& v : x) v = std::fabs(v) + 0.1f;
    for (auto& v : w) v = std::fabs(v) + 0.02f;
    for (auto& v : b) v = std::fabs(v);
  }
  if (c.nan_inf) x[3] = NAN, x[static_cast<size_t>(in.total) - 5] = INFINITY;
  std::vector<double> ref, mag;
  conv_reference(c, in, out, x, w, b, &ref, &mag);
  Dev<float> dx(x, "conv x"), dw(w, "conv weight"), db(b, "conv bias"), dy(static_cast<size_t>(out.total), "conv y");
  expect_ok(cuda::conv2d_forward(in.view(), dx.p, p, dw.p, db.p, out.view(), dy.p), name);
  std::string why;
  bool ok = against(dy.host(), ref, mag, math_tolerance(math), &why);
  std::string detail = "cuda " + why;
  // and the CPU backend on the same data, held to the FP32 bound (its math 'bf16' takes BF16
  // products on AMX tiles where the CPU has them: that mode's bound)
  std::vector<float> ycpu(static_cast<size_t>(out.total));
  expect_ok(cpu::conv2d_forward(in.view(), x.data(), p, w.data(), b.data(), out.view(), ycpu.data()), name);
  std::string why_cpu;
  ok = against(ycpu, ref, mag, math == kMathBf16 ? math_tolerance(math) : 1e-5, &why_cpu) && ok;
  report(name, ok, detail + "; cpu " + why_cpu);
  emu::set_device_sms(0);
}

// y = x . w^T + b through cuda::linear_forward (direct kernel, or the tensor-core GEMM with split-K).
void run_linear(int64_t M, int N, int K, bool relu, int math, int sms, bool same_sign) {
  char nb[160];
  std::snprintf(nb, sizeof nb, "linear %s %lldx%d <- K %d%s%s%s", math_name(math), static_cast<long long>(M), N, K, relu ? " relu" : "",
                same_sign ? " same-sign" : "", sms == 1 ? " (1 SM)" : "");
  const std::string name = nb;
  if (!selected(name)) return;
  emu::set_device_sms(sms);
  std::vector<float> x = random_data(M * K), w = random_data(int64_t{N} * K, 0.1f), b = random_data(N);
  if (same_sign) {
    for (auto& v : x) v = std::fabs(v) + 0.1f;
    for (auto& v : w) v = std::fabs(v) + 0.01f;
    for (auto& v : b) v = std::fabs(v);
  }
  std::vector<double> ref(static_cast<size_t>(M * N)), mag(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = b[n], g = std::fabs(b[n]);
      for (int k = 0; k < K; ++k) {
        const double t = double(x[m * K + k]) * w[int64_t(n) * K + k];
        s += t, g += std::fabs(t);
      }
      ref[m * N + n] = relu ? (s > 0 ? s : 0) : s;
      mag[m * N + n] = g;
    }
  Dev<float> dx(x, "linear x"), dw(w, "linear weight"), db(b, "linear bias"), dy(static_cast<size_t>(M * N), "linear y");
  expect_ok(cuda::linear_forward(M, K, N, dx.p, dw.p, db.p, relu, math, dy.p, nullptr, 0), name);
  std::string why;
  bool ok = against(dy.host(), ref, mag, math_tolerance(math), &why);
  std::vector<float> ycpu(static_cast<size_t>(M * N));
  expect_ok(cpu::linear_forward(M, K, N, x.data(), w.data(), b.data(), relu, math, ycpu.data(), nullptr, 0), name);
  std::string why_cpu;  // the CPU takes bf16 (BF16 products on AVX-512 BF16 from kBf16ProductRows) and computes FP32 otherwise
  ok = against(ycpu, ref, mag, math == kMathBf16 ? math_tolerance(math) : 1e-5, &why_cpu) && ok;
  report(name, ok, "cuda " + why + "; cpu " + why_cpu);
  emu::set_device_sms(0);
}

// y = x . w^T + b with bfloat16 weights (cuda::linear_bf16_forward): against float64 on the weights
// widened back to float32 (exact), and against cpu::linear_bf16_forward.
void run_linear_bf16(int64_t M, int N, int K, bool relu) {
  const std::string name = "linear bf16 " + std::to_string(M) + "x" + std::to_string(N) + " <- K " + std::to_string(K) + (relu ? " relu" : "");
  if (!selected(name)) return;
  std::vector<float> x = random_data(M * K), w = random_data(int64_t{N} * K, 0.1f), b = random_data(N);
  std::vector<uint16_t> wh(w.size());
  for (size_t i = 0; i < w.size(); ++i) wh[i] = float_to_bf16(w[i]);
  std::vector<double> ref(static_cast<size_t>(M * N)), mag(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = b[n], g = std::fabs(b[n]);
      for (int k = 0; k < K; ++k) {
        const double t = double(x[m * K + k]) * bf16_to_float(wh[int64_t(n) * K + k]);
        s += t, g += std::fabs(t);
      }
      ref[m * N + n] = relu ? (s > 0 ? s : 0) : s;
      mag[m * N + n] = g;
    }
  Dev<float> dx(x, "linear x"), db(b, "linear bias"), dy(static_cast<size_t>(M * N), "linear y");
  Dev<uint16_t> dw(wh, "linear bf16 weight");
  expect_ok(cuda::linear_bf16_forward(M, K, N, dx.p, dw.p, db.p, relu, kMathFp32, dy.p, nullptr, 0), name);
  std::string why;
  bool ok = against(dy.host(), ref, mag, 1e-5, &why);
  std::vector<float> ycpu(static_cast<size_t>(M * N));
  expect_ok(cpu::linear_bf16_forward(M, K, N, x.data(), wh.data(), b.data(), relu, kMathFp32, ycpu.data(), nullptr, 0), name);
  std::string why_cpu;
  ok = against(ycpu, ref, mag, 1e-5, &why_cpu) && ok;
  report(name, ok, "cuda " + why + "; cpu " + why_cpu);
}

// =================================== pooling, LRN, elementwise ===================================

Layout pool_out(const Layout& in, const Pool2dParams& p) {
  std::vector<std::pair<int, int>> s;
  for (size_t i = 0; i < in.h.size(); ++i)
    s.push_back({(in.h[i] + 2 * p.pad_h - p.kernel_h) / p.stride_h + 1, (in.w[i] + 2 * p.pad_w - p.kernel_w) / p.stride_w + 1});
  return packed(in.C, s);
}

void run_pool_lrn(const std::string& tag, int C, const Pool2dParams& pp, const LrnParams& lp, bool nans) {
  const std::string base = tag;
  reseed(tag);
  std::vector<std::pair<int, int>> sizes = random_sizes(7, std::max(pp.kernel_h, pp.kernel_w), 23);
  sizes.push_back({std::max(pp.kernel_h, pp.kernel_w), std::max(pp.kernel_h, pp.kernel_w)});
  const Layout in = packed(C, sizes), out = pool_out(in, pp);
  std::vector<float> x = random_data(in.total);
  if (nans)
    for (auto& v : x) v = uniform(0, 50) == 0 ? NAN : std::round(v * 2.f) / 2.f;
  Dev<float> dx(x, "x");
  std::string why;
  {
    const std::string name = "max_pool2d " + base;
    if (selected(name)) {
      std::vector<float> want(static_cast<size_t>(out.total));
      expect_ok(cpu::max_pool2d_forward(in.view(), x.data(), pp, out.view(), want.data()), name);
      Dev<float> dy(static_cast<size_t>(out.total), "max_pool2d y");
      expect_ok(cuda::max_pool2d_forward(in.view(), dx.p, pp, out.view(), dy.p), name);
      bool ok = exact(dy.host(), want, &why);
      std::string detail = "forward " + why;
      if (ok) {
        const std::vector<float> g = random_data(out.total);
        std::vector<float> gwant(static_cast<size_t>(in.total));
        expect_ok(cpu::max_pool2d_backward(in.view(), x.data(), pp, out.view(), g.data(), gwant.data()), name);
        Dev<float> dg(g, "max_pool2d dy"), dgi(static_cast<size_t>(in.total), "max_pool2d dx");
        expect_ok(cuda::max_pool2d_backward(in.view(), dx.p, pp, out.view(), dg.p, dgi.p), name);
        ok = close(dgi.host(), gwant, 1e-6, 1e-7, &why);
        detail += "; backward " + why;
      }
      report(name, ok, detail);
    }
  }
  if (nans) return;  // LRN of NaN is NaN everywhere in its window: nothing more to learn
  {
    const std::string name = "lrn " + base;
    if (selected(name)) {
      std::vector<float> want(static_cast<size_t>(in.total));
      expect_ok(cpu::lrn_forward(in.view(), x.data(), lp, want.data()), name);
      Dev<float> dy(static_cast<size_t>(in.total), "lrn y");
      expect_ok(cuda::lrn_forward(in.view(), dx.p, lp, dy.p), name);
      bool ok = close(dy.host(), want, 2e-6, 1e-7, &why);
      std::string detail = "forward " + why;
      if (ok) {
        const std::vector<float> g = random_data(in.total);
        std::vector<float> gwant(static_cast<size_t>(in.total));
        expect_ok(cpu::lrn_backward(in.view(), x.data(), lp, g.data(), gwant.data()), name);
        Dev<float> dg(g, "lrn dy"), dgi(static_cast<size_t>(in.total), "lrn dx");
        expect_ok(cuda::lrn_backward(in.view(), dx.p, lp, dg.p, dgi.p), name);
        ok = close(dgi.host(), gwant, 1e-5, 1e-6, &why);
        detail += "; backward " + why;
      }
      report(name, ok, detail);
    }
  }
  {
    const std::string name = "lrn_max_pool2d " + base;
    if (selected(name)) {
      std::vector<float> want(static_cast<size_t>(out.total));
      expect_ok(cpu::lrn_max_pool2d_forward(in.view(), x.data(), lp, pp, out.view(), want.data()), name);
      Dev<float> dy(static_cast<size_t>(out.total), "lrn_max_pool2d y");
      expect_ok(cuda::lrn_max_pool2d_forward(in.view(), dx.p, lp, pp, out.view(), dy.p), name);
      report(name, close(dy.host(), want, 2e-6, 1e-7, &why), why);
    }
  }
}

// Batch norm's per-plane sums (float64, into host memory) and per-channel affine maps, and the
// within-channel LRN (Caffe's), on ragged maps from 1x1 up: against the CPU backend.
void run_channel_ops(int C) {
  reseed("channel ops C=" + std::to_string(C));
  std::vector<std::pair<int, int>> sizes = random_sizes(5, 1, 29);
  sizes.push_back({1, 1});
  const Layout in = packed(C, sizes);
  const std::vector<float> u = random_data(in.total), v = random_data(in.total);
  Dev<float> du(u, "u"), dv(v, "v");
  std::string why;
  const std::string base = "C=" + std::to_string(C) + " ragged 1x1..29x29";
  for (const bool with_v : {false, true}) {
    const std::string name = std::string("channel_sums ") + (with_v ? "u.v " : "u.u ") + base;
    if (!selected(name)) continue;
    const size_t n = 2 * in.h.size() * static_cast<size_t>(C);
    std::vector<double> want(n), got(n, std::nan(""));
    expect_ok(cpu::channel_sums(in.view(), u.data(), with_v ? v.data() : nullptr, want.data()), name);
    expect_ok(cuda::channel_sums(in.view(), du.p, with_v ? dv.p : nullptr, got.data()), name);
    double worst = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; ++i) {
      const double e = std::fabs(got[i] - want[i]);
      ok = e <= 1e-9 * (1 + std::fabs(want[i]));
      worst = std::max(worst, e);
      if (!ok) why = at(i, got[i], want[i]);
    }
    report(name, ok, ok ? "worst |diff| " + std::to_string(worst) : why);
  }
  std::vector<float> a(static_cast<size_t>(C)), b(static_cast<size_t>(C)), d(static_cast<size_t>(C));
  for (int c = 0; c < C; ++c) a[c] = normal(), b[c] = normal(), d[c] = normal();
  for (const bool with_v : {false, true})
    for (const bool relu : {false, true}) {
      const std::string name = std::string("channel_affine ") + (with_v ? "a u + b v + d" : "a u + d") + (relu ? " relu " : " ") + base;
      if (!selected(name)) continue;
      std::vector<float> want(static_cast<size_t>(in.total));
      expect_ok(cpu::channel_affine(in.view(), u.data(), a.data(), with_v ? v.data() : nullptr, with_v ? b.data() : nullptr, d.data(), relu, want.data()), name);
      Dev<float> dy(static_cast<size_t>(in.total), "channel_affine y");
      expect_ok(cuda::channel_affine(in.view(), du.p, a.data(), with_v ? dv.p : nullptr, with_v ? b.data() : nullptr, d.data(), relu, dy.p), name);
      report(name, close(dy.host(), want, 1e-6, 1e-7, &why), why);
    }
  LrnParams lp;
  lp.size = 3, lp.alpha = 0.9f, lp.beta = 0.75f, lp.k = 1.f, lp.within = 1;
  const std::string name = "lrn within-channel 3x3 " + base;
  if (selected(name)) {
    std::vector<float> want(static_cast<size_t>(in.total));
    expect_ok(cpu::lrn_forward(in.view(), u.data(), lp, want.data()), name);
    Dev<float> dy(static_cast<size_t>(in.total), "lrn within y");
    expect_ok(cuda::lrn_forward(in.view(), du.p, lp, dy.p), name);
    bool ok = close(dy.host(), want, 2e-6, 1e-7, &why);
    std::string detail = "forward " + why;
    if (ok) {
      std::vector<float> gwant(static_cast<size_t>(in.total));
      expect_ok(cpu::lrn_backward(in.view(), u.data(), lp, v.data(), gwant.data()), name);
      Dev<float> dgi(static_cast<size_t>(in.total), "lrn within dx");
      expect_ok(cuda::lrn_backward(in.view(), du.p, lp, dv.p, dgi.p), name);
      ok = close(dgi.host(), gwant, 1e-5, 1e-6, &why);
      detail += "; backward " + why;
    }
    report(name, ok, detail);
  }
}

void run_elementwise(int64_t n) {
  const std::string sz = std::to_string(n);
  reseed("elementwise " + sz);
  std::vector<float> x = random_data(n), g = random_data(n);
  x[0] = NAN, x[static_cast<size_t>(n) / 2] = 0.f, x[static_cast<size_t>(n) - 1] = -0.f;
  Dev<float> dx(x, "x"), dg(g, "dy");
  std::string why;
  if (selected("relu " + sz)) {
    std::vector<float> want(static_cast<size_t>(n));
    expect_ok(cpu::relu_forward(n, x.data(), want.data()), "relu");
    Dev<float> dy(static_cast<size_t>(n), "relu y");
    expect_ok(cuda::relu_forward(n, dx.p, dy.p), "relu");
    bool ok = exact(dy.host(), want, &why);
    std::string detail = "forward " + why;
    std::vector<float> gwant(static_cast<size_t>(n));
    expect_ok(cpu::relu_backward(n, want.data(), g.data(), gwant.data()), "relu");
    Dev<float> dgi(static_cast<size_t>(n), "relu dx");
    expect_ok(cuda::relu_backward(n, dy.p, dg.p, dgi.p), "relu");
    ok = exact(dgi.host(), gwant, &why) && ok;
    report("relu " + sz, ok, detail + "; backward " + why);
  }
  if (selected("dropout " + sz)) {
    DropoutParams p;
    p.seed = rng();
    p.threshold = static_cast<uint32_t>(0.3 * (1 << 24));
    p.scale = 1.f / 0.7f;
    std::vector<float> want(static_cast<size_t>(n)), mask(static_cast<size_t>(n));
    expect_ok(cpu::dropout_forward(n, x.data(), p, want.data(), mask.data()), "dropout");
    Dev<float> dy(static_cast<size_t>(n), "dropout y"), dm(static_cast<size_t>(n), "dropout mask");
    expect_ok(cuda::dropout_forward(n, dx.p, p, dy.p, dm.p), "dropout");
    bool ok = exact(dy.host(), want, &why);
    std::string detail = "y " + why;
    std::string why2;
    ok = exact(dm.host(), mask, &why2) && ok;
    detail += "; mask " + why2;
    std::vector<float> prod(static_cast<size_t>(n));
    expect_ok(cpu::multiply(n, g.data(), mask.data(), prod.data()), "multiply");
    Dev<float> dp(static_cast<size_t>(n), "multiply y");
    expect_ok(cuda::multiply(n, dg.p, dm.p, dp.p), "multiply");
    ok = exact(dp.host(), prod, &why2) && ok;
    report("dropout " + sz, ok, detail + "; multiply " + why2);
  }
}

void run_softmax(int64_t rows, int cols) {
  const std::string name = "softmax " + std::to_string(rows) + "x" + std::to_string(cols);
  if (!selected(name)) return;
  std::vector<float> x = random_data(rows * cols, 3.f);
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (auto& l : labels) l = uniform(0, cols - 1);
  if (rows > 2) x[static_cast<size_t>(cols) + 1] = NAN;  // row 1: NaN, which counts as the maximum
  Dev<float> dx(x, "logits");
  std::string why;
  std::vector<float> want(static_cast<size_t>(rows * cols));
  expect_ok(cpu::softmax_forward(rows, cols, x.data(), want.data()), name);
  Dev<float> dy(static_cast<size_t>(rows * cols), "softmax y");
  expect_ok(cuda::softmax_forward(rows, cols, dx.p, dy.p), name);
  bool ok = close(dy.host(), want, 1e-5, 1e-7, &why);
  std::string detail = "softmax " + why;
  std::vector<float> gwant(static_cast<size_t>(rows * cols));
  std::vector<double> loss_want(static_cast<size_t>(rows)), loss(static_cast<size_t>(rows));
  std::vector<int32_t> correct_want(static_cast<size_t>(rows)), correct(static_cast<size_t>(rows));
  expect_ok(cpu::softmax_cross_entropy(rows, cols, x.data(), labels.data(), gwant.data(), loss_want.data(), correct_want.data()), name);
  Dev<float> dgr(static_cast<size_t>(rows * cols), "xent grad");
  expect_ok(cuda::softmax_cross_entropy(rows, cols, dx.p, labels.data(), dgr.p, loss.data(), correct.data()), name);
  ok = close(dgr.host(), gwant, 1e-5, 1e-9, &why) && ok;
  detail += "; cross-entropy grad " + why;
  for (int64_t r = 0; r < rows; ++r) {
    const bool nan_row = std::isnan(loss_want[r]);
    if (nan_row ? !std::isnan(loss[r]) : std::fabs(loss[r] - loss_want[r]) > 1e-9 * (1 + std::fabs(loss_want[r]))) {
      ok = false;
      detail += "; loss of row " + std::to_string(r) + " differs";
      break;
    }
    if (correct[r] != correct_want[r]) {
      ok = false;
      detail += "; argmax of row " + std::to_string(r) + " differs";
      break;
    }
  }
  report(name, ok, detail);
}

void run_optimizers(int64_t n) {
  const std::string sz = std::to_string(n);
  for (int variant = 0; variant < 3; ++variant) {
    const std::string name = "sgd " + sz + (variant == 0 ? " plain" : variant == 1 ? " momentum first step" : " nesterov decay");
    if (!selected(name)) continue;
    SgdParams p;
    p.lr = 0.05f;
    if (variant > 0) p.momentum = 0.9f, p.dampening = 0.1f;
    p.first_step = variant == 1;
    if (variant == 2) p.nesterov = true, p.dampening = 0.f, p.weight_decay = 1e-3f;
    std::vector<float> w = random_data(n), g = random_data(n), buf = random_data(n);
    std::vector<float> w2 = w, buf2 = buf;
    expect_ok(cpu::sgd_step(n, w.data(), g.data(), buf.data(), p), name);
    Dev<float> dw(w2, "sgd param"), dg(g, "sgd grad"), dbuf(buf2, "sgd momentum");
    expect_ok(cuda::sgd_step(n, dw.p, dg.p, dbuf.p, p), name);
    // Terms of O(1) (N(0,1) data, up to ~5): the two compilers' FMA contractions differ by an ulp
    // of them, which is absolute, not relative to a result that may be a small difference.
    std::string why, why2;
    bool ok = close(dw.host(), w, 2e-7, 1e-6, &why);
    ok = close(dbuf.host(), buf, 2e-7, 1e-6, &why2) && ok;
    report(name, ok, "param " + why + "; momentum " + why2);
  }
  for (int variant = 0; variant < 2; ++variant) {
    const std::string name = "adam " + sz + (variant == 0 ? " l2" : " decoupled (AdamW)");
    if (!selected(name)) continue;
    AdamParams p;
    p.lr = 1e-3f, p.weight_decay = 1e-2f, p.decoupled = variant == 1;
    const int step = 3;
    p.step_size = static_cast<float>(p.lr / (1 - std::pow(0.9, step)));
    p.bias_correction2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(0.999, step)));
    std::vector<float> w = random_data(n), g = random_data(n), m = random_data(n, 0.1f), v = random_data(n, 0.1f);
    for (auto& e : v) e = e * e;
    std::vector<float> w2 = w, m2 = m, v2 = v;
    expect_ok(cpu::adam_step(n, w.data(), g.data(), m.data(), v.data(), p), name);
    Dev<float> dw(w2, "adam param"), dg(g, "adam grad"), dm(m2, "adam m"), dv(v2, "adam v");
    expect_ok(cuda::adam_step(n, dw.p, dg.p, dm.p, dv.p, p), name);
    std::string a, b, c;
    // m and v may be small differences of O(1) terms (g - m): absolute tolerances on that scale.
    bool ok = close(dw.host(), w, 1e-6, 1e-6, &a);
    ok = close(dm.host(), m, 1e-6, 1e-6, &b) && ok;
    ok = close(dv.host(), v, 1e-6, 1e-6, &c) && ok;
    report(name, ok, "param " + a + "; m " + b + "; v " + c);
  }
}

// =================================== backward of conv and linear ===================================

void run_conv_backward(const ConvCase& c) {
  const std::string name = "conv2d backward " + c.name;
  if (!selected(name)) return;
  const Layout in = packed(c.cin, c.sizes), out = conv_out(c, in);
  const Conv2dParams p = conv_params(c, kMathDirect);
  const int cin_g = c.cin / c.groups, cout_g = c.cout / c.groups;
  const int64_t nw = int64_t{c.cout} * cin_g * c.kh * c.kw;
  std::vector<float> x = random_data(in.total), w = random_data(nw, 0.2f), dy = random_data(out.total);
  // float64 references with magnitudes
  std::vector<double> rdx(static_cast<size_t>(in.total), 0), mdx(static_cast<size_t>(in.total), 0), rdw(static_cast<size_t>(nw), 0),
      mdw(static_cast<size_t>(nw), 0), rdb(static_cast<size_t>(c.cout), 0), mdb(static_cast<size_t>(c.cout), 0);
  for (size_t i = 0; i < in.h.size(); ++i)
    for (int co = 0; co < c.cout; ++co) {
      const int g = co / cout_g;
      for (int oy = 0; oy < out.h[i]; ++oy)
        for (int ox = 0; ox < out.w[i]; ++ox) {
          const double d = dy[out.off[i] + (int64_t(co) * out.h[i] + oy) * out.w[i] + ox];
          rdb[co] += d, mdb[co] += std::fabs(d);
          for (int ci = 0; ci < cin_g; ++ci)
            for (int ky = 0; ky < c.kh; ++ky)
              for (int kx = 0; kx < c.kw; ++kx) {
                const int yy = oy * c.sh - c.ph + ky * c.dh, xx = ox * c.sw - c.pw + kx * c.dw;
                if (yy < 0 || yy >= in.h[i] || xx < 0 || xx >= in.w[i]) continue;
                const int64_t xi = in.off[i] + (int64_t(g * cin_g + ci) * in.h[i] + yy) * in.w[i] + xx;
                const int64_t wi = ((int64_t(co) * cin_g + ci) * c.kh + ky) * c.kw + kx;
                rdx[xi] += d * w[wi], mdx[xi] += std::fabs(d * w[wi]);
                rdw[wi] += d * x[xi], mdw[wi] += std::fabs(d * x[xi]);
              }
        }
    }
  Dev<float> dxin(x, "conv x"), dwt(w, "conv weight"), ddy(dy, "conv dy"), gdx(static_cast<size_t>(in.total), "conv dx"),
      gdw(static_cast<size_t>(nw), "conv dw"), gdb(static_cast<size_t>(c.cout), "conv db");
  expect_ok(cuda::conv2d_backward(in.view(), dxin.p, p, dwt.p, out.view(), ddy.p, gdx.p, gdw.p, gdb.p), name);
  std::string a, b, d;
  bool ok = against(gdx.host(), rdx, mdx, 1e-5, &a);
  ok = against(gdw.host(), rdw, mdw, 1e-5, &b) && ok;
  ok = against(gdb.host(), rdb, mdb, 1e-5, &d) && ok;
  report(name, ok, "dx " + a + "; dw " + b + "; db " + d);
}

void run_linear_backward(int64_t rows, int in_f, int out_f) {
  const std::string name = "linear backward " + std::to_string(rows) + "x" + std::to_string(in_f) + " -> " + std::to_string(out_f);
  if (!selected(name)) return;
  std::vector<float> x = random_data(rows * in_f), w = random_data(int64_t{out_f} * in_f, 0.1f), dy = random_data(rows * out_f);
  std::vector<double> rdx(static_cast<size_t>(rows * in_f), 0), mdx = rdx, rdw(static_cast<size_t>(out_f) * in_f, 0), mdw = rdw,
      rdb(static_cast<size_t>(out_f), 0), mdb = rdb;
  for (int64_t r = 0; r < rows; ++r)
    for (int o = 0; o < out_f; ++o) {
      const double d = dy[r * out_f + o];
      rdb[o] += d, mdb[o] += std::fabs(d);
      for (int k = 0; k < in_f; ++k) {
        const double wv = w[int64_t(o) * in_f + k], xv = x[r * in_f + k];
        rdx[r * in_f + k] += d * wv, mdx[r * in_f + k] += std::fabs(d * wv);
        rdw[int64_t(o) * in_f + k] += d * xv, mdw[int64_t(o) * in_f + k] += std::fabs(d * xv);
      }
    }
  Dev<float> dxin(x, "linear x"), dwt(w, "linear w"), ddy(dy, "linear dy"), gdx(static_cast<size_t>(rows * in_f), "linear dx"),
      gdw(static_cast<size_t>(out_f) * in_f, "linear dw"), gdb(static_cast<size_t>(out_f), "linear db");
  expect_ok(cuda::linear_backward(rows, in_f, out_f, dxin.p, dwt.p, ddy.p, gdx.p, gdw.p, gdb.p), name);
  std::string a, b, d;
  bool ok = against(gdx.host(), rdx, mdx, 1e-5, &a);
  ok = against(gdw.host(), rdw, mdw, 1e-5, &b) && ok;
  ok = against(gdb.host(), rdb, mdb, 1e-5, &d) && ok;
  report(name, ok, "dx " + a + "; dw " + b + "; db " + d);
}

}  // namespace

// =================================== NMS ===================================

// n boxes in clusters (so that boxes suppress each other), on integer coordinates part of the time
// (exact IoUs such as 0.5), with tied scores, degenerate and identical boxes and NaN scores;
// classes from 0..classes-1 (0: plain nms). The device's kept indices must equal the CPU's, in order.
void run_nms(int n, int classes, double iou) {
  const std::string name = "nms n=" + std::to_string(n) + (classes ? " batched " + std::to_string(classes) + " classes" : "") + " iou " + std::to_string(iou);
  if (!selected(name)) return;
  std::vector<float> boxes(static_cast<size_t>(n) * 4), scores(static_cast<size_t>(n)), cls(static_cast<size_t>(n));
  const int centres = std::max(1, n / 12);
  std::vector<float> cx(centres), cy(centres);
  for (int k = 0; k < centres; ++k) cx[k] = static_cast<float>(uniform(0, 200)), cy[k] = static_cast<float>(uniform(0, 200));
  for (int i = 0; i < n; ++i) {
    const int k = uniform(0, centres - 1);
    const bool integer = uniform(0, 1) == 0;
    float x1 = cx[k] + (integer ? uniform(-6, 6) : 6 * normal()), y1 = cy[k] + (integer ? uniform(-6, 6) : 6 * normal());
    float w = integer ? uniform(1, 30) : 30 * std::fabs(normal()), h = integer ? uniform(1, 30) : 30 * std::fabs(normal());
    if (uniform(0, 40) == 0) w = -w;                          // degenerate: x2 < x1
    if (uniform(0, 40) == 0) h = 0;                           // zero height
    if (i > 0 && uniform(0, 20) == 0) {                       // a copy of an earlier box
      const int j = uniform(0, i - 1);
      x1 = boxes[4 * j], y1 = boxes[4 * j + 1], w = boxes[4 * j + 2] - x1, h = boxes[4 * j + 3] - y1;
    }
    boxes[4 * i] = x1, boxes[4 * i + 1] = y1, boxes[4 * i + 2] = x1 + w, boxes[4 * i + 3] = y1 + h;
    scores[i] = uniform(0, 3) == 0 ? static_cast<float>(uniform(0, 4)) / 4 : std::fabs(normal());  // ties
    if (uniform(0, 50) == 0) scores[i] = NAN;
    cls[i] = classes ? static_cast<float>(uniform(0, classes - 1)) : 0.f;
  }
  std::vector<int32_t> want(static_cast<size_t>(std::max(n, 1)), -1), got(want);
  int32_t want_n = -1, got_n = -1;
  expect_ok(cpu::nms(n, boxes.data(), scores.data(), classes ? cls.data() : nullptr, iou, want.data(), &want_n), name);
  Dev<float> db(boxes, "nms boxes"), ds(scores, "nms scores"), dc(cls, "nms classes");
  expect_ok(cuda::nms(n, db.p, ds.p, classes ? dc.p : nullptr, iou, got.data(), &got_n), name);
  bool ok = got_n == want_n;
  std::string why = "kept " + std::to_string(got_n) + ", the CPU " + std::to_string(want_n);
  for (int32_t k = 0; ok && k < want_n; ++k)
    if (got[k] != want[k]) ok = false, why = "kept[" + std::to_string(k) + "] is " + std::to_string(got[k]) + ", the CPU's " + std::to_string(want[k]);
  report(name, ok, ok ? "kept " + std::to_string(got_n) + " of " + std::to_string(n) + ", as the CPU" : why);
}

namespace {
// =================================== crop and resize ===================================

// k windows over ragged images: inside, partly and wholly outside the image, 1-pixel, fractional;
// with NaN and infinities in the images (they must stay where they are read). The device's output
// must equal the CPU's bit for bit (same expression, no FMA on either side).
void run_crop(int k, int C, int out_h, int out_w, int context, int align) {
  const std::string name = "cropResize k=" + std::to_string(k) + " C=" + std::to_string(C) + " " + std::to_string(out_h) + "x" +
                           std::to_string(out_w) + " context " + std::to_string(context) + (align == kCropPixels ? " pixels" : " corners");
  if (!selected(name)) return;
  const Layout L = packed(C, random_sizes(4, 1, 23));
  std::vector<float> x = random_data(L.total);
  for (int i = 0; i < 3; ++i) x[static_cast<size_t>(uniform(0, static_cast<int>(L.total) - 1))] = i == 0 ? NAN : i == 1 ? INFINITY : -INFINITY;
  std::vector<float> boxes(static_cast<size_t>(k) * 5);
  for (int i = 0; i < k; ++i) {
    const int m = uniform(0, 3);
    const float H = static_cast<float>(L.h[m]), W = static_cast<float>(L.w[m]);
    float x1 = static_cast<float>(uniform(-5, L.w[m] + 2)), y1 = static_cast<float>(uniform(-5, L.h[m] + 2));
    float bw = static_cast<float>(uniform(0, 2 * L.w[m])), bh = static_cast<float>(uniform(0, 2 * L.h[m]));
    if (uniform(0, 3) == 0) x1 += normal(), y1 += normal(), bw = std::fabs(bw + normal()), bh = std::fabs(bh + normal());
    if (uniform(0, 5) == 0) bw = 0, bh = 0;                      // one pixel
    if (uniform(0, 5) == 0) x1 = 0, y1 = 0, bw = W - 1, bh = H - 1;  // the whole image
    boxes[5 * i] = static_cast<float>(m), boxes[5 * i + 1] = x1, boxes[5 * i + 2] = y1, boxes[5 * i + 3] = x1 + bw, boxes[5 * i + 4] = y1 + bh;
  }
  CropParams p;
  p.out_h = out_h, p.out_w = out_w, p.context = context, p.align = align;
  const size_t n = static_cast<size_t>(k) * C * out_h * out_w;
  std::vector<float> want(n);
  expect_ok(cpu::crop_resize(L.view(), x.data(), k, boxes.data(), p, want.data()), name);
  Dev<float> dx(x, "crop input"), db(boxes, "crop boxes"), dy(n, "crop output");
  expect_ok(cuda::crop_resize(L.view(), dx.p, k, db.p, p, dy.p), name);
  std::string why;
  bool ok = exact(dy.host(), want, &why);
  // A bad box: the same error from both backends.
  if (ok && k > 0) {
    std::vector<float> bad = boxes;
    bad[5 * (k - 1)] = 4.f;  // image 4 of 4
    Dev<float> dbad(bad, "crop bad boxes");
    const Status sc = cpu::crop_resize(L.view(), x.data(), k, bad.data(), p, want.data());
    const Status sg = cuda::crop_resize(L.view(), dx.p, k, dbad.p, p, dy.p);
    ok = sc.code == Code::kInvalidArgument && sg.code == sc.code && sg.message == sc.message;
    if (!ok) why = "a bad image index: the CPU said '" + sc.message + "', the device '" + sg.message + "'";
  }
  report(name, ok, why);
}
}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--rn") emu::mma_model().truncate = false;
    else seed = std::strtoull(argv[i], nullptr, 10);
  }
  g_seed = seed;
  rng.seed(seed);
  emu::report_faults();
  const emu::MmaModel& mm = emu::mma_model();
  std::printf("cuda_emulate: cuda/*.cu on the CPU (fibers in a random order between barriers, poisoned shared memory, guard pages), seed %llu\n",
              static_cast<unsigned long long>(seed));
  std::printf("mma model: exact products, %d (tf32) / %d (bf16) per block with the accumulator, %s\n", mm.tf32_block, mm.bf16_block,
              mm.truncate ? "aligned and summed with truncation, the sum truncated toward zero to FP32 (as the tensor cores)"
                          : "summed and rounded to nearest (an ideal FP32 sum)");

  // ---- SPP: every rule, both poolings, whole maps and windows, tiny to beyond shared memory ----
  const std::vector<SppCase> spp = {
      {"adaptive {6,3,2,1}, 12 ragged maps 1x1..37x29", uniform(1, 40), random_sizes(12, 1, 37), {6, 3, 2, 1}, kBinsAdaptive, 0, false},
      {"paper {4,2,1}, 9 maps 4..31", uniform(2, 24), random_sizes(9, 4, 31), {4, 2, 1}, kBinsPaper, 0, false},
      {"caffe {3,2,1}, 9 maps 3..30", uniform(2, 24), random_sizes(9, 3, 30), {3, 2, 1}, kBinsCaffe, 0, false},
      {"adaptive {5,1}, a 131x117 map beyond shared memory and 3 small", 3, {{131, 117}, {5, 9}, {1, 1}, {17, 3}}, {5, 1}, kBinsAdaptive, 0, false},
      {"adaptive {13}, 200 channels in groups, 5 maps", 200, random_sizes(5, 1, 15), {13}, kBinsAdaptive, 0, false},
      {"adaptive {6,3,2,1}, 150 windows over 5 maps", uniform(1, 20), random_sizes(5, 6, 48), {6, 3, 2, 1}, kBinsAdaptive, 150, false},
      {"paper {3,1}, 60 windows over 4 maps", uniform(1, 20), random_sizes(4, 6, 40), {3, 1}, kBinsPaper, 60, false},
      {"caffe {2,1}, 60 windows over 4 maps", uniform(1, 20), random_sizes(4, 6, 40), {2, 1}, kBinsCaffe, 60, false},
      {"adaptive {4,2,1}, ties and NaN, 8 maps", uniform(1, 12), random_sizes(8, 1, 25), {4, 2, 1}, kBinsAdaptive, 0, true},
      {"adaptive {2,1}, ties and NaN, 40 windows", uniform(1, 12), random_sizes(3, 4, 30), {2, 1}, kBinsAdaptive, 40, true},
      // windows from 1 to 3600 elements over 48 channels: each region's own channel grouping
      // (48 channels per block down to 1), partial last groups, blocks of different regions
      {"paper {6,3,2,1}, 60 windows of mixed sizes, 48 channels", 48, random_sizes(2, 30, 60), {6, 3, 2, 1}, kBinsPaper, 60, false},
      // maps of one size: every region as many blocks (3 of 24, 24, 16 channels), found by division
      {"adaptive {6,3,2,1}, 6 maps 13x13, 64 channels", 64, {{13, 13}, {13, 13}, {13, 13}, {13, 13}, {13, 13}, {13, 13}}, {6, 3, 2, 1}, kBinsAdaptive, 0, false},
  };
  // (every table is drawn before any case runs: --only then reproduces a case's data)
  std::vector<std::pair<int, int>> tinies = random_sizes(40, 1, 4);
  const std::vector<ConvCase> convs = {
      {"ZF-5 conv1 7x7/2 p1 3->96, maps 5x5..40x33", 3, 96, 7, 7, 2, 2, 1, 1, 1, 1, 1, true, {{5, 5}, {40, 33}, {6, 11}, {19, 23}}},
      {"1x1 200->130 (2 N tiles, K=200), 40 maps 1..4", 200, 130, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, tinies},
      {"3x5 dil (2,1) str (1,2) pad (1,2) groups 3", 6, 9, 3, 5, 1, 2, 1, 2, 2, 1, 3, true, {{9, 12}, {20, 7}, {3, 5}}},
      {"3x3 p1 24->20 with NaN and Inf", 24, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, {{7, 9}, {1, 1}, {12, 5}}, true},
      // few tiles, long K: split-K (4 chunks here), then the reduce kernel's bias, ReLU and scatter
      {"split-K: one 14x14 map 64->96 3x3 p1 (conv3 at batch 1)", 64, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, {{14, 14}}},
      {"split-K: groups 2, 3 ragged maps 64->40 3x3 p1", 64, 40, 3, 3, 1, 1, 1, 1, 1, 1, 2, false, {{7, 9}, {3, 4}, {12, 5}}},
  };
  for (const SppCase& c : spp) run_spp(c);

  // ---- convolution: the direct kernel and the tensor cores in every mode ----
  for (int math : {kMathDirect, kMathTf32, kMathBf16, kMathFp32}) {
    for (const ConvCase& c : convs) run_conv(c, math, 132);
    run_conv(convs[0], math, 1);  // one SM: 128-pixel tiles
  }
  // FP32 (3xTF32) over long K with same-sign data, where a truncating accumulator drifts furthest.
  for (const ConvCase& c : std::vector<ConvCase>{
           {"K=2400 (96x5x5) same-sign", 96, 8, 5, 5, 1, 1, 0, 0, 1, 1, 1, false, {{7, 6}, {5, 5}}, false, true},
           {"K=3456 (384x3x3) same-sign", 384, 8, 3, 3, 1, 1, 0, 0, 1, 1, 1, false, {{4, 5}, {3, 3}}, false, true},
           {"K=12800 (512x5x5) same-sign", 512, 4, 5, 5, 1, 1, 0, 0, 1, 1, 1, false, {{5, 6}}, false, true},
       })
    run_conv(c, kMathFp32, 1);

  // ---- linear: the direct kernel, the tensor-core GEMM with and without split-K, and the
  // matrix-vector kernel (at most 8 rows, every mode but direct) ----
  for (int math : {kMathDirect, kMathTf32, kMathBf16, kMathFp32}) {
    run_linear(11, 257, 1000, false, math, 132, false);  // split-K
    run_linear(150, 130, 70, true, math, 1, false);     // two N tiles, no split
    run_linear(1, 1, 1, false, math, 132, false);
  }
  run_linear(300, 8, 12800, false, kMathFp32, 1, true);  // no split: one accumulation over all of K
  run_linear(1, 257, 1000, false, kMathTf32, 132, false);  // matrix-vector, 1 row, 16-byte loads
  run_linear(2, 33, 301, true, kMathBf16, 132, false);     // 2 rows, odd K: 4-byte loads; a warp's 2nd output missing
  run_linear(3, 130, 64, true, kMathFp32, 132, false);     // 3 rows as 4
  run_linear(7, 129, 515, false, kMathTf32, 132, false);   // 7 rows as 8, 4-byte loads
  run_linear(8, 64, 12800, false, kMathFp32, 132, true);   // 8 rows, K of fc6, same-sign
  // ---- linear with bfloat16 weights: rows not a multiple of the kernel's group of 4, odd K ----
  run_linear_bf16(1, 37, 301, true);
  run_linear_bf16(6, 50, 129, false);
  run_linear_bf16(11, 9, 1000, false);  // the CPU's GEMM path (8 rows and more)
  run_linear_bf16(9, 300, 40, true);    // and its widening in blocks of 256 weight rows
  run_linear(9, 8, 12800, false, kMathFp32, 132, true);  // split-K

  // ---- pooling, LRN (and the fused LRN + max pool) ----
  LrnParams lrn;
  lrn.size = 5, lrn.alpha = 1e-4f * 50, lrn.beta = 0.75f, lrn.k = 2.f;
  Pool2dParams zf;  // ZF-5's 3x3 stride 2 pad 1
  zf.kernel_h = zf.kernel_w = 3, zf.stride_h = zf.stride_w = 2, zf.pad_h = zf.pad_w = 1;
  run_pool_lrn("3x3/2 p1 C=7", 7, zf, lrn, false);
  Pool2dParams odd;
  odd.kernel_h = 2, odd.kernel_w = 4, odd.stride_h = 3, odd.stride_w = 1, odd.pad_h = 1, odd.pad_w = 2;
  LrnParams lrn3;
  lrn3.size = 3, lrn3.alpha = 0.3f, lrn3.beta = 0.6f, lrn3.k = 1.f;
  run_pool_lrn("2x4 str (3,1) pad (1,2) C=5 (LRN size 3, beta 0.6)", 5, odd, lrn3, false);
  run_pool_lrn("3x3/2 p1 C=4 ties and NaN", 4, zf, lrn, true);

  // ---- batch norm's channel ops, the within-channel LRN ----
  run_channel_ops(5);
  run_channel_ops(1);

  // ---- non-maximum suppression: one and several 64-box blocks, plain and per class ----
  run_nms(1, 0, 0.5);
  run_nms(64, 0, 0.5);
  run_nms(65, 0, 0.0);
  run_nms(700, 0, 0.5);
  run_nms(700, 0, 0.3);
  run_nms(300, 4, 0.5);
  run_nms(1000, 7, 0.7);

  // ---- crop and resize: both alignments, with and without context, up- and downsampling ----
  run_crop(40, 3, 9, 7, 0, kCropPixels);
  run_crop(25, 2, 31, 17, 4, kCropPixels);
  run_crop(30, 3, 5, 6, 0, kCropCorners);
  run_crop(12, 1, 1, 1, 0, kCropPixels);
  run_crop(12, 2, 1, 3, 0, kCropCorners);
  run_crop(0, 3, 4, 4, 1, kCropPixels);

  // ---- elementwise, softmax and the loss, the optimizers ----
  run_elementwise(5003);
  run_softmax(37, 1000);
  run_softmax(3, 7);
  run_optimizers(4099);

  // ---- backward of conv and linear ----
  run_conv_backward(convs[2]);
  run_conv_backward({"3x3 str 2 pad 1 5->7, ragged 1x1..13x11", 5, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1, false, random_sizes(6, 1, 13)});
  run_linear_backward(5, 300, 37);
  run_linear_backward(1, 7, 1);

  emu::for_each_launched([](const std::string& k, long n) { std::printf("kernel %s: %ld launches\n", k.c_str(), n); });
  if (failures) std::printf("FAILED: %d failure(s) of %d cases (seed %llu)\n", failures, cases, static_cast<unsigned long long>(seed));
  else std::printf("all cases passed: 0 failure(s) of %d cases\n", cases);
  return failures ? 1 : 0;
}
