// 16-float vectors through the GCC/Clang vector extension: one zmm with AVX-512, two ymm with
// AVX2, four xmm otherwise. Arithmetic only (+, -, *, /); comparisons go through intrinsics.
#pragma once
#include <cstring>

namespace sppnet {
namespace cpu {

typedef float v16 __attribute__((vector_size(64)));

static inline v16 v16_load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void v16_store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
static inline v16 v16_splat(float a) { return v16{} + a; }
static inline float v16_sum(v16 v) {
  float s = 0.f;
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
}

}  // namespace cpu
}  // namespace sppnet
