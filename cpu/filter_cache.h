// The packed weights of a CPU path that keeps them in the caller's buffer between calls (the
// direct, lanes and AMX conv paths, AMX linear): a header of floats [magic, 4 of shape, ...], then
// the packing.
#pragma once
#include <cstdint>

#include "sppnet/layers.h"
#include "vec.h"

namespace sppnet {
namespace cpu {

// The packing from the caller's cache (`cache`, `cache_len` floats) when it holds the one for
// `key` (len: the path's cache size; magic: the path's mark; key: the shape the packing is of,
// kept in the header after the mark), else pack(dst) into the cache, marked valid after, or into
// scratch when the caller keeps none (packed: its floats).
template <typename Pack>
float* cached_packing(float* cache, int64_t cache_len, int64_t len, int32_t magic, const int32_t (&key)[4], int64_t header_floats,
                      int64_t packed, FloatBuffer& scratch, Pack&& pack) {
  const bool cached = cache && cache_len == len;
  int32_t* header = cached ? reinterpret_cast<int32_t*>(cache) : nullptr;
  const bool hit = cached && __atomic_load_n(header, __ATOMIC_ACQUIRE) == magic && header[1] == key[0] && header[2] == key[1] &&
                   header[3] == key[2] && header[4] == key[3];
  float* w = cached ? cache + header_floats : scratch.get(static_cast<size_t>(packed));
  if (!hit) {
    if (cached) __atomic_store_n(header, 0, __ATOMIC_RELEASE);  // not valid while it is rewritten
    pack(w);
    if (cached) {
      for (int i = 0; i < 4; ++i) header[1 + i] = key[i];
      __atomic_store_n(header, magic, __ATOMIC_RELEASE);
    }
  }
  return w;
}

// A conv's filters: keyed by [cin, cout, kh, kw], in Conv2dParams::filter_cache.
template <typename Pack>
float* cached_filters(const Conv2dParams& p, int64_t len, int32_t magic, int64_t header_floats, int64_t packed, FloatBuffer& scratch,
                      Pack&& pack) {
  const int32_t key[4] = {p.in_channels, p.out_channels, p.kernel_h, p.kernel_w};
  return cached_packing(p.filter_cache, p.filter_cache_len, len, magic, key, header_floats, packed, scratch, pack);
}

}  // namespace cpu
}  // namespace sppnet
