// 16-float vectors through the GCC/Clang vector extension: one zmm with AVX-512, two ymm with
// AVX2, four xmm otherwise. Arithmetic only (+, -, *, /); comparisons go through intrinsics.
#pragma once
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <type_traits>
#include <vector>

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

// The mask of the first n of 16 lanes (all for n >= 16, none for n <= 0): a masked load or store
// of a row's last, partial vector.
static inline unsigned short first_lanes16(int64_t n) { return n >= 16 ? 0xffff : n <= 0 ? 0 : static_cast<unsigned short>((1u << n) - 1); }
// The mask of lanes [lo, hi) of 16 (lo, hi clamped to [0, 16]).
static inline unsigned short lanes16(int64_t lo, int64_t hi) { return static_cast<unsigned short>(first_lanes16(hi) & ~first_lanes16(lo)); }

// f(std::integral_constant<int, r>) for a run-time r in [1, R]: a tile's row or pixel count as a template argument.
template <int R, typename F>
__attribute__((always_inline)) inline void with_rows(int r, F&& f) {
  if constexpr (R > 1)
    if (r < R) return with_rows<R - 1>(r, f);
  f(std::integral_constant<int, R>{});
}

// Per-map tables shared by the maps of one key (a ragged batch of many maps of few sizes keeps
// few): append(i, data) appends map i's table to `data`, for the first map of each key only
// (key_of(i)); returns where each map's table starts in `data`.
template <typename T, typename KeyOf, typename Append>
std::vector<size_t> tables_by_key(int count, std::vector<T>& data, KeyOf key_of, Append append) {
  std::map<decltype(key_of(0)), size_t> at;
  std::vector<size_t> start(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const auto found = at.emplace(key_of(i), data.size());
    if (found.second) append(i, data);
    start[static_cast<size_t>(i)] = found.first->second;
  }
  return start;
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
