'use strict';
// bfloat16 fc weights (loadModel's linearWeights: 'bf16', sp.linear with a BF16Matrix) against
// FP32 ones, on this machine's CPU or the default device: the fc layers alone (fc6 12800 -> 4096,
// fc7 4096 -> 4096) and the whole ZF-5 (`arch: 'zf5'`, 1000 classes, 224 x 224), at 1 and 4
// images, with the weight-read floor and the logits' difference; and fc6 on many rows (256, and
// the 2,000 windows of a detection), where products bound the time: FP32, math 'bf16' (BF16
// products, on a CPU with AVX-512 BF16) on FP32 weights and on a BF16Matrix, against the FLOP floor.
//
//   node bench/bf16.js [--quick] [--rounds N] [--seed S] [--out DIR]
//
// Arms run interleaved (one call of each per round, after one warm-up call each), so both see the
// same machine; medians. floor = the fc weights' bytes / this machine's copy bandwidth (bench/
// membw.js: bytes read + written per second, 2 threads, best of 7), the time to read them once.
// Accuracy: the same image through both models; the largest logit difference relative to the
// largest logit, and whether the top-1 class agrees.
const path = require('path');
const sp = require('../dist');
const { copyBandwidth } = require('./membw');
const { amxProductsGranted, failed, parseArgs, headerText, machineInfo, buildInfo, nowMs, percentile, textTable, mdTable, writeResults, commandLine, fmtMs, fmtX, rng, randomArray } = require('./common');

const OPTIONS = [
  { name: 'quick', type: 'flag', help: '5 rounds; fc6 on 256 rows only' },
  { name: 'rounds', type: 'int', default: 15, help: 'timed calls of each arm' },
  { name: 'seed', type: 'int', default: 1, min: 0, help: 'weights and images' },
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), help: 'where bf16-<device>.{md,json} go' },
];

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 2, 7) });
  if (opt.quick) opt.rounds = 5;
  const device = sp.backend().device;
  const machine = { ...machineInfo(), build: buildInfo(), device, backend: sp.backend() };
  const bw = device === 'cpu' ? await copyBandwidth({ threads: 2 }) : null;
  const peak = device === 'cpu' ? await sp.measureCpuPeak({ threads: sp.backend().cpu.threads, seconds: 1 }) : null;
  const r = rng(opt.seed);
  const models = {};
  for (const lw of ['fp32', 'bf16']) models[lw] = await sp.loadModel({ arch: 'zf5', seed: opt.seed, device, linearWeights: lw });
  const images = Object.fromEntries([1, 4].map((n) => [n, sp.tensor(randomArray(n * 3 * 224 * 224, r), [n, 3, 224, 224], { device })]));
  // The fc layers alone: fc6 and fc7 of the FP32 model, as tensors and as BF16Matrix.
  const sd = await models.fp32.stateDict();
  const fc = {};
  for (const name of ['fc6', 'fc7']) {
    const w = sd.get(`${name}.weight`);
    const W = sp.tensor(w.data, w.shape, { device });
    fc[name] = { W, H: await sp.toBF16(W), b: sp.tensor(sd.get(`${name}.bias`).data, [w.shape[0]], { device }), in: w.shape[1], out: w.shape[0] };
  }
  const xs = Object.fromEntries([1, 4].map((n) => [n, sp.tensor(randomArray(n * 12800, r), [n, 12800], { device })]));
  const x7 = Object.fromEntries([1, 4].map((n) => [n, sp.tensor(randomArray(n * 4096, r), [n, 4096], { device })]));
  const fcBytes = (lw) => [...models.fp32.spec.layers].filter((l) => l.type === 'fc').reduce((s, l) => s + (lw === 'bf16' ? 2 : 4) * l.out * (l.name === 'fc6' ? 12800 : 4096), 0);

  const work = [];
  for (const n of [1, 4]) {
    for (const name of ['fc6', 'fc7']) {
      const f = fc[name], x = name === 'fc6' ? xs[n] : x7[n];
      for (const lw of ['fp32', 'bf16'])
        work.push({ group: `${name} ${n} row${n > 1 ? 's' : ''}`, arm: lw, bytes: (lw === 'bf16' ? 2 : 4) * f.in * f.out, fn: () => sp.linear(x, lw === 'bf16' ? f.H : f.W, f.b, { relu: true }) });
    }
    for (const lw of ['fp32', 'bf16']) work.push({ group: `ZF-5 whole, ${n}x224`, arm: lw, bytes: fcBytes(lw), fn: () => models[lw].run(images[n]) });
  }
  // fc6 on many rows: the products bound the time (floor: FLOPs / the FP32 FMA peak, half that with BF16 products).
  const many = {};
  for (const n of opt.quick ? [256] : [256, 2000]) {
    many[n] = sp.tensor(randomArray(n * 12800, r), [n, 12800], { device });
    const f = fc.fc6, flops = 2 * n * f.in * f.out;
    for (const [arm, W, math] of [['fp32', f.W, 'fp32'], ['fp32 w, bf16 math', f.W, 'bf16'], ['bf16', f.H, 'fp32'], ['bf16 w, bf16 math', f.H, 'bf16']])
      work.push({ group: `fc6 ${n} rows`, arm, flops, bf16Products: math === 'bf16' && device === 'cpu' && sp.backend().cpu.bf16, fn: () => sp.linear(many[n], W, f.b, { relu: true, math }) });
  }
  for (const w of work) (await w.fn()).dispose(); // warm-up
  const samples = work.map(() => []);
  for (let round = 0; round < opt.rounds; round++)
    for (let i = 0; i < work.length; i++) {
      const t0 = nowMs();
      const y = await work[i].fn();
      samples[i].push(nowMs() - t0);
      y.dispose();
    }
  const rows = [];
  const floorOf = (w) => (w.flops ? (peak ? (1e3 * w.flops) / (peak.gflops * 1e9 * (w.bf16Products ? 2 : 1)) : null) : bw ? (1e3 * w.bytes) / bw.bestBytesPerS : null);
  const results = work.map((w, i) => ({ group: w.group, arm: w.arm, medianMs: percentile(samples[i], 0.5), minMs: Math.min(...samples[i]), samples: samples[i], weightBytes: w.bytes ?? null, flops: w.flops ?? null, bf16Products: w.bf16Products ?? false, floorMs: floorOf(w) }));
  for (const res of results) {
    const fp = results.find((q) => q.group === res.group && q.arm === 'fp32');
    const size = res.flops ? `${(res.flops / 1e9).toFixed(0)} GFLOP` : `${(res.weightBytes / 2 ** 20).toFixed(0)} MiB`;
    rows.push([res.group, res.arm, String(opt.rounds), fmtMs(res.medianMs), fmtMs(res.minMs), size, res.floorMs == null ? '-' : fmtMs(res.floorMs), res.floorMs == null ? '-' : `${((100 * res.floorMs) / res.medianMs).toFixed(0)}%`, res.arm !== 'fp32' ? fmtX(fp.medianMs / res.medianMs) : '']);
  }
  // Accuracy on the 4 images.
  const a = await (await models.fp32.run(images[4])).data(), b = await (await models.bf16.run(images[4])).data();
  let d = 0, m = 0, agree = 0;
  for (let i = 0; i < a.length; i++) (d = Math.max(d, Math.abs(a[i] - b[i]))), (m = Math.max(m, Math.abs(a[i])));
  const argmax = (v, o) => { let k = 0; for (let j = 1; j < 1000; j++) if (v[o + j] > v[o + k]) k = j; return k; };
  for (let i = 0; i < 4; i++) agree += argmax(a, 1000 * i) === argmax(b, 1000 * i) ? 1 : 0;
  const accuracy = { maxAbsDiff: d, maxAbsLogit: m, relative: d / m, top1Agree: `${agree}/4` };

  const HEAD = ['work', 'arm', 'runs', 'median ms', 'min ms', 'weights / work', 'floor ms', '% floor', 'fp32 / arm'];
  const legend = [
    `floor = the weights' bytes / ${bw ? `${(bw.bestBytesPerS / 1e9).toFixed(1)} GB/s (copy bandwidth, 2 threads, best of 7)` : '(no bandwidth measured on this device)'}; for the whole network, the fc layers' weights only (the convs' 15 MiB are FP32 in both${device === 'cpu' && sp.backend().cpu.settings.amx ? '; the convs of both arms multiply as bf16x3 on AMX tiles (SPPNET_AMX=1)' : ''}${device === 'cpu' && sp.getMath().conv === 'bf16' ? "; the convs of both arms in math 'bf16' (SPPNET_MATH)" : ''}).`,
    `fc6 on many rows: floor = FLOPs / ${peak ? `${peak.gflops.toFixed(0)} GFLOP/s (sp.measureCpuPeak: ${peak.isa} FMAs, ${peak.threads} threads)` : '(no peak measured on this device)'}, twice that for BF16 products (vdpbf16ps: 32 products a zmm instruction against 16 FMAs)${device === 'cpu' ? `; this CPU ${sp.backend().cpu.bf16 ? 'has' : 'has no'} BF16 products${amxProductsGranted(sp.backend()) ? ', and takes them on AMX tiles (16 x 16 x 32 products an instruction: the floor is not theirs)' : ''}` : ''}. 'bf16 w': a BF16Matrix weight.`,
    `fp32 / arm: the FP32 arm's median over this arm's (> 1: faster), same run, interleaved.`,
    `logits, 4 images: max |fp32 - bf16| ${d.toExponential(2)} of max |logit| ${m.toExponential(2)} (${(100 * accuracy.relative).toFixed(2)}%); top-1 agrees on ${accuracy.top1Agree} (random weights: the logits are close together).`,
  ];
  console.log(textTable(HEAD, rows));
  legend.forEach((l) => console.log(l));
  const md = [`# bfloat16 fc weights on ${device}`, '', `${machine.date} — ${machine.cpu}, ${machine.cores} cores, node ${machine.node}, commit ${machine.build.commit}${machine.build.dirty ? ' + local changes' : ''}.`, '', mdTable(HEAD, rows), '', ...legend.map((l) => `- ${l}`), ''].join('\n');
  console.log(writeResults(opt.out, `bf16-${device}`, { command: commandLine(__filename), machine, bandwidth: bw, peak, results, accuracy }, md));
  for (const m2 of Object.values(models)) m2.dispose();
}

main().catch((e) => process.exit(failed(e)));
