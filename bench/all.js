#!/usr/bin/env node
'use strict';
// `npm run bench`: every benchmark, then the report.
//
//   node bench/all.js [--quick] [--only spp,zf5,load,train]
//
// Runs, one after the other (each a child process, output as it comes):
//   spp   node bench/run.js [--quick]    SPP layer, sppnet vs TensorFlow.js      -> bench/out/spp-cpu.*
//   zf5   node bench/zf5.js [--quick]    ZF-5 forward, vs onnxruntime-node, tfjs -> bench/out/zf5-cpu.*
//   load  node bench/load.js [--quick]   the HTTP service under load            -> bench/out/load-*.*
//   train node bench/train.js [--quick]  one training step, vs tfjs-wasm         -> bench/out/train-cpu.*
// then node bench/plots.js (bench/out/*.svg) and node bench/report.js (copies the SVGs to
// bench/plots/ and splices each table into bench/RESULTS.md). A part that fails is reported and the
// rest still run; the exit status is 1 if any failed. About 5 minutes in all (--quick: about 3).
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const PARTS = { spp: 'run.js', zf5: 'zf5.js', load: 'load.js', train: 'train.js' };

function main() {
  const argv = process.argv.slice(2);
  let quick = false;
  let only = Object.keys(PARTS);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') quick = true;
    else if (a === '--only' || a.startsWith('--only=')) {
      only = (a.includes('=') ? a.slice(7) : argv[++i] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
      const bad = only.filter((p) => !PARTS[p]);
      if (!only.length || bad.length) throw new Error(`--only: choose from ${Object.keys(PARTS).join(',')}`);
    } else if (a === '-h' || a === '--help') {
      console.log(fs.readFileSync(__filename, 'utf8').split('\n').slice(2, 14).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
      return 0;
    } else throw new Error(`unknown argument ${a} (try --help)`);
  }
  const steps = [
    ...only.map((p) => [p, PARTS[p], quick ? ['--quick'] : []]),
    ['plots', 'plots.js', []],
    ['report', 'report.js', []],
  ];
  const failed = [];
  const t0 = Date.now();
  for (const [name, file, args] of steps) {
    console.log(`\n=== ${name}: node bench/${file}${args.length ? ' ' + args.join(' ') : ''}\n`);
    const r = spawnSync(process.execPath, [path.join(__dirname, file), ...args], { stdio: 'inherit', cwd: path.join(__dirname, '..') });
    if (r.status !== 0) {
      failed.push(name);
      console.error(`\n=== ${name} failed (${r.error ? r.error.message : r.signal ?? `exit ${r.status}`})`);
    }
  }
  console.log(`\n=== done in ${((Date.now() - t0) / 1e3).toFixed(0)} s${failed.length ? `; failed: ${failed.join(', ')}` : ''}`);
  return failed.length ? 1 : 0;
}

try {
  process.exitCode = main();
} catch (e) {
  console.error(e.message);
  process.exitCode = 1;
}
