// bfloat16 weights: the upper 16 bits of an IEEE float32 (8 exponent bits, 7 mantissa bits), so a
// conversion to float32 is exact and one from float32 rounds to nearest even (relative error at
// most 2^-9; NaN stays NaN, infinities and zeros keep their sign). Stored two to a float32 slot in
// tensors (lib/ops/linear.ts: BF16Matrix), element i in bits [16 (i & 1), 16 (i & 1) + 16) of slot
// i / 2 on a little-endian host, i.e. plain uint16_t[i].
#pragma once
#include <cstdint>
#include <cstring>

#include "common.h"

namespace sppnet {

SPP_HD float bf16_to_float(uint16_t h) {
  const uint32_t u = uint32_t{h} << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

SPP_HD uint16_t float_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN: keep it quiet
  u += 0x7fffu + ((u >> 16) & 1u);                                                       // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace sppnet
