#!/usr/bin/env node
// `npm install` / `npm run build`: builds the native addon with cmake-js (CUDA when nvcc is
// found, else CPU-only) and compiles the TypeScript in lib/ to dist/.
// Environment: SPPNET_CUDA_ARCHS="90" (architectures), SPPNET_WITH_CUDA=0 (force CPU-only),
//              SPPNET_SKIP_NATIVE=1 (TypeScript only), SPPNET_DEBUG=1 (debug build),
//              SPPNET_BUILD_VERBOSE=1 (print the whole CMake/compiler/ptxas output as it comes).
// The whole output always goes to build/build.log; by default only a summary is printed: what was
// found, progress every 30 s, the backends built, the time, compiler warnings, a ptxas register
// and spill summary, and on failure the end of the log.
'use strict';
const { spawn, spawnSync } = require('child_process');
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
  if (r.status !== 0) return null;
  const out = (r.stdout || r.stderr).split('\n');
  return out.find((l) => /release \d/.test(l)) || out[0]; // nvcc: "Cuda compilation tools, release 13.0, V13.0.88"
};

async function buildNative() {
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
  const buildArgs = [cmakeJs, 'build', '--out', 'build'];
  if (process.env.SPPNET_DEBUG === '1') buildArgs.push('--debug');
  fs.mkdirSync(path.join(root, 'build'), { recursive: true });
  const logFile = path.join('build', 'build.log');
  // Appended to, so the ptxas reports of the last full build stay there after an incremental one.
  const logFd = fs.openSync(path.join(root, logFile), 'a');
  fs.writeSync(logFd, `\n===== scripts/build.js ${new Date().toISOString()} =====\n`);
  const verbose = process.env.SPPNET_BUILD_VERBOSE === '1';
  log(`compiling (from scratch: about 5 minutes with CUDA on 2 cores); the whole output is appended to ${logFile}` +
    (verbose ? '' : ', SPPNET_BUILD_VERBOSE=1 also prints it'));
  const t0 = Date.now();
  const lines = [];
  let lastNote = Date.now(), step = '';
  const onLine = (line) => {
    lines.push(line);
    const m = /^\[(\d+\/\d+)\]/.exec(line) || /^\[\s*(\d+%)\]/.exec(line); // ninja, make
    if (m) step = m[1];
    if (!verbose && step && Date.now() - lastNote >= 30000) {
      lastNote = Date.now();
      log(`compiling: ${step} steps, ${elapsed(Date.now() - t0)}`);
    }
  };
  const runLogged = (argv) => new Promise((resolve) => {
    const child = spawn(process.execPath, argv, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const stream of [child.stdout, child.stderr]) {
      let rest = '';
      stream.on('data', (d) => {
        fs.writeSync(logFd, d);
        if (verbose) process.stdout.write(d);
        const parts = (rest + d.toString('utf8')).split(/\r?\n/);
        rest = parts.pop();
        parts.forEach(onLine);
      });
      stream.on('end', () => rest && onLine(rest));
    }
    child.on('error', (e) => resolve({ status: 1, error: e }));
    child.on('close', (status) => resolve({ status }));
  });
  const failed = (what) => {
    fs.closeSync(logFd);
    if (!verbose) {
      const tail = lines.slice(-60);
      console.error(tail.map((l) => `  ${l}`).join('\n'));
      console.error(`[sppnet] (the last ${tail.length} lines of ${logFile} above; the whole output is in that file)`);
    }
    die(`${what} failed (see the output above).`);
  };
  let r = await runLogged(args);
  if (r.status !== 0) failed('configuring the native build');
  r = await runLogged(buildArgs);
  if (r.status !== 0) failed('the native build');
  fs.closeSync(logFd);
  summarise(lines, nvcc, Date.now() - t0, logFile);
}

function elapsed(ms) {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

// What the build produced and what the compilers said, in a few lines.
function summarise(lines, nvcc, ms, logFile) {
  const status = lines.filter((l) => /^-- sppnet: /.test(l)).map((l) => l.replace(/^-- sppnet: /, ''));
  const cuda = lines.find((l) => /^-- sppnet: building the CUDA backend/.test(l));
  const backends = cuda ? 'CPU + CUDA' : 'CPU only';
  log(`addon built in ${elapsed(ms)}: ${path.join('build', 'Release', 'sppnet.node')}, backends ${backends}` +
    (status.length ? ` (${status.join('; ')})` : ''));
  if (nvcc && !cuda) log('nvcc was found but CMake did not build the CUDA backend: see the "-- sppnet:" lines in ' + logFile);
  // Compiler warnings (not ptxas' resource reports) are shown: they should not be hidden in a log.
  const warnings = lines.filter((l) => /\bwarning\b/i.test(l) && !/^ptxas info/.test(l) && !/--no-warn-unused-cli|Wno-/.test(l));
  if (warnings.length) {
    log(`${warnings.length} warning line(s) from the compilers:`);
    for (const w of warnings.slice(0, 20)) console.log(`  ${w}`);
    if (warnings.length > 20) console.log(`  ... (the rest in ${logFile})`);
  }
  // nvcc --resource-usage / -warn-spills: one "Used N registers" per kernel and architecture.
  const used = lines.filter((l) => /^ptxas info\s*: Used \d+ registers/.test(l));
  if (used.length) {
    const spills = lines.filter((l) => /(\d+) bytes spill stores, (\d+) bytes spill loads/.test(l) && !/\b0 bytes spill stores, 0 bytes spill loads/.test(l));
    const regs = used.map((l) => Number(/Used (\d+) registers/.exec(l)[1]));
    log(`ptxas: ${used.length} kernel builds, ${Math.min(...regs)}-${Math.max(...regs)} registers, ` +
      (spills.length ? `${spills.length} spill register(s):` : 'no register spills') +
      ` (per kernel: grep -B1 -A2 "ptxas info" ${logFile})`);
    for (const l of spills.slice(0, 10)) console.log(`  ${l.trim()}`);
  }
}

// dist/ is compiled from lib/ with this package's own TypeScript (a devDependency: present in a
// clone after npm install). An install from a tarball (npm pack) ships dist/ and has no
// devDependencies: it uses the shipped dist/, even when the installing project has a TypeScript
// of its own that would resolve from here.
function buildTs() {
  const shipped = fs.existsSync(path.join(root, 'dist', 'index.js'));
  let tsc;
  try {
    tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
  } catch {
    tsc = null;
  }
  if (tsc && !tsc.startsWith(path.join(root, 'node_modules') + path.sep)) tsc = null;
  if (!tsc || !fs.existsSync(path.join(root, 'tsconfig.json'))) {
    if (shipped) return log('using the shipped dist/ (no TypeScript of this package\'s own to recompile it)');
    die('dist/ is missing and this package has no TypeScript to build it: in a clone, run npm install in the package folder (it installs the devDependencies); a tarball made with npm pack ships dist/.');
  }
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) die('TypeScript compilation failed.');
  log(`TypeScript compiled to dist/ in ${elapsed(Date.now() - t0)}`);
}

(async () => {
  if (process.env.SPPNET_SKIP_NATIVE !== '1') await buildNative();
  buildTs();
})().catch((e) => die(e.stack || String(e)));
