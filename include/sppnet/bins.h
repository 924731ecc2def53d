// THE pooling-bin helper: the one place where the bounds of a pyramid bin are computed.
// Used by the CPU kernels, the CUDA kernels and (through the binding) the input checks in lib/.
// Integer arithmetic only: no float division, so every backend agrees bit for bit.
#pragma once
#include "common.h"

namespace sppnet {

enum BinRule : int32_t {
  // PyTorch's adaptive pooling: bin i of n over length a is [floor(i*a/n), ceil((i+1)*a/n)).
  kBinsAdaptive = 0,
  // The SPP-net paper: window ceil(a/n), stride floor(a/n); bin i is [i*stride, i*stride + window).
  kBinsPaper = 1,
  // The original Caffe SPP layer: kernel k = ceil(a/n), stride k, padding (k*n - a + 1)/2,
  // each bin clipped to the map.
  kBinsCaffe = 2,
};

enum BinCheck : int32_t {
  kBinsOk = 0,
  kBinsBadArgs = 1,        // a < 1 or n < 1 or unknown rule
  kBinsZeroStride = 2,     // paper rule with a < n: stride floor(a/n) is 0
  kBinsEmpty = 3,          // caffe rule: a bin lies wholly in the padding
  kBinsCountMismatch = 4,  // caffe rule: Caffe's pooling would not produce n bins
};

struct BinRange {
  int32_t start;  // first index in the bin
  int32_t end;    // one past the last index
};

// Bounds of bin i (0 <= i < n) over a length a (a >= 1, n >= 1), clipped to [0, a).
// Valid for every (rule, a, n) for which bin_check() returns kBinsOk.
SPP_HD BinRange bin_range(int32_t rule, int32_t i, int32_t n, int32_t a) {
  // 32-bit arithmetic when (a + 1) * (n + 1) bounds every intermediate (always, in practice): a 64-bit
  // division costs several times more, on the CPU and far more on a GPU.
  if ((static_cast<int64_t>(a) + 1) * (static_cast<int64_t>(n) + 1) < (int64_t{1} << 31)) {
    int32_t s, e;
    if (rule == kBinsPaper) {
      s = i * (a / n);
      e = s + (a + n - 1) / n;
    } else if (rule == kBinsCaffe) {
      const int32_t k = (a + n - 1) / n;
      s = i * k - (k * n - a + 1) / 2;
      e = s + k;
    } else {
      s = (i * a) / n;
      e = ((i + 1) * a + n - 1) / n;
    }
    return BinRange{s < 0 ? 0 : s, e > a ? a : e};
  }
  const int64_t I = i, N = n, A = a;
  int64_t s, e;
  if (rule == kBinsPaper) {
    s = I * (A / N);
    e = s + (A + N - 1) / N;
  } else if (rule == kBinsCaffe) {
    const int64_t k = (A + N - 1) / N;
    s = I * k - (k * N - A + 1) / 2;
    e = s + k;
  } else {
    s = (I * A) / N;
    e = ((I + 1) * A + N - 1) / N;
  }
  if (s < 0) s = 0;
  if (e > A) e = A;
  return BinRange{static_cast<int32_t>(s), static_cast<int32_t>(e)};
}

// Whether `rule` yields n non-empty bins over a length a. Host-side validation calls this
// (through the binding) so that lib/ can name the offending map, size and level.
SPP_HD int32_t bin_check(int32_t rule, int32_t n, int32_t a) {
  if (a < 1 || n < 1 || rule < kBinsAdaptive || rule > kBinsCaffe) return kBinsBadArgs;
  if (rule == kBinsPaper && a < n) return kBinsZeroStride;
  if (rule == kBinsCaffe) {
    // Caffe's PoolingLayer output size with padding, including its "last window must start
    // inside the image" correction; the SPP layer breaks when that differs from n.
    const int64_t k = (static_cast<int64_t>(a) + n - 1) / n, pad = (k * n - a + 1) / 2;
    int64_t pooled = (a + 2 * pad - k + k - 1) / k + 1;
    if (pad > 0 && (pooled - 1) * k >= a + pad) --pooled;
    if (pooled != n) return kBinsCountMismatch;
  }
  for (int32_t i = 0; i < n; ++i) {
    const BinRange r = bin_range(rule, i, n, a);
    if (r.end <= r.start) return kBinsEmpty;
  }
  return kBinsOk;
}

}  // namespace sppnet
