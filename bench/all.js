#!/usr/bin/env node
'use strict';
// `npm run bench`: every benchmark, then the report.
//
//   node bench/all.js [--quick] [--only spp,zf5,tv,load,train,overhead,bf16]
//
// Runs, one after the other (each a child process, output as it comes):
//   spp   node bench/run.js [--quick]    SPP layer, sppnet vs TensorFlow.js      -> bench/out/spp-cpu.*
//   zf5   node bench/zf5.js [--quick]    ZF-5 forward, vs onnxruntime-node, tfjs -> bench/out/zf5-cpu.*
//   tv    node bench/torchvision.js [--quick]  vgg16, googlenet vs onnxruntime-node -> bench/out/torchvision-cpu.*
//         (weights from tools/export_torchvision_onnx.py /tmp/tvbench; without them sppnet alone)
//   load  node bench/load.js [--quick]   the HTTP service under load            -> bench/out/load-*.*
//   train node bench/train.js [--quick]  one training step, vs tfjs-wasm         -> bench/out/train-cpu.*
//   overhead node bench/overhead.js [--quick]  tiny-call latency, ZF-5 overhead   -> bench/out/overhead-cpu.*
//   bf16  node bench/bf16.js [--quick]   bfloat16 fc weights vs FP32            -> bench/out/bf16-<device>.*
// then node bench/plots.js (bench/out/*.svg) and node bench/report.js (copies the SVGs to
// bench/plots/ and splices each table into bench/RESULTS.md). A part that fails is reported and the
// rest still run; the exit status is 1 if any failed. About 12 minutes in all (--quick: about 7).
const { spawnSync } = require('child_process');
const path = require('path');
const { parseArgs, headerText, failed } = require('./common');

const PARTS = { spp: 'run.js', zf5: 'zf5.js', tv: 'torchvision.js', load: 'load.js', train: 'train.js', overhead: 'overhead.js', bf16: 'bf16.js' };

function main() {
  const { quick, only } = parseArgs(process.argv.slice(2), [
    { name: 'quick', type: 'flag', help: 'each benchmark in its --quick mode' },
    { name: 'only', type: 'list', choices: Object.keys(PARTS), default: Object.keys(PARTS), arg: 'spp,zf5,...', help: 'these benchmarks only (plots and report run always)' },
  ], { usage: headerText(__filename, 2, 16) });
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
  process.exitCode = failed(e);
}
