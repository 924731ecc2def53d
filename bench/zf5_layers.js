'use strict';
// Per-layer time of the anchor ZF-5 (bench/zf5.js) on the CPU, through the public layer calls
// (sp.conv2d, sp.localResponseNorm, sp.maxPool2d, sp.spp) with preallocated outputs, so each
// figure includes the call's JS and async overhead, as in Model.run. Also the whole chain via
// Model.run, and an empty-ish call (ReLU over 16 floats) for the per-call overhead.
//
//   node bench/zf5_layers.js [--batch N[,N...]] [--reps R] [--model-only]
//
// Medians of R timed calls (default 21) after 3 warm-ups, layer by layer (each layer's calls
// back to back, so its helper threads are warm, as in a network run).
const sp = require('../dist');
const { parseArgs, headerText, failed, timeRuns, percentile } = require('./common');

const OPTIONS = [
  { name: 'batch', type: 'ints', default: [1, 4], arg: 'N[,N...]', help: 'the batch sizes' },
  { name: 'reps', type: 'int', default: 21, arg: 'R', help: 'timed calls per layer (the median is shown)' },
  { name: 'model-only', type: 'flag', help: 'only the whole chain (Model.run), no layer rows' },
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

/** The median ms of `reps` calls of f after 3 warm-ups (its outputs are preallocated: nothing disposed). */
async function med(f, reps) {
  return percentile((await timeRuns(f, { reps, warmup: 3, dispose: false })).samples, 0.5);
}

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 1, 10) });
  const batches = opt.batch;
  const reps = opt.reps;
  const convs = { conv1: [96, 3, 7], conv2: [256, 96, 5], conv3: [384, 256, 3], conv4: [384, 384, 3], conv5: [256, 384, 3] };
  const W = {};
  let seed = 1;
  for (const [n, [o, i, k]] of Object.entries(convs)) {
    W[n] = sp.tensor(rand(o * i * k * k, seed++).map((v) => v * Math.sqrt(6 / (i * k * k))), [o, i, k, k]);
    W[n + 'b'] = sp.tensor(rand(o, seed++).map((v) => v * 0.1), [o]);
  }
  const lrn = { size: 5, alpha: 1e-4, beta: 0.75, k: 1 };
  const pool = { kernel: 3, stride: 2, padding: 1 };
  console.log(`ZF-5 (anchor) per layer, ${sp.backend().cpu?.isa ?? ''} median of ${reps} ms; load ${require('os').loadavg().map((v) => v.toFixed(2)).join(' ')}`);
  for (const N of batches) {
    const x = sp.tensor(rand(N * 3 * 224 * 224, 99), [N, 3, 224, 224]);
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
    const tiny = sp.tensor(rand(16, 5), [16]);
    const tinyOut = sp.tensor(new Float32Array(16), [16]);
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
      ['call (relu 16)', () => sp.relu(tiny, { out: tinyOut }), tinyOut],
    ];
    let sum = 0;
    console.log(`batch ${N}`);
    for (const [name, f, t] of opt.modelOnly ? [] : rows) {
      const ms = await med(f, reps);
      if (!name.startsWith('call')) sum += ms;
      console.log(`  ${name.padEnd(15)} ${ms.toFixed(3).padStart(8)} ms   out [${t.shape.join(',')}]`);
    }
    if (sum) console.log(`  ${'sum of layers'.padEnd(15)} ${sum.toFixed(3).padStart(8)} ms`);
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
      seed: 1, device: 'cpu',
    });
    const whole = await med(async () => (await model.run(x)).dispose(), reps);
    console.log(`  ${'Model.run'.padEnd(15)} ${whole.toFixed(3).padStart(8)} ms`);
    model.dispose();
  }
}

main().catch((e) => {
  process.exitCode = failed(e);
});
