// The packed filters of a CPU conv path that keeps them in Conv2dParams::filter_cache between
// calls (the direct and lanes paths): a header of floats [magic, cin, cout, kh, kw, ...], then
// the packing.
#pragma once
#include <cstdint>

#include "sppnet/layers.h"
#include "vec.h"

namespace sppnet {
namespace cpu {

// The packing from the caller's cache when it holds this layer's (len: the path's cache size;
// magic: the path's mark), else pack(dst) into the cache, marked valid after, or into scratch
// when the caller keeps none (packed: its floats).
template <typename Pack>
float* cached_filters(const Conv2dParams& p, int64_t len, int32_t magic, int64_t header_floats, int64_t packed, FloatBuffer& scratch,
                      Pack&& pack) {
  const bool cached = p.filter_cache && p.filter_cache_len == len;
  int32_t* header = cached ? reinterpret_cast<int32_t*>(p.filter_cache) : nullptr;
  const bool hit = cached && __atomic_load_n(header, __ATOMIC_ACQUIRE) == magic && header[1] == p.in_channels &&
                   header[2] == p.out_channels && header[3] == p.kernel_h && header[4] == p.kernel_w;
  float* w = cached ? p.filter_cache + header_floats : scratch.get(static_cast<size_t>(packed));
  if (!hit) {
    pack(w);
    if (cached) {
      header[1] = p.in_channels, header[2] = p.out_channels, header[3] = p.kernel_h, header[4] = p.kernel_w;
      __atomic_store_n(header, magic, __ATOMIC_RELEASE);
    }
  }
  return w;
}

}  // namespace cpu
}  // namespace sppnet
