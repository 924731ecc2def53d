#!/bin/bash
# Interleaved A/B of two conv_check builds on the per-layer ZF-5 kernels (conv_check net):
#   tools/ab_net.sh ROUNDS BATCH BIN_A BIN_B
# Prints per layer the median over rounds of each build's median ms.
rounds=$1; batch=$2; a=$3; b=$4
tmp=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
  "$a" net 11 "$batch" > "$tmp/a$r"
  "$b" net 11 "$batch" > "$tmp/b$r"
done
python3 - "$tmp" "$rounds" <<'PY'
import sys, re, statistics, os
d, n = sys.argv[1], int(sys.argv[2])
def parse(f):
    out = {}
    for line in open(f):
        m = re.match(r'\s+(\(?[\w ]+\)?)\s+([\d.]+) ms', line)
        if m: out[m.group(1).strip()] = float(m.group(2))
    return out
A = [parse(os.path.join(d, 'a%d' % i)) for i in range(1, n + 1)]
B = [parse(os.path.join(d, 'b%d' % i)) for i in range(1, n + 1)]
sa = sb = 0
for k in A[0]:
    ma, mb = statistics.median(x[k] for x in A), statistics.median(x[k] for x in B)
    if 'im2col' not in k: sa += ma; sb += mb
    print('%-18s A %7.3f  B %7.3f  B/A %.2f' % (k, ma, mb, mb / ma))
print('%-18s A %7.3f  B %7.3f  B/A %.2f' % ('sum', sa, sb, sb / sa))
PY
rm -rf "$tmp"
