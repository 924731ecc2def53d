#include "common.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "sppnet/cpu_info.h"
#include "sppnet/device.h"

namespace sppnet {
namespace binding {

DeviceMem::~DeviceMem() {
  cuda::free_device(ptr);
  if (counters) {
    counters->device_buffers -= 1;
    counters->device_bytes -= static_cast<int64_t>(bytes);
  }
}

const char* code_name(Code c) {
  switch (c) {
    case Code::kInvalidArgument: return "SPPNET_INVALID_ARGUMENT";
    case Code::kOutOfMemory: return "SPPNET_OUT_OF_MEMORY";
    case Code::kCudaError: return "SPPNET_CUDA_ERROR";
    case Code::kUnavailable: return "SPPNET_UNAVAILABLE";
    default: return "SPPNET_INTERNAL";
  }
}

void throw_if(Napi::Env env, const Status& s) {
  if (s.ok()) return;
  Napi::Error e = Napi::Error::New(env, s.message);
  e.Set("code", Napi::String::New(env, code_name(s.code)));
  throw e;
}

// ---- DeviceBuffer: new DeviceBuffer(lengthInFloats) ----

Napi::Function DeviceBuffer::Define(Napi::Env env) {
  return DefineClass(env, "DeviceBuffer",
                     {InstanceMethod("free", &DeviceBuffer::Free), InstanceAccessor("length", &DeviceBuffer::Length, nullptr),
                      InstanceAccessor("freed", &DeviceBuffer::Freed, nullptr)});
}

DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "DeviceBuffer(length): length must be a number");
  const double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 0) || n > 9.0e15) throw Napi::RangeError::New(env, "DeviceBuffer(length): bad length");
  length_ = static_cast<size_t>(n);
  AddonData* data = env.GetInstanceData<AddonData>();
  if (!data->pool_ready) {
    throw_if(env, cuda::keep_pool_memory());
    data->pool_ready = true;
    size_t free_b = 0, total_b = 0;
    if (cuda::memory_info(&free_b, &total_b).ok() && total_b > 0)
      data->external->slack = std::min<int64_t>(data->external->slack, static_cast<int64_t>(total_b / 32));
  }
  auto mem = std::make_shared<DeviceMem>();
  mem->bytes = length_ * sizeof(float);
  throw_if(env, cuda::malloc_device(mem->bytes, &mem->ptr));
  mem->counters = data->counters;
  mem->counters->device_buffers += 1;
  mem->counters->device_bytes += static_cast<int64_t>(mem->bytes);
  mem_ = std::move(mem);
  external_ = data->external;
  held_ = static_cast<int64_t>(mem_->bytes);
  external_->add(env, held_);
}

// napi_adjust_external_memory directly: Napi::MemoryManagement aborts the process if it fails.
// A failed adjustment is only a missed hint to the GC, so its status is ignored (and tried again
// at the next change).
void ExternalReport::add(Napi::BasicEnv env, int64_t bytes) {
  held += bytes;
  int64_t target = reported;
  if (held > reported + slack) target = held;
  else if (held + 2 * slack < reported) target = held + slack;
  int64_t total = 0;
  if (target != reported && napi_adjust_external_memory(env, target - reported, &total) == napi_ok) reported = target;
}

void DeviceBuffer::release(Napi::BasicEnv env) {
  if (held_ && external_) external_->add(env, -held_);
  held_ = 0;
}

Napi::Value DeviceBuffer::Free(const Napi::CallbackInfo& info) {
  release(info.Env());
  mem_.reset();
  return info.Env().Undefined();
}

// At GC or at the instance's teardown (a worker's terminate() included), on its JS thread.
void DeviceBuffer::Finalize(Napi::BasicEnv env) { release(env); }

Napi::Value DeviceBuffer::Length(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(length_)); }
Napi::Value DeviceBuffer::Freed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !mem_); }

// ---- argument unpacking ----

double number(const Napi::Object& obj, const char* name) {
  const Napi::Value v = obj.Get(name);
  if (!v.IsNumber()) throw Napi::TypeError::New(obj.Env(), std::string("internal: field '") + name + "' must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int32_t int_field(const Napi::Object& obj, const char* name) {
  Napi::Value v = obj.Get(name);
  if (!v.IsNumber()) throw Napi::TypeError::New(obj.Env(), std::string("internal: field '") + name + "' must be a number");
  return v.As<Napi::Number>().Int32Value();
}

float float_field(const Napi::Object& obj, const char* name) { return static_cast<float>(number(obj, name)); }

void export_functions(Napi::Env env, Napi::Object exports, std::initializer_list<std::pair<const char*, EntryPoint>> entries) {
  for (const auto& e : entries) exports.Set(e.first, Napi::Function::New(env, e.second));
}

int64_t count(const Napi::Object& obj, const char* name) {
  const double v = number(obj, name);
  if (!(v >= 0) || v > 9.0e15) throw Napi::RangeError::New(obj.Env(), std::string("internal: bad count '") + name + "'");
  return static_cast<int64_t>(v);
}

bool has(const Napi::Object& obj, const char* name) {
  const Napi::Value v = obj.Get(name);
  return !v.IsUndefined() && !v.IsNull();
}

FloatArg Buffers::arg(const Napi::Object& obj, const char* name, int64_t needed) {
  FloatArg f = float_arg(obj, name, needed);
  keep.push_back(f.value);
  return f;
}

FloatArg Buffers::optional(const Napi::Object& obj, const char* name, int64_t needed) {
  return has(obj, name) ? arg(obj, name, needed) : FloatArg{};
}

bool one_device(const Napi::Env& env, const std::vector<const FloatArg*>& args, const char* what) {
  const bool d = args.front()->device;
  for (const FloatArg* a : args)
    if (!a->value.IsEmpty() && a->device != d) throw Napi::TypeError::New(env, std::string("internal: ") + what + " on different devices");
  return d;
}

const OpTable& backend(bool device) {
#define SPPNET_CPU_OP(R, name, params) &cpu::name,
#define SPPNET_CUDA_OP(R, name, params) &cuda::name,
  static const OpTable kCpu{SPPNET_OPS(SPPNET_CPU_OP)};
  static const OpTable kCuda{SPPNET_OPS(SPPNET_CUDA_OP)};
#undef SPPNET_CPU_OP
#undef SPPNET_CUDA_OP
  return device ? kCuda : kCpu;
}

// The named parameter objects lib/ sends (lib/core/native.ts: NativeConvParams, NativePoolParams).
static Napi::Object object_field(const Napi::Object& obj, const char* name) {
  Napi::Value v = obj.Get(name);
  if (!v.IsObject()) throw Napi::TypeError::New(obj.Env(), std::string("internal: field '") + name + "' must be an object");
  return v.As<Napi::Object>();
}

Conv2dParams conv_params(const Napi::Object& obj, bool with_math, const RaggedLayout* in, const RaggedLayout& out) {
  const Napi::Object c = object_field(obj, "conv");
  Conv2dParams p;
  p.in_channels = int_field(c, "inChannels"), p.out_channels = int_field(c, "outChannels");
  p.kernel_h = int_field(c, "kernelH"), p.kernel_w = int_field(c, "kernelW");
  p.stride_h = int_field(c, "strideH"), p.stride_w = int_field(c, "strideW");
  p.pad_h = int_field(c, "padH"), p.pad_w = int_field(c, "padW");
  p.dilation_h = int_field(c, "dilationH"), p.dilation_w = int_field(c, "dilationW");
  p.groups = int_field(c, "groups");
  if (with_math) {
    p.math = int_field(c, "math");
    p.relu = obj.Get("relu").ToBoolean();
  }
  if (p.kernel_h < 1 || p.kernel_w < 1 || p.stride_h < 1 || p.stride_w < 1 || p.pad_h < 0 || p.pad_w < 0 || p.dilation_h < 1 ||
      p.dilation_w < 1 || p.groups < 1)
    throw Napi::RangeError::New(obj.Env(), "internal: conv params");
  if (p.in_channels % p.groups || p.out_channels % p.groups || p.out_channels != out.view.channels ||
      (in && (p.in_channels != in->view.channels || in->view.count != out.view.count)))
    throw Napi::RangeError::New(obj.Env(), "internal: conv shapes");
  return p;
}

Pool2dParams pool_params(const Napi::Object& obj, const RaggedLayout& in, const RaggedLayout& out) {
  const Napi::Object w = object_field(obj, "pool");
  if (in.view.channels != out.view.channels || in.view.count != out.view.count) throw Napi::RangeError::New(obj.Env(), "internal: pool params");
  Pool2dParams p;
  p.kernel_h = int_field(w, "kernelH"), p.kernel_w = int_field(w, "kernelW");
  p.stride_h = int_field(w, "strideH"), p.stride_w = int_field(w, "strideW");
  p.pad_h = int_field(w, "padH"), p.pad_w = int_field(w, "padW");
  if (p.kernel_h < 1 || p.kernel_w < 1 || p.stride_h < 1 || p.stride_w < 1 || p.pad_h < 0 || p.pad_w < 0)
    throw Napi::RangeError::New(obj.Env(), "internal: pool params");
  return p;
}

LrnParams lrn_params(const Napi::Object& obj) {
  LrnParams p;
  p.size = int_field(obj, "size");
  p.alpha = float_field(obj, "alpha"), p.beta = float_field(obj, "beta"), p.k = float_field(obj, "k");
  p.within = obj.Get("within").ToBoolean() ? 1 : 0;
  if (p.size < 1 || (p.within && p.size % 2 == 0)) throw Napi::RangeError::New(obj.Env(), "internal: lrn size");
  return p;
}

Napi::Int32Array int32_array(const Napi::Object& obj, const char* name) {
  return typed_array<int32_t>(obj.Env(), obj.Get(name), napi_int32_array, std::string("field '") + name + "'", "an Int32Array");
}
Napi::Float64Array float64_array(const Napi::Object& obj, const char* name) {
  return typed_array<double>(obj.Env(), obj.Get(name), napi_float64_array, std::string("field '") + name + "'", "a Float64Array");
}

FloatArg float_arg(const Napi::Object& obj, const char* name, int64_t needed) {
  Napi::Env env = obj.Env();
  FloatArg a;
  a.value = obj.Get(name);
  const std::string off_name = std::string(name) + "Offset";
  const Napi::Value offv = obj.Get(off_name);
  const int64_t off = offv.IsNumber() ? offv.As<Napi::Number>().Int64Value() : 0;
  int64_t length = 0;
  if (a.value.IsTypedArray() && a.value.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    auto arr = a.value.As<Napi::Float32Array>();
    a.ptr = arr.Data();
    length = static_cast<int64_t>(arr.ElementLength());
    // Detached since lib/ checked it (between its check and this call): not an internal error.
    bool detached = false;
    if (off + needed > length && napi_is_detached_arraybuffer(env, arr.ArrayBuffer(), &detached) == napi_ok && detached) {
      Napi::Error e = Napi::Error::New(env, std::string("'") + name + "' lost its memory: its ArrayBuffer was detached");
      e.Set("code", Napi::String::New(env, "SPPNET_DISPOSED"));
      throw e;
    }
  } else if (a.value.IsObject() && a.value.As<Napi::Object>().InstanceOf(env.GetInstanceData<AddonData>()->device_buffer.Value())) {
    DeviceBuffer* b = DeviceBuffer::Unwrap(a.value.As<Napi::Object>());
    a.hold = b->mem();
    if (!a.hold) {
      Napi::Error e = Napi::Error::New(env, std::string("the storage of '") + name + "' was disposed");
      e.Set("code", Napi::String::New(env, "SPPNET_DISPOSED"));
      throw e;
    }
    a.ptr = static_cast<float*>(a.hold->ptr);
    a.device = true;
    length = static_cast<int64_t>(b->length());
  } else {
    throw Napi::TypeError::New(env, std::string("internal: '") + name + "' must be a Float32Array or a DeviceBuffer");
  }
  if (off < 0 || needed < 0 || off + needed > length)
    throw Napi::RangeError::New(env, std::string("internal: '") + name + "' holds " + std::to_string(length) + " floats, " +
                                         std::to_string(off + needed) + " needed");
  a.ptr += off;
  return a;
}

RaggedLayout ragged_layout(const Napi::Object& a, const std::string& prefix) {
  RaggedLayout l;
  const Napi::Float64Array off = float64_array(a, (prefix + "Offsets").c_str());
  const Napi::Int32Array hs = int32_array(a, (prefix + "Heights").c_str()), ws = int32_array(a, (prefix + "Widths").c_str());
  const size_t N = off.ElementLength();
  if (hs.ElementLength() != N || ws.ElementLength() != N) throw Napi::RangeError::New(a.Env(), "internal: inconsistent layout");
  l.off.assign(off.Data(), off.Data() + N);
  l.h.assign(hs.Data(), hs.Data() + N);
  l.w.assign(ws.Data(), ws.Data() + N);
  const int32_t C = int_field(a, (prefix + "Channels").c_str());
  for (size_t i = 0; i < N; ++i) {
    if (l.off[i] < 0 || l.h[i] < 1 || l.w[i] < 1 || C < 1) throw Napi::RangeError::New(a.Env(), "internal: bad layout");
    l.end = std::max(l.end, l.off[i] + int64_t{C} * l.h[i] * l.w[i]);
  }
  l.view = RaggedView{static_cast<int32_t>(N), C, l.off.data(), l.h.data(), l.w.data(), l.end};
  return l;
}

std::shared_ptr<LayerJob> layer_job(const Napi::Object& obj, bool with_out) {
  auto j = std::make_shared<LayerJob>();
  j->in = ragged_layout(obj, "in");
  if (with_out) j->out = ragged_layout(obj, "out");
  return j;
}

// ---- the executors ----

Executor::~Executor() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = true;
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Executor::post(const std::shared_ptr<Ticket>& t) {
  std::lock_guard<std::mutex> lk(m_);
  if (!thread_.joinable()) {
    try {
      thread_ = std::thread([this] { loop(); });
    } catch (const std::exception& e) {  // a limit on threads: this op fails, the next one tries again
      t->status = Status::Error(Code::kUnavailable, std::string("cannot start the executor thread: ") + e.what());
      t->done = true;
      return;
    }
  }
  queue_.push_back(t);
  work_.notify_one();
}

Status Executor::wait(Ticket& t) {
  std::unique_lock<std::mutex> lk(m_);
  done_.wait(lk, [&] { return t.done; });
  if (t.error) std::rethrow_exception(t.error);
  return t.status;
}

void Executor::cancel_queued() {
  std::lock_guard<std::mutex> lk(m_);
  for (const std::shared_ptr<Ticket>& t : queue_) {
    t->status = Status::Error(Code::kUnavailable, "not run: the environment that queued it is shutting down");
    t->done = true;
  }
  queue_.clear();
  done_.notify_all();
}

void Executor::withdraw(const std::shared_ptr<Ticket>& t) {
  std::unique_lock<std::mutex> lk(m_);
  for (auto it = queue_.begin(); it != queue_.end(); ++it)
    if (*it == t) {
      queue_.erase(it);
      return;
    }
  done_.wait(lk, [&] { return t->done; });
}

void Executor::loop() {
#ifdef __linux__
  // The layers run below the priority of the JS thread (nice SPPNET_CPU_NICE, default 10; the
  // pool's helper threads, started from this thread, inherit it): with every core busy computing,
  // the event loop, decoding and GC still get a core at once, so a server stays responsive while
  // a batch runs. Only the share under contention changes; an idle machine runs them as fast.
  if (nice_ > 0) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice_);
#endif
  std::unique_lock<std::mutex> lk(m_);
  for (;;) {
    work_.wait(lk, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left (a waiting caller holds the executor alive)
    std::shared_ptr<Ticket> it = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    const auto t0 = std::chrono::steady_clock::now();
    try {
      it->status = cpu::run_hot(it->f);
    } catch (...) {
      it->error = std::current_exception();
    }
    busy_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    lk.lock();
    it->done = true;
    it.reset();  // the poster's reference is the last: t.f is cleared on the JS thread
    done_.notify_all();
  }
}

// ---- promise worker ----

namespace {
// f's status, or an exception from it as one (nothing may be thrown across the thread boundary).
Status guarded(const std::function<Status()>& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::kOutOfMemory, "out of host memory");
  } catch (const std::exception& e) {
    return Status::Error(Code::kInternal, e.what());
  } catch (...) {
    return Status::Error(Code::kInternal, "an exception that is not a std::exception");
  }
}
}  // namespace

TaskWorker::TaskWorker(Napi::Env env, std::function<Status()> task, const std::vector<Napi::Value>& keep, Runs runs,
                       std::shared_ptr<Executor> executor, std::shared_ptr<InlineState> inline_state)
    : Napi::AsyncWorker(env, "sppnet"),
      task_(std::move(task)),
      deferred_(Napi::Promise::Deferred::New(env)),
      executor_(std::move(executor)),
      inline_(std::move(inline_state)),
      runs_(runs) {
  if (runs_ != Runs::kCuda) ++inline_->inflight_host;
  ++inline_->queued;
  for (const auto& v : keep) {
    if (!v.IsObject() && !v.IsExternal()) continue;  // an External: a compiled plan the task runs
    HostBlock* b = holds_.add(env, Napi::Persistent(v));
    // An addon block given back while this task runs is detached but stays alive (and is not
    // reused) until the task is over: not a lost buffer.
    host_bytes_.push_back(v.IsTypedArray() && !b ? v.As<Napi::TypedArray>().ByteLength() : 0);
  }
  // Posted now, with what it uses held: the executor runs it after the ops called before it,
  // whether or not a libuv thread has taken this worker yet.
  if (executor_) {
    ticket_ = std::make_shared<Executor::Ticket>();
    if (runs_ == Runs::kCuda)
      // A CUDA task may return (an error, an exception) with work still queued on the stream.
      // Nothing may settle, and no buffer it uses may be freed or reused (OnOK and OnError drop
      // the task's holds), before that work is done: the one place that guarantees it, on the
      // executor's thread, whose stream it is.
      ticket_->f = [task = std::move(task_), times = env.GetInstanceData<AddonData>()->kernel_times]() {
        if (times) cuda::begin_kernel_timing(times.get());
        const Status s = guarded(task);
        const Status sync = cuda::synchronize();
        if (times) cuda::end_kernel_timing();
        return s.ok() ? sync : s;
      };
    else
      ticket_->f = std::move(task_);
    task_ = nullptr;
    executor_->post(ticket_);
  }
}

// The task and what it captured, dropped on the JS thread: a ticket the executor has not run is
// taken back (a worker that goes without Execute, at a teardown), one it is running waited for.
void TaskWorker::drop_task() {
  task_ = nullptr;
  if (!ticket_) return;
  executor_->withdraw(ticket_);
  ticket_->f = nullptr;
  ticket_.reset();
}

// A typed array over a detached ArrayBuffer reads as empty. lib/ keeps the arrays of tensors
// made from a caller's Float32Array from being transferred (tensor.ts, adopt()), and checks
// before each op; this catches the rest (a WebAssembly memory that grew, an addon that detached
// a buffer) once the op is over, so that its result is an error instead of what it read.
bool TaskWorker::host_array_detached() const {
  for (size_t i = 0; i < holds_.keep.size(); ++i) {
    if (host_bytes_[i] == 0) continue;
    const Napi::Value v = holds_.keep[i].Value();
    if (v.IsTypedArray() && v.As<Napi::TypedArray>().ByteLength() != host_bytes_[i]) return true;
  }
  return false;
}

namespace {
// What an inline op costs the JS thread besides its own run (lib/'s checks and the promise), as
// counted against InlineState::budget_ns.
constexpr int64_t kInlineCallNs = 15000;
}  // namespace

void TaskWorker::Execute() {
  const Status s = guarded([this] { return ticket_ ? executor_->wait(*ticket_) : task_(); });
  if (!s.ok()) {
    code_ = s.code;
    SetError(s.message);
  }
}

// Settling throws when the instance's environment is being torn down (a worker's terminate()
// while the task ran): then no one can see the promise, and the error must not escape into
// libuv's completion callback, where it would abort the whole process. So it is dropped.
void TaskWorker::OnOK() {
  drop_task();  // drop held device memory before settling
  try {
    if (host_array_detached()) {
      Napi::Error err = Napi::Error::New(Env(), "a Float32Array it used lost its memory (its ArrayBuffer was detached) while it ran");
      err.Set("code", Napi::String::New(Env(), "SPPNET_DISPOSED"));  // the binding's own; no backend reports it
      deferred_.Reject(err.Value());
      return;
    }
    deferred_.Resolve(Env().Undefined());
  } catch (const Napi::Error&) {
  }
}

void TaskWorker::OnError(const Napi::Error& e) {
  drop_task();
  try {
    Napi::Error err = e;
    err.Set("code", Napi::String::New(Env(), code_name(code_)));
    deferred_.Reject(err.Value());
  } catch (const Napi::Error&) {
  }
}

Napi::Value settled(Napi::Env env, const Status& s) {
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  if (s.ok()) {
    deferred.Resolve(env.Undefined());
  } else {
    Napi::Error err = Napi::Error::New(env, s.message);
    err.Set("code", Napi::String::New(env, code_name(s.code)));
    deferred.Reject(err.Value());
  }
  return deferred.Promise();
}

Napi::Value queue(Napi::Env env, std::function<Status()> task, const std::vector<Napi::Value>& keep, Runs runs,
                  int64_t inline_work) {
  AddonData* d = env.GetInstanceData<AddonData>();
  if (d->capture) {  // a step of runSequence: collected, run later with the others
    CapturedTask c{std::move(task), {}, static_cast<int>(runs), inline_work};
    for (const Napi::Value& v : keep)
      if (v.IsObject()) c.keep.push_back(Napi::Persistent(v));
    d->capture->push_back(std::move(c));
    return env.Undefined();
  }
  InlineState& in = *d->inline_state;
  if (runs == Runs::kCpu && inline_work >= 0 && inline_work <= d->inline_limit && may_run_inline(*d) && in.budget_ns > 0) {
    // Tiny, nothing before it, and time left in this turn of the event loop: run here; the
    // buffers in `keep` are alive (the caller holds them).
    const auto t0 = std::chrono::steady_clock::now();
    const Status s = guarded([&task] { return cpu::run_serially(task); });
    const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    in.budget_ns -= ns + kInlineCallNs;
    in.ran_ns += ns;
    ++in.ran;
    return settled(env, s);
  }
  std::shared_ptr<Executor> on = runs == Runs::kCuda ? d->cuda : runs == Runs::kCpu && d->use_executor ? d->cpu : nullptr;
  auto* w = new TaskWorker(env, std::move(task), keep, runs, std::move(on), d->inline_state);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// A compiled sequence (compileSequence): its steps' tasks, kept to run again by runSequence
// without calling the entry points (nor reading their arguments) again; lib/ drops a plan once
// no run of it is in flight (lib/nn/plans.ts), and what a run uses is held by the run as well.
//
// What a plan's tasks use (Holds) is shared by the plan (until releasePlan or its finaliser),
// each run of it queued or running, and each plan compiled with it as a step: nothing a run that
// was queued before releasePlan reads or writes is collected, or goes to the cache
// (Tensor.dispose()), before that run is over. Holders let go on the JS thread (a run's task is
// dropped in OnOK / OnError or with its worker).
// A timed plan's clock (compileSequence(steps, true)): the nanoseconds each step took, summed
// over the plan's runs, and the runs counted; written by the thread that runs the plan, read by
// planTimes on the JS thread (relaxed atomics: a read during a run may see part of it).
struct StepTimes {
  explicit StepTimes(size_t n) : ns(n) {}
  std::vector<std::atomic<int64_t>> ns;
  std::atomic<int64_t> runs{0};
};

struct SequencePlan {
  std::shared_ptr<std::vector<std::function<Status()>>> tasks = std::make_shared<std::vector<std::function<Status()>>>();
  std::shared_ptr<Holds> holds = std::make_shared<Holds>();
  std::shared_ptr<StepTimes> times;  // null unless timed
  int runs = 0;
  int64_t work = 0;
  void release() {
    tasks = std::make_shared<std::vector<std::function<Status()>>>();
    holds.reset();
  }
};

namespace {

// Marks a compiled plan's External, so that no other External passes for one (internal calls).
constexpr napi_type_tag kPlanTag = {0x73707061'6e6e6574ULL, 0x706c616e'00000001ULL};

// The plan behind v, or a TypeError (internal: `what` names the call).
SequencePlan* plan_of(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsExternal() || !v.As<Napi::External<SequencePlan>>().CheckTypeTag(&kPlanTag))
    throw Napi::TypeError::New(env, "internal: " + what + " takes a compiled plan");
  return v.As<Napi::External<SequencePlan>>().Data();
}

// Calls the entry point of each [fn, args] step of `steps` with the capture on; a compiled plan
// in place of fn (args undefined) is taken as one step holding it. The steps' tasks in order.
std::vector<CapturedTask> capture_steps(Napi::Env env, AddonData* d, const Napi::Array& steps, const char* fn) {
  if (d->capture) throw Napi::TypeError::New(env, std::string("internal: ") + fn + " inside a sequence");
  std::vector<CapturedTask> captured;
  struct Reset {
    AddonData* d;
    ~Reset() { d->capture = nullptr; }
  } reset{d};
  d->capture = &captured;
  for (uint32_t i = 0; i + 1 < steps.Length(); i += 2) {
    const Napi::Value f = steps.Get(i);
    if (f.IsExternal()) {
      SequencePlan* plan = plan_of(env, f, std::string("a ") + fn + " step");
      if (!plan->holds) throw Napi::TypeError::New(env, std::string("internal: a ") + fn + " step is a released plan");
      auto tasks = plan->tasks;
      // `held`: what the plan's tasks use stays alive (and its host blocks counted) while this
      // run, or a plan compiled with this step, lives.
      CapturedTask c{[tasks, held = plan->holds, times = plan->times]() {
                       if (!times) {
                         for (const auto& t : *tasks) {
                           const Status s = t();
                           if (!s.ok()) return s;
                         }
                         return Status::Ok();
                       }
                       auto t0 = std::chrono::steady_clock::now();
                       for (size_t i = 0; i < tasks->size(); ++i) {
                         const Status s = (*tasks)[i]();
                         const auto t1 = std::chrono::steady_clock::now();
                         times->ns[i].fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(), std::memory_order_relaxed);
                         t0 = t1;
                         if (!s.ok()) return s;
                       }
                       times->runs.fetch_add(1, std::memory_order_relaxed);
                       return Status::Ok();
                     },
                     {}, plan->runs, plan->work};
      c.keep.push_back(Napi::Persistent(f));  // held by the run's TaskWorker until it settles
      captured.push_back(std::move(c));
      continue;
    }
    if (!f.IsFunction()) throw Napi::TypeError::New(env, std::string("internal: a ") + fn + " step is not a function");
    const size_t before = captured.size();
    f.As<Napi::Function>().Call({steps.Get(i + 1)});
    if (captured.size() != before + 1) throw Napi::TypeError::New(env, std::string("internal: a ") + fn + " step queued no single task");
  }
  d->capture = nullptr;
  for (const CapturedTask& c : captured)
    if (c.runs != captured.front().runs) throw Napi::TypeError::New(env, std::string("internal: a ") + fn + " mixes devices");
  return captured;
}

int64_t total_work(const std::vector<CapturedTask>& captured) {
  int64_t work = 0;
  for (const CapturedTask& c : captured) work = (work < 0 || c.inline_work < 0) ? -1 : work + c.inline_work;
  return work;
}

}  // namespace

// runSequence([fn0, args0, fn1, args1, ...]): each fn an op entry point of this addon, called
// with its args as lib/ would call it, but its task collected instead of queued (AddonData::capture);
// then all of them as one task, back to back in that order, on one thread (one hand-over for the
// whole sequence). A step may also be a plan of compileSequence (fn: the plan, args: undefined):
// its tasks run there. The first step that fails ends it; its status is the sequence's. Every
// step must run on the same device.
Napi::Value RunSequence(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* d = env.GetInstanceData<AddonData>();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "internal: runSequence takes an array");
  std::vector<CapturedTask> captured = capture_steps(env, d, info[0].As<Napi::Array>(), "runSequence");
  if (captured.empty()) {
    Napi::Promise::Deferred done = Napi::Promise::Deferred::New(env);
    done.Resolve(env.Undefined());
    return done.Promise();
  }
  std::vector<Napi::Value> keep;
  auto tasks = std::make_shared<std::vector<std::function<Status()>>>();
  for (CapturedTask& c : captured) {
    for (const auto& r : c.keep) keep.push_back(r.Value());
    tasks->push_back(std::move(c.task));
  }
  return queue(
      env,
      [tasks]() {
        for (const auto& t : *tasks) {
          const Status s = t();
          if (!s.ok()) return s;
        }
        return Status::Ok();
      },
      keep, static_cast<Runs>(captured.front().runs), total_work(captured));
}

// compileSequence([fn0, args0, ...]): the steps as runSequence takes them, their tasks made once
// and kept in a plan (an External) that runSequence runs as one step, again and again, with the
// buffers and values the entry points were given then. Nothing runs now.
Napi::Value CompileSequence(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* d = env.GetInstanceData<AddonData>();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "internal: compileSequence takes an array");
  std::vector<CapturedTask> captured = capture_steps(env, d, info[0].As<Napi::Array>(), "compileSequence");
  if (captured.empty()) throw Napi::TypeError::New(env, "internal: compileSequence of no steps");
  auto* plan = new SequencePlan();
  plan->runs = captured.front().runs;
  plan->work = total_work(captured);
  if (info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value()) plan->times = std::make_shared<StepTimes>(captured.size());
  for (CapturedTask& c : captured) {
    for (auto& r : c.keep) plan->holds->add(env, std::move(r));
    plan->tasks->push_back(std::move(c.task));
  }
  auto external = Napi::External<SequencePlan>::New(env, plan, [](Napi::Env, SequencePlan* p) {
    p->release();
    delete p;
  });
  external.TypeTag(&kPlanTag);
  return external;
}

// planTimes(plan): a timed plan's clock as a Float64Array [runs, ms of step 0, ms of step 1, ...]
// (each step's total over the runs), or undefined for a plan compiled without one.
Napi::Value PlanTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const SequencePlan* plan = plan_of(env, info[0], "planTimes");
  if (!plan->times) return env.Undefined();
  const StepTimes& t = *plan->times;
  Napi::Float64Array out = Napi::Float64Array::New(env, t.ns.size() + 1);
  out[0] = static_cast<double>(t.runs.load(std::memory_order_relaxed));
  for (size_t i = 0; i < t.ns.size(); ++i) out[i + 1] = static_cast<double>(t.ns[i].load(std::memory_order_relaxed)) / 1e6;
  return out;
}

// releasePlan(plan): drops its tasks and what they hold (device memory, the JS values) now, not
// when the GC collects the handle; lib/ calls it once no run uses the plan. A run already queued
// keeps its own reference to the tasks and to what they use (Holds). The plan cannot be run
// again (a sequence step of a released plan is an error).
Napi::Value ReleasePlan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  plan_of(env, info[0], "releasePlan")->release();
  return env.Undefined();
}

}  // namespace binding
}  // namespace sppnet
