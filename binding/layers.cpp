// Layer entry points: unpack what lib/ prepared and checked, pick the backend, queue.
#include <algorithm>

#include "common.h"
#include "sppnet/layers.h"

namespace sppnet {
namespace binding {
namespace {

using Layout = RaggedLayout;

struct Job {
  Layout in, out;
  FloatArg x, y, w, b;
  bool device = false;
  bool has_bias = false;
  Napi::Value cache;  // conv2d's filter cache (a Float32Array), when given
};

void same_device(const Napi::Env& env, std::initializer_list<const FloatArg*> args) {
  const bool d = (*args.begin())->device;
  for (const FloatArg* a : args)
    if (a->device != d) throw Napi::TypeError::New(env, "internal: layer buffers on different devices");
}

Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  j->in = ragged_layout(a, "in");
  j->out = ragged_layout(a, "out");
  const Napi::Int32Array pr = int32_array(a, "params");
  if (pr.ElementLength() != 12) throw Napi::RangeError::New(info.Env(), "internal: conv params");
  Conv2dParams p;
  int32_t* f[11] = {&p.in_channels, &p.out_channels, &p.kernel_h, &p.kernel_w, &p.stride_h, &p.stride_w,
                    &p.pad_h,       &p.pad_w,        &p.dilation_h, &p.dilation_w, &p.groups};
  for (int k = 0; k < 11; ++k) *f[k] = pr[k];
  p.math = pr[11];
  p.relu = a.Get("relu").ToBoolean();
  if (p.groups < 1 || p.in_channels % p.groups || p.out_channels % p.groups || p.in_channels != j->in.view.channels ||
      p.out_channels != j->out.view.channels || j->in.view.count != j->out.view.count)
    throw Napi::RangeError::New(info.Env(), "internal: conv shapes");
  j->x = float_arg(a, "input", j->in.end);
  j->y = float_arg(a, "output", j->out.end);
  j->w = float_arg(a, "weight", int64_t{p.out_channels} * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w);
  j->has_bias = !a.Get("bias").IsUndefined();
  if (j->has_bias) j->b = float_arg(a, "bias", p.out_channels);
  // Optional: the caller's buffer for the CPU Winograd path's transformed filters.
  const Napi::Value fc = a.Get("filterCache");
  if (fc.IsTypedArray() && fc.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    Napi::Float32Array f = fc.As<Napi::Float32Array>();
    p.filter_cache = f.Data();
    p.filter_cache_len = static_cast<int64_t>(f.ElementLength());
    j->cache = fc;
  }
  same_device(info.Env(), {&j->x, &j->y, &j->w});
  if (j->has_bias) same_device(info.Env(), {&j->x, &j->b});
  auto task = [j, p]() {
    const float* b = j->has_bias ? j->b.ptr : nullptr;
    return j->x.device ? cuda::conv2d_forward(j->in.view, j->x.ptr, p, j->w.ptr, b, j->out.view, j->y.ptr)
                       : cpu::conv2d_forward(j->in.view, j->x.ptr, p, j->w.ptr, b, j->out.view, j->y.ptr);
  };
  return queue(info.Env(), task, {j->x.value, j->y.value, j->w.value, j->has_bias ? j->b.value : info.Env().Undefined(),
                                  j->cache.IsEmpty() ? info.Env().Undefined() : j->cache},
               !j->x.device);
}

Napi::Value WinogradCacheFloats(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(cpu::winograd_cache_floats(info[0].As<Napi::Number>().Int32Value(),
                                                                                      info[1].As<Napi::Number>().Int32Value())));
}

Napi::Value MaxPool2d(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  j->in = ragged_layout(a, "in");
  j->out = ragged_layout(a, "out");
  const Napi::Int32Array pr = int32_array(a, "params");
  if (pr.ElementLength() != 6 || j->in.view.channels != j->out.view.channels || j->in.view.count != j->out.view.count)
    throw Napi::RangeError::New(info.Env(), "internal: pool params");
  Pool2dParams p;
  p.kernel_h = pr[0], p.kernel_w = pr[1], p.stride_h = pr[2], p.stride_w = pr[3], p.pad_h = pr[4], p.pad_w = pr[5];
  j->x = float_arg(a, "input", j->in.end);
  j->y = float_arg(a, "output", j->out.end);
  same_device(info.Env(), {&j->x, &j->y});
  auto task = [j, p]() {
    return j->x.device ? cuda::max_pool2d_forward(j->in.view, j->x.ptr, p, j->out.view, j->y.ptr)
                       : cpu::max_pool2d_forward(j->in.view, j->x.ptr, p, j->out.view, j->y.ptr);
  };
  return queue(info.Env(), task, {j->x.value, j->y.value}, !j->x.device);
}

LrnParams lrn_params(const Napi::Object& a) {
  LrnParams p;
  p.size = int_field(a, "size");
  p.alpha = a.Get("alpha").As<Napi::Number>().FloatValue();
  p.beta = a.Get("beta").As<Napi::Number>().FloatValue();
  p.k = a.Get("k").As<Napi::Number>().FloatValue();
  return p;
}

Napi::Value Lrn(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  j->in = ragged_layout(a, "in");
  const LrnParams p = lrn_params(a);
  j->x = float_arg(a, "input", j->in.end);
  j->y = float_arg(a, "output", j->in.end);
  same_device(info.Env(), {&j->x, &j->y});
  auto task = [j, p]() {
    return j->x.device ? cuda::lrn_forward(j->in.view, j->x.ptr, p, j->y.ptr) : cpu::lrn_forward(j->in.view, j->x.ptr, p, j->y.ptr);
  };
  return queue(info.Env(), task, {j->x.value, j->y.value}, !j->x.device);
}

Napi::Value LrnMaxPool2d(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  j->in = ragged_layout(a, "in");
  j->out = ragged_layout(a, "out");
  const Napi::Int32Array pr = int32_array(a, "params");
  if (pr.ElementLength() != 6 || j->in.view.channels != j->out.view.channels || j->in.view.count != j->out.view.count)
    throw Napi::RangeError::New(info.Env(), "internal: pool params");
  Pool2dParams p;
  p.kernel_h = pr[0], p.kernel_w = pr[1], p.stride_h = pr[2], p.stride_w = pr[3], p.pad_h = pr[4], p.pad_w = pr[5];
  const LrnParams lp = lrn_params(a);
  j->x = float_arg(a, "input", j->in.end);
  j->y = float_arg(a, "output", j->out.end);
  same_device(info.Env(), {&j->x, &j->y});
  auto task = [j, p, lp]() {
    return j->x.device ? cuda::lrn_max_pool2d_forward(j->in.view, j->x.ptr, lp, p, j->out.view, j->y.ptr)
                       : cpu::lrn_max_pool2d_forward(j->in.view, j->x.ptr, lp, p, j->out.view, j->y.ptr);
  };
  return queue(info.Env(), task, {j->x.value, j->y.value}, !j->x.device);
}

Napi::Value Linear(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  const int64_t rows = a.Get("rows").As<Napi::Number>().Int64Value();
  const int32_t in_f = int_field(a, "inFeatures"), out_f = int_field(a, "outFeatures");
  const bool relu = a.Get("relu").ToBoolean();
  const int32_t math = int_field(a, "math");
  j->x = float_arg(a, "input", rows * in_f);
  j->y = float_arg(a, "output", rows * out_f);
  j->w = float_arg(a, "weight", int64_t{in_f} * out_f);
  j->has_bias = !a.Get("bias").IsUndefined();
  if (j->has_bias) j->b = float_arg(a, "bias", out_f);
  same_device(info.Env(), {&j->x, &j->y, &j->w});
  if (j->has_bias) same_device(info.Env(), {&j->x, &j->b});
  auto task = [j, rows, in_f, out_f, relu, math]() {
    const float* b = j->has_bias ? j->b.ptr : nullptr;
    return j->x.device ? cuda::linear_forward(rows, in_f, out_f, j->x.ptr, j->w.ptr, b, relu, math, j->y.ptr)
                       : cpu::linear_forward(rows, in_f, out_f, j->x.ptr, j->w.ptr, b, relu, math, j->y.ptr);
  };
  return queue(info.Env(), task, {j->x.value, j->y.value, j->w.value, j->has_bias ? j->b.value : info.Env().Undefined()}, !j->x.device);
}

// elementwise({ op: 'relu' | 'softmax', rows, cols, input, output })
Napi::Value Elementwise(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  const std::string op = a.Get("op").As<Napi::String>().Utf8Value();
  const int64_t rows = a.Get("rows").As<Napi::Number>().Int64Value();
  const int32_t cols = int_field(a, "cols");
  j->x = float_arg(a, "input", rows * cols);
  j->y = float_arg(a, "output", rows * cols);
  same_device(info.Env(), {&j->x, &j->y});
  const bool softmax = op == "softmax";
  if (!softmax && op != "relu") throw Napi::TypeError::New(info.Env(), "internal: unknown elementwise op");
  auto task = [j, rows, cols, softmax]() {
    if (softmax)
      return j->x.device ? cuda::softmax_forward(rows, cols, j->x.ptr, j->y.ptr) : cpu::softmax_forward(rows, cols, j->x.ptr, j->y.ptr);
    return j->x.device ? cuda::relu_forward(rows * cols, j->x.ptr, j->y.ptr) : cpu::relu_forward(rows * cols, j->x.ptr, j->y.ptr);
  };
  return queue(info.Env(), task, {j->x.value, j->y.value}, !j->x.device);
}

}  // namespace

void init_layers(Napi::Env env, Napi::Object exports) {
  exports.Set("conv2d", Napi::Function::New(env, Conv2d));
  exports.Set("winogradCacheFloats", Napi::Function::New(env, WinogradCacheFloats));
  exports.Set("maxPool2d", Napi::Function::New(env, MaxPool2d));
  exports.Set("lrn", Napi::Function::New(env, Lrn));
  exports.Set("lrnMaxPool2d", Napi::Function::New(env, LrnMaxPool2d));
  exports.Set("linear", Napi::Function::New(env, Linear));
  exports.Set("elementwise", Napi::Function::New(env, Elementwise));
}

}  // namespace binding
}  // namespace sppnet
