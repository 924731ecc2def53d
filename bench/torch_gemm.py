# cuBLAS's side of the GEMM comparison (issue 4): torch.matmul on 4096x4096x4096 in FP32
# (allow_tf32 off), TF32 (allow_tf32 on) and BF16 (bf16 inputs, FP32 accumulation), median of
# triton's do_bench (CUDA events, L2 flushed), as /work/shared/anchors/torch_anchor.py measures.
# Writes torch_gemm.json to $OUT; bench/gpu_zf5.js --cublas reads it.
import json, os
import torch
from triton.testing import do_bench

n = 4096
a = torch.randn(n, n, device="cuda")
b = torch.randn(n, n, device="cuda")
res = {}
for tag in ("fp32", "tf32", "bf16"):
    torch.backends.cuda.matmul.allow_tf32 = tag == "tf32"
    x, y = (a.bfloat16(), b.bfloat16()) if tag == "bf16" else (a, b)
    f = lambda: torch.matmul(x, y.t())
    f(); torch.cuda.synchronize()
    ms = do_bench(f, warmup=50, rep=300, return_mode="median")
    res[f"gemm4096_{tag}"] = {"ms": ms, "tflops": 2 * n**3 / (ms * 1e-3) / 1e12}
    print(f"cuBLAS {tag} 4096^3: {ms*1000:8.1f} us  {res[f'gemm4096_{tag}']['tflops']:.1f} TFLOP/s")
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "torch_gemm.json"), "w"), indent=1)
