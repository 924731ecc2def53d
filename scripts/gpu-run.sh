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
node node_modules/mocha/bin/mocha.js --reporter ./test/support/reporter.js --timeout 300000 'test/*.test.js' 2>&1 | tee "$OUT/test.log"
if [ "${SPPNET_GPU_BENCH:-1}" = 1 ]; then
  [ -f bench/torch_spp.py ] && PYTHONUNBUFFERED=1 python3 bench/torch_spp.py 2>&1 | tee "$OUT/torch_spp.log"
  [ -f bench/gpu_spp.js ] && node bench/gpu_spp.js "$OUT/torch_spp.json" 2>&1 | tee "$OUT/gpu_spp.log"
fi
