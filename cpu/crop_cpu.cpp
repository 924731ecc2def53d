// CPU crop and resize (include/sppnet/crop.h: the grid and the sampling rule): the boxes checked
// and turned into windows first, then one task per (window, channel) plane over the threads of
// cpu/parallel.h. Per plane the column taps are computed once; rows whose two neighbours are both
// inside the image take a branch-free loop over the columns whose two neighbours are too, the rest
// (the image's border, context padding) the general sample with its inside tests.
// Built with -ffp-contract=off (CMakeLists.txt): each float operation rounds as torchvision's does.
#include <algorithm>
#include <vector>

#include "parallel.h"
#include "sppnet/crop.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cpu {

namespace {

// One output plane: window `w`, source plane `src`, column taps `tx` (inside columns [xa, xb)).
void plane(const CropWindow& w, const CropParams& p, const float* src, const std::vector<CropTap>& tx, int32_t xa, int32_t xb, float* dst) {
  const int32_t W = w.w, OW = p.out_w;
  for (int32_t oy = 0; oy < p.out_h; ++oy) {
    const CropTap ty = crop_tap(crop_coord(w.y_start, w.y_step, oy, p.align), w.h);
    float* o = dst + int64_t{oy} * OW;
    if (!ty.in0 && !ty.in1) {
      std::fill(o, o + OW, 0.f);
      continue;
    }
    if (!(ty.in0 && ty.in1)) {
      for (int32_t ox = 0; ox < OW; ++ox) o[ox] = crop_sample(src, W, ty, tx[ox]);
      continue;
    }
    for (int32_t ox = 0; ox < xa; ++ox) o[ox] = crop_sample(src, W, ty, tx[ox]);
    const float* r0 = src + int64_t{ty.i0} * W;
    const float* r1 = r0 + W;
    const float hy = ty.h, ly = ty.l;
    for (int32_t ox = xa; ox < xb; ++ox) {
      const CropTap& t = tx[ox];
      const float a = (hy * t.h) * r0[t.i0], b = (hy * t.l) * r0[t.i0 + 1];
      const float c = (ly * t.h) * r1[t.i0], d = (ly * t.l) * r1[t.i0 + 1];
      o[ox] = ((a + b) + c) + d;
    }
    for (int32_t ox = std::max(xa, xb); ox < OW; ++ox) o[ox] = crop_sample(src, W, ty, tx[ox]);
  }
}

}  // namespace

Status crop_resize(const RaggedView& in, const float* x, int32_t k, const float* boxes, const CropParams& p, float* y) {
  std::vector<CropWindow> windows;
  Status s = crop_windows(in, k, boxes, p, &windows);
  if (!s.ok() || k == 0) return s;
  const int32_t C = in.channels;
  const int64_t area = int64_t{p.out_h} * p.out_w, planes = int64_t{k} * C;
  parallel_for(planes, std::max<int64_t>(1, 16384 / area), [&](int64_t begin, int64_t end) {
    std::vector<CropTap> tx(static_cast<size_t>(p.out_w));
    int64_t have = -1;  // the window whose column taps tx holds
    int32_t xa = 0, xb = 0;
    for (int64_t pl = begin; pl < end; ++pl) {
      const int64_t wi = pl / C, c = pl % C;
      const CropWindow& w = windows[static_cast<size_t>(wi)];
      if (wi != have) {
        have = wi;
        xa = p.out_w, xb = 0;
        for (int32_t ox = 0; ox < p.out_w; ++ox) {
          tx[ox] = crop_tap(crop_coord(w.x_start, w.x_step, ox, p.align), w.w);
          if (tx[ox].in0 && tx[ox].in1) xa = std::min(xa, ox), xb = ox + 1;
        }
        // The inside columns are contiguous when the step is >= 0 (always: x2 >= x1); check anyway.
        for (int32_t ox = xa; ox < xb; ++ox)
          if (!(tx[ox].in0 && tx[ox].in1)) xb = xa;  // not contiguous: the general path everywhere
        if (xb <= xa) xa = xb = p.out_w;
      }
      plane(w, p, x + w.offset + c * int64_t{w.h} * w.w, tx, xa, xb, y + pl * area);
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
