// Non-maximum suppression as torchvision 0.14 / torch 1.13 compute it on the CPU, shared by both
// backends (cpu/nms_cpu.cpp, cuda/nms_cuda.cu): the processing order (host), the suppression test
// of one pair (host and device) and the merge of batched NMS's per-class results (host).
//
// torchvision.ops.nms (0.14, csrc/ops/cpu/nms_kernel.cpp): order = scores.sort(stable=true, 0,
// descending=true), torch 1.13's std::stable_sort over (score, index) with "a NaN before a number,
// else a > b": NaN scores first, ties (and -0 with 0) in index order. Then greedily, in that order,
// a box not yet suppressed is kept and suppresses every later box whose float IoU with it,
// promoted to double, is > the threshold.
//
// torchvision.ops.batched_nms: defined here as its `_batched_nms_vanilla` (the path torchvision
// takes on the CPU above 1000 boxes): per class, nms of that class's boxes; then the kept indices,
// ascending, sorted by score with Python's default sort(descending=True), which in torch 1.13 is
// NOT stable: std::sort (libstdc++'s introsort) with the same comparator, so tied scores of kept
// boxes come out in introsort's order (index order up to 16 kept boxes, not in general above).
// nms_merge runs that same std::sort; with libstdc++ (GCC's, which torch's Linux builds use) the
// permutation is the same. (Up to 1000 boxes torchvision instead shifts each class's boxes by
// class * (max coordinate + 1) and runs one nms: ties then come out in index order, and the shift
// can round coordinates; see README.)
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "status.h"

namespace sppnet {

// The largest float <= t: for a float v, (double)v > t  <=>  v > nms_threshold(t).
inline float nms_threshold(double t) {
  float f = static_cast<float>(t);
  if (static_cast<double>(f) > t) f = std::nextafter(f, -INFINITY);
  return f;
}

// torchvision's test of box b against the kept box a, in float arithmetic step for step
// (std::max(x, y) = x < y ? y : x; std::min(x, y) = y < x ? y : x), with areas (x2 - x1) * (y2 - y1).
// Under nvcc each operation is rounded on its own (no FMA contraction), as on the CPU.
#if defined(__CUDA_ARCH__)
#define SPP_NMS_SUB(a, b) __fsub_rn(a, b)
#define SPP_NMS_ADD(a, b) __fadd_rn(a, b)
#define SPP_NMS_MUL(a, b) __fmul_rn(a, b)
#define SPP_NMS_DIV(a, b) __fdiv_rn(a, b)
#else
#define SPP_NMS_SUB(a, b) ((a) - (b))
#define SPP_NMS_ADD(a, b) ((a) + (b))
#define SPP_NMS_MUL(a, b) ((a) * (b))
#define SPP_NMS_DIV(a, b) ((a) / (b))
#endif
SPP_HD float nms_area(float x1, float y1, float x2, float y2) { return SPP_NMS_MUL(SPP_NMS_SUB(x2, x1), SPP_NMS_SUB(y2, y1)); }
SPP_HD bool nms_suppresses(float ax1, float ay1, float ax2, float ay2, float aarea, float bx1, float by1, float bx2, float by2, float barea,
                           float thr) {
  const float xx1 = ax1 < bx1 ? bx1 : ax1, yy1 = ay1 < by1 ? by1 : ay1;
  const float xx2 = bx2 < ax2 ? bx2 : ax2, yy2 = by2 < ay2 ? by2 : ay2;
  const float dw = SPP_NMS_SUB(xx2, xx1), dh = SPP_NMS_SUB(yy2, yy1);
  const float w = 0.f < dw ? dw : 0.f, h = 0.f < dh ? dh : 0.f;
  const float inter = SPP_NMS_MUL(w, h);
  const float ovr = SPP_NMS_DIV(inter, SPP_NMS_SUB(SPP_NMS_ADD(aarea, barea), inter));
  return ovr > thr;
}
#undef SPP_NMS_SUB
#undef SPP_NMS_ADD
#undef SPP_NMS_MUL
#undef SPP_NMS_DIV

// A box that can neither suppress nor be suppressed: x2 <= x1, y2 <= y1 or a NaN coordinate makes
// the intersection with any box 0 (or NaN), so its IoU is never > a threshold >= 0.
SPP_HD bool nms_inert(float x1, float y1, float x2, float y2) { return !(x2 > x1) || !(y2 > y1); }

struct NmsKey {
  float score;
  int32_t index;
};

// torch 1.13's CPU sort(descending=true) comparator: NaN first, else greater.
inline bool nms_before(const NmsKey& a, const NmsKey& b) { return (std::isnan(a.score) && !std::isnan(b.score)) || a.score > b.score; }

// The processing order of n boxes: order[p] is the box taken p-th; group[p] its class's ordinal
// (boxes interact only within a group; positions of one group are contiguous, each group in its
// own stable order). classes null: one group, all n. Else classes must be integers
// (an error naming the first that is not).
inline Status nms_order(int32_t n, const float* scores, const float* classes, std::vector<int32_t>* order, std::vector<int32_t>* group) {
  order->assign(static_cast<size_t>(n), 0);
  group->assign(static_cast<size_t>(n), 0);
  std::vector<int32_t> by_class(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) by_class[i] = i;
  if (classes) {
    for (int32_t i = 0; i < n; ++i)
      if (!(std::isfinite(classes[i]) && std::trunc(classes[i]) == classes[i])) {
        char v[32];
        std::snprintf(v, sizeof v, "%.9g", static_cast<double>(classes[i]));
        return Status::Error(Code::kInvalidArgument, "classes[" + std::to_string(i) + "] is " + v + ": class ids must be integers");
      }
    std::stable_sort(by_class.begin(), by_class.end(), [&](int32_t a, int32_t b) { return classes[a] < classes[b]; });
  }
  std::vector<NmsKey> keys;
  int32_t g = 0;
  for (int32_t s = 0; s < n;) {
    int32_t e = s + 1;
    while (e < n && classes && classes[by_class[e]] == classes[by_class[s]]) ++e;
    if (!classes) e = n;
    keys.clear();
    for (int32_t p = s; p < e; ++p) keys.push_back({scores[by_class[p]], by_class[p]});
    std::stable_sort(keys.begin(), keys.end(), nms_before);
    for (int32_t p = s; p < e; ++p) {
      (*order)[p] = keys[p - s].index;
      (*group)[p] = g;
    }
    ++g;
    s = e;
  }
  return Status::Ok();
}

// Batched NMS's result from the kept boxes (any order): ascending indices, then std::sort by score.
inline void nms_merge(const float* scores, int32_t* keep, int32_t kept) {
  std::sort(keep, keep + kept);
  std::vector<NmsKey> keys(static_cast<size_t>(kept));
  for (int32_t k = 0; k < kept; ++k) keys[k] = {scores[keep[k]], keep[k]};
  std::sort(keys.begin(), keys.end(), nms_before);
  for (int32_t k = 0; k < kept; ++k) keep[k] = keys[k].index;
}

}  // namespace sppnet
