'use strict';
// Where the time goes in torchvision's vgg16 / googlenet on the CPU, sppnet against
// onnxruntime-node (bench/torchvision.js gives the whole-network figures).
//
//   node bench/torchvision_layers.js [--arch googlenet|vgg16] [--batch N] [--reps R] [--dir DIR] [--no-ort] [--json FILE]
//
// sppnet: each layer of the spec as Model.run runs it (a conv with its batch norm folded in and
// the ReLU fused, with a filter cache as the model keeps one; max pools; the concat copy; the
// pyramid / average pool; fc), through the layer calls with preallocated outputs, R calls each
// after 3 warm-ups, medians; then Model.run on the same image. onnxruntime-node: the .onnx of
// tools/export_torchvision_onnx.py with enableProfiling, as many intra-op threads as sppnet has
// (SPPNET_NUM_THREADS sets those), R runs; each node's kernel time (its profile's *_kernel_time
// events), the median over the runs. Both are grouped by kind of layer (conv by kernel size,
// pool, concat, fc), with the conv FLOPs of each group and its GFLOP/s. "whole run": medians of
// Model.run and of session.run. On a busy machine run with SPPNET_CPU_NICE=0 (see torchvision.js).
// --json FILE: every layer's figures (name, kind, conv geometry, map size, ms of the layer call and
// in a run; onnxruntime-node's nodes too), to compare two builds or settings layer by layer.
const fs = require('fs');
const os = require('os');
const path = require('path');
const sp = require('../dist');
const { conv2dCached } = require('../dist/ops/conv2d');
const { amxNote, parseArgs, headerText, failed, timeRuns, percentile, textTable, rng, randomArray, pair } = require('./common');

const OPTIONS = [
  { name: 'arch', type: 'choice', choices: ['googlenet', 'vgg16'], default: 'googlenet', help: 'the network' },
  { name: 'batch', type: 'int', default: 1, arg: 'N', help: 'images per call (224x224)' },
  { name: 'reps', type: 'int', default: 11, arg: 'R', help: 'timed calls per layer, and ORT runs' },
  { name: 'dir', type: 'path', default: process.env.SPPNET_TV_DIR || '/tmp/tvbench', help: 'where <arch>.onnx is' },
  { name: 'no-ort', type: 'flag', help: 'sppnet only' },
  { name: 'json', type: 'path', default: null, arg: 'FILE', help: 'write every layer\'s figures there' },
];

const med = async (f, reps) => percentile((await timeRuns(f, { reps, warmup: 3, dispose: false })).samples, 0.5);

/** The layers Model.run runs, in order, conv + batchnorm folded: { kind, name, op(x) -> layer fn, shapes }. */
function plan(spec) {
  const ops = [];
  const walk = (layers, c, h, w) => {
    for (let i = 0; i < layers.length; i++) {
      const l = layers[i];
      if (l.type === 'conv') {
        const [k] = pair(l.kernel, 1), [s] = pair(l.stride, 1), [p] = pair(l.padding, 0);
        const fused = layers[i + 1]?.type === 'batchnorm' && l.relu === false;
        const relu = fused ? layers[i + 1].relu === true : l.relu !== false;
        if (fused) i++;
        const ho = Math.floor((h + 2 * p - k) / s) + 1, wo = Math.floor((w + 2 * p - k) / s) + 1;
        ops.push({ kind: `conv ${k}x${k}`, name: l.name.replace(/\.conv$/, ''), conv: { cin: c, cout: l.out, k, s, p, relu }, inC: c, h, w, flops: 2 * l.out * c * k * k * ho * wo });
        [c, h, w] = [l.out, ho, wo];
      } else if (l.type === 'maxpool') {
        const [k] = pair(l.kernel, 1), [s] = pair(l.stride ?? l.kernel, 1), [p] = pair(l.padding, 0);
        const side = (a) => { let o = (l.ceilMode ? Math.ceil((a + 2 * p - k) / s) : Math.floor((a + 2 * p - k) / s)) + 1; if (l.ceilMode && (o - 1) * s >= a + p) o--; return o; };
        ops.push({ kind: 'maxpool', name: `maxpool ${k}/${s} @${h}`, pool: { kernel: k, stride: s, padding: p, ceilMode: l.ceilMode === true }, inC: c, h, w, flops: 0 });
        [h, w] = [side(h), side(w)];
      } else if (l.type === 'concat') {
        const widths = l.branches.map((b) => walk(b, c, h, w));
        ops.push({ kind: 'concat', name: `concat @${h}`, concat: widths, h, w, flops: 0 });
        c = widths.reduce((a, b) => a + b, 0);
      } else if (l.type === 'spp') {
        ops.push({ kind: 'pool + fc', name: `spp ${l.pool ?? 'max'} ${l.levels}`, spp: { levels: l.levels, pool: l.pool, bins: l.bins }, inC: c, h, w, flops: 0 });
        c = c * l.levels.reduce((a, n) => a + n * n, 0);
      } else if (l.type === 'fc') {
        ops.push({ kind: 'pool + fc', name: l.name, fc: { in: c, out: l.out, relu: l.relu === true }, flops: 2 * c * l.out });
        c = l.out;
      }
    }
    return c;
  };
  walk(spec.layers, spec.inChannels, 224, 224);
  return ops;
}

async function sppnetLayers(ops, N, reps) {
  const next = rng(3);
  const rows = [];
  for (const o of ops) {
    let f, keep = [];
    if (o.conv) {
      const { cin, cout, k, s, p, relu } = o.conv;
      const x = sp.tensor(randomArray(N * cin * o.h * o.w, next), [N, cin, o.h, o.w]);
      const wt = sp.tensor(randomArray(cout * cin * k * k, next).map((v) => v * Math.sqrt(3 / (cin * k * k))), [cout, cin, k, k]);
      const b = sp.tensor(randomArray(cout, next), [cout]);
      const opts = { stride: s, padding: p, relu };
      let cache = null;
      const cf = (n) => (cache ??= new Float32Array(n));
      const out = await conv2dCached(x, wt, b, opts, cf);
      f = () => conv2dCached(x, wt, b, { ...opts, out }, cf);
      keep = [x, wt, b, out];
    } else if (o.pool) {
      const x = sp.tensor(randomArray(N * o.inC * o.h * o.w, next), [N, o.inC, o.h, o.w]);
      const out = await sp.maxPool2d(x, o.pool);
      f = () => sp.maxPool2d(x, { ...o.pool, out });
      keep = [x, out];
    } else if (o.concat) {
      const parts = o.concat.map((c) => sp.tensor(randomArray(N * c * o.h * o.w, next), [N, c, o.h, o.w]));
      const out = await sp.concat(parts);
      f = () => sp.concat(parts, { out });
      keep = [...parts, out];
    } else if (o.spp) {
      const x = sp.tensor(randomArray(N * o.inC * o.h * o.w, next), [N, o.inC, o.h, o.w]);
      const out = await sp.spp(x, o.spp);
      f = () => sp.spp(x, { ...o.spp, out });
      keep = [x, out];
    } else if (o.fc) {
      const x = sp.tensor(randomArray(N * o.fc.in, next), [N, o.fc.in]);
      const wt = sp.tensor(randomArray(o.fc.out * o.fc.in, next), [o.fc.out, o.fc.in]);
      const b = sp.tensor(randomArray(o.fc.out, next), [o.fc.out]);
      const out = await sp.linear(x, wt, b, { relu: o.fc.relu });
      f = () => sp.linear(x, wt, b, { relu: o.fc.relu, out });
      keep = [x, wt, b, out];
    }
    rows.push({ ...o, src: o, ms: await med(f, reps) });
    keep.forEach((t) => t.dispose());
  }
  return rows;
}

/**
 * Each layer's time inside a whole Model.run: a model whose compiled plan times its steps
 * (SPPNET_PLAN_TIMES=1, lib/nn/plans.ts), reps + 3 runs, the plan's mean per step. The steps are
 * the ops of `ops` but the concats (written in place on the CPU); undefined if they do not line up.
 */
async function inRunLayers(spec, ops, N, reps) {
  const was = process.env.SPPNET_PLAN_TIMES;
  process.env.SPPNET_PLAN_TIMES = '1';
  const model = await sp.buildModel({ spec, seed: 1, device: 'cpu' });
  const x = sp.tensor(randomArray(N * 3 * 224 * 224, rng(5)), [N, 3, 224, 224]);
  let t;
  try {
    for (let i = 0; i < reps + 3; i++) (await model.run(x)).dispose();
    t = model.planTimes()[0];
  } finally {
    if (was === undefined) delete process.env.SPPNET_PLAN_TIMES;
    else process.env.SPPNET_PLAN_TIMES = was;
    model.dispose();
    x.dispose();
  }
  const stepped = ops.filter((o) => !o.concat);
  if (!t || t.stepMs.length !== stepped.length) return undefined;
  return new Map(stepped.map((o, i) => [o, t.stepMs[i]]));
}

/** ORT's per-node kernel time (ms per run, averaged over `reps` profiled runs), with each node's op type and conv kernel. */
async function ortLayers(ort, onnx, N, reps) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ortprof-'));
  const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: sp.backend().cpu.threads, interOpNumThreads: 1, executionProviders: ['cpu'], enableProfiling: true, profileFilePrefix: path.join(dir, 'p') });
  const x = new ort.Tensor('float32', randomArray(N * 3 * 224 * 224, rng(5)), [N, 3, 224, 224]);
  const feeds = { [session.inputNames[0]]: x };
  for (let i = 0; i < 3; i++) await session.run(feeds);
  const walls = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    walls.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const wallMs = percentile(walls, 0.5);
  session.endProfiling();
  await session.release();
  const file = fs.readdirSync(dir).map((f) => path.join(dir, f)).find((f) => f.endsWith('.json'));
  const ev = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.rmSync(dir, { recursive: true, force: true });
  // The last `reps` model runs' node events (the first 3 were warm-ups).
  const runs = ev.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const from = runs[runs.length - reps].ts;
  const nodes = new Map();
  for (const e of ev) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || e.ts < from) continue;
    const name = e.name.slice(0, -'_kernel_time'.length);
    const op = e.args.op_name;
    let kind = op;
    if (/Conv/.test(op)) {
      const wshape = e.args.input_type_shape?.[1]?.float;
      kind = wshape ? `conv ${wshape[2]}x${wshape[3]}` : 'conv';
    } else if (op === 'MaxPool') kind = 'maxpool';
    else if (op === 'Concat') kind = 'concat';
    else if (/Gemm|MatMul|GlobalAveragePool|AveragePool|Flatten|Reshape/.test(op)) kind = 'pool + fc';
    const n = nodes.get(name) ?? { name, op, kind, samples: [] };
    n.samples.push(e.dur / 1e3);
    nodes.set(name, n);
  }
  // Per node the median of its runs (a run the scheduler preempted does not count).
  for (const n of nodes.values()) n.ms = percentile(n.samples, 0.5);
  return { nodes: [...nodes.values()], wallMs };
}

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 1, 15) });
  const N = opt.batch, reps = opt.reps;
  const spec = sp.torchvisionSpec(opt.arch, { classes: 1000 });
  console.log(`${opt.arch} ${N}x224 per layer kind, sppnet (${sp.backend().cpu.isa}${amxNote(sp.backend())}, ${sp.backend().cpu.threads} thread${sp.backend().cpu.threads > 1 ? 's' : ''}, onnxruntime-node as many) vs onnxruntime-node; medians of ${reps}; load ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`);
  const ops = plan(spec);
  const ours = await sppnetLayers(ops, N, reps);
  // The cost of a call that does next to nothing (ReLU of 16 floats): the dispatch to the
  // compute thread and back, which each of the layers above pays once.
  const tiny = sp.tensor(randomArray(16, rng(7)), [16]), tinyOut = sp.tensor(new Float32Array(16), [16]);
  const callMs = await med(() => sp.relu(tiny, { out: tinyOut }), Math.max(reps, 51));
  tiny.dispose();
  tinyOut.dispose();
  const model = await sp.buildModel({ spec, seed: 1, device: 'cpu' });
  const x = sp.tensor(randomArray(N * 3 * 224 * 224, rng(5)), [N, 3, 224, 224]);
  const whole = await med(async () => (await model.run(x)).dispose(), reps);
  model.dispose();
  x.dispose();
  const inRun = await inRunLayers(spec, ops, N, reps);

  let ort = null;
  const onnx = path.join(opt.dir, `${opt.arch}.onnx`);
  if (opt.ort) {
    try { ort = require('onnxruntime-node'); } catch { console.log('onnxruntime-node is not installed (npm run bench:ort): sppnet only'); }
    if (ort && !fs.existsSync(onnx)) { console.log(`no ${onnx}: sppnet only`); ort = null; }
  }
  const peer = ort ? await ortLayers(ort, onnx, N, reps) : null;
  if (opt.json) {
    const layers = ours.map((r) => ({ name: r.name, kind: r.kind, conv: r.conv ?? null, h: r.h, w: r.w, ms: r.ms, inRunMs: inRun ? inRun.get(r.src) ?? null : null }));
    const ortNodes = peer ? peer.nodes.map((n) => ({ name: n.name, op: n.op, kind: n.kind, ms: n.ms })) : null;
    fs.writeFileSync(opt.json, JSON.stringify({ arch: opt.arch, batch: N, backend: sp.backend().cpu, layers, ort: ortNodes }, null, 1));
  }

  const kinds = [...new Set([...ours.map((r) => r.kind), ...(peer ? peer.nodes.map((n) => n.kind) : [])])];
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const fmt = (v) => (v == null ? '-' : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2));
  const rows = kinds.map((k) => {
    const o = ours.filter((r) => r.kind === k), p = peer ? peer.nodes.filter((n) => n.kind === k) : [];
    const msO = sum(o.map((r) => r.ms)), msP = peer ? sum(p.map((n) => n.ms)) : null, fl = sum(o.map((r) => r.flops)) * N;
    const msR = inRun ? sum(o.map((r) => inRun.get(r.src) ?? 0)) : null;
    return [k, String(o.length), fmt(msO), fl ? fmt(fl / msO / 1e6) : '', fmt(msR), fl && msR ? fmt(fl / msR / 1e6) : '', peer ? String(p.length) : '-', fmt(msP), fl && peer && msP ? fmt(fl / msP / 1e6) : '', peer && msO ? `${(msP / msO).toFixed(2)}x` : '-', peer && msR ? `${(msP / msR).toFixed(2)}x` : '-'];
  });
  const totO = sum(ours.map((r) => r.ms)), totP = peer ? sum(peer.nodes.map((n) => n.ms)) : null, totR = inRun ? sum([...inRun.values()]) : null;
  rows.push(['sum of layers', String(ours.length), fmt(totO), '', fmt(totR), '', peer ? String(peer.nodes.length) : '-', fmt(totP), '', peer ? `${(totP / totO).toFixed(2)}x` : '-', peer && totR ? `${(totP / totR).toFixed(2)}x` : '-']);
  rows.push([`of which calls`, String(ours.length), fmt(callMs * ours.length), '', '', '', '', '', '', '', '']);
  rows.push(['whole run', '', fmt(whole), fmt((sum(ours.map((r) => r.flops)) * N) / whole / 1e6), '', '', '', fmt(peer?.wallMs), peer ? fmt((sum(ours.map((r) => r.flops)) * N) / peer.wallMs / 1e6) : '', peer ? `${(peer.wallMs / whole).toFixed(2)}x` : '-', '']);
  console.log('\n' + textTable(['kind', 'sppnet layers', 'sppnet ms', 'GFLOP/s', 'in a run ms', 'GFLOP/s', 'ORT nodes', 'ORT ms', 'GFLOP/s', 'ort/sppnet', 'ort/in a run'], rows, 1));
  console.log(`"of which calls": ${ours.length} x the median of an almost empty call (sp.relu of 16 floats), ${callMs.toFixed(3)} ms. ORT's "whole run" is with its profiler on.`);
  console.log(inRun ? `"in a run": each layer's time inside a whole compiled Model.run (SPPNET_PLAN_TIMES=1: the plan times its steps), the mean of ${reps + 1} runs; the layer calls above each pay a hand-over and start cold.` : '"in a run": n/a (the timed plan\'s steps did not line up with the layers)');
  console.log('\nsppnet layers, slowest first (ms, GFLOP/s):');
  for (const r of [...ours].sort((a, b) => b.ms - a.ms).slice(0, 15)) {
    const c = r.conv;
    console.log(`  ${r.name.padEnd(28)} ${r.kind.padEnd(9)} ${c ? `${c.cin}->${c.cout} @${r.h}x${r.w}${c.s > 1 ? ' s' + c.s : ''}`.padEnd(22) : ''.padEnd(22)} ${fmt(r.ms).padStart(7)}  ${r.flops ? fmt((r.flops * N) / r.ms / 1e6).padStart(6) : ''}`);
  }
  if (peer) {
    console.log('\nORT nodes, slowest first (ms):');
    for (const n of [...peer.nodes].sort((a, b) => b.ms - a.ms).slice(0, 15)) console.log(`  ${n.name.padEnd(44)} ${n.op.padEnd(12)} ${fmt(n.ms).padStart(7)}`);
  }
}

main().catch((e) => { process.exitCode = failed(e); });
