#!/usr/bin/env node
// Runs every CUDA kernel of sppnet at least once, on small ragged inputs, for compute-sanitizer
// (memcheck, racecheck, synccheck: scripts/gpu-run.sh) and as a first smoke test on a new GPU.
// Each op runs on the device in use and on the CPU with the same inputs, and the results are
// compared (loosely: the numerical checks live in the test suite; this catches a kernel that
// writes garbage, nothing, or NaN). One line per op; the last line counts them. Exit 1 on any
// error or disagreement.
//
//   SPPNET_DEVICE=cuda node scripts/gpu-touch.js
//   SPPNET_DEVICE=cpu node scripts/gpu-touch.js    # the same calls on the CPU: a smoke test of this script (CI)
//
// Kernels (cuda/*.cu) and the ops below that launch them:
//   spp_forward_kernel / spp_backward_kernel <max, avg>: spp, sppBackward (shared-memory and
//     global paths, per-thread and per-warp bins, every bin rule, windows)
//   conv_tc_kernel <64|128, tf32|bf16>, <64, fp32>, conv_splitk_reduce_kernel, conv2d_kernel
//     (direct): conv2d
//   gemm_tc_kernel <64|128, tf32|bf16>, <64, fp32>, splitk_reduce_kernel, linear_kernel (direct),
//     linear_gemv_kernel <1|2|4|8> (at most 8 rows): linear
//   linear_bf16_kernel: linear with a BF16Matrix weight (sp.toBF16)
//   max_pool2d_kernel, lrn_kernel, lrn_max_pool2d_kernel, relu_kernel, softmax_kernel
//   conv2d_dx/dw/db, max_pool2d_backward, lrn_backward, linear_dx/dw/db, relu_backward,
//   dropout_kernel, multiply_kernel (dropoutBackward), softmax_xent_kernel, sgd_kernel, adam_kernel
//   channel_sums_kernel, channel_affine_kernel: batchNormTrain, batchNormBackward (copyChannels, behind
//   concat, launches no kernel: cudaMemcpyAsync)
//   nms_mask_kernel, nms_reduce_kernel: nms, batchedNms
//   crop_resize_kernel: cropResize (windows inside, across and outside ragged images, context)
// The 128-row tiles and split-K are picked by conv_plan / gemm_plan (cuda/gemm_tc_kernels.cuh):
// 128 rows once the 128-row tiles reach two waves (2 x the SM count), except in fp32 (always 64),
// split-K below that with >= 16 steps of K (BK = 16). The sizes below are chosen from the device's
// SM count to hit both.
'use strict';
const sp = require('../dist');

const be = sp.backend();
const dev = be.device;
const sms = be.cuda.multiprocessors || 132; // the CPU run sizes as for an H100
const BK = 16, BN = 128;

let seed = 12345;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const normal = (n, scale = 1) => Float32Array.from({ length: n }, () => (rnd() + rnd() + rnd() - 1.5) * 2 * scale);

// Host maps [C, H, W], and a batch of them on a device (a copy: CPU tensors share their array).
const maps = (C, sizes) => sizes.map(([h, w]) => ({ C, h, w, data: normal(C * h * w) }));
const batchOn = (ms, d) => {
  const parts = ms.map((m) => sp.tensor(m.data.slice(), [m.C, m.h, m.w], { device: d }));
  const b = sp.ragged(parts); // a copy: the parts are freed here, not left to the GC
  parts.forEach((t) => t.dispose());
  return b;
};
const T = (data, shape, d) => sp.tensor(data.slice(), shape, { device: d });
const arrays = async (xs) => Promise.all(xs.map(async (x) => (typeof x === 'number' ? Float32Array.of(x) : x.data())));
const dispose = (xs) => xs.forEach((x) => x && typeof x.dispose === 'function' && x.dispose());

let ops = 0, failed = 0;
function line(ok, name, detail) {
  ops += 1;
  if (!ok) failed += 1;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
}

/** Largest |got - want| / (1 + max |want|) over all outputs; Infinity where NaN-ness differs. */
function diff(got, want) {
  let worst = 0;
  for (let k = 0; k < want.length; k++) {
    const a = got[k], b = want[k];
    if (a.length !== b.length) return Infinity;
    let scale = 1;
    for (const v of b) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < b.length; i++) {
      if (Number.isNaN(a[i]) !== Number.isNaN(b[i])) return Infinity;
      if (!Number.isNaN(b[i])) worst = Math.max(worst, Math.abs(a[i] - b[i]) / scale);
    }
  }
  return worst;
}

/** Runs fn(device) on the device and on the CPU, with the same random draws; compares every output. */
async function op(name, tol, fn) {
  const start = seed;
  try {
    const got = await fn(dev);
    const a = await arrays(got);
    dispose(got);
    seed = start;
    const ref = await fn('cpu');
    const b = await arrays(ref);
    dispose(ref);
    const d = diff(a, b);
    line(d <= tol, name, `${a.reduce((s, x) => s + x.length, 0)} values, max diff vs cpu ${d.toExponential(1)} (tolerance ${tol})`);
  } catch (e) {
    line(false, name, (e && e.stack) || String(e));
  }
}

const TOL = { direct: 1e-4, fp32: 1e-4, tf32: 5e-3, bf16: 5e-2 };

async function main() {
  console.log(`gpu-touch: device ${dev} (${be.reason}); ${sms} SMs`);
  const startBuffers = sp.memory().deviceBuffers;

  // ---- SPP: one map too large for shared memory (120x110 > 12284 floats) and per-warp bins,
  // small ragged maps (shared memory, per-thread bins); every rule, max and avg, windows.
  // Sides of 6 or 10+ but not 13: Caffe's rule leaves no bin of {6, 3, 2, 1} empty there.
  const sppMaps = maps(5, [[120, 110], [6, 6], [17, 10], [31, 40], [10, 23], [45, 12]]);
  const side = (a) => { const s = a === 6 ? 6 : int(10, a); return s === 13 ? 12 : s; };
  const windows = Array.from({ length: 40 }, () => {
    const m = int(0, sppMaps.length - 1), { h, w } = sppMaps[m];
    const ww = side(w), hh = side(h), x0 = int(0, w - ww), y0 = int(0, h - hh);
    return [m, x0, y0, x0 + ww - 1, y0 + hh - 1];
  });
  for (const pool of ['max', 'avg'])
    for (const bins of ['adaptive', 'paper', 'caffe'])
      for (const win of [false, true]) {
        const opts = { pool, bins, levels: [6, 3, 2, 1], ...(win ? { windows } : {}) };
        await op(`spp + sppBackward ${pool} bins ${bins}${win ? ' 40 windows' : ''}`, 1e-5, async (d) => {
          const x = batchOn(sppMaps, d);
          const y = await sp.spp(x, opts);
          const g = T(normal(y.size), y.shape, d);
          const dx = await sp.sppBackward(x, g, opts);
          dispose([x, g]);
          return [y, dx];
        });
      }

  // ---- conv2d: every math mode; a small ragged batch (64-row tiles) with groups, dilation,
  // stride and padding, a larger one (128-row tiles) with groups, and split-K (few tiles, long K:
  // 2 ragged maps, 64 -> 40 channels in 2 groups, K = 32 x 3 x 3).
  const small = maps(4, [[9, 11], [5, 5], [14, 7]]);
  const wSmall = normal(6 * 2 * 3 * 3, 0.5), bSmall = normal(6);
  const smallOpts = { groups: 2, dilation: [2, 1], stride: [1, 2], padding: [2, 1], relu: true };
  const groups = 4, pixels = BN * Math.ceil((2 * sms) / groups); // 128-row tiles x groups >= 2 waves
  const bigSizes = [];
  for (let m = 0; m < pixels; ) {
    const h = int(20, 60), w = int(20, 60);
    bigSizes.push([h, w]);
    m += h * w; // 3x3, padding 1: as many output pixels as input
  }
  const big = maps(8, bigSizes);
  const splitMaps = maps(64, [[7, 9], [12, 5]]);
  const wSplit = normal(40 * 32 * 9, 0.2), bSplit = normal(40);
  const wBig = normal(8 * 2 * 3 * 3, 0.5), bBig = normal(8);
  for (const math of ['tf32', 'bf16', 'fp32', 'direct']) {
    await op(`conv2d ${math} ragged 3 maps, groups 2, dilation 2x1, stride 1x2, relu (64-row tiles)`, TOL[math], async (d) => {
      const x = batchOn(small, d), w = T(wSmall, [6, 2, 3, 3], d), b = T(bSmall, [6], d);
      const y = await sp.conv2d(x, w, b, { ...smallOpts, math });
      dispose([x, w, b]);
      return [y];
    });
    if (math === 'direct') continue;
    await op(`conv2d ${math} split-K, 2 ragged maps, groups 2, 64 -> 40 (conv_splitk_reduce_kernel)`, TOL[math], async (d) => {
      const x = batchOn(splitMaps, d), w = T(wSplit, [40, 32, 3, 3], d), b = T(bSplit, [40], d);
      const y = await sp.conv2d(x, w, b, { groups: 2, padding: 1, relu: true, math });
      dispose([x, w, b]);
      return [y];
    });
    await op(`conv2d ${math} ragged ${big.length} maps, ${pixels}+ pixels, groups ${groups} (${math === 'fp32' ? '64' : '128'}-row tiles)`, TOL[math], async (d) => {
      const x = batchOn(big, d), w = T(wBig, [8, 2, 3, 3], d), b = T(bBig, [8], d);
      const y = await sp.conv2d(x, w, b, { groups, padding: 1, math });
      dispose([x, w, b]);
      return [y];
    });
  }

  // ---- linear: every math mode; 64-row tiles, 128-row tiles (2 waves of them), split-K, and the
  // matrix-vector kernel for 1, 2, 3 (as 4) and 7 (as 8) rows, with 16-byte and 4-byte loads.
  const shapes = [
    { what: '64-row tiles', rows: 100, inF: 48, outF: 40 },
    { what: '128-row tiles', rows: 128 * 2 * sms, inF: 16, outF: 8 },
    { what: 'split-K', rows: 9, inF: 64 * BK, outF: 24 },
    { what: 'matrix-vector', rows: 1, inF: 1000, outF: 257 },
    { what: 'matrix-vector', rows: 2, inF: 301, outF: 33 },
    { what: 'matrix-vector', rows: 3, inF: 64, outF: 130 },
    { what: 'matrix-vector', rows: 7, inF: 515, outF: 129 },
  ];
  for (const s of shapes) {
    s.x = normal(s.rows * s.inF);
    s.w = normal(s.outF * s.inF, 0.2);
    s.b = normal(s.outF);
  }
  for (const math of ['tf32', 'bf16', 'fp32', 'direct'])
    for (const s of shapes) {
      if (math === 'direct' && s.what !== 'split-K') continue; // one direct call: a single kernel
      if (s.what === 'matrix-vector' && math !== 'tf32') continue; // the same kernel in every mode
      const what = math === 'fp32' && s.what === '128-row tiles' ? 'fp32: 64-row tiles' : s.what;
      await op(`linear ${math} ${s.rows}x${s.inF} -> ${s.outF}, bias, relu (${what})`, TOL[math], async (d) => {
        const x = T(s.x, [s.rows, s.inF], d), w = T(s.w, [s.outF, s.inF], d), b = T(s.b, [s.outF], d);
        const y = await sp.linear(x, w, b, { relu: true, math });
        dispose([x, w, b]);
        return [y];
      });
    }

  // ---- linear with bfloat16 weights (a BF16Matrix): rows not a multiple of the kernel's group of 4.
  await op('linear with a BF16Matrix weight 7x300 -> 37, bias, relu (linear_bf16_kernel)', 1e-4, async (d) => {
    const x = T(normal(7 * 300), [7, 300], d), w = T(normal(37 * 300, 0.2), [37, 300], d), b = T(normal(37), [37], d);
    const h = await sp.toBF16(w);
    const y = await sp.linear(x, h, b, { relu: true });
    dispose([x, w, b]);
    h.dispose();
    return [y];
  });

  // ---- pooling, LRN, the fused LRN + max pool, relu, softmax, and their backward passes.
  const pm = maps(6, [[13, 13], [7, 20], [3, 3], [24, 9]]);
  const pool = { kernel: 3, stride: 2, padding: 1, ceilMode: true };
  const lrn = { size: 5, alpha: 1e-2, beta: 0.75, k: 2 };
  await op('maxPool2d + maxPool2dBackward ragged, 3x3/2, padding 1, ceil mode', 1e-5, async (d) => {
    const x = batchOn(pm, d);
    const y = await sp.maxPool2d(x, pool);
    const g = batchOn(y.sizes.map(([h, w]) => ({ C: 6, h, w, data: normal(6 * h * w) })), d);
    const dx = await sp.maxPool2dBackward(x, g, pool);
    dispose([x, g]);
    return [y, dx];
  });
  await op('localResponseNorm + localResponseNormBackward ragged, size 5', 1e-5, async (d) => {
    const x = batchOn(pm, d), g = batchOn(maps(6, pm.map((m) => [m.h, m.w])), d);
    const y = await sp.localResponseNorm(x, lrn);
    const dx = await sp.localResponseNormBackward(x, g, lrn);
    dispose([x, g]);
    return [y, dx];
  });
  await op('localResponseNorm + backward ragged, within-channel 3x3 (Caffe)', 1e-5, async (d) => {
    const x = batchOn(pm, d), g = batchOn(maps(6, pm.map((m) => [m.h, m.w])), d);
    const within = { size: 3, alpha: 0.5, beta: 0.75, region: 'within' };
    const y = await sp.localResponseNorm(x, within);
    const dx = await sp.localResponseNormBackward(x, g, within);
    dispose([x, g]);
    return [y, dx];
  });
  await op('lrnMaxPool2d ragged (fused LRN + max pool)', 1e-5, async (d) => {
    const x = batchOn(pm, d);
    const y = await sp.lrnMaxPool2d(x, { lrn, pool });
    dispose([x]);
    return [y];
  });
  const rx = normal(37 * 29);
  await op('relu + reluBackward 37x29, and relu on a ragged batch', 1e-6, async (d) => {
    const x = T(rx, [37, 29], d), g = T(normal(37 * 29), [37, 29], d), xr = batchOn(pm, d);
    const y = await sp.relu(x);
    const dx = await sp.reluBackward(y, g);
    const yr = await sp.relu(xr);
    dispose([x, g, xr]);
    return [y, dx, yr];
  });
  await op('softmax 37x29', 1e-5, async (d) => {
    const x = T(rx, [37, 29], d);
    const y = await sp.softmax(x);
    dispose([x]);
    return [y];
  });

  await op('batchNormTrain + batchNormBackward ragged, concat', 1e-4, async (d) => {
    const ms = maps(5, [[7, 3], [1, 1], [12, 9]]);
    const x = batchOn(ms, d), gy = batchOn(maps(5, [[7, 3], [1, 1], [12, 9]]), d);
    const p = { weight: T(normal(5), [5], d), bias: T(normal(5), [5], d), runningMean: T(normal(5), [5], d), runningVar: T(Float32Array.from(normal(5), Math.abs), [5], d) };
    const r = await sp.batchNormTrain(x, p, { relu: true });
    const g = await sp.batchNormBackward(x, gy, r.saved);
    const cat = await sp.concat([x, r.output]);
    dispose([x, gy]);
    return [r.output, g.gradInput, g.gradWeight, g.gradBias, p.runningMean, p.runningVar, cat, p.weight, p.bias];
  });

  // ---- conv2dBackward (dx, dw, db) with groups and dilation; linearBackward.
  await op('conv2dBackward ragged, groups 2, dilation 2x1, stride 1x2 (dx, dw, db)', 1e-4, async (d) => {
    const x = batchOn(small, d), w = T(wSmall, [6, 2, 3, 3], d);
    const y = await sp.conv2d(x, w, null, { ...smallOpts, relu: false, math: 'direct' });
    const g = batchOn(y.sizes.map(([h, ww]) => ({ C: 6, h, w: ww, data: normal(6 * h * ww) })), d);
    const r = await sp.conv2dBackward(x, w, g, { ...smallOpts, relu: false });
    dispose([x, w, y, g]);
    return [r.gradInput, r.gradWeight, r.gradBias];
  });
  await op('linearBackward 100x48 -> 40 (dx, dw, db)', 1e-4, async (d) => {
    const s = shapes[0];
    const x = T(s.x, [s.rows, s.inF], d), w = T(s.w, [s.outF, s.inF], d), g = T(normal(s.rows * s.outF), [s.rows, s.outF], d);
    const r = await sp.linearBackward(x, w, g);
    dispose([x, w, g]);
    return [r.gradInput, r.gradWeight, r.gradBias];
  });

  // ---- dropout: the mask is the device's own draw, so check the output against it, not the CPU.
  try {
    const n = 5000, p = 0.3, xs = normal(n), gs = normal(n);
    const x = T(xs, [n], dev), g = T(gs, [n], dev);
    const { output, mask } = await sp.dropout(x, { p, seed: 7 });
    const dx = await sp.dropoutBackward(g, mask);
    const [y, m, gx] = await arrays([output, mask, dx]);
    dispose([x, g, output, mask, dx]);
    let bad = 0, kept = 0;
    for (let i = 0; i < n; i++) {
      const keep = m[i] !== 0;
      kept += keep;
      if (keep && Math.abs(m[i] - 1 / (1 - p)) > 1e-6) bad++;
      if (Math.abs(y[i] - xs[i] * m[i]) > 1e-5 * (1 + Math.abs(xs[i])) || Math.abs(gx[i] - gs[i] * m[i]) > 1e-5 * (1 + Math.abs(gs[i]))) bad++;
    }
    const frac = kept / n;
    line(bad === 0 && Math.abs(frac - (1 - p)) < 0.05, `dropout + dropoutBackward ${n} values, p ${p}`, `${bad} bad values, ${(100 * frac).toFixed(1)}% kept`);
  } catch (e) {
    line(false, 'dropout + dropoutBackward', (e && e.stack) || String(e));
  }

  // ---- non-maximum suppression: 3 blocks of 64 boxes in clusters, plain and per class.
  const nb = 150, bx = new Float32Array(nb * 4), sc = normal(nb), cl = Float32Array.from({ length: nb }, () => int(0, 2));
  for (let i = 0; i < nb; i++) {
    const x = int(0, 5) * 20 + rnd() * 8, y = int(0, 5) * 20 + rnd() * 8;
    bx.set([x, y, x + 10 + rnd() * 10, y + 10 + rnd() * 10], 4 * i);
  }
  await op(`nms + batchedNms ${nb} boxes in clusters (nms_mask_kernel, nms_reduce_kernel)`, 0, async (d) => {
    const B = T(bx, [nb, 4], d), S = T(sc, [nb], d), C = T(cl, [nb], d);
    const keep = await sp.nms(B, S, { iou: 0.5 }), batched = await sp.batchedNms(B, S, C, { iou: 0.5 });
    dispose([B, S, C]);
    return [keep, batched].map((k) => ({ data: async () => Float32Array.from(k) }));
  });

  // ---- crop and resize: 40 windows of 3 ragged images (inside, across the border, outside), with
  // and without context; the same bits on both devices (crop.h), so a tight tolerance.
  const cm = maps(3, [[37, 29], [8, 50], [1, 1]]), cb = new Float32Array(40 * 5);
  for (let k = 0; k < 40; k++) {
    const m = k % 3, x1 = int(-6, cm[m].w) + rnd(), y1 = int(-6, cm[m].h) + rnd();
    cb.set([m, x1, y1, x1 + int(0, 40), y1 + int(0, 40)], 5 * k);
  }
  await op('cropResize 40 windows of 3 ragged images to 13x17, context 0 and 3 (crop_resize_kernel)', 1e-6, async (d) => {
    const X = batchOn(cm, d), B = T(cb, [40, 5], d);
    const out = [await sp.cropResize(X, B, [13, 17]), await sp.cropResize(X, B, [13, 17], { context: 3, align: 'pixels' }),
      await sp.cropResize(X, B, 9, { align: 'corners' })];
    dispose([X, B]);
    return out;
  });

  // ---- the loss and the optimizer steps.
  const rows = 13, cols = 11, logits = normal(rows * cols, 3), labels = Int32Array.from({ length: rows }, () => int(0, cols - 1));
  await op(`softmaxCrossEntropy ${rows}x${cols}`, 1e-5, async (d) => {
    const x = T(logits, [rows, cols], d);
    const r = await sp.softmaxCrossEntropy(x, labels);
    dispose([x]);
    return [r.loss, r.gradLogits, r.correct];
  });
  const np = 1000, p0 = normal(np), grads = [normal(np), normal(np)];
  await op('sgdStep x2, momentum 0.9, nesterov, weight decay', 1e-5, async (d) => {
    const P = T(p0, [np], d), B = sp.zeros([np], { device: d });
    for (let s = 0; s < 2; s++) {
      const G = T(grads[s], [np], d);
      await sp.sgdStep(P, G, B, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-2, step: s + 1 });
      G.dispose();
    }
    return [P, B];
  });
  await op('adamStep x2, weight decay (Adam) and decoupled (AdamW)', 1e-5, async (d) => {
    const out = [];
    for (const decoupled of [false, true]) {
      const P = T(p0, [np], d), M = sp.zeros([np], { device: d }), V = sp.zeros([np], { device: d });
      for (let s = 0; s < 2; s++) {
        const G = T(grads[s], [np], d);
        await sp.adamStep(P, G, M, V, { lr: 1e-2, weightDecay: 0.05, decoupled, step: s + 1 });
        G.dispose();
      }
      out.push(P, M, V);
    }
    return out;
  });

  const mem = sp.memory();
  console.log(`gpu-touch: ${ops} ops on ${dev}, ${failed} failed; device buffers live: ${mem.deviceBuffers} (${startBuffers} at start)`);
  if (mem.deviceBuffers !== startBuffers) {
    console.log('FAIL device buffers leaked');
    failed += 1;
  }
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
