// Plain views of the tensors the kernels work on. Pointers may be host or device memory
// depending on the backend; metadata arrays (offsets, sizes, regions) are always host memory.
#pragma once
#include <cstdint>

namespace sppnet {

// A ragged batch: `count` maps of shape [channels, height[i], width[i]], map i starting at
// element offset[i] of one allocation. Maps need not be adjacent, but usually are.
struct RaggedView {
  int32_t count = 0;
  int32_t channels = 0;
  const int64_t* offset = nullptr;
  const int32_t* height = nullptr;
  const int32_t* width = nullptr;
  int64_t total = 0;  // elements in the allocation, i.e. the size of a gradient w.r.t. it
};

// A rectangle of one map: rows [y0, y0+h), columns [x0, x0+w). Whole maps and detection
// windows are both regions, so one kernel serves both.
struct Region {
  int32_t map, y0, x0, h, w;
};

}  // namespace sppnet
