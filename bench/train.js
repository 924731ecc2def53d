'use strict';
// One training step on the CPU: sppnet's Model.trainStep against TensorFlow.js (wasm backend,
// threaded SIMD build, the same thread count as sppnet), images/s per step.
//
//   node bench/train.js [--quick] [--only zf5,small,ragged] [--wasm-threads N] [--seed S] [--out DIR]
//
// Prints one table; writes DIR/train-cpu.md and DIR/train-cpu.json (DIR defaults to bench/out).
//
// A step = forward in training mode (dropout on) + softmax cross-entropy (mean over the batch) +
// backward + SGD update (momentum 0.9, weight decay 5e-4, PyTorch's rule: v = 0.9 v + (g + 5e-4 w);
// w -= lr v; lr 0.01, ZF-5 0.001: see LR), on the same batch every step.
//
// Workloads:
//   zf5     sp.archSpec('zf5', 10): conv1 96x7x7 s2 p1, LRN 5, maxpool 3 s2 p1; conv2 256x5x5 s2 p1,
//           LRN 5, maxpool 3 s2; conv3-5 3x3 p1 (384, 384, 256); SPP {6,3,2,1} on the 13x13 map;
//           fc6 4096 + dropout, fc7 4096 + dropout, fc8 10. Batch 4 x 224 x 224.
//   small   sp.ablationSpec('spp', 4, [4,2,1], 8): conv 32x5x5 s2 p2, maxpool 2, conv 64x3x3 p1,
//           maxpool 2, conv 64x3x3 p1, SPP {4,2,1} on the 8x8 map, fc 128, fc 4. Batch 32 x 64 x 64.
//   ragged  the small net on 32 images of natural sizes, sides drawn from 40..112 (seeded), one
//           RaggedBatch, one trainStep. sppnet only: a tfjs step takes one input shape (n/a).
//
// The tfjs peer is the same network written with tf ops on NHWC data (see tfNet below): explicit
// tf.pad for the convs' and pools' PyTorch paddings (pools padded with -Infinity), 'valid' convs
// and pools, tf.localResponseNormalization(depthRadius 2, bias k, alpha alpha/5) (= PyTorch's
// LRN), the pyramid as one 'valid' maxPool per level with the paper's windows (ceil(a/n) window,
// floor(a/n) stride: on these maps the same bins as sppnet's adaptive rule), each level transposed
// to channel-major and flattened (PyTorch's order), concat, fc layers, tf.dropout(0.5) in ZF-5.
// Gradients from tf.variableGrads, the weight-decay term added to each gradient, then
// tf.train.momentum(0.01, 0.9).applyGradients. tfjs-backend-wasm 4.22 has no
// Conv2DBackpropFilter kernel, so each conv carries a tf.customGrad: the input gradient through
// tf.conv2dTranspose (Conv2DBackpropInput, which wasm has), the filter gradient as a stride-1
// conv2d of the (transposed) input with the (transposed) output gradient dilated by the stride
// (the standard identity; same multiply-adds as the kernel; checked against tfjs-cpu's
// Conv2DBackpropFilter at start-up). conv1's input gradient is not computed (nor is sppnet's).
//
// What is timed: the whole step, from the call until the loss is on the host (sppnet's trainStep
// resolves after the update; tfjs-wasm kernels run synchronously and the loss is read with
// dataSync). One warm-up step, then several timed steps; medians. FLOPs: forward = 2 x the conv
// and fc multiply-adds; a training step counted as 3 x forward (forward, input gradient, weight
// gradient); GFLOP/s = that / median.
const os = require('os');
const path = require('path');
const sp = require('../dist');
const tf = require('@tensorflow/tfjs');
const { startTfjs } = require('./tfjs_wasm');
const { benchStart, failed, commandLine, machineInfo, timeRuns, writeResults, buildInfo, rng, randomArray, nowMs, textTable, mdTable, implRows, toNHWC, specFlops, pair, fmtMs, fmtX } = require('./common');

const OPT = { type: 'sgd', lr: 0.01, momentum: 0.9, weightDecay: 5e-4 };
// ZF-5 on a fixed random batch diverges at lr 0.01 (loss ~1e5 by step 6, NaN by step 9: sppnet's
// trainStep then throws); its steps use lr 0.001. The learning rate does not change the work.
const LR = { zf5: 0.001, small: 0.01, ragged: 0.01 };
const PEER_SLOW_S = 20; // a tfjs warm-up step longer than this gets no timed steps

// Timed steps after one warm-up step.
const REPS = {
  full: { zf5: { ours: 5, tfjs: 3 }, small: { ours: 9, tfjs: 7 }, ragged: { ours: 9 } },
  quick: { zf5: { ours: 3, tfjs: 2 }, small: { ours: 5, tfjs: 3 }, ragged: { ours: 5 } },
};

const OPTIONS = [
  { name: 'quick', type: 'flag', help: 'fewer timed steps' },
  { name: 'only', type: 'list', choices: ['zf5', 'small', 'ragged'], default: ['zf5', 'small', 'ragged'], arg: 'zf5,small,ragged', help: 'these workloads only' },
  { name: 'wasm-threads', type: 'int', default: null, help: "tfjs-wasm's threads (default: as many as sppnet's)" },
  { name: 'seed', type: 'int', default: 7, arg: 'S', help: 'seed of the weights, images and labels' },
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), arg: 'DIR', help: 'where train-cpu.md and .json go' },
];

// ---------------------------------------------------------------------------------------------
// FLOPs

/** Forward FLOPs (2 per multiply-add, conv + fc) of one H x W image through `spec`, and the last map size. */
// ---------------------------------------------------------------------------------------------
// The tfjs peer

/** tf.conv2d with PyTorch's symmetric padding and a gradient that tfjs-wasm can run (see the header). */
function makeConv(stride, padding, needDx) {
  return tf.customGrad((x, w, save) => {
    const xp = padding ? tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]]) : x;
    save([xp, w]);
    const y = tf.conv2d(xp, w, stride, 'valid');
    return {
      value: y,
      gradFunc: (dy, [xpS, wS]) => {
        const [KH, KW] = wS.shape;
        const [, Hp, Wp] = xpS.shape;
        const [, OH, OW] = dy.shape;
        // dW[kh, kw, ci, co] = sum_{n, oh, ow} xp[n, oh*s + kh, ow*s + kw, ci] dy[n, oh, ow, co]
        const dw = tf.tidy(() => {
          const xt = tf.transpose(xpS, [3, 1, 2, 0]);          // [Ci, Hp, Wp, N]
          const dyt = tf.transpose(dy, [1, 2, 0, 3]);           // [OH, OW, N, Co] as a filter
          const g = tf.conv2d(xt, dyt, 1, 'valid', 'NHWC', stride); // [Ci, Hp-(OH-1)s, Wp-(OW-1)s, Co]
          const gs = g.shape[1] === KH && g.shape[2] === KW ? g : tf.slice(g, [0, 0, 0, 0], [-1, KH, KW, -1]);
          return tf.transpose(gs, [1, 2, 0, 3]);                // [KH, KW, Ci, Co]
        });
        let dx;
        if (!needDx) dx = tf.zeros(x.shape);
        else {
          const dxp = tf.conv2dTranspose(dy, wS, [xpS.shape[0], Hp, Wp, xpS.shape[3]], stride, 'valid');
          dx = padding ? tf.slice(dxp, [0, padding, padding, 0], [-1, Hp - 2 * padding, Wp - 2 * padding, -1]) : dxp;
        }
        void OH, OW;
        return [dx, dw];
      },
    };
  });
}

/**
 * The network of `spec` in tf ops: variables (from sppnet's state dict, so both start equal) and
 * a loss function of (x NHWC, one-hot labels, training).
 */
function tfNet(spec, sd) {
  const vars = [];
  const layers = [];
  let first = true;
  for (const l of spec.layers) {
    if (l.type === 'conv') {
      const { shape: [O, I, KH, KW], data } = sd.get(`${l.name}.weight`);
      const hwio = new Float32Array(data.length);
      for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) for (let y = 0; y < KH; y++) for (let x = 0; x < KW; x++) hwio[((y * KW + x) * I + i) * O + o] = data[((o * I + i) * KH + y) * KW + x];
      const w = tf.variable(tf.tensor4d(hwio, [KH, KW, I, O]), true, `${l.name}.weight`);
      const b = tf.variable(tf.tensor1d(sd.get(`${l.name}.bias`).data), true, `${l.name}.bias`);
      vars.push(w, b);
      const [s] = pair(l.stride, 1), [p] = pair(l.padding, 0);
      const conv = makeConv(s, p, !first);
      const relu = l.relu !== false;
      layers.push((x) => { const y = tf.add(conv(x, w), b); return relu ? tf.relu(y) : y; });
      first = false;
    } else if (l.type === 'lrn') {
      const r = (l.size - 1) / 2;
      layers.push((x) => tf.localResponseNormalization(x, r, l.k, l.alpha / l.size, l.beta));
    } else if (l.type === 'maxpool') {
      const [k] = pair(l.kernel, 1), [s] = pair(l.stride ?? l.kernel, 1), [p] = pair(l.padding, 0);
      layers.push((x) => tf.maxPool(p ? tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], -Infinity) : x, k, s, 'valid'));
    } else if (l.type === 'spp') {
      layers.push((x) => {
        const [N, H, W, C] = x.shape;
        const parts = l.levels.map((n) => {
          const win = [Math.ceil(H / n), Math.ceil(W / n)], st = [Math.floor(H / n), Math.floor(W / n)];
          const pooled = tf.maxPool(x, win, st, 'valid');
          if (pooled.shape[1] !== n || pooled.shape[2] !== n) throw new Error(`tfjs pyramid: level ${n} on ${H}x${W} gives ${pooled.shape[1]}x${pooled.shape[2]}`);
          return tf.reshape(tf.transpose(pooled, [0, 3, 1, 2]), [N, C * n * n]); // channel-major, as PyTorch flattens
        });
        return parts.length === 1 ? parts[0] : tf.concat(parts, 1);
      });
    } else if (l.type === 'fc') {
      const { shape: [O, I], data } = sd.get(`${l.name}.weight`);
      const t = new Float32Array(data.length); // [I, O]
      for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) t[i * O + o] = data[o * I + i];
      const w = tf.variable(tf.tensor2d(t, [I, O]), true, `${l.name}.weight`);
      const b = tf.variable(tf.tensor1d(sd.get(`${l.name}.bias`).data), true, `${l.name}.bias`);
      vars.push(w, b);
      const relu = l.relu === true;
      layers.push((x) => { const y = tf.add(tf.matMul(x, w), b); return relu ? tf.relu(y) : y; });
    } else if (l.type === 'dropout') {
      if (l.p > 0) layers.push((x, training) => (training ? tf.dropout(x, l.p) : x));
    } else if (l.type === 'relu') {
      layers.push((x) => tf.relu(x));
    } else throw new Error(`tfNet: layer type ${l.type} not handled`);
  }
  const logits = (x, training) => layers.reduce((h, f) => f(h, training), x);
  const loss = (x, y, training) => tf.losses.softmaxCrossEntropy(y, logits(x, training));
  return { vars, logits, loss };
}

/** One SGD-momentum step in tfjs: loss, gradients (+ weight decay), update; returns the loss. */
function tfStepper(net, x, y, lr) {
  const opt = tf.train.momentum(lr, OPT.momentum);
  const step = () => {
    const l = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => net.loss(x, y, true), net.vars);
      const named = {};
      for (const v of net.vars) named[v.name] = tf.add(grads[v.name], tf.mul(v, OPT.weightDecay));
      opt.applyGradients(named);
      return value;
    });
    const v = l.dataSync()[0];
    l.dispose();
    return v;
  };
  return { step, dispose: () => opt.dispose() };
}

/** The conv filter gradient of makeConv (wasm) against tfjs-cpu's own Conv2DBackpropFilter. */
async function checkConvGrad() {
  const next = rng(99);
  const cases = [[2, 3, 13, 7, 5, 2, 1], [2, 4, 11, 8, 3, 1, 1], [3, 3, 17, 6, 5, 2, 2]]; // N, Ci, H, Co, K, stride, pad
  let worst = 0;
  const grads = async (backend, N, Ci, H, Co, K, s, p, xs, ws, dys) => {
    await tf.setBackend(backend);
    const x = tf.tensor4d(xs, [N, H, H, Ci]), w = tf.tensor4d(ws, [K, K, Ci, Co]);
    const f = backend === 'cpu'
      ? (a, b) => tf.conv2d(tf.pad(a, [[0, 0], [p, p], [p, p], [0, 0]]), b, s, 'valid')
      : makeConv(s, p, true);
    const y = f(x, w);
    const dy = tf.tensor4d(dys(y.size), y.shape);
    const g = tf.grads((a, b) => tf.sum(tf.mul(f(a, b), dy)))([x, w]);
    const out = [await g[0].data(), await g[1].data()];
    tf.dispose([x, w, y, dy, ...g]);
    return out;
  };
  for (const [N, Ci, H, Co, K, s, p] of cases) {
    const xs = randomArray(N * H * H * Ci, next), ws = randomArray(K * K * Ci * Co, next);
    let dyv = null;
    const dys = (n) => (dyv ??= randomArray(n, next));
    const a = await grads('cpu', N, Ci, H, Co, K, s, p, xs, ws, dys);
    const b = await grads('wasm', N, Ci, H, Co, K, s, p, xs, ws, dys);
    for (let k = 0; k < 2; k++) {
      let d = 0, m = 0;
      for (let i = 0; i < a[k].length; i++) { d = Math.max(d, Math.abs(a[k][i] - b[k][i])); m = Math.max(m, Math.abs(a[k][i])); }
      worst = Math.max(worst, d / m);
    }
  }
  return worst;
}

// ---------------------------------------------------------------------------------------------


const fmtLoss = (v) => (v == null ? '-' : Math.abs(v) >= 1e4 ? v.toExponential(1) : v.toFixed(3));

const HEAD = ['workload', 'implementation', 'steps', 'median ms/step', 'min ms', 'images/s', 'peer / sppnet', 'GFLOP/step', 'GFLOP/s'];

function tableRows(results) {
  return implRows(results, (r, impl, s) => [
    s ? fmtMs(impl.imgPerS) : '-',
    impl.ratio != null ? fmtX(impl.ratio) : impl.base && s ? '1.0x' : '-',
    (r.trainGflop).toFixed(r.trainGflop >= 10 ? 1 : 2),
    s ? fmtMs(impl.gflops) : '-',
  ]);
}

async function main() {
  const { opt, reps, be, cores, oursThreads, tStart } = benchStart(__filename, 1, 8, OPTIONS, REPS);
  const wasmInfo = await startTfjs(tf, opt.wasmThreads ?? oursThreads);
  const machine = {
    ...machineInfo(),
    sppnet: { device: 'cpu', isa: be.cpu.isa, threads: oursThreads },
    tfjs: { version: tf.version.tfjs, wasm: wasmInfo },
    mode: opt.quick ? 'quick' : 'full',
    build: buildInfo(),
    shared: `${cores} cores shared with other jobs`,
    loadavgStart: os.loadavg(),
  };
  console.log(`sppnet training-step CPU bench, ${machine.date}`);
  console.log(`machine: ${machine.cpu}, ${cores} cores, ${machine.memGiB} GiB; node ${machine.node}. The cores are shared with other jobs: absolute figures are noisy, only ratios from the same run count.`);
  console.log(`sppnet: cpu, ${be.cpu.isa}, ${oursThreads} threads; build ${machine.build.addonMtime} (addon mtime), commit ${machine.build.commit}${machine.build.dirty ? ' + local changes' : ''}`);
  console.log(`tfjs ${machine.tfjs.version}: wasm ${wasmInfo.build}, ${wasmInfo.threads} thread(s); prod mode`);
  console.log(`optimizer: SGD lr ${LR.small} (ZF-5: ${LR.zf5}), momentum ${OPT.momentum}, weight decay ${OPT.weightDecay}`);
  if (machine.loadavgStart[0] > 0.7) console.log(`warning: 1-minute load average ${machine.loadavgStart[0].toFixed(2)} before the run: other processes are busy; figures will be noisy`);

  process.stdout.write('check: tfjs-wasm conv gradients (customGrad) vs tfjs-cpu Conv2DBackpropFilter/Input ... ');
  const convGradRel = await checkConvGrad();
  console.log(`max relative diff ${convGradRel.toExponential(2)}`);
  await tf.setBackend('wasm');

  const next = rng(opt.seed);
  const zf5Spec = sp.archSpec('zf5', 10);
  const smallSpec = sp.ablationSpec('spp', 4, [4, 2, 1], 8);
  const ragSizes = Array.from({ length: 32 }, () => [40 + Math.floor(73 * next()), 40 + Math.floor(73 * next())]);
  const all = {
    zf5: { name: 'ZF-5 4x224', desc: "archSpec('zf5', 10), batch 4 x 224x224, 10 classes, fc6-8 included", spec: zf5Spec, N: 4, sizes: Array(4).fill([224, 224]), classes: 10 },
    small: { name: 'small 32x64', desc: "ablationSpec('spp', 4, [4,2,1], 8), batch 32 x 64x64, 4 classes", spec: smallSpec, N: 32, sizes: Array(32).fill([64, 64]), classes: 4 },
    ragged: { name: 'small ragged 32', desc: "the small net, 32 images of natural sizes 40..112 (one RaggedBatch)", spec: smallSpec, N: 32, sizes: ragSizes, classes: 4, ragged: true },
  };
  console.log(`ragged batch (seed ${opt.seed}), HxW: ${ragSizes.map(([h, w]) => `${h}x${w}`).join(', ')}`);
  console.log('');

  const results = [];
  const notes = [];
  for (const key of opt.only) {
    const w = all[key];
    const r = reps[key];
    const fwd = w.sizes.reduce((s, [h, wd]) => s + specFlops(w.spec, h, wd).total, 0);
    const res = { key, name: w.name, desc: w.desc, images: w.N, sizes: w.sizes, forwardGflop: fwd / 1e9, trainGflop: (3 * fwd) / 1e9, impls: [] };
    const labels = Int32Array.from({ length: w.N }, (_, i) => i % w.classes);
    const data = w.sizes.map(([h, wd]) => randomArray(3 * h * wd, next));
    const derive = (impl) => {
      if (!impl.stats) return impl;
      impl.imgPerS = (w.N / impl.stats.medianMs) * 1e3;
      impl.gflops = (3 * fwd) / impl.stats.medianMs / 1e6;
      return impl;
    };

    process.stdout.write(`${w.name}: sppnet ... `);
    const model = await sp.buildModel({ spec: w.spec, seed: 1, device: 'cpu' });
    const sd = await model.stateDict();
    model.setOptimizer({ ...OPT, lr: LR[key] });
    let x;
    if (w.ragged) x = sp.ragged(data.map((a, i) => sp.tensor(a, [3, ...w.sizes[i]], { device: 'cpu' })));
    else {
      const [H, W] = w.sizes[0];
      const dense = new Float32Array(w.N * 3 * H * W);
      data.forEach((a, i) => dense.set(a, i * a.length));
      x = sp.tensor(dense, [w.N, 3, H, W], { device: 'cpu' });
    }
    let t = await timeRuns(() => model.trainStep(x, labels), { reps: r.ours, keep: true });
    const base = derive({ label: `sppnet cpu ${oursThreads}T`, base: true, stats: t.stats, warmupMs: t.warmupMs, lossFirst: t.first.loss, lossLast: t.last.loss });
    res.impls.push(base);
    x.dispose();
    model.dispose();

    const label = `tfjs-wasm ${wasmInfo.threads}T`;
    if (w.ragged) {
      res.impls.push({ label, backend: 'wasm', note: 'n/a: one input shape per step' });
    } else {
      process.stdout.write('tfjs-wasm ... ');
      const [H, W] = w.sizes[0];
      const dense = new Float32Array(w.N * 3 * H * W);
      data.forEach((a, i) => dense.set(a, i * a.length));
      const net = tfNet(w.spec, sd);
      const tx = tf.tensor4d(toNHWC(dense, w.N, 3, H, W), [w.N, H, W, 3]);
      const ty = tf.oneHot(tf.tensor1d(labels, 'int32'), w.classes).toFloat();
      // Same network and weights? The initial loss without dropout, both sides.
      const tfLoss0 = tf.tidy(() => net.loss(tx, ty, false).dataSync()[0]);
      const m0 = await sp.buildModel({ spec: w.spec, seed: 1, device: 'cpu' });
      const x0 = sp.tensor(dense, [w.N, 3, H, W], { device: 'cpu' });
      const lg = await m0.run(x0);
      const L = await lg.data();
      lg.dispose(); x0.dispose(); m0.dispose();
      let sppLoss0 = 0;
      for (let i = 0; i < w.N; i++) {
        const row = L.subarray(i * w.classes, (i + 1) * w.classes);
        const mx = Math.max(...row);
        const lse = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0));
        sppLoss0 += (lse - row[labels[i]]) / w.N;
      }
      res.check = { sppnetLoss0: sppLoss0, tfjsLoss0: tfLoss0, relDiff: Math.abs(sppLoss0 - tfLoss0) / Math.abs(sppLoss0) };
      const st = tfStepper(net, tx, ty, LR[key]);
      t = await timeRuns(st.step, { reps: r.tfjs, giveUpS: PEER_SLOW_S, keep: true });
      const impl = { label, backend: 'wasm', stats: t.stats, warmupMs: t.warmupMs, lossFirst: t.first, lossLast: t.last };
      if (!impl.stats) {
        impl.note = `skipped: warm-up step ${(t.warmupMs / 1e3).toFixed(0)} s`;
        notes.push(`${w.name}: ${label} took ${(t.warmupMs / 1e3).toFixed(1)} s for its warm-up step (> ${PEER_SLOW_S} s), so no timed steps.`);
      }
      derive(impl);
      if (impl.stats) impl.ratio = impl.stats.medianMs / base.stats.medianMs; // = sppnet img/s / tfjs img/s
      res.impls.push(impl);
      st.dispose();
      tf.dispose([tx, ty, ...net.vars]);
    }
    results.push(res);
    console.log('done');
  }

  machine.loadavgEnd = os.loadavg();
  machine.seconds = (nowMs() - tStart) / 1e3;
  const rows = tableRows(results);
  const legend = [
    `One step = forward (dropout on) + softmax cross-entropy + backward + SGD update (momentum 0.9, weight decay 5e-4; lr ${LR.small}, ZF-5 ${LR.zf5}: at 0.01 ZF-5 diverges on a fixed random batch, NaN by step 9; the lr does not change the work), same batch every step; one warm-up step, then the median of the timed steps.`,
    ...results.map((r) => `${r.name}: loss over the steps ${r.impls.filter((i) => i.stats).map((i) => `${i.label} ${fmtLoss(i.lossFirst)} -> ${fmtLoss(i.lossLast)}`).join(', ')}.`),
    'peer / sppnet = tfjs median / sppnet median (= sppnet images/s over tfjs images/s), same run; > 1 means sppnet is faster.',
    'GFLOP/step = 3 x forward FLOPs (2 per multiply-add, conv + fc; forward, input gradient, weight gradient); GFLOP/s = that / median.',
    ...results.map((r) => `${r.name}: ${r.desc}; forward ${r.forwardGflop.toFixed(3)} GFLOP per batch.`),
    `tfjs-wasm has no Conv2DBackpropFilter kernel: the peer's conv filter gradient is a stride-1 dilated conv2d (same multiply-adds, plus transposes); checked against tfjs-cpu's kernels, max relative diff ${convGradRel.toExponential(1)}.`,
    ...results.filter((r) => r.check).map((r) => `${r.name}: same network and weights, initial loss without dropout: sppnet ${r.check.sppnetLoss0.toFixed(5)}, tfjs ${r.check.tfjsLoss0.toFixed(5)} (relative diff ${r.check.relDiff.toExponential(1)}).`),
    `Machine shared: ${cores} cores with other jobs running; load average ${machine.loadavgStart[0].toFixed(2)} before, ${machine.loadavgEnd[0].toFixed(2)} after. Absolute times are noisy; compare ratios within a run.`,
  ];
  console.log('\n' + textTable(HEAD, rows));
  console.log('');
  for (const l of legend) console.log(l);
  for (const n of notes) console.log(`note: ${n}`);
  console.log(`${machine.seconds.toFixed(0)} s in all`);

  const md = [
    '# One training step on the CPU: sppnet vs TensorFlow.js (wasm)',
    '',
    `${machine.date} — ${machine.cpu}, ${cores} cores (shared with other jobs), node ${machine.node}; mode ${machine.mode}; ${machine.seconds.toFixed(0)} s.`,
    `sppnet: ${be.cpu.isa}, ${oursThreads} threads, build ${machine.build.addonMtime}, commit ${machine.build.commit}${machine.build.dirty ? ' + local changes' : ''}. tfjs ${machine.tfjs.version}: wasm (${wasmInfo.build}, ${wasmInfo.threads} threads).`,
    `Ragged batch: ${ragSizes.map(([h, w]) => `${h}x${w}`).join(', ')}.`,
    '',
    mdTable(HEAD, rows),
    '',
    ...legend.map((l) => `- ${l}`),
    ...notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
  const command = commandLine(__filename);
  const json = { command, machine, optimizer: { ...OPT, lr: LR }, convGradCheckRelDiff: convGradRel, results, notes };
  console.log(`\n${writeResults(opt.out, 'train-cpu', json, md)}`);
  process.exit(0); // tfjs-wasm's pthread workers keep the event loop alive
}

main().catch((e) => process.exit(failed(e)));
