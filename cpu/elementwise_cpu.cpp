// CPU elementwise and row-wise ops: ReLU forward and backward, softmax, dropout, multiply, and the
// softmax cross-entropy loss.
#include <cmath>
#include <cstring>

#include "parallel.h"
#include "sppnet/dropout.h"
#include "sppnet/ops.h"
#include "vec.h"

namespace sppnet {
namespace cpu {

Status relu_forward(int64_t n, const float* x, float* y) {
  parallel_for(n, int64_t{1} << 16, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) y[i] = relu1(x[i]);
  });
  return Status::Ok();
}

Status softmax_forward(int64_t rows, int32_t cols, const float* x, float* y) {
  parallel_for(rows, 8, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      float m = -INFINITY;
      for (int j = 0; j < cols; ++j) m = (xr[j] > m || xr[j] != xr[j]) && m == m ? xr[j] : m;
      double s = 0;
      for (int j = 0; j < cols; ++j) s += (yr[j] = std::exp(xr[j] - m));
      const float inv = static_cast<float>(1.0 / s);
      for (int j = 0; j < cols; ++j) yr[j] *= inv;
    }
  });
  return Status::Ok();
}

Status relu_backward(int64_t n, const float* y, const float* dy, float* dx) {
  parallel_for(n, int64_t{1} << 16, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) dx[i] = y[i] <= 0.f ? 0.f : dy[i];
  });
  return Status::Ok();
}

Status dropout_forward(int64_t n, const float* x, const DropoutParams& p, float* y, float* mask) {
  parallel_for(n, int64_t{1} << 15, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) {
      const float m = dropout_bits(p.seed, static_cast<uint64_t>(i)) >= p.threshold ? p.scale : 0.f;
      mask[i] = m;
      y[i] = x[i] * m;
    }
  });
  return Status::Ok();
}

Status copy_channels(const RaggedView& part, float* part_data, const RaggedView& whole, float* whole_data, int32_t channel_offset,
                     bool to_whole) {
  // One task per (map, channel): a plane of h * w floats, contiguous in both.
  const int64_t planes = int64_t{part.count} * part.channels;
  parallel_for(planes, 16, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) {
      const int32_t m = static_cast<int32_t>(i / part.channels), c = static_cast<int32_t>(i % part.channels);
      const int64_t hw = int64_t{part.height[m]} * part.width[m];
      float* p = part_data + part.offset[m] + c * hw;
      float* w = whole_data + whole.offset[m] + (int64_t{channel_offset} + c) * hw;
      if (to_whole)
        std::memcpy(w, p, sizeof(float) * hw);
      else
        std::memcpy(p, w, sizeof(float) * hw);
    }
  });
  return Status::Ok();
}

Status channel_sums(const RaggedView& in, const float* u, const float* v, double* sums) {
  const int64_t planes = int64_t{in.count} * in.channels;
  parallel_for(planes, 4, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) {
      const int32_t m = static_cast<int32_t>(i / in.channels), c = static_cast<int32_t>(i % in.channels);
      const int64_t hw = int64_t{in.height[m]} * in.width[m], at = in.offset[m] + c * hw;
      const float* up = u + at;
      const float* vp = v ? v + at : up;
      double s = 0, q = 0;
      for (int64_t k = 0; k < hw; ++k) {
        s += up[k];
        q += static_cast<double>(up[k]) * vp[k];
      }
      sums[2 * i] = s;
      sums[2 * i + 1] = q;
    }
  });
  return Status::Ok();
}

Status channel_affine(const RaggedView& in, const float* u, const float* a, const float* v, const float* b, const float* d, bool relu,
                      float* y) {
  const int64_t planes = int64_t{in.count} * in.channels;
  parallel_for(planes, 4, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      const int32_t m = static_cast<int32_t>(i / in.channels), c = static_cast<int32_t>(i % in.channels);
      const int64_t hw = int64_t{in.height[m]} * in.width[m], at = in.offset[m] + c * hw;
      const float ac = a[c], bc = v ? b[c] : 0.f, dc = d[c];
      for (int64_t k = at; k < at + hw; ++k) {
        const float r = ac * u[k] + (v ? bc * v[k] : 0.f) + dc;
        y[k] = relu ? relu1(r) : r;
      }
    }
  });
  return Status::Ok();
}

Status multiply(int64_t n, const float* a, const float* b, float* y) {
  parallel_for(n, int64_t{1} << 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) y[i] = a[i] * b[i];
  });
  return Status::Ok();
}

Status softmax_cross_entropy(int64_t rows, int32_t cols, const float* logits, const int32_t* labels, float* grad, double* row_loss,
                             int32_t* row_correct) {
  const double inv_rows = rows > 0 ? 1.0 / static_cast<double>(rows) : 0.0;
  parallel_for(rows, 8, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r) {
      const float* xr = logits + r * cols;
      float* gr = grad + r * cols;
      // Max and argmax: the first maximum; a NaN counts as the maximum (its first occurrence).
      float m = -INFINITY;
      int32_t am = 0;
      for (int j = 0; j < cols; ++j)
        if (m == m && (xr[j] > m || xr[j] != xr[j])) m = xr[j], am = j;
      double s = 0;
      for (int j = 0; j < cols; ++j) s += std::exp(static_cast<double>(xr[j]) - m);
      const int32_t label = labels[r];
      row_loss[r] = std::log(s) + m - static_cast<double>(xr[label]);
      row_correct[r] = am == label ? 1 : 0;
      for (int j = 0; j < cols; ++j) {
        const double sm = std::exp(static_cast<double>(xr[j]) - m) / s;
        gr[j] = static_cast<float>((sm - (j == label ? 1.0 : 0.0)) * inv_rows);
      }
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace sppnet
