// Helpers shared by the binding's entry points: per-instance state, device buffers, argument
// unpacking and the promise-returning worker. The only code besides binding/*.cpp that sees napi.h.
#pragma once
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "sppnet/device.h"
#include "sppnet/ops.h"
#include "sppnet/status.h"
#include "sppnet/tensor.h"

namespace sppnet {
namespace binding {

// Host buffers from this many bytes on come from the addon on 2 MiB huge pages (host.cpp);
// lib/ reads it from addon.enums.hostHugeAtLeast.
constexpr size_t kHostHuge = size_t{2} << 20, kHostHugeAtLeast = kHostHuge * 2 / 3;
// The most hostAlloc gives: Node 20's napi_create_external_arraybuffer refuses an ArrayBuffer over
// node::Buffer::kMaxLength (2^32 bytes), and then calls its finaliser before returning, which
// node-addon-api's ArrayBuffer::New frees a second time. lib/ takes larger tensors from V8.
constexpr size_t kHostAllocMax = size_t{1} << 32;

// Host memory from hostAlloc (host.cpp), one block per ArrayBuffer, and the blocks given back
// that this instance keeps for reuse. JS thread only: blocks are made, given back, counted in
// and out of tasks (TaskWorker) and finalised there.
struct HostCache;
struct HostBlock {
  void* data = nullptr;  // null once its memory went back (to the cache or the system)
  size_t bytes = 0;      // what munmap / free takes
  bool mapped = false;
  std::shared_ptr<HostCache> cache;
  int inflight = 0;  // queued tasks (and compiled plans) that use it
  // Given back by its owner, once no task uses it: to the cache (hostRecycle) or to the system
  // (hostFree).
  enum class Back : uint8_t { kNo, kCache, kSystem } back = Back::kNo;
  bool finalized = false;  // its ArrayBuffer is gone: the struct goes once no task uses it
};
// The block whose memory v (a typed array or an ArrayBuffer) lies in, counted in flight (+1);
// null when v is not hostAlloc's. host_block_done() takes the count back.
HostBlock* host_block_acquire(Napi::Env env, const Napi::Value& v);
void host_block_done(HostBlock* b);

// The JS values a task uses, held by references until the holder goes, and the addon's host
// blocks among them counted in flight until then (so none goes back to the cache while the task
// may use it). A promise worker's own, and a compiled plan's (shared by its runs). JS thread only,
// destruction included.
struct Holds {
  std::vector<Napi::Reference<Napi::Value>> keep;
  std::vector<HostBlock*> blocks;
  Holds() = default;
  Holds(const Holds&) = delete;
  Holds& operator=(const Holds&) = delete;
  ~Holds() {
    for (HostBlock* b : blocks) host_block_done(b);
  }
  // Holds what r refers to; its host block, or null when it is not hostAlloc's.
  HostBlock* add(Napi::Env env, Napi::Reference<Napi::Value>&& r) {
    HostBlock* b = host_block_acquire(env, r.Value());
    if (b) blocks.push_back(b);
    keep.push_back(std::move(r));
    return b;
  }
};
// An instance's cache, empty; limit_mb: SPPNET_HOST_CACHE_MB's value, or null (the default).
std::shared_ptr<HostCache> make_host_cache(const std::string* limit_mb);
// Bytes the cache keeps, and the hostAlloc calls it served.
void host_cache_stats(const HostCache& c, double* bytes, double* reused);

// Live device allocations, for leak tests. Shared with every DeviceMem, which may die after the
// JS object that made it (when an in-flight op lets go of it).
struct Counters {
  std::atomic<int64_t> device_buffers{0};
  std::atomic<int64_t> device_bytes{0};
};

// What an instance's device buffers tell V8 (as external memory, on the JS thread only), so that
// device use makes the GC collect dropped tensors. Not each buffer's bytes as it comes and goes:
// V8 starts a full mark-compact whenever the count grows past its limit (64 MiB), so a 100 MB
// result allocated and disposed over and over cost a full GC per call (3-6 ms on an H100's host,
// 2026-11-27). The count follows the bytes the handles hold in steps of slack: raised to them
// once they exceed it by slack (a GC then collects what was dropped), lowered to them + slack
// once they are 2 slack below it. A program that disposes sees no GC from it; one that drops
// tensors gets a GC about every slack of them. slack is 128 MiB, or 1/32 of the device's memory
// when that is less (set at the first device allocation), so a small GPU does not fill with
// dropped tensors between two GCs.
struct ExternalReport {
  int64_t held = 0;      // bytes the live DeviceBuffer handles hold
  int64_t reported = 0;  // bytes V8 counts
  int64_t slack = int64_t{128} << 20;
  void add(Napi::BasicEnv env, int64_t bytes);
};

// One block of device memory (cuda::malloc_device). Freed, stream-ordered and without waiting,
// when the last holder (a JS DeviceBuffer or an in-flight operation, which lets go on the JS thread
// once its ticket, which synchronised the CUDA executor's stream, is done) lets go, so dispose()
// during an operation is safe.
struct DeviceMem {
  void* ptr = nullptr;
  size_t bytes = 0;
  std::shared_ptr<Counters> counters;
  ~DeviceMem();
};

// Runs the tasks of one addon instance (the main thread's, or a worker_thread's: nothing
// process-wide) for one backend one at a time on a thread of its own, started on first use, in
// the order the JS thread posted them (at the op's call: ops queued without awaiting run in call
// order, and the executor starts a task without waiting for a libuv thread to pick it up); the
// libuv thread that took the task's promise waits for it. Each instance has two (AddonData):
// - CPU: the CPU kernels' helper threads and scratch buffers belong to the thread that calls them
//   (cpu/parallel.h, the thread_local buffers of cpu/*.cpp). Spread over libuv's four threads,
//   consecutive layers of a network found helpers asleep and buffers cold. Each op already uses
//   every core, so running them one at a time costs nothing but the hand-over (~25 us an op).
//   Runs below the JS thread's priority (nice SPPNET_CPU_NICE, default 10, read at the load).
// - CUDA: every op on one thread is every op on one stream (cudaStreamPerThread), so an op reads
//   what the ops called before it wrote. On libuv's threads, each with its own stream, ops called
//   without awaiting ran in no set order (a chain of 48 through `out:` on the emulated device:
//   out of order in 20 of 20 tries). The task synchronises its stream before it is done.
class Executor {
 public:
  // nice: the thread's nice value on Linux (0: as the process)
  explicit Executor(int nice) : nice_(nice) {}
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  ~Executor();
  // A task handed over. `f` belongs to the poster: cleared on the JS thread once done (what it
  // captures may hold JS references), never by the executor.
  struct Ticket {
    std::function<Status()> f;
    Status status;
    std::exception_ptr error;
    bool done = false;  // under the executor's mutex
  };
  // Queues t to run after everything posted before it (JS thread). When the executor's thread
  // cannot be started, t is done at once with that error.
  void post(const std::shared_ptr<Ticket>& t);
  // Blocks until t has run; returns its status or rethrows its exception (any thread).
  Status wait(Ticket& t);
  // t taken out of the queue if it has not started, else waited for: afterwards the executor no
  // longer uses t.f (for a promise worker that goes without having waited, at a teardown).
  void withdraw(const std::shared_ptr<Ticket>& t);
  // Every ticket not started is done at once, with status kUnavailable (the environment is going
  // away: process.exit(), a worker's terminate()): the libuv threads waiting for them return, so
  // the exit waits for the task running now, not for all those queued behind it.
  void cancel_queued();
  // Nanoseconds spent running tasks so far (for overhead measurements: call time minus this).
  std::atomic<int64_t> busy_ns{0};

 private:
  void loop();
  const int nice_;
  std::mutex m_;
  std::condition_variable work_, done_;
  std::deque<std::shared_ptr<Ticket>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// Tiny CPU ops run inline on the JS thread (queue()), under two conditions kept here (JS thread
// only; each TaskWorker holds it):
// - no host task (CPU or kHost) is in flight (`inflight_host`), so an inline op never overtakes
//   (or races) host work queued before it. CUDA tasks in flight do not count: they write no host
//   memory that JS can reach before they settle (only the fresh arrays of downloads and of the
//   loss's rows), so a CPU op may overtake them;
// - the event loop is not starved: inline ops settle their promises at once, so a loop of them
//   would never yield to I/O and timers. They may spend `budget_ns` of the JS thread between two
//   turns of the event loop; then the next op is queued as usual, and when a queued task settles
//   (on a turn of the loop) the budget is full again.
struct InlineState {
  int64_t inflight_host = 0;  // tasks in flight that run on the host (Runs::kCpu, Runs::kHost)
  int64_t budget_ns = kBudgetNs;
  int64_t ran = 0, queued = 0;  // ops run inline / queued, for checks
  int64_t ran_ns = 0;           // time spent running them inline
  static constexpr int64_t kBudgetNs = 1000000;  // 1 ms
};

// A task queue() was asked for while RunSequence collects the steps of a sequence.
// Its keep-alive values are held by references: the entry point's handles die when it returns.
struct CapturedTask {
  std::function<Status()> task;
  std::vector<Napi::Reference<Napi::Value>> keep;
  int runs;  // Runs
  int64_t inline_work;
};

struct AddonData {
  Napi::FunctionReference device_buffer;
  std::shared_ptr<Counters> counters = std::make_shared<Counters>();
  // Shared with every DeviceBuffer: a handle finalised at the instance's teardown may outlive this.
  std::shared_ptr<ExternalReport> external = std::make_shared<ExternalReport>();
  std::shared_ptr<Executor> cpu;  // made at the load (its nice value from the environment)
  bool use_executor = true;  // SPPNET_CPU_EXECUTOR=0: CPU tasks on libuv's threads (for comparisons)
  std::shared_ptr<Executor> cuda = std::make_shared<Executor>(0);  // always used
  std::shared_ptr<InlineState> inline_state = std::make_shared<InlineState>();
  // Set while runSequence calls the entry points of its steps: queue() hands their tasks here.
  std::vector<CapturedTask>* capture = nullptr;
  // The most work (the entry point's estimate, in element visits) a CPU op may have to run inline
  // on the JS thread instead of on the executor: SPPNET_INLINE_WORK (0: never), default
  // kInlineWork. The hand-over to the executor and back costs ~20-100 us; inline, an op this
  // small takes a few microseconds.
  int64_t inline_limit = kInlineWork;
  static constexpr int64_t kInlineWork = 16384;
  // SPPNET_CUDA_KERNEL_TIMES=1: the GPU time of each kernel this instance's CUDA tasks launch
  // (cuda::KernelTimes, read by kernelTimes()); null otherwise.
  std::shared_ptr<cuda::KernelTimes> kernel_times;
  bool pool_ready = false;   // cuda::keep_pool_memory() done (JS thread only, before the first DeviceBuffer)
  std::shared_ptr<HostCache> host;  // hostAlloc's blocks and its cache (host.cpp); made at init
};

// The JS handle of a DeviceMem. Its bytes count in ExternalReport::held while the handle holds
// them (+ at construction, - at free() or finalisation, on the JS thread), so device pressure
// makes the GC collect dropped tensors; an in-flight op may keep the block a little longer.
class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit DeviceBuffer(const Napi::CallbackInfo& info);
  // The basic finalizer only (it hides the Napi::Env one on purpose: node-addon-api calls what a
  // class declares): all it does is take the bytes back from V8's count, which a basic env allows.
  void Finalize(Napi::BasicEnv env) override;
  std::shared_ptr<DeviceMem> mem() const { return mem_; }
  size_t length() const { return length_; }

 private:
  Napi::Value Free(const Napi::CallbackInfo& info);
  Napi::Value Length(const Napi::CallbackInfo& info);
  Napi::Value Freed(const Napi::CallbackInfo& info);
  void release(Napi::BasicEnv env);
  std::shared_ptr<DeviceMem> mem_;
  std::shared_ptr<ExternalReport> external_;
  size_t length_ = 0;  // floats
  int64_t held_ = 0;   // bytes counted in external_->held and not yet taken back
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

// v as a typed array of `type`; else a TypeError "internal: <what> must be <kind>" (lib/ passed
// something it never passes).
template <typename T>
Napi::TypedArrayOf<T> typed_array(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, const std::string& what,
                                  const char* kind) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw Napi::TypeError::New(env, "internal: " + what + " must be " + kind);
  return v.As<Napi::TypedArrayOf<T>>();
}
Napi::Int32Array int32_array(const Napi::Object& obj, const char* name);
Napi::Float64Array float64_array(const Napi::Object& obj, const char* name);
// obj[name] as a number; else a TypeError "internal: field '<name>' must be a number".
double number(const Napi::Object& obj, const char* name);
int32_t int_field(const Napi::Object& obj, const char* name);
// number(obj, name) as a float.
float float_field(const Napi::Object& obj, const char* name);
// Reads several float fields of a JS object into the members of a params struct.
template <class P>
void float_fields(const Napi::Object& obj, P& p, std::initializer_list<std::pair<const char*, float P::*>> fields) {
  for (const auto& f : fields) p.*(f.second) = float_field(obj, f.first);
}
// number(obj, name) as an element count: 0 to 9e15, else a RangeError "internal: bad count '<name>'".
int64_t count(const Napi::Object& obj, const char* name);
// obj[name] is neither undefined nor null.
bool has(const Napi::Object& obj, const char* name);

// The float buffers of one call, read with float_arg, and the JS values they came from: the
// task's keep-alive list (queue()'s `keep`).
struct Buffers {
  std::vector<Napi::Value> keep;
  FloatArg arg(const Napi::Object& obj, const char* name, int64_t needed);
  // FloatArg{} (no pointer) where obj[name] is undefined or null.
  FloatArg optional(const Napi::Object& obj, const char* name, int64_t needed);
};

// All the given buffers (those read: an absent optional one is skipped) on the first one's device;
// returns it (true: device memory). Else a TypeError "internal: <what> on different devices".
bool one_device(const Napi::Env& env, const std::vector<const FloatArg*>& args, const char* what = "buffers");

// The backend's ops (ops.h) for buffers on the device (true) or in host memory.
const OpTable& backend(bool device);

// A ragged layout from obj[prefix + "Offsets" | "Heights" | "Widths"] and obj[prefix + "Channels"].
// `view` points into the vectors: move a RaggedLayout, never copy it.
struct RaggedLayout {
  std::vector<int64_t> off;
  std::vector<int32_t> h, w;
  RaggedView view;
  int64_t end = 0;  // one past the last element any map uses
};
RaggedLayout ragged_layout(const Napi::Object& a, const std::string& prefix);
// obj.conv of a convolution, the named fields lib/ sends (lib/core/native.ts, NativeConvParams):
// inChannels, outChannels, kernelH/W, strideH/W, padH/W, dilationH/W, groups and, when with_math,
// math (and obj.relu is read). Checked (kernel, stride, dilation, groups >= 1, padding >= 0:
// "internal: conv params") and against the output layout and the input's, when given
// ("internal: conv shapes"). Throws a JS error.
Conv2dParams conv_params(const Napi::Object& obj, bool with_math, const RaggedLayout* in, const RaggedLayout& out);
// obj.pool (kernelH/W, strideH/W, padH/W: NativePoolParams) of a pooling layer from `in` to `out` (same channels and
// map count, kernel and stride >= 1, padding >= 0). Throws a JS error.
Pool2dParams pool_params(const Napi::Object& obj, const RaggedLayout& in, const RaggedLayout& out);
// obj.size (>= 1; odd when within), obj.alpha, obj.beta, obj.k, obj.within. Throws a JS error.
LrnParams lrn_params(const Napi::Object& obj);

// Where a task runs: on the instance's CPU Executor, on its CUDA Executor (the stream is
// synchronised before the promise settles, whatever the task returned), or on a libuv thread and
// nothing more (host work that must not touch CUDA, e.g. the CPU peak probe).
enum class Runs { kCpu, kCuda, kHost };

// Runs `task` (on the executor of its device, posted at construction: a libuv thread only waits
// for it; kHost tasks on the libuv thread itself) and settles a promise with its Status. Holds
// `keep` (JS values whose memory the task uses) until it settles.
class TaskWorker : public Napi::AsyncWorker {
 public:
  TaskWorker(Napi::Env env, std::function<Status()> task, const std::vector<Napi::Value>& keep, Runs runs,
             std::shared_ptr<Executor> executor, std::shared_ptr<InlineState> inline_state);
  ~TaskWorker() override {
    drop_task();  // (done already, unless the worker goes without settling); holds_ go after
    if (runs_ != Runs::kCuda) --inline_->inflight_host;
    inline_->budget_ns = InlineState::kBudgetNs;  // settled on a turn of the event loop
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  bool host_array_detached() const;
  void drop_task();
  std::function<Status()> task_;
  Napi::Promise::Deferred deferred_;
  Holds holds_;                      // what the task uses, until this worker goes
  std::vector<size_t> host_bytes_;  // per holds_.keep entry: a typed array's byte length when queued, else 0
  std::shared_ptr<Executor> executor_;  // the task runs there, if set (held: it outlives the task)
  std::shared_ptr<Executor::Ticket> ticket_;  // with executor_: task_ handed over, posted at construction
  std::shared_ptr<InlineState> inline_;    // AddonData's: in flight from construction to destruction
  Runs runs_;
  Code code_ = Code::kOk;
};

// Whether host work may run at once on the JS thread (InlineState's first condition): inline work
// allowed (SPPNET_INLINE_WORK > 0), no host task in flight, no sequence being captured.
inline bool may_run_inline(const AddonData& d) { return d.inline_limit > 0 && d.inline_state->inflight_host == 0 && !d.capture; }
// A promise already settled with s (rejected with its code when it is not OK).
Napi::Value settled(Napi::Env env, const Status& s);

// Queues a task and returns its promise. A CPU task whose `inline_work` (>= 0: the entry point's
// estimate of its element visits) is at most AddonData::inline_limit, queued while no task is in
// flight, runs at once on the JS thread instead (serially: no helper threads), and the promise
// returned is already settled.
Napi::Value queue(Napi::Env env, std::function<Status()> task, const std::vector<Napi::Value>& keep, Runs runs,
                  int64_t inline_work = -1);
// How an op whose buffers are all on one device runs: kCuda when they are device memory, else kCpu.
inline Runs runs_on(bool device) { return device ? Runs::kCuda : Runs::kCpu; }
// Queues op(backend(device)) as a task on that device, holding bufs.keep while it runs.
template <typename Op>
Napi::Value queue_op(Napi::Env env, bool device, const Buffers& bufs, Op op, int64_t inline_work = -1) {
  return queue(env, [device, op]() { return op(backend(device)); }, bufs.keep, runs_on(device), inline_work);
}

// What a layer's entry point unpacks (held by its task through a shared_ptr): the layouts of its
// input and output maps and its buffers (those an op does not use stay empty).
struct LayerJob {
  RaggedLayout in, out;
  FloatArg x, y, w, b, dy, dx, dw, db;
};

// runSequence(steps): the op entry points' tasks run as one; compileSequence(steps, timed): kept as a
// plan that runSequence runs as one of its steps (timed: each step's time summed, for planTimes);
// releasePlan(plan): its tasks dropped (common.cpp).
Napi::Value RunSequence(const Napi::CallbackInfo& info);
Napi::Value CompileSequence(const Napi::CallbackInfo& info);
Napi::Value PlanTimes(const Napi::CallbackInfo& info);
Napi::Value ReleasePlan(const Napi::CallbackInfo& info);

// Sets exports[name] = a JS function calling fn, for each (name, fn).
using EntryPoint = Napi::Value (*)(const Napi::CallbackInfo&);
void export_functions(Napi::Env env, Napi::Object exports, std::initializer_list<std::pair<const char*, EntryPoint>> entries);

// A LayerJob with obj's "in" layout, and its "out" layout when with_out (ragged_layout).
std::shared_ptr<LayerJob> layer_job(const Napi::Object& obj, bool with_out);

// Throws a JS Error for a non-OK status (synchronous entry points).
void throw_if(Napi::Env env, const Status& s);
const char* code_name(Code c);

}  // namespace binding
}  // namespace sppnet
