// A small fork-join helper for the CPU kernels: splits [0, n) into contiguous chunks, one per
// thread, the calling thread taking the first. The helper threads belong to the calling thread
// (a thread_local pool, started on its first parallel call and joined when it exits), so every
// worker_thread of Node (and every libuv thread) gets its own and nothing is shared between
// them. Between calls the helpers spin briefly (a network's layers follow each other within
// microseconds) and then sleep; starting a thread per call cost tens of microseconds, and far
// more when the machine is busy and the new thread waits for a time slice.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPP_PAUSE() _mm_pause()
#else
#define SPP_PAUSE() std::this_thread::yield()
#endif

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

namespace detail {

// True on a pool's helpers, and on a caller while it runs its part: parallel_for from inside a
// chunk runs serially.
inline thread_local bool in_parallel = false;

class Pool {
 public:
  explicit Pool(int helpers) {
    for (int i = 0; i < helpers; ++i) threads_.emplace_back([this, i] { loop(i + 1); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int helpers() const { return static_cast<int>(threads_.size()); }

  // Runs job(part) for part in [0, parts) (parts <= helpers + 1), part 0 on the caller. Every
  // helper acknowledges every call (those without a part at once), so none lags a call behind.
  void run(int parts, const std::function<void(int)>& job) {
    job_ = &job;
    parts_ = parts;
    pending_.store(helpers(), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(m_);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    in_parallel = true;
    std::exception_ptr err;
    try {
      job(0);
    } catch (...) {
      err = std::current_exception();
    }
    in_parallel = false;
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins)
      if (spins < 4096)
        SPP_PAUSE();
      else
        std::this_thread::yield();
    if (err) std::rethrow_exception(err);
  }

 private:
  void loop(int part) {
    in_parallel = true;
    uint64_t seen = 0;
    for (;;) {
      // Spin about 0.1-0.2 ms for the next call, then sleep.
      uint64_t g = gen_.load(std::memory_order_acquire);
      for (int spins = 0; g == seen && spins < 20000; ++spins) {
        SPP_PAUSE();
        g = gen_.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return gen_.load(std::memory_order_acquire) != seen; });
        g = gen_.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop_) return;
      if (part < parts_) (*job_)(part);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* job_ = nullptr;
  int parts_ = 0;
  bool stop_ = false;
};

// The calling thread's pool with at least `helpers` helper threads (grown on demand).
inline Pool& pool_for(int helpers) {
  thread_local std::unique_ptr<Pool> pool;
  if (!pool || pool->helpers() < helpers) {
    pool.reset();
    pool.reset(new Pool(helpers));
  }
  return *pool;
}

}  // namespace detail

// Calls f(begin, end) on disjoint chunks covering [0, n). `grain` is the least work per chunk
// worth a thread of its own. Called from inside a chunk, it runs serially.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int64_t t = std::min<int64_t>(num_threads(), (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (t <= 1 || detail::in_parallel) {
    f(int64_t{0}, n);
    return;
  }
  const int64_t chunk = (n + t - 1) / t;
  t = (n + chunk - 1) / chunk;
  const std::function<void(int)> job = [&f, n, chunk](int part) {
    const int64_t b = part * chunk, e = std::min(n, b + chunk);
    if (b < e) f(b, e);
  };
  detail::pool_for(static_cast<int>(t - 1)).run(static_cast<int>(t), job);
}

}  // namespace cpu
}  // namespace sppnet
