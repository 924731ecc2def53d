// CUDA non-maximum suppression: the bitmask algorithm (as torchvision's CUDA kernel), with the
// greedy reduction on the device, so only the kept indices come back.
//
// The order is computed on the host (include/sppnet/nms.h, nms_order): the scores (4 bytes a box)
// are downloaded, sorted there and the order (and each position's class group) uploaded; boxes
// stay on the device. Why the host: the order must be exactly torch's (a stable sort, NaN first,
// then per class for batched NMS), the batched merge afterwards is a host std::sort anyway (whose
// tie order no device sort reproduces), and a device radix sort (cub) would not run in the CPU
// emulator that checks these kernels. For 20,000 boxes that is an 80 KB copy and a ~1 ms sort.
//   nms_mask_kernel: block (column block cb, row block rb), rb <= cb, 64 threads: row i (a
//     position in the order) against the 64 positions j of cb (j > i) of its class: bit j - 64 cb of
//     mask[i][cb] set when box i suppresses box j (nms_suppresses, torchvision's float test).
//   nms_reduce_kernel: one block walks the mask 64 positions at a time: thread 0 resolves a block
//     from its diagonal words (staged in shared memory), then all threads OR the kept rows' words
//     into the removed set of the later blocks. It writes the kept indices in order and their count.
#include <algorithm>
#include <vector>

#include "kernel.h"
#include "ragged_tables.cuh"
#include "sppnet/nms.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cuda {
namespace {

constexpr int kBlock = 64;       // boxes per mask word
constexpr int kReduceThreads = 256;

SPP_HD int lowest_bit(unsigned long long v) {
#ifdef __CUDA_ARCH__
  return __ffsll(static_cast<long long>(v)) - 1;
#else
  return __builtin_ctzll(v);
#endif
}

__global__ void nms_mask_kernel(int32_t n, int32_t blocks, const float* __restrict__ boxes, const int32_t* __restrict__ order,
                                const int32_t* __restrict__ group, float thr, unsigned long long* __restrict__ mask) {
  const int32_t rb = blockIdx.y, cb = blockIdx.x;
  if (rb > cb) return;
  SPP_SHARED(float, cbox, kBlock * 5);
  SPP_SHARED(int32_t, cgroup, kBlock);
  const int32_t cols = min(n - cb * kBlock, kBlock), rows = min(n - rb * kBlock, kBlock);
  const int t = threadIdx.x;
  if (t < cols) {
    const float* b = boxes + int64_t{order[cb * kBlock + t]} * 4;
    const float x1 = b[0], y1 = b[1], x2 = b[2], y2 = b[3];
    cbox[t * 5 + 0] = x1;
    cbox[t * 5 + 1] = y1;
    cbox[t * 5 + 2] = x2;
    cbox[t * 5 + 3] = y2;
    cbox[t * 5 + 4] = nms_area(x1, y1, x2, y2);
    cgroup[t] = group[cb * kBlock + t];
  }
  __syncthreads();
  if (t >= rows) return;
  const int32_t i = rb * kBlock + t;
  const float* a = boxes + int64_t{order[i]} * 4;
  const float ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3], aa = nms_area(ax1, ay1, ax2, ay2);
  const int32_t g = group[i];
  unsigned long long bits = 0;
  for (int j = rb == cb ? t + 1 : 0; j < cols; ++j) {
    const float* c = cbox + j * 5;
    if (cgroup[j] == g && nms_suppresses(ax1, ay1, ax2, ay2, aa, c[0], c[1], c[2], c[3], c[4], thr)) bits |= 1ull << j;
  }
  mask[int64_t{i} * blocks + cb] = bits;
}

__global__ void nms_reduce_kernel(int32_t n, int32_t blocks, const unsigned long long* __restrict__ mask, const int32_t* __restrict__ order,
                                  unsigned long long* __restrict__ removed, int32_t* __restrict__ keep, int32_t* __restrict__ kept) {
  SPP_SHARED(unsigned long long, diag, kBlock);
  SPP_SHARED(unsigned long long, kept_bits, 1);
  SPP_SHARED(int32_t, count, 1);
  const int t = threadIdx.x;
  for (int32_t w = t; w < blocks; w += blockDim.x) removed[w] = 0;
  if (t == 0) count[0] = 0;
  __syncthreads();
  for (int32_t nb = 0; nb < blocks; ++nb) {
    const int32_t start = nb * kBlock, rows = min(n - start, kBlock);
    if (t < rows) diag[t] = mask[int64_t{start + t} * blocks + nb];
    __syncthreads();
    if (t == 0) {
      unsigned long long rem = removed[nb], kb = 0;
      int32_t c = count[0];
      for (int b = 0; b < rows; ++b) {
        if ((rem >> b) & 1ull) continue;
        kb |= 1ull << b;
        keep[c++] = order[start + b];
        rem |= diag[b];
      }
      count[0] = c;
      kept_bits[0] = kb;
    }
    __syncthreads();
    const unsigned long long kb = kept_bits[0];
    for (int32_t w = nb + 1 + t; w < blocks; w += blockDim.x) {
      unsigned long long r = removed[w];
      for (unsigned long long bits = kb; bits; bits &= bits - 1) r |= mask[int64_t{start + lowest_bit(bits)} * blocks + w];
      removed[w] = r;
    }
    __syncthreads();
  }
  if (t == 0) kept[0] = count[0];
}

}  // namespace

Status nms(int32_t n, const float* boxes, const float* scores, const float* classes, double iou, int32_t* keep, int32_t* kept) {
  *kept = 0;
  if (n <= 0) return Status::Ok();
  const int64_t blocks = (int64_t{n} + kBlock - 1) / kBlock;
  if (blocks > 65535) return Status::Error(Code::kInvalidArgument, "nms: more than 4194240 boxes");
  // Scores (and classes) to the host for the order.
  std::vector<float> hs(static_cast<size_t>(n)), hc(classes ? static_cast<size_t>(n) : 0);
  SPP_CUDA_TRY(cudaMemcpyAsync(hs.data(), scores, sizeof(float) * n, cudaMemcpyDeviceToHost, cudaStreamPerThread), "downloading nms scores");
  if (classes)
    SPP_CUDA_TRY(cudaMemcpyAsync(hc.data(), classes, sizeof(float) * n, cudaMemcpyDeviceToHost, cudaStreamPerThread), "downloading nms classes");
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), "downloading nms scores");
  std::vector<int32_t> order, group;
  Status s = nms_order(n, hs.data(), classes ? hc.data() : nullptr, &order, &group);
  if (!s.ok()) return s;
  TablePack pack;
  const size_t o = pack.add(order.data(), order.size()), g = pack.add(group.data(), group.size());
  s = pack.upload(false, "allocating nms order", "uploading nms order");
  if (!s.ok()) return s;
  Scratch mask, work;
  s = mask.alloc(sizeof(unsigned long long) * static_cast<size_t>(n) * static_cast<size_t>(blocks), "allocating the nms mask");
  if (!s.ok()) return s;
  // removed (blocks words), then keep (n), then the count.
  const size_t keep_at = sizeof(unsigned long long) * static_cast<size_t>(blocks), count_at = keep_at + sizeof(int32_t) * static_cast<size_t>(n);
  s = work.alloc(count_at + sizeof(int32_t), "allocating nms results");
  if (!s.ok()) return s;
  auto* m = reinterpret_cast<unsigned long long*>(mask.get());
  auto* removed = reinterpret_cast<unsigned long long*>(work.get());
  auto* dkeep = reinterpret_cast<int32_t*>(work.get() + keep_at);
  auto* dcount = reinterpret_cast<int32_t*>(work.get() + count_at);
  const unsigned nb = static_cast<unsigned>(blocks);
  SPP_LAUNCH(dim3(nb, nb), kBlock, 0, nms_mask_kernel)(n, static_cast<int32_t>(blocks), boxes, pack.at<int32_t>(o), pack.at<int32_t>(g),
                                                         nms_threshold(iou), m);
  SPP_CUDA_TRY(cudaGetLastError(), "nms mask kernel");
  SPP_LAUNCH(1, kReduceThreads, 0, nms_reduce_kernel)(n, static_cast<int32_t>(blocks), m, pack.at<int32_t>(o), removed, dkeep, dcount);
  SPP_CUDA_TRY(cudaGetLastError(), "nms reduce kernel");
  int32_t count = 0;
  SPP_CUDA_TRY(cudaMemcpyAsync(&count, dcount, sizeof(int32_t), cudaMemcpyDeviceToHost, cudaStreamPerThread), "downloading the nms count");
  s = finish("nms kernels");
  if (!s.ok()) return s;
  if (count < 0 || count > n) return Status::Error(Code::kInternal, "nms: the device kept " + std::to_string(count) + " of " + std::to_string(n) + " boxes");
  if (count > 0) {
    SPP_CUDA_TRY(cudaMemcpyAsync(keep, dkeep, sizeof(int32_t) * count, cudaMemcpyDeviceToHost, cudaStreamPerThread), "downloading the nms result");
    s = finish("downloading the nms result");
    if (!s.ok()) return s;
  }
  if (classes) nms_merge(hs.data(), keep, count);
  *kept = count;
  return Status::Ok();
}

}  // namespace cuda
}  // namespace sppnet
