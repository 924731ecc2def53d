// SPP on CUDA: the whole ragged batch, every level and every window in one launch.
//
// Forward: one block per (region, group of G channels). A region is a whole map or a detection
// window; each region has its own G, so that G planes hold about kTargetFloats (thousands of small
// detection windows beside one large one must not all get the large one's few channels per block).
// The block reads its G planes from global memory once (16-byte loads when the planes are
// contiguous) into shared memory, then pools every bin of every level from there: small bins
// one thread each, large bins one warp each. Planes too large for shared memory are pooled
// straight from global memory (L1/L2 absorb the re-reads of overlapping levels).
//
// Backward, without atomics (the same bits on every run): for max pooling the forward's blocks
// first write each bin's argmax; then one thread per input element gathers the gradients of the
// bins that draw from it, in the CPU backend's order (region, level, bin row, bin column), so
// the CPU and CUDA gradients are the same floats summed in the same order.
#include <algorithm>
#include <climits>
#include <vector>

#include "kernel.h"
#include "ragged_tables.cuh"
#include "sppnet/ops.h"

namespace sppnet {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kSmemFloats = 12284;   // 48 KiB (the default dynamic limit) less the 3-float alignment pad
constexpr int kTargetFloats = 4096;  // channels are grouped until a block has about this much input
constexpr int kThreadBinMax = 48;    // bins of at most this many elements: one thread each

// The pooling a kernel does: the forward's max or average, or (backward of max) each bin's argmax.
enum Mode : int32_t { kMax = kPoolMax, kAvg = kPoolAvg, kArgmax = 2 };

struct Params {
  const float* __restrict__ in;
  float* out;                       // forward: [R, F]; backward: grad_in, same layout as in
  const float* __restrict__ gout;   // backward: [R, F]
  int32_t* arg;                     // backward of max: [R, F], each bin's argmax (row-major within its region)
  const int64_t* __restrict__ map_off;
  const int32_t* __restrict__ map_h;
  const int32_t* __restrict__ map_w;
  const Region* __restrict__ regions;
  // backward: the maps' elements numbered densely (map i's are [elem_start[i], elem_start[i + 1])),
  // and each map's regions in order (map_regions[map_region_start[i] .. map_region_start[i + 1]]).
  const int64_t* __restrict__ elem_start;
  const int32_t* __restrict__ map_region_start;
  const int32_t* __restrict__ map_regions;
  const int32_t* __restrict__ block_start;  // region r's blocks are [block_start[r], block_start[r + 1])
  int64_t F;      // features per region: C * sum(n*n)
  int64_t elems;  // elements of all maps
  int32_t count;  // maps
  int32_t C, L, rule, smem_floats;
  int32_t num_regions;  // R
  int32_t same_groups;  // blocks per region when every region has the same (else 0: block_start is searched)
  int32_t levels[kMaxLevels];
  int32_t level_base[kMaxLevels];  // sum of n*n over the levels before l
  int32_t order[kMaxLevels];       // levels by increasing n: the largest bins are dealt out first
};

__device__ __forceinline__ float nan_max(float m, float v) { return (v > m || v != v) ? v : m; }

// (v, i) beats (bv, bi): NaN first, then larger, ties to the smaller row-major index.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  const bool vn = v != v, bn = bv != bv;
  if (vn || bn) return vn && (!bn || i < bi);
  return v > bv || (v == bv && i < bi);
}

// Lanes of a warp cover a span `width` wide (a bin, or a window's rows) as rows_per_pass rows of
// lanes_per_row columns.
struct WarpTiling {
  int ly, lx, lanes_per_row, rows_per_pass;
  __device__ WarpTiling(int lane, int width) {
    lanes_per_row = 32;
    while (lanes_per_row > 1 && (lanes_per_row >> 1) >= width) lanes_per_row >>= 1;
    rows_per_pass = 32 / lanes_per_row;
    ly = lane / lanes_per_row;
    lx = lane % lanes_per_row;
  }
};

// Copies the G planes (channels c0..c0+G-1) of region g into shared memory, packed [G][h][w],
// and returns where element 0 landed: sm + off, with off in [0, 3] chosen so that 16-byte aligned
// global addresses meet 16-byte aligned shared addresses (float4 stores, no bank conflicts).
__device__ int load_planes(const Region& g, int H, int W, const float* __restrict__ base, int G, float* sm) {
  const int area = g.h * g.w;
  const int total = G * area;
  const int nt = blockDim.x;
  int off = 0;
  if (g.x0 == 0 && g.y0 == 0 && g.w == W && g.h == H) {
    // G whole planes are one contiguous run: a scalar head to 16-byte alignment, float4 body.
    const int head = min(total, static_cast<int>((4 - ((reinterpret_cast<uintptr_t>(base) >> 2) & 3)) & 3));
    off = (4 - head) & 3;
    float* s = sm + off;
    for (int i = threadIdx.x; i < head; i += nt) s[i] = __ldg(base + i);
    const int n4 = (total - head) >> 2;
    const float4* b4 = reinterpret_cast<const float4*>(base + head);
    float4* s4 = reinterpret_cast<float4*>(s + head);  // 16-byte aligned: off + head is 0 mod 4
    int j = threadIdx.x;
    for (; j + 3 * nt < n4; j += 4 * nt) {  // four 16-byte loads in flight per thread
      const float4 v0 = __ldg(b4 + j), v1 = __ldg(b4 + j + nt), v2 = __ldg(b4 + j + 2 * nt), v3 = __ldg(b4 + j + 3 * nt);
      s4[j] = v0;
      s4[j + nt] = v1;
      s4[j + 2 * nt] = v2;
      s4[j + 3 * nt] = v3;
    }
    for (; j < n4; j += nt) s4[j] = __ldg(b4 + j);
    for (int i = head + 4 * n4 + threadIdx.x; i < total; i += nt) s[i] = __ldg(base + i);
  } else {
    // A window: each warp takes rows_per_pass rows at a time, lanes along them (a narrow
    // window's rows share a warp instead of leaving most lanes idle).
    const int64_t HW = static_cast<int64_t>(H) * W;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = nt >> 5;
    const WarpTiling t(lane, g.w);
    for (int row = warp * t.rows_per_pass + t.ly; row < G * g.h; row += nwarps * t.rows_per_pass) {
      const int gi = row / g.h, y = row - gi * g.h;
      const float* src = base + gi * HW + static_cast<int64_t>(g.y0 + y) * W + g.x0;
      for (int x = t.lx; x < g.w; x += t.lanes_per_row) sm[row * g.w + x] = __ldg(src + x);
    }
  }
  __syncthreads();
  return off;
}


// Channels per block for a region of `area` elements: about kTargetFloats of input, at least 1,
// at most C. The host's grid and the kernel's blocks use this one function.
__host__ __device__ inline int32_t group_channels(int64_t area, int32_t C) {
  const int64_t g = kTargetFloats / (area > 0 ? area : 1);
  return static_cast<int32_t>(g < 1 ? 1 : (g > C ? C : g));
}

// The region of this block: the last r with block_start[r] <= blockIdx.x (a division when every
// region has as many blocks, as whole maps of one size or all of at least kTargetFloats have).
__device__ inline int block_region(const Params& p) {
  if (p.same_groups) return static_cast<int>(blockIdx.x) / p.same_groups;
  return last_at_most(p.block_start, p.num_regions, static_cast<int>(blockIdx.x));
}

struct Block {
  Region g;
  int G, c0, H, W;
  int64_t HW;
  bool shared;       // the planes are in shared memory at sm + off
  int off;
  const float* src;  // element (gi, y, x) of the region at src[gi * cs + y * rs + x]
  int64_t cs;
  int rs;
};

__device__ Block setup(const Params& p, float* sm, bool need_input) {
  Block b;
  const int r = block_region(p);
  b.g = p.regions[r];
  const int32_t G = group_channels(static_cast<int64_t>(b.g.h) * b.g.w, p.C);
  b.c0 = (static_cast<int>(blockIdx.x) - p.block_start[r]) * G;
  b.G = min(G, p.C - b.c0);
  b.H = p.map_h[b.g.map];
  b.W = p.map_w[b.g.map];
  b.HW = static_cast<int64_t>(b.H) * b.W;
  const float* base = p.in + p.map_off[b.g.map] + b.c0 * b.HW;
  b.shared = need_input && b.G * b.g.h * b.g.w <= p.smem_floats;
  b.off = 0;
  if (b.shared) {
    b.off = load_planes(b.g, b.H, b.W, base, b.G, sm);
    b.src = sm + b.off;
    b.cs = b.g.h * b.g.w;
    b.rs = b.g.w;
  } else {
    b.src = base + static_cast<int64_t>(b.g.y0) * b.W + b.g.x0;
    b.cs = b.HW;
    b.rs = b.W;
  }
  return b;
}

// Pools every bin of every level of the block's planes at src. Levels go largest bins first, and
// the items continue the rotation over warps (threads) from one level to the next, so that no warp
// gets the big bins of every level. Instantiated with src in shared memory (ld.shared) and global.
// MODE kArgmax writes each bin's argmax to p.arg: the first NaN, else the first maximum, in
// row-major order within the region (the CPU backward's choice).
template <int MODE>
__device__ __forceinline__ void pool_levels(const Params& p, const Block& b, const float* src) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  int dealt = 0;  // items handed out so far, over all levels
  for (int li = 0; li < p.L; ++li) {
    const int l = p.order[li];
    const int n = p.levels[l], nn = n * n, items = b.G * nn;
    // The region's index is searched again here rather than kept from setup(): held across the
    // levels it costs the registers that the 4-blocks-per-SM bound on Hopper does not have (spills).
    const int64_t o = static_cast<int64_t>(block_region(p)) * p.F + static_cast<int64_t>(p.level_base[l]) * p.C + static_cast<int64_t>(b.c0) * nn;
    const bool per_thread = static_cast<int64_t>(b.g.h / n + 2) * (b.g.w / n + 2) <= kThreadBinMax;
    const int step = per_thread ? blockDim.x : nwarps;
    const int me = per_thread ? threadIdx.x : warp;
    const int first = (me - dealt % step + step) % step;
    dealt += items;
    for (int it = first; it < items; it += step) {
      const int gi = it / nn, k = it - gi * nn, i = k / n, j = k - i * n;
      const BinRange ry = bin_range(p.rule, i, n, b.g.h), rx = bin_range(p.rule, j, n, b.g.w);
      const float* s = src + gi * b.cs;
      if (MODE == kArgmax) {
        float bv = -INFINITY;
        int bi = INT_MAX;  // row-major index y * w + x within the region
        if (per_thread) {
          for (int y = ry.start; y < ry.end; ++y)
            for (int x = rx.start; x < rx.end; ++x) {
              const float v = s[y * b.rs + x];
              const int idx = y * b.g.w + x;
              if (better(v, idx, bv, bi)) bv = v, bi = idx;
            }
        } else {
          const WarpTiling t(lane, rx.end - rx.start);
          for (int y = ry.start + t.ly; y < ry.end; y += t.rows_per_pass)
            for (int x = rx.start + t.lx; x < rx.end; x += t.lanes_per_row) {
              const float v = s[y * b.rs + x];
              const int idx = y * b.g.w + x;
              if (better(v, idx, bv, bi)) bv = v, bi = idx;
            }
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
            if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
          }
          if (lane != 0) continue;
        }
        p.arg[o + it] = bi;
        continue;
      }
      float v = MODE == kMax ? -INFINITY : 0.f;
      if (per_thread) {
        for (int y = ry.start; y < ry.end; ++y)
          for (int x = rx.start; x < rx.end; ++x) v = MODE == kMax ? nan_max(v, s[y * b.rs + x]) : v + s[y * b.rs + x];
      } else {
        // Two accumulators over alternate row passes: two loads in flight per lane.
        const WarpTiling t(lane, rx.end - rx.start);
        float v1 = v;
        const int rpp = t.rows_per_pass;
        for (int y = ry.start + t.ly; y < ry.end; y += 2 * rpp) {
          const float* row0 = s + y * b.rs;
          const bool two = y + rpp < ry.end;
          const float* row1 = row0 + rpp * b.rs;
          for (int x = rx.start + t.lx; x < rx.end; x += t.lanes_per_row) {
            v = MODE == kMax ? nan_max(v, row0[x]) : v + row0[x];
            if (two) v1 = MODE == kMax ? nan_max(v1, row1[x]) : v1 + row1[x];
          }
        }
        v = MODE == kMax ? nan_max(v, v1) : v + v1;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
          const float w = __shfl_xor_sync(0xffffffffu, v, off);
          v = MODE == kMax ? nan_max(v, w) : v + w;
        }
        if (lane != 0) continue;
      }
      if (MODE == kAvg) v /= static_cast<float>((ry.end - ry.start) * (rx.end - rx.start));
      p.out[o + it] = v;
    }
  }
}

// Blocks per SM the forward kernel is compiled for: 4 on Hopper fits in 64 registers without
// spilling; older targets need the 72-77 registers that 3 allow (ptxas spills at 64 there).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SPP_FORWARD_MIN_BLOCKS 4
#else
#define SPP_FORWARD_MIN_BLOCKS 3
#endif

// The forward (MODE kMax, kAvg), and the argmax pass of the max backward (kArgmax).
template <int MODE>
__global__ void __launch_bounds__(kThreads, SPP_FORWARD_MIN_BLOCKS) spp_forward_kernel(Params p) {
  SPP_DYNAMIC_SHARED(float, sm);
  const Block b = setup(p, sm, true);
  if (b.shared)
    pool_levels<MODE>(p, b, sm + b.off);  // the compiler sees shared memory: ld.shared
  else
    pool_levels<MODE>(p, b, b.src);
}

// grad_in, one thread per element of the maps: the sum of the gradients of the bins that draw
// from it (max: the bins whose argmax it is; avg: every bin holding it, its share), in the order
// region, level, bin row, bin column, as the CPU backend adds them. Bin starts never decrease, so
// each level's scan stops at the first bin that starts past the element.
template <int POOL>
__global__ void __launch_bounds__(kThreads) spp_backward_kernel(Params p) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < p.elems; e += int64_t{gridDim.x} * blockDim.x) {
    const int m = last_at_most(p.elem_start, p.count, e);
    const int W = p.map_w[m];
    const int64_t rem = e - p.elem_start[m], HW = static_cast<int64_t>(p.map_h[m]) * W;
    const int c = static_cast<int>(rem / HW);
    const int pix = static_cast<int>(rem - c * HW), y = pix / W, x = pix - y * W;
    float acc = 0.f;
    for (int k = p.map_region_start[m]; k < p.map_region_start[m + 1]; ++k) {
      const int r = p.map_regions[k];
      const Region g = p.regions[r];
      const int ly = y - g.y0, lx = x - g.x0;
      if (ly < 0 || ly >= g.h || lx < 0 || lx >= g.w) continue;
      const int64_t row = r * p.F;
      for (int l = 0; l < p.L; ++l) {
        const int n = p.levels[l];
        const int64_t base = row + static_cast<int64_t>(p.level_base[l]) * p.C + static_cast<int64_t>(c) * n * n;
        for (int i = 0; i < n; ++i) {
          const BinRange ry = bin_range(p.rule, i, n, g.h);
          if (ry.start > ly) break;
          if (ly >= ry.end) continue;
          for (int j = 0; j < n; ++j) {
            const BinRange rx = bin_range(p.rule, j, n, g.w);
            if (rx.start > lx) break;
            if (lx >= rx.end) continue;
            const int64_t f = base + i * n + j;
            if (POOL == kPoolMax) {
              if (p.arg[f] == ly * g.w + lx) acc += p.gout[f];
            } else {
              acc += p.gout[f] / static_cast<float>((ry.end - ry.start) * (rx.end - rx.start));
            }
          }
        }
      }
    }
    p.out[p.map_off[m] + rem] = acc;
  }
}

// Uploads the per-map and per-region tables (and for the backward, each map's regions and the
// dense element numbering), fills Params, picks the channel grouping.
class Launch {
 public:
  Status prepare(const SppProblem& sp, bool backward) {
    const int N = sp.input.count, R = sp.num_regions;
    if (sp.input.channels < 1) return Status::Error(Code::kInvalidArgument, "spp: the maps have no channels");  // (lib/ checks; a division below)
    std::vector<int64_t> elem_start;
    std::vector<int32_t> region_start, regions_by_map, block_start(static_cast<size_t>(R) + 1, 0);
    // Each region's channel groups, and the planes' largest footprint (the shared memory asked for).
    int64_t blocks = 0, most = 1;
    int32_t same = -1;  // blocks per region while they agree, then 0
    for (int r = 0; r < R; ++r) {
      const int64_t area = int64_t{sp.regions[r].h} * sp.regions[r].w;
      const int32_t G = group_channels(area, sp.input.channels);
      most = std::max<int64_t>(most, G * area);
      const int32_t n = (sp.input.channels + G - 1) / G;
      same = same < 0 || same == n ? n : 0;
      blocks += n;
      if (blocks > INT_MAX)
        return Status::Error(Code::kInvalidArgument, "SPP launch needs more than 2^31-1 blocks (" + std::to_string(R) + " regions)");
      block_start[r + 1] = static_cast<int32_t>(blocks);
    }
    if (backward) {
      elem_start.assign(static_cast<size_t>(N) + 1, 0);
      region_start.assign(static_cast<size_t>(N) + 1, 0);
      for (int i = 0; i < N; ++i)
        elem_start[i + 1] = elem_start[i] + static_cast<int64_t>(sp.input.channels) * sp.input.height[i] * sp.input.width[i];
      for (int r = 0; r < R; ++r) ++region_start[sp.regions[r].map + 1];
      for (int i = 0; i < N; ++i) region_start[i + 1] += region_start[i];
      regions_by_map.resize(static_cast<size_t>(R));
      std::vector<int32_t> fill(region_start.begin(), region_start.end() - 1);
      for (int r = 0; r < R; ++r) regions_by_map[fill[sp.regions[r].map]++] = r;  // in region order within a map
    }
    const size_t off_at = tables_.add(sp.input.offset, N), es_at = tables_.add(elem_start.data(), elem_start.size()),
                 h_at = tables_.add(sp.input.height, N), w_at = tables_.add(sp.input.width, N), reg_at = tables_.add(sp.regions, R),
                 rs_at = tables_.add(region_start.data(), region_start.size()), rm_at = tables_.add(regions_by_map.data(), regions_by_map.size()),
                 bs_at = tables_.add(block_start.data(), block_start.size());
    Status s = tables_.upload(false, "allocating SPP tables", "uploading SPP tables");
    if (!s.ok()) return s;
    p.map_off = tables_.at<int64_t>(off_at);
    p.elem_start = tables_.at<int64_t>(es_at);
    p.map_h = tables_.at<int32_t>(h_at);
    p.map_w = tables_.at<int32_t>(w_at);
    p.regions = tables_.at<Region>(reg_at);
    p.map_region_start = tables_.at<int32_t>(rs_at);
    p.map_regions = tables_.at<int32_t>(rm_at);
    p.block_start = tables_.at<int32_t>(bs_at);
    p.num_regions = R;
    p.same_groups = same > 0 ? same : 0;
    p.elems = backward ? elem_start[N] : 0;
    p.count = N;
    p.F = sp.features();
    p.C = sp.input.channels;
    p.L = sp.num_levels;
    p.rule = sp.rule;
    int base = 0;
    for (int l = 0; l < sp.num_levels; ++l) {
      p.levels[l] = sp.levels[l];
      p.level_base[l] = base;
      base += sp.levels[l] * sp.levels[l];
      p.order[l] = l;
    }
    std::stable_sort(p.order, p.order + sp.num_levels, [&](int a, int b) { return sp.levels[a] < sp.levels[b]; });
    p.smem_floats = static_cast<int32_t>(std::min<int64_t>(kSmemFloats, most));
    grid_ = static_cast<int>(blocks);
    return Status::Ok();
  }

  // The per-(region, channel group) pass: the forward, or the argmax of the max backward.
  template <int MODE>
  void pool() {
    const size_t sbytes = sizeof(float) * (p.smem_floats + 3);  // + 3: the alignment offset
    SPP_LAUNCH(grid_, kThreads, sbytes, spp_forward_kernel<MODE>)(p);
  }

  template <int POOL>
  void gather() {
    SPP_LAUNCH(grid_for(p.elems, kThreads), kThreads, 0, spp_backward_kernel<POOL>)(p);
  }

  Params p{};

 private:
  TablePack tables_;
  int grid_ = 0;
};

// Whether the maps, sorted by offset, cover [0, total) without gaps (ragged batches and 4-D
// tensors do): then the backward's gather writes every element of grad_in and no memset is needed.
// Overlapping maps are an error (two threads would write one element).
Status covers(const RaggedView& in, bool* dense) {
  std::vector<std::pair<int64_t, int64_t>> spans(static_cast<size_t>(in.count));
  for (int i = 0; i < in.count; ++i)
    spans[i] = {in.offset[i], in.offset[i] + static_cast<int64_t>(in.channels) * in.height[i] * in.width[i]};
  std::sort(spans.begin(), spans.end());
  int64_t at = 0;
  *dense = true;
  for (const auto& sp : spans) {
    if (sp.first < at) return Status::Error(Code::kInvalidArgument, "spp backward: maps overlap in the input's storage");
    if (sp.first > at) *dense = false;
    at = sp.second;
  }
  if (at != in.total) *dense = false;
  return Status::Ok();
}

}  // namespace

Status spp_forward(const SppProblem& sp, const float* input, float* output) {
  if (sp.output_elements() == 0) return Status::Ok();
  (void)cudaGetLastError();  // a stale error of an earlier call must not be reported as ours
  Launch L;
  Status s = L.prepare(sp, false);
  if (!s.ok()) return s;
  L.p.in = input;
  L.p.out = output;
  if (sp.pool == kPoolMax) L.pool<kMax>();
  else L.pool<kAvg>();
  return finish("running the SPP kernel");
}

Status spp_backward(const SppProblem& sp, const float* input, const float* grad_out, float* grad_in) {
  (void)cudaGetLastError();
  bool dense = false;
  Status s = covers(sp.input, &dense);
  if (!s.ok()) return s;
  if (!dense && sp.input.total > 0)
    SPP_CUDA_TRY(cudaMemsetAsync(grad_in, 0, sizeof(float) * sp.input.total, cudaStreamPerThread), "zeroing the gradient");
  if (sp.input.count == 0) return finish("zeroing the gradient");
  Launch L;
  s = L.prepare(sp, true);
  if (!s.ok()) return s;
  L.p.in = input;
  L.p.out = grad_in;
  L.p.gout = grad_out;
  Scratch arg;
  if (sp.pool == kPoolMax && sp.output_elements() > 0) {
    s = arg.alloc(sizeof(int32_t) * static_cast<size_t>(sp.output_elements()), "allocating the SPP argmax");
    if (!s.ok()) return s;
    L.p.arg = reinterpret_cast<int32_t*>(arg.get());
    L.pool<kArgmax>();
  }
  if (L.p.elems > 0) {
    if (sp.pool == kPoolMax) L.gather<kPoolMax>();
    else L.gather<kPoolAvg>();
  }
  return finish("running the SPP backward kernels");
}

}  // namespace cuda
}  // namespace sppnet
