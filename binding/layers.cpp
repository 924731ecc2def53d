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

// a.params ([cin, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, math]) and a.relu, checked
// against the output layout (and the input's, when given).
Conv2dParams forward_conv_params(const Napi::Object& a, const RaggedLayout* in, const RaggedLayout& out) {
  const Napi::Int32Array pr = int32_array(a, "params");
  if (pr.ElementLength() != 12) throw Napi::RangeError::New(a.Env(), "internal: conv params");
  Conv2dParams p;
  int32_t* f[11] = {&p.in_channels, &p.out_channels, &p.kernel_h, &p.kernel_w, &p.stride_h, &p.stride_w,
                    &p.pad_h,       &p.pad_w,        &p.dilation_h, &p.dilation_w, &p.groups};
  for (int k = 0; k < 11; ++k) *f[k] = pr[k];
  p.math = pr[11];
  p.relu = a.Get("relu").ToBoolean();
  if (p.groups < 1 || p.in_channels % p.groups || p.out_channels % p.groups || p.out_channels != out.view.channels ||
      (in && (p.in_channels != in->view.channels || in->view.count != out.view.count)))
    throw Napi::RangeError::New(a.Env(), "internal: conv shapes");
  return p;
}

Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  j->in = ragged_layout(a, "in");
  j->out = ragged_layout(a, "out");
  Conv2dParams p = forward_conv_params(a, &j->in, j->out);
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
               runs_on(j->x.device));
}

// winogradCacheFloats({ params, relu, out layout }): the filter cache a CPU conv2d of this shape
// takes, or 0 (no Winograd for it).
Napi::Value WinogradCacheFloats(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const RaggedLayout out = ragged_layout(a, "out");
  return Napi::Number::New(info.Env(), static_cast<double>(cpu::winograd_cache_floats(forward_conv_params(a, nullptr, out), out.view)));
}

Napi::Value MaxPool2d(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  j->in = ragged_layout(a, "in");
  j->out = ragged_layout(a, "out");
  const Pool2dParams p = pool_params(a, j->in, j->out);
  j->x = float_arg(a, "input", j->in.end);
  j->y = float_arg(a, "output", j->out.end);
  same_device(info.Env(), {&j->x, &j->y});
  auto task = [j, p]() {
    return j->x.device ? cuda::max_pool2d_forward(j->in.view, j->x.ptr, p, j->out.view, j->y.ptr)
                       : cpu::max_pool2d_forward(j->in.view, j->x.ptr, p, j->out.view, j->y.ptr);
  };
  return queue(info.Env(), task, {j->x.value, j->y.value}, runs_on(j->x.device));
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
  return queue(info.Env(), task, {j->x.value, j->y.value}, runs_on(j->x.device));
}

Napi::Value LrnMaxPool2d(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<Job>();
  j->in = ragged_layout(a, "in");
  j->out = ragged_layout(a, "out");
  const Pool2dParams p = pool_params(a, j->in, j->out);
  const LrnParams lp = lrn_params(a);
  j->x = float_arg(a, "input", j->in.end);
  j->y = float_arg(a, "output", j->out.end);
  same_device(info.Env(), {&j->x, &j->y});
  auto task = [j, p, lp]() {
    return j->x.device ? cuda::lrn_max_pool2d_forward(j->in.view, j->x.ptr, lp, p, j->out.view, j->y.ptr)
                       : cpu::lrn_max_pool2d_forward(j->in.view, j->x.ptr, lp, p, j->out.view, j->y.ptr);
  };
  return queue(info.Env(), task, {j->x.value, j->y.value}, runs_on(j->x.device));
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
  return queue(info.Env(), task, {j->x.value, j->y.value, j->w.value, j->has_bias ? j->b.value : info.Env().Undefined()}, runs_on(j->x.device));
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
  return queue(info.Env(), task, {j->x.value, j->y.value}, runs_on(j->x.device));
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
