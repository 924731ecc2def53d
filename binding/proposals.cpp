// Selective search (include/sppnet/proposals.h) on a libuv thread: the pixels are copied on the
// JS thread (so nothing the task reads can be detached or changed under it), the work runs off
// the event loop, and the promise settles with a typed array made on the JS thread.
#include <cstring>

#include "common.h"
#include "sppnet/proposals.h"

namespace sppnet {
namespace binding {
namespace {

// Runs `task`, which fills an int32 result, on libuv's pool; resolves with an Int32Array of it
// (or rejects with the Status's code).
class ResultWorker : public Napi::AsyncWorker {
 public:
  ResultWorker(Napi::Env env, std::function<Status(std::vector<int32_t>*)> task)
      : Napi::AsyncWorker(env), task_(std::move(task)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      status_ = task_(&result_);
    } catch (const std::bad_alloc&) {
      status_ = Status::Error(Code::kOutOfMemory, "out of host memory");
    } catch (const std::exception& e) {
      status_ = Status::Error(Code::kInternal, e.what());
    } catch (...) {
      status_ = Status::Error(Code::kInternal, "unknown error");
    }
  }
  void OnOK() override {
    try {
      if (!status_.ok()) {
        Napi::Error err = Napi::Error::New(Env(), status_.message);
        err.Set("code", Napi::String::New(Env(), code_name(status_.code)));
        deferred_.Reject(err.Value());
        return;
      }
      Napi::Int32Array out = Napi::Int32Array::New(Env(), result_.size());
      if (!result_.empty()) std::memcpy(out.Data(), result_.data(), result_.size() * sizeof(int32_t));
      std::vector<int32_t>().swap(result_);
      deferred_.Resolve(out);
    } catch (const Napi::Error&) {
    }
  }
  void OnError(const Napi::Error& e) override {
    try {
      deferred_.Reject(e.Value());
    } catch (const Napi::Error&) {
    }
  }

 private:
  std::function<Status(std::vector<int32_t>*)> task_;
  Napi::Promise::Deferred deferred_;
  std::vector<int32_t> result_;
  Status status_;
};

struct Pixels {
  std::vector<uint8_t> rgb;
  int32_t width = 0, height = 0;
};

// { data: Uint8Array (height x width x 3), width, height } copied.
std::shared_ptr<Pixels> pixels(const Napi::Object& a, const char* fn) {
  Napi::Env env = a.Env();
  const Napi::Uint8Array in = typed_array<uint8_t>(env, a.Get("data"), napi_uint8_array, std::string(fn) + ": data", "a Uint8Array");
  auto px = std::make_shared<Pixels>();
  px->width = int_field(a, "width");
  px->height = int_field(a, "height");
  if (px->width < 1 || px->height < 1 || static_cast<double>(in.ElementLength()) != 3.0 * px->width * px->height)
    throw Napi::RangeError::New(env, std::string("internal: ") + fn + ": data must hold width x height x 3 bytes");
  px->rgb.assign(in.Data(), in.Data() + in.ElementLength());
  return px;
}

Napi::Value Start(Napi::Env env, std::function<Status(std::vector<int32_t>*)> task) {
  auto* w = new ResultWorker(env, std::move(task));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// proposals({ data, width, height, fast: boolean, ks: Float64Array, sigma, minSide, maxBoxes, seed })
//   -> Promise<Int32Array>: 4 ints a box (x1, y1, x2, y2), best ranked first.
Napi::Value Proposals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object a = info[0].As<Napi::Object>();
  auto px = pixels(a, "proposals");
  ProposalParams p;
  p.fast = a.Get("fast").ToBoolean().Value();
  const Napi::Float64Array ks = float64_array(a, "ks");
  p.ks.assign(ks.Data(), ks.Data() + ks.ElementLength());
  p.sigma = number(a, "sigma");
  p.min_side = int_field(a, "minSide");
  p.max_boxes = count(a, "maxBoxes");
  p.seed = static_cast<uint32_t>(number(a, "seed"));
  if (p.ks.empty() || !(p.sigma >= 0)) throw Napi::RangeError::New(env, "internal: proposals: bad options");
  for (const double k : p.ks)
    if (!(k >= 1 && k <= 1e9)) throw Napi::RangeError::New(env, "internal: proposals: bad k");
  return Start(env, [px, p](std::vector<int32_t>* out) { return cpu::selective_search(px->rgb.data(), px->width, px->height, p, out); });
}

// segmentImage({ data, width, height, space: 0 HSV | 1 Lab | 2 RGB, sigma, k, minSize })
//   -> Promise<Int32Array>: the label of each pixel, row-major (for tests).
Napi::Value SegmentImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object a = info[0].As<Napi::Object>();
  auto px = pixels(a, "segmentImage");
  const int32_t space = int_field(a, "space"), min_size = int_field(a, "minSize");
  const double sigma = number(a, "sigma"), k = number(a, "k");
  if (space < 0 || space > 2 || !(sigma >= 0) || !(k >= 0)) throw Napi::RangeError::New(env, "internal: segmentImage: bad options");
  return Start(env, [px, space, sigma, k, min_size](std::vector<int32_t>* out) {
    int32_t n = 0;
    return cpu::segment_image(px->rgb.data(), px->width, px->height, space, sigma, k, min_size, out, &n);
  });
}

}  // namespace

void init_proposals(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports, {{"proposals", Proposals}, {"segmentImage", SegmentImage}});
}

}  // namespace binding
}  // namespace sppnet
