// A small fork-join helper for the CPU kernels: splits [0, n) into contiguous chunks, one per
// thread, the calling thread taking the first. No global pool, so nothing outlives a call and
// every worker_thread of Node gets its own threads.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

namespace sppnet {
namespace cpu {

inline int num_threads() {
  if (const char* s = std::getenv("SPPNET_NUM_THREADS")) {
    const int v = std::atoi(s);
    if (v > 0) return v;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

// Calls f(begin, end) on disjoint chunks covering [0, n). `grain` is the least work per chunk
// worth a thread of its own.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int64_t t = std::min<int64_t>(num_threads(), (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (t <= 1) {
    f(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(t - 1));
  const int64_t chunk = (n + t - 1) / t;
  for (int64_t k = 1; k < t; ++k) {
    const int64_t b = k * chunk, e = std::min(n, b + chunk);
    if (b >= e) break;
    pool.emplace_back([&f, b, e] { f(b, e); });
  }
  f(int64_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

}  // namespace cpu
}  // namespace sppnet
