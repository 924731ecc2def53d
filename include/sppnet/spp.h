// Spatial pyramid pooling over a ragged batch: the problem both backends take (ops.h lists spp_forward/backward).
#pragma once
#include <cstdint>

#include "bins.h"
#include "status.h"
#include "tensor.h"

namespace sppnet {

constexpr int kMaxLevels = 16;

enum PoolKind : int32_t { kPoolMax = 0, kPoolAvg = 1 };

// Output row r (one per region) holds C * sum(n*n) values: level by level in the given order,
// within a level channel-major, bins row-major, as PyTorch's
// torch.cat([adaptive_max_pool2d(x, n).flatten(1) for n in levels], 1).
struct SppProblem {
  RaggedView input;
  int32_t num_regions = 0;
  const Region* regions = nullptr;  // host memory
  int32_t num_levels = 0;
  int32_t levels[kMaxLevels] = {};
  int32_t rule = kBinsAdaptive;
  int32_t pool = kPoolMax;

  int32_t bins_per_channel() const {
    int32_t f = 0;
    for (int32_t l = 0; l < num_levels; ++l) f += levels[l] * levels[l];
    return f;
  }
  int64_t features() const { return static_cast<int64_t>(input.channels) * bins_per_channel(); }
  int64_t output_elements() const { return features() * num_regions; }
};

}  // namespace sppnet
