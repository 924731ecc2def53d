#!/usr/bin/env bash
# Optional second call on the GPU host, after scripts/gpu-run.sh passed: PyTorch side by side with
# sppnet on the same machine in the same call. PyTorch (python3 with torch, torchvision, triton)
# runs bench/torch_spp.py, the anchor script (.gpu/anchors/torch_anchor.py) and bench/torch_gemm.py;
# then bench/gpu_spp.js and bench/gpu_zf5.js read their JSON instead of the stored anchor.
#
#   OUT=/some/dir bash scripts/gpu-torch.sh        # OUT defaults to /tmp/sppnet-out
#
# Writes to $OUT: torch.log (every step's output), torch_spp.json, torch_anchor.json,
# torch_gemm.json, gpu_spp.json, gpu_zf5.json. Exit status 0 only when every step succeeded.
# The time limits add up to 525 s, under the device tool's 600 s per call.
set -uo pipefail # not -e: every step runs
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sppnet-out}
mkdir -p "$OUT"
LOG=$OUT/torch.log
: >"$LOG"
WORK=$(mktemp -d)
failed=()
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
sppnet_unpack >>"$LOG" 2>&1 || { echo "gpu-torch: unpacking the bundle failed (see $LOG)"; exit 2; }
export SPPNET_DEVICE=cuda PYTHONUNBUFFERED=1

run() { # run NAME LIMIT COMMAND...
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "===== [$name] limit $limit s: $*" >>"$LOG"
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  echo "===== [$name] exit $rc after $(($(date +%s) - t0)) s" >>"$LOG"
  echo "gpu-torch: $name: exit $rc ($(($(date +%s) - t0)) s)"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

run torch_spp 120 python3 bench/torch_spp.py --out "$OUT"
run torch_anchor 200 env OUT="$WORK" python3 .gpu/anchors/torch_anchor.py
cp "$WORK/torch_anchor.json" "$OUT/" 2>/dev/null
run torch_gemm 45 env OUT="$OUT" python3 bench/torch_gemm.py
run gpu_spp 60 env OUT="$WORK" node bench/gpu_spp.js "$OUT/torch_spp.json"
run gpu_zf5 100 env OUT="$WORK" node bench/gpu_zf5.js --torch "$OUT/torch_anchor.json" --cublas "$OUT/torch_gemm.json"
cp "$WORK"/gpu_spp.json "$WORK"/gpu_zf5.json "$OUT/" 2>/dev/null
rm -rf "$WORK"
[ ${#failed[@]} -eq 0 ] || { echo "gpu-torch: FAILED: ${failed[*]} (see $LOG)"; exit 1; }
echo "gpu-torch: done; $OUT"
