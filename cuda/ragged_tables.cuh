// The per-call tables the kernels read from device memory (per-map offsets and sizes, SPP's
// regions): host arrays packed into one block of stream-ordered scratch memory and uploaded with
// one copy. TablePack does the packing and the upload; Maps / upload_maps are the layers' per-map
// tables (cuda/layers_cuda.cu, cuda/layers_backward_cuda.cu); cuda/spp_cuda.cu packs its own.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel.h"
#include "sppnet/tensor.h"

namespace sppnet {
namespace cuda {

class TablePack {
 public:
  // Appends n elements of T (each array starts 8-byte aligned); returns its byte offset in the block.
  template <typename T>
  size_t add(const T* src, size_t n) {
    const size_t at = (host_.size() + 7) / 8 * 8;
    host_.resize(at + sizeof(T) * n);
    if (n) std::memcpy(host_.data() + at, src, sizeof(T) * n);
    return at;
  }
  // Allocates the block and queues its copy on this thread's stream; with `sync`, waits for the copy.
  Status upload(bool sync, const char* alloc_what, const char* upload_what) {
    Status s = d_.alloc(host_.size(), alloc_what);
    if (!s.ok()) return s;
    SPP_CUDA_TRY(cudaMemcpyAsync(d_.get(), host_.data(), host_.size(), cudaMemcpyHostToDevice, cudaStreamPerThread), upload_what);
    if (sync) SPP_CUDA_TRY(cudaStreamSynchronize(cudaStreamPerThread), upload_what);
    return Status::Ok();
  }
  // The device address of the array added at `offset` (after upload).
  template <typename T>
  const T* at(size_t offset) const {
    return reinterpret_cast<const T*>(d_.get() + offset);
  }

 private:
  std::vector<char> host_;
  Scratch d_;
};

// A layer's per-map tables on the device, from the input layout `in` to the output layout `out`.
// `in_off`/`out_off`: where each map starts in its buffer; out_off has count + 1 entries, the last
// one past the last map's output. `in_start`/`out_start` (count + 1 entries): prefix sums of the
// maps' element counts, the dense index space one thread per element walks.
struct Maps {
  const int64_t* in_off;
  const int64_t* out_off;
  const int64_t* in_start;
  const int64_t* out_start;
  const int32_t* in_h;
  const int32_t* in_w;
  const int32_t* out_h;
  const int32_t* out_w;
  int32_t count;
};

class MapTables {
 public:
  Status upload(const RaggedView& in, const RaggedView& out) {
    const int N = in.count;
    std::vector<int64_t> out_off(out.offset, out.offset + N), in_start(static_cast<size_t>(N) + 1, 0), out_start(in_start);
    out_off.push_back(N == 0 ? 0 : out.offset[N - 1] + int64_t{out.channels} * out.height[N - 1] * out.width[N - 1]);
    for (int i = 0; i < N; ++i) {
      in_start[i + 1] = in_start[i] + int64_t{in.channels} * in.height[i] * in.width[i];
      out_start[i + 1] = out_start[i] + int64_t{out.channels} * out.height[i] * out.width[i];
    }
    in_total = in_start[N];
    out_total = out_start[N];
    const size_t a = pack_.add(in.offset, N), b = pack_.add(out_off.data(), out_off.size()), c = pack_.add(in_start.data(), in_start.size()),
                 d = pack_.add(out_start.data(), out_start.size()), e = pack_.add(in.height, N), f = pack_.add(in.width, N),
                 g = pack_.add(out.height, N), h = pack_.add(out.width, N);
    Status s = pack_.upload(true, "allocating layer tables", "uploading layer tables");
    if (!s.ok()) return s;
    m = Maps{pack_.at<int64_t>(a), pack_.at<int64_t>(b), pack_.at<int64_t>(c), pack_.at<int64_t>(d),
             pack_.at<int32_t>(e), pack_.at<int32_t>(f), pack_.at<int32_t>(g), pack_.at<int32_t>(h), N};
    return Status::Ok();
  }
  Maps m{};
  int64_t in_total = 0, out_total = 0;  // elements of all input maps, of all output maps

 private:
  TablePack pack_;
};

}  // namespace cuda
}  // namespace sppnet
