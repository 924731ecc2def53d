// CUDA crop and resize (include/sppnet/crop.h: the grid and the sampling rule). The boxes are
// downloaded (20 bytes a box) and checked and turned into windows on the host by the same code as
// the CPU backend's, then uploaded as one table; one launch covers every window: one thread per
// output element (grid-stride), each a bilinear sample with __fmul_rn/__fadd_rn (no FMA), so the
// values are the CPU backend's bit for bit.
#include <vector>

#include "kernel.h"
#include "ragged_tables.cuh"
#include "sppnet/crop.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace cuda {
namespace {

constexpr int kCropThreads = 256;

__global__ void crop_resize_kernel(int64_t n, int32_t channels, CropParams p, const CropWindow* __restrict__ windows,
                                   const float* __restrict__ x, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    // n <= 2^31 - 1 (lib/ops/crop.ts, the binding): 32-bit division suffices
    const int32_t j = static_cast<int32_t>(i), ox = j % p.out_w, t = j / p.out_w, oy = t % p.out_h, u = t / p.out_h;
    const int32_t c = u % channels;
    const CropWindow w = windows[u / channels];
    const CropTap ty = crop_tap(crop_coord(w.y_start, w.y_step, oy, p.align), w.h);
    const CropTap tx = crop_tap(crop_coord(w.x_start, w.x_step, ox, p.align), w.w);
    y[i] = crop_sample(x + w.offset + int64_t{c} * w.h * w.w, w.w, ty, tx);
  }
}

}  // namespace

Status crop_resize(const RaggedView& in, const float* x, int32_t k, const float* boxes, const CropParams& p, float* y) {
  if (k <= 0) return Status::Ok();
  std::vector<float> hb(static_cast<size_t>(k) * 5);
  SPP_CUDA_TRY(cudaMemcpyAsync(hb.data(), boxes, sizeof(float) * hb.size(), cudaMemcpyDeviceToHost, cudaStreamPerThread), "downloading cropResize boxes");
  SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), "downloading cropResize boxes");
  std::vector<CropWindow> windows;
  Status s = crop_windows(in, k, hb.data(), p, &windows);
  if (!s.ok()) return s;
  TablePack pack;
  const size_t at = pack.add(windows.data(), windows.size());
  s = pack.upload(false, "allocating cropResize windows", "uploading cropResize windows");
  if (!s.ok()) return s;
  const int64_t n = int64_t{k} * in.channels * p.out_h * p.out_w;
  SPP_LAUNCH(grid_for(n, kCropThreads, 4), kCropThreads, 0, crop_resize_kernel)(n, in.channels, p, pack.at<CropWindow>(at), x, y);
  return finish("cropResize kernel");
}

}  // namespace cuda
}  // namespace sppnet
