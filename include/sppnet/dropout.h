// The dropout mask's random bits: a counter-based hash (SplitMix64's finaliser over the seed and
// the element index), plain 64-bit integer arithmetic, so the CPU and CUDA masks are identical.
#pragma once
#include <cstdint>

#include "common.h"

namespace sppnet {

SPP_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// 24 random bits for element i under `seed`.
SPP_HD uint32_t dropout_bits(uint64_t seed, uint64_t i) {
  const uint64_t key = mix64(seed + 0x9E3779B97F4A7C15ull);
  return static_cast<uint32_t>(mix64(key + (i + 1) * 0x9E3779B97F4A7C15ull) >> 40);
}

}  // namespace sppnet
