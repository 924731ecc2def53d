// A small fork-join helper for the CPU kernels: splits [0, n) into contiguous chunks, one per
// thread. The helper threads belong to the calling thread (a thread_local pool, started on its
// first parallel call and joined when it exits), so every worker_thread of Node (and every libuv
// thread) gets its own and nothing is shared between them. The chunks are claimed, not assigned:
// the caller and whichever helpers are awake take the next unclaimed chunk until none is left,
// so a helper that is asleep or descheduled never holds a call up (the caller does its chunk
// too). Between calls the helpers spin ~50 us (the parallel steps of one layer follow each other
// within microseconds) and then sleep: Node runs each layer on one of several libuv threads,
// each with its own pool, and a helper still spinning from the last layer would take a core
// from the next layer's pool (a 0.5 ms spin cost ~1.5 ms per ZF-5 image on 2 cores).
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

#include "settings.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPP_PAUSE() _mm_pause()
#else
#define SPP_PAUSE() std::this_thread::yield()
#endif

namespace sppnet {
namespace cpu {

// SPPNET_NUM_THREADS, else the hardware threads (settings.h: read once per process;
// hardware_concurrency() opens and reads a file in /sys at every call, ~10 us, once per op).
inline int num_threads() { return settings().num_threads; }

namespace detail {

// True on a pool's helpers, and on a caller while it runs its part: parallel_for from inside a
// chunk runs serially.
inline thread_local bool in_parallel = false;

// Above 0 while the calling thread runs a task under run_hot (cpu_info.h): its pool's helpers,
// once woken, spin between its parallel calls instead of sleeping after each.
inline thread_local int hot_depth = 0;

class Pool {
 public:
  explicit Pool(int helpers) {
    spin_ = settings().pool_spin;
    hot_spin_ = static_cast<int>(std::min<int64_t>(int64_t{spin_} * kHotSpins, INT32_MAX));
    // A helper the system will not start (a limit on threads or memory): the pool goes on with
    // those it has (parts are claimed, so the caller does what no helper takes), and says so, so
    // that pool_for does not try again at every call. (Unwinding a half-built pool instead would
    // destroy cv_ under waiting helpers: a hang.)
    for (int i = 0; i < helpers; ++i) {
      try {
        threads_.emplace_back([this] { loop(); });
      } catch (...) {
        short_ = true;
        break;
      }
    }
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_.store(true, std::memory_order_seq_cst);
      // A new generation with no parts: wakes the helpers, gives them nothing.
      claim_.store((((claim_.load(std::memory_order_relaxed) >> 32) + 1) << 32), std::memory_order_seq_cst);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int helpers() const { return static_cast<int>(threads_.size()); }
  // The caller's hot task ended: helpers spinning past spin_ go to sleep.
  void cool() { hot_.store(false, std::memory_order_relaxed); }
  // Whether it has fewer helpers than it was asked for (the system refused some).
  bool short_of_helpers() const { return short_; }

  // Runs job(part) once for each part in [0, parts) (parts < 2^15) on the caller and the
  // helpers. Parts are claimed, not assigned: whoever is free takes the next one, so a helper
  // that is asleep, descheduled or slow to wake never holds the call up; the caller works until
  // no part is left, then waits for the parts others took.
  void run(int parts, const std::function<void(int)>& job) {
    job_ = &job;
    err_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    hot_.store(hot_depth > 0, std::memory_order_relaxed);  // published with the claim below
    const uint64_t gen = (claim_.load(std::memory_order_relaxed) >> 32) + 1;
    // The claim word: generation (32 bits) | parts (16) | next part (16).
    claim_.store((gen << 32) | (uint64_t(parts) << 16), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lk(m_); }
      cv_.notify_all();
    }
    in_parallel = true;
    work();
    in_parallel = false;
    for (int spins = 0; done_.load(std::memory_order_acquire) != parts; ++spins)
      if (spins < 4096)
        SPP_PAUSE();
      else
        std::this_thread::yield();
    if (err_) std::rethrow_exception(err_);
  }

 private:
  // Claims and runs parts of the current call until none is left.
  void work() {
    for (;;) {
      const uint64_t w = claim_.fetch_add(1, std::memory_order_acq_rel);
      const int parts = static_cast<int>((w >> 16) & 0xffff), part = static_cast<int>(w & 0xffff);
      if (part >= parts) return;
      try {
        (*job_)(part);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!err_) err_ = std::current_exception();
      }
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void loop() {
    in_parallel = true;
    // Generation 0 is the pool's at construction. Not the generation current when this thread
    // first runs: by then the pool may already have run calls and even been told to stop (a
    // short-lived caller thread exiting), and a helper that took that stop generation as "seen"
    // would sleep through it, leaving the exiting thread joining it forever (tools/pool_check).
    uint64_t seen = 0;
    for (;;) {
      // Spin a little for the next call (the next parallel step of the same layer comes within
      // microseconds), then sleep: a helper spinning between layers only takes a core from the
      // next layer's threads, which on a busy or 2-core machine are often another pool's. In a
      // hot task (run_hot: a network run on the executor, whose next parallel step comes from the
      // same caller after a serial gap) up to kHotSpins times as long, until the task ends.
      uint64_t g = claim_.load(std::memory_order_acquire) >> 32;
      for (int spins = 0; g == seen && (spins < spin_ || (spins < hot_spin_ && hot_.load(std::memory_order_relaxed))); ++spins) {
        // Past the short spin, a yield every 256 PAUSEs: a thread waiting for this core (the
        // event loop, image decoding, another request) gets it at once, and an idle core stays
        // awake (a busy-waiting helper cost a loaded 2-core server ~10% of its requests a second).
        if (spins >= spin_ && (spins & 255) == 0)
          std::this_thread::yield();
        else
          SPP_PAUSE();
        g = claim_.load(std::memory_order_acquire) >> 32;
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        cv_.wait(lk, [&] { return stop_.load(std::memory_order_seq_cst) || (claim_.load(std::memory_order_seq_cst) >> 32) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        g = claim_.load(std::memory_order_acquire) >> 32;
      }
      seen = g;
      if (stop_.load(std::memory_order_acquire)) return;
      work();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> done_{0}, sleepers_{0};
  std::atomic<bool> stop_{false}, hot_{false};
  const std::function<void(int)>* job_ = nullptr;
  std::exception_ptr err_;
  int spin_ = 2000;  // ~50 us of PAUSE on Zen 4 (25 ns each); SPPNET_POOL_SPIN overrides (settings.h)
  // In a hot task: 1000 x spin_ (~20 ms of PAUSE on the Xeon of 2026-11-28, ~50 ms on Zen 4).
  static constexpr int64_t kHotSpins = 1000;
  int hot_spin_ = 0;
  bool short_ = false;
};

// The calling thread's pool, if it started one.
inline std::unique_ptr<Pool>& local_pool() {
  thread_local std::unique_ptr<Pool> pool;
  return pool;
}

// The calling thread's pool with at least `helpers` helper threads (grown on demand).
inline Pool& pool_for(int helpers) {
  std::unique_ptr<Pool>& pool = local_pool();
  if (!pool || (pool->helpers() < helpers && !pool->short_of_helpers())) {
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

// Calls f(i) once for each i in [0, n), each task claimed by whichever thread is free next: for
// tasks of uneven size (a ragged batch's maps), where parallel_for's one chunk a thread would
// leave a thread idle. Called from inside a chunk, it runs serially.
template <typename F>
void parallel_tasks(int64_t n, F&& f) {
  if (n <= 0) return;
  const int64_t t = std::min<int64_t>(num_threads(), n);
  if (t <= 1 || detail::in_parallel) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  if (n >= (int64_t{1} << 15)) {  // more than a call's parts can count: chunks of them
    parallel_for(n, 1, [&f](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) f(i);
    });
    return;
  }
  const std::function<void(int)> job = [&f](int part) { f(int64_t{part}); };
  detail::pool_for(static_cast<int>(t - 1)).run(static_cast<int>(n), job);
}

}  // namespace cpu
}  // namespace sppnet
