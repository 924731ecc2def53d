# Sourced (bash) by scripts/gpu-run.sh on the GPU host and by test/bundle.test.js in CI: the one
# place that turns a carried .gpu/ (scripts/gpu-bundle.sh) into a runnable tree, and runs the
# suite from it. Call from the root of the tree. Functions return non-zero with the reason on
# stderr; they do not exit (the callers decide).

# Checks .gpu against its SHA256SUMS, puts the bundled node in .gpu/bin first on PATH, replaces
# build/, dist/ and node_modules/ with the bundle's (executables made executable again, in case
# the carry dropped the mode bits), and loads the library once with that node.
# Exports SPPNET_IN_BUNDLE=1 (test/bundle.test.js skips itself there: no recursion, and no
# bundle build on the GPU host) and drops NODE_PATH and NODE_OPTIONS.
sppnet_unpack() {
  local g=.gpu
  if [ ! -f "$g/manifest.json" ] || [ ! -f "$g/SHA256SUMS" ]; then
    echo "gpu-env: no bundle in $PWD/$g (build it with scripts/gpu-bundle.sh, then carry .gpu)" >&2
    return 1
  fi
  (cd "$g" && sha256sum --check --quiet --strict SHA256SUMS) >&2 || {
    echo "gpu-env: $PWD/$g does not match its SHA256SUMS (a partial carry, or files changed after gpu-bundle.sh)" >&2
    return 1
  }
  mkdir -p "$g/bin" && xz -dc "$g/node.xz" >"$g/bin/node" && chmod +x "$g/bin/node" || {
    echo "gpu-env: unpacking $g/node.xz failed" >&2
    return 1
  }
  export PATH="$PWD/$g/bin:$PATH"
  hash -r
  unset NODE_PATH NODE_OPTIONS
  export SPPNET_IN_BUNDLE=1
  rm -rf build dist node_modules && mkdir build && cp -r "$g/build/." build/ && cp -r "$g/dist" dist &&
    tar -xJf "$g/node_modules.tar.xz" && chmod +x "$g/spp_check" "$g/conv_check" build/tools/* || {
    echo "gpu-env: unpacking the bundle into $PWD failed" >&2
    return 1
  }
  local v
  v=$(node -p 'process.versions.node + " " + process.execPath') || {
    echo "gpu-env: the bundled node does not run here" >&2
    return 1
  }
  node -e "require('./dist')" || {
    echo "gpu-env: require('./dist') fails with the bundled node" >&2
    return 1
  }
  echo "gpu-env: node $v; $(ls -d node_modules/* node_modules/@*/* 2>/dev/null | grep -vc '/@[^/]*$') packages; require('./dist') loads"
}

# The test suite from an unpacked bundle, as both callers run it: the bundled node with
# --expose-gc, every test/*.test.js with the CUDA-specific files last. Extra arguments go to mocha.
# The device is the caller's SPPNET_DEVICE. On CUDA the emulator's own files are left out (they
# check the kernels on the CPU, as CI does, and take minutes): SPPNET_MOCHA_SKIP, a space-separated
# list of file names, overrides which.
sppnet_mocha() {
  local first=() rest=() f skip=" ${SPPNET_MOCHA_SKIP-} "
  [ -n "${SPPNET_MOCHA_SKIP+x}" ] || { [ "${SPPNET_DEVICE:-}" = cuda ] && skip=" cuda-emulate.test.js cuda-emulated.test.js "; }
  for f in test/*.test.js; do
    [[ "$skip" == *" ${f#test/} "* ]] && continue
    case "$f" in
      test/cuda.test.js | test/fixture.test.js) first+=("$f") ;;
      *) rest+=("$f") ;;
    esac
  done
  # The CUDA-specific files first: the rest mostly reruns what CPU CI already proves, and a run
  # cut short by its time cap should have proven the unproven part.
  node --expose-gc node_modules/mocha/bin/mocha.js --reporter ./test/support/reporter.js --timeout 300000 "$@" "${first[@]}" "${rest[@]}"
}
