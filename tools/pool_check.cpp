// The fork-join pool of cpu/parallel.h under the lifetimes Node gives it: a thread (a worker_thread,
// the CPU executor) makes a few parallel calls and exits at once, so its thread_local pool is
// destroyed while its helper threads may not have started running yet; and pools that grow
// (a wider call replaces the pool). Each round runs on a fresh thread and must end within a time
// limit; a helper that misses the pool's stop would leave the exiting thread joining it forever.
// Every other round runs hot (cpu_info.h's run_hot: helpers spin between calls instead of sleeping).
//
//   build/tools/pool_check [ROUNDS=2000] [THREADS=16]
//   build/tools/pool_check limited
//
// Prints "pool_check: ROUNDS rounds ok" and exits 0, or names the round that hung and exits 1.
// `limited`: in a child process allowed 4 threads (RLIMIT_NPROC, as user nobody: root's limit is
// not enforced), a pool asked for 15 helpers gets the few the system starts and parallel calls
// still give the right sums (a half-built pool used to hang its thread); prints "pool_check:
// limited: H helpers of 15, 200 calls ok", or "skipped" when not run as root.
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "../cpu/parallel.h"

using namespace sppnet::cpu;

// The `limited` check (see the top). Returns the exit status.
int limited() {
  if (geteuid() != 0) {
    std::printf("pool_check: limited: skipped (needs root, to run as nobody under RLIMIT_NPROC)\n");
    return 0;
  }
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    alarm(20);  // a hang ends the child (SIGALRM) rather than the check
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) std::_Exit(3);
    const rlimit lim{4, 4};
    if (setrlimit(RLIMIT_NPROC, &lim) != 0) std::_Exit(4);
    setenv("SPPNET_NUM_THREADS", "16", 1);
    std::vector<int> data(1 << 12);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<int>(i % 7);
    for (int c = 0; c < 200; ++c) {
      std::atomic<long> s{0};
      parallel_for(16, 1, [&](int64_t b, int64_t e) {
        long local = 0;
        for (int64_t i = b; i < e; ++i) local += data[i] + c;
        s += local;
      });
      long want = 0;
      for (int i = 0; i < 16; ++i) want += data[i] + c;
      if (s.load() != want) {
        std::printf("pool_check: limited: call %d: sum %ld, expected %ld\n", c, s.load(), want);
        std::_Exit(1);
      }
    }
    const int helpers = detail::pool_for(15).helpers();
    std::printf("pool_check: limited: %d helpers of 15, 200 calls ok\n", helpers);
    std::fflush(stdout);
    std::_Exit(helpers < 15 ? 0 : 5);  // 5: the limit did not bite, nothing was checked
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return 2;
  if (WIFSIGNALED(status)) {
    std::printf("pool_check: limited: the child ended by signal %d%s\n", WTERMSIG(status), WTERMSIG(status) == SIGALRM ? " (hung for 20 s)" : "");
    return 1;
  }
  return WEXITSTATUS(status);
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "limited") return limited();
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 2000;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 16;
  setenv("SPPNET_NUM_THREADS", std::to_string(threads).c_str(), 1);  // whatever this machine has
  std::vector<int> data(1 << 12);
  for (int r = 0; r < rounds; ++r) {
    std::promise<long> done;
    auto fut = done.get_future();
    // A detached thread: if it hangs in its exit (the pool's destructor), the check reports the
    // round instead of hanging itself.
    std::thread([&, r] {
      // Fulfils the promise from its thread_local destructor, which runs after the pool's: it is
      // constructed first, and thread_locals are destroyed in the reverse order.
      struct Notify {
        std::promise<long>* p;
        long v = 0;
        ~Notify() { p->set_value(v); }
      };
      thread_local Notify n{&done};
      // Every other round hot (as under run_hot): the helpers spin between the calls, and the
      // thread exits with them spinning, which the pool's stop must still end.
      if (r % 2 == 1) ++detail::hot_depth;
      long sum = 0;
      const int calls = r % 3;  // 0: a pool made and destroyed by one call; 1, 2: more calls
      for (int c = 0; c <= calls; ++c) {
        // Widths that grow within a round make the pool be replaced (pool_for grows it).
        const int64_t width = std::min<int64_t>(threads, 2 + (c + r) % threads);
        std::atomic<long> s{0};
        parallel_for(width, 1, [&](int64_t b, int64_t e) {
          long local = 0;
          for (int64_t i = b; i < e; ++i) local += data[i] + i;
          s += local;
        });
        sum += s.load();
      }
      n.v = sum;
    }).detach();
    if (fut.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      std::printf("pool_check: round %d of %d hung: a thread's exit did not finish in 20 s (%d threads)\n", r, rounds, threads);
      std::fflush(stdout);
      std::_Exit(1);
    }
    const long got = fut.get();
    long want = 0;
    for (int c = 0; c <= r % 3; ++c) {
      const int64_t width = std::min<int64_t>(threads, 2 + (c + r) % threads);
      for (int64_t i = 0; i < width; ++i) want += data[i] + i;
    }
    if (got != want) {
      std::printf("pool_check: round %d: sum %ld, expected %ld\n", r, got, want);
      return 1;
    }
  }
  std::printf("pool_check: %d rounds ok (%d threads)\n", rounds, threads);
  return 0;
}
