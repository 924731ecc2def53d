#!/usr/bin/env bash
# On the GPU host (no Node.js), with .gpu carried (see gpu-bundle.sh): the standalone kernel check,
# the test suite on CUDA, and the SPP benchmark against PyTorch. Logs and JSON go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sppnet-out}; mkdir -p "$OUT"
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
rm -rf build dist node_modules
cp -r .gpu/build build && cp -r .gpu/dist dist && cp -r .gpu/node_modules node_modules
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
node -e "console.log(JSON.stringify(require('./dist').backend(), null, 1))" | tee "$OUT/backend.json"
.gpu/spp_check all 20 2>&1 | tee "$OUT/spp_check.log"
node node_modules/mocha/bin/mocha.js --expose-gc --reporter ./test/support/reporter.js --timeout 300000 'test/*.test.js' 2>&1 | tee "$OUT/test.log"
if [ "${SPPNET_GPU_BENCH:-1}" = 1 ]; then
  [ -f bench/torch_spp.py ] && PYTHONUNBUFFERED=1 python3 bench/torch_spp.py 2>&1 | tee "$OUT/torch_spp.log"
  [ -f bench/gpu_spp.js ] && node bench/gpu_spp.js "$OUT/torch_spp.json" 2>&1 | tee "$OUT/gpu_spp.log"
  # issue 4: ZF-5 and the GEMM against PyTorch/cuDNN/cuBLAS, same machine, same call
  [ -f .gpu/torch_anchor.py ] && PYTHONUNBUFFERED=1 python3 .gpu/torch_anchor.py 2>&1 | tee "$OUT/torch_anchor.log"
  PYTHONUNBUFFERED=1 python3 bench/torch_gemm.py 2>&1 | tee "$OUT/torch_gemm.log"
  node bench/gpu_zf5.js --torch "$OUT/torch_anchor.json" --cublas "$OUT/torch_gemm.json" 2>&1 | tee "$OUT/gpu_zf5.log"
fi
# the SASS holds tensor-core instructions (HMMA) and no local-memory spills (cuobjdump is on the GPU host's toolkit)
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass build/Release/sppnet.node > "$OUT/sass.txt" 2>&1
  echo "HMMA instructions in the addon's SASS: $(grep -c HMMA "$OUT/sass.txt"); local loads/stores (LDL/STL): $(grep -cE '\b(LDL|STL)\b' "$OUT/sass.txt")" | tee "$OUT/sass-summary.txt"
fi
