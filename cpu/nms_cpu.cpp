// CPU non-maximum suppression: torchvision's greedy loop (include/sppnet/nms.h: order, pair test),
// with the candidates of each kept box found by a sweep instead of a scan of every later box.
//
// Only a box whose x-interval strictly overlaps the kept box's can be suppressed by it (else the
// intersection is 0), and boxes that can never interact (nms_inert) are left out. Per class, the
// other boxes are laid out sorted by x1, with the running maximum of x2: the candidates of a kept
// box [x1, x2] are a contiguous range, from the first whose running maximum of x2 is > x1 to the
// last with x1 < x2, which one vectorised loop tests with torchvision's exact test. So the cost is
// the kept boxes times the boxes overlapping them in x, at several pairs a nanosecond.
// Built with -ffp-contract=off (CMakeLists.txt): each float operation rounds as torchvision's does.
#include <algorithm>
#include <vector>

#include "sppnet/nms.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cpu {

namespace {

#if defined(__x86_64__) && defined(__linux__) && (defined(__clang__) || defined(__GNUC__))
#define SPP_NMS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SPP_NMS_CLONES
#endif

// One kept box against the candidates [lo, hi) of the x-sorted arrays: sets flag[k] where box k,
// later in the order than `r`, is suppressed. Branch-free, so the compiler vectorises it (and
// builds an AVX2 clone, picked at load time where the CPU has it).
SPP_NMS_CLONES void sweep(int64_t lo, int64_t hi, const float* x1, const float* y1, const float* x2,
                                                             const float* y2, const float* area, const int32_t* rank, int32_t* flag,
                                                             float ax1, float ay1, float ax2, float ay2, float aa, int32_t r, float thr) {
  for (int64_t k = lo; k < hi; ++k) {
    const bool s = nms_suppresses(ax1, ay1, ax2, ay2, aa, x1[k], y1[k], x2[k], y2[k], area[k], thr);
    flag[k] |= static_cast<int32_t>(s & (rank[k] > r));
  }
}

}  // namespace

Status nms(int32_t n, const float* boxes, const float* scores, const float* classes, double iou, int32_t* keep, int32_t* kept) {
  *kept = 0;
  if (n <= 0) return Status::Ok();
  std::vector<int32_t> order, group;
  Status s = nms_order(n, scores, classes, &order, &group);
  if (!s.ok()) return s;
  const float thr = nms_threshold(iou);
  // Per group: its active boxes sorted by x1, as arrays in that order (rank: the position in the
  // processing order; flag: suppressed), and the running maximum of x2.
  std::vector<int32_t> xs, rank, flag, at(static_cast<size_t>(n), -1);
  std::vector<float> x1, y1, x2, y2, area, xmax;
  int32_t count = 0;
  for (int32_t gs = 0; gs < n;) {
    int32_t ge = gs + 1;
    while (ge < n && group[ge] == group[gs]) ++ge;
    xs.clear();
    for (int32_t p = gs; p < ge; ++p) {
      const float* b = boxes + int64_t{order[p]} * 4;
      if (!nms_inert(b[0], b[1], b[2], b[3])) xs.push_back(p);
    }
    auto x1_of = [&](int32_t p) { return boxes[int64_t{order[p]} * 4]; };
    std::sort(xs.begin(), xs.end(), [&](int32_t a, int32_t b) { return x1_of(a) < x1_of(b) || (x1_of(a) == x1_of(b) && a < b); });
    const size_t m = xs.size();
    for (auto* v : {&x1, &y1, &x2, &y2, &area, &xmax}) v->resize(m);
    rank.resize(m);
    flag.assign(m, 0);
    for (size_t k = 0; k < m; ++k) {
      const float* b = boxes + int64_t{order[xs[k]]} * 4;
      x1[k] = b[0], y1[k] = b[1], x2[k] = b[2], y2[k] = b[3];
      area[k] = nms_area(b[0], b[1], b[2], b[3]);
      rank[k] = xs[k];
      at[xs[k]] = static_cast<int32_t>(k);
      xmax[k] = k == 0 || x2[k] > xmax[k - 1] ? x2[k] : xmax[k - 1];
    }
    for (int32_t r = gs; r < ge; ++r) {
      const int32_t k = at[r];
      if (k >= 0 && flag[k]) continue;
      keep[count++] = order[r];
      if (k < 0) continue;  // inert: suppresses nothing
      // Candidates: x1 < this x2 (a prefix), and from the first whose running max of x2 > this x1.
      const int64_t hi = std::lower_bound(x1.begin(), x1.end(), x2[k]) - x1.begin();
      const int64_t lo = std::upper_bound(xmax.begin(), xmax.begin() + hi, x1[k]) - xmax.begin();
      sweep(lo, hi, x1.data(), y1.data(), x2.data(), y2.data(), area.data(), rank.data(), flag.data(), x1[k], y1[k], x2[k], y2[k], area[k],
            r, thr);
    }
    gs = ge;
  }
  if (classes) nms_merge(scores, keep, count);
  *kept = count;
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
