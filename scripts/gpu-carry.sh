#!/usr/bin/env bash
# Copies into DEST what the device tool carries to a GPU host: the working tree's tracked files
# as they are on disk (uncommitted changes included, deleted ones left out), the untracked files
# git does not ignore, and the carried ignored path .gpu. Nothing else: no build/, dist/ or
# node_modules/. For rehearsing a GPU run on this machine (test/bundle.test.js does).
#
#   bash scripts/gpu-carry.sh /tmp/gpu-host && cd /tmp/gpu-host && bash scripts/gpu-run.sh
set -euo pipefail
dest=${1:?usage: gpu-carry.sh DEST}
cd "$(dirname "$0")/.."
[ -f .gpu/manifest.json ] || { echo "gpu-carry: no .gpu here: run scripts/gpu-bundle.sh first" >&2; exit 1; }
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done |
  tar --null -T - -cf - .gpu | tar -xf - -C "$dest"
