'use strict';
// Per-layer time of the anchor ZF-5 (bench/zf5.js) on the CPU or CUDA, through the public layer
// calls (sp.conv2d, sp.localResponseNorm, sp.maxPool2d, sp.spp, sp.linear) with preallocated
// outputs, so each figure includes the call's JS and async overhead, as in Model.run. Also the
// whole chain via Model.run (conv1-5 + SPP, and with --fc the whole network with fc6-8), and an
// empty-ish call (ReLU over 16 floats) for the per-call overhead. With SPPNET_CUDA_KERNEL_TIMES=1
// on CUDA, also the GPU time of the kernels each call launched (CUDA events around each launch,
// which add a few microseconds a launch to the wall time).
//
//   node bench/zf5_layers.js [--batch N[,N...]] [--reps R] [--model-only] [--fc] [--device cpu|cuda] [--json FILE]
//
// Medians of R timed calls (default 21) after 3 warm-ups, layer by layer (each layer's calls
// back to back, so its helper threads are warm, as in a network run).
const sp = require('../dist');
const { parseArgs, headerText, failed, timeRuns, percentile, opProbe } = require('./common');

const OPTIONS = [
  { name: 'batch', type: 'ints', default: [1, 4], arg: 'N[,N...]', help: 'the batch sizes' },
  { name: 'reps', type: 'int', default: 21, arg: 'R', help: 'timed calls per layer (the median is shown)' },
  { name: 'model-only', type: 'flag', help: 'only the whole chain (Model.run), no layer rows' },
  { name: 'fc', type: 'flag', help: 'also fc6-8 (12800 -> 4096 -> 4096 -> 1000) and the whole network' },
  { name: 'device', type: 'string', default: '', arg: 'cpu|cuda', help: "where it runs (default: the backend's device)" },
  { name: 'json', type: 'path', default: '', arg: 'FILE', help: 'also write the rows there (scripts/gpu-run.sh reads them)' },
];

function rand(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
}

/**
 * The median ms of `reps` calls of f after 3 warm-ups (its outputs are preallocated: nothing
 * disposed), and the median ms of each call spent on the addon's executor of `device` (the CPU
 * kernels; on CUDA the launches, the GPU's work and the stream syncs): the rest is the call's JS,
 * checks and hand-over.
 */
async function med(f, reps, device) {
  const probe = opProbe(device);
  const r = await timeRuns(f, { reps, warmup: 3, dispose: false, before: probe.before, after: probe.after });
  return { ms: percentile(r.samples, 0.5), ...probe.medians() };
}
const row = (name, m, extra = '') =>
  `  ${name.padEnd(15)} ${m.ms.toFixed(3).padStart(8)} ms ${m.exMs.toFixed(3).padStart(8)} ms${m.gpuMs !== undefined ? ` ${m.gpuMs.toFixed(3).padStart(8)} ms` : ''}${extra}`;

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 1, 10) });
  const batches = opt.batch;
  const reps = opt.reps;
  const device = opt.device || sp.backend().device;
  const T = (data, shape) => sp.tensor(data, shape, { device });
  const kernels = opProbe(device).kernels; // SPPNET_CUDA_KERNEL_TIMES=1 on CUDA
  const convs = { conv1: [96, 3, 7], conv2: [256, 96, 5], conv3: [384, 256, 3], conv4: [384, 384, 3], conv5: [256, 384, 3] };
  const W = {};
  let seed = 1;
  for (const [n, [o, i, k]] of Object.entries(convs)) {
    W[n] = T(rand(o * i * k * k, seed++).map((v) => v * Math.sqrt(6 / (i * k * k))), [o, i, k, k]);
    W[n + 'b'] = T(rand(o, seed++).map((v) => v * 0.1), [o]);
  }
  const fcs = opt.fc ? { fc6: [4096, 12800], fc7: [4096, 4096], fc8: [1000, 4096] } : {};
  for (const [n, [o, i]] of Object.entries(fcs)) {
    W[n] = T(rand(o * i, seed++).map((v) => v * Math.sqrt(6 / i)), [o, i]);
    W[n + 'b'] = T(rand(o, seed++).map((v) => v * 0.1), [o]);
  }
  const lrn = { size: 5, alpha: 1e-4, beta: 0.75, k: 1 };
  const pool = { kernel: 3, stride: 2, padding: 1 };
  const results = []; // { batch, name, ms, exMs }
  const where = device === 'cuda' ? sp.backend().cuda?.name ?? 'cuda' : `cpu ${sp.backend().cpu?.isa ?? ''}`;
  console.log(`ZF-5 (anchor) per layer on ${where}, math ${JSON.stringify(sp.getMath())}, median of ${reps} ms; load ${require('os').loadavg().map((v) => v.toFixed(2)).join(' ')}`);
  for (const N of batches) {
    const x = T(rand(N * 3 * 224 * 224, 99), [N, 3, 224, 224]);
    // Intermediate tensors (also the outputs we write into).
    const c1 = await sp.conv2d(x, W.conv1, W.conv1b, { stride: 2, padding: 1, relu: true });
    const l1 = await sp.localResponseNorm(c1, lrn);
    const p1 = await sp.maxPool2d(l1, pool);
    const c2 = await sp.conv2d(p1, W.conv2, W.conv2b, { stride: 2, padding: 1, relu: true });
    const l2 = await sp.localResponseNorm(c2, lrn);
    const p2 = await sp.maxPool2d(l2, pool);
    const c3 = await sp.conv2d(p2, W.conv3, W.conv3b, { padding: 1, relu: true });
    const c4 = await sp.conv2d(c3, W.conv4, W.conv4b, { padding: 1, relu: true });
    const c5 = await sp.conv2d(c4, W.conv5, W.conv5b, { padding: 1, relu: true });
    const s = await sp.spp(c5, { levels: [...sp.DEFAULT_LEVELS], bins: 'paper' });
    const f6 = opt.fc ? await sp.linear(s, W.fc6, W.fc6b, { relu: true }) : null;
    const f7 = opt.fc ? await sp.linear(f6, W.fc7, W.fc7b, { relu: true }) : null;
    const f8 = opt.fc ? await sp.linear(f7, W.fc8, W.fc8b) : null;
    const tiny = T(rand(16, 5), [16]);
    const tinyOut = T(new Float32Array(16), [16]);
    const rows = [
      ['conv1', () => sp.conv2d(x, W.conv1, W.conv1b, { stride: 2, padding: 1, relu: true, out: c1 }), c1],
      ['lrn1', () => sp.localResponseNorm(c1, { ...lrn, out: l1 }), l1],
      ['pool1', () => sp.maxPool2d(l1, { ...pool, out: p1 }), p1],
      ['conv2', () => sp.conv2d(p1, W.conv2, W.conv2b, { stride: 2, padding: 1, relu: true, out: c2 }), c2],
      ['lrn2', () => sp.localResponseNorm(c2, { ...lrn, out: l2 }), l2],
      ['pool2', () => sp.maxPool2d(l2, { ...pool, out: p2 }), p2],
      ['conv3', () => sp.conv2d(p2, W.conv3, W.conv3b, { padding: 1, relu: true, out: c3 }), c3],
      ['conv4', () => sp.conv2d(c3, W.conv4, W.conv4b, { padding: 1, relu: true, out: c4 }), c4],
      ['conv5', () => sp.conv2d(c4, W.conv5, W.conv5b, { padding: 1, relu: true, out: c5 }), c5],
      ['spp', () => sp.spp(c5, { levels: [...sp.DEFAULT_LEVELS], bins: 'paper', out: s }), s],
      ...(opt.fc
        ? [
            ['fc6', () => sp.linear(s, W.fc6, W.fc6b, { relu: true, out: f6 }), f6],
            ['fc7', () => sp.linear(f6, W.fc7, W.fc7b, { relu: true, out: f7 }), f7],
            ['fc8', () => sp.linear(f7, W.fc8, W.fc8b, { out: f8 }), f8],
          ]
        : []),
      ['call (relu 16)', () => sp.relu(tiny, { out: tinyOut }), tinyOut],
    ];
    const sum = { ms: 0, exMs: 0, ...(kernels ? { gpuMs: 0 } : {}) };
    console.log(`batch ${N}: median wall time, and of it on the ${device} executor${kernels ? ', and in kernels on the GPU' : ''}`);
    for (const [name, f, t] of opt.modelOnly ? [] : rows) {
      const m = await med(f, reps, device);
      if (!name.startsWith('call')) {
        sum.ms += m.ms;
        sum.exMs += m.exMs;
        if (sum.gpuMs !== undefined) sum.gpuMs += m.gpuMs;
      }
      results.push({ batch: N, name, ...m });
      console.log(row(name, m, `   out [${t.shape.join(',')}]`));
    }
    if (sum.ms) console.log(row('sum of layers', sum));
    const model = await sp.buildModel({
      spec: {
        name: 'zf5-anchor', inChannels: 3,
        layers: [
          { type: 'conv', name: 'conv1', out: 96, kernel: 7, stride: 2, padding: 1, relu: true }, { type: 'lrn', ...lrn }, { type: 'maxpool', ...pool },
          { type: 'conv', name: 'conv2', out: 256, kernel: 5, stride: 2, padding: 1, relu: true }, { type: 'lrn', ...lrn }, { type: 'maxpool', ...pool },
          { type: 'conv', name: 'conv3', out: 384, kernel: 3, padding: 1, relu: true }, { type: 'conv', name: 'conv4', out: 384, kernel: 3, padding: 1, relu: true },
          { type: 'conv', name: 'conv5', out: 256, kernel: 3, padding: 1, relu: true }, { type: 'spp', levels: [...sp.DEFAULT_LEVELS], bins: 'paper' },
        ],
      },
      seed: 1, device,
    });
    const whole = await med(async () => (await model.run(x)).dispose(), reps, device);
    results.push({ batch: N, name: 'Model.run conv1-5 + SPP', ...whole });
    console.log(row('Model.run', whole, '   conv1-5 + SPP'));
    model.dispose();
    if (opt.fc) {
      const zf5 = await sp.loadModel({ arch: 'zf5', device, seed: 1 });
      const all = await med(async () => (await zf5.run(x)).dispose(), reps, device);
      results.push({ batch: N, name: 'Model.run whole ZF-5', ...all });
      console.log(row('Model.run', all, '   the whole ZF-5 (zf5 arch, eval)'));
      zf5.dispose();
    }
  }
  if (opt.json) {
    const be = sp.backend();
    require('fs').writeFileSync(opt.json, JSON.stringify({ date: new Date().toISOString(), device, where, math: sp.getMath(), reps, backend: { device: be.device, reason: be.reason }, rows: results }, null, 1));
  }
}

main().catch((e) => {
  process.exitCode = failed(e);
});
