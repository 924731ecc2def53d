'use strict';
// The CUDA kernels as the sources and the build know them: one place for the tests that check
// that every kernel was run (test/cuda-emulate.test.js, test/cuda-emulated.test.js).
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..', '..');

/** The __global__ functions declared in cuda/ (base names). */
function globalsInSource() {
  const names = new Set();
  for (const f of fs.readdirSync(path.join(root, 'cuda'))) {
    if (!/\.(cu|cuh)$/.test(f)) continue;
    const src = fs.readFileSync(path.join(root, 'cuda', f), 'utf8');
    for (const m of src.matchAll(/__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(/g)) names.add(m[1]);
  }
  return names;
}

/**
 * The kernel instantiations nvcc compiled into the CUDA backend (their host stubs), spelled as the
 * emulator reports launches ("ns::{anonymous}::name<args>"), or null when this build has no CUDA
 * backend (no nvcc) or there is no nm.
 */
function kernelsInCudaLibrary(globals = globalsInSource()) {
  let out;
  try {
    out = execFileSync('nm', ['-C', path.join(root, 'build', 'libsppnet_cuda.a')], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return null;
  }
  const found = new Set();
  for (const raw of out.split('\n')) {
    const line = raw.replace(/\(anonymous namespace\)/g, '{anonymous}');
    const m = line.match(/^[0-9a-f]+ [Tt] (?:void )?(sppnet::[^(]*?(\w+)(<[^()]*>)?)\(/);
    if (!m || line.includes('[clone') || !globals.has(m[2])) continue;
    found.add(m[1]);
  }
  return found.size ? found : null;
}

/** Kernel names from "NAME: COUNT" lines (the emulator's launch lists). */
function launchedKernels(text) {
  return [...text.matchAll(/^(?:kernel )?(sppnet::.+?): (\d+)(?: launches)?$/gm)].map((m) => m[1]);
}

module.exports = { globalsInSource, kernelsInCudaLibrary, launchedKernels };
