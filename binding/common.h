// Helpers shared by the binding's entry points: per-instance state, device buffers, argument
// unpacking and the promise-returning worker. The only code besides binding/*.cpp that sees napi.h.
#pragma once
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sppnet/status.h"
#include "sppnet/tensor.h"

namespace sppnet {
namespace binding {

// Live device allocations, for leak tests. Shared with every DeviceMem, which may die on a
// worker thread after the JS object that made it.
struct Counters {
  std::atomic<int64_t> device_buffers{0};
  std::atomic<int64_t> device_bytes{0};
};

// One cudaMalloc'd block. Freed when the last holder (a JS DeviceBuffer or an in-flight
// operation) lets go, so dispose() during an operation is safe.
struct DeviceMem {
  void* ptr = nullptr;
  size_t bytes = 0;
  std::shared_ptr<Counters> counters;
  ~DeviceMem();
};

struct AddonData {
  Napi::FunctionReference device_buffer;
  std::shared_ptr<Counters> counters = std::make_shared<Counters>();
};

class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit DeviceBuffer(const Napi::CallbackInfo& info);
  std::shared_ptr<DeviceMem> mem() const { return mem_; }
  size_t length() const { return length_; }

 private:
  Napi::Value Free(const Napi::CallbackInfo& info);
  Napi::Value Length(const Napi::CallbackInfo& info);
  Napi::Value Freed(const Napi::CallbackInfo& info);
  std::shared_ptr<DeviceMem> mem_;
  size_t length_ = 0;  // floats
};

// A float buffer argument: a Float32Array (host) or a DeviceBuffer (device), plus an element offset.
struct FloatArg {
  float* ptr = nullptr;
  bool device = false;
  std::shared_ptr<DeviceMem> hold;  // keeps device memory alive while a task runs
  Napi::Value value;                // keeps host memory alive (held by the worker)
};
// Unpacks obj[name] and obj[name + "Offset"], checking that `needed` floats fit. Throws a JS error.
FloatArg float_arg(const Napi::Object& obj, const char* name, int64_t needed);

Napi::Int32Array int32_array(const Napi::Object& obj, const char* name);
Napi::Float64Array float64_array(const Napi::Object& obj, const char* name);
int32_t int_field(const Napi::Object& obj, const char* name);

// A ragged layout from obj[prefix + "Offsets" | "Heights" | "Widths"] and obj[prefix + "Channels"].
// `view` points into the vectors: move a RaggedLayout, never copy it.
struct RaggedLayout {
  std::vector<int64_t> off;
  std::vector<int32_t> h, w;
  RaggedView view;
  int64_t end = 0;  // one past the last element any map uses
};
RaggedLayout ragged_layout(const Napi::Object& a, const std::string& prefix);

// Runs `task` on the libuv pool and settles a promise with its Status. Holds `keep` (JS values
// whose memory the task uses) until it settles.
class TaskWorker : public Napi::AsyncWorker {
 public:
  TaskWorker(Napi::Env env, std::function<Status()> task, const std::vector<Napi::Value>& keep);
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  std::function<Status()> task_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
  Code code_ = Code::kOk;
};

// Queues a task and returns its promise.
Napi::Value queue(Napi::Env env, std::function<Status()> task, const std::vector<Napi::Value>& keep);
// Throws a JS Error for a non-OK status (synchronous entry points).
void throw_if(Napi::Env env, const Status& s);
const char* code_name(Code c);

}  // namespace binding
}  // namespace sppnet
