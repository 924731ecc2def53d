#!/bin/bash
# A/B of environment settings on Model.run (bench/zf5_layers.js --model-only), rounds interleaved
# so that the machine's load hits every variant alike. Prints each round, then per variant the
# median of the round medians.
#   tools/ab.sh ROUNDS BATCHES 'VAR=a' 'VAR=b' 'DIR@VAR=c' ...
# A variant DIR@... runs DIR/bench/zf5_layers.js (another checkout's build, e.g. the baseline).
rounds=$1; batches=$2; shift 2
declare -A res
for r in $(seq 1 "$rounds"); do
  for v in "$@"; do
    root="$(dirname "$0")/.."; e="$v"
    if [[ "$v" == *@* ]]; then root="${v%%@*}"; e="${v#*@}"; fi
    out=$(env $e node "$root/bench/zf5_layers.js" --batch "$batches" --reps 31 --model-only 2>&1 | awk '/Model.run/ {printf "%s ", $2}')
    echo "round $r  $v: $out"
    res[$v]+="$out;"
  done
done
for v in "$@"; do
  echo "$v|${res[$v]}"
done | python3 -c '
import sys, statistics
for line in sys.stdin:
    v, rs = line.rstrip("\n").split("|")
    rows = [list(map(float, r.split())) for r in rs.split(";") if r.strip()]
    cols = list(zip(*rows))
    print(v, "median of round medians:", " ".join("%.2f" % statistics.median(c) for c in cols), " min:", " ".join("%.2f" % min(c) for c in cols))
'
