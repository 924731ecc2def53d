#!/usr/bin/env python3
"""PyTorch's side of the GPU SPP comparison: workloads W1-W4, as in
/work/shared/anchors/torch_anchor.py, on the map sizes and windows of bench/workloads.json
(which are the anchor's own draws, random.seed(0); see bench/make_workloads.py).

    python bench/torch_spp.py [--device cuda] [--out DIR]

Needs PyTorch, torchvision (W4's roi_pool) and triton (do_bench). Prints a table and writes
torch_spp.json to --out, or $OUT, or /tmp. bench/gpu_spp.js reads that file to report
sppnet's CUDA times as ratios against these.

Method, as the anchor: each workload is a closure over inputs built beforehand (the list of
maps of a ragged batch, the rois tensor), timed with triton.testing.do_bench(warmup=50,
rep=300, return_mode="median"): CUDA-event time per call, L2 flushed before each call.
SPP is torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in levels], 1), one call per
map for a ragged batch; W4 is torchvision.ops.roi_pool once per level on the anchor's float
boxes. A copy of 1 GiB gives the bandwidth (read + write counted) for the floors.

--device cpu runs the same code on the CPU with a plain perf_counter timer (no triton, W4
skipped without torchvision's ops): a smoke test of this script, not a benchmark.
"""
import argparse, json, math, os, statistics, time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def load_workloads():
    with open(os.path.join(HERE, "workloads.json")) as f:
        return json.load(f)


def make_timer(device):
    if device == "cuda":
        from triton.testing import do_bench

        def bench_ms(fn):
            fn(); torch.cuda.synchronize()
            return do_bench(fn, warmup=50, rep=300, return_mode="median")
        return bench_ms

    def bench_ms(fn, reps=5):
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)
    return bench_ms


def spp_torch(x, levels):
    return torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in levels], 1)


def roi_rounding_matches(boxes, windows):
    """torchvision's roi_pool rounds box coordinates with C's roundf (half away from zero)
    and pools the inclusive integer window: the windows sppnet is given."""
    rnd = lambda v: int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))
    return all([int(b[0])] + [rnd(v) for v in b[1:]] == list(w) for b, w in zip(boxes, windows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("torch_spp.py: CUDA is not available (use --device cpu for a smoke test)")

    torch.manual_seed(0)
    wl = load_workloads()
    L4 = wl["levels"]
    bench_ms = make_timer(dev)
    res = {
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
        "torch": torch.__version__,
        "timer": "triton.testing.do_bench median (warmup=50, rep=300)" if dev == "cuda" else "perf_counter median of 5 (smoke test)",
        "levels": L4,
        "workloads": {},
    }
    print(f"PyTorch {torch.__version__} on {res['device']}")

    # Bandwidth: device-to-device copy of 1 GiB, read + write counted (as the anchor).
    n = 2**28 if dev == "cuda" else 2**26
    a = torch.empty(n, dtype=torch.float32, device=dev).uniform_()
    b = torch.empty_like(a)
    ms = bench_ms(lambda: b.copy_(a))
    bw = 2 * a.numel() * 4 / (ms / 1e3)  # bytes/s
    res["copy_bytes"] = a.numel() * 4
    res["copy_ms"] = ms
    res["bw_TBps"] = bw / 1e12
    print(f"copy {a.numel() * 4 / 2**30:.2f} GiB: {ms * 1e3:.1f} us -> {bw / 1e12:.3f} TB/s (read+write)")
    del a, b

    rows = []

    def record(key, name, fn, read_bytes, input_bytes, note=""):
        ms = bench_ms(fn)
        floor_us = read_bytes / bw * 1e6
        res["workloads"][key] = {"name": name, "ms": ms, "us": ms * 1e3, "input_bytes": input_bytes,
                                 "read_bytes": read_bytes, "floor_us": floor_us, "note": note}
        rows.append((key, name, ms * 1e3, floor_us, note))
        print(f"{key:3s} {name:58s} {ms * 1e3:10.1f} us  floor {floor_us:8.1f} us  {note}")

    # W1: ragged batch, 64 conv5 maps (C=256) of 11..37 per side; one SPP call per map.
    w1 = wl["W1"]
    maps = [torch.randn(1, w1["channels"], h, w, device=dev) for h, w in w1["sizes"]]
    nb = sum(m.numel() for m in maps) * 4
    record("W1", "SPP ragged 64x256x[11..37]^2 {6,3,2,1} per-image loop",
           lambda: torch.cat([spp_torch(m, L4) for m in maps], 0), nb, nb, f"{nb / 1e6:.1f} MB in")
    del maps

    # W2: uniform batch 64x256x13x13.
    w2 = wl["W2"]
    x = torch.randn(w2["batch"], w2["channels"], *w2["size"], device=dev)
    nb = x.numel() * 4
    record("W2", "SPP uniform 64x256x13x13 {6,3,2,1}", lambda: spp_torch(x, L4), nb, nb, f"{nb / 1e6:.1f} MB in")
    del x

    # W3: large ragged batch, bandwidth-bound: 32 maps 512 x [48..96]^2.
    w3 = wl["W3"]
    maps3 = [torch.randn(1, w3["channels"], h, w, device=dev) for h, w in w3["sizes"]]
    nb = sum(m.numel() for m in maps3) * 4
    record("W3", "SPP ragged 32x512x[48..96]^2 {6,3,2,1} per-image loop",
           lambda: torch.cat([spp_torch(m, L4) for m in maps3], 0), nb, nb, f"{nb / 1e6:.1f} MB in")
    del maps3

    # W4: detection, 2000 windows on one 256x60x80 map, SPP via roi_pool once per level. roi_pool's
    # bins are floor(i*a/n) .. ceil((i+1)*a/n) computed in float: the adaptive rule (up to float
    # rounding, which can add one row or column to a bin whose bound is an exact integer).
    w4 = wl["W4"]
    assert roi_rounding_matches(w4["boxes"], w4["windows"]), "workloads.json: boxes do not round to windows"
    try:
        import torchvision
        torch.ops.torchvision.roi_pool  # noqa: B018 (raises when torchvision's compiled ops did not load)
        have_tv = True
    except Exception as e:  # noqa: BLE001
        if dev == "cuda":
            raise
        have_tv = False
        print(f"W4  skipped: torchvision ops unavailable ({type(e).__name__}: {str(e)[:80]})")
    if have_tv:
        fm = torch.randn(1, w4["channels"], *w4["size"], device=dev)
        rois = torch.tensor(w4["boxes"], device=dev)
        area = sum((x1 - x0 + 1) * (y1 - y0 + 1) for _, x0, y0, x1, y1 in w4["windows"]) * w4["channels"] * 4
        record("W4", "SPP on 2000 windows of 256x60x80 via roi_pool x4",
               lambda: torch.cat([torchvision.ops.roi_pool(fm, rois, n, 1.0).flatten(1) for n in L4], 1),
               area, fm.numel() * 4, "floor: every window's area read once")

    out = os.path.join(args.out, "torch_spp.json")
    os.makedirs(args.out, exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n{'work':4s} {'PyTorch ' + res['device']:58s} {'median us':>10s} {'floor us':>9s}")
    for key, name, us, floor_us, _ in rows:
        print(f"{key:4s} {name:58s} {us:10.1f} {floor_us:9.1f}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
