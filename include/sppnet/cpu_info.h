#pragma once
#include <functional>
#include <string>
#include <vector>

#include "status.h"

namespace sppnet {
namespace cpu {
// Fixes the CPU kernels' settings (cpu/settings.h) with `read` (one variable: true and its value
// when set), unless they were fixed before: the addon calls it as it loads, on its JS thread, with
// a reader through Node's process.env, so that no kernel's thread ever reads the environment.
void load_settings(const std::function<bool(const char* name, std::string* value)>& read);
// The settings in effect, by their names in sp.backend().cpu.settings (numbers; booleans as 0 / 1).
std::vector<std::pair<std::string, double>> settings_list();
// The vector ISA the CPU kernels dispatch to ("avx512", "avx2" or "portable"); see cpu/isa.h.
std::string isa();
// Threads a CPU op uses (SPPNET_NUM_THREADS, else all hardware threads).
int threads();
// Whether linear's math kBf16 gets BF16 products here (AVX-512 BF16, within SPPNET_CPU_ISA).
bool bf16_products();
// Whether linear's and conv2d's BF16 products (math 'bf16') take AMX tiles in this process: the
// settings allow it (amxProducts) and Linux granted the tile state, which this asks for if no
// such call has yet (for benchmarks and tests about to use them; sp.backend() does not ask).
bool amx_products_granted();

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

// Runs f on the calling thread with its pool's helper threads, once f wakes them, spinning
// between f's parallel steps (up to 1000 x SPPNET_POOL_SPIN) instead of sleeping after each, until
// f returns: for a task of many layers (a network run on the executor), whose serial gaps between
// parallel steps last tens of microseconds. With helpers that slept in them, ZF-5 at batch 1 right
// after a pause ran on about one core's worth of CPU time (bench/RESULTS.md, 2026-11-28).
Status run_hot(const std::function<Status()>& f);
}  // namespace cpu
}  // namespace sppnet
