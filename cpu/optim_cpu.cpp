// CPU optimizer steps (PyTorch's SGD and Adam/AdamW formulas), in place, vectorised per ISA.
#include <cmath>

#include "isa.h"
#include "parallel.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cpu {

namespace {

// One SGD update of [a, e): the flags are template parameters so that each loop is branch-free
// and vectorises (ISA clones); the arithmetic is the same expression by expression.
template <bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
SPP_ISA_CLONES void sgd_range(int64_t a, int64_t e, float* param, const float* grad, float* buf,
                              SgdParams p) {
  const float damp = 1.f - p.dampening;
  for (int64_t i = a; i < e; ++i) {
    float d = grad[i];
    if (kDecay) d = d + p.weight_decay * param[i];
    if (kMomentum) {
      const float b = kFirst ? d : p.momentum * buf[i] + damp * d;
      buf[i] = b;
      d = kNesterov ? d + p.momentum * b : b;
    }
    param[i] = param[i] - p.lr * d;
  }
}

template <bool kDecay, bool kMomentum, bool kFirst>
void sgd_pick_nesterov(int64_t a, int64_t e, float* param, const float* grad, float* buf, const SgdParams& p) {
  if (p.nesterov)
    sgd_range<kDecay, kMomentum, kFirst, true>(a, e, param, grad, buf, p);
  else
    sgd_range<kDecay, kMomentum, kFirst, false>(a, e, param, grad, buf, p);
}

template <bool kDecay>
void sgd_pick(int64_t a, int64_t e, float* param, const float* grad, float* buf, const SgdParams& p) {
  if (p.momentum == 0.f)
    sgd_range<kDecay, false, false, false>(a, e, param, grad, buf, p);
  else if (p.first_step)
    sgd_pick_nesterov<kDecay, true, true>(a, e, param, grad, buf, p);
  else
    sgd_pick_nesterov<kDecay, true, false>(a, e, param, grad, buf, p);
}

}  // namespace

Status sgd_step(int64_t n, float* param, const float* grad, float* buf, const SgdParams& p) {
  parallel_for(n, int64_t{1} << 15, [&](int64_t a, int64_t e) {
    if (p.weight_decay != 0.f)
      sgd_pick<true>(a, e, param, grad, buf, p);
    else
      sgd_pick<false>(a, e, param, grad, buf, p);
  });
  return Status::Ok();
}

namespace {

// One Adam / AdamW update of [a, e) (kDecay: 0 none, 1 L2 into the gradient, 2 decoupled); the
// flags are template parameters so that the loop is branch-free and vectorises (ISA clones).
template <int kDecay, bool kLerpLow>
SPP_ISA_CLONES void adam_range(int64_t a, int64_t e, float* param, const float* grad, float* m, float* v, AdamParams p) {
  const float w1 = 1.f - p.beta1, w2 = 1.f - p.beta2;
  const float decay = 1.f - p.lr * p.weight_decay;
  for (int64_t i = a; i < e; ++i) {
    float g = grad[i], x = param[i];
    if (kDecay == 2) x = x * decay;
    if (kDecay == 1) g = g + p.weight_decay * x;
    // m.lerp_(g, 1 - beta1) as PyTorch computes it (weight < 0.5: m + w * (g - m)).
    const float mi = kLerpLow ? m[i] + w1 * (g - m[i]) : g - (g - m[i]) * (1.f - w1);
    const float vi = v[i] * p.beta2 + w2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / p.bias_correction2_sqrt + p.eps;
    param[i] = x - p.step_size * mi / denom;
  }
}

template <int kDecay>
void adam_pick(int64_t a, int64_t e, float* param, const float* grad, float* m, float* v, const AdamParams& p) {
  if (1.f - p.beta1 < 0.5f)
    adam_range<kDecay, true>(a, e, param, grad, m, v, p);
  else
    adam_range<kDecay, false>(a, e, param, grad, m, v, p);
}

}  // namespace

Status adam_step(int64_t n, float* param, const float* grad, float* m, float* v, const AdamParams& p) {
  parallel_for(n, int64_t{1} << 15, [&](int64_t a, int64_t e) {
    if (p.weight_decay == 0.f)
      adam_pick<0>(a, e, param, grad, m, v, p);
    else if (p.decoupled)
      adam_pick<2>(a, e, param, grad, m, v, p);
    else
      adam_pick<1>(a, e, param, grad, m, v, p);
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
