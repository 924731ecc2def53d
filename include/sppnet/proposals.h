// Selective search ("fast mode", Uijlings et al., IJCV 2013), as R-CNN and SPP-net take their
// proposals from it, on the CPU only (cpu/proposals_segment.cpp, cpu/proposals_cpu.cpp):
//
// 1. The RGB image in each colour space, every channel scaled to [0, 255]: HSV (the hue of a grey
//    pixel 0), Lab of sRGB (D65) as OpenCV's 8-bit form (L * 255 / 100, a + 128, b + 128).
// 2. Felzenszwalb-Huttenlocher graph segmentation of it (Gaussian smoothing sigma, an 8-neighbour
//    grid graph whose edge weight is the Euclidean colour distance of its two smoothed pixels,
//    edges taken by increasing weight, merging where w <= min(Int(C) + k / |C|) of both sides;
//    then components under min_size pixels joined to a neighbour, in the same edge order), for
//    each k.
// 3. Hierarchical grouping of each segmentation's regions (8-adjacent) by one or two similarity
//    strategies: colour + texture + size + fill, and texture + size + fill, as the paper defines
//    them (colour: 25 bins per channel; texture: 8 oriented Gaussian derivatives, sigma 1, x 10
//    bins per channel: the positive part of the directional derivative at o * 45 degrees of the
//    sigma-1-smoothed channel (central differences), binned over [0, its maximum in the image];
//    both L1-normalised, merged as size-weighted averages). The most similar pair of neighbours
//    merges first (ties: the lower region indices). Every region of a hierarchy (the initial ones,
//    then each merge) gives its bounding box.
// 4. The ranking of the original code: a box's rank in its hierarchy is its merge order from the
//    top (the whole image 1, the last initial region the most), times a uniform draw in [0, 1)
//    (mulberry32 seeded with `seed`, drawn in hierarchy order then box order, so the result does
//    not depend on the threads); all boxes sorted by that value, ascending (ties: hierarchy order);
//    then duplicates removed (the first kept), boxes with a side under min_side dropped, and at
//    most max_boxes kept.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "status.h"

namespace sppnet {

enum ProposalColorSpace : int32_t { kSpaceHsv = 0, kSpaceLab = 1, kSpaceRgb = 2 };

struct ProposalParams {
  bool fast = true;                 // HSV and Lab x ks x both strategies; else HSV x ks x colour + texture + size + fill
  std::vector<double> ks{50, 100};  // each k is also that segmentation's minimum component size (lib/: single mode's default [100])
  double sigma = 0.8;
  int32_t min_side = 20;
  int64_t max_boxes = 10000;
  uint32_t seed = 0;
  int32_t threads = 0;  // 0: cpu::num_threads()
};

namespace cpu {

// The proposals of an interleaved 8-bit RGB image (h x w x 3): boxes gets 4 ints a box
// (x1, y1, x2, y2, 0-based inclusive), best ranked first.
Status selective_search(const uint8_t* rgb, int32_t w, int32_t h, const ProposalParams& p, std::vector<int32_t>* boxes);

// Felzenszwalb-Huttenlocher segmentation of the RGB image converted to `space` (kSpaceRgb: as it
// is): labels[y * w + x] in [0, count), numbered in order of first appearance (row-major).
Status segment_image(const uint8_t* rgb, int32_t w, int32_t h, int32_t space, double sigma, double k, int32_t min_size,
                     std::vector<int32_t>* labels, int32_t* count);

// ---- the pieces, shared by the two .cpp files ----

// An uninitialised array of trivial T kept between uses (a fresh multi-megabyte buffer costs its
// page faults every time): grows on demand; release() when it got too large to keep.
template <typename T>
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }
  T* get(size_t n) {
    if (n > cap_) {
      std::free(p_);
      p_ = static_cast<T*>(std::malloc(std::max<size_t>(n, 1) * sizeof(T)));
      if (!p_) {
        cap_ = 0;
        throw std::bad_alloc();
      }
      cap_ = n;
    }
    return p_;
  }
  size_t bytes() const { return cap_ * sizeof(T); }
  void release() {
    std::free(p_);
    p_ = nullptr;
    cap_ = 0;
  }

 private:
  T* p_ = nullptr;
  size_t cap_ = 0;
};

// A union-find node: its parent and, at a root, the threshold Int(C) + k / |C| (read with the
// parent that find() just reached: one cache line).
struct UfNode {
  int32_t parent;
  float thr;
};

// The working memory of one segmentation (and of pixel_bins), one a thread.
struct SegScratch {
  Scratch<float> smooth, tmp;
  Scratch<uint64_t> keys, keys2;
  Scratch<int32_t> size, labels, ids;
  Scratch<UfNode> node;
  Scratch<uint8_t> rank;
  Scratch<uint8_t> small;
  size_t bytes() const {
    return smooth.bytes() + tmp.bytes() + keys.bytes() + keys2.bytes() + size.bytes() + labels.bytes() + ids.bytes() + node.bytes() +
           rank.bytes() + small.bytes();
  }
  void release() {
    smooth.release(), tmp.release(), keys.release(), keys2.release(), size.release(), labels.release(), ids.release(), node.release(),
        rank.release(), small.release();
  }
};

// The image in `space`, planar (3 x h x w), each channel in [0, 255].
void convert_color(const uint8_t* rgb, int64_t n, int32_t space, float* out);
// Felzenszwalb-Huttenlocher, in two steps: the smoothed image's 8-neighbour edges sorted by weight
// (keys: 4 n slots; returns how many edges), which every k of one image shares; then the
// segmentation for one k from them (labels[p], n ints, as segment_image). felzenszwalb() does both.
size_t sorted_edges(const float* planes, int32_t w, int32_t h, double sigma, SegScratch* s, uint64_t* keys);
void segment_edges(const uint64_t* keys, size_t m, int32_t w, int32_t h, double k, int32_t min_size, SegScratch* s, int32_t* labels,
                   int32_t* count);
// Felzenszwalb-Huttenlocher on planar float channels: labels[p] (n ints) as segment_image.
void felzenszwalb(const float* planes, int32_t w, int32_t h, double sigma, double k, int32_t min_size, SegScratch* s, int32_t* labels,
                  int32_t* count);
// Per pixel, the 3 colour bins (25 a channel) and the 24 texture bins (10 for each channel x 8
// orientations) of a planar image: colour[p * 3 + c] in [0, 25), texture[p * 24 + c * 8 + o] in [0, 10).
void pixel_bins(const float* planes, int32_t w, int32_t h, SegScratch* s, uint8_t* colour, uint8_t* texture);

}  // namespace cpu
}  // namespace sppnet
