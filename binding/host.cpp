// Host memory work: packing maps into a ragged batch and turning decoded 8-bit pixels into
// normalised planar floats, both on a libuv thread (Runs::kHost), not on the CPU executor, so they
// never wait behind a layer that is running; and host buffers freed when their owner says so.
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "common.h"

namespace sppnet {
namespace binding {

namespace {

// gatherFloats({ output: Float32Array, inputs: Float32Array[], offsets: Float64Array }) -> Promise:
// copies inputs[i] whole to output at element offsets[i].
Napi::Value GatherFloats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object a = info[0].As<Napi::Object>();
  Napi::Float32Array out = typed_array<float>(env, a.Get("output"), napi_float32_array, "gatherFloats: output", "a Float32Array");
  const Napi::Array inputs = a.Get("inputs").As<Napi::Array>();
  const Napi::Float64Array offsets = float64_array(a, "offsets");
  const uint32_t n = inputs.Length();
  if (offsets.ElementLength() != n) throw Napi::RangeError::New(env, "internal: gatherFloats: one offset per input");
  struct Piece {
    const float* src;
    size_t count;
    size_t at;
  };
  auto pieces = std::make_shared<std::vector<Piece>>();
  std::vector<Napi::Value> keep{out};
  const size_t total = out.ElementLength();
  for (uint32_t i = 0; i < n; ++i) {
    const Napi::Float32Array in = typed_array<float>(env, inputs.Get(i), napi_float32_array, "gatherFloats: inputs[" + std::to_string(i) + "]", "a Float32Array");
    const double at = offsets[i];
    if (!(at >= 0) || at + static_cast<double>(in.ElementLength()) > static_cast<double>(total))
      throw Napi::RangeError::New(env, "internal: gatherFloats: input " + std::to_string(i) + " does not fit the output");
    pieces->push_back({in.Data(), in.ElementLength(), static_cast<size_t>(at)});
    keep.push_back(in);
  }
  float* dst = out.Data();
  auto task = [pieces, dst]() -> Status {
    for (const Piece& p : *pieces) std::memcpy(dst + p.at, p.src, p.count * sizeof(float));
    return Status::Ok();
  };
  return queue(env, task, keep, Runs::kHost);
}

// pixelsToPlanar({ input: Uint8Array (H x W x C, interleaved), height, width, channels,
//                  scale: Float32Array(C), bias: Float32Array(C), output: Float32Array }) -> Promise:
// output[c][y][x] = input[y][x][c] * scale[c] + bias[c].
Napi::Value PixelsToPlanar(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object a = info[0].As<Napi::Object>();
  const Napi::Uint8Array in = typed_array<uint8_t>(env, a.Get("input"), napi_uint8_array, "pixelsToPlanar: input", "a Uint8Array");
  const int64_t h = int_field(a, "height"), w = int_field(a, "width"), c = int_field(a, "channels");
  if (h < 1 || w < 1 || c < 1 || c > 4) throw Napi::RangeError::New(env, "internal: pixelsToPlanar: bad size");
  const int64_t plane = h * w;
  if (static_cast<int64_t>(in.ElementLength()) < plane * c) throw Napi::RangeError::New(env, "internal: pixelsToPlanar: input too short");
  FloatArg out = float_arg(a, "output", plane * c);
  FloatArg scale = float_arg(a, "scale", c), bias = float_arg(a, "bias", c);
  if (out.device || scale.device || bias.device) throw Napi::TypeError::New(env, "internal: pixelsToPlanar: host arrays only");
  auto sb = std::make_shared<std::vector<float>>(scale.ptr, scale.ptr + c);
  sb->insert(sb->end(), bias.ptr, bias.ptr + c);
  const uint8_t* src = in.Data();
  float* dst = out.ptr;
  auto task = [src, dst, plane, c, sb]() -> Status {
    for (int64_t k = 0; k < c; ++k) {
      const float s = (*sb)[k], b = (*sb)[c + k];
      float* o = dst + k * plane;
      const uint8_t* p = src + k;
      for (int64_t i = 0; i < plane; ++i) o[i] = static_cast<float>(p[i * c]) * s + b;
    }
    return Status::Ok();
  };
  return queue(env, task, {in, out.value}, Runs::kHost);
}

// Host buffers the caller frees when it chooses (a model's activation buffers), not when the GC
// gets to them: a JS Float32Array's memory goes back only after a collection, and then often stays
// in the C library's heap, so a server's memory stayed at its peak after a burst.
//
// hostAlloc(bytes) -> ArrayBuffer: zeroed memory from mmap (1 MiB and up: returned to the system
// when freed) or calloc. hostFree(arrayBuffer): detaches it, which releases the memory at once
// (the ArrayBuffer's finaliser frees it; one a program drops without hostFree is freed when it is
// collected). A view of a detached buffer has length 0, and ops refuse it (SPPNET_DISPOSED).
// trimHostMemory() -> Promise: hands the C library's free heap memory back to the system
// (glibc's malloc_trim; nothing elsewhere), on a libuv thread.
constexpr size_t kMapAtLeast = size_t{1} << 20;

struct HostBlock {
  void* data;
  size_t bytes;
  bool mapped;
};

void free_block(Napi::Env, void*, HostBlock* b) {
  if (b->mapped)
    munmap(b->data, b->bytes);
  else
    std::free(b->data);
  delete b;
}

// From 1.33 MiB on: mapped on a 2 MiB boundary and marked for transparent huge pages, so that the
// first touch of each 2 MiB faults once instead of 512 times (on this VM a 4 KiB fault costs
// ~15 us: 13 ms for a fresh 3.3 MB buffer, 0.4 ms with huge pages). The length is rounded up to
// whole huge pages where that adds at most half (the price: up to that much more resident memory,
// as a huge page is resident as a whole), else to 4 KiB pages (the tail past the last whole huge
// page then faults page by page). Where the kernel gives none (THP off), plain pages,
// as before. *mapped: the length to munmap.
void* map_huge(size_t bytes, size_t* mapped) {
  const size_t whole = (bytes + kHostHuge - 1) / kHostHuge * kHostHuge, pages = (bytes + 4095) / 4096 * 4096;
  const size_t len = whole - bytes <= bytes / 2 ? whole : pages;
  void* raw = mmap(nullptr, len + kHostHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw), aligned = (start + kHostHuge - 1) / kHostHuge * kHostHuge;
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + len + kHostHuge;
  if (end > aligned + len) munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
#ifdef MADV_HUGEPAGE
  madvise(reinterpret_cast<void*>(aligned), len, MADV_HUGEPAGE);
#endif
  *mapped = len;
  return reinterpret_cast<void*>(aligned);
}

Napi::Value HostAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double want = info[0].As<Napi::Number>().DoubleValue();
  if (!(want >= 1) || want > 1e15) throw Napi::RangeError::New(env, "internal: hostAlloc: bad size");
  const size_t bytes = static_cast<size_t>(want);
  void* data = nullptr;
  bool mapped = false;
  size_t mapped_bytes = bytes;
  if (bytes >= kHostHugeAtLeast) {
    data = map_huge(bytes, &mapped_bytes);
    mapped = data != nullptr;
  } else if (bytes >= kMapAtLeast) {
    data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED) data = nullptr;
    mapped = data != nullptr;
  } else {
    data = std::calloc(1, bytes);
  }
  if (data == nullptr) {
    Napi::Error e = Napi::Error::New(env, "out of host memory: " + std::to_string(bytes) + " bytes");
    e.Set("code", Napi::String::New(env, code_name(Code::kOutOfMemory)));
    throw e;
  }
  auto* block = new HostBlock{data, mapped ? mapped_bytes : bytes, mapped};
  return Napi::ArrayBuffer::New(env, data, bytes, free_block, block);
}

Napi::Value HostFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "internal: hostFree: not an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (!ab.IsDetached()) ab.Detach();
  return env.Undefined();
}

Napi::Value TrimHostMemory(const Napi::CallbackInfo& info) {
  auto task = []() -> Status {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    return Status::Ok();
  };
  return queue(info.Env(), task, {}, Runs::kHost);
}

}  // namespace

void init_host(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports, {{"hostAlloc", HostAlloc}, {"hostFree", HostFree}, {"trimHostMemory", TrimHostMemory},
                                   {"gatherFloats", GatherFloats}, {"pixelsToPlanar", PixelsToPlanar}});
}

}  // namespace binding
}  // namespace sppnet
