#pragma once
#include <string>

namespace sppnet {
namespace cpu {
// The vector ISA the CPU kernels dispatch to ("avx512", "avx2" or "portable"); see cpu/isa.h.
std::string isa();
// Threads a CPU op uses (SPPNET_NUM_THREADS, else all hardware threads).
int threads();
}  // namespace cpu
}  // namespace sppnet
