// Selective search, part 2 (include/sppnet/proposals.h): the initial regions of a segmentation,
// hierarchical grouping by one similarity strategy, the ranking of all hierarchies' boxes, and the
// jobs on the calling thread's pool: one per colour space (conversion, histogram bins, the sorted
// edges that every k shares), one per (space, k) (segmentation, initial regions: shared by both
// strategies), one per hierarchy.
#include <algorithm>
#include <cstring>
#include <functional>
#include <iterator>
#include <new>
#include <queue>
#include <string>
#include <unordered_set>

#include "parallel.h"
#include "sppnet/proposals.h"

namespace sppnet {
namespace cpu {

namespace {

constexpr int kColourBins = 80;   // 3 channels x 25, then 5 zeros (multiples of 8: sum_min's lanes)
constexpr int kTextureBins = 240;  // 3 channels x 8 orientations x 10
constexpr int kHist = kColourBins + kTextureBins;

// The histogram intersection sum(min(a, b)) of n floats (a multiple of 8), in 8 lanes (vectorised).
float sum_min(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += std::min(a[j + l], b[j + l]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// The regions of one hierarchy: the initial ones first, then one per merge.
struct Regions {
  std::vector<int64_t> size;
  std::vector<int32_t> box;   // 4 a region: x1, y1, x2, y2
  std::vector<float> hist;    // kHist a region: colour then texture, each L1-normalised
  std::vector<std::vector<int32_t>> nb;  // neighbours, ascending (alive ones only)
  int32_t initial = 0;
};

// The initial regions of a segmentation: sizes, boxes, histograms, 8-adjacency.
void initial_regions(const int32_t* labels, int32_t count, int32_t w, int32_t h, const uint8_t* colour, const uint8_t* texture,
                     Regions* r) {
  r->initial = count;
  r->size.assign(static_cast<size_t>(count), 0);
  r->box.resize(static_cast<size_t>(4 * count));
  for (int32_t i = 0; i < count; ++i) {
    r->box[4 * i] = w;
    r->box[4 * i + 1] = h;
    r->box[4 * i + 2] = -1;
    r->box[4 * i + 3] = -1;
  }
  r->hist.assign(static_cast<size_t>(count) * kHist, 0.f);
  std::vector<uint64_t> pairs;
  const auto pair = [&](int32_t a, int32_t b) {
    if (a != b) pairs.push_back(a < b ? (uint64_t(uint32_t(a)) << 32 | uint32_t(b)) : (uint64_t(uint32_t(b)) << 32 | uint32_t(a)));
  };
  for (int32_t y = 0; y < h; ++y)
    for (int32_t x = 0; x < w; ++x) {
      const int64_t p = static_cast<int64_t>(y) * w + x;
      const int32_t l = labels[p];
      ++r->size[l];
      int32_t* b = &r->box[4 * l];
      b[0] = std::min(b[0], x);
      b[1] = std::min(b[1], y);
      b[2] = std::max(b[2], x);
      b[3] = std::max(b[3], y);
      float* hc = &r->hist[static_cast<size_t>(l) * kHist];
      for (int c = 0; c < 3; ++c) hc[25 * c + colour[3 * p + c]] += 1.f;
      float* ht = hc + kColourBins;
      const uint8_t* t = &texture[24 * p];
      for (int j = 0; j < 24; ++j) ht[10 * j + t[j]] += 1.f;
      if (x < w - 1) pair(l, labels[p + 1]);
      if (y < h - 1) pair(l, labels[p + w]);
      if (x < w - 1 && y < h - 1) pair(l, labels[p + w + 1]);
      if (x < w - 1 && y > 0) pair(l, labels[p - w + 1]);
    }
  for (int32_t i = 0; i < count; ++i) {
    float* hc = &r->hist[static_cast<size_t>(i) * kHist];
    const float sc = 1.f / (3.f * static_cast<float>(r->size[i])), st = 1.f / (24.f * static_cast<float>(r->size[i]));
    for (int j = 0; j < kColourBins; ++j) hc[j] *= sc;
    for (int j = kColourBins; j < kHist; ++j) hc[j] *= st;
  }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
  r->nb.assign(static_cast<size_t>(count), {});
  for (const uint64_t q : pairs) {
    const int32_t a = static_cast<int32_t>(q >> 32), b = static_cast<int32_t>(q & 0xffffffffu);
    r->nb[a].push_back(b);
    r->nb[b].push_back(a);
  }
  for (auto& v : r->nb) std::sort(v.begin(), v.end());
}

struct Pair {
  float s;
  int32_t a, b;
};
struct PairLess {
  bool operator()(const Pair& x, const Pair& y) const {
    if (x.s != y.s) return x.s < y.s;
    if (x.a != y.a) return x.a > y.a;  // ties: the lower indices first
    return x.b > y.b;
  }
};

// Hierarchical grouping of the initial regions `init` (copied) with the colour term or without;
// boxes gets every region's box in creation order.
void group(const Regions& init, int64_t image_size, bool with_colour, std::vector<int32_t>* boxes) {
  Regions r = init;
  const int32_t n0 = r.initial;
  const size_t total = n0 > 0 ? static_cast<size_t>(2 * n0 - 1) : 0;
  r.size.reserve(total);
  r.box.reserve(4 * total);
  r.hist.reserve(total * kHist);
  r.nb.reserve(total);
  std::vector<char> alive(static_cast<size_t>(n0), 1);
  alive.reserve(total);
  const double inv = 1.0 / static_cast<double>(image_size);
  const auto sim = [&](int32_t a, int32_t b) {
    const float* ha = &r.hist[static_cast<size_t>(a) * kHist];
    const float* hb = &r.hist[static_cast<size_t>(b) * kHist];
    const float sc = with_colour ? sum_min(ha, hb, kColourBins) : 0.f, st = sum_min(ha + kColourBins, hb + kColourBins, kTextureBins);
    const int32_t* ba = &r.box[4 * a];
    const int32_t* bb = &r.box[4 * b];
    const double bw = std::max(ba[2], bb[2]) - std::min(ba[0], bb[0]) + 1, bh = std::max(ba[3], bb[3]) - std::min(ba[1], bb[1]) + 1;
    const double sizes = static_cast<double>(r.size[a] + r.size[b]);
    const double s_size = 1.0 - sizes * inv, s_fill = 1.0 - (bw * bh - sizes) * inv;
    return static_cast<float>(sc + st + s_size + s_fill);
  };
  std::priority_queue<Pair, std::vector<Pair>, PairLess> heap;
  for (int32_t a = 0; a < n0; ++a)
    for (const int32_t b : r.nb[a])
      if (b > a) heap.push({sim(a, b), a, b});
  while (!heap.empty()) {
    const Pair top = heap.top();
    heap.pop();
    if (!alive[top.a] || !alive[top.b]) continue;
    const int32_t a = top.a, b = top.b, t = static_cast<int32_t>(r.size.size());
    alive[a] = alive[b] = 0;
    alive.push_back(1);
    const int64_t sa = r.size[a], sb = r.size[b];
    r.size.push_back(sa + sb);
    const int32_t x1 = std::min(r.box[4 * a], r.box[4 * b]), y1 = std::min(r.box[4 * a + 1], r.box[4 * b + 1]);
    const int32_t x2 = std::max(r.box[4 * a + 2], r.box[4 * b + 2]), y2 = std::max(r.box[4 * a + 3], r.box[4 * b + 3]);
    r.box.insert(r.box.end(), {x1, y1, x2, y2});
    r.hist.resize(r.hist.size() + kHist);
    {
      const float wa = static_cast<float>(static_cast<double>(sa) / static_cast<double>(sa + sb)), wb = 1.f - wa;
      const float* ha = &r.hist[static_cast<size_t>(a) * kHist];
      const float* hb = &r.hist[static_cast<size_t>(b) * kHist];
      float* ht = &r.hist[static_cast<size_t>(t) * kHist];
      for (int j = 0; j < kHist; ++j) ht[j] = wa * ha[j] + wb * hb[j];
    }
    std::vector<int32_t> nt;
    std::set_union(r.nb[a].begin(), r.nb[a].end(), r.nb[b].begin(), r.nb[b].end(), std::back_inserter(nt));
    nt.erase(std::remove_if(nt.begin(), nt.end(), [&](int32_t v) { return v == a || v == b; }), nt.end());
    for (const int32_t v : nt) {
      auto& l = r.nb[v];
      l.erase(std::remove_if(l.begin(), l.end(), [&](int32_t u) { return u == a || u == b; }), l.end());
      l.push_back(t);  // t is the largest index: the list stays ascending
      heap.push({sim(t, v), v, t});
    }
    r.nb.push_back(std::move(nt));
    std::vector<int32_t>().swap(r.nb[a]);
    std::vector<int32_t>().swap(r.nb[b]);
  }
  boxes->assign(r.box.begin(), r.box.end());
}

// mulberry32, as lib/core/random.ts's prng: uniform in [0, 1).
struct Mulberry32 {
  uint32_t a;
  double next() {
    a += 0x6d2b79f5u;
    uint32_t t = a;
    t = (t ^ (t >> 15)) * (t | 1u);
    t ^= t + (t ^ (t >> 7)) * (t | 61u);
    return static_cast<double>(t ^ (t >> 14)) / 4294967296.0;
  }
};

struct BoxKey {
  int32_t v[4];
  bool operator==(const BoxKey& o) const { return std::memcmp(v, o.v, sizeof v) == 0; }
};
struct BoxHash {
  size_t operator()(const BoxKey& k) const {
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 4; ++i) h = (h ^ static_cast<uint32_t>(k.v[i])) * 0x100000001b3ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

// Runs f(0..n-1) on up to `threads` threads (the calling thread's pool; parts are claimed, so
// unequal jobs balance). Serial inside a parallel region.
void run_jobs(int n, int threads, const std::function<void(int)>& f) {
  threads = std::min(threads, n);
  if (threads <= 1 || detail::in_parallel) {
    for (int i = 0; i < n; ++i) f(i);
    return;
  }
  detail::pool_for(threads - 1).run(n, f);
}

// Working memory kept by a thread between calls up to this size (beyond, it is freed after use).
constexpr size_t kKeepBytes = size_t{96} << 20;

// The calling thread's: each colour space's planes, pixel bins and sorted edges, shared by the jobs.
struct CallScratch {
  Scratch<float> planes[2];
  Scratch<uint8_t> colour[2], texture[2];
  Scratch<uint64_t> edges[2];
  size_t edge_count[2] = {0, 0};
  size_t bytes() const {
    size_t b = 0;
    for (int i = 0; i < 2; ++i) b += planes[i].bytes() + colour[i].bytes() + texture[i].bytes() + edges[i].bytes();
    return b;
  }
  void release() {
    for (int i = 0; i < 2; ++i) planes[i].release(), colour[i].release(), texture[i].release(), edges[i].release();
  }
};

SegScratch& thread_scratch() {
  static thread_local SegScratch s;
  return s;
}

Status check_size(int32_t w, int32_t h) {
  if (w < 1 || h < 1) return Status::Error(Code::kInvalidArgument, "the image must be at least 1 x 1");
  if (static_cast<int64_t>(w) * h > (int64_t{1} << 28)) return Status::Error(Code::kInvalidArgument, "the image has more than 2^28 pixels");
  return Status::Ok();
}

}  // namespace

Status segment_image(const uint8_t* rgb, int32_t w, int32_t h, int32_t space, double sigma, double k, int32_t min_size,
                     std::vector<int32_t>* labels, int32_t* count) {
  Status s = check_size(w, h);
  if (!s.ok()) return s;
  try {
    const int64_t n = static_cast<int64_t>(w) * h;
    std::vector<float> planes(static_cast<size_t>(3 * n));
    convert_color(rgb, n, space, planes.data());
    SegScratch sc;
    labels->resize(static_cast<size_t>(n));
    felzenszwalb(planes.data(), w, h, sigma, k, min_size, &sc, labels->data(), count);
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::kOutOfMemory, "out of host memory segmenting the image");
  } catch (const std::exception& e) {
    return Status::Error(Code::kInternal, std::string("segmenting the image: ") + e.what());
  }
  return Status::Ok();
}

Status selective_search(const uint8_t* rgb, int32_t w, int32_t h, const ProposalParams& p, std::vector<int32_t>* out) {
  Status s = check_size(w, h);
  if (!s.ok()) return s;
  if (p.ks.empty()) return Status::Error(Code::kInvalidArgument, "no k values");
  try {
    const int64_t n = static_cast<int64_t>(w) * h;
    const int threads = p.threads > 0 ? p.threads : num_threads();
    const std::vector<int32_t> spaces = p.fast ? std::vector<int32_t>{kSpaceHsv, kSpaceLab} : std::vector<int32_t>{kSpaceHsv};
    const int ns = static_cast<int>(spaces.size()), nk = static_cast<int>(p.ks.size()), nstrat = p.fast ? 2 : 1;
    static thread_local CallScratch mine;
    CallScratch& call = mine;  // the calling thread's (a lambda naming `mine` on a helper would get the helper's)
    const auto trim = [](SegScratch& sc) {
      if (sc.bytes() > kKeepBytes) sc.release();
    };
    run_jobs(ns, threads, [&](int i) {
      float* planes = call.planes[i].get(static_cast<size_t>(3 * n));
      convert_color(rgb, n, spaces[i], planes);
      SegScratch& sc = thread_scratch();
      pixel_bins(planes, w, h, &sc, call.colour[i].get(static_cast<size_t>(3 * n)), call.texture[i].get(static_cast<size_t>(24 * n)));
      call.edge_count[i] = sorted_edges(planes, w, h, p.sigma, &sc, call.edges[i].get(static_cast<size_t>(4 * n)));
      trim(sc);
    });
    std::vector<Regions> segs(static_cast<size_t>(ns * nk));
    run_jobs(ns * nk, threads, [&](int j) {
      const int i = j / nk;
      const double k = p.ks[j % nk];
      SegScratch& sc = thread_scratch();
      int32_t* labels = sc.labels.get(static_cast<size_t>(n));
      int32_t count = 0;
      segment_edges(call.edges[i].get(0), call.edge_count[i], w, h, k, static_cast<int32_t>(k), &sc, labels, &count);
      initial_regions(labels, count, w, h, call.colour[i].get(0), call.texture[i].get(0), &segs[j]);
      trim(sc);
    });
    if (call.bytes() > kKeepBytes) call.release();
    // Hierarchy order: space, k, strategy (colour + texture + size + fill first).
    std::vector<std::vector<int32_t>> hier(static_cast<size_t>(ns * nk * nstrat));
    run_jobs(ns * nk * nstrat, threads, [&](int j) { group(segs[j / nstrat], n, j % nstrat == 0, &hier[j]); });
    segs.clear();
    struct Ranked {
      double v;
      int32_t h, i;
    };
    std::vector<Ranked> all;
    Mulberry32 rng{p.seed};
    for (int32_t hh = 0; hh < static_cast<int32_t>(hier.size()); ++hh) {
      const int32_t m = static_cast<int32_t>(hier[hh].size() / 4);
      for (int32_t i = 0; i < m; ++i) all.push_back({static_cast<double>(m - i) * rng.next(), hh, i});
    }
    std::stable_sort(all.begin(), all.end(), [](const Ranked& a, const Ranked& b) { return a.v < b.v; });
    std::unordered_set<BoxKey, BoxHash> seen;
    out->clear();
    for (const Ranked& r : all) {
      if (static_cast<int64_t>(out->size() / 4) >= p.max_boxes) break;
      const int32_t* b = &hier[r.h][4 * static_cast<size_t>(r.i)];
      if (b[2] - b[0] + 1 < p.min_side || b[3] - b[1] + 1 < p.min_side) continue;
      if (!seen.insert(BoxKey{{b[0], b[1], b[2], b[3]}}).second) continue;
      out->insert(out->end(), b, b + 4);
    }
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::kOutOfMemory, "out of host memory computing proposals");
  } catch (const std::exception& e) {
    return Status::Error(Code::kInternal, std::string("computing proposals: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
