// The CPU model of the CUDA runtime declared in cuda_runtime.h: device memory between guard pages,
// the fiber scheduler, warp collectives, the tensor-core arithmetic, and the fault reports.
#include "cuda_runtime.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <vector>

thread_local uint3 threadIdx{0, 0, 0}, blockIdx{0, 0, 0};
thread_local dim3 blockDim, gridDim;

namespace emu {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kSharedLimit = 48 * 1024;  // static + dynamic shared memory of a block, default limit
constexpr size_t kStackBytes = 64 * 1024;   // per fiber, below a guard page

std::atomic<uint64_t> g_seed{0x5eed};
std::atomic<uint64_t> g_stream{0};  // each OS thread's generator gets its own stream of the seed

struct Generator {
  std::mt19937_64 r;
  uint64_t seeded_with = ~uint64_t{0};
  uint64_t stream = g_stream.fetch_add(1);  // the first thread to launch gets stream 0
};
thread_local Generator t_gen;

// This thread's generator, reseeded whenever the seed changed (emu::seed).
std::mt19937_64& rng() {
  const uint64_t s = g_seed.load();
  if (t_gen.seeded_with != s) {
    t_gen.r.seed(s * 0x9E3779B97F4A7C15ull + t_gen.stream);
    t_gen.seeded_with = s;
  }
  return t_gen.r;
}

thread_local cudaError_t t_last_error = cudaSuccess;

// ---- what is running, for fault reports ----
struct Running {
  const char* kernel = nullptr;
  dim3 grid, block;
  uint3 block_idx{0, 0, 0};
  int thread = -1;
};
thread_local Running t_running;

// ---- device allocations ----
struct Alloc {
  char* map = nullptr;  // the mapping: guard page, data pages, guard page
  size_t map_len = 0;
  char* data = nullptr;
  size_t bytes = 0;
  std::string label;
  bool pool = false;  // from cudaMallocAsync: its free goes back to the pool
};
std::mutex g_alloc_mutex;
std::map<uintptr_t, Alloc> g_allocs;  // by data start
size_t g_allocated = 0;  // live allocations, pool or not
// The default memory pool, by its byte counts: what its live blocks use, what it keeps after
// frees (given back at a synchronisation down to the release threshold, or by a trim).
size_t g_pool_used = 0, g_pool_kept = 0;
uint64_t g_release_threshold = 0;

size_t device_capacity() {
  static const size_t cap = [] {
    const char* e = std::getenv("SPPNET_EMU_MEMORY_MB");
    const long long mb = e ? std::atoll(e) : 0;
    return static_cast<size_t>(mb > 0 ? mb : 4096) << 20;
  }();
  return cap;
}

// The multiprocessor count: SPPNET_EMU_SMS (read once, at the first query: the binding's device
// query as the addon loads), else 132; tools/cuda_emulate sets it per case (set_device_sms). No
// kernel's thread reads the environment.
std::atomic<int> g_sms{0};

int device_sms() {
  int v = g_sms.load();
  if (v == 0) {
    const char* e = std::getenv("SPPNET_EMU_SMS");
    v = e && std::atoi(e) > 0 ? std::atoi(e) : 132;
    int unset = 0;
    if (!g_sms.compare_exchange_strong(unset, v)) v = unset;
  }
  return v;
}

// The allocation whose mapping (guard pages included) holds address a.
const Alloc* find_mapping(uintptr_t a) {
  for (const auto& kv : g_allocs) {
    const Alloc& al = kv.second;
    if (a >= reinterpret_cast<uintptr_t>(al.map) && a < reinterpret_cast<uintptr_t>(al.map) + al.map_len) return &al;
  }
  return nullptr;
}

// ---- fibers ----
enum State { kReady, kAtBlockBarrier, kAtWarp, kDone };
struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // lowest usable byte (a guard page below it)
  State state = kReady;
  int wait_kind = 0;
};

struct Sched {
  std::vector<Fiber> fibers;
  void* sched_sp = nullptr;
  int current = -1;
  const std::function<void()>* body = nullptr;
  std::vector<uint32_t> board;  // 8 words per thread
  // shared memory
  std::vector<char> arena_store;
  char* arena = nullptr;
  size_t arena_used = 0, arena_poisoned = 0;
  std::vector<std::pair<const void*, size_t>> sites;
  char* dyn_map = nullptr;
  size_t dyn_map_len = 0;
  char* dyn = nullptr;
  size_t dyn_bytes = 0;
  unsigned char poison = 0xff;
  char altstack[64 * 1024];
  bool altstack_set = false;
};
thread_local Sched S;

}  // namespace
}  // namespace emu

// ---- context switch (x86-64 System V): saves the callee-saved registers, MXCSR and the x87
// control word on the old stack, stores its sp, loads the new sp, restores, returns there ----
extern "C" void emu_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_switch,.-emu_switch
)");

namespace emu {

void set_device_sms(int sms) { g_sms.store(sms > 0 ? sms : 132); }

[[noreturn]] void fail(const std::string& what) {
  const Running& r = t_running;
  if (r.kernel)
    std::fprintf(stderr, "EMULATOR ERROR in kernel %s, block (%u,%u,%u) of (%u,%u,%u), thread %d of %u: %s\n", r.kernel, r.block_idx.x,
                 r.block_idx.y, r.block_idx.z, r.grid.x, r.grid.y, r.grid.z, r.thread, r.block.x * r.block.y * r.block.z, what.c_str());
  else
    std::fprintf(stderr, "EMULATOR ERROR: %s\n", what.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(3);
}

namespace {

// Async-signal-safe enough for a dying process: formats into a stack buffer, one write.
void on_fault(int sig, siginfo_t* info, void*) {
  char msg[1024];
  const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  int n = 0;
  const Running& r = t_running;
  n += std::snprintf(msg + n, sizeof msg - n, "EMULATOR ERROR: %s at address 0x%lx", sig == SIGSEGV ? "invalid memory access" : "bus error",
                     static_cast<unsigned long>(a));
  if (r.kernel)
    n += std::snprintf(msg + n, sizeof msg - n, " in kernel %s, block (%u,%u,%u) of (%u,%u,%u), thread %d", r.kernel, r.block_idx.x, r.block_idx.y,
                       r.block_idx.z, r.grid.x, r.grid.y, r.grid.z, r.thread);
  const Alloc* al = find_mapping(a);
  const Sched& s = S;
  if (al) {
    const uintptr_t d = reinterpret_cast<uintptr_t>(al->data), e = d + al->bytes;
    if (a >= e)
      n += std::snprintf(msg + n, sizeof msg - n, ": %lu bytes past the end of '%s' (%lu bytes)", static_cast<unsigned long>(a - e),
                         al->label.c_str(), static_cast<unsigned long>(al->bytes));
    else
      n += std::snprintf(msg + n, sizeof msg - n, ": %lu bytes before the start of '%s' (%lu bytes)", static_cast<unsigned long>(d - a),
                         al->label.c_str(), static_cast<unsigned long>(al->bytes));
  } else if (s.dyn_map && a >= reinterpret_cast<uintptr_t>(s.dyn_map) && a < reinterpret_cast<uintptr_t>(s.dyn_map) + s.dyn_map_len) {
    n += std::snprintf(msg + n, sizeof msg - n, ": past the end of the launch's %lu bytes of dynamic shared memory",
                       static_cast<unsigned long>(s.dyn_bytes));
  } else {
    for (const Fiber& f : s.fibers)
      if (f.stack && a >= reinterpret_cast<uintptr_t>(f.stack) - kPage && a < reinterpret_cast<uintptr_t>(f.stack)) {
        n += std::snprintf(msg + n, sizeof msg - n, ": a fiber's stack overflowed (%lu KiB)", static_cast<unsigned long>(kStackBytes >> 10));
        break;
      }
  }
  if (n < static_cast<int>(sizeof msg) - 1) msg[n++] = '\n';
  fflush(stdout);
  if (write(2, msg, static_cast<size_t>(n)) < 0) {
  }
  _exit(3);
}

std::atomic<bool> g_report_faults{false};

void ensure_fault_handler() {
  Sched& s = S;
  if (s.altstack_set || !g_report_faults.load()) return;
  stack_t ss{};
  ss.ss_sp = s.altstack;
  ss.ss_size = sizeof s.altstack;
  sigaltstack(&ss, nullptr);
  s.altstack_set = true;
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
  });
}

char* map_guarded(size_t bytes, size_t align, bool at_end, char** map_out, size_t* map_len_out) {
  const size_t data_pages = (bytes + kPage - 1) / kPage + 1;  // + 1: room to align either way
  const size_t len = (data_pages + 2) * kPage;
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  char* map = static_cast<char*>(m);
  mprotect(map, kPage, PROT_NONE);
  mprotect(map + len - kPage, kPage, PROT_NONE);
  char* data;
  if (at_end) {
    const uintptr_t end = reinterpret_cast<uintptr_t>(map + len - kPage);
    data = reinterpret_cast<char*>((end - bytes) & ~(uintptr_t{align} - 1));
  } else {
    data = map + kPage;
  }
  *map_out = map;
  *map_len_out = len;
  return data;
}

}  // namespace

void seed(uint64_t s) { g_seed.store(s); }
void report_faults() { g_report_faults.store(true); }

void* device_alloc(size_t bytes, size_t align, const char* label, bool pool) {
  std::lock_guard<std::mutex> lk(g_alloc_mutex);
  if (pool && g_pool_kept >= bytes) {
    g_pool_kept -= bytes;  // a kept block is reused
  } else if (g_allocated + g_pool_kept + bytes > device_capacity()) {
    return nullptr;
  }
  Alloc al;
  const bool at_end = (rng()() & 1) != 0;
  al.data = map_guarded(bytes, align, at_end, &al.map, &al.map_len);
  if (!al.data) return nullptr;
  al.bytes = bytes;
  al.label = label;
  al.pool = pool;
  // Poison: NaN or 3.4e38 as floats, -1 or about 2^31 as ints. Beyond 256 MiB only the first and
  // last 16 MiB (the rest reads as zeros), so that huge test allocations do not fill host memory.
  const int poison = (rng()() & 1) ? 0xff : 0x7f;
  const size_t edge = size_t{16} << 20;
  if (bytes <= (size_t{256} << 20)) {
    std::memset(al.data, poison, bytes);
  } else {
    std::memset(al.data, poison, edge);
    std::memset(al.data + bytes - edge, poison, edge);
  }
  g_allocated += bytes;
  if (pool) g_pool_used += bytes;
  void* p = al.data;
  g_allocs.emplace(reinterpret_cast<uintptr_t>(p), std::move(al));
  return p;
}

void device_free(void* p) {
  std::lock_guard<std::mutex> lk(g_alloc_mutex);
  auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_allocs.end()) fail("cudaFree of a pointer that is not a live device allocation");
  const Alloc& al = it->second;
  g_allocated -= al.bytes;
  if (al.pool) g_pool_used -= al.bytes, g_pool_kept += al.bytes;
  munmap(al.map, al.map_len);
  g_allocs.erase(it);
}

// At a synchronisation the pool gives back what it keeps beyond its release threshold.
void pool_release_to_threshold() {
  std::lock_guard<std::mutex> lk(g_alloc_mutex);
  if (g_pool_used + g_pool_kept > g_release_threshold)
    g_pool_kept = g_release_threshold > g_pool_used ? std::min<uint64_t>(g_pool_kept, g_release_threshold - g_pool_used) : 0;
}

void pool_trim(size_t keep) {
  std::lock_guard<std::mutex> lk(g_alloc_mutex);
  g_pool_kept = std::min(g_pool_kept, keep > g_pool_used ? keep - g_pool_used : 0);
}

bool is_device(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lk(g_alloc_mutex);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a + bytes <= it->first + it->second.bytes;
}

namespace {

// Whether address a lies in a mapping of this process (read from /proc/self/maps).
bool mapped(uintptr_t a, std::string* what) {
  std::ifstream f("/proc/self/maps");
  std::string line;
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2) continue;
    if (a >= lo && a < hi) {
      *what = line;
      return true;
    }
  }
  return false;
}

}  // namespace

void check_argument_words(const char* kernel, const void* arg, size_t bytes) {
  const char* b = static_cast<const char*>(arg);
  for (size_t off = 0; off + 8 <= bytes; off += 8) {
    uintptr_t w;
    std::memcpy(&w, b + off, 8);
    // Pointers the kernels take are at least 4-byte aligned; a misaligned word is data (e.g. a
    // bool beside padding).
    if (w < 0x10000 || w >= (uintptr_t{1} << 47) || (w & 3) != 0 || is_device(reinterpret_cast<void*>(w), 0)) continue;
    std::string what;
    if (mapped(w, &what)) {
      std::ostringstream m;
      m << "kernel " << kernel << ": an argument (bytes " << off << ".." << off + 8 << ") holds 0x" << std::hex << w
        << ", which points into host memory, not a device allocation (" << what << ")";
      fail(m.str());
    }
  }
}

void set_last_error(cudaError_t e) { t_last_error = e; }

std::string name_from_signature(const char* pretty_function) {
  std::string s = pretty_function;
  const size_t at = s.find("K = ");
  if (at == std::string::npos) return s;
  s = s.substr(at + 4);
  const size_t end = s.rfind(']');
  return end == std::string::npos ? s : s.substr(0, end);
}

// ---- the scheduler ----

namespace {

std::mutex g_launch_mutex;
std::map<std::string, long> g_launched;

// SPPNET_EMU_LAUNCHES=FILE: at exit, every kernel launched in this process and how often, one
// "name: count" per line (how a test learns what a script touched through the emulated addon).
void write_launches() {
  const char* path = std::getenv("SPPNET_EMU_LAUNCHES");
  if (!path) return;
  if (FILE* f = std::fopen(path, "w")) {
    std::lock_guard<std::mutex> lk(g_launch_mutex);
    for (const auto& kv : g_launched) std::fprintf(f, "%s: %ld\n", kv.first.c_str(), kv.second);
    std::fclose(f);
  }
}

[[noreturn]] void fiber_entry() {
  Sched& s = S;
  (*s.body)();
  s.fibers[static_cast<size_t>(s.current)].state = kDone;
  emu_switch(&s.fibers[static_cast<size_t>(s.current)].sp, s.sched_sp);
  __builtin_unreachable();
}

void prepare_fiber(Fiber& f) {
  if (!f.stack) {
    void* m = mmap(nullptr, kStackBytes + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) fail("out of memory for fiber stacks");
    mprotect(m, kPage, PROT_NONE);
    f.stack = static_cast<char*>(m) + kPage;
  }
  uint64_t* top = reinterpret_cast<uint64_t*>(f.stack + kStackBytes);  // 16-byte aligned
  top[-1] = 0;                                                         // fiber_entry's "return address": never used
  top[-2] = reinterpret_cast<uint64_t>(&fiber_entry);                  // where emu_switch's ret goes
  for (int i = 3; i <= 8; ++i) top[-i] = 0;                            // rbp rbx r12 r13 r14 r15
  top[-9] = 0x037F00001F80ull;                                         // MXCSR 0x1F80, x87 control word 0x037F
  f.sp = top - 9;
  f.state = kReady;
  f.wait_kind = 0;
}

void yield_as(State st, int kind) {
  Sched& s = S;
  Fiber& f = s.fibers[static_cast<size_t>(s.current)];
  f.state = st;
  f.wait_kind = kind;
  emu_switch(&f.sp, s.sched_sp);
}

const char* wait_name(int kind) {
  switch (kind) {
    case kShuffle: return "a shuffle";
    case kMma: return "an mma.sync";
    case kSyncwarp: return "__syncwarp";
    default: return "?";
  }
}

// Releases what can go on: a warp whose live lanes all wait at one collective, else the block if
// every live thread waits at __syncthreads. Fails on a deadlock.
void release(std::vector<int>& ready, int n) {
  Sched& s = S;
  for (int w = 0; w * 32 < n; ++w) {
    const int lo = w * 32, hi = std::min(n, lo + 32);
    int waiting = 0, done = 0, kind = 0;
    bool mixed = false;
    for (int t = lo; t < hi; ++t) {
      const Fiber& f = s.fibers[static_cast<size_t>(t)];
      if (f.state == kAtWarp) {
        if (waiting++ == 0) kind = f.wait_kind;
        else if (f.wait_kind != kind) mixed = true;
      } else if (f.state == kDone) {
        ++done;
      }
    }
    if (waiting == 0 || waiting + done != hi - lo) continue;
    if (mixed) fail("the lanes of warp " + std::to_string(w) + " wait at different warp collectives");
    if (done > 0 || hi - lo != 32)
      fail(std::string(wait_name(kind)) + " with a full mask in warp " + std::to_string(w) + ", but " + std::to_string(32 - waiting) +
           " of its lanes have exited or do not exist");
    for (int t = lo; t < hi; ++t) {
      s.fibers[static_cast<size_t>(t)].state = kReady;
      ready.push_back(t);
    }
  }
  if (!ready.empty()) return;
  int at_block = 0, at_warp = 0, live = 0;
  for (int t = 0; t < n; ++t) {
    const State st = s.fibers[static_cast<size_t>(t)].state;
    if (st == kDone) continue;
    ++live;
    if (st == kAtBlockBarrier) ++at_block;
    if (st == kAtWarp) ++at_warp;
  }
  if (live > 0 && at_block == live) {
    for (int t = 0; t < n; ++t)
      if (s.fibers[static_cast<size_t>(t)].state == kAtBlockBarrier) {
        s.fibers[static_cast<size_t>(t)].state = kReady;
        ready.push_back(t);
      }
    return;
  }
  if (live > 0)
    fail("deadlock: of " + std::to_string(live) + " live threads, " + std::to_string(at_block) + " wait at __syncthreads and " +
         std::to_string(at_warp) + " at a warp collective (a barrier not every thread reaches)");
}

void run_block(int n) {
  Sched& s = S;
  if (s.fibers.size() < static_cast<size_t>(n)) s.fibers.resize(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) prepare_fiber(s.fibers[static_cast<size_t>(t)]);
  // Shared memory: poison what the last block used, and the dynamic part.
  s.poison = (rng()() & 1) ? 0xff : 0x7f;  // NaN or 3.4e38 as floats, -1 or about 2^31 as ints
  std::memset(s.arena, s.poison, s.arena_poisoned);
  s.arena_used = 0;
  s.sites.clear();
  if (s.dyn_bytes) std::memset(s.dyn, s.poison, s.dyn_bytes);
  std::vector<int> ready(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) ready[static_cast<size_t>(t)] = t;
  int live = n;
  auto& r = rng();
  const unsigned bx = blockDim.x, by = blockDim.y;
  while (live > 0) {
    if (ready.empty()) release(ready, n);
    const size_t pick = static_cast<size_t>(r() % ready.size());
    const int t = ready[pick];
    ready[pick] = ready.back();
    ready.pop_back();
    s.current = t;
    t_running.thread = t;
    threadIdx = uint3{t % bx, (t / bx) % by, t / (bx * by)};
    emu_switch(&s.sched_sp, s.fibers[static_cast<size_t>(t)].sp);
    if (s.fibers[static_cast<size_t>(t)].state == kDone) --live;
  }
  s.arena_poisoned = std::max(s.arena_poisoned, s.arena_used);
  t_running.thread = -1;
}

uint64_t gcd(uint64_t a, uint64_t b) {
  while (b) {
    const uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

}  // namespace

cudaError_t run_grid(const char* kernel, dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535 || dynamic_smem > kSharedLimit)
    return cudaErrorInvalidConfiguration;
  {
    std::lock_guard<std::mutex> lk(g_launch_mutex);
    if (g_launched.empty()) std::atexit(write_launches);
    ++g_launched[kernel];
  }
  ensure_fault_handler();
  Sched& s = S;
  if (s.board.size() < 1024 * 8) s.board.assign(1024 * 8, 0);
  if (!s.arena) {
    s.arena_store.assign(kSharedLimit + 16, 0);
    s.arena = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(s.arena_store.data()) + 15) & ~uintptr_t{15});
  }
  // The dynamic shared memory ends at a guard page.
  s.dyn_bytes = dynamic_smem;
  s.dyn = map_guarded(dynamic_smem, 16, true, &s.dyn_map, &s.dyn_map_len);
  if (!s.dyn) fail("out of memory for dynamic shared memory");
  const Running saved = t_running;
  t_running.kernel = kernel;
  t_running.grid = grid;
  t_running.block = block;
  gridDim = grid;
  blockDim = block;
  s.body = &body;
  // Blocks in a random order: i -> (a i + b) mod N with a coprime to N.
  const uint64_t N = uint64_t{grid.x} * grid.y * grid.z;
  auto& r = rng();
  uint64_t a = N > 1 ? 1 + r() % (N - 1) : 1;
  while (gcd(a, N) != 1) a = a % (N - 1) + 1;
  const uint64_t b = r() % N;
  for (uint64_t i = 0; i < N; ++i) {
    const uint64_t k = static_cast<uint64_t>((static_cast<unsigned __int128>(a) * i + b) % N);
    blockIdx = uint3{static_cast<unsigned>(k % grid.x), static_cast<unsigned>((k / grid.x) % grid.y), static_cast<unsigned>(k / (uint64_t{grid.x} * grid.y))};
    t_running.block_idx = blockIdx;
    run_block(static_cast<int>(threads));
  }
  munmap(s.dyn_map, s.dyn_map_len);
  s.dyn_map = nullptr;
  s.dyn = nullptr;
  s.dyn_bytes = 0;
  t_running = saved;
  return cudaSuccess;
}

void syncthreads() { yield_as(kAtBlockBarrier, 0); }
void warp_sync(int kind) { yield_as(kAtWarp, kind); }

uint32_t* warp_board() {
  Sched& s = S;
  return s.board.data() + 8 * static_cast<size_t>(s.current);
}

char* shared_array_bytes(const void* site, size_t bytes, size_t align) {
  Sched& s = S;
  for (const auto& st : s.sites)
    if (st.first == site) return s.arena + st.second;
  const size_t off = (s.arena_used + align - 1) & ~(align - 1);
  if (off + bytes + s.dyn_bytes > kSharedLimit)
    fail("the block needs " + std::to_string(off + bytes) + " bytes of static and " + std::to_string(s.dyn_bytes) +
         " of dynamic shared memory, more than 48 KiB");
  s.sites.emplace_back(site, off);
  s.arena_used = off + bytes;
  if (s.arena_used > s.arena_poisoned) std::memset(s.arena + s.arena_poisoned, s.poison, s.arena_used - s.arena_poisoned);
  return s.arena + off;
}

char* dynamic_shared_bytes() { return S.dyn; }

void for_each_launched(const std::function<void(const std::string&, long)>& f) {
  std::lock_guard<std::mutex> lk(g_launch_mutex);
  for (const auto& kv : g_launched) f(kv.first, kv.second);
}

// ---- tensor cores ----

uint32_t to_tf32(float v) {
  const uint32_t u = __float_as_uint(v);
  if ((u & 0x7f800000u) == 0x7f800000u) return u;  // Inf, NaN
  return (u + 0x1000u) & 0xffffe000u;
}

namespace {

uint16_t bf16(float v) {
  const uint32_t u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) { return __uint_as_float(uint32_t{h} << 16); }

// double -> float toward zero.
float to_float_rz(double s) {
  float f = static_cast<float>(s);
  if (std::fabs(static_cast<double>(f)) > std::fabs(s)) f = std::nextafter(f, 0.f);
  return f;
}

// c + sum of the products, in blocks of `block` products: within a block every term (the running
// sum included) is cut to the 24-bit grid of the largest one, toward zero; the block's exact sum
// is then cut to FP32 toward zero. With truncate false, an FP32 sum rounded to nearest per block.
float accumulate(float c, const double* p, int K, int block, bool truncate) {
  for (int b0 = 0; b0 < K; b0 += block) {
    const int b1 = std::min(K, b0 + block);
    double s = c;
    bool finite = std::isfinite(c);
    for (int k = b0; k < b1; ++k) finite = finite && std::isfinite(p[k]);
    if (!finite || !truncate) {
      for (int k = b0; k < b1; ++k) s += p[k];
      c = static_cast<float>(s);
      continue;
    }
    int emax = INT_MIN;
    int e;
    if (c != 0) std::frexp(static_cast<double>(c), &e), emax = std::max(emax, e);
    for (int k = b0; k < b1; ++k)
      if (p[k] != 0) std::frexp(p[k], &e), emax = std::max(emax, e);
    if (emax == INT_MIN) {
      c = 0.f;
      continue;
    }
    const double q = std::ldexp(1.0, emax - 24);
    s = std::trunc(static_cast<double>(c) / q) * q;
    for (int k = b0; k < b1; ++k) s += std::trunc(p[k] / q) * q;
    c = to_float_rz(s);
  }
  return c;
}

// D = A . B + C for one m16n8k{8,16} over the warp: each lane posts its fragments, all lanes
// meet, each computes its four outputs from everyone's fragments, all meet again.
template <bool BF16>
void mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  uint32_t* board = warp_board();
  const int lane = static_cast<int>(threadIdx.x & 31);
  uint32_t* warp0 = board - 8 * lane;
  board[0] = a0, board[1] = a1, board[2] = a2, board[3] = a3, board[4] = b0, board[5] = b1;
  warp_sync(kMma);
  constexpr int K = BF16 ? 16 : 8;
  double A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const uint32_t* sl = warp0 + 8 * l;
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r & 1);
      if (BF16) {
        const int col = 2 * t + 8 * (r >> 1);
        A[row][col] = from_bf16(static_cast<uint16_t>(sl[r] & 0xffff));
        A[row][col + 1] = from_bf16(static_cast<uint16_t>(sl[r] >> 16));
      } else {
        A[row][t + 4 * (r >> 1)] = __uint_as_float(sl[r] & 0xffffe000u);  // the MMA reads 19 bits
      }
    }
    for (int r = 0; r < 2; ++r) {
      if (BF16) {
        const int k = 2 * t + 8 * r;
        B[k][g] = from_bf16(static_cast<uint16_t>(sl[4 + r] & 0xffff));
        B[k + 1][g] = from_bf16(static_cast<uint16_t>(sl[4 + r] >> 16));
      } else {
        B[t + 4 * r][g] = __uint_as_float(sl[4 + r] & 0xffffe000u);
      }
    }
  }
  const MmaModel& m = mma_model();
  const int g = lane >> 2, t = lane & 3;
  for (int r = 0; r < 4; ++r) {
    const int row = g + 8 * (r >> 1), col = 2 * t + (r & 1);
    double p[16];
    for (int k = 0; k < K; ++k) p[k] = A[row][k] * B[k][col];  // exact: 11 x 11 or 8 x 8 significant bits
    d[r] = accumulate(d[r], p, K, BF16 ? m.bf16_block : m.tf32_block, m.truncate);
  }
  warp_sync(kMma);
}

}  // namespace

uint32_t pack_bf16(float lo, float hi) { return uint32_t{bf16(lo)} | (uint32_t{bf16(hi)} << 16); }

void mma_tf32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) { mma<false>(d, a0, a1, a2, a3, b0, b1); }
void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) { mma<true>(d, a0, a1, a2, a3, b0, b1); }

MmaModel& mma_model() {
  static MmaModel m;
  return m;
}

}  // namespace emu

// ---- the runtime API ----

namespace {
const char* error_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

// A copy or memset on memory the call's kind says is device memory, that is not: an error, loudly.
void require_device(const void* p, size_t bytes, const char* call, const char* which) {
  if (bytes && !emu::is_device(p, bytes))
    emu::fail(std::string(call) + ": " + which + " (" + std::to_string(bytes) + " bytes) is not inside one device allocation");
}
void require_host(const void* p, size_t bytes, const char* call, const char* which) {
  if (bytes && emu::is_device(p, 1)) emu::fail(std::string(call) + ": " + which + " is device memory, but the copy's kind says host");
}

cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, const char* call) {
  if (k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice) require_device(dst, bytes, call, "the destination");
  if (k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice) require_device(src, bytes, call, "the source");
  if (k == cudaMemcpyHostToDevice) require_host(src, bytes, call, "the source");
  if (k == cudaMemcpyDeviceToHost) require_host(dst, bytes, call, "the destination");
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::t_last_error;
  emu::t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return emu::t_last_error; }
const char* cudaGetErrorName(cudaError_t e) { return error_name(e); }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "emulated CUDA error";
  }
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "sppnet CUDA emulator (CPU)");
  p->totalGlobalMem = emu::device_capacity();
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = emu::device_sms();
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = emu::device_sms(); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = emu::device_alloc(bytes ? bytes : 1, 16, "cudaMalloc", false);
  return *p ? cudaSuccess : (emu::t_last_error = cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void* p) {
  if (p) emu::device_free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  *p = emu::device_alloc(bytes ? bytes : 1, 16, "cudaMallocAsync", true);
  return *p ? cudaSuccess : (emu::t_last_error = cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind k) { return copy(dst, src, bytes, k, "cudaMemcpy"); }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t) {
  return copy(dst, src, bytes, k, "cudaMemcpyAsync");
}
cudaError_t cudaMemset(void* p, int v, size_t bytes) {
  require_device(p, bytes, "cudaMemset", "the memory");
  if (bytes) std::memset(p, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) { return cudaMemset(p, v, bytes); }
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  emu::pool_release_to_threshold();
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaStreamSynchronize(nullptr); }
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lk(emu::g_alloc_mutex);
  *total_bytes = emu::device_capacity();
  *free_bytes = *total_bytes - emu::g_allocated - emu::g_pool_kept;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int d) {
  *pool = reinterpret_cast<cudaMemPool_t>(0x10);
  return d == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr a, void* v) {
  if (a != cudaMemPoolAttrReleaseThreshold) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lk(emu::g_alloc_mutex);
  emu::g_release_threshold = *static_cast<uint64_t*>(v);
  return cudaSuccess;
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr a, void* v) {
  std::lock_guard<std::mutex> lk(emu::g_alloc_mutex);
  uint64_t& out = *static_cast<uint64_t*>(v);
  switch (a) {
    case cudaMemPoolAttrReleaseThreshold: out = emu::g_release_threshold; return cudaSuccess;
    case cudaMemPoolAttrReservedMemCurrent: out = emu::g_pool_used + emu::g_pool_kept; return cudaSuccess;
    case cudaMemPoolAttrUsedMemCurrent: out = emu::g_pool_used; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t keep) {
  emu::pool_trim(keep);
  return cudaSuccess;
}
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
  bool recorded = false;
};
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  if (!e) return emu::t_last_error = cudaErrorInvalidValue;
  e->at = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end || !start->recorded || !end->recorded) return emu::t_last_error = cudaErrorInvalidValue;
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}
