// Module entry: backend facts, device memory and transfers. Ops live in their own files.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "sppnet/cpu_info.h"
#include "sppnet/device.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace binding {

void init_spp(Napi::Env env, Napi::Object exports);
void init_layers(Napi::Env env, Napi::Object exports);
void init_grad(Napi::Env env, Napi::Object exports);
void init_host(Napi::Env env, Napi::Object exports);
void init_proposals(Napi::Env env, Napi::Object exports);

namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cuda::DeviceInfo d = cuda::query();
  Napi::Object c = Napi::Object::New(env);
  c.Set("built", d.built);
  c.Set("deviceCount", d.device_count);
  c.Set("runtimeVersion", d.runtime_version);
  c.Set("driverVersion", d.driver_version);
  c.Set("error", d.error);
  c.Set("name", d.name);
  c.Set("computeCapability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
  c.Set("multiprocessors", d.sm_count);
  c.Set("totalMemory", static_cast<double>(d.total_memory));
  c.Set("archs", d.archs);
  Napi::Object h = Napi::Object::New(env);
  h.Set("isa", cpu::isa());
  h.Set("threads", cpu::threads());
  h.Set("bf16", cpu::bf16_products());
  Napi::Object settings = Napi::Object::New(env);
  for (const auto& kv : cpu::settings_list()) settings.Set(kv.first, kv.second);
  h.Set("settings", settings);
  Napi::Object o = Napi::Object::New(env);
  o.Set("cuda", c);
  o.Set("cpu", h);
  return o;
}

// cpuPeak(threads, seconds, out: Float64Array(threads + 1)) -> Promise: the FMA throughput probe
// (cpu::fma_peak) on the libuv pool; out = [total GFLOP/s, each thread's]. For benchmarks.
Napi::Value CpuPeak(const Napi::CallbackInfo& info) {
  const int threads = info[0].As<Napi::Number>().Int32Value();
  const double seconds = info[1].As<Napi::Number>().DoubleValue();
  Napi::Float64Array out = info[2].As<Napi::Float64Array>();
  if (threads < 1 || out.ElementLength() != static_cast<size_t>(threads) + 1)
    throw Napi::RangeError::New(info.Env(), "internal: cpuPeak arguments");
  double* o = out.Data();
  auto task = [threads, seconds, o]() -> Status {
    const cpu::PeakProbe p = cpu::fma_peak(threads, seconds);
    o[0] = p.total_gflops;
    for (int i = 0; i < threads; ++i) o[i + 1] = p.per_thread[static_cast<size_t>(i)];
    return Status::Ok();
  };
  return queue(info.Env(), task, {out}, Runs::kHost);
}

// amxProductsGranted(): cpu::amx_products_granted (asks Linux for the tile state if not yet asked).
Napi::Value AmxProductsGranted(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), cpu::amx_products_granted()); }

// cancelQueued(): see Executor::cancel_queued (lib/core/native.ts calls it at process exit).
Napi::Value CancelQueued(const Napi::CallbackInfo& info) {
  info.Env().GetInstanceData<AddonData>()->cpu->cancel_queued();
  info.Env().GetInstanceData<AddonData>()->cuda->cancel_queued();
  return info.Env().Undefined();
}

// kernelTimes(): { [kernel]: [launches, GPU ms] } summed since the load, or null unless
// SPPNET_CUDA_KERNEL_TIMES=1 (for benchmarks: kernel time against the op's wall time).
Napi::Value KernelTimesFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* data = env.GetInstanceData<AddonData>();
  if (!data->kernel_times) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  std::lock_guard<std::mutex> lk(data->kernel_times->m);
  for (const auto& [name, e] : data->kernel_times->totals) {
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set(0u, Napi::Number::New(env, static_cast<double>(e.first)));
    a.Set(1u, Napi::Number::New(env, e.second));
    o.Set(name, a);
  }
  return o;
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* data = env.GetInstanceData<AddonData>();
  Napi::Object o = Napi::Object::New(env);
  o.Set("deviceBuffers", static_cast<double>(data->counters->device_buffers.load()));
  o.Set("deviceBytes", static_cast<double>(data->counters->device_bytes.load()));
  o.Set("opsInline", static_cast<double>(data->inline_state->ran));
  o.Set("opsQueued", static_cast<double>(data->inline_state->queued));
  o.Set("cpuOpNs", static_cast<double>(data->cpu->busy_ns.load() + data->inline_state->ran_ns));
  // Time on the CUDA executor: launches, the GPU's work and the stream sync of each task.
  o.Set("cudaOpNs", static_cast<double>(data->cuda->busy_ns.load()));
  double cached = 0, reused = 0;
  host_cache_stats(*data->host, &cached, &reused);
  o.Set("hostCacheBytes", cached);
  o.Set("hostCacheReused", reused);
  // Only once this instance has used the device: the queries would create a CUDA context.
  size_t free_b = 0, total_b = 0, reserved = 0, used = 0;
  if (data->pool_ready && cuda::memory_info(&free_b, &total_b).ok()) {
    o.Set("deviceFree", static_cast<double>(free_b));
    o.Set("deviceTotal", static_cast<double>(total_b));
  }
  if (data->pool_ready && cuda::pool_info(&reserved, &used).ok()) {
    o.Set("devicePoolReserved", static_cast<double>(reserved));
    o.Set("devicePoolUsed", static_cast<double>(used));
  }
  return o;
}

// trimDeviceMemory(): after a model freed its activation buffers, the device's memory pool gives
// what nothing uses back to the driver. Only once this instance has used the device (else it
// would create a CUDA context); a failure only leaves the memory in the pool, so it is ignored.
Napi::Value TrimDeviceMemory(const Napi::CallbackInfo& info) {
  if (info.Env().GetInstanceData<AddonData>()->pool_ready) (void)cuda::trim_pool();
  return info.Env().Undefined();
}

// float_arg over positional arguments: info[i] is the buffer `name`, info[i + 1] its offset when with_offset.
FloatArg float_at(const Napi::CallbackInfo& info, size_t i, bool with_offset, const char* name, int64_t needed) {
  Napi::Object a = Napi::Object::New(info.Env());
  a.Set(name, info[i]);
  if (with_offset) a.Set(std::string(name) + "Offset", info[i + 1]);
  return float_arg(a, name, needed);
}

// cudaUpload(buffer, offset, Float32Array): synchronous host -> device copy.
Napi::Value CudaUpload(const Napi::CallbackInfo& info) {
  const auto src = info[2].As<Napi::Float32Array>();
  FloatArg d = float_at(info, 0, true, "dst", static_cast<int64_t>(src.ElementLength()));
  throw_if(info.Env(), cuda::copy_h2d(d.ptr, src.Data(), src.ElementLength() * sizeof(float)));
  return info.Env().Undefined();
}

// copy(dst, dstOffset, src, srcOffset, n) -> Promise: n floats from src to dst (each a
// Float32Array or a DeviceBuffer) as an op: after the ops called before it on the device
// (Executor; CUDA when either is device memory). Host to host, with no host task in flight, it
// runs at once on the JS thread as a slice() would (unless SPPNET_INLINE_WORK=0), and is not
// counted as an op (memoryStats' opsInline / opsQueued count the others).
Napi::Value Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t n = info[4].As<Napi::Number>().Int64Value();
  FloatArg d = float_at(info, 0, true, "dst", n), s = float_at(info, 2, true, "src", n);
  const bool device = d.device || s.device;
  auto task = [s, d, n]() -> Status {
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    if (d.device && s.device) return cuda::copy_d2d(d.ptr, s.ptr, bytes);
    if (d.device) return cuda::copy_h2d(d.ptr, s.ptr, bytes);
    if (s.device) return cuda::copy_d2h(d.ptr, s.ptr, bytes);
    if (n > 0) std::memmove(d.ptr, s.ptr, bytes);
    return Status::Ok();
  };
  if (!device && may_run_inline(*env.GetInstanceData<AddonData>())) return settled(env, task());
  return queue(env, task, {info[0], info[2]}, runs_on(device));
}

// cudaCopy(dst, dstOffset, src, srcOffset, n): synchronous device -> device copy.
Napi::Value CudaCopy(const Napi::CallbackInfo& info) {
  const int64_t n = info[4].As<Napi::Number>().Int64Value();
  FloatArg d = float_at(info, 0, true, "dst", n), s = float_at(info, 2, true, "src", n);
  throw_if(info.Env(), cuda::copy_d2d(d.ptr, s.ptr, static_cast<size_t>(n) * sizeof(float)));
  return info.Env().Undefined();
}

// addon.enums: the C++ enums' values by name, frozen, for lib/ to read instead of copying them:
// { binRule: { adaptive, paper, caffe }, binCheck: { ok, badArgs, zeroStride, empty, countMismatch },
//   poolKind: { max, avg }, convMath: { tf32, bf16, fp32, direct }, cropAlign: { pixels, corners }, maxLevels, hostHugeAtLeast, hostAllocMax,
//   bf16ProductRows: { fp32Weights, bf16Weights } }.
Napi::Object Enums(Napi::Env env) {
  struct Entry {
    const char* name;
    int32_t value;
  };
  const auto table = [&](std::initializer_list<Entry> entries) {
    Napi::Object o = Napi::Object::New(env);
    for (const Entry& e : entries) o.Set(e.name, Napi::Number::New(env, e.value));
    o.Freeze();
    return o;
  };
  Napi::Object enums = Napi::Object::New(env);
  enums.Set("binRule", table({{"adaptive", kBinsAdaptive}, {"paper", kBinsPaper}, {"caffe", kBinsCaffe}}));
  enums.Set("binCheck", table({{"ok", kBinsOk}, {"badArgs", kBinsBadArgs}, {"zeroStride", kBinsZeroStride}, {"empty", kBinsEmpty},
                               {"countMismatch", kBinsCountMismatch}}));
  enums.Set("poolKind", table({{"max", kPoolMax}, {"avg", kPoolAvg}}));
  enums.Set("convMath", table({{"tf32", kMathTf32}, {"bf16", kMathBf16}, {"fp32", kMathFp32}, {"direct", kMathDirect}}));
  enums.Set("cropAlign", table({{"pixels", kCropPixels}, {"corners", kCropCorners}}));
  enums.Set("maxLevels", Napi::Number::New(env, kMaxLevels));
  enums.Set("hostHugeAtLeast", Napi::Number::New(env, static_cast<double>(kHostHugeAtLeast)));
  enums.Set("hostAllocMax", Napi::Number::New(env, static_cast<double>(kHostAllocMax)));
  enums.Set("bf16ProductRows", table({{"fp32Weights", static_cast<int32_t>(kBf16ProductRows)}, {"bf16Weights", static_cast<int32_t>(kBf16ProductRowsPacked)}}));
  enums.Freeze();
  return enums;
}

// One variable of this instance's process.env (a worker's is its own copy), read through Node,
// which takes its lock on the environment (a getenv here could race a process.env write on
// another JS thread): true and its value when it is set.
bool env_var(Napi::Env env, const char* name, std::string* value) {
  const Napi::Value v = env.Global().Get("process").As<Napi::Object>().Get("env").As<Napi::Object>().Get(name);
  if (!v.IsString()) return false;
  *value = v.As<Napi::String>().Utf8Value();
  return true;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // The CPU kernels' settings, fixed by the first instance to load (cpu/settings.h); the ones
  // below are each instance's, read at its load. Nothing reads the environment after this.
  cpu::load_settings([env](const char* name, std::string* value) { return env_var(env, name, value); });
  auto* data = new AddonData();
  std::string v;
  data->host = make_host_cache(env_var(env, "SPPNET_HOST_CACHE_MB", &v) ? &v : nullptr);
  if (env_var(env, "SPPNET_CPU_EXECUTOR", &v)) data->use_executor = v != "0";
  if (env_var(env, "SPPNET_INLINE_WORK", &v)) data->inline_limit = std::max<int64_t>(0, std::atoll(v.c_str()));
  data->cpu = std::make_shared<Executor>(env_var(env, "SPPNET_CPU_NICE", &v) ? std::atoi(v.c_str()) : 10);
  if (env_var(env, "SPPNET_CUDA_KERNEL_TIMES", &v) && v == "1") data->kernel_times = std::make_shared<cuda::KernelTimes>();
  Napi::Function ctor = DeviceBuffer::Define(env);
  data->device_buffer = Napi::Persistent(ctor);
  env.SetInstanceData<AddonData>(data);
  // At the environment's teardown, ops still queued are not run (see cancel_queued).
  using Executors = std::pair<std::shared_ptr<Executor>, std::shared_ptr<Executor>>;
  napi_add_env_cleanup_hook(
      env,
      [](void* arg) {
        auto* both = static_cast<Executors*>(arg);
        both->first->cancel_queued();
        both->second->cancel_queued();
        delete both;
      },
      new Executors(data->cpu, data->cuda));
  exports.Set("DeviceBuffer", ctor);
  export_functions(env, exports, {{"info", Info}, {"cpuPeak", CpuPeak}, {"amxProductsGranted", AmxProductsGranted}, {"memoryStats", MemoryStats}, {"kernelTimes", KernelTimesFn},
                                   {"trimDeviceMemory", TrimDeviceMemory}, {"cudaUpload", CudaUpload},
                                   {"cudaCopy", CudaCopy}, {"copy", Copy}, {"runSequence", RunSequence}, {"compileSequence", CompileSequence}, {"planTimes", PlanTimes}, {"releasePlan", ReleasePlan},
                                   {"cancelQueued", CancelQueued}});
  exports.Set("enums", Enums(env));
  init_spp(env, exports);
  init_layers(env, exports);
  init_grad(env, exports);
  init_host(env, exports);
  init_proposals(env, exports);
  return exports;
}

}  // namespace
}  // namespace binding
}  // namespace sppnet

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return sppnet::binding::Init(env, exports); }
NODE_API_MODULE(sppnet, InitAddon)
