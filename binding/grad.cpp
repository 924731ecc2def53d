// Training entry points (backward passes, loss, optimizer steps): unpack what lib/ops/ (the backward ops, loss and updates) prepared
// and checked, pick the backend by the device of the buffers, queue.
#include <array>
#include <memory>
#include <string>

#include "common.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace binding {
namespace {

// The buffers of an op over n floats each, obj[name] for each name (optional where it ends in
// '?'), all on one device (*device).
template <size_t N>
std::shared_ptr<std::array<FloatArg, N>> flat_buffers(const Napi::Object& a, Buffers& h, int64_t n, const std::array<const char*, N>& names,
                                                      bool* device) {
  auto x = std::make_shared<std::array<FloatArg, N>>();
  std::vector<const FloatArg*> all;
  for (size_t k = 0; k < N; ++k) {
    const std::string name = names[k];
    (*x)[k] = name.back() == '?' ? h.optional(a, name.substr(0, name.size() - 1).c_str(), n) : h.arg(a, names[k], n);
    all.push_back(&(*x)[k]);
  }
  *device = one_device(a.Env(), all);
  return x;
}

Napi::Value Conv2dBackward(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, true);
  const Conv2dParams p = conv_params(a, false, &j->in, j->out);
  const int64_t weights = int64_t{p.out_channels} * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w;
  Buffers h;
  j->x = h.arg(a, "input", j->in.end);
  j->w = h.arg(a, "weight", weights);
  j->dy = h.arg(a, "gradOutput", j->out.end);
  j->dx = h.optional(a, "gradInput", j->in.end);
  j->dw = h.arg(a, "gradWeight", weights);
  j->db = h.optional(a, "gradBias", p.out_channels);
  const bool dev = one_device(info.Env(), {&j->x, &j->w, &j->dy, &j->dx, &j->dw, &j->db});
  return queue_op(info.Env(), dev, h, [j, p](const OpTable& ops) {
    return ops.conv2d_backward(j->in.view, j->x.ptr, p, j->w.ptr, j->out.view, j->dy.ptr, j->dx.ptr, j->dw.ptr, j->db.ptr);
  });
}

Napi::Value MaxPool2dBackward(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = layer_job(a, true);
  const Pool2dParams p = pool_params(a, j->in, j->out);
  Buffers h;
  j->x = h.arg(a, "input", j->in.end);
  j->dy = h.arg(a, "gradOutput", j->out.end);
  j->dx = h.arg(a, "gradInput", j->in.end);
  const bool dev = one_device(info.Env(), {&j->x, &j->dy, &j->dx});
  return queue_op(info.Env(), dev, h, [j, p](const OpTable& ops) {
    return ops.max_pool2d_backward(j->in.view, j->x.ptr, p, j->out.view, j->dy.ptr, j->dx.ptr);
  });
}

Napi::Value LinearBackward(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  auto j = std::make_shared<LayerJob>();
  const int64_t rows = count(a, "rows");
  const int32_t in_f = int_field(a, "inFeatures"), out_f = int_field(a, "outFeatures");
  if (in_f < 0 || out_f < 0) throw Napi::RangeError::New(info.Env(), "internal: linear features");
  Buffers h;
  j->x = h.arg(a, "input", rows * in_f);
  j->w = h.arg(a, "weight", int64_t{out_f} * in_f);
  j->dy = h.arg(a, "gradOutput", rows * out_f);
  j->dx = h.optional(a, "gradInput", rows * in_f);
  j->dw = h.arg(a, "gradWeight", int64_t{out_f} * in_f);
  j->db = h.optional(a, "gradBias", out_f);
  const bool dev = one_device(info.Env(), {&j->x, &j->w, &j->dy, &j->dx, &j->dw, &j->db});
  return queue_op(info.Env(), dev, h, [j, rows, in_f, out_f](const OpTable& ops) {
    return ops.linear_backward(rows, in_f, out_f, j->x.ptr, j->w.ptr, j->dy.ptr, j->dx.ptr, j->dw.ptr, j->db.ptr);
  });
}

// pointwise({ op: 'reluBackward' | 'multiply', n, a, b, output }): reluBackward reads a = the
// forward output, b = its gradient.
Napi::Value Pointwise(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const std::string op = a.Get("op").As<Napi::String>().Utf8Value();
  const bool relu = op == "reluBackward";
  if (!relu && op != "multiply") throw Napi::TypeError::New(info.Env(), "internal: unknown pointwise op");
  const int64_t n = count(a, "n");
  Buffers h;
  bool dev = false;
  const auto x = flat_buffers<3>(a, h, n, {"a", "b", "output"}, &dev);
  return queue_op(info.Env(), dev, h, [x, n, relu](const OpTable& ops) {
    const float *p = (*x)[0].ptr, *q = (*x)[1].ptr;
    float* y = (*x)[2].ptr;
    return relu ? ops.relu_backward(n, p, q, y) : ops.multiply(n, p, q, y);
  });
}

// dropout({ n, input, output, mask, seed, threshold, scale })
Napi::Value Dropout(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const int64_t n = count(a, "n");
  DropoutParams p;
  const double seed = number(a, "seed");
  if (!(seed >= 0) || seed > 9007199254740991.0) throw Napi::RangeError::New(info.Env(), "internal: dropout seed");
  p.seed = static_cast<uint64_t>(seed);
  const double thr = number(a, "threshold");
  if (!(thr >= 0) || thr > 16777216.0) throw Napi::RangeError::New(info.Env(), "internal: dropout threshold");
  p.threshold = static_cast<uint32_t>(thr);
  p.scale = float_field(a, "scale");
  Buffers h;
  bool dev = false;
  const auto x = flat_buffers<3>(a, h, n, {"input", "output", "mask"}, &dev);
  return queue_op(info.Env(), dev, h, [x, n, p](const OpTable& ops) {
    return ops.dropout_forward(n, (*x)[0].ptr, p, (*x)[1].ptr, (*x)[2].ptr);
  });
}

// softmaxCrossEntropy({ rows, cols, logits, grad, labels: Int32Array, rowLoss: Float64Array,
// rowCorrect: Int32Array }): per-row results land in the host arrays; lib/ sums them.
Napi::Value SoftmaxCrossEntropy(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const int64_t rows = count(a, "rows");
  const int32_t cols = int_field(a, "cols");
  if (cols < 1) throw Napi::RangeError::New(info.Env(), "internal: softmax cross-entropy cols");
  Napi::Int32Array labels = int32_array(a, "labels"), correct = int32_array(a, "rowCorrect");
  Napi::Float64Array loss = float64_array(a, "rowLoss");
  if (static_cast<int64_t>(labels.ElementLength()) != rows || static_cast<int64_t>(correct.ElementLength()) != rows ||
      static_cast<int64_t>(loss.ElementLength()) != rows)
    throw Napi::RangeError::New(info.Env(), "internal: softmax cross-entropy row arrays");
  const int32_t* lp = labels.Data();
  for (int64_t r = 0; r < rows; ++r)
    if (lp[r] < 0 || lp[r] >= cols) throw Napi::RangeError::New(info.Env(), "internal: label out of range");
  Buffers h;
  bool dev = false;
  const auto x = flat_buffers<2>(a, h, rows * cols, {"logits", "grad"}, &dev);
  h.keep.push_back(labels);
  h.keep.push_back(correct);
  h.keep.push_back(loss);
  int32_t* cp = correct.Data();
  double* dp = loss.Data();
  return queue_op(info.Env(), dev, h, [x, rows, cols, lp, cp, dp](const OpTable& ops) {
    return ops.softmax_cross_entropy(rows, cols, (*x)[0].ptr, lp, (*x)[1].ptr, dp, cp);
  });
}

// sgdStep({ n, param, grad, buf?, lr, momentum, dampening, weightDecay, nesterov, firstStep })
Napi::Value SgdStep(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const int64_t n = count(a, "n");
  SgdParams p;
  float_fields(a, p, {{"lr", &SgdParams::lr}, {"momentum", &SgdParams::momentum}, {"dampening", &SgdParams::dampening}, {"weightDecay", &SgdParams::weight_decay}});
  p.nesterov = a.Get("nesterov").ToBoolean();
  p.first_step = a.Get("firstStep").ToBoolean();
  if (p.momentum != 0.f && !has(a, "buf")) throw Napi::TypeError::New(info.Env(), "internal: momentum without a buffer");
  Buffers h;
  bool dev = false;
  const auto x = flat_buffers<3>(a, h, n, {"param", "grad", "buf?"}, &dev);
  return queue_op(info.Env(), dev, h, [x, n, p](const OpTable& ops) {
    return ops.sgd_step(n, (*x)[0].ptr, (*x)[1].ptr, (*x)[2].ptr, p);
  });
}

// adamStep({ n, param, grad, m, v, lr, beta1, beta2, eps, weightDecay, decoupled, stepSize, biasCorrection2Sqrt })
Napi::Value AdamStep(const Napi::CallbackInfo& info) {
  const Napi::Object a = info[0].As<Napi::Object>();
  const int64_t n = count(a, "n");
  AdamParams p;
  float_fields(a, p, {{"lr", &AdamParams::lr}, {"beta1", &AdamParams::beta1}, {"beta2", &AdamParams::beta2}, {"eps", &AdamParams::eps},
                      {"weightDecay", &AdamParams::weight_decay}, {"stepSize", &AdamParams::step_size}, {"biasCorrection2Sqrt", &AdamParams::bias_correction2_sqrt}});
  p.decoupled = a.Get("decoupled").ToBoolean();
  Buffers h;
  bool dev = false;
  const auto x = flat_buffers<4>(a, h, n, {"param", "grad", "m", "v"}, &dev);
  return queue_op(info.Env(), dev, h, [x, n, p](const OpTable& ops) {
    return ops.adam_step(n, (*x)[0].ptr, (*x)[1].ptr, (*x)[2].ptr, (*x)[3].ptr, p);
  });
}

}  // namespace

void init_grad(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports, {{"conv2dBackward", Conv2dBackward}, {"maxPool2dBackward", MaxPool2dBackward},
                                   {"linearBackward", LinearBackward}, {"pointwise", Pointwise},
                                   {"dropout", Dropout}, {"softmaxCrossEntropy", SoftmaxCrossEntropy}, {"sgdStep", SgdStep},
                                   {"adamStep", AdamStep}});
}

}  // namespace binding
}  // namespace sppnet
