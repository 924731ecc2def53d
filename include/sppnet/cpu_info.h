#pragma once
#include <functional>
#include <string>
#include <vector>

#include "status.h"

namespace sppnet {
namespace cpu {
// Reads the CPU kernels' settings from the environment (cpu/settings.h), if not done yet: the
// addon calls it as it loads, on the JS thread, so that no kernel's thread ever calls getenv.
void load_settings();
// The vector ISA the CPU kernels dispatch to ("avx512", "avx2" or "portable"); see cpu/isa.h.
std::string isa();
// Threads a CPU op uses (SPPNET_NUM_THREADS, else all hardware threads).
int threads();
// Whether linear's math kBf16 gets BF16 products here (AVX-512 BF16, within SPPNET_CPU_ISA).
bool bf16_products();

// Measured FP32 peak: `threads` threads (started together) each run independent FMA chains of the
// ISA the kernels use (zmm / ymm FMAs; the portable build's 16-lane multiply + add) for about
// `seconds`. A reading, not a model of the core: it is what benchmarks divide by for "% peak".
struct PeakProbe {
  std::string isa;
  std::vector<double> per_thread;  // GFLOP/s of each thread, run at the same time
  double total_gflops = 0;         // their sum
};
PeakProbe fma_peak(int threads, double seconds);

// Runs f on the calling thread with every parallel_for inside it serial (no helper threads are
// started or woken): for ops so small that handing them to other threads costs more than they do.
Status run_serially(const std::function<Status()>& f);
}  // namespace cpu
}  // namespace sppnet
