// Standalone check and timing harness for the SPP kernels (no Node): a plain C++ reference,
// the CPU kernel and, when a device answers, the CUDA kernel, on the benchmark workloads.
//
//   cmake -S . -B build-tools -DSPPNET_TOOLS=ON && cmake --build build-tools -j2
//   ./build-tools/spp_check [W1|W2|W3|W4|all] [reps]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "sppnet/device.h"
#include "sppnet/ops.h"

using namespace sppnet;

namespace {

struct Workload {
  std::string name;
  int C = 0;
  std::vector<int32_t> h, w;
  std::vector<int64_t> off;
  std::vector<Region> regions;
  int64_t total = 0;
};

Workload make(const std::string& name, std::mt19937& g) {
  Workload wl;
  wl.name = name;
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g); };
  auto add = [&](int hh, int ww) {
    wl.off.push_back(wl.total);
    wl.h.push_back(hh);
    wl.w.push_back(ww);
    wl.total += int64_t{wl.C} * hh * ww;
  };
  if (name == "W1") { wl.C = 256; for (int i = 0; i < 64; ++i) add(uni(11, 37), uni(11, 37)); }
  if (name == "W2") { wl.C = 256; for (int i = 0; i < 64; ++i) add(13, 13); }
  if (name == "W3") { wl.C = 512; for (int i = 0; i < 32; ++i) add(uni(48, 96), uni(48, 96)); }
  if (name == "W4") {
    wl.C = 256;
    add(60, 80);
    for (int k = 0; k < 2000; ++k) {
      const int x0 = uni(0, 70), y0 = uni(0, 50);
      const int x1 = std::min(79, x0 + uni(2, 40)), y1 = std::min(59, y0 + uni(2, 30));
      wl.regions.push_back(Region{0, y0, x0, y1 - y0 + 1, x1 - x0 + 1});
    }
  }
  if (wl.regions.empty())
    for (int i = 0; i < static_cast<int>(wl.h.size()); ++i) wl.regions.push_back(Region{i, 0, 0, wl.h[i], wl.w[i]});
  return wl;
}

SppProblem problem(const Workload& wl, int pool) {
  SppProblem p;
  p.input = RaggedView{static_cast<int32_t>(wl.h.size()), wl.C, wl.off.data(), wl.h.data(), wl.w.data(), wl.total};
  p.num_regions = static_cast<int32_t>(wl.regions.size());
  p.regions = wl.regions.data();
  p.num_levels = 4;
  const int lv[4] = {6, 3, 2, 1};
  std::copy(lv, lv + 4, p.levels);
  p.rule = kBinsAdaptive;
  p.pool = pool;
  return p;
}

// The reference: the adaptive rule written out with floating floor/ceil, one bin at a time.
void reference(const SppProblem& p, const float* in, std::vector<float>& out) {
  const int64_t F = p.features();
  out.assign(static_cast<size_t>(F * p.num_regions), 0.f);
  for (int r = 0; r < p.num_regions; ++r) {
    const Region g = p.regions[r];
    const int64_t H = p.input.height[g.map], W = p.input.width[g.map];
    int64_t k = r * F;
    for (int l = 0; l < p.num_levels; ++l) {
      const int n = p.levels[l];
      for (int c = 0; c < p.input.channels; ++c)
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) {
            const int ys = static_cast<int>(std::floor(double(i) * g.h / n)), ye = static_cast<int>(std::ceil(double(i + 1) * g.h / n));
            const int xs = static_cast<int>(std::floor(double(j) * g.w / n)), xe = static_cast<int>(std::ceil(double(j + 1) * g.w / n));
            double acc = p.pool == kPoolMax ? -INFINITY : 0.0;
            for (int y = ys; y < ye; ++y)
              for (int x = xs; x < xe; ++x) {
                const float v = in[p.input.offset[g.map] + c * H * W + (g.y0 + y) * W + g.x0 + x];
                acc = p.pool == kPoolMax ? std::max<double>(acc, v) : acc + v;
              }
            if (p.pool == kPoolAvg) acc /= double(ye - ys) * (xe - xs);
            out[static_cast<size_t>(k++)] = static_cast<float>(acc);
          }
    }
  }
}

double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::fabs(double(a[i]) - b[i]) / (1.0 + std::fabs(double(b[i]))));
  return e;
}

template <typename F>
double median_us(int reps, F&& f) {
  std::vector<double> t;
  f();  // warm-up
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "all";
  const int reps = argc > 2 ? std::atoi(argv[2]) : 10;
  std::mt19937 g(1234);
  const cuda::DeviceInfo dev = cuda::query();
  std::printf("CUDA: %s\n", dev.device_count > 0 ? dev.name.c_str() : dev.error.c_str());
  // Host bandwidth reference: memcpy of 256 MiB, read + write.
  {
    std::vector<float> a(64 << 20, 1.f), b(64 << 20);
    const double us = median_us(5, [&] { std::memcpy(b.data(), a.data(), a.size() * 4); });
    std::printf("host memcpy 256 MiB: %.1f ms -> %.1f GB/s (read + write)\n", us / 1e3, 2.0 * a.size() * 4 / us / 1e3);
  }
  int failures = 0;
  for (const std::string name : {"W1", "W2", "W3", "W4"}) {
    if (which != "all" && which != name) continue;
    const Workload wl = make(name, g);
    std::vector<float> in(static_cast<size_t>(wl.total));
    std::normal_distribution<float> nd;
    for (auto& v : in) v = nd(g);
    for (int pool : {kPoolMax, kPoolAvg}) {
      const SppProblem p = problem(wl, pool);
      std::vector<float> ref, got(static_cast<size_t>(p.output_elements()));
      if (std::getenv("SPP_NO_REF") == nullptr) reference(p, in.data(), ref);
      const double cpu_us = median_us(reps, [&] { cpu::spp_forward(p, in.data(), got.data()); });
      const double err = ref.empty() ? 0 : max_rel_err(got, ref);
      const bool ok = err <= (pool == kPoolMax ? 0 : 1e-5);
      failures += !ok;
      std::printf("%s %s: %6.1f MB in, cpu %9.1f us (%5.1f GB/s), max err/(1+|ref|) %.2e %s\n", name.c_str(), pool ? "avg" : "max",
                  wl.total * 4e-6, cpu_us, wl.total * 4e-3 / cpu_us, err, ok ? "ok" : "FAIL");
      if (dev.device_count > 0) {
        void *din = nullptr, *dout = nullptr;
        if (!cuda::malloc_device(in.size() * 4, &din).ok() || !cuda::malloc_device(got.size() * 4, &dout).ok()) return 2;
        cuda::copy_h2d(din, in.data(), in.size() * 4);
        Status s;
        const double gpu_us = median_us(reps, [&] { s = cuda::spp_forward(p, static_cast<float*>(din), static_cast<float*>(dout)); });
        std::vector<float> gg(got.size());
        cuda::copy_d2h(gg.data(), dout, gg.size() * 4);
        const double gerr = ref.empty() ? 0 : max_rel_err(gg, ref);
        const bool gok = s.ok() && gerr <= (pool == kPoolMax ? 0 : 1e-5);
        failures += !gok;
        std::printf("   cuda %9.1f us (%6.1f GB/s, includes table upload and sync), max err/(1+|ref|) %.2e %s %s\n", gpu_us,
                    wl.total * 4e-3 / gpu_us, gerr, gok ? "ok" : "FAIL", s.message.c_str());
        cuda::free_device(din);
        cuda::free_device(dout);
      }
    }
  }
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
