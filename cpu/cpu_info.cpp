#include "sppnet/cpu_info.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "amx_cpu.h"
#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "vec.h"

namespace sppnet {
namespace cpu {

void load_settings(const std::function<bool(const char* name, std::string* value)>& read) { (void)detail::settings_from(read); }

std::vector<std::pair<std::string, double>> settings_list() {
  const Settings& s = settings();
  return {{"winograd", s.winograd ? 1 : 0},
          {"lanes", s.lanes ? 1 : 0},
          {"amx", s.amx ? 1 : 0},
          {"amxProducts", s.amx_products ? 1 : 0},
          {"winogradMinChannels", s.winograd_min_channels},
          {"winogradChunk", static_cast<double>(s.winograd_chunk)},
          {"gemmKc", static_cast<double>(s.gemm_kc)},
          {"gemmL2", static_cast<double>(s.gemm_l2)},
          {"poolSpin", s.pool_spin}};
}

std::string isa() { return isa_name(detect_isa()); }

int threads() { return num_threads(); }
bool bf16_products() { return gemm_bf16_available(); }
bool amx_products_granted() { return amx_products_enabled(); }

namespace {

// n rounds of 12 independent multiply-add chains (enough to cover a 4-cycle FMA latency on two or
// more pipes); returns a value that depends on every chain so that nothing is optimised away.
#ifdef SPP_X86
#define SPP_FMA12(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11)
__attribute__((target("avx512f"))) float fma_avx512(int64_t n, float m) {
  const __m512 b = _mm512_set1_ps(m), c = _mm512_set1_ps(1e-7f);
#define SPP_DECL(i) __m512 a##i = _mm512_set1_ps(1.f + i * 1e-3f);
  SPP_FMA12(SPP_DECL)
#undef SPP_DECL
  for (int64_t k = 0; k < n; ++k) {
#define SPP_STEP(i) a##i = _mm512_fmadd_ps(a##i, b, c);
    SPP_FMA12(SPP_STEP)
#undef SPP_STEP
  }
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) float fma_avx2(int64_t n, float m) {
  const __m256 b = _mm256_set1_ps(m), c = _mm256_set1_ps(1e-7f);
#define SPP_DECL(i) __m256 a##i = _mm256_set1_ps(1.f + i * 1e-3f);
  SPP_FMA12(SPP_DECL)
#undef SPP_DECL
  for (int64_t k = 0; k < n; ++k) {
#define SPP_STEP(i) a##i = _mm256_fmadd_ps(a##i, b, c);
    SPP_FMA12(SPP_STEP)
#undef SPP_STEP
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#undef SPP_FMA12
#endif

// The portable build's kernels run on the vector extension: 16 lanes, a multiply and an add.
float fma_portable(int64_t n, float m) {
  v16 a[12];
  for (int i = 0; i < 12; ++i) a[i] = v16_splat(1.f + i * 1e-3f);
  const v16 b = v16_splat(m), c = v16_splat(1e-7f);
  for (int64_t k = 0; k < n; ++k)
    for (int i = 0; i < 12; ++i) a[i] = a[i] * b + c;
  v16 s = v16{};
  for (int i = 0; i < 12; ++i) s += a[i];
  return v16_sum(s);
}

// FLOP per round of the ISA's loop (an FMA counts 2).
int64_t round_flops(Isa i) { return i == Isa::kAvx512 ? 12 * 16 * 2 : i == Isa::kAvx2 ? 12 * 8 * 2 : 12 * 16 * 2; }

float run_rounds(Isa i, int64_t n, float m) {
#ifdef SPP_X86
  if (i == Isa::kAvx512) return fma_avx512(n, m);
  if (i == Isa::kAvx2) return fma_avx2(n, m);
#endif
  return fma_portable(n, m);
}

}  // namespace

Status run_serially(const std::function<Status()>& f) {
  struct Restore {
    bool was = detail::in_parallel;
    ~Restore() { detail::in_parallel = was; }
  } restore;
  detail::in_parallel = true;
  return f();
}

Status run_hot(const std::function<Status()>& f) {
  struct Cool {
    ~Cool() {
      if (--detail::hot_depth == 0 && detail::local_pool()) detail::local_pool()->cool();
    }
  } cool;
  ++detail::hot_depth;
  return f();
}

PeakProbe fma_peak(int nthreads, double seconds) {
  PeakProbe r;
  const Isa i = detect_isa();
  r.isa = isa_name(i);
  if (nthreads < 1) nthreads = 1;
  if (seconds <= 0) seconds = 0.1;
  using clk = std::chrono::steady_clock;
  // Calibrate the round count on one thread so that a run lasts about `seconds`.
  int64_t n = 1 << 16;
  double t = 0;
  for (;;) {
    const auto t0 = clk::now();
    volatile float sink = run_rounds(i, n, 0.9999999f);
    (void)sink;
    t = std::chrono::duration<double>(clk::now() - t0).count();
    if (t > seconds / 8 || n > (int64_t{1} << 40)) break;
    n *= 4;
  }
  n = static_cast<int64_t>(n * (seconds / t)) + 1;
  r.per_thread.assign(static_cast<size_t>(nthreads), 0.0);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  // A thread that fails to start: release and join those started, then report it (an exception,
  // not std::terminate from a vector of joinable threads).
  auto unwind = [&] {
    go.store(true);
    for (auto& th : ts) th.join();
  };
  auto body = [&](int k) {
    ready.fetch_add(1);
    while (!go.load()) std::this_thread::yield();
    const auto t0 = clk::now();
    volatile float sink = run_rounds(i, n, 0.9999999f);
    (void)sink;
    const double s = std::chrono::duration<double>(clk::now() - t0).count();
    r.per_thread[static_cast<size_t>(k)] = static_cast<double>(n) * round_flops(i) / s / 1e9;
  };
  for (int k = 0; k < nthreads; ++k) {
    try {
      ts.emplace_back(body, k);
    } catch (...) {
      unwind();
      throw;
    }
  }
  while (ready.load() < nthreads) std::this_thread::yield();
  go.store(true);
  for (auto& th : ts) th.join();
  for (double g : r.per_thread) r.total_gflops += g;
  return r;
}

}  // namespace cpu
}  // namespace sppnet
