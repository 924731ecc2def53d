#!/usr/bin/env bash
# The whole CUDA path in one run, on a GPU host without Node.js or network, from the root of the
# carried working tree with .gpu carried (built here by scripts/gpu-bundle.sh):
#
#   OUT=/some/dir bash scripts/gpu-run.sh          # OUT defaults to /tmp/sppnet-out
#
# 1. preflight: unpack the bundle (scripts/gpu-env.sh), nvidia-smi (name, driver, memory), and
#    the library with SPPNET_DEVICE=cuda, which is an error, not a CPU fallback, when CUDA cannot
#    run. Any failure here stops the run with the reason and exit status 2.
# 2. then, in order, each under its own timeout and all within SPPNET_GPU_RUN_BUDGET (540; run it with timeout_s 570 or more) s from
#    the start: .gpu/spp_check all 20; compute-sanitizer memcheck, racecheck and synccheck
#    on scripts/gpu-touch.js (every kernel once); the test suite on CUDA (gpu-env.sh's
#    sppnet_mocha); PyTorch's anchor (torch_anchor.py) on the same GPU; bench/gpu_spp.js --quick
#    and bench/gpu_zf5.js --quick against it (or, without PyTorch there, against the stored H100
#    anchor); bench/zf5_layers.js (each ZF-5 layer at batch 1 and 32: wall time and time on the
#    CUDA executor); bench/detect.js --zf5-only (SPP-net against R-CNN, time per image by
#    stage); HMMA and LDL/STL per kernel in the addon's SASS (cuobjdump).
# 3. $OUT/summary.json (per step: name, status, seconds, limit, figures, why it failed, log),
#    $OUT/run.log (every step's output, in order), $OUT/gpu_spp.json, gpu_zf5.json,
#    zf5_layers.json, detect.json, sass.json, torch_anchor.json.
#    What passes is decided by scripts/gpu-judge.js. Exit status 0 only when every step passed.
set -uo pipefail # not -e: every step runs and reports, and the exit status sums them up
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sppnet-out}
BUDGET=${SPPNET_GPU_RUN_BUDGET:-540}
ANCHOR=${SPPNET_GPU_ANCHOR:-.gpu/anchors/torch_anchor_h100_2026-11-24.json}
T0=$(date +%s)
mkdir -p "$OUT"
LOG=$OUT/run.log
: >"$LOG"
WORK=$(mktemp -d)
STEPS=()
FAILED=()
# Steps after the preflight and their caps (s), in order. A step gets its cap, or less where the
# steps after it would otherwise get under RESERVE s each within BUDGET from the start.
RESERVE=15
CAPS=(spp_check:30 memcheck:30 racecheck:45 synccheck:30 mocha:330 torch:120 gpu_spp:45 gpu_zf5:60 zf5_layers:45 detect:90 sass:30)

json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/}
  s=${s//$'\t'/ }
  printf '"%s"' "$s"
}
elapsed() { echo $(($(date +%s) - T0)); }
# Appends a step's log to run.log: all of it, or its first 512 KiB and last 1 MiB (at most 8
# files of 16 MiB come back from the GPU host).
append_log() {
  local name=$1 file=$2 size
  size=$(stat -c %s "$file" 2>/dev/null || echo 0)
  echo "===== [$name] $3" >>"$LOG"
  if [ "$size" -gt $((1536 * 1024)) ]; then
    head -c $((512 * 1024)) "$file" >>"$LOG"
    echo "
===== [$name] ... $((size - 1536 * 1024)) bytes left out ..." >>"$LOG"
    tail -c $((1024 * 1024)) "$file" >>"$LOG"
  else
    cat "$file" >>"$LOG"
  fi
}
write_summary() {
  local ok=true
  [ ${#FAILED[@]} -eq 0 ] || ok=false
  {
    echo "{"
    echo " \"ok\": $ok,"
    local f list=""
    for f in "${FAILED[@]}"; do list+="${list:+, }\"$f\""; done
    echo " \"failed\": [$list],"
    echo " \"seconds\": $(elapsed), \"budget_s\": $BUDGET,"
    echo " \"started\": \"$(date -u -d "@$T0" +%Y-%m-%dT%H:%M:%SZ)\", \"host\": $(json_str "$(uname -n)"),"
    echo " \"gpu\": $(json_str "${GPU_LINE:-}"),"
    echo " \"backend\": ${BACKEND_JSON:-null},"
    echo " \"bundle\": $(cat .gpu/manifest.json 2>/dev/null || echo null),"
    echo " \"steps\": ["
    local i
    for i in "${!STEPS[@]}"; do
      [ "$i" -gt 0 ] && echo ","
      printf '  %s' "${STEPS[$i]}"
    done
    echo
    echo " ]"
    echo "}"
  } >"$OUT/summary.json"
}

# ---- 1. preflight ------------------------------------------------------------------------------
pre_log=$WORK/preflight.log
pre_why=()
GPU_LINE=""
BACKEND_JSON=""
echo "gpu-run: preflight (bundle, nvidia-smi, CUDA backend)"
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
if ! sppnet_unpack >>"$pre_log" 2>&1; then
  pre_why+=("unpacking the bundle failed: $(tail -1 "$pre_log")")
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  if GPU_LINE=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>>"$pre_log" | head -1) && [ -n "$GPU_LINE" ]; then
    echo "nvidia-smi: $GPU_LINE" >>"$pre_log"
    driver=$(cut -d, -f2 <<<"$GPU_LINE" | tr -d ' ')
    [ "${driver%%.*}" -ge 580 ] 2>/dev/null || pre_why+=("NVIDIA driver $driver: the CUDA 13 runtime linked into the addon needs 580 or newer")
  else
    pre_why+=("nvidia-smi failed: $(tail -1 "$pre_log")")
  fi
else
  pre_why+=("nvidia-smi not found: no NVIDIA driver on this machine")
fi
if command -v node >/dev/null 2>&1 && [ -d dist ]; then
  if BACKEND_JSON=$(SPPNET_DEVICE=cuda timeout 30 node -e "
      try {
        const b = require('./dist').backend();
        if (b.device !== 'cuda') throw new Error('the backend is ' + b.device + ': ' + b.reason);
        console.log(JSON.stringify({ device: b.device, reason: b.reason, cuda: b.cuda }));
      } catch (e) { console.error('backend: ' + e.message); process.exit(1); }" 2>>"$pre_log"); then
    echo "backend: $BACKEND_JSON" >>"$pre_log"
  else
    BACKEND_JSON=""
    pre_why+=("SPPNET_DEVICE=cuda does not run on CUDA: $(tail -1 "$pre_log")")
  fi
fi
pre_status=pass
[ ${#pre_why[@]} -eq 0 ] || pre_status=fail
why=$(printf '%s; ' "${pre_why[@]}" | sed 's/; $//')
append_log preflight "$pre_log" "$pre_status after $(elapsed) s"
STEPS+=("{\"name\":\"preflight\",\"status\":\"$pre_status\",\"seconds\":$(elapsed),\"limit_s\":60,\"log\":\"run.log\",\"why\":$(json_str "$why"),\"figures\":{\"gpu\":$(json_str "$GPU_LINE")}}")
if [ "$pre_status" != pass ]; then
  FAILED+=(preflight)
  write_summary
  echo "gpu-run: PREFLIGHT FAILED: $why"
  echo "gpu-run: nothing else was run; see $OUT/summary.json and $OUT/run.log"
  rm -rf "$WORK"
  exit 2
fi
export SPPNET_DEVICE=cuda # from here on, a CPU fallback is an error
SPPNET_GPU_NAME=$(node -p "JSON.parse(process.argv[1]).cuda.name" "$BACKEND_JSON")
SPPNET_GPU_CC=$(node -p "JSON.parse(process.argv[1]).cuda.computeCapability" "$BACKEND_JSON")
export SPPNET_GPU_NAME SPPNET_GPU_CC
echo "gpu-run: preflight passed: $GPU_LINE; $(node -p "JSON.parse(process.argv[1]).reason" "$BACKEND_JSON")"

# ---- 2. the steps ------------------------------------------------------------------------------
# step NAME FILE OUT_JSON -- COMMAND...: runs COMMAND under its time limit, then gpu-judge.js.
step() {
  local name=$1 file=$2 outjson=$3
  shift 4
  # Each later step is owed RESERVE s (not its whole cap: the caps add up to more than BUDGET, and
  # owing them all left the first step no time at all).
  local cap=0 later=0 seen="" c
  for c in "${CAPS[@]}"; do
    [ -n "$seen" ] && later=$((later + RESERVE))
    [ "${c%%:*}" = "$name" ] && seen=1 && cap=${c#*:}
  done
  local left=$((T0 + BUDGET - $(date +%s) - later)) limit
  limit=$((cap < left ? cap : left))
  local log=$WORK/$name.log entry rc=0 start secs
  if [ "$limit" -lt 5 ]; then
    entry="{\"name\":\"$name\",\"status\":\"fail\",\"seconds\":0,\"limit_s\":$limit,\"log\":\"run.log\",\"why\":\"not run: no time left in the $BUDGET s budget\",\"figures\":{}}"
    rc=1
  else
    printf 'gpu-run: %-10s (limit %3d s) ... ' "$name" "$limit"
    start=$(date +%s)
    timeout -k 10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    append_log "$name" "$log" "limit $limit s: $*"
    entry=$(node scripts/gpu-judge.js "$name" "$rc" "$secs" "$limit" "$log" "$file" "$outjson")
    rc=$?
    [ -n "$entry" ] || entry="{\"name\":\"$name\",\"status\":\"fail\",\"seconds\":$secs,\"limit_s\":$limit,\"log\":\"run.log\",\"why\":\"gpu-judge.js failed\",\"figures\":{}}"
    echo "===== [$name] $entry" >>"$LOG"
  fi
  STEPS+=("$entry")
  if [ "$rc" -eq 0 ]; then echo "pass (${secs}s)"; else
    FAILED+=("$name")
    echo "FAIL (${secs:-0}s): $(node -p "JSON.parse(process.argv[1]).why" "$entry" 2>/dev/null)"
  fi
  write_summary
}

tool() { command -v "$1" 2>/dev/null || echo "/usr/local/cuda/bin/$1"; }
SANITIZER=$(tool compute-sanitizer)
CUOBJDUMP=$(tool cuobjdump)
BENCH=$WORK/bench
mkdir -p "$BENCH"

step spp_check "" "" -- .gpu/spp_check all 20
for t in memcheck racecheck synccheck; do
  step "$t" "" "" -- "$SANITIZER" --tool "$t" --error-exitcode 99 --print-limit 20 node scripts/gpu-touch.js
done
step mocha "" "" -- bash -c 'source scripts/gpu-env.sh && sppnet_mocha'
# PyTorch on this machine, just before sppnet's benchmarks, so their ratios compare the same GPU
# (SPPNET_GPU_TORCH=0 skips it; then, or when it fails, they use the stored anchor).
if [ "${SPPNET_GPU_TORCH:-1}" != 0 ]; then
  step torch "$BENCH/torch_anchor.json" "" -- env OUT="$BENCH" PYTHONUNBUFFERED=1 python3 .gpu/anchors/torch_anchor.py
fi
if [ -s "$BENCH/torch_anchor.json" ]; then
  cp "$BENCH/torch_anchor.json" "$OUT/"
  step gpu_spp "$BENCH/gpu_spp.json" "" -- env OUT="$BENCH" SPPNET_CUDA_KERNEL_TIMES=1 node bench/gpu_spp.js --quick --anchor "$BENCH/torch_anchor.json" --anchor-same-run
  step gpu_zf5 "$BENCH/gpu_zf5.json" "" -- env OUT="$BENCH" node bench/gpu_zf5.js --quick --torch "$BENCH/torch_anchor.json"
else
  step gpu_spp "$BENCH/gpu_spp.json" "" -- env OUT="$BENCH" SPPNET_CUDA_KERNEL_TIMES=1 node bench/gpu_spp.js --quick --anchor "$ANCHOR"
  step gpu_zf5 "$BENCH/gpu_zf5.json" "" -- env OUT="$BENCH" node bench/gpu_zf5.js --quick --anchor "$ANCHOR"
fi
# Each ZF-5 layer through the public calls, at batch 1 and 32: wall time, time on the executor and
# the GPU time of its kernels (CUDA events: SPPNET_CUDA_KERNEL_TIMES=1, here and for gpu_spp).
step zf5_layers "$BENCH/zf5_layers.json" "" -- env SPPNET_CUDA_KERNEL_TIMES=1 node bench/zf5_layers.js --device cuda --batch 1,32 --fc --reps 21 --json "$BENCH/zf5_layers.json"
# Detection in the paper's regime (ZF-5, 500x375 scenes, ~2,000 windows): SPP-net against the
# R-CNN baseline, time per image by stage (issue 15's CUDA figures).
step detect "$BENCH/detect.json" "" -- node bench/detect.js --zf5-only --zf5-images 2 --out "$BENCH"
step sass "$WORK/sass.txt" "$OUT/sass.json" -- bash -c "'$CUOBJDUMP' -sass build/Release/sppnet.node > '$WORK/sass.txt'"
cp "$BENCH"/gpu_spp.json "$BENCH"/gpu_zf5.json "$BENCH"/zf5_layers.json "$BENCH"/detect.json "$OUT/" 2>/dev/null

write_summary
rm -rf "$WORK"
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "gpu-run: all ${#STEPS[@]} steps passed in $(elapsed) s; $OUT/summary.json"
  exit 0
fi
echo "gpu-run: FAILED: ${FAILED[*]} ($(elapsed) s); $OUT/summary.json and $OUT/run.log say why"
exit 1
