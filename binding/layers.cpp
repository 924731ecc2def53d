// Layer entry points: unpack what lib/ prepared and checked, pick the backend, queue.
#include <algorithm>

#include "common.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace binding {
namespace {

constexpr const char* kLayerBuffers = "layer buffers";  // one_device's error: "internal: layer buffers on different devices"

Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, true);
  Conv2dParams p = conv_params(a, true, &j->in, j->out);
  Buffers h;
  j->x = h.arg(a, "input", j->in.end);
  j->y = h.arg(a, "output", j->out.end);
  j->w = h.arg(a, "weight", int64_t{p.out_channels} * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w);
  j->b = h.optional(a, "bias", p.out_channels);
  // Optional: the caller's buffer for the CPU Winograd path's transformed filters.
  const Napi::Value fc = a.Get("filterCache");
  if (fc.IsTypedArray() && fc.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    Napi::Float32Array f = fc.As<Napi::Float32Array>();
    p.filter_cache = f.Data();
    p.filter_cache_len = static_cast<int64_t>(f.ElementLength());
    h.keep.push_back(fc);
  }
  const bool dev = one_device(info.Env(), {&j->x, &j->y, &j->w, &j->b}, kLayerBuffers);
  return queue_op(info.Env(), dev, h, [j, p](const OpTable& ops) {
    return ops.conv2d_forward(j->in.view, j->x.ptr, p, j->w.ptr, j->b.ptr, j->out.view, j->y.ptr);
  });
}

// convCacheFloats({ params, relu, out layout }): the filter cache a CPU conv2d of this shape
// takes, or 0 (none of the Winograd, direct and lanes paths for it).
Napi::Value ConvCacheFloats(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const RaggedLayout out = ragged_layout(a, "out");
  return Napi::Number::New(info.Env(), static_cast<double>(cpu::conv_cache_floats(conv_params(a, true, nullptr, out), out.view)));
}

// maxPool2d, and lrnMaxPool2d (with_lrn: LRN then the pool in one pass; the LRN's fields too).
Napi::Value Pool(const Napi::CallbackInfo& info, bool with_lrn) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, true);
  const Pool2dParams p = pool_params(a, j->in, j->out);
  const LrnParams lp = with_lrn ? lrn_params(a) : LrnParams{};
  Buffers h;
  j->x = h.arg(a, "input", j->in.end);
  j->y = h.arg(a, "output", j->out.end);
  const bool dev = one_device(info.Env(), {&j->x, &j->y}, kLayerBuffers);
  return queue_op(info.Env(), dev, h, [j, p, lp, with_lrn](const OpTable& ops) {
    return with_lrn ? ops.lrn_max_pool2d_forward(j->in.view, j->x.ptr, lp, p, j->out.view, j->y.ptr)
                    : ops.max_pool2d_forward(j->in.view, j->x.ptr, p, j->out.view, j->y.ptr);
  }, j->out.end * p.kernel_h * p.kernel_w + (with_lrn ? j->in.end * lp.size : 0));
}

Napi::Value MaxPool2d(const Napi::CallbackInfo& info) { return Pool(info, false); }
Napi::Value LrnMaxPool2d(const Napi::CallbackInfo& info) { return Pool(info, true); }

// lrn({ input, output, ... }) and lrnBackward({ input, gradOutput, gradInput, ... }): one map layout in and out.
Napi::Value LrnOp(const Napi::CallbackInfo& info, bool backward) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, false);
  const LrnParams p = lrn_params(a);
  Buffers h;
  j->x = h.arg(a, "input", j->in.end);
  if (backward) {
    j->dy = h.arg(a, "gradOutput", j->in.end);
    j->dx = h.arg(a, "gradInput", j->in.end);
  } else {
    j->y = h.arg(a, "output", j->in.end);
  }
  const bool dev = backward ? one_device(info.Env(), {&j->x, &j->dy, &j->dx}) : one_device(info.Env(), {&j->x, &j->y}, kLayerBuffers);
  return queue_op(info.Env(), dev, h, [j, p, backward](const OpTable& ops) {
    return backward ? ops.lrn_backward(j->in.view, j->x.ptr, p, j->dy.ptr, j->dx.ptr) : ops.lrn_forward(j->in.view, j->x.ptr, p, j->y.ptr);
  });
}

Napi::Value Lrn(const Napi::CallbackInfo& info) { return LrnOp(info, false); }
Napi::Value LrnBackward(const Napi::CallbackInfo& info) { return LrnOp(info, true); }

Napi::Value Linear(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<LayerJob>();
  const int64_t rows = a.Get("rows").As<Napi::Number>().Int64Value();
  const int32_t in_f = int_field(a, "inFeatures"), out_f = int_field(a, "outFeatures");
  const bool relu = a.Get("relu").ToBoolean();
  const int32_t math = int_field(a, "math");
  // bf16: the weight buffer holds out * in bfloat16 values, two to a float (sppnet/bf16.h).
  const bool bf16 = a.Get("weightBf16").ToBoolean();
  const int64_t weights = int64_t{in_f} * out_f;
  Buffers h;
  j->x = h.arg(a, "input", rows * in_f);
  j->y = h.arg(a, "output", rows * out_f);
  j->w = h.arg(a, "weight", bf16 ? (weights + 1) / 2 : weights);
  j->b = h.optional(a, "bias", out_f);
  // Optional: the caller's buffer for the CPU AMX path's packed weights.
  float* cache = nullptr;
  int64_t cache_len = 0;
  const Napi::Value wc = a.Get("weightCache");
  if (wc.IsTypedArray() && wc.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    Napi::Float32Array f = wc.As<Napi::Float32Array>();
    cache = f.Data();
    cache_len = static_cast<int64_t>(f.ElementLength());
    h.keep.push_back(wc);
  }
  const bool dev = one_device(info.Env(), {&j->x, &j->y, &j->w, &j->b}, kLayerBuffers);
  return queue_op(info.Env(), dev, h, [j, rows, in_f, out_f, relu, math, bf16, cache, cache_len](const OpTable& ops) {
    if (bf16)
      return ops.linear_bf16_forward(rows, in_f, out_f, j->x.ptr, reinterpret_cast<const uint16_t*>(j->w.ptr), j->b.ptr, relu, math, j->y.ptr,
                                     cache, cache_len);
    return ops.linear_forward(rows, in_f, out_f, j->x.ptr, j->w.ptr, j->b.ptr, relu, math, j->y.ptr, cache, cache_len);
  }, rows * weights + rows * out_f);
}

// linearCacheFloats({ rows, inFeatures, outFeatures, math, weightBf16 }): the weight cache a CPU
// linear of this shape takes, or 0 (the AMX path does not run for it).
Napi::Value LinearCacheFloats(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const int64_t rows = a.Get("rows").As<Napi::Number>().Int64Value();
  return Napi::Number::New(info.Env(), static_cast<double>(cpu::linear_cache_floats(rows, int_field(a, "inFeatures"), int_field(a, "outFeatures"),
                                                                                      int_field(a, "math"), a.Get("weightBf16").ToBoolean())));
}

// elementwise({ op: 'relu' | 'softmax', rows, cols, input, output })
Napi::Value Elementwise(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<LayerJob>();
  const std::string op = a.Get("op").As<Napi::String>().Utf8Value();
  const int64_t rows = a.Get("rows").As<Napi::Number>().Int64Value();
  const int32_t cols = int_field(a, "cols");
  Buffers h;
  j->x = h.arg(a, "input", rows * cols);
  j->y = h.arg(a, "output", rows * cols);
  const bool dev = one_device(info.Env(), {&j->x, &j->y}, kLayerBuffers);
  const bool softmax = op == "softmax";
  if (!softmax && op != "relu") throw Napi::TypeError::New(info.Env(), "internal: unknown elementwise op");
  return queue_op(info.Env(), dev, h, [j, rows, cols, softmax](const OpTable& ops) {
    return softmax ? ops.softmax_forward(rows, cols, j->x.ptr, j->y.ptr) : ops.relu_forward(rows * cols, j->x.ptr, j->y.ptr);
  }, 3 * rows * cols);
}

// copyChannels({ part, whole, in (part's layout), out (whole's layout), channelOffset, toWhole }):
// concatenation along channels (toWhole) and its gradient.
Napi::Value CopyChannels(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, true);
  const int32_t at = int_field(a, "channelOffset");
  const bool to_whole = a.Get("toWhole").ToBoolean();
  const RaggedView &p = j->in.view, &w = j->out.view;
  bool fits = p.count == w.count && at >= 0 && int64_t{at} + p.channels <= w.channels;
  for (int32_t m = 0; fits && m < p.count; ++m) fits = p.height[m] == w.height[m] && p.width[m] == w.width[m];
  if (!fits) throw Napi::RangeError::New(info.Env(), "internal: copyChannels layouts");
  Buffers h;
  j->x = h.arg(a, "part", j->in.end);
  j->y = h.arg(a, "whole", j->out.end);
  const bool dev = one_device(info.Env(), {&j->x, &j->y}, kLayerBuffers);
  return queue_op(info.Env(), dev, h, [j, at, to_whole](const OpTable& ops) {
    return ops.copy_channels(j->in.view, j->x.ptr, j->out.view, j->y.ptr, at, to_whole);
  });
}

// channelSums({ in layout, u, v?, sums: Float64Array(2 * count * C) }): per-plane sums (batch norm).
Napi::Value ChannelSums(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, false);
  Napi::Float64Array sums = float64_array(a, "sums");
  if (static_cast<int64_t>(sums.ElementLength()) != 2 * int64_t{j->in.view.count} * j->in.view.channels)
    throw Napi::RangeError::New(info.Env(), "internal: channelSums sums length");
  Buffers h;
  j->x = h.arg(a, "u", j->in.end);
  j->y = h.optional(a, "v", j->in.end);
  const bool dev = one_device(info.Env(), {&j->x, &j->y}, kLayerBuffers);
  h.keep.push_back(sums);
  double* out = sums.Data();
  return queue_op(info.Env(), dev, h, [j, out](const OpTable& ops) { return ops.channel_sums(j->in.view, j->x.ptr, j->y.ptr, out); });
}

// channelAffine({ in layout, u, v?, output, a, b?, d: Float32Array(C), relu }): y = a u + b v + d per channel.
Napi::Value ChannelAffine(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, false);
  const size_t C = static_cast<size_t>(j->in.view.channels);
  const bool with_v = has(a, "v");
  auto coef = [&](const char* name) {
    Napi::Float32Array f = typed_array<float>(info.Env(), a.Get(name), napi_float32_array, std::string("field '") + name + "'", "a Float32Array");
    if (f.ElementLength() != C) throw Napi::RangeError::New(info.Env(), std::string("internal: channelAffine ") + name + " length");
    return std::vector<float>(f.Data(), f.Data() + C);
  };
  auto ca = std::make_shared<std::vector<float>>(coef("a"));
  auto cb = std::make_shared<std::vector<float>>(with_v ? coef("b") : std::vector<float>(C, 0.f));
  auto cd = std::make_shared<std::vector<float>>(coef("d"));
  const bool relu = a.Get("relu").ToBoolean();
  Buffers h;
  j->x = h.arg(a, "u", j->in.end);
  j->dy = h.optional(a, "v", j->in.end);
  j->y = h.arg(a, "output", j->in.end);
  const bool dev = one_device(info.Env(), {&j->x, &j->dy, &j->y}, kLayerBuffers);
  return queue_op(info.Env(), dev, h, [j, ca, cb, cd, relu](const OpTable& ops) {
    return ops.channel_affine(j->in.view, j->x.ptr, ca->data(), j->dy.ptr, j->dy.ptr ? cb->data() : nullptr, cd->data(), relu, j->y.ptr);
  });
}

// nms({ n, boxes, scores, classes?, iou, keep: Int32Array(n), kept: Int32Array(1) }): NMS (batched
// when classes is given); the kept indices into keep, their count into kept[0].
Napi::Value Nms(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const int64_t n = count(a, "n");
  if (n > 0x7fffffff) throw Napi::RangeError::New(info.Env(), "internal: nms count");
  Napi::Int32Array keep = int32_array(a, "keep"), kept = int32_array(a, "kept");
  if (static_cast<int64_t>(keep.ElementLength()) != n || kept.ElementLength() != 1) throw Napi::RangeError::New(info.Env(), "internal: nms result arrays");
  const double iou = number(a, "iou");
  if (!(iou >= 0 && iou <= 1)) throw Napi::RangeError::New(info.Env(), "internal: nms iou");
  auto j = std::make_shared<LayerJob>();
  Buffers h;
  j->x = h.arg(a, "boxes", 4 * n);
  j->y = h.arg(a, "scores", n);
  j->w = h.optional(a, "classes", n);
  const bool dev = one_device(info.Env(), {&j->x, &j->y, &j->w});
  h.keep.push_back(keep);
  h.keep.push_back(kept);
  int32_t *kp = keep.Data(), *cp = kept.Data();
  const int32_t n32 = static_cast<int32_t>(n);
  return queue_op(info.Env(), dev, h, [j, n32, iou, kp, cp](const OpTable& ops) { return ops.nms(n32, j->x.ptr, j->y.ptr, j->w.ptr, iou, kp, cp); });
}

// cropResize({ in layout, input, boxes, k, outH, outW, context, align, output }): k windows of the
// input maps (boxes [k, 5], checked by the backend) warped to [k, C, outH, outW] in output.
Napi::Value CropResize(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, false);
  const int64_t k = count(a, "k");
  CropParams p;
  p.out_h = int_field(a, "outH");
  p.out_w = int_field(a, "outW");
  p.context = int_field(a, "context");
  p.align = int_field(a, "align");
  const int64_t n = k * j->in.view.channels * int64_t{p.out_h} * p.out_w;
  if (k > 0x7fffffff || p.out_h < 1 || p.out_w < 1 || p.out_h > 4096 || p.out_w > 4096 || p.context < 0 ||
      2 * int64_t{p.context} >= std::min(p.out_h, p.out_w) || (p.align != kCropPixels && p.align != kCropCorners) || n > 0x7fffffff)
    throw Napi::RangeError::New(info.Env(), "internal: cropResize parameters");
  Buffers h;
  j->x = h.arg(a, "input", j->in.end);
  j->w = h.arg(a, "boxes", 5 * k);
  j->y = h.arg(a, "output", n);
  const bool dev = one_device(info.Env(), {&j->x, &j->w, &j->y}, kLayerBuffers);
  const int32_t k32 = static_cast<int32_t>(k);
  return queue_op(info.Env(), dev, h, [j, k32, p](const OpTable& ops) { return ops.crop_resize(j->in.view, j->x.ptr, k32, j->w.ptr, p, j->y.ptr); });
}

}  // namespace

void init_layers(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports, {{"conv2d", Conv2d}, {"convCacheFloats", ConvCacheFloats}, {"maxPool2d", MaxPool2d},
                                   {"lrn", Lrn}, {"lrnBackward", LrnBackward}, {"lrnMaxPool2d", LrnMaxPool2d}, {"linear", Linear}, {"linearCacheFloats", LinearCacheFloats},
                                   {"elementwise", Elementwise}, {"copyChannels", CopyChannels},
                                   {"channelSums", ChannelSums}, {"channelAffine", ChannelAffine}, {"nms", Nms}, {"cropResize", CropResize}});
}

}  // namespace binding
}  // namespace sppnet
