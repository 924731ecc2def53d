// 16-float vectors through the GCC/Clang vector extension: one zmm with AVX-512, two ymm with
// AVX2, four xmm otherwise. Arithmetic only (+, -, *, /); comparisons go through intrinsics.
#pragma once
#include <cstdlib>
#include <cstring>
#include <new>

namespace sppnet {
namespace cpu {

typedef float v16 __attribute__((vector_size(64)));

static inline v16 v16_load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// 16 bfloat16 values (sppnet/bf16.h) widened to float32: exact (a shift into the upper half).
typedef unsigned short u16x16 __attribute__((vector_size(32)));
typedef unsigned int u32x16 __attribute__((vector_size(64)));
static inline v16 v16_load(const unsigned short* p) {
  u16x16 h;
  std::memcpy(&h, p, sizeof h);
  return (v16)(__builtin_convertvector(h, u32x16) << 16);  // a bit cast (vector extension), in registers
}
static inline void v16_store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
static inline v16 v16_splat(float a) { return v16{} + a; }
// ReLU that keeps NaN (PyTorch's relu propagates it; a plain max would not).
static inline float relu1(float v) { return v > 0.f ? v : (v != v ? v : 0.f); }

static inline float v16_sum(v16 v) {
  float s = 0.f;
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
}

// Uninitialised 64-byte aligned floats that grow on demand (packed GEMM panels, im2col).
class FloatBuffer {
 public:
  FloatBuffer() = default;
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  ~FloatBuffer() { std::free(p_); }
  // At least n floats; the contents are undefined after growth.
  float* get(size_t n) {
    if (n > cap_) {
      std::free(p_);
      p_ = static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64));
      if (!p_) {
        cap_ = 0;
        throw std::bad_alloc();
      }
      cap_ = n;
    }
    return p_;
  }

 private:
  float* p_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace cpu
}  // namespace sppnet
