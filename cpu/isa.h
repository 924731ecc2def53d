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
#include <cpuid.h>
#include <immintrin.h>
// AMX intrinsics (amx_cpu.cpp): GCC 11 and Clang 12 on.
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11)
#define SPP_AMX 1
#endif
#endif
#if defined(__linux__)
#include <sys/syscall.h>
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

// amx_bf16_cpu: whether this build has the AMX kernels (SPP_AMX) and the CPU AMX tiles with BF16
// products (and AVX-512 BF16 for the packing). amx_bf16_usable: that, and Linux grants this process
// the tile state (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA: asked by this call; once granted,
// for every thread until the process ends; a tile instruction without it is SIGILL).
inline bool amx_bf16_cpu() {
#if defined(SPP_AMX) && defined(__linux__) && defined(SYS_arch_prctl)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 22)) || !(d & (1u << 24))) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}
inline bool amx_bf16_usable() {
#if defined(SPP_AMX) && defined(__linux__) && defined(SYS_arch_prctl)
  return amx_bf16_cpu() && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
  return false;
#endif
}

inline const char* isa_name(Isa i) { return i == Isa::kAvx512 ? "avx512" : i == Isa::kAvx2 ? "avx2" : "portable"; }

}  // namespace cpu
}  // namespace sppnet

// detect_isa(): the ISA the kernels dispatch to, SPPNET_CPU_ISA applied (settings.h).
#include "settings.h"
