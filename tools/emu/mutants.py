#!/usr/bin/env python3
"""Proves that tools/cuda_emulate catches bugs: plants one bug at a time in a copy of cuda/ (a
missing barrier, an off-by-one, a wrong lane, a host pointer, a bad launch, the old truncating
3xTF32 accumulation, ...), rebuilds the emulator against the copy and runs the cases of that kernel
family with several seeds. Every planted bug must make the run fail.

  python3 tools/emu/mutants.py [--seeds 1,2,3] [--only NAME]
Needs a built tree (build/libsppnet_cpu.a, from npm install). Prints one line per bug and a
summary; exit status 1 if a bug went unnoticed by every seed. Not part of npm test (a few minutes).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = ["runtime", "spp_cuda", "layers_cuda", "layers_backward_cuda", "gemm_tc", "device"]
FLAGS = ["-std=c++17", "-O2", "-Wno-unknown-pragmas", "-Wno-sign-compare"]

# (name, kind, file, original text, planted text, --only filter of the cases to run[, second
# original, its replacement])
BUGS = [
    ("spp: no barrier after the planes are loaded", "missing barrier", "spp_cuda.cu",
     "  }\n  __syncthreads();\n  return off;", "  }\n  return off;", "spp"),
    ("spp: each level's last bin is never pooled", "off-by-one", "spp_cuda.cu",
     "    for (int it = first; it < items; it += step) {", "    for (int it = first; it < items - 1; it += step) {", "spp"),
    ("spp backward: the bin test takes one column too many", "off-by-one", "spp_cuda.cu",
     "if (lx >= rx.end) continue;", "if (lx > rx.end) continue;", "spp"),
    ("spp argmax: the shuffle reads the wrong lane", "wrong lane", "spp_cuda.cu",
     "const int oi = __shfl_xor_sync(0xffffffffu, bi, off);", "const int oi = __shfl_xor_sync(0xffffffffu, bi, off >> 1);", "spp max"),
    ("spp: the kernel reads the regions from host memory", "host pointer", "spp_cuda.cu",
     "    p.count = N;\n", "    p.count = N;\n    p.regions = sp.regions;\n", "spp"),
    ("softmax: no barrier between the steps of the max reduction", "missing barrier", "layers_cuda.cu",
     "      red[threadIdx.x] = ((o > v || o != o) && v == v) ? o : v;\n    }\n    __syncthreads();",
     "      red[threadIdx.x] = ((o > v || o != o) && v == v) ? o : v;\n    }", "softmax"),
    ("softmax: launched with 2048 threads a block", "bad launch", "layers_cuda.cu",
     "SPP_LAUNCH(static_cast<unsigned>(rows), kThreads, 0, softmax_kernel)", "SPP_LAUNCH(static_cast<unsigned>(rows), 8 * kThreads, 0, softmax_kernel)", "softmax"),
    ("max_pool2d: the window is one row short", "off-by-one", "layers_cuda.cu",
     "ye = min(H, oy * p.stride_h - p.pad_h + p.kernel_h);\n    const int xs = max(0, ox * p.stride_w - p.pad_w), xe = min(W, ox * p.stride_w - p.pad_w + p.kernel_w);\n    float v = -INFINITY;\n    for (int yy = ys; yy < ye; ++yy)\n      for (int xx = xs; xx < xe; ++xx) {\n        const float e",
     "ye = min(H, oy * p.stride_h - p.pad_h + p.kernel_h - 1);\n    const int xs = max(0, ox * p.stride_w - p.pad_w), xe = min(W, ox * p.stride_w - p.pad_w + p.kernel_w);\n    float v = -INFINITY;\n    for (int yy = ys; yy < ye; ++yy)\n      for (int xx = xs; xx < xe; ++xx) {\n        const float e",
     "max_pool2d"),
    ("linear (direct): the warp reduction skips its last step", "off-by-one", "layers_cuda.cu",
     "for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync", "for (int off = 16; off > 1; off >>= 1) s += __shfl_xor_sync", "linear direct"),
    ("block_sum: no barrier inside the reduction", "missing barrier", "layers_backward_cuda.cu",
     "    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];\n    __syncthreads();\n  }\n  const T r = red[0];",
     "    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];\n  }\n  const T r = red[0];", "conv2d backward"),
    ("conv2d dx: an output row past the map is used", "off-by-one", "layers_backward_cuda.cu",
     "if (oy >= Ho) continue;", "if (oy > Ho) continue;", "conv2d backward"),
    ("adam: v takes (1 - beta1) g^2", "arithmetic", "layers_backward_cuda.cu",
     "const float vi = v[i] * p.beta2 + w2 * g * g;", "const float vi = v[i] * p.beta2 + w1 * g * g;", "adam"),
    ("tensor cores: no barrier at the end of a K step (double buffer race)", "missing barrier", "gemm_tc_kernels.cuh",
     "      lb.store_nk(Bs + (cur ^ 1) * BSZ, rb);\n    }\n    __syncthreads();", "      lb.store_nk(Bs + (cur ^ 1) * BSZ, rb);\n    }", "conv2d tf32"),
    ("tensor cores: the conv gather reads one row past the map", "off-by-one", "gemm_tc_kernels.cuh",
     "if (static_cast<unsigned>(iy) < static_cast<unsigned>(h) &&", "if (static_cast<unsigned>(iy) <= static_cast<unsigned>(h) &&", "conv2d tf32"),
    ("tensor cores: a TF32 A fragment from the wrong column", "fragment layout", "gemm_tc_kernels.cuh",
     "        af[mi][1] = p[8];", "        af[mi][1] = p[9];", "conv2d tf32"),
    ("tensor cores: 3xTF32 accumulating over all of K (the truncation drift)", "numerics", "gemm_tc_kernels.cuh",
     "            float part[4] = {0.f, 0.f, 0.f, 0.f};", "            float (&part)[4] = acc[mi][ni];",
     "same-sign", "            for (int r = 0; r < 4; ++r) acc[mi][ni][r] += part[r];", ""),
    ("split-K: the last partial sum is dropped", "off-by-one", "gemm_tc_kernels.cuh",
     "for (int s = 1; s < splits; ++s) v += partial[s * MN + i];", "for (int s = 1; s < splits - 1; ++s) v += partial[s * MN + i];", "linear"),
]


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def compile_unit(tree, unit, out):
    src = os.path.join(tree, "tools", "cuda_emulate.cpp") if unit == "main" else os.path.join(tree, "tools", "emu", unit + ".cpp")
    r = run(["g++", *FLAGS, "-I" + os.path.join(tree, "tools", "emu"), "-I" + os.path.join(tree, "include"), "-c", src, "-o", out])
    if r.returncode != 0:
        raise RuntimeError(f"compiling {unit} failed:\n{r.stdout}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    seeds = [s for s in args.seeds.split(",") if s]
    lib = os.path.join(ROOT, "build", "libsppnet_cpu.a")
    if not os.path.exists(lib):
        sys.exit("build/libsppnet_cpu.a is missing: run npm install first")
    work = tempfile.mkdtemp(prefix="sppnet-mutants-")
    try:
        tree = os.path.join(work, "tree")
        for d in ("cuda", "include", "tools"):
            shutil.copytree(os.path.join(ROOT, d), os.path.join(tree, d))
        base = os.path.join(work, "base")
        os.makedirs(base)
        for u in UNITS + ["main"]:
            compile_unit(tree, u, os.path.join(base, u + ".o"))
        # which units include each cuda file
        users = {"spp_cuda.cu": ["spp_cuda"], "layers_cuda.cu": ["layers_cuda"], "layers_backward_cuda.cu": ["layers_backward_cuda"],
                 "gemm_tc_kernels.cuh": ["gemm_tc"], "gemm_tc.cu": ["gemm_tc"]}
        caught_all = 0
        missed = []
        for name, kind, f, old, new, only, *more in BUGS:
            if args.only and args.only not in name:
                continue
            path = os.path.join(tree, "cuda", f)
            orig = open(path).read()
            mutated = orig
            for o, n in [(old, new)] + ([tuple(more)] if more else []):
                if mutated.count(o) != 1:
                    raise RuntimeError(f"{name}: the text to replace occurs {mutated.count(o)} times in cuda/{f} (the source changed: update the bug)")
                mutated = mutated.replace(o, n)
            objs = os.path.join(work, "objs")
            shutil.rmtree(objs, ignore_errors=True)
            os.makedirs(objs)
            try:
                open(path, "w").write(mutated)
                for u in UNITS + ["main"]:
                    if u in users[f]:
                        compile_unit(tree, u, os.path.join(objs, u + ".o"))
                    else:
                        shutil.copy(os.path.join(base, u + ".o"), os.path.join(objs, u + ".o"))
            finally:
                open(path, "w").write(orig)
            exe = os.path.join(work, "emu")
            r = run(["g++", "-o", exe, *[os.path.join(objs, u + ".o") for u in UNITS + ["main"]], lib, "-lpthread"])
            if r.returncode != 0:
                raise RuntimeError(f"linking failed:\n{r.stdout}")
            caught = []
            for s in seeds:
                r = run([exe, s, "--only", only], timeout=600)
                if r.returncode != 0:
                    first = next((l for l in r.stdout.splitlines() if l.startswith("FAIL") or "EMULATOR ERROR" in l), "exit %d" % r.returncode)
                    caught.append(first)
            ok = len(caught) == len(seeds)
            caught_all += ok
            if not caught:
                missed.append(name)
            print(f"{'caught' if ok else 'MISSED' if not caught else 'partly'} {len(caught)}/{len(seeds)} seeds  [{kind}] {name}")
            if caught:
                print(f"      {caught[0][:220]}")
            sys.stdout.flush()
        print(f"{caught_all} of the planted bugs caught by every seed; missed by every seed: {missed or 'none'}")
        return 1 if missed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
