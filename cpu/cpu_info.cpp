#include "sppnet/cpu_info.h"

#include "parallel.h"

namespace sppnet {
namespace cpu {

std::string isa() {
#if defined(__GNUC__) && defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
#endif
  return "baseline";
}

int threads() { return num_threads(); }

}  // namespace cpu
}  // namespace sppnet
