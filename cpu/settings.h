// The CPU kernels' settings from the environment, in one place, fixed once per process: by the
// first call of load_settings() (sppnet/cpu_info.h) or settings(), never again. The addon calls load_settings() as it
// loads, with a reader that goes through Node's process.env (which takes Node's lock on the
// environment), on the JS thread of the first instance to load; the standalone tools read the
// environment with getenv at their first kernel call. A getenv on a kernel's thread while a JS
// thread writes process.env would be a data race (setenv may move the environment while getenv
// walks it), which is why no kernel reads the environment itself. Changing these variables after
// the load does nothing (a test that needs another value runs a child process).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "isa.h"

namespace sppnet {
namespace cpu {

struct Settings {
  Isa isa = Isa::kPortable;    // the CPU's widest, or narrower by SPPNET_CPU_ISA=avx2|portable
  int num_threads = 1;         // SPPNET_NUM_THREADS (threads per op), else the hardware's
  int pool_spin = 2000;        // SPPNET_POOL_SPIN: PAUSEs a helper spins between parallel calls before it sleeps
  int64_t gemm_kc = 512;       // SPPNET_GEMM_KC: the GEMM's K block
  int64_t gemm_l2 = 0;         // SPPNET_GEMM_L2: bytes of a panel group, else half the core's L2
  bool winograd = true;        // SPPNET_WINOGRAD=0: the 3x3 Winograd path off
  bool lanes = true;           // SPPNET_LANES=0: the AVX-512 strided lanes path off (lanes_conv_cpu.cpp)
  bool amx = false;            // SPPNET_AMX=1: convs as bf16x3 products on AMX tiles, where usable (amx_cpu.h)
  bool amx_products = false;   // linear's and conv2d's BF16 products (math 'bf16') may take AMX tiles: the CPU has them, SPPNET_AMX is not 0
                               // (the OS is asked for the tile state at the first such call: amx_products_enabled())
  int winograd_min_channels = 160;  // SPPNET_WINOGRAD_MIN_CHANNELS: fewer input or output channels stay on im2col
  int64_t winograd_chunk = 0;  // SPPNET_WINOGRAD_CHUNK: tiles per chunk (rounded up to panels), else sized by memory
};

// Reads one variable: true and its value when it is set.
using EnvReader = std::function<bool(const char* name, std::string* value)>;

namespace detail {

inline bool getenv_reader(const char* name, std::string* value) {
  const char* s = std::getenv(name);
  if (!s) return false;
  *value = s;
  return true;
}

// A positive integer, at most `most`, from the variable `name`; else `dflt`.
inline int64_t positive(const EnvReader& read, const char* name, int64_t dflt, int64_t most) {
  std::string s;
  if (!read(name, &s)) return dflt;
  const long long v = std::atoll(s.c_str());
  return v > 0 ? std::min<int64_t>(v, most) : dflt;
}

inline Settings read_settings(const EnvReader& read) {
  Settings r;
  std::string s;
  const Isa hw = hardware_isa();
  r.isa = hw;
  if (read("SPPNET_CPU_ISA", &s)) {
    Isa want = hw;
    if (s == "portable") want = Isa::kPortable;
    if (s == "avx2") want = Isa::kAvx2;
    if (s == "avx512") want = Isa::kAvx512;
    if (static_cast<int>(want) < static_cast<int>(hw)) r.isa = want;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  r.num_threads = static_cast<int>(positive(read, "SPPNET_NUM_THREADS", hc == 0 ? 1 : hc, 4096));
  if (read("SPPNET_POOL_SPIN", &s)) r.pool_spin = static_cast<int>(std::max<long long>(0, std::min<long long>(std::atoll(s.c_str()), 1 << 30)));
  r.gemm_kc = positive(read, "SPPNET_GEMM_KC", r.gemm_kc, 1 << 20);
  r.gemm_l2 = positive(read, "SPPNET_GEMM_L2", l2_cache_bytes() / 2, int64_t{1} << 34);
  if (read("SPPNET_WINOGRAD", &s)) r.winograd = s != "0";
  if (read("SPPNET_LANES", &s)) r.lanes = s != "0";
  const bool amx_set = read("SPPNET_AMX", &s);
  if (amx_set && s == "1") r.amx = r.isa == Isa::kAvx512 && amx_bf16_usable();
  r.amx_products = r.amx || (!(amx_set && s == "0") && r.isa == Isa::kAvx512 && amx_bf16_cpu());
  r.winograd_min_channels = static_cast<int>(positive(read, "SPPNET_WINOGRAD_MIN_CHANNELS", r.winograd_min_channels, 1 << 30));
  r.winograd_chunk = positive(read, "SPPNET_WINOGRAD_CHUNK", 0, int64_t{1} << 40);
  return r;
}

// The settings, read by `read` at the first call (getenv when it is empty).
inline const Settings& settings_from(const EnvReader& read) {
  static const Settings s = read_settings(read ? read : EnvReader(getenv_reader));
  return s;
}

}  // namespace detail

// The settings (read with getenv if nothing fixed them before).
inline const Settings& settings() { return detail::settings_from(nullptr); }

// The vector instruction set the kernels dispatch to.
inline Isa detect_isa() { return settings().isa; }

}  // namespace cpu
}  // namespace sppnet
