#include "sppnet/cpu_info.h"

#include "isa.h"
#include "parallel.h"

namespace sppnet {
namespace cpu {

std::string isa() { return isa_name(detect_isa()); }

int threads() { return num_threads(); }

}  // namespace cpu
}  // namespace sppnet
