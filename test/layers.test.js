'use strict';
// Layers against the plain references, on random ragged batches with fresh seeds, on every
// device present; poisoned outputs are covered by comparing every element of fresh outputs
// whose storage starts uninitialised on the device (and by the native check tool).
const { expect } = require('chai');
const { sp, cudaStatus, expectClose, expectReject, inChildWith, WINOGRAD_FROM_32 } = require('./support/helpers');
const { rng, freshSeed, randomMap } = require('./support/reference');
const { refConv2d, refMaxPool2d, refLrn, refLinear, refSoftmax } = require('./support/layers-reference');
const { onAndOff, onAndOffRuns } = require('./support/conv-paths');

const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];
const rand = (r, n, scale = 1) => Float32Array.from({ length: n }, () => r.normal() * scale);

for (const device of devices) {
  describe(`layers on ${device}`, function () {
    // FP32-tight references: CUDA runs its FP32 mode here; test/math.test.js holds TF32 and BF16 to theirs.
    let saved;
    before(() => {
      saved = sp.getMath();
      sp.setMath({ conv: 'fp32', linear: 'fp32' });
    });
    after(() => sp.setMath(saved));
    const batchOf = (maps) => sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W], { device })));

    it('conv2d: ragged maps of odd sizes, strides, padding, dilation, groups, bias and fused ReLU', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const cases = [
        { cin: 3, cout: 8, kh: 7, kw: 7, stride: [2, 2], padding: [1, 1] },
        { cin: 6, cout: 9, kh: 3, kw: 5, stride: [1, 2], padding: [1, 2], dilation: [2, 1], groups: 3, relu: true },
        { cin: 4, cout: 5, kh: 1, kw: 1 },
        { cin: 5, cout: 7, kh: 3, kw: 3, padding: [1, 1], relu: true },
      ];
      for (const c of cases) {
        const maps = Array.from({ length: 4 }, () => randomMap(r, c.cin, r.int(c.kh + 3, 23), r.int(c.kw + 3, 29)));
        maps.push(randomMap(r, c.cin, c.kh, c.kw)); // output 1x1 where unpadded and undilated
        const w = rand(r, c.cout * (c.cin / (c.groups || 1)) * c.kh * c.kw, 0.3);
        const b = rand(r, c.cout);
        const out = await sp.conv2d(batchOf(maps), sp.tensor(w, [c.cout, c.cin / (c.groups || 1), c.kh, c.kw], { device }), sp.tensor(b, [c.cout], { device }), c);
        const got = await out.arrays();
        maps.forEach((m, i) => {
          const ref = refConv2d(m, w, b, { ...c, stride: c.stride, padding: c.padding, dilation: c.dilation });
          expect(out.sizes[i]).to.deep.equal([ref.H, ref.W]);
          expectClose(got[i], ref.data, { rtol: 1e-4, atol: 1e-4, label: `seed ${seed} case ${JSON.stringify(c)} map ${i}` });
        });
      }
    });

    it('conv2d 3x3 stride 1 with >= 32 channels (the CPU\'s Winograd path, taken from 32 channels here): ragged odd sizes, 1x1 maps, paddings 0-2, NaN/Inf, poisoned out', async function () {
      if (inChildWith(this, __filename, WINOGRAD_FROM_32)) return;
      await winogradCases(device);
    });

    async function winogradCases(device) {
      const seed = freshSeed();
      const r = rng(seed);
      for (const c of [
        { cin: 40, cout: 36, kh: 3, kw: 3, padding: [1, 1], relu: true },
        { cin: 33, cout: 45, kh: 3, kw: 3, padding: [0, 2] },
        { cin: 64, cout: 32, kh: 3, kw: 3, padding: [2, 0], relu: true },
      ]) {
        const [ph, pw] = c.padding;
        // smallest maps with a 1x1 output, odd and even sides, one large enough for >= 48 tiles
        const sizes = [[3 - 2 * ph > 0 ? 3 - 2 * ph : 1, 3 - 2 * pw > 0 ? 3 - 2 * pw : 1], [r.int(3, 6), r.int(3, 7)], [r.int(8, 15), r.int(9, 16)], [30, 31], [r.int(3, 20), 3]];
        const maps = sizes.map(([H, W]) => randomMap(r, c.cin, H, W));
        maps[1].data[r.int(0, maps[1].data.length - 1)] = NaN;
        maps[3].data[r.int(0, maps[3].data.length - 1)] = Infinity;
        const w = rand(r, c.cout * c.cin * 9, 0.2), b = rand(r, c.cout);
        const outSizes = sizes.map(([H, W]) => [H + 2 * ph - 2, W + 2 * pw - 2]);
        const out = sp.ragged(outSizes.map(([h, ww]) => sp.tensor(new Float32Array(c.cout * h * ww).fill(-6.5e31), [c.cout, h, ww], { device })));
        const y = await sp.conv2d(batchOf(maps), sp.tensor(w, [c.cout, c.cin, 3, 3], { device }), sp.tensor(b, [c.cout], { device }), { ...c, out });
        expect(y).to.equal(out);
        const got = await y.arrays();
        maps.forEach((m, i) => {
          const ref = refConv2d(m, w, b, c);
          expect(y.sizes[i]).to.deep.equal([ref.H, ref.W]);
          expectClose(got[i], ref.data, { rtol: 1e-4, atol: 1e-4, label: `seed ${seed} case ${JSON.stringify(c)} map ${i} (${m.H}x${m.W})` });
        });
      }
    }

    it('conv2d: GEMM tile and block edges (M, N, K off the tile sizes, K in two blocks, K = 1, 1x1 maps, long runs)', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      // Micro-tiles are 12 (AVX-512) / 6 (AVX2) / 4 rows by 32 / 16 columns; K blocks of 512 rows
      // once K > 640. Maps: one column, a panel and one, a full run of small maps, a large one.
      const cases = [
        { cin: 80, cout: 13, kh: 3, kw: 3, padding: [1, 1], relu: true }, // K = 720: two K blocks, 12 + 1 rows
        { cin: 1, cout: 25, kh: 1, kw: 1 }, // K = 1
        { cin: 64, cout: 38, kh: 5, kw: 5, stride: [2, 2], padding: [2, 2], groups: 2, relu: true }, // K = 800 per group, 19 rows
        { cin: 3, cout: 96, kh: 7, kw: 7, stride: [2, 2], padding: [1, 1], relu: true }, // conv1's shape, 8 full row tiles
      ];
      for (const c of cases) {
        const sizes = [[c.kh, c.kw], [c.kh + 5, c.kw + 8], [40, 45], [1 + c.kh, 32 + c.kw], ...Array.from({ length: 5 }, () => [r.int(c.kh, 12), r.int(c.kw, 12)])];
        if (c.cin <= 3) sizes.push([121, 97]);
        const maps = sizes.map(([H, W]) => randomMap(r, c.cin, H, W));
        const w = rand(r, c.cout * (c.cin / (c.groups || 1)) * c.kh * c.kw, 0.3);
        const b = rand(r, c.cout);
        const out = await sp.conv2d(batchOf(maps), sp.tensor(w, [c.cout, c.cin / (c.groups || 1), c.kh, c.kw], { device }), sp.tensor(b, [c.cout], { device }), c);
        const got = await out.arrays();
        maps.forEach((m, i) => {
          const ref = refConv2d(m, w, b, c);
          expect(out.sizes[i]).to.deep.equal([ref.H, ref.W]);
          expectClose(got[i], ref.data, { rtol: 1e-4, atol: 2e-4, label: `seed ${seed} case ${JSON.stringify(c)} map ${i}` });
        });
      }
    });

    it('conv2d on a dense batch returns [N, out, Ho, Wo]; no bias', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const x = rand(r, 2 * 3 * 11 * 9);
      const w = rand(r, 4 * 3 * 3 * 3);
      const y = await sp.conv2d(sp.tensor(x, [2, 3, 11, 9], { device }), sp.tensor(w, [4, 3, 3, 3], { device }), null, { stride: 2 });
      expect(y.shape).to.deep.equal([2, 4, 5, 4]);
      const d = await y.data();
      for (let n = 0; n < 2; n++) {
        const ref = refConv2d({ data: x.subarray(n * 297, n * 297 + 297), C: 3, H: 11, W: 9 }, w, null, { cout: 4, kh: 3, kw: 3, stride: [2, 2] });
        expectClose(d.subarray(n * 80, n * 80 + 80), ref.data, { rtol: 1e-4, atol: 1e-5, label: `seed ${seed}` });
      }
    });

    it('maxPool2d: kernel, stride, padding and ceil mode per map, NaN propagates; output-sized stride-1 pools on planes with and without NaN', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      // the last four keep the map's size (stride 1, padding (k - 1) / 2): on AVX2 and AVX-512 the planes
      // without NaN take flat passes over the whole plane (maps down to 1x1, 1xN, Nx1; a size
      // again after another: on AVX2 one mask table per size; on AVX-512 a plane with NaN found
      // in the pass goes row by row)
      // (stride 2 along rows with windows of 1-4 columns: on AVX-512 from registers, the next block
      // of 16 outputs taking the last one's third vector of column maxima: rows of one block and
      // of several below)
      for (const o of [{ kernel: [3, 3], stride: [2, 2] }, { kernel: [3, 3], stride: [2, 2], padding: [1, 1] }, { kernel: [2, 3], stride: [2, 1], ceilMode: true }, { kernel: [3, 3], stride: [3, 3], padding: [1, 1], ceilMode: true },
        { kernel: [2, 2], stride: [2, 2], ceilMode: true }, { kernel: [3, 4], stride: [1, 2], padding: [1, 2], ceilMode: true }, { kernel: [2, 1], stride: [3, 2] },
        { kernel: [3, 3], stride: [1, 1], padding: [1, 1] }, { kernel: [5, 3], stride: [1, 1], padding: [2, 1], ceilMode: true }, { kernel: [1, 5], stride: [1, 1], padding: [0, 2] }, { kernel: [7, 7], stride: [1, 1], padding: [3, 3] }]) {
        const sameSize = o.stride[0] === 1 && o.stride[1] === 1;
        const sizes = [[r.int(3, 30), r.int(3, 30)], [r.int(3, 30), r.int(3, 30)], ...(sameSize ? [[1, 1], [1, r.int(2, 20)], [r.int(2, 20), 1], [14, 14], [7, 7], [14, 14]] : [[r.int(3, 30), r.int(3, 30)], [r.int(3, 30), r.int(33, 70)], [r.int(3, 30), r.int(3, 30)], [14, 14], [28, 28]])];
        const maps = sizes.map(([H, W]) => randomMap(r, 3, H, W));
        maps[0].data[5] = NaN;
        maps[1].data[r.int(0, maps[1].data.length - 1)] = Infinity;
        maps[maps.length - 1].data[r.int(0, maps[maps.length - 1].data.length - 1)] = -Infinity;
        const out = await sp.maxPool2d(batchOf(maps), o);
        const got = await out.arrays();
        maps.forEach((m, i) => {
          const ref = refMaxPool2d(m, o);
          expect(out.sizes[i], `seed ${seed} ${JSON.stringify(o)}`).to.deep.equal([ref.H, ref.W]);
          expectClose(got[i], ref.data, { label: `seed ${seed} ${JSON.stringify(o)} map ${i}` });
        });
      }
    });

    it('localResponseNorm: PyTorch semantics, even and odd sizes', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      for (const o of [{ size: 5, alpha: 1e-4, beta: 0.75, k: 1 }, { size: 4, alpha: 0.5, beta: 0.6, k: 2 }, { size: 1 }]) {
        const maps = Array.from({ length: 3 }, () => randomMap(r, 7, r.int(1, 12), r.int(1, 12)));
        maps.forEach((m) => m.data.forEach((v, i) => (m.data[i] = v * 3)));
        const out = await sp.localResponseNorm(batchOf(maps), o);
        const got = await out.arrays();
        maps.forEach((m, i) => expectClose(got[i], refLrn(m, o).data, { rtol: 1e-5, atol: 1e-6, label: `seed ${seed} ${JSON.stringify(o)} map ${i}` }));
      }
    });

    it('lrnMaxPool2d: the same values as localResponseNorm then maxPool2d, and as the references (ragged, NaN/Inf, ceil mode, poisoned out)', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const cases = [
        { lrn: { size: 5, alpha: 5e-4, beta: 0.75, k: 2 }, pool: { kernel: 3, stride: 2, padding: 1 }, C: 9 },
        { lrn: { size: 5, alpha: 1, beta: 0.75, k: 0.5 }, pool: { kernel: [3, 2], stride: [1, 2] }, C: 20 },
        { lrn: { size: 4, alpha: 0.5, beta: 0.6, k: 2 }, pool: { kernel: 3, stride: 3, padding: 1, ceilMode: true }, C: 3 },
        { lrn: { size: 3 }, pool: { kernel: [2, 3], stride: [2, 1], ceilMode: true }, C: 6 },
      ];
      for (const c of cases) {
        // odd sizes from the smallest the pool takes up to a map whose rows span several tasks
        const maps = [[3, 3], [1 + 2 * r.int(1, 4), r.int(3, 9)], [r.int(3, 30), r.int(3, 40)], [r.int(20, 45), r.int(15, 37)], [4, 3]].map(([H, W]) => randomMap(r, c.C, H, W));
        maps.forEach((m) => m.data.forEach((v, i) => (m.data[i] = v * 3)));
        maps[1].data[r.int(0, maps[1].data.length - 1)] = NaN;
        maps[3].data[r.int(0, maps[3].data.length - 1)] = Infinity;
        maps[3].data[r.int(0, maps[3].data.length - 1)] = -Infinity;
        const x = batchOf(maps);
        const two = await sp.maxPool2d(await sp.localResponseNorm(x, c.lrn), c.pool);
        const outSize = two.sizes.reduce((a, [h, w]) => a + c.C * h * w, 0);
        const out = sp.ragged(two.sizes.map(([h, w]) => sp.tensor(new Float32Array(c.C * h * w).fill(-3.25e33), [c.C, h, w], { device })));
        const one = await sp.lrnMaxPool2d(x, { ...c, out });
        expect(one).to.equal(out);
        const label = `seed ${seed} ${JSON.stringify(c)}`;
        expect(one.sizes, label).to.deep.equal(two.sizes);
        const a = await one.arrays(), b = await two.arrays();
        expect(a.reduce((n, m) => n + m.length, 0)).to.equal(outSize);
        // Same LRN code and the same max: identical on the CPU; CUDA recomputes LRN per window in
        // the same expression as its LRN kernel.
        a.forEach((m, i) => expectClose(m, b[i], device === 'cpu' ? { label: `${label} map ${i}` } : { rtol: 1e-6, atol: 1e-7, label: `${label} map ${i}` }));
        const pairOf = (v) => (v === undefined ? undefined : typeof v === 'number' ? [v, v] : v);
        const refPool = { kernel: pairOf(c.pool.kernel), stride: pairOf(c.pool.stride), padding: pairOf(c.pool.padding), ceilMode: c.pool.ceilMode };
        Object.keys(refPool).forEach((k) => refPool[k] === undefined && delete refPool[k]);
        maps.forEach((m, i) => {
          const ref = refMaxPool2d(refLrn(m, c.lrn), refPool);
          expect(one.sizes[i], label).to.deep.equal([ref.H, ref.W]);
          expectClose(a[i], ref.data, { rtol: 1e-5, atol: 1e-6, label: `${label} map ${i} vs reference` });
        });
      }
      // a dense batch stays dense
      const d = await sp.lrnMaxPool2d(sp.tensor(rand(r, 2 * 4 * 9 * 7), [2, 4, 9, 7], { device }), { lrn: { size: 3 }, pool: { kernel: 3, stride: 2 } });
      expect(d.shape).to.deep.equal([2, 4, 4, 3]);
    });

    it('lrnMaxPool2d rejects bad options, naming them', async function () {
      const x = sp.zeros([1, 3, 8, 8], { device });
      await expectReject(sp.lrnMaxPool2d(x, { pool: { kernel: 3 } }), /sp.lrnMaxPool2d: options.lrn must be an object of localResponseNorm options, got undefined/);
      await expectReject(sp.lrnMaxPool2d(x, { lrn: { size: 5 }, pool: 3 }), /options.pool must be an object of maxPool2d options, got number 3/);
      await expectReject(sp.lrnMaxPool2d(x, { lrn: { size: 0 }, pool: { kernel: 3 } }), /options.lrn.size must be a positive integer, got number 0/);
      await expectReject(sp.lrnMaxPool2d(x, { lrn: { size: 5, beta: NaN }, pool: { kernel: 3 } }), /options.lrn.beta must be a finite number, got number NaN/);
      await expectReject(sp.lrnMaxPool2d(x, { lrn: { size: 5 }, pool: {} }), /options.pool.kernel is required/);
      await expectReject(sp.lrnMaxPool2d(x, { lrn: { size: 5 }, pool: { kernel: 3, padding: 2 } }), /options.pool.padding 2x2 must be at most half the kernel 3x3/);
      await expectReject(sp.lrnMaxPool2d(x, { lrn: { size: 5 }, pool: { kernel: 9 } }), /map 0 of size 8x8 \(HxW\) is too small for kernel 9x9/);
      await expectReject(sp.lrnMaxPool2d(x, { lrn: { size: 5, out: x }, pool: { kernel: 3 } }), /options.lrn.out is not used: pass options.out/);
    });

    it('linear, relu, softmax and flatten', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const [rows, inF, outF] = [5, 77, 13];
      const x = rand(r, rows * inF), w = rand(r, outF * inF, 0.2), b = rand(r, outF);
      const X = sp.tensor(x, [rows, inF], { device });
      const y = await sp.linear(X, sp.tensor(w, [outF, inF], { device }), sp.tensor(b, [outF], { device }));
      expectClose(await y.data(), refLinear(x, rows, inF, w, outF, b), { rtol: 1e-4, atol: 1e-5, label: `seed ${seed}` });
      const yr = await sp.linear(X, sp.tensor(w, [outF, inF], { device }), null, { relu: true });
      expectClose(await yr.data(), refLinear(x, rows, inF, w, outF, null, true), { rtol: 1e-4, atol: 1e-5, label: `seed ${seed}` });
      const rl = await sp.relu(y);
      expectClose(await rl.data(), (await y.data()).map((v) => Math.max(v, 0)), { label: `seed ${seed}` });
      const sm = await sp.softmax(y);
      expectClose(await sm.data(), refSoftmax(await y.data(), rows, outF), { rtol: 1e-5, atol: 1e-7, label: `seed ${seed}` });
      const f = sp.flatten(sp.tensor(rand(r, 2 * 3 * 4), [2, 3, 4], { device }));
      expect(f.shape).to.deep.equal([2, 12]);
    });

    it('linear: few rows (weight streaming) and many (packed GEMM), odd and K-blocked widths, NaN/Inf, poisoned out', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      // rows 1-7 take the CPU's small-batch kernel, 8 and up its GEMM (several 32-column panels,
      // a partial last one); in_features past 512 cut K into blocks; none a multiple of 32.
      const shapes = [[1, 37, 5], [3, 129, 40], [7, 600, 17], [8, 45, 70], [33, 1100, 29], [70, 61, 130]];
      for (const [rows, inF, outF] of shapes) {
        const x = rand(r, rows * inF), w = rand(r, outF * inF, 0.2), b = rand(r, outF);
        x[r.int(0, rows * inF - 1)] = NaN;
        x[r.int(0, rows * inF - 1)] = Infinity;
        const out = sp.tensor(new Float32Array(rows * outF).fill(-7.5e30), [rows, outF], { device });
        for (const relu of [false, true]) {
          const y = await sp.linear(sp.tensor(x, [rows, inF], { device }), sp.tensor(w, [outF, inF], { device }), sp.tensor(b, [outF], { device }), { relu, out });
          expect(y).to.equal(out);
          const got = await y.data(), want = refLinear(x, rows, inF, w, outF, b, relu);
          for (let i = 0; i < want.length; i++) {
            const label = `seed ${seed} ${rows}x${inF}->${outF} relu ${relu} element ${i}`;
            if (Number.isNaN(want[i])) expect(Number.isNaN(got[i]), label).to.equal(true);
            else if (!Number.isFinite(want[i])) expect(got[i], label).to.equal(want[i]);
            else expect(Math.abs(got[i] - want[i]), `${label}: got ${got[i]}, want ${want[i]}`).to.be.at.most(1e-4 + 1e-4 * Math.abs(want[i]));
          }
        }
      }
    });

    it('reject bad shapes with messages naming the axis', async function () {
      const x = sp.zeros([2, 3, 8, 8], { device });
      await expectReject(sp.conv2d(x, sp.zeros([4, 2, 3, 3], { device })), /weight axis 1 \(in channels \/ groups\) is 2, but the input has 3 channels/);
      await expectReject(sp.conv2d(x, sp.zeros([4, 3, 9, 9], { device })), /map 0 of size 8x8 \(HxW\) is too small for kernel 9x9/);
      await expectReject(sp.conv2d(x, sp.zeros([4, 3, 3, 3], { device }), sp.zeros([5], { device })), /bias must have shape \[4\], got \[5\]/);
      await expectReject(sp.conv2d(x, sp.zeros([4, 3, 3, 3], { device }), null, { stride: 0 }), /options.stride must be an integer >= 1/);
      await expectReject(sp.maxPool2d(x, { kernel: 3, padding: 2 }), /padding 2x2 must be at most half the kernel 3x3/);
      await expectReject(sp.linear(sp.zeros([2, 5], { device }), sp.zeros([3, 4], { device })), /weight axis 1 \(in features\) is 4, x axis 1 is 5/);
      await expectReject(sp.localResponseNorm(x, { size: 0 }), /options.size must be a positive integer/);
    });
  });
}

describe('conv2d: the CPU Winograd path in chunks of tiles', function () {
  // Large batches run the tiles in chunks (64 MiB of scratch); SPPNET_WINOGRAD_CHUNK=32 makes
  // chunks of one panel, so chunk edges fall inside maps and between them here.
  // SPPNET_DEVICE=cpu: the child's tensors must be on the CPU, also where a GPU is the default.
  const { runNode } = require('./support/child');
  const path = require('path');
  it('chunks of 32 tiles give the reference on a ragged batch', function () {
    const seed = freshSeed();
    const code = `
      const sp = require('./dist');
      const { rng, randomMap } = require('./test/support/reference');
      const { refConv2d } = require('./test/support/layers-reference');
      (async () => {
        const r = rng(${seed});
        let bad = 0;
        const c = { cin: 32, cout: 33, kh: 3, kw: 3, padding: [1, 1], relu: true };
        const maps = [[13, 9], [3, 3], [17, 22], [1, 1], [9, 30]].map(([H, W]) => randomMap(r, c.cin, H, W));
        maps[2].data[7] = NaN;
        const w = Float32Array.from({ length: c.cout * c.cin * 9 }, () => r.normal() * 0.2);
        const b = Float32Array.from({ length: c.cout }, () => r.normal());
        const rb = sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W])));
        const got = await (await sp.conv2d(rb, sp.tensor(w, [c.cout, c.cin, 3, 3]), sp.tensor(b, [c.cout]), c)).arrays();
        maps.forEach((m, i) => refConv2d(m, w, b, c).data.forEach((e, j) => {
          const g = got[i][j];
          if (Number.isNaN(e) ? !Number.isNaN(g) : !(Math.abs(g - e) <= 1e-4 * (1 + Math.abs(e)))) bad++;
        }));
        console.log('bad ' + bad);
      })();`;
    const res = runNode(['-e', code], { cwd: path.resolve(__dirname, '..'), env: { ...process.env, SPPNET_WINOGRAD_CHUNK: '32', SPPNET_WINOGRAD_MIN_CHANNELS: '32', SPPNET_DEVICE: 'cpu' } });
    expect(res.stderr).to.equal('');
    expect(res.stdout.trim(), `seed ${seed}`).to.equal('bad 0');
  });
});

describe('conv2d: the CPU direct path (AVX2, AVX-512)', function () {
  // On AVX2, a conv with >= 64 products a sum on small maps (<= 1024 output pixels each) or with a
  // stride above 1 runs without im2col: tiles of 6 pixels x 16 filters, filters packed once (the
  // model's filter cache), padding from zero-bordered copies (cpu/direct_conv_cpu.cpp); a 1x1 conv
  // of one map of 128-1024 pixels multiplies its input planes in place (gemm_unpacked). On AVX-512
  // the same at stride 1: tiles of 12 pixels x 32 filters over the input copied into blocks of 16
  // channels (the last block narrower), sums stored by gathers. The children run with
  // SPPNET_CPU_ISA set, so an AVX-512 machine checks both (an AVX2 one skips the AVX-512 run).
  // SPPNET_DEVICE=cpu: the child's tensors must be on the CPU, also where a GPU is the default.
  const { runNode } = require('./support/child');
  const path = require('path');
  const child = (seed, threads, isa) => `
    const sp = require('./dist');
    const crypto = require('crypto');
    const { rng, randomMap } = require('./test/support/reference');
    const { refConv2d } = require('./test/support/layers-reference');
    const { raggedCase, filterCacheCheck } = require('./test/support/conv-paths');
    (async () => {
      if (sp.backend().cpu.isa !== '${isa}') return console.log('no ${isa}');
      const r = rng(${seed});
      let bad = 0, first = '';
      const hash = crypto.createHash('sha256');
      // filters off the panel size (16), sizes off the tile (6 pixels), 1x1 outputs, strides 1-3,
      // dilation, asymmetric kernels and padding; NaN and Inf in the inputs; poisoned outputs
      for (const [c, sizes] of [
        [{ cin: 16, cout: 20, kh: 3, kw: 3, padding: [1, 1], relu: true }, [[1, 1], [2, 3], [5, 7], [13, 11], [28, 28], [5, 7], [7, 7]]],
        [{ cin: 8, cout: 33, kh: 5, kw: 5, stride: [2, 2], padding: [2, 2], dilation: [1, 2] }, [[9, 12], [61, 47], [5, 9]]],
        [{ cin: 3, cout: 17, kh: 7, kw: 7, stride: [2, 2], padding: [3, 3], relu: true }, [[100, 90], [7, 7]]],
        [{ cin: 12, cout: 16, kh: 3, kw: 3, stride: [1, 3], padding: [0, 2], dilation: [2, 1] }, [[11, 14], [5, 3], [30, 31]]],
        [{ cin: 5, cout: 7, kh: 3, kw: 5, padding: [1, 2] }, [[4, 4], [19, 23], [1, 2]]],
        [{ cin: 64, cout: 48, kh: 3, kw: 3, padding: [1, 1] }, [[14, 14], [7, 7], [3, 5]]],
        // AVX-512: blocks of 16 channels and a narrower last one (24 = 16 + 8, 40 = 16 + 16 + 8),
        // panels of 32 filters and a last one of 1 (33) or of at most 16 (16), tiles off 12
        [{ cin: 24, cout: 33, kh: 3, kw: 3, padding: [1, 1], relu: true }, [[13, 13], [7, 7], [1, 1], [12, 12], [5, 29]]],
        [{ cin: 40, cout: 16, kh: 3, kw: 3, padding: [2, 2], dilation: [2, 2] }, [[9, 10], [17, 5]]],
        // AVX-512: maps over 1024 pixels with at most 64 filters (K 72, one of 1440 pixels)
        [{ cin: 8, cout: 40, kh: 3, kw: 3, padding: [1, 1], relu: true }, [[36, 40], [5, 5]]],
      ]) {
        const { bad: b, outputs } = await raggedCase(sp, r, c, sizes);
        bad += b;
        outputs.forEach((a) => hash.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength)));
      }
      // 1x1 convs of one map of 128-1024 pixels (AVX-512: more, where the planes fit L2) read the
      // input planes in place (gemm_unpacked): columns off 16, rows off 6, K in two blocks (> 640),
      // NaN, poisoned out
      for (const [cin, cout, H, W] of [[16, 13, 14, 14], [700, 40, 13, 11], [24, 7, 28, 28], [9, 64, 20, 50], [33, 6, 8, 16], [21, 14, 10, 15], [16, 24, 40, 41]]) {
        const c = { cin, cout, kh: 1, kw: 1, relu: cout % 2 === 1 };
        const m1 = randomMap(r, cin, H, W);
        m1.data[r.int(0, m1.data.length - 1)] = NaN;
        const w = Float32Array.from({ length: cout * cin }, () => r.normal() * 0.3);
        const b = Float32Array.from({ length: cout }, () => r.normal());
        const e = refConv2d(m1, w, b, c);
        const out = sp.tensor(new Float32Array(cout * H * W).fill(-6.5e31), [cout, H, W]);
        const g = await (await sp.conv2d(sp.tensor(m1.data, [cin, H, W]), sp.tensor(w, [cout, cin, 1, 1]), sp.tensor(b, [cout]), { ...c, out })).data();
        e.data.forEach((v, j) => { if (Number.isNaN(v) ? !Number.isNaN(g[j]) : !(g[j] === v || Math.abs(g[j] - v) <= 2e-4 * (1 + Math.abs(v)))) bad++; });
        hash.update(Buffer.from(g.buffer, g.byteOffset, g.byteLength));
      }
      // a ragged batch of 1x1 maps: those of 128-1024 pixels each a run of its own, read in place;
      // the 7x7 one packed (poisoned out). Then batches whose maps all are read in place and
      // divide evenly enough among the threads: a map to a thread (cpu/conv_cpu.cpp, maps_shared_fits)
      for (const sizes of [[[12, 12], [7, 7], [10, 15], [20, 20]], [[16, 16], [16, 12], [12, 16], [16, 16]], [[14, 14], [14, 14], [14, 14]], [[28, 28], [28, 28]], [[40, 36], [36, 40]]]) {
        const c = { cin: 19, cout: 37, kh: 1, kw: 1, relu: true };
        const maps = sizes.map(([H, W]) => randomMap(r, c.cin, H, W));
        maps[1].data[r.int(0, maps[1].data.length - 1)] = NaN;
        const w = Float32Array.from({ length: c.cout * c.cin }, () => r.normal() * 0.3);
        const b = Float32Array.from({ length: c.cout }, () => r.normal());
        const refs = maps.map((m) => refConv2d(m, w, b, c));
        const out = sp.ragged(refs.map((e) => sp.tensor(new Float32Array(c.cout * e.H * e.W).fill(-6.5e31), [c.cout, e.H, e.W])));
        const rb = sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W])));
        const got = await (await sp.conv2d(rb, sp.tensor(w, [c.cout, c.cin, 1, 1]), sp.tensor(b, [c.cout]), { ...c, out })).arrays();
        refs.forEach((e, i) => e.data.forEach((v, j) => {
          const g = got[i][j];
          if (Number.isNaN(v) ? !Number.isNaN(g) : !(g === v || Math.abs(g - v) <= 2e-4 * (1 + Math.abs(v)))) bad++;
        }));
        got.forEach((a) => hash.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength)));
      }
      // A model's conv on this path keeps its packed filters: the second run reads them (spoiling
      // them changes the logits), and gives the first run's logits
      bad += await filterCacheCheck(sp, r, { out: 18, kernel: 5, padding: 2 }, 19, 21);
      console.log('bad ' + bad + ' ' + hash.digest('hex').slice(0, 16));
    })();`;
  for (const isa of ['avx2', 'avx512']) {
    it(`${isa}: gives the reference on ragged batches (filters off the panel, tile edges, strides, dilation, NaN/Inf, poisoned out), 1x1 convs read in place, and a model's cached filters; 1 and 2 threads bit for bit`, function () {
      this.timeout(120000); // two child processes
      const seed = freshSeed();
      const results = ['1', '2'].map((threads) => {
        const res = runNode(['-e', child(seed, threads, isa)], { cwd: path.resolve(__dirname, '..'), env: { ...process.env, SPPNET_CPU_ISA: isa, SPPNET_NUM_THREADS: threads, SPPNET_DEVICE: 'cpu' } });
        expect(res.stderr).to.equal('');
        return res.stdout.trim();
      });
      if (results[0] === `no ${isa}`) this.skip();
      expect(results[0], `seed ${seed}`).to.match(/^bad 0 [0-9a-f]{16}$/);
      expect(results[1], `seed ${seed}: the same sums on 2 threads`).to.equal(results[0]);
    });
  }
});

describe('conv2d: the CPU lanes path (AVX-512, strides along rows of 2 to 8)', function () {
  // A conv whose stride along rows is 2-8, with at most 4 input channels or a kernel of at least 4x
  // the stride's area, at most 1024 products a sum, and output rows that fill at least 90% of
  // 16-pixel segments runs with output pixels in the vector lanes: the input split by column phase
  // into zero-padded planes, tiles of 3 segments x 8 filters, masked stores at row ends
  // (cpu/lanes_conv_cpu.cpp). Checked against the reference on maps sized so the batch takes it
  // (segments that end rows early, tiles across rows, filters off the panel of 8, strides up to 8,
  // phases no window reads), NaN/Inf, poisoned outputs; 1 and 2 threads bit for bit; with
  // SPPNET_LANES=0 each case gives other bits (another order of the sums: so the path was taken);
  // a model's filter cache of this path's size.
  const child = (seed) => `
    const sp = require('./dist');
    const { rng } = require('./test/support/reference');
    const { raggedCase, filterCacheCheck } = require('./test/support/conv-paths');
    (async () => {
      if (sp.backend().cpu.isa !== 'avx512') return console.log('no avx512');
      const r = rng(${seed});
      let bad = 0;
      const hashes = [];
      const W16 = (kw, s, d, p, segs, less) => (segs * 16 - less - 1) * s + d * (kw - 1) + 1 - 2 * p;  // input width for segs x 16 - less outputs
      for (const [c, sizes] of [
        [{ cin: 3, cout: 20, kh: 7, kw: 7, stride: [2, 2], padding: [3, 3], relu: true }, [[37, W16(7, 2, 1, 3, 3, 0)], [6, W16(7, 2, 1, 3, 2, 1)], [1, W16(7, 2, 1, 3, 4, 0)]]],
        [{ cin: 5, cout: 8, kh: 11, kw: 11, stride: [4, 4], padding: [0, 0] }, [[43, W16(11, 4, 1, 0, 2, 0)], [12, W16(11, 4, 1, 0, 5, 1)]]],
        [{ cin: 9, cout: 13, kh: 3, kw: 5, stride: [1, 2], padding: [1, 2], dilation: [2, 2], relu: true }, [[9, W16(5, 2, 2, 2, 1, 0)], [4, W16(5, 2, 2, 2, 3, 0)]]],
        [{ cin: 16, cout: 33, kh: 7, kw: 7, stride: [3, 3], padding: [1, 1] }, [[20, W16(7, 3, 1, 1, 2, 0)]]],
        [{ cin: 2, cout: 9, kh: 2, kw: 3, stride: [2, 5], padding: [0, 1], relu: true }, [[11, W16(3, 5, 1, 1, 2, 0)], [3, W16(3, 5, 1, 1, 1, 1)]]],
        [{ cin: 3, cout: 8, kh: 1, kw: 1, stride: [1, 8] }, [[5, W16(1, 8, 1, 0, 3, 0)]]],
      ]) {
        const res = await raggedCase(sp, r, c, sizes, { inf: Infinity });
        bad += res.bad;
        hashes.push(res.hash);
      }
      // A model's strided conv keeps its packed filters in a cache of this path's size (16 +
      // 512 n + 128 floats): spoiling them changes the logits; restored, the first run's logits
      if (process.env.SPPNET_LANES !== '0') bad += await filterCacheCheck(sp, r, { out: 12, kernel: 7, stride: 2, padding: 3 }, 9, 63, (n) => (n - 16) % 512 === 128);
      console.log('bad ' + bad + ' ' + hashes.join(','));
    })();`;
  it('gives the reference on ragged batches (row ends, tiles across rows, strides 2-8, dilation, unread phases, filters off the panel, NaN/Inf, poisoned out) and keeps a model\'s packed filters; 1 and 2 threads bit for bit; SPPNET_LANES=0 another order', function () {
    this.timeout(120000); // three child processes
    const seed = freshSeed();
    onAndOff(this, child(seed), seed, { flag: 'SPPNET_LANES', skip: 'no avx512', pattern: /^bad 0 ([0-9a-f]{12},){5}[0-9a-f]{12}$/, label: 'the lanes path ran (SPPNET_LANES=0 sums in another order)' });
  });
});

describe('conv2d: the CPU AMX path (SPPNET_AMX=1, bf16x3 on AMX tiles)', function () {
  // With SPPNET_AMX=1 on a CPU with AMX-BF16, convs of one group with at least 64 filters (1x1s
  // from 128 input channels; not those the lanes path takes) multiply as three bfloat16 products
  // on AMX tiles (cpu/amx_cpu.h): within 5e-5 of sum |w x| + |b| of the float64 reference (also
  // in the bound's worst case), and infinite inputs and weights give FP32's infinities (or NaN),
  // finite ones near FP32's largest stay finite. Checked on ragged batches: filters and K off
  // the 32-blocks, maps of several column chunks, a lone small map (filters split among the
  // threads), an odd number of 32-filter blocks (260), 1x1 in place and strided, stride 2,
  // dilation, NaN/Inf, poisoned outputs; 1 and 2
  // threads bit for bit; SPPNET_AMX=0 gives other bits (so each case took the path); a model's
  // filter cache of this path's size (16 + the packed filters).
  const child = (seed) => `
    const sp = require('./dist');
    const { rng } = require('./test/support/reference');
    const { refConv2d } = require('./test/support/layers-reference');
    const { raggedCase, filterCacheCheck } = require('./test/support/conv-paths');
    (async () => {
      if (process.env.SPPNET_AMX === '1' && !sp.backend().cpu.settings.amx) return console.log('no amx');
      const r = rng(${seed});
      let bad = 0, worst = 0;
      const hashes = [];
      for (const [c, sizes] of [
        [{ cin: 13, cout: 70, kh: 3, kw: 3, padding: [1, 1], relu: true }, [[20, 30], [5, 3], [1, 1]]],
        [{ cin: 130, cout: 100, kh: 1, kw: 1 }, [[9, 11], [17, 40], [1, 2]]],
        [{ cin: 64, cout: 64, kh: 3, kw: 3, stride: [2, 2], padding: [1, 1] }, [[15, 22], [7, 9]]],
        [{ cin: 20, cout: 96, kh: 3, kw: 5, padding: [2, 2], dilation: [2, 1], relu: true }, [[12, 33]]],
        [{ cin: 150, cout: 65, kh: 1, kw: 1, stride: [2, 2] }, [[11, 13], [4, 4]]],
        [{ cin: 200, cout: 64, kh: 3, kw: 3, padding: [1, 1] }, [[6, 7]]],
        [{ cin: 72, cout: 260, kh: 3, kw: 3, padding: [1, 1], relu: true }, [[20, 30], [3, 5]]],
      ]) {
        const res = await raggedCase(sp, r, c, sizes, { inf: 'random', infPlane0: true, infWeight: true, bound: 5e-5 });
        bad += res.bad;
        worst = Math.max(worst, res.worst);
        hashes.push(res.hash);
      }
      // The bound's worst case (every input and weight at the same place between two bfloat16s:
      // every error one way, 2.9e-5 here), and a finite weight that bfloat16 rounding would make
      // infinite (3.4e38: its high part truncated, 3.4e38 x 0.5 stays finite).
      for (const [xv, w0] of [[1.0195091, 1.0039142], [0.5, 3.4e38]]) {
        const c = { cin: 8, cout: 64, kh: 3, kw: 3 };
        const m = { data: new Float32Array(8 * 5 * 6).fill(xv), C: 8, H: 5, W: 6 };
        const w = new Float32Array(64 * 8 * 9).fill(1.0039142);
        w[0] = w0;
        const ref = refConv2d(m, w, null, c), mag = refConv2d(m, w.map(Math.abs), null, c);
        const got = await (await sp.conv2d(sp.tensor(m.data, [8, 5, 6]), sp.tensor(w, [64, 8, 3, 3]), null, c)).data();
        ref.data.forEach((v, j) => {
          const err = Math.abs(got[j] - v) / mag.data[j];
          worst = Math.max(worst, err);
          if (!(err <= 5e-5)) bad++;
        });
      }
      // A model's conv keeps its packed filters in a cache of this path's size (16 + 64 x 32
      // floats for 64 filters of 3 x 3 x 3): spoiling them changes the logits; restored, the same.
      if (process.env.SPPNET_AMX === '1') bad += await filterCacheCheck(sp, r, { out: 64, kernel: 3, padding: 1 }, 9, 13, (n) => n === 16 + 64 * 32);
      console.log('bad ' + bad + ' ' + hashes.join(',') + ' worst ' + worst.toExponential(2));
    })();`;
  it('gives the reference within 5e-5 of sum |w x| on ragged batches and in the worst case (K and filters off the blocks, chunks, a lone small map, 260 filters, 1x1 in place and strided, stride 2, dilation, NaN/Inf inputs and weights, 3.4e38, poisoned out) and keeps a model\'s packed filters; 1 and 2 threads bit for bit; SPPNET_AMX=0 another order', function () {
    this.timeout(120000); // three child processes
    const seed = freshSeed();
    onAndOff(this, child(seed), seed, { flag: 'SPPNET_AMX', skip: 'no amx', pattern: /^bad 0 ([0-9a-f]{12},){6}[0-9a-f]{12} worst /, label: 'the AMX path ran (SPPNET_AMX=0 sums otherwise)' });
  });
});

describe('linear: the CPU AMX path (SPPNET_AMX=1, from 128 rows, 16 with a cache)', function () {
  // With SPPNET_AMX=1 on a CPU with AMX-BF16, sp.linear on 128 rows or more multiplies on AMX
  // tiles (cpu/amx_cpu.h): bf16x3 for FP32 products (within 5e-5 of sum |w x| + |b| of the float64
  // reference), one BF16 product each where math 'bf16' takes BF16 products (FP32 weights from
  // 256 rows, a BF16Matrix from 8): FP32-tight against the rounded operands. Checked with K and
  // the outputs off the 32-blocks, K in two blocks (1,100), rows in several regions, weights in
  // two slabs (530 outputs), FP32 and BF16Matrix weights, NaN and infinities in x and the weights,
  // ReLU, poisoned outputs; 1 and 2 threads bit for bit; SPPNET_AMX=0 gives other bits; a model's
  // weight cache (the packed weights kept between calls, which take the tiles from 16 rows).
  const child = (seed) => `
    const sp = require('./dist');
    const { rng } = require('./test/support/reference');
    const { tally, hash12 } = require('./test/support/conv-paths');
    const { toBf16 } = require('./test/support/model-reference');
    const { refSpp } = require('./test/support/reference');
    const { refConv2d, refLinear } = require('./test/support/layers-reference');
    (async () => {
      if (process.env.SPPNET_AMX === '1' && !sp.backend().cpu.settings.amx) return console.log('no amx');
      const r = rng(${seed});
      let bad = 0;
      const t = tally(5e-5), hashes = [];
      for (const [rows, inF, outF, bf16Weights, math, relu] of [
        [300, 77, 45, false, 'fp32', true],
        [130, 600, 530, false, 'fp32', false],
        [257, 1100, 140, false, 'bf16', false],
        [200, 45, 70, false, 'bf16', true],
        [150, 1100, 40, true, 'fp32', false],
        [140, 33, 100, true, 'bf16', false],
      ]) {
        const x = Float32Array.from({ length: rows * inF }, () => r.normal());
        const w = Float32Array.from({ length: outF * inF }, () => r.normal() * 0.3);
        const b = Float32Array.from({ length: outF }, () => r.normal());
        // NaN and infinities in x's column 0 and the weights' column 1 (never multiplied together:
        // bf16x3 makes inf x inf a NaN, amx_cpu.h)
        x[r.int(0, rows - 1) * inF] = NaN;
        x[r.int(0, rows - 1) * inF] = r.int(0, 1) ? Infinity : -Infinity;
        w[r.int(0, outF - 1) * inF + 1] = r.int(0, 1) ? Infinity : -Infinity;
        const weight = bf16Weights ? await sp.toBF16(sp.tensor(w, [outF, inF])) : sp.tensor(w, [outF, inF]);
        const wr = bf16Weights ? w.map(toBf16) : w;
        const products = math === 'bf16' && rows >= (bf16Weights ? 8 : 256);  // BF16 ones
        const xs = products ? x.map(toBf16) : x, ws = products ? wr.map(toBf16) : wr;
        const out = sp.tensor(new Float32Array(rows * outF).fill(-6.5e31), [rows, outF]);
        const got = await (await sp.linear(sp.tensor(x, [rows, inF]), weight, sp.tensor(b, [outF]), { relu, out, math })).data();
        const ref = new Float64Array(rows * outF), mag = new Float64Array(rows * outF);
        for (let i = 0; i < rows; i++)
          for (let o = 0; o < outF; o++) {
            let s = b[o], m = Math.abs(b[o]);
            for (let k = 0; k < inF; k++) s += xs[i * inF + k] * ws[o * inF + k], m += Math.abs(xs[i * inF + k] * ws[o * inF + k]);
            ref[i * outF + o] = relu && s < 0 ? 0 : s;
            mag[i * outF + o] = m;
          }
        t.check(got, ref, mag, products ? 1e-5 : 5e-5);
        hashes.push(hash12([got]));
      }
      // No input features: the bias alone (x [130, 0]; the tiles' sums had no k step to start from).
      {
        const b = Float32Array.from({ length: 40 }, (_, i) => i - 20);
        const got = await (await sp.linear(sp.zeros([130, 0]), sp.zeros([40, 0]), sp.tensor(b, [40]))).data();
        got.forEach((v, i) => { if (v !== b[i % 40]) bad++; });
      }
      // A model's fc layers keep their packed weights in a cache of this path's size (16 + 64 x 64
      // floats for 40 -> 40; from 16 rows with one): the logits of 20 images against the reference;
      // spoiling the cache changes them, restored they are the same.
      if (process.env.SPPNET_AMX === '1') {
        const spec = { name: 'fc-cache', inChannels: 3, layers: [{ type: 'conv', name: 'conv1', out: 10, kernel: 3, relu: true }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'fc1', out: 40, relu: true }, { type: 'fc', name: 'fc2', out: 3 }] };
        const m = await sp.buildModel({ spec, seed: 3, device: 'cpu' });
        const sd = await m.stateDict(), W = (n) => sd.get(n).data;
        const imgs = Array.from({ length: 20 }, () => Float32Array.from({ length: 3 * 9 * 13 }, () => r.normal()));
        const ref = [];
        for (const data of imgs) {
          const f = refSpp([refConv2d({ data, C: 3, H: 9, W: 13 }, W('conv1.weight'), W('conv1.bias'), { cout: 10, kh: 3, kw: 3, stride: [1, 1], padding: [0, 0], relu: true })], { levels: [2, 1] });
          const h = refLinear(f, 1, 50, W('fc1.weight'), 40, W('fc1.bias'), true);
          ref.push(...refLinear(h, 1, 40, W('fc2.weight'), 3, W('fc2.bias')));
        }
        const run = async () => Array.from(await (await m.run(imgs.map((d) => sp.tensor(d, [3, 9, 13])))).data());
        const one = await run(), two = await run();
        [one, two].forEach((y) => y.forEach((v, j) => { if (!(Math.abs(v - ref[j]) <= 1e-4 * (1 + Math.abs(ref[j])))) bad++; }));
        const cache = m.filterCaches.get('fc1');
        if (!cache || cache.length !== 16 + 64 * 64) bad += 1000;
        else {
          const good = cache.slice(); // bit for bit (packed bfloat16 pairs may hold NaN patterns)
          cache.fill(0, 16);
          if (!(await run()).some((v, j) => Math.abs(v - one[j]) > 1e-3)) bad += 1000;
          cache.set(good);
          if ((await run()).some((v, j) => v !== one[j])) bad += 1000;
        }
        // Training keeps no cache: its forward runs the fc layers as sp.linear does.
        m.setOptimizer({ type: 'sgd', lr: 0.01 });
        const { loss } = await m.trainStep(imgs.map((d) => sp.tensor(d, [3, 9, 13])), imgs.map((_, i) => i % 3));
        if (!Number.isFinite(loss)) bad += 1000;
        m.dispose();
      }
      console.log('bad ' + (bad + t.bad) + ' ' + hashes.join(',') + ' worst ' + t.worst.toExponential(2));
    })();`;
  it('gives the reference (bf16x3 within 5e-5 of sum |w x|, BF16 products FP32-tight) on rows in several regions, K and outputs off the blocks, two K blocks, two weight slabs, FP32 and BF16Matrix weights, NaN/Inf, ReLU, poisoned out, a model\'s weight cache, a training step; 1 and 2 threads bit for bit; SPPNET_AMX=0 another order', function () {
    this.timeout(120000); // three child processes
    const seed = freshSeed();
    onAndOff(this, child(seed), seed, { flag: 'SPPNET_AMX', skip: 'no amx', pattern: /^bad 0 ([0-9a-f]{12},){5}[0-9a-f]{12} worst /, label: 'the AMX path ran (SPPNET_AMX=0 sums otherwise)' });
  });
});

describe('linear: BF16 products on AMX tiles by default (math \'bf16\')', function () {
  // Without SPPNET_AMX, on a CPU with AMX-BF16, linear's BF16 products (math 'bf16': FP32 weights
  // from 256 rows, a BF16Matrix from 8) take the tiles (from 128 rows, 16 in a model with its
  // weight cache), the same arithmetic as the AVX-512 BF16 kernels: FP32-tight against the rounded
  // operands; FP32 products stay on the FP32 kernels (bit-equal to SPPNET_AMX=0); SPPNET_AMX=0
  // gives other bits for the BF16 ones (the AVX-512 BF16 kernels).
  const child = (seed) => `
    const sp = require('./dist');
    const { rng } = require('./test/support/reference');
    const { tally, hash12 } = require('./test/support/conv-paths');
    const { toBf16 } = require('./test/support/model-reference');
    (async () => {
      const s = sp.backend().cpu.settings;
      if (process.env.SPPNET_AMX === undefined && !require('./dist/core/native').native.amxProductsGranted()) return console.log('no amx');  // no AMX, or Linux refused the tile state
      if (process.env.SPPNET_AMX === '0' && s.amxProducts) return console.log('SPPNET_AMX=0 left amxProducts on');
      if (s.amx) return console.log('bf16x3 on without SPPNET_AMX=1');
      const r = rng(${seed});
      const t = tally(1e-5), hashes = [], fp32 = [];
      let bad = 0;
      // (a BF16Matrix takes the tiles from 32 rows without a cache: 40 rows do, 20 rows keep the AVX-512 BF16 kernels)
      for (const [rows, inF, outF, bf16Weights, tiles = true] of [[257, 1100, 140, false], [140, 33, 100, true], [300, 70, 45, false], [40, 300, 70, true], [20, 300, 50, true, false]]) {
        const x = Float32Array.from({ length: rows * inF }, () => r.normal());
        const w = Float32Array.from({ length: outF * inF }, () => r.normal() * 0.3);
        const b = Float32Array.from({ length: outF }, () => r.normal());
        const weight = bf16Weights ? await sp.toBF16(sp.tensor(w, [outF, inF])) : sp.tensor(w, [outF, inF]);
        const xs = x.map(toBf16), ws = w.map(toBf16);
        for (const math of ['bf16', 'fp32']) {
          const out = sp.tensor(new Float32Array(rows * outF).fill(-6.5e31), [rows, outF]);
          const got = await (await sp.linear(sp.tensor(x, [rows, inF]), weight, sp.tensor(b, [outF]), { relu: true, out, math })).data();
          // BF16 products: both operands rounded; FP32 ones: the weights as stored
          const xr = math === 'bf16' ? xs : x, wr = math === 'bf16' || bf16Weights ? ws : w;
          const ref = new Float64Array(rows * outF), mag = new Float64Array(rows * outF);
          for (let i = 0; i < rows; i++)
            for (let o = 0; o < outF; o++) {
              let v = b[o], m = Math.abs(b[o]);
              for (let k = 0; k < inF; k++) v += xr[i * inF + k] * wr[o * inF + k], m += Math.abs(xr[i * inF + k] * wr[o * inF + k]);
              ref[i * outF + o] = Math.max(0, v);
              mag[i * outF + o] = m;
            }
          t.check(got, ref, mag, 1e-5);
          (math === 'bf16' && tiles ? hashes : fp32).push(hash12([got]));
        }
      }
      // A model with bfloat16 fc weights under math 'bf16' keeps a cache of BF16 parts (16 + 64 x 64 / 2 floats for 50 -> 40) from 16 rows.
      sp.setMath({ linear: 'bf16' });
      const spec = { name: 'fc-bf16', inChannels: 3, layers: [{ type: 'conv', name: 'conv1', out: 10, kernel: 3, relu: true }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'fc1', out: 40, relu: true }, { type: 'fc', name: 'fc2', out: 3 }] };
      const m = await sp.buildModel({ spec, seed: 3, device: 'cpu', linearWeights: 'bf16' });
      const imgs = Array.from({ length: 20 }, () => sp.tensor(Float32Array.from({ length: 3 * 9 * 13 }, () => r.normal()), [3, 9, 13]));
      const run = async () => Array.from(await (await m.run(imgs)).data());
      const y = await run();
      if (!y.every(Number.isFinite)) bad++;
      const cache = m.filterCaches.get('fc1');
      const size = cache ? cache.length : 0;
      if (size !== (process.env.SPPNET_AMX === '0' ? 0 : 16 + 64 * 32)) bad += 1000;
      // the cache read back (the same bits), spoiled (other logits), restored (the same again)
      if ((await run()).some((v, j) => v !== y[j])) bad += 1000;
      if (cache) {
        const good = cache.slice();
        cache.fill(0, 16);
        if (!(await run()).some((v, j) => Math.abs(v - y[j]) > 1e-3)) bad += 1000;
        cache.set(good);
        if ((await run()).some((v, j) => v !== y[j])) bad += 1000;
      }
      // (not among the hashes that must differ: 20 rows of K 50 and 40 of exact BF16 products may
      // sum to the same bits in either order)
      m.dispose();
      console.log('bad ' + (bad + t.bad) + ' ' + hashes.join(',') + ' fp32 ' + fp32.join(',') + ' worst ' + t.worst.toExponential(2) + ' cache ' + size);
    })();`;
  it('gives the reference (FP32-tight against the rounded operands) from FP32 and BF16Matrix weights, poisoned out, ReLU, and in a model with its weight cache; FP32 products untouched; 1 and 2 threads bit for bit; SPPNET_AMX=0 the AVX-512 BF16 kernels', function () {
    this.timeout(120000); // three child processes
    const seed = freshSeed();
    const [one, two, off] = onAndOffRuns(child(seed), 'SPPNET_AMX', null);
    if (one === 'no amx') this.skip();
    const form = /^bad 0 ((?:[0-9a-f]{12},){3}[0-9a-f]{12}) fp32 ((?:[0-9a-f]{12},){5}[0-9a-f]{12}) worst \S+ cache (\d+)$/;
    expect(one, `seed ${seed}`).to.match(form);
    expect(two, `seed ${seed}: the same sums on 2 threads`).to.equal(one);
    expect(off, `seed ${seed}: SPPNET_AMX=0`).to.match(form);
    const [, on16, on32, onCache] = one.match(form), [, off16, off32, offCache] = off.match(form);
    expect([onCache, offCache]).to.deep.equal([String(16 + 64 * 32), '0']);
    expect(on32, `seed ${seed}: FP32 products, and a BF16Matrix's BF16 ones on 20 rows, stay off the tiles`).to.equal(off32);
    on16.split(',').forEach((h, i) => expect(h, `seed ${seed} case ${i}: BF16 products on the tiles (the AVX-512 BF16 kernels with SPPNET_AMX=0)`).to.not.equal(off16.split(',')[i]));
  });
});

describe('conv2d: BF16 products on AMX tiles for math \'bf16\'', function () {
  // On a CPU with AMX-BF16 (and without SPPNET_AMX), conv2d with math 'bf16' multiplies on the
  // tiles with one BF16 product per term (each operand rounded to bfloat16, FP32 sums) where the
  // AMX path takes the conv (one group, >= 16 filters, a 1x1 from 64 inputs, not the lanes
  // path's strided convs): FP32-tight against the rounded operands. The other modes stay on the
  // FP32 kernels (bit-equal to SPPNET_AMX=0); with SPPNET_AMX=0 'bf16' is FP32 too (other bits).
  const child = (seed) => `
    const sp = require('./dist');
    const { rng, randomMap } = require('./test/support/reference');
    const { tally, hash12 } = require('./test/support/conv-paths');
    const { toBf16 } = require('./test/support/model-reference');
    const { refConv2d } = require('./test/support/layers-reference');
    (async () => {
      if (process.env.SPPNET_AMX === undefined && !require('./dist/core/native').native.amxProductsGranted()) return console.log('no amx');  // no AMX, or Linux refused the tile state
      const r = rng(${seed});
      const t = tally(1e-5), hashes = [], fp32 = [];
      for (const [c, sizes] of [
        [{ cin: 7, cout: 70, kh: 3, kw: 3, padding: [1, 1], relu: true }, [[9, 11], [20, 17], [1, 1]]],
        [{ cin: 130, cout: 64, kh: 1, kw: 1 }, [[5, 6], [12, 13]]],
        [{ cin: 40, cout: 96, kh: 3, kw: 3, stride: [2, 2] }, [[21, 19]]],
        [{ cin: 33, cout: 100, kh: 5, kw: 3, padding: [2, 0], dilation: [1, 2] }, [[8, 30], [16, 9]]],
        [{ cin: 64, cout: 16, kh: 1, kw: 1, relu: true }, [[7, 7], [14, 14]]],
        // below the path's bounds (15 filters; a 1x1 of 63 inputs; two groups): FP32 in every mode
        [{ cin: 8, cout: 15, kh: 3, kw: 3, padding: [1, 1], fp32: true }, [[10, 9]]],
        [{ cin: 63, cout: 40, kh: 1, kw: 1, fp32: true }, [[6, 11]]],
        [{ cin: 32, cout: 64, kh: 3, kw: 3, groups: 2, fp32: true }, [[9, 8]]],
      ]) {
        const maps = sizes.map(([H, W]) => randomMap(r, c.cin, H, W));
        maps[0].data[r.int(0, maps[0].data.length - 1)] = NaN;
        const w = Float32Array.from({ length: c.cout * (c.cin / (c.groups || 1)) * c.kh * c.kw }, () => r.normal() * 0.3);
        const b = Float32Array.from({ length: c.cout }, () => r.normal());
        const rb = sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W])));
        for (const math of ['bf16', 'tf32']) {
          if (c.fp32 && math === 'tf32') continue;
          const products = math === 'bf16' && !c.fp32;  // BF16 ones
          const round = (a) => (products ? a.map(toBf16) : a);
          const refs = maps.map((m) => refConv2d({ ...m, data: round(m.data) }, round(w), b, c));
          const mags = maps.map((m) => refConv2d({ ...m, data: round(m.data).map(Math.abs) }, round(w).map(Math.abs), b.map(Math.abs), { ...c, relu: false }));
          const out = sp.ragged(refs.map((e) => sp.tensor(new Float32Array(c.cout * e.H * e.W).fill(-6.5e31), [c.cout, e.H, e.W])));
          const got = await (await sp.conv2d(rb, sp.tensor(w, [c.cout, c.cin / (c.groups || 1), c.kh, c.kw]), sp.tensor(b, [c.cout]), { ...c, out, math })).arrays();
          refs.forEach((e, i) => t.check(got[i], e.data, mags[i].data, products ? 1e-5 : 2e-6));
          (products ? hashes : fp32).push(hash12(got));
        }
      }
      // A model under setMath({ conv: 'bf16' }) keeps its filters packed as BF16 parts: 16 + 64 x 32 / 2 floats for 3 -> 64, 3 x 3.
      sp.setMath({ conv: 'bf16' });
      const spec = { name: 'conv-bf16', inChannels: 3, layers: [{ type: 'conv', name: 'conv1', out: 64, kernel: 3, relu: true }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'fc', out: 3 }] };
      const m = await sp.buildModel({ spec, seed: 3, device: 'cpu' });
      const y = await (await m.run([sp.tensor(Float32Array.from({ length: 3 * 12 * 10 }, () => r.normal()), [3, 12, 10])])).data();
      const cache = m.filterCaches.get('conv1');
      hashes.push(hash12([y]));
      m.dispose();
      console.log('bad ' + t.bad + ' ' + hashes.join(',') + ' fp32 ' + fp32.join(',') + ' worst ' + t.worst.toExponential(2) + ' cache ' + (cache ? cache.length : 0));
    })();`;
  it('gives the reference (FP32-tight against the rounded operands): 3x3 with padding, 1x1 from its planes, stride 2, dilation, ragged maps, NaN, poisoned out, a model\'s filter cache; other modes untouched; 1 and 2 threads bit for bit; SPPNET_AMX=0 FP32', function () {
    this.timeout(120000); // three child processes
    const seed = freshSeed();
    const [one, two, off] = onAndOffRuns(child(seed), 'SPPNET_AMX', null);
    if (one === 'no amx') this.skip();
    const form = /^bad 0 ((?:[0-9a-f]{12},){5}[0-9a-f]{12}) fp32 ((?:[0-9a-f]{12},){7}[0-9a-f]{12}) worst \S+ cache (\d+)$/;
    expect(one, `seed ${seed}`).to.match(form);
    expect(two, `seed ${seed}: the same sums on 2 threads`).to.equal(one);
    const [, on16, on32, onCache] = one.match(form);
    // SPPNET_AMX=0: 'bf16' is FP32 (further from the rounded operands' reference: not checked there)
    const offForm = /^bad \d+ ((?:[0-9a-f]{12},){5}[0-9a-f]{12}) fp32 ((?:[0-9a-f]{12},){7}[0-9a-f]{12}) worst \S+ cache (\d+)$/;
    expect(off, `seed ${seed}: SPPNET_AMX=0`).to.match(offForm);
    const [, off16, off32, offCache] = off.match(offForm);
    expect(onCache, 'the BF16 parts cache').to.equal(String(16 + 64 * 32 / 2));
    expect(offCache, 'no AMX cache with SPPNET_AMX=0').to.not.equal(onCache);
    expect(on32, `seed ${seed}: FP32 modes, and 'bf16' below the path's bounds, stay on the FP32 kernels`).to.equal(off32);
    on16.split(',').forEach((h, i) => expect(h, `seed ${seed} case ${i}: BF16 products on the tiles (FP32 with SPPNET_AMX=0)`).to.not.equal(off16.split(',')[i]));
  });
});

describe('conv2dBackward and linearBackward: the CPU AMX path (SPPNET_AMX=1)', function () {
  // With SPPNET_AMX=1 the backward's GEMMs (gemm_nn: conv2d's dW and dX, linear's dx and dW) take
  // bf16x3 on AMX tiles where every side is at least 32 and K at least 64: within 5e-5 of the sum
  // of |terms| of each gradient element (float64 reference). Checked on ragged batches (runs of
  // several maps, groups, stride 2, K off the blocks) and linear with rows, inputs and outputs off
  // the blocks; 1 and 2 threads bit for bit; SPPNET_AMX=0 gives other bits.
  const child = (seed) => `
    const sp = require('./dist');
    const { rng, randomMap } = require('./test/support/reference');
    const { tally, hash12 } = require('./test/support/conv-paths');
    const { refConv2dBackward, refLinearBackward } = require('./test/support/grad-reference');
    (async () => {
      if (process.env.SPPNET_AMX === '1' && !sp.backend().cpu.settings.amx) return console.log('no amx');
      const r = rng(${seed});
      let bad = 0;
      const t = tally(5e-5), hashes = [];
      const normal = (n, s = 1) => Float32Array.from({ length: n }, () => r.normal() * s);
      for (const [c, sizes] of [
        [{ cin: 20, cout: 80, kh: 3, kw: 3, padding: [1, 1] }, [[12, 13], [9, 20], [5, 7]]],
        [{ cin: 40, cout: 96, kh: 3, kw: 3, padding: [1, 1], groups: 2 }, [[10, 11], [6, 9]]],
        [{ cin: 70, cout: 64, kh: 3, kw: 3, stride: [2, 2] }, [[17, 23]]],
      ]) {
        const g = c.groups || 1, wn = c.cout * (c.cin / g) * c.kh * c.kw;
        const maps = sizes.map(([H, W]) => randomMap(r, c.cin, H, W));
        const w = normal(wn, 0.3);
        const side = (a, k, s = 1, p = 0) => Math.floor((a + 2 * p - k) / s) + 1;
        const refs = maps.map((m) => {
          const H = side(m.H, c.kh, c.stride?.[0], c.padding?.[0]), W = side(m.W, c.kw, c.stride?.[1], c.padding?.[1]);
          return { gy: normal(c.cout * H * W), H, W };
        });
        const abs = (a) => a.map(Math.abs);
        const res = await sp.conv2dBackward(sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W]))), sp.tensor(w, [c.cout, c.cin / g, c.kh, c.kw]),
          sp.ragged(refs.map((e) => sp.tensor(e.gy, [c.cout, e.H, e.W]))), c);
        const dxs = await res.gradInput.arrays(), dw = await res.gradWeight.data();
        const dwRef = new Float64Array(wn), dwMag = new Float64Array(wn);
        maps.forEach((m, i) => {
          const ref = refConv2dBackward(m, w, refs[i].gy, c), mag = refConv2dBackward({ ...m, data: abs(m.data) }, abs(w), abs(refs[i].gy), c);
          t.check(dxs[i], ref.dx, mag.dx);
          ref.dw.forEach((v, k) => { dwRef[k] += v; dwMag[k] += mag.dw[k]; });
        });
        t.check(dw, dwRef, dwMag);
        hashes.push(hash12([...dxs, dw]));
      }
      for (const [rows, inF, outF] of [[70, 100, 90], [300, 65, 33]]) {
        const x = normal(rows * inF), w = normal(outF * inF, 0.3), gy = normal(rows * outF);
        const res = await sp.linearBackward(sp.tensor(x, [rows, inF]), sp.tensor(w, [outF, inF]), sp.tensor(gy, [rows, outF]));
        const dx = await res.gradInput.data(), dw = await res.gradWeight.data();
        const ref = refLinearBackward(x, rows, inF, w, outF, gy), mag = refLinearBackward(x.map(Math.abs), rows, inF, w.map(Math.abs), outF, gy.map(Math.abs));
        t.check(dx, ref.dx, mag.dx);
        t.check(dw, ref.dw, mag.dw);
        hashes.push(hash12([dx, dw]));
      }
      console.log('bad ' + (bad + t.bad) + ' ' + hashes.join(',') + ' worst ' + t.worst.toExponential(2));
    })();`;
  it('gives the reference within 5e-5 of sum |terms| (ragged runs, groups, stride 2, K off the blocks; linear off the blocks); 1 and 2 threads bit for bit; SPPNET_AMX=0 another order', function () {
    this.timeout(120000); // three child processes
    const seed = freshSeed();
    onAndOff(this, child(seed), seed, { flag: 'SPPNET_AMX', skip: 'no amx', pattern: /^bad 0 ([0-9a-f]{12},){4}[0-9a-f]{12} worst /, label: 'the AMX path ran (SPPNET_AMX=0 sums otherwise)' });
  });
});

describe('conv2d on every CPU instruction set', function () {
  // The GEMM and im2col have AVX-512, AVX2 and portable paths; SPPNET_CPU_ISA picks a narrower
  // one than the CPU has, so each is checked here (the native one by the tests above).
  // SPPNET_DEVICE=cpu: the child's tensors must be on the CPU, also where a GPU is the default.
  const { runNode } = require('./support/child');
  const path = require('path');
  for (const isa of ['avx2', 'portable']) {
    it(`${isa}: ragged maps, groups, strides, 1x1, K in two blocks, Winograd 3x3, linear with few and many rows (FP32 and bfloat16 weights), LRN and LRN + max pool, max pool, against the references`, function () {
      const seed = freshSeed();
      const code = `
        const sp = require('./dist');
        const { rng, randomMap } = require('./test/support/reference');
        const { refConv2d, refLinear, refLrn, refMaxPool2d } = require('./test/support/layers-reference');
        (async () => {
          const r = rng(${seed});
          let bad = 0;
          // small maps side by side (runs of columns, many per vector), and one large map on its
          // own (packed and multiplied a few panels at a time): stride 1, 2 and 3 (gathers)
          const small = [[3, 5], [7, 40], [20, 19], [33, 9]], large = [[45, 83]];
          for (const [c, sizes] of [
            [{ cin: 80, cout: 13, kh: 3, kw: 3, padding: [1, 1], relu: true }, small],
            [{ cin: 6, cout: 38, kh: 3, kw: 5, stride: [1, 2], padding: [1, 2], groups: 2 }, small],
            [{ cin: 40, cout: 36, kh: 3, kw: 3, padding: [1, 1], relu: true }, small],
            [{ cin: 5, cout: 11, kh: 3, kw: 3, padding: [1, 1], relu: true }, large],
            [{ cin: 3, cout: 14, kh: 7, kw: 7, stride: [2, 2], padding: [3, 3] }, large],
            [{ cin: 4, cout: 9, kh: 5, kw: 5, stride: [3, 3], padding: [2, 2] }, large],
            // 1x1: panels of consecutive pixels are plain copies; those across a map's end, with
            // padding or with a stride are not
            [{ cin: 24, cout: 10, kh: 1, kw: 1, relu: true }, small],
            [{ cin: 9, cout: 7, kh: 1, kw: 1 }, large],
            [{ cin: 9, cout: 7, kh: 1, kw: 1, padding: [1, 0] }, small],
            [{ cin: 9, cout: 7, kh: 1, kw: 1, stride: [2, 2] }, large],
          ]) {
            const maps = sizes.map(([H, W]) => randomMap(r, c.cin, H, W));
            const w = Float32Array.from({ length: c.cout * (c.cin / (c.groups || 1)) * c.kh * c.kw }, () => r.normal() * 0.3);
            const b = Float32Array.from({ length: c.cout }, () => r.normal());
            const rb = sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W], { device: 'cpu' })));
            const got = await (await sp.conv2d(rb, sp.tensor(w, [c.cout, c.cin / (c.groups || 1), c.kh, c.kw]), sp.tensor(b, [c.cout]), c)).arrays();
            maps.forEach((m, i) => refConv2d(m, w, b, c).data.forEach((e, j) => { if (!(Math.abs(got[i][j] - e) <= 2e-4 * (1 + Math.abs(e)))) bad++; }));
          }
          // linear with many rows runs on the same GEMM (x^T packed as its B)
          const [rows, inF, outF] = [40, 700, 50];
          const x = Float32Array.from({ length: rows * inF }, () => r.normal());
          const lw = Float32Array.from({ length: outF * inF }, () => r.normal() * 0.2);
          const lb = Float32Array.from({ length: outF }, () => r.normal());
          const ly = await (await sp.linear(sp.tensor(x, [rows, inF]), sp.tensor(lw, [outF, inF]), sp.tensor(lb, [outF]), { relu: true })).data();
          refLinear(x, rows, inF, lw, outF, lb, true).forEach((e, j) => { if (!(Math.abs(ly[j] - e) <= 2e-4 * (1 + Math.abs(e)))) bad++; });
          // and with few rows (1 to 7: the weight-streaming kernels), inputs and outputs off their vector and block sizes
          for (const fr of [1, 2, 3, 4, 5, 7]) {
            const [fin, fout] = [203, 29];
            const fx = Float32Array.from({ length: fr * fin }, () => r.normal());
            const fw = Float32Array.from({ length: fout * fin }, () => r.normal() * 0.2);
            const fb = Float32Array.from({ length: fout }, () => r.normal());
            const fy = await (await sp.linear(sp.tensor(fx, [fr, fin]), sp.tensor(fw, [fout, fin]), sp.tensor(fb, [fout]), { relu: fr % 2 === 1 })).data();
            refLinear(fx, fr, fin, fw, fout, fb, fr % 2 === 1).forEach((e, j) => { if (!(Math.abs(fy[j] - e) <= 2e-4 * (1 + Math.abs(e)))) bad++; });
            // bfloat16 weights (a BF16Matrix): against the FP32 reference on the rounded weights
            const fm = await sp.toBF16(sp.tensor(fw, [fout, fin]));
            const fwr = await fm.data();
            const fyb = await (await sp.linear(sp.tensor(fx, [fr, fin]), fm, sp.tensor(fb, [fout]), { relu: fr % 2 === 1 })).data();
            refLinear(fx, fr, fin, fwr, fout, fb, fr % 2 === 1).forEach((e, j) => { if (!(Math.abs(fyb[j] - e) <= 2e-4 * (1 + Math.abs(e)))) bad++; });
          }
          // LRN (+ max pool, fused): the AVX-512 rows and the portable loops
          const lrn = { size: 5, alpha: 0.5, beta: 0.75, k: 1 }, pool = { kernel: [3, 3], stride: [2, 2], padding: [1, 1] };
          const lm = [[9, 11], [4, 3], [23, 37]].map(([H, W]) => randomMap(r, 7, H, W));
          const lrb = sp.ragged(lm.map((m) => sp.tensor(m.data, [m.C, m.H, m.W])));
          const lo = await (await sp.lrnMaxPool2d(lrb, { lrn, pool })).arrays();
          const ln = await (await sp.localResponseNorm(lrb, lrn)).arrays();
          lm.forEach((m, i) => {
            const rl = refLrn(m, lrn);
            rl.data.forEach((e, j) => { if (!(Math.abs(ln[i][j] - e) <= 1e-5 * (1 + Math.abs(e)))) bad++; });
            refMaxPool2d(rl, pool).data.forEach((e, j) => { if (!(Math.abs(lo[i][j] - e) <= 1e-5 * (1 + Math.abs(e)))) bad++; });
          });
          // max pooling alone: strides 1 and 2 (vector rows), 3 (portable), widths off the vector
          // length, ceil mode, NaNs (a NaN in a window makes its output NaN)
          const pm = [[3, 5], [5, 9], [17, 33], [30, 70]].map(([H, W]) => randomMap(r, 3, H, W));
          pm[2].data[40] = NaN, pm[3].data[7 * 70 + 69] = NaN;
          const prb = sp.ragged(pm.map((m) => sp.tensor(m.data, [m.C, m.H, m.W])));
          for (const o of [{ kernel: [3, 3], stride: [1, 1], padding: [1, 1] }, { kernel: [3, 3], stride: [2, 2], ceilMode: true },
            { kernel: [2, 5], stride: [2, 2], padding: [1, 2] }, { kernel: [3, 3], stride: [3, 3] }]) {
            const po = await (await sp.maxPool2d(prb, o)).arrays();
            pm.forEach((m, i) => refMaxPool2d(m, o).data.forEach((e, j) => { if (!Object.is(po[i][j], e) && !(Number.isNaN(e) && Number.isNaN(po[i][j]))) bad++; }));
          }
          console.log(sp.backend().cpu.isa + ' ' + bad);
        })();`;
      const res = runNode(['-e', code], { cwd: path.resolve(__dirname, '..'), env: { ...process.env, SPPNET_CPU_ISA: isa, SPPNET_WINOGRAD_MIN_CHANNELS: '32', SPPNET_DEVICE: 'cpu' } });
      expect(res.stderr).to.equal('');
      expect(res.stdout.trim(), `seed ${seed}`).to.equal(`${isa} 0`);
    });
  }
});
