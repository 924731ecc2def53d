'use strict';
// Per-call overhead of sppnet's ops on the CPU: a tiny sp.spp call (one 1x6x6 map, levels
// {6,3,2,1}) from call to resolved promise, beside a libuv thread-pool round trip
// (fs.promises.stat) in the same run; and a ZF-5 forward at batch 1 and 4 (224 x 224), its wall
// time split into the time inside the CPU kernels (the addon's count: executor and inline runs)
// and the rest, the overhead of the layer-by-layer hand-over (JS, checks, thread hops).
//
//   node bench/overhead.js [--quick] [--calls N] [--runs N] [--out DIR]
//
// Medians; writes DIR/overhead-cpu.{md,json}.
const path = require('path');
const fs = require('fs');
const sp = require('../dist');
const { native } = require('../dist/core/native');
const { failed, parseArgs, headerText, machineInfo, buildInfo, percentile, textTable, mdTable, writeResults, commandLine, fmtMs } = require('./common');

const OPTIONS = [
  { name: 'quick', type: 'flag', help: 'a fifth of the calls and runs' },
  { name: 'calls', type: 'int', default: 5000, help: 'timed tiny calls of each kind' },
  { name: 'runs', type: 'int', default: 15, help: 'timed ZF-5 forwards of each batch' },
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), help: 'where overhead-cpu.{md,json} go' },
];

const us = (ns) => ns / 1e3;
async function timeCalls(n, f) {
  const s = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await f();
    s.push(Number(process.hrtime.bigint() - t0));
  }
  return { medianUs: us(percentile(s, 0.5)), p10Us: us(percentile(s, 0.1)), p90Us: us(percentile(s, 0.9)) };
}

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 2, 9) });
  if (opt.quick) (opt.calls = Math.ceil(opt.calls / 5)), (opt.runs = Math.max(5, Math.ceil(opt.runs / 5)));
  if (sp.backend().device !== 'cpu') console.log(`note: the default device is ${sp.backend().device}; this measures the CPU path`);
  const machine = { ...machineInfo(), build: buildInfo(), threads: sp.backend().cpu.threads, inlineWork: process.env.SPPNET_INLINE_WORK ?? 'default' };
  const x = sp.tensor(Float32Array.from({ length: 36 }, (_, i) => (i * 7) % 11), [1, 1, 6, 6], { device: 'cpu' });
  const out = sp.zeros([1, sp.sppFeatures(1)], { device: 'cpu' });
  const tiny = [
    ['sp.spp, 1x6x6 map, into out', () => sp.spp(x, { out })],
    ['sp.spp, 1x6x6 map, new output', async () => (await sp.spp(x)).dispose()],
    ['fs.promises.stat (a libuv pool round trip)', () => fs.promises.stat(__filename)],
  ];
  // Warm-up (the JIT compiles on the same 2 cores): every kind, twice over, before any is timed.
  for (let round = 0; round < 2; round++) for (const [, f] of tiny) for (let i = 0; i < 2000; i++) await f();
  const tinyRes = [];
  for (const [name, f] of tiny) tinyRes.push({ name, ...(await timeCalls(opt.calls, f)) });

  const model = await sp.loadModel({ arch: 'zf5', device: 'cpu' });
  const nets = [];
  for (const n of [1, 4]) {
    const img = sp.tensor(Float32Array.from({ length: n * 3 * 224 * 224 }, (_, i) => Math.sin(i)), [n, 3, 224, 224], { device: 'cpu' });
    (await model.run(img)).dispose();
    const wall = [], ops = [], over = [];
    let calls = 0;
    for (let r = 0; r < opt.runs; r++) {
      const s0 = native.memoryStats(), t0 = process.hrtime.bigint();
      const y = await model.run(img);
      const t1 = process.hrtime.bigint(), s1 = native.memoryStats();
      y.dispose();
      const w = Number(t1 - t0) / 1e6, k = (s1.cpuOpNs - s0.cpuOpNs) / 1e6;
      wall.push(w), ops.push(k), over.push(w - k);
      calls = s1.opsInline + s1.opsQueued - s0.opsInline - s0.opsQueued;
    }
    const m = percentile(wall, 0.5), o = percentile(over, 0.5);
    nets.push({ name: `ZF-5 ${n}x224`, runs: opt.runs, wallMs: m, kernelMs: percentile(ops, 0.5), overheadMs: o, overheadPct: (100 * o) / m, nativeCalls: calls, perCallUs: (1e3 * o) / calls });
    img.dispose();
  }
  model.dispose();

  const T1 = ['call', 'median us', 'p10 us', 'p90 us'];
  const r1 = tinyRes.map((t) => [t.name, t.medianUs.toFixed(1), t.p10Us.toFixed(1), t.p90Us.toFixed(1)]);
  const T2 = ['forward', 'runs', 'wall ms', 'in kernels ms', 'overhead ms', 'overhead %', 'native calls', 'overhead per call us'];
  const r2 = nets.map((z) => [z.name, String(z.runs), fmtMs(z.wallMs), fmtMs(z.kernelMs), fmtMs(z.overheadMs), `${z.overheadPct.toFixed(1)}%`, String(z.nativeCalls), z.perCallUs.toFixed(0)]);
  const legend = ['overhead = wall time of model.run minus the time inside the CPU kernels (medians of each); its share of the wall time at batch 1 is the per-layer overhead.'];
  console.log(textTable(T1, r1) + '\n\n' + textTable(T2, r2));
  legend.forEach((l) => console.log(l));
  const md = ['# Per-call overhead on the CPU', '', `${machine.date} — ${machine.cpu}, ${machine.cores} cores, node ${machine.node}, commit ${machine.build.commit}${machine.build.dirty ? ' + local changes' : ''}.`, '', mdTable(T1, r1), '', mdTable(T2, r2), '', ...legend.map((l) => `- ${l}`), ''].join('\n');
  console.log(writeResults(opt.out, 'overhead-cpu', { command: commandLine(__filename), machine, tiny: tinyRes, forward: nets }, md));
}

main().catch((e) => process.exit(failed(e)));
