// The vector instruction set the CPU kernels dispatch to: the widest the CPU supports, or a
// narrower one named by SPPNET_CPU_ISA (avx512 | avx2 | portable), for tests and comparisons.
#pragma once
#include <cstdlib>
#include <cstring>

// Function multiversioning for loops the compiler vectorises: one clone per ISA, picked at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SPP_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SPP_ISA_CLONES
#endif

namespace sppnet {
namespace cpu {

enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

inline Isa detect_isa() {
  Isa best = Isa::kPortable;
#if defined(__GNUC__) && defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    best = Isa::kAvx512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    best = Isa::kAvx2;
#endif
  if (const char* s = std::getenv("SPPNET_CPU_ISA")) {
    Isa want = best;
    if (std::strcmp(s, "portable") == 0) want = Isa::kPortable;
    if (std::strcmp(s, "avx2") == 0) want = Isa::kAvx2;
    if (std::strcmp(s, "avx512") == 0) want = Isa::kAvx512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;
  }
  return best;
}

inline const char* isa_name(Isa i) { return i == Isa::kAvx512 ? "avx512" : i == Isa::kAvx2 ? "avx2" : "portable"; }

}  // namespace cpu
}  // namespace sppnet
