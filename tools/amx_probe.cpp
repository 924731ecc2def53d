// AMX probe (measurements for bench/RESULTS.md, "Measured, not built: AMX"; not part of the
// build): the tile unit's BF16 product rate with tiles fed from buffers of several sizes, and a
// plain bf16x3 GEMM (each FP32 input split into BF16 high and low parts; A'' = [Ah | Ah | Al] and
// B'' = [Bh ; Bl ; Bh] along K, so C = Ah Bh + Ah Bl + Al Bh in FP32) with its error against
// float64. Linux on a CPU with AMX-BF16 only.
//
//   g++ -O2 -std=c++17 -mamx-tile -mamx-bf16 -mavx512f tools/amx_probe.cpp -o /tmp/amx_probe -lpthread
//   /tmp/amx_probe peak
//   /tmp/amx_probe gemm M K N [threads] [reps]
#include <immintrin.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <cmath>
#include <vector>
#include <chrono>
#include <algorithm>
#include <random>
#include <thread>
#include <string>
typedef uint16_t bf16;
static inline bf16 to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return bf16(u >> 16); }
static inline float from_bf16(bf16 h) { uint32_t u = uint32_t(h) << 16; float f; memcpy(&f, &u, 4); return f; }
struct Cfg { uint8_t palette, start, r[14]; uint16_t colsb[16]; uint8_t rows[16]; };
int64_t rup(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
// K'' = 3Kp laid out as [Ah | Ah | Al]; B'' = [Bh ; Bl ; Bh]
void pack_A(int M, int K, const float* A, std::vector<bf16>& Ap, int64_t& K3) {
  const int64_t Kp = rup(K, 32); K3 = 3 * Kp; const int64_t Mp = rup(M, 32);
  Ap.assign(Mp * K3, 0);
  for (int64_t m = 0; m < Mp; ++m)
    for (int64_t k = 0; k < K3; ++k) {
      int part = int(k / Kp); int64_t kk = k % Kp; float a = (m < M && kk < K) ? A[m * K + kk] : 0.f;
      bf16 h = to_bf16(a); bf16 l = to_bf16(a - from_bf16(h));
      bf16 v = part == 2 ? l : h;
      int64_t mb = m / 32, t = (m % 32) / 16, r = m % 16, ks = k / 32, kc = k % 32;
      Ap[((mb * (K3 / 32) + ks) * 2 + t) * 512 + r * 32 + kc] = v;
    }
}
void pack_B(int K, int N, const float* B, std::vector<bf16>& Bp, int64_t K3, int nthreads) {
  const int64_t Kp = K3 / 3, Np = rup(N, 32);
  Bp.resize(Np * K3);
  auto work = [&](int64_t nb0, int64_t nb1) {
    for (int64_t nb = nb0; nb < nb1; ++nb)
      for (int64_t k = 0; k < Kp; k += 2)
        for (int64_t n = nb * 32; n < nb * 32 + 32; ++n) {
          float b0 = (k < K && n < N) ? B[k * N + n] : 0.f, b1 = (k + 1 < K && n < N) ? B[(k + 1) * N + n] : 0.f;
          bf16 h0 = to_bf16(b0), h1 = to_bf16(b1), l0 = to_bf16(b0 - from_bf16(h0)), l1 = to_bf16(b1 - from_bf16(h1));
          for (int part = 0; part < 3; ++part) {
            int64_t kk = part * Kp + k; bf16 v0 = part == 1 ? l0 : h0, v1 = part == 1 ? l1 : h1;
            int64_t ks = kk / 32, kr = (kk % 32) / 2, t = (n % 32) / 16, c = n % 16;
            bf16* d = &Bp[((nb * (K3 / 32) + ks) * 2 + t) * 512 + kr * 32 + c * 2];
            d[0] = v0; d[1] = v1;
          }
        }
  };
  int64_t NB = Np / 32;
  std::vector<std::thread> th;
  for (int t = 0; t < nthreads; ++t) th.emplace_back(work, NB * t / nthreads, NB * (t + 1) / nthreads);
  for (auto& x : th) x.join();
}
void cfg_load() {
  Cfg c; memset(&c, 0, sizeof c); c.palette = 1;
  for (int i = 0; i < 8; ++i) { c.colsb[i] = 64; c.rows[i] = 16; }
  _tile_loadconfig(&c);
}
void gemm_rows(int M, int N, int64_t K3, const bf16* Ap, const bf16* Bp, float* C, int64_t mb0, int64_t mb1, int64_t NB) {
  cfg_load();
  const int64_t KS = K3 / 32;
  alignas(64) float tmp[4][16][16];
  for (int64_t nb = 0; nb < NB; ++nb) {
    const bf16* b = Bp + nb * KS * 1024;
    for (int64_t mb = mb0; mb < mb1; ++mb) {
      const bf16* a = Ap + mb * KS * 1024;
      _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
      for (int64_t ks = 0; ks < KS; ++ks) {
        _tile_loadd(4, a + ks * 1024, 64);
        _tile_loadd(6, b + ks * 1024, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b + ks * 1024 + 512, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a + ks * 1024 + 512, 64);
        _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, tmp[0], 64); _tile_stored(1, tmp[1], 64); _tile_stored(2, tmp[2], 64); _tile_stored(3, tmp[3], 64);
      for (int t = 0; t < 4; ++t) {
        int mt = t / 2, nt = t % 2;
        for (int r = 0; r < 16; ++r) {
          int64_t m = mb * 32 + mt * 16 + r; if (m >= M) continue;
          int64_t n0 = nb * 32 + nt * 16; if (n0 >= N) continue;
          int nv = std::min<int64_t>(16, N - n0);
          memcpy(C + m * N + n0, tmp[t][r], nv * 4);
        }
      }
    }
  }
  _tile_release();
}
void peak() {
  Cfg c; memset(&c, 0, sizeof c); c.palette = 1;
  for (int i = 0; i < 8; ++i) { c.colsb[i] = 64; c.rows[i] = 16; }
  _tile_loadconfig(&c);
  {  // products on tiles loaded once: the unit's own rate
    std::vector<uint16_t> one(512, 0x3c00);
    _tile_loadd(4, one.data(), 64); _tile_loadd(5, one.data(), 64); _tile_loadd(6, one.data(), 64); _tile_loadd(7, one.data(), 64);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    const long n = 2000000;
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) { _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7); }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("tiles loaded once: %.1f ns per TDP, %.0f GFLOP/s of BF16\n", s / (4.0 * n) * 1e9, 4.0 * n * 16 * 16 * 32 * 2 / s / 1e9);
  }
  for (size_t kb : {16, 32, 256, 1024, 8192}) {
    std::vector<uint16_t> buf(kb * 512, 0x3c00);
    const size_t tiles = kb;  // 1 KB each
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    const long reps = 4000000 / tiles + 1;
    auto t0 = std::chrono::steady_clock::now();
    for (long r = 0; r < reps; ++r)
      for (size_t t = 0; t + 4 <= tiles; t += 4) {
        const uint16_t* p = buf.data() + t * 512;
        _tile_loadd(4, p, 64); _tile_loadd(6, p + 512, 64); _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, p + 1024, 64); _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, p + 1536, 64); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
      }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double n = double(reps) * (tiles / 4) * 4;
    printf("buffer %5zu KB: %.1f ns per TDP (%.0f GB/s of tile loads)\n", kb, s / n * 1e9, n * 1024 / s / 1e9);
  }
  _tile_release();
}

int main(int argc, char** argv) {
  syscall(SYS_arch_prctl, 0x1023, 18);
  if (argc > 1 && std::string(argv[1]) == "peak") return peak(), 0;
  if (argc < 5) return std::fprintf(stderr, "usage: amx_probe peak | gemm M K N [threads] [reps]\n"), 2;
  ++argv, --argc;
  int M = atoi(argv[1]), K = atoi(argv[2]), N = atoi(argv[3]), T = argc > 4 ? atoi(argv[4]) : 1, reps = argc > 5 ? atoi(argv[5]) : 21;
  syscall(SYS_arch_prctl, 0x1023, 18);
  std::mt19937 g(1); std::normal_distribution<float> nd;
  std::vector<float> A(size_t(M) * K), B(size_t(K) * N), C(size_t(M) * N);
  for (auto& v : A) v = nd(g) * 0.05f; for (auto& v : B) v = std::max(0.f, nd(g));
  std::vector<bf16> Ap, Bp; int64_t K3;
  pack_A(M, K, A.data(), Ap, K3);
  std::vector<double> tp, tg;
  const int64_t MB = rup(M, 32) / 32, NB = rup(N, 32) / 32;
  for (int r = 0; r < reps + 2; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    pack_B(K, N, B.data(), Bp, K3, T);
    auto t1 = std::chrono::steady_clock::now();
    std::vector<std::thread> th;
    for (int t = 0; t < T; ++t) th.emplace_back(gemm_rows, M, N, K3, Ap.data(), Bp.data(), C.data(), MB * t / T, MB * (t + 1) / T, NB);
    for (auto& x : th) x.join();
    auto t2 = std::chrono::steady_clock::now();
    if (r >= 2) tp.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count()), tg.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  std::sort(tp.begin(), tp.end()); std::sort(tg.begin(), tg.end());
  double maxrel = 0; std::mt19937 g2(3);
  for (int s = 0; s < 2000; ++s) {
    int m = g2() % M, n = g2() % N; double ref = 0, mag = 0;
    for (int k = 0; k < K; ++k) ref += double(A[size_t(m) * K + k]) * B[size_t(k) * N + n], mag += std::fabs(double(A[size_t(m) * K + k]) * B[size_t(k) * N + n]);
    double e = std::fabs(C[size_t(m) * N + n] - ref) / (mag + 1e-30); maxrel = std::max(maxrel, e);
  }
  double fl = 2.0 * M * N * K;
  printf("M=%d K=%d N=%d T=%d: pack B %.3f ms, gemm %.3f ms (%.0f GFLOP/s), total %.0f GFLOP/s; max err/sum|ab| %.2e\n", M, K, N, T, tp[tp.size()/2], tg[tg.size()/2], fl / tg[tg.size()/2] / 1e6, fl / (tp[tp.size()/2] + tg[tg.size()/2]) / 1e6, maxrel);
}
