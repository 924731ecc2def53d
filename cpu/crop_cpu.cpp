// CPU crop and resize (include/sppnet/crop.h: the grid and the sampling rule): the boxes checked
// and turned into windows first, then one task per (window, channel) plane over the threads of
// cpu/parallel.h. Per window the column taps are computed once; rows whose two neighbours are both
// inside the image take a branch-free, vectorised loop over the columns whose two neighbours are
// too, the rest (the image's border, context padding) the general sample with its inside tests.
// Built with -ffp-contract=off (CMakeLists.txt): each float operation rounds as torchvision's does.
#include <algorithm>
#include <vector>

#include "parallel.h"
#include "sppnet/crop.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cpu {

namespace {

#if defined(__x86_64__) && defined(__linux__) && (defined(__clang__) || defined(__GNUC__))
#define SPP_CROP_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SPP_CROP_CLONES
#endif

// Columns [a, b) of one output row whose four neighbours are all inside: crop_sample's expression
// without its tests, over the column taps as arrays (i0, h, l), so the compiler vectorises it
// (gathers in the AVX2 clone, picked at load time where the CPU has it).
SPP_CROP_CLONES void inside_row(const float* __restrict__ r0, const float* __restrict__ r1, float hy, float ly, const int32_t* __restrict__ xi,
                                const float* __restrict__ xh, const float* __restrict__ xl, int32_t a, int32_t b, float* __restrict__ o) {
  for (int32_t ox = a; ox < b; ++ox) {
    const int32_t i = xi[ox];
    const float hx = xh[ox], lx = xl[ox];
    const float v00 = (hy * hx) * r0[i], v01 = (hy * lx) * r0[i + 1], v10 = (ly * hx) * r1[i], v11 = (ly * lx) * r1[i + 1];
    o[ox] = ((v00 + v01) + v10) + v11;
  }
}

// A window's column taps: as structs for the general sample, as arrays for inside_row; the inside
// columns [xa, xb) (contiguous: the sample positions increase with the column).
struct Columns {
  std::vector<CropTap> tap;
  std::vector<int32_t> i0;
  std::vector<float> h, l;
  int32_t xa = 0, xb = 0;
  explicit Columns(int32_t n) : tap(static_cast<size_t>(n)), i0(static_cast<size_t>(n)), h(static_cast<size_t>(n)), l(static_cast<size_t>(n)) {}
  void set(const CropWindow& w, const CropParams& p) {
    const int32_t n = p.out_w;
    xa = n, xb = 0;
    for (int32_t ox = 0; ox < n; ++ox) {
      const CropTap t = crop_tap(crop_coord(w.x_start, w.x_step, ox, p.align), w.w);
      tap[ox] = t, i0[ox] = t.i0, h[ox] = t.h, l[ox] = t.l;
      if (t.in0 && t.in1) xa = std::min(xa, ox), xb = ox + 1;
    }
    for (int32_t ox = xa; ox < xb; ++ox)
      if (!(tap[ox].in0 && tap[ox].in1)) xb = xa;  // not contiguous (cannot happen): the general path everywhere
    if (xb <= xa) xa = xb = n;
  }
};

// One output plane: window `w`, source plane `src`.
void plane(const CropWindow& w, const CropParams& p, const float* src, const Columns& cols, float* dst) {
  const int32_t W = w.w, OW = p.out_w, xa = cols.xa, xb = cols.xb;
  for (int32_t oy = 0; oy < p.out_h; ++oy) {
    const CropTap ty = crop_tap(crop_coord(w.y_start, w.y_step, oy, p.align), w.h);
    float* o = dst + int64_t{oy} * OW;
    if (!ty.in0 && !ty.in1) {
      std::fill(o, o + OW, 0.f);
      continue;
    }
    if (!(ty.in0 && ty.in1)) {
      for (int32_t ox = 0; ox < OW; ++ox) o[ox] = crop_sample(src, W, ty, cols.tap[ox]);
      continue;
    }
    for (int32_t ox = 0; ox < xa; ++ox) o[ox] = crop_sample(src, W, ty, cols.tap[ox]);
    const float* r0 = src + int64_t{ty.i0} * W;
    inside_row(r0, r0 + W, ty.h, ty.l, cols.i0.data(), cols.h.data(), cols.l.data(), xa, xb, o);
    for (int32_t ox = std::max(xa, xb); ox < OW; ++ox) o[ox] = crop_sample(src, W, ty, cols.tap[ox]);
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
    Columns cols(p.out_w);
    int64_t have = -1;  // the window whose column taps cols holds
    for (int64_t pl = begin; pl < end; ++pl) {
      const int64_t wi = pl / C, c = pl % C;
      const CropWindow& w = windows[static_cast<size_t>(wi)];
      if (wi != have) cols.set(w, p), have = wi;
      plane(w, p, x + w.offset + c * int64_t{w.h} * w.w, cols, y + pl * area);
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
