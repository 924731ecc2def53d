#!/usr/bin/env node
// `npm install` / `npm run build`: builds the native addon with cmake-js (CUDA when nvcc is
// found, else CPU-only) and compiles the TypeScript in lib/ to dist/.
// Environment: SPPNET_CUDA_ARCHS="90" (architectures), SPPNET_WITH_CUDA=0 (force CPU-only),
//              SPPNET_SKIP_NATIVE=1 (TypeScript only), SPPNET_DEBUG=1 (debug build).
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const log = (m) => console.log(`[sppnet] ${m}`);
const die = (m) => {
  console.error(`[sppnet] ERROR: ${m}`);
  process.exit(1);
};
const has = (cmd, args = ['--version']) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? (r.stdout || r.stderr).split('\n')[0] : null;
};

function buildNative() {
  const cmake = has('cmake');
  if (!cmake)
    die('cmake was not found. Install CMake >= 3.18 (Debian/Ubuntu: apt-get install cmake; macOS: brew install cmake) and run npm install again.');
  const cxx = has(process.env.CXX || 'c++') || has('g++') || has('clang++');
  if (!cxx)
    die('no C++ compiler was found. Install one with C++17 support (Debian/Ubuntu: apt-get install g++; macOS: xcode-select --install) and run npm install again.');
  log(`${cmake}; C++: ${cxx}`);
  const disabled = process.env.SPPNET_WITH_CUDA === '0';
  const nvcc = disabled ? null : has('nvcc') || has('/usr/local/cuda/bin/nvcc');
  log(nvcc ? `nvcc found (${nvcc.trim()}): building the CUDA backend too`
    : disabled ? 'SPPNET_WITH_CUDA=0: building the CPU backend only'
    : 'nvcc not found: building the CPU backend only (install the CUDA toolkit for the GPU path)');
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  // configure, then build: `cmake-js compile` skips configuring when build/ exists, so a changed
  // option (CUDA on/off, architectures) would not reach a cached build.
  const args = [cmakeJs, 'configure', '--out', 'build'];
  if (process.env.SPPNET_DEBUG === '1') args.push('--debug');
  if (process.env.SPPNET_CUDA_ARCHS) args.push(`--CDSPPNET_CUDA_ARCHS=${process.env.SPPNET_CUDA_ARCHS}`);
  args.push(`--CDSPPNET_WITH_CUDA=${disabled ? 'OFF' : 'ON'}`); // explicit: the CMake cache remembers options
  if (!disabled && !has('nvcc') && fs.existsSync('/usr/local/cuda/bin/nvcc')) args.push('--CDCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc');
  const env = { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: process.env.CMAKE_BUILD_PARALLEL_LEVEL || '2' };
  let r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env });
  if (r.status !== 0) die('configuring the native build failed (see the CMake output above).');
  const buildArgs = [cmakeJs, 'build', '--out', 'build'];
  if (process.env.SPPNET_DEBUG === '1') buildArgs.push('--debug');
  r = spawnSync(process.execPath, buildArgs, { cwd: root, stdio: 'inherit', env });
  if (r.status !== 0) die('the native build failed (see the compiler output above).');
  log(`addon built: ${path.join('build', 'Release', 'sppnet.node')} (${nvcc ? 'CPU + CUDA' : 'CPU only'})`);
}

function buildTs() {
  let tsc;
  try {
    tsc = require.resolve('typescript/bin/tsc');
  } catch {
    if (fs.existsSync(path.join(root, 'dist', 'index.js'))) return log('typescript not installed; using the shipped dist/');
    die('typescript is not installed and dist/ is missing: run npm install in the package folder.');
  }
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) die('TypeScript compilation failed.');
  log('TypeScript compiled to dist/');
}

if (process.env.SPPNET_SKIP_NATIVE !== '1') buildNative();
buildTs();
