// Host memory work: packing maps into a ragged batch and turning decoded 8-bit pixels into
// normalised planar floats, both on a libuv thread (Runs::kHost), not on the CPU executor, so they
// never wait behind a layer that is running; and host buffers freed when their owner says so.
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <unordered_map>
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

// Host buffers from the addon (lib/ takes every host buffer of 1.33 MiB and more from here, and a
// model's activation buffers), given back when their owner says so, not when the GC gets to them:
// a JS Float32Array's memory goes back only after a collection, and then often stays in the C
// library's heap, so a server's memory stayed at its peak after a burst.
//
// hostAlloc(bytes, zero = true) -> ArrayBuffer: memory from this instance's cache of given-back
// blocks (zeroed again, unless zero is false: for an op that writes every element) or new, zero:
// mmap (1 MiB and up) or calloc.
// hostRecycle(arrayBuffer) (Tensor.dispose() of an op's output): detaches it, so no JS view reads
//   it again, and keeps its memory for the next hostAlloc of about its size (the cache), once no
//   queued task uses it: the next output of that size is memory already faulted in, where a new
//   mapping pays a fault and the kernel's zeroing per page (W2's 3.3 MB output: most of an SPP
//   call's time). At most SPPNET_HOST_CACHE_MB (default kHostCacheMb) are kept; beyond that,
//   and for blocks under 1 MiB, the memory goes back to the system.
// hostFree(arrayBuffer) (a model's activation buffers, released): detaches it; its memory goes
//   back to the system at once (once no task uses it).
// An ArrayBuffer the GC collects gives its memory to the cache too.
// trimHostMemory() -> Promise: empties the cache and hands the C library's free heap memory back
// to the system (glibc's malloc_trim; nothing elsewhere), on a libuv thread.
//
// Tasks count the blocks they use (TaskWorker: host_block_acquire / host_block_done), so a block
// given back while an op reads or writes it stays where it is until the op is over.
constexpr size_t kMapAtLeast = size_t{1} << 20;
constexpr size_t kHostCacheMb = 256;

void unmap_or_free(void* data, size_t bytes, bool mapped) {
  if (mapped)
    munmap(data, bytes);
  else
    std::free(data);
}

}  // namespace

struct HostCache {
  std::unordered_map<const void*, HostBlock*> live;  // blocks whose ArrayBuffer is attached, by address
  std::multimap<size_t, void*> free;                 // mapped length -> a given-back block
  size_t free_bytes = 0, limit = kHostCacheMb << 20;
  int64_t reused = 0;  // hostAlloc calls served from the cache
  ~HostCache() {
    for (const auto& f : free) munmap(f.second, f.first);
  }
  // A given-back block's memory: kept (mapped blocks, while under the limit) or returned.
  void give(HostBlock* b, bool keep) {
    if (!b->data) return;
    if (keep && b->mapped && free_bytes + b->bytes <= limit) {
      free.emplace(b->bytes, b->data);
      free_bytes += b->bytes;
    } else {
      unmap_or_free(b->data, b->bytes, b->mapped);
    }
    b->data = nullptr;
  }
  // A kept block of `len` to `len` + 1/4 bytes (the smallest), or null.
  void* take(size_t len, size_t* got) {
    auto it = free.lower_bound(len);
    if (it == free.end() || it->first > len + len / 4) return nullptr;
    void* d = it->second;
    *got = it->first;
    free_bytes -= it->first;
    free.erase(it);
    ++reused;
    return d;
  }
  std::vector<std::pair<void*, size_t>> drain() {
    std::vector<std::pair<void*, size_t>> out;
    for (const auto& f : free) out.emplace_back(f.second, f.first);
    free.clear();
    free_bytes = 0;
    return out;
  }
};

std::shared_ptr<HostCache> make_host_cache(const std::string* limit_mb) {
  auto c = std::make_shared<HostCache>();
  if (limit_mb) c->limit = static_cast<size_t>(std::min(std::max(0LL, std::atoll(limit_mb->c_str())), 1LL << 30)) << 20;
  return c;
}

void host_cache_stats(const HostCache& c, double* bytes, double* reused) {
  *bytes = static_cast<double>(c.free_bytes);
  *reused = static_cast<double>(c.reused);
}

HostBlock* host_block_acquire(Napi::Env env, const Napi::Value& v) {
  // The start of the buffer under v, from the view's own pointer and offset: the view may be over
  // a SharedArrayBuffer, which napi_get_arraybuffer_info refuses (and hostAlloc never makes).
  void* data = nullptr;
  if (v.IsTypedArray()) {
    void* at = nullptr;
    size_t offset = 0;
    if (napi_get_typedarray_info(env, v, nullptr, nullptr, &at, nullptr, &offset) != napi_ok || at == nullptr) return nullptr;
    data = static_cast<char*>(at) - offset;
  } else if (v.IsArrayBuffer()) {
    data = v.As<Napi::ArrayBuffer>().Data();
  }
  if (!data) return nullptr;
  HostCache& c = *env.GetInstanceData<AddonData>()->host;
  const auto it = c.live.find(data);
  if (it == c.live.end()) return nullptr;
  ++it->second->inflight;
  return it->second;
}

void host_block_done(HostBlock* b) {
  if (--b->inflight > 0) return;
  if (b->back != HostBlock::Back::kNo || b->finalized) b->cache->give(b, b->back != HostBlock::Back::kSystem);
  if (b->finalized) delete b;
}

namespace {

// The ArrayBuffer is gone (collected, or detached by hostRecycle / hostFree): the memory goes
// back unless a task still uses it (host_block_done does it then).
void finalize_block(Napi::Env, void*, HostBlock* b) {
  b->finalized = true;
  if (b->data) {  // collected without being given back: its entry may still be in `live`
    const auto it = b->cache->live.find(b->data);
    if (it != b->cache->live.end() && it->second == b) b->cache->live.erase(it);
  }
  if (b->inflight > 0) return;
  b->cache->give(b, b->back != HostBlock::Back::kSystem);
  delete b;
}

// The length a mapping of `bytes` takes: from 1.33 MiB on, mapped on a 2 MiB boundary and marked
// for transparent huge pages, so that the first touch of each 2 MiB faults once instead of 512
// times (on this VM a 4 KiB fault costs ~15 us: 13 ms for a fresh 3.3 MB buffer, 0.4 ms with huge
// pages). The length is rounded up to whole huge pages where that adds at most half (the price:
// up to that much more resident memory, as a huge page is resident as a whole), else to 4 KiB
// pages (the tail past the last whole huge page then faults page by page).
size_t mapped_length(size_t bytes) {
  const size_t pages = (bytes + 4095) / 4096 * 4096, whole = (bytes + kHostHuge - 1) / kHostHuge * kHostHuge;
  return bytes >= kHostHugeAtLeast && whole - bytes <= bytes / 2 ? whole : pages;
}

// A new mapping of `len` bytes (mapped_length) on a 2 MiB boundary, marked for huge pages; where
// the kernel gives none (THP off), plain pages, as before.
void* map_huge(size_t len) {
  void* raw = mmap(nullptr, len + kHostHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw), aligned = (start + kHostHuge - 1) / kHostHuge * kHostHuge;
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + len + kHostHuge;
  if (end > aligned + len) munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
#ifdef MADV_HUGEPAGE
  madvise(reinterpret_cast<void*>(aligned), len, MADV_HUGEPAGE);
#endif
  return reinterpret_cast<void*>(aligned);
}

Napi::Value HostAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double want = info[0].As<Napi::Number>().DoubleValue();
  if (!(want >= 1) || want > 1e15) throw Napi::RangeError::New(env, "internal: hostAlloc: bad size");
  const size_t bytes = static_cast<size_t>(want);
  if (bytes > kHostAllocMax) throw Napi::RangeError::New(env, "internal: hostAlloc: over " + std::to_string(kHostAllocMax) + " bytes");
  const bool zero = info.Length() < 2 || !info[1].IsBoolean() || info[1].As<Napi::Boolean>().Value();
  const std::shared_ptr<HostCache>& cache = env.GetInstanceData<AddonData>()->host;
  void* data = nullptr;
  bool mapped = false;
  size_t len = bytes;
  if (bytes >= kMapAtLeast) {
    len = mapped_length(bytes);
    size_t got = 0;
    data = cache->take(len, &got);
    if (data) {
      if (zero) std::memset(data, 0, bytes);  // another tensor's data: zeroed, as new memory is
      len = got;
    } else if (bytes >= kHostHugeAtLeast) {
      data = map_huge(len);
    } else {
      data = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (data == MAP_FAILED) data = nullptr;
    }
    mapped = data != nullptr;
  } else {
    data = std::calloc(1, bytes);
  }
  if (data == nullptr) {
    Napi::Error e = Napi::Error::New(env, "out of host memory: " + std::to_string(bytes) + " bytes");
    e.Set("code", Napi::String::New(env, code_name(Code::kOutOfMemory)));
    throw e;
  }
  auto* block = new HostBlock();
  block->data = data, block->bytes = len, block->mapped = mapped, block->cache = cache;
  cache->live[data] = block;
  return Napi::ArrayBuffer::New(env, data, bytes, finalize_block, block);
}

// hostRecycle(buffer) / hostFree(buffer): see above. An ArrayBuffer that is not hostAlloc's is
// left alone (false); a detached one too.
Napi::Value GiveBack(const Napi::CallbackInfo& info, bool recycle) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "internal: hostRecycle/hostFree: not an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return Napi::Boolean::New(env, false);
  HostCache& c = *env.GetInstanceData<AddonData>()->host;
  const auto it = c.live.find(ab.Data());
  if (it == c.live.end()) return Napi::Boolean::New(env, false);
  HostBlock* b = it->second;
  c.live.erase(it);
  b->back = recycle ? HostBlock::Back::kCache : HostBlock::Back::kSystem;
  ab.Detach();  // its finaliser runs later (a setImmediate of Node's): the memory goes now
  if (b->inflight == 0) c.give(b, recycle);
  return Napi::Boolean::New(env, true);
}
Napi::Value HostRecycle(const Napi::CallbackInfo& info) { return GiveBack(info, true); }
Napi::Value HostFree(const Napi::CallbackInfo& info) { return GiveBack(info, false); }

Napi::Value TrimHostMemory(const Napi::CallbackInfo& info) {
  auto kept = std::make_shared<std::vector<std::pair<void*, size_t>>>(info.Env().GetInstanceData<AddonData>()->host->drain());
  auto task = [kept]() -> Status {
    for (const auto& k : *kept) munmap(k.first, k.second);
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    return Status::Ok();
  };
  return queue(info.Env(), task, {}, Runs::kHost);
}

}  // namespace

void init_host(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports, {{"hostAlloc", HostAlloc}, {"hostFree", HostFree}, {"hostRecycle", HostRecycle}, {"trimHostMemory", TrimHostMemory},
                                   {"gatherFloats", GatherFloats}, {"pixelsToPlanar", PixelsToPlanar}});
}

}  // namespace binding
}  // namespace sppnet
