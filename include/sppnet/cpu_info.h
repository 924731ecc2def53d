#pragma once
#include <string>

namespace sppnet {
namespace cpu {
// The widest vector ISA the CPU kernels dispatch to on this machine ("avx512f", "avx2" or "baseline").
std::string isa();
// Threads a CPU op uses (SPPNET_NUM_THREADS, else all hardware threads).
int threads();
}  // namespace cpu
}  // namespace sppnet
