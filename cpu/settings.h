// The CPU kernels' settings from the environment, in one place: read once per process, by the
// first call of settings() (the addon calls it as it loads, on the JS thread), and never by a
// kernel's thread. A getenv on another thread while the JS thread writes process.env is a data
// race (setenv may move the environment while getenv walks it); so these variables take effect at
// the load, and changing them later does nothing (a test that needs another value runs a child).
// SPPNET_CPU_ISA is read once the same way (isa.h, detect_isa()); the binding's own variables
// (SPPNET_CPU_EXECUTOR, SPPNET_INLINE_WORK, SPPNET_HOST_CACHE_MB) are read at its load, on the JS
// thread.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "isa.h"

namespace sppnet {
namespace cpu {

struct Settings {
  int num_threads = 1;         // SPPNET_NUM_THREADS (threads per op), else the hardware's
  int pool_spin = 2000;        // SPPNET_POOL_SPIN: PAUSEs a helper spins between parallel calls before it sleeps
  int64_t gemm_kc = 512;       // SPPNET_GEMM_KC: the GEMM's K block
  int64_t gemm_l2 = 0;         // SPPNET_GEMM_L2: bytes of a panel group, else half the core's L2
  bool winograd = true;        // SPPNET_WINOGRAD=0: the 3x3 Winograd path off
  int winograd_min_channels = 160;  // SPPNET_WINOGRAD_MIN_CHANNELS: fewer input or output channels stay on im2col
  int64_t winograd_chunk = 0;  // SPPNET_WINOGRAD_CHUNK: tiles per chunk (rounded up to panels), else sized by memory
};

namespace detail {
// A positive integer from the environment, else `dflt`.
inline int64_t env_positive(const char* name, int64_t dflt) {
  const char* s = std::getenv(name);
  const long long v = s ? std::atoll(s) : 0;
  return v > 0 ? v : dflt;
}
}  // namespace detail

inline const Settings& settings() {
  static const Settings s = [] {
    Settings r;
    const unsigned hc = std::thread::hardware_concurrency();
    r.num_threads = static_cast<int>(detail::env_positive("SPPNET_NUM_THREADS", hc == 0 ? 1 : hc));
    if (const char* e = std::getenv("SPPNET_POOL_SPIN")) r.pool_spin = std::atoi(e) > 0 ? std::atoi(e) : 0;
    r.gemm_kc = detail::env_positive("SPPNET_GEMM_KC", r.gemm_kc);
    r.gemm_l2 = detail::env_positive("SPPNET_GEMM_L2", l2_cache_bytes() / 2);
    if (const char* e = std::getenv("SPPNET_WINOGRAD")) r.winograd = std::strcmp(e, "0") != 0;
    r.winograd_min_channels = static_cast<int>(detail::env_positive("SPPNET_WINOGRAD_MIN_CHANNELS", r.winograd_min_channels));
    r.winograd_chunk = detail::env_positive("SPPNET_WINOGRAD_CHUNK", 0);
    (void)detect_isa();  // SPPNET_CPU_ISA, at the same moment
    return r;
  }();
  return s;
}

}  // namespace cpu
}  // namespace sppnet
