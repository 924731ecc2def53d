// The vector instruction set the CPU kernels dispatch to: the widest the CPU supports, or a
// narrower one named by SPPNET_CPU_ISA (avx512 | avx2 | portable), for tests and comparisons.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

// The x86 kernels (intrinsics, target attributes): GCC or Clang on x86-64. The one place that
// decides it; every cpu/ file tests SPP_X86.
#if defined(__x86_64__) && defined(__GNUC__)
#define SPP_X86 1
#include <immintrin.h>
#endif

// Function multiversioning for loops the compiler vectorises: one clone per ISA, picked at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SPP_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SPP_ISA_CLONES
#endif

namespace sppnet {
namespace cpu {

enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest instruction set the CPU supports (no setting applied; see detect_isa()).
inline Isa hardware_isa() {
  Isa best = Isa::kPortable;
#ifdef SPP_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    best = Isa::kAvx512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    best = Isa::kAvx2;
#endif
  return best;
}

// One core's L2 cache in bytes (what the GEMM's blocking is sized to): 512 KiB on Zen 2/3, 1 MiB
// on Zen 4, 2 MiB on recent Xeons; 1 MiB where the OS does not say.
inline int64_t l2_cache_bytes() {
#ifdef _SC_LEVEL2_CACHE_SIZE
  const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (v >= (64 << 10) && v <= (64 << 20)) return v;
#endif
  return int64_t{1} << 20;
}

inline const char* isa_name(Isa i) { return i == Isa::kAvx512 ? "avx512" : i == Isa::kAvx2 ? "avx2" : "portable"; }

}  // namespace cpu
}  // namespace sppnet

// detect_isa(): the ISA the kernels dispatch to, SPPNET_CPU_ISA applied (settings.h).
#include "settings.h"
