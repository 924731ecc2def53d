'use strict';
// Training ops (backward passes, dropout, loss, optimizer steps) against plain float64 references
// on random ragged batches with fresh seeds (SPPNET_TEST_SEED replays one), finite differences of
// scalar losses, and bad input. Every element of every result is compared (results are fresh
// allocations, uninitialised on CUDA, so an element a kernel forgets shows). On CUDA the same
// checks run when sp.backend().device is 'cuda'; otherwise they skip, printing the reason.
const { expect } = require('chai');
const { sp, expectClose, expectReject } = require('./support/helpers');
const { rng, freshSeed, randomMap } = require('./support/reference');
const { refConv2d, refLrn, refLinear } = require('./support/layers-reference');
const {
  refConv2dBackward, refMaxPool2dBackward, refLrnBackward, refLinearBackward, refSoftmaxCrossEntropy, refSgdStep, refAdamStep,
} = require('./support/grad-reference');

const rand = (r, n, scale = 1) => Float32Array.from({ length: n }, () => r.normal() * scale);

for (const device of ['cpu', 'cuda']) {
  describe(`training ops on ${device}`, function () {
    before(function () {
      if (device === 'cuda' && sp.backend().device !== 'cuda') {
        console.log(`      CUDA training tests skipped: ${sp.backend().reason}`);
        this.skip();
      }
      // The references are FP32-tight: the forward passes here run in the FP32 mode (test/math.test.js covers TF32/BF16).
      this.savedMath = sp.getMath();
      sp.setMath({ conv: 'fp32', linear: 'fp32' });
    });
    after(function () {
      if (this.savedMath) sp.setMath(this.savedMath);
    });

    const T = (data, shape) => sp.tensor(data, shape, { device });
    const batchOf = (maps) => sp.ragged(maps.map((m) => T(m.data, [m.C, m.H, m.W])));
    const raggedLike = (maps, arrays) => sp.ragged(maps.map((m, i) => T(arrays[i], [m.C, m.H, m.W])));

    describe('conv2dBackward', function () {
      const cases = [
        { cin: 3, cout: 4, kh: 3, kw: 3, stride: [2, 2], padding: [1, 1] },
        { cin: 4, cout: 6, kh: 3, kw: 2, dilation: [2, 2], padding: [2, 1], groups: 2 },
        { cin: 6, cout: 4, kh: 5, kw: 3, stride: [2, 1], padding: [2, 0], groups: 2 },
        { cin: 5, cout: 3, kh: 1, kw: 1 },
        { cin: 2, cout: 5, kh: 3, kw: 3, padding: [1, 1], stride: [1, 1] },
      ];
      for (const c of cases) {
        it(`matches the reference on a ragged batch: ${JSON.stringify(c)}`, async function () {
          const seed = freshSeed();
          const r = rng(seed);
          const g = c.groups || 1;
          const dil = c.dilation || [1, 1], pad = c.padding || [0, 0];
          const minH = Math.max(1, dil[0] * (c.kh - 1) + 1 - 2 * pad[0]), minW = Math.max(1, dil[1] * (c.kw - 1) + 1 - 2 * pad[1]);
          const maps = Array.from({ length: 4 }, () => randomMap(r, c.cin, r.int(minH, minH + 12), r.int(minW, minW + 12)));
          maps.push(randomMap(r, c.cin, minH, minW)); // the smallest map the kernel fits (1x1 for 1x1 kernels or padding)
          const w = rand(r, c.cout * (c.cin / g) * c.kh * c.kw, 0.5);
          const outs = maps.map((m) => refConv2d(m, w, null, c));
          const gys = outs.map((o) => rand(r, o.data.length));
          const res = await sp.conv2dBackward(batchOf(maps), T(w, [c.cout, c.cin / g, c.kh, c.kw]), raggedLike(outs, gys), c);
          expect(res.gradInput).to.be.instanceOf(sp.RaggedBatch);
          expect(res.gradInput.device).to.equal(device);
          expect(res.gradWeight.shape).to.deep.equal([c.cout, c.cin / g, c.kh, c.kw]);
          expect(res.gradBias.shape).to.deep.equal([c.cout]);
          const dxs = await res.gradInput.arrays();
          const dw = new Float64Array(w.length), db = new Float64Array(c.cout);
          maps.forEach((m, i) => {
            const ref = refConv2dBackward(m, w, gys[i], c);
            expectClose(dxs[i], ref.dx, { rtol: 1e-4, atol: 1e-4, label: `seed ${seed} map ${i} dx` });
            ref.dw.forEach((v, k) => (dw[k] += v));
            ref.db.forEach((v, k) => (db[k] += v));
          });
          expectClose(await res.gradWeight.data(), dw, { rtol: 1e-4, atol: 1e-3, label: `seed ${seed} dw` });
          expectClose(await res.gradBias.data(), db, { rtol: 1e-4, atol: 1e-3, label: `seed ${seed} db` });
        });
      }

      it('writes every element of the parameter gradients (Model.trainStep reuses its buffers unzeroed): into poisoned buffers, the same as new ones (conv2d on a ragged batch and on no maps, linear on many, few and no rows)', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const poisoned = (shape) => T(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN), shape);
        const same = async (label, run, wShape, bShape) => {
          const fresh = await run(undefined);
          const into = { weight: poisoned(wShape), bias: poisoned(bShape) };
          const kept = await run(into);
          expect(kept.gradWeight, label).to.equal(into.weight);
          expect(kept.gradBias, label).to.equal(into.bias);
          expect(Array.from(await kept.gradWeight.data()), `seed ${seed} ${label} gradWeight`).to.deep.equal(Array.from(await fresh.gradWeight.data()));
          expect(Array.from(await kept.gradBias.data()), `seed ${seed} ${label} gradBias`).to.deep.equal(Array.from(await fresh.gradBias.data()));
        };
        const c = { cin: 4, cout: 6, kh: 3, kw: 3, padding: [1, 1] };
        const maps = [randomMap(r, 4, 7, 9), randomMap(r, 4, 3, 5)];
        const w = rand(r, 6 * 4 * 9, 0.3);
        const gys = maps.map((m) => rand(r, 6 * m.H * m.W));
        await same('conv2d', (into) => sp.conv2dBackward(batchOf(maps), T(w, [6, 4, 3, 3]), raggedLike(maps.map((m) => ({ ...m, C: 6 })), gys), { ...c, into }), [6, 4, 3, 3], [6]);
        await same('conv2d, no maps', (into) => sp.conv2dBackward(T(new Float32Array(0), [0, 4, 5, 5]), T(w, [6, 4, 3, 3]), T(new Float32Array(0), [0, 6, 5, 5]), { padding: 1, into }), [6, 4, 3, 3], [6]);
        for (const rows of [40, 3, 0]) {
          const x = rand(r, rows * 20), wl = rand(r, 7 * 20), gy = rand(r, rows * 7);
          await same(`linear, ${rows} rows`, (into) => sp.linearBackward(T(x, [rows, 20]), T(wl, [7, 20]), T(gy, [rows, 7]), { into }), [7, 20], [7]);
        }
      });

      it('dense input, needInputGrad false and bias false leave those gradients out', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const [N, C, H, W, cout] = [3, 3, 9, 7, 5];
        const x = rand(r, N * C * H * W), w = rand(r, cout * C * 9, 0.3);
        const opts = { cout, kh: 3, kw: 3, stride: [2, 2], padding: [1, 1] };
        const Ho = 5, Wo = 4;
        const gy = rand(r, N * cout * Ho * Wo);
        const X = T(x, [N, C, H, W]), Wt = T(w, [cout, C, 3, 3]), G = T(gy, [N, cout, Ho, Wo]);
        const full = await sp.conv2dBackward(X, Wt, G, { stride: 2, padding: 1 });
        expect(full.gradInput.shape).to.deep.equal([N, C, H, W]);
        const part = await sp.conv2dBackward(X, Wt, G, { stride: 2, padding: 1, needInputGrad: false, bias: false });
        expect(part.gradInput).to.equal(undefined);
        expect(part.gradBias).to.equal(undefined);
        const dx = await full.gradInput.data();
        const dw = new Float64Array(w.length);
        for (let n = 0; n < N; n++) {
          const m = { data: x.subarray(n * C * H * W, (n + 1) * C * H * W), C, H, W };
          const ref = refConv2dBackward(m, w, gy.subarray(n * cout * Ho * Wo, (n + 1) * cout * Ho * Wo), opts);
          expectClose(dx.subarray(n * C * H * W, (n + 1) * C * H * W), ref.dx, { rtol: 1e-4, atol: 1e-4, label: `seed ${seed} n ${n}` });
          ref.dw.forEach((v, k) => (dw[k] += v));
        }
        expectClose(await part.gradWeight.data(), dw, { rtol: 1e-4, atol: 1e-3, label: `seed ${seed} dw` });
        expect(Array.from(await part.gradWeight.data())).to.deep.equal(Array.from(await full.gradWeight.data()));
        // One map [C, H, W] gives [C, H, W].
        const one = await sp.conv2dBackward(T(x.subarray(0, C * H * W), [C, H, W]), Wt, T(gy.subarray(0, cout * Ho * Wo), [cout, Ho, Wo]), { stride: 2, padding: 1 });
        expect(one.gradInput.shape).to.deep.equal([C, H, W]);
        expectClose(await one.gradInput.data(), dx.subarray(0, C * H * W), { label: `seed ${seed} single` });
      });

      it('an empty dense batch [0, C, H, W] gives zero weight and bias gradients and an empty gradInput of its shape', async function () {
        const x = sp.zeros([0, 3, 5, 5], { device }), w = sp.full([4, 3, 3, 3], 1, { device });
        const y = await sp.conv2d(x, w, null);
        const g = await sp.conv2dBackward(x, w, y);
        expect(g.gradInput.shape).to.deep.equal([0, 3, 5, 5]);
        expect(Array.from(await g.gradWeight.data()).every((v) => v === 0)).to.equal(true);
        expect(Array.from(await g.gradBias.data())).to.deep.equal([0, 0, 0, 0]);
        const lb = await sp.linearBackward(sp.zeros([0, 4], { device }), w.reshape([27, 4]), sp.zeros([0, 27], { device }));
        expect(lb.gradInput.shape).to.deep.equal([0, 4]);
        expect(Array.from(await lb.gradWeight.data()).every((v) => v === 0)).to.equal(true);
      });

      it('weight gradients are deterministic (the same bits on every run)', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const maps = Array.from({ length: 6 }, () => randomMap(r, 4, r.int(5, 30), r.int(5, 30)));
        const w = T(rand(r, 8 * 4 * 9), [8, 4, 3, 3]);
        const x = batchOf(maps);
        const y = await sp.conv2d(x, w, null, { padding: 1 });
        const a = await sp.conv2dBackward(x, w, y, { padding: 1 });
        const b = await sp.conv2dBackward(x, w, y, { padding: 1 });
        expect(Array.from(await a.gradWeight.data())).to.deep.equal(Array.from(await b.gradWeight.data()));
        expect(Array.from(await a.gradBias.data())).to.deep.equal(Array.from(await b.gradBias.data()));
      });

      it('finite differences agree with dx, dw and db', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const [C, H, W, cout, k] = [2, 5, 6, 3, 3];
        const opts = { stride: [2, 1], padding: [1, 1], dilation: [1, 2] };
        const x = rand(r, C * H * W), w = rand(r, cout * C * k * k, 0.5), b = rand(r, cout);
        const y0 = await sp.conv2d(T(x, [1, C, H, W]), T(w, [cout, C, k, k]), T(b, [cout]), opts);
        const wts = rand(r, y0.size);
        const loss = async (xs, ws, bs) => {
          const out = await (await sp.conv2d(T(xs, [1, C, H, W]), T(ws, [cout, C, k, k]), T(bs, [cout]), opts)).data();
          return out.reduce((a, v, i) => a + v * wts[i], 0);
        };
        const g = await sp.conv2dBackward(T(x, [1, C, H, W]), T(w, [cout, C, k, k]), T(wts, y0.shape), opts);
        const eps = 0.05;
        const check = async (arr, grad, which, fwd) => {
          for (let i = 0; i < arr.length; i++) {
            const p = Float32Array.from(arr), m = Float32Array.from(arr);
            p[i] += eps;
            m[i] -= eps;
            const fd = ((await fwd(p)) - (await fwd(m))) / (p[i] - m[i]);
            expect(Math.abs(fd - grad[i]), `seed ${seed} ${which}[${i}]: fd ${fd} vs ${grad[i]}`).to.be.below(2e-3 * (1 + Math.abs(fd)));
          }
        };
        await check(x, await g.gradInput.data(), 'dx', (xs) => loss(xs, w, b));
        await check(w, await g.gradWeight.data(), 'dw', (ws) => loss(x, ws, b));
        await check(b, await g.gradBias.data(), 'db', (bs) => loss(x, w, bs));
      });
    });

    describe('maxPool2dBackward', function () {
      const cases = [
        { kernel: [3, 3], stride: [2, 2] },
        { kernel: [3, 3], stride: [2, 2], padding: [1, 1] },
        { kernel: [2, 3], stride: [2, 1], ceilMode: true },
        { kernel: [3, 3], stride: [3, 3], padding: [1, 1], ceilMode: true },
        { kernel: [3, 3], stride: [1, 1], padding: [1, 1] },
      ];
      for (const o of cases) {
        it(`matches PyTorch's routing on a ragged batch with ties and small maps: ${JSON.stringify(o)}`, async function () {
          const seed = freshSeed();
          const r = rng(seed);
          const maps = Array.from({ length: 5 }, () => randomMap(r, 3, r.int(3, 20), r.int(3, 20)));
          if (o.padding) maps.push(randomMap(r, 3, 1, 1), randomMap(r, 3, 2, 1)); // smaller than the window, padded
          // Ties: values rounded to a few levels, so that windows often hold several maxima.
          maps.forEach((m) => m.data.forEach((v, i) => (m.data[i] = Math.round(v * 1.5) / 2)));
          const x = batchOf(maps);
          const y = await sp.maxPool2d(x, o);
          const gys = y.sizes.map(([h, w]) => rand(r, 3 * h * w));
          const dx = await sp.maxPool2dBackward(x, sp.ragged(gys.map((g, i) => T(g, [3, ...y.sizes[i]]))), o);
          expect(dx).to.be.instanceOf(sp.RaggedBatch);
          const got = await dx.arrays();
          maps.forEach((m, i) => {
            const ref = refMaxPool2dBackward(m, gys[i], o);
            expect([ref.H, ref.W]).to.deep.equal([...y.sizes[i]]);
            expectClose(got[i], ref.dx, { rtol: 1e-6, atol: 1e-6, label: `seed ${seed} map ${i}` });
          });
        });
      }

      it('NaN in a window takes the gradient (the last NaN, as PyTorch); dense input', async function () {
        const x = new Float32Array(2 * 4 * 4).map((_, i) => i % 7);
        x[5] = NaN;
        x[6] = NaN; // same 2x2 window (rows 1, cols 0-1 and 2-3 of plane 0: windows differ) -> see the reference
        x[16 + 0] = NaN;
        x[16 + 5] = NaN; // both in window (0, 0) of plane 1: the later one wins
        const g = Float32Array.from({ length: 2 * 2 * 2 }, (_, i) => i + 1);
        const dx = await sp.maxPool2dBackward(T(x, [1, 2, 4, 4]), T(g, [1, 2, 2, 2]), { kernel: 2 });
        expect(dx.shape).to.deep.equal([1, 2, 4, 4]);
        const ref = refMaxPool2dBackward({ data: x, C: 2, H: 4, W: 4 }, g, { kernel: [2, 2] });
        expectClose(await dx.data(), ref.dx, { label: 'NaN routing' });
        expect((await dx.data())[16 + 5]).to.equal(5);
      });

      it('finite differences agree with the gradient (distinct, well-separated values)', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const [C, H, W] = [2, 7, 6];
        const perm = Array.from({ length: C * H * W }, (_, i) => i).sort(() => r.next() - 0.5);
        const x = Float32Array.from(perm, (p) => p * 0.5 + r.next() * 0.01);
        const o = { kernel: 3, stride: 2, padding: 1, ceilMode: true };
        const y = await sp.maxPool2d(T(x, [1, C, H, W]), o);
        const wts = rand(r, y.size);
        const loss = async (xs) => (await (await sp.maxPool2d(T(xs, [1, C, H, W]), o)).data()).reduce((a, v, i) => a + v * wts[i], 0);
        const dx = await (await sp.maxPool2dBackward(T(x, [1, C, H, W]), T(wts, y.shape), o)).data();
        for (let i = 0; i < x.length; i++) {
          const p = Float32Array.from(x), m = Float32Array.from(x);
          p[i] += 0.05;
          m[i] -= 0.05;
          const fd = ((await loss(p)) - (await loss(m))) / (p[i] - m[i]);
          expect(Math.abs(fd - dx[i]), `seed ${seed} element ${i}: fd ${fd} vs ${dx[i]}`).to.be.below(1e-3 * (1 + Math.abs(fd)));
        }
      });
    });

    describe('localResponseNormBackward', function () {
      for (const o of [{ size: 5, alpha: 1e-4, beta: 0.75, k: 1 }, { size: 4, alpha: 0.5, beta: 0.6, k: 2 }, { size: 1, alpha: 1, beta: 1, k: 1 }, { size: 3, alpha: 2, beta: 0.75, k: 1 }]) {
        it(`matches the reference on a ragged batch: ${JSON.stringify(o)}`, async function () {
          const seed = freshSeed();
          const r = rng(seed);
          const maps = Array.from({ length: 4 }, () => randomMap(r, 7, r.int(1, 9), r.int(1, 9)));
          maps.push(randomMap(r, 7, 2, r.int(17, 47)), randomMap(r, 7, 1, 16)); // rows of a chunk of 16 pixels and a tail, and exactly one chunk
          maps.forEach((m) => m.data.forEach((v, i) => (m.data[i] = v * 2)));
          const gys = maps.map((m) => rand(r, m.data.length));
          const dx = await sp.localResponseNormBackward(batchOf(maps), raggedLike(maps, gys), o);
          const got = await dx.arrays();
          maps.forEach((m, i) => expectClose(got[i], refLrnBackward(m, gys[i], o), { rtol: 2e-4, atol: 2e-5, label: `seed ${seed} map ${i}` }));
        });
      }

      it('finite differences agree with the gradient', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const [C, H, W] = [6, 3, 2];
        const o = { size: 3, alpha: 1.5, beta: 0.75, k: 1 };
        const x = rand(r, C * H * W);
        const wts = rand(r, C * H * W);
        const loss = (xs) => refLrn({ data: xs, C, H, W }, o).data.reduce((a, v, i) => a + v * wts[i], 0);
        const lossDev = async (xs) => (await (await sp.localResponseNorm(T(xs, [C, H, W]), o)).data()).reduce((a, v, i) => a + v * wts[i], 0);
        const dx = await (await sp.localResponseNormBackward(T(x, [C, H, W]), T(wts, [C, H, W]), o)).data();
        for (let i = 0; i < x.length; i++) {
          const p = Float64Array.from(x), m = Float64Array.from(x);
          p[i] += 1e-4;
          m[i] -= 1e-4;
          const fd = (loss(p) - loss(m)) / 2e-4; // float64 forward: tight
          expect(Math.abs(fd - dx[i]), `seed ${seed} element ${i}: fd ${fd} vs ${dx[i]}`).to.be.below(1e-4 * (1 + Math.abs(fd)));
          const p32 = Float32Array.from(x), m32 = Float32Array.from(x);
          p32[i] += 0.02;
          m32[i] -= 0.02;
          const fd32 = ((await lossDev(p32)) - (await lossDev(m32))) / (p32[i] - m32[i]); // the device's own forward
          expect(Math.abs(fd32 - dx[i]), `seed ${seed} element ${i}: device fd ${fd32} vs ${dx[i]}`).to.be.below(5e-3 * (1 + Math.abs(fd32)));
        }
      });
    });

    describe('linearBackward', function () {
      it('matches the reference (few and many rows, stripes and tails); needInputGrad and bias false leave those out', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        // rows 1-7 take the CPU's streaming dx kernel (64-column stripes, then a tail), 8 and up the GEMM
        for (const [rows2, inF2, outF2] of [[3, 200, 50], [1, 130, 7], [5, 64, 9], [4, 7, 3], [9, 150, 20], [33, 70, 40]]) {
          const x2 = rand(r, rows2 * inF2), w2 = rand(r, outF2 * inF2, 0.3), gy2 = rand(r, rows2 * outF2);
          const res2 = await sp.linearBackward(T(x2, [rows2, inF2]), T(w2, [outF2, inF2]), T(gy2, [rows2, outF2]));
          const ref2 = refLinearBackward(x2, rows2, inF2, w2, outF2, gy2);
          const l = `seed ${seed} ${rows2}x${inF2}->${outF2}`;
          expectClose(await res2.gradInput.data(), ref2.dx, { rtol: 1e-4, atol: 1e-5, label: `${l} dx` });
          expectClose(await res2.gradWeight.data(), ref2.dw, { rtol: 1e-4, atol: 1e-5, label: `${l} dw` });
          expectClose(await res2.gradBias.data(), ref2.db, { rtol: 1e-4, atol: 1e-5, label: `${l} db` });
        }
        const [rows, inF, outF] = [7, 45, 13];
        const x = rand(r, rows * inF), w = rand(r, outF * inF, 0.3), gy = rand(r, rows * outF);
        const res = await sp.linearBackward(T(x, [rows, inF]), T(w, [outF, inF]), T(gy, [rows, outF]));
        const ref = refLinearBackward(x, rows, inF, w, outF, gy);
        expectClose(await res.gradInput.data(), ref.dx, { rtol: 1e-4, atol: 1e-5, label: `seed ${seed} dx` });
        expectClose(await res.gradWeight.data(), ref.dw, { rtol: 1e-4, atol: 1e-5, label: `seed ${seed} dw` });
        expectClose(await res.gradBias.data(), ref.db, { rtol: 1e-4, atol: 1e-5, label: `seed ${seed} db` });
        const part = await sp.linearBackward(T(x, [rows, inF]), T(w, [outF, inF]), T(gy, [rows, outF]), { needInputGrad: false, bias: false });
        expect(part.gradInput).to.equal(undefined);
        expect(part.gradBias).to.equal(undefined);
        expectClose(await part.gradWeight.data(), ref.dw, { rtol: 1e-4, atol: 1e-5, label: `seed ${seed} dw only` });
      });

      it('finite differences agree with dx, dw and db', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const [rows, inF, outF] = [3, 5, 4];
        const x = rand(r, rows * inF), w = rand(r, outF * inF), b = rand(r, outF), wts = rand(r, rows * outF);
        const loss = async (xs, ws, bs) => (await (await sp.linear(T(xs, [rows, inF]), T(ws, [outF, inF]), T(bs, [outF]))).data()).reduce((a, v, i) => a + v * wts[i], 0);
        const g = await sp.linearBackward(T(x, [rows, inF]), T(w, [outF, inF]), T(wts, [rows, outF]));
        const check = async (arr, grad, which, fwd) => {
          for (let i = 0; i < arr.length; i++) {
            const p = Float32Array.from(arr), m = Float32Array.from(arr);
            p[i] += 0.05;
            m[i] -= 0.05;
            const fd = ((await fwd(p)) - (await fwd(m))) / (p[i] - m[i]);
            expect(Math.abs(fd - grad[i]), `seed ${seed} ${which}[${i}]: fd ${fd} vs ${grad[i]}`).to.be.below(1e-3 * (1 + Math.abs(fd)));
          }
        };
        await check(x, await g.gradInput.data(), 'dx', (xs) => loss(xs, w, b));
        await check(w, await g.gradWeight.data(), 'dw', (ws) => loss(x, ws, b));
        await check(b, await g.gradBias.data(), 'db', (bs) => loss(x, w, bs));
      });
    });

    describe('reluBackward, dropout, dropoutBackward', function () {
      it('reluBackward passes the gradient where the output is > 0 (or NaN), for tensors and ragged batches', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const y = rand(r, 200).map((v) => (v < 0 ? 0 : v));
        y[3] = NaN;
        const g = rand(r, 200);
        const want = y.map((v, i) => (v <= 0 ? 0 : g[i]));
        expectClose(await (await sp.reluBackward(T(y, [10, 20]), T(g, [10, 20]))).data(), want, { label: `seed ${seed}` });
        const maps = [{ C: 2, H: 5, W: 10 }, { C: 2, H: 5, W: 5 }, { C: 2, H: 1, W: 25 }];
        let off = 0;
        const ys = maps.map((m) => y.slice(off, (off += m.C * m.H * m.W)));
        off = 0;
        const gs = maps.map((m) => g.slice(off, (off += m.C * m.H * m.W)));
        const rb = await sp.reluBackward(raggedLike(maps, ys), raggedLike(maps, gs));
        expect(rb).to.be.instanceOf(sp.RaggedBatch);
        expectClose(await rb.data(), want, { label: `seed ${seed} ragged` });
      });

      it('dropout: mask values 0 or 1/(1-p), fraction near p, same seed same mask, training false is the identity', async function () {
        const n = 200000;
        const x = T(new Float32Array(n).fill(2), [n]);
        for (const p of [0.5, 0.1, 0.9]) {
          const a = await sp.dropout(x, { p, seed: 42 });
          const m = await a.mask.data(), y = await a.output.data();
          const scale = Math.fround(1 / (1 - p));
          let zeros = 0;
          for (let i = 0; i < n; i++) {
            if (m[i] === 0) zeros++;
            else if (m[i] !== scale) throw new Error(`p ${p}: mask[${i}] = ${m[i]}`);
            if (y[i] !== Math.fround(2 * m[i])) throw new Error(`p ${p}: output[${i}] = ${y[i]}, mask ${m[i]}`);
          }
          expect(Math.abs(zeros / n - p), `p ${p}: fraction ${zeros / n}`).to.be.below(0.01);
          const b = await sp.dropout(x, { p, seed: 42 });
          expect(Buffer.from((await b.mask.data()).buffer).equals(Buffer.from(m.buffer))).to.equal(true);
          const c = await sp.dropout(x, { p, seed: Number.MAX_SAFE_INTEGER });
          expect(Buffer.from((await c.mask.data()).buffer).equals(Buffer.from(m.buffer))).to.equal(false);
        }
        for (const o of [{ p: 0.5, seed: 1, training: false }, { p: 0, seed: 1 }, { p: 0 }]) {
          const id = await sp.dropout(x, o);
          expect(id.mask).to.equal(undefined);
          expect(id.output).to.not.equal(x);
          expect(Array.from((await id.output.data()).slice(0, 5))).to.deep.equal([2, 2, 2, 2, 2]);
        }
      });

      it('dropoutBackward multiplies by the mask (copies without one); ragged batches keep their layout', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const maps = [randomMap(r, 3, 4, 5), randomMap(r, 3, 2, 7)];
        const x = batchOf(maps);
        const { output, mask } = await sp.dropout(x, { p: 0.3, seed });
        expect(output).to.be.instanceOf(sp.RaggedBatch);
        const g = raggedLike(maps, maps.map((m) => rand(r, m.data.length)));
        const dx = await sp.dropoutBackward(g, mask);
        const [gd, md] = [await g.data(), await mask.data()];
        expectClose(await dx.data(), gd.map((v, i) => v * md[i]), { label: `seed ${seed}` });
        const same = await sp.dropoutBackward(g, undefined);
        expectClose(await same.data(), gd, { label: `seed ${seed} copy` });
      });
    });

    describe('softmaxCrossEntropy', function () {
      it('matches the reference: loss, gradient, correct count; large logits are stable', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        for (const [rows, cols, scale] of [[9, 7, 3], [4, 300, 1], [3, 5, 1000], [1, 1, 1]]) {
          const x = rand(r, rows * cols, scale);
          const labels = Array.from({ length: rows }, () => r.int(0, cols - 1));
          if (rows > 2) x[1 * cols + labels[1]] = 1e6; // row 1 certainly correct
          const res = await sp.softmaxCrossEntropy(T(x, [rows, cols]), labels);
          const ref = refSoftmaxCrossEntropy(x, rows, cols, labels);
          expect(Math.abs(res.loss - ref.loss), `seed ${seed} ${rows}x${cols}: loss ${res.loss} vs ${ref.loss}`).to.be.below(1e-6 * (1 + Math.abs(ref.loss)));
          expect(res.correct, `seed ${seed}`).to.equal(ref.correct);
          expect(res.gradLogits.shape).to.deep.equal([rows, cols]);
          expectClose(await res.gradLogits.data(), ref.grad, { rtol: 1e-5, atol: 1e-7, label: `seed ${seed} ${rows}x${cols}` });
        }
        const lab = Int32Array.from([2, 0]);
        const ties = await sp.softmaxCrossEntropy(T([1, 1, 1, 5, 5, 0], [2, 3]), lab);
        expect(ties.correct).to.equal(1); // row 0: argmax is 0 (the first maximum), row 1: 0
      });

      it('NaN or infinite logits give a NaN loss, not an error', async function () {
        const res = await sp.softmaxCrossEntropy(T([1, NaN, 3, 1, 2, 3], [2, 3]), [0, 2]);
        expect(Number.isNaN(res.loss)).to.equal(true);
        const inf = await sp.softmaxCrossEntropy(T([1, Infinity, 3], [1, 3]), [0]);
        expect(Number.isNaN(inf.loss)).to.equal(true);
      });

      it('finite differences agree with gradLogits', async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const [rows, cols] = [3, 4];
        const x = rand(r, rows * cols, 2);
        const labels = [1, 3, 0];
        const g = await (await sp.softmaxCrossEntropy(T(x, [rows, cols]), labels)).gradLogits.data();
        for (let i = 0; i < x.length; i++) {
          const p = Float32Array.from(x), m = Float32Array.from(x);
          p[i] += 0.01;
          m[i] -= 0.01;
          const fd = ((await sp.softmaxCrossEntropy(T(p, [rows, cols]), labels)).loss - (await sp.softmaxCrossEntropy(T(m, [rows, cols]), labels)).loss) / (p[i] - m[i]);
          expect(Math.abs(fd - g[i]), `seed ${seed} element ${i}: fd ${fd} vs ${g[i]}`).to.be.below(1e-4);
        }
      });
    });

    describe('optimizer steps', function () {
      const configs = [
        { lr: 0.1 },
        { lr: 0.05, momentum: 0.9 },
        { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-2 },
        { lr: 0.01, momentum: 0.5, dampening: 0.3, weightDecay: 5e-4 },
      ];
      for (const cfg of configs) {
        it(`sgdStep follows torch.optim.SGD over 6 steps: ${JSON.stringify(cfg)}`, async function () {
          const seed = freshSeed();
          const r = rng(seed);
          const n = 1000;
          const p0 = rand(r, n);
          const P = T(p0, [10, 100]), B = cfg.momentum ? sp.zeros([10, 100], { device }) : null;
          const ref = Float64Array.from(p0), state = {};
          for (let step = 1; step <= 6; step++) {
            const g = rand(r, n);
            await sp.sgdStep(P, T(g, [10, 100]), B, { ...cfg, step });
            refSgdStep(ref, g, state, cfg);
          }
          expectClose(await P.data(), ref, { rtol: 1e-5, atol: 1e-6, label: `seed ${seed}` });
          if (B) expectClose(await B.data(), state.buf, { rtol: 1e-5, atol: 1e-6, label: `seed ${seed} buf` });
        });
      }

      for (const cfg of [{ lr: 1e-2 }, { lr: 1e-3, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1 }, { lr: 1e-2, weightDecay: 0.05, decoupled: true }]) {
        it(`adamStep follows torch.optim.${cfg.decoupled ? 'AdamW' : 'Adam'} over 6 steps: ${JSON.stringify(cfg)}`, async function () {
          const seed = freshSeed();
          const r = rng(seed);
          const n = 777;
          const p0 = rand(r, n);
          const P = T(p0, [n]), M = sp.zeros([n], { device }), V = sp.zeros([n], { device });
          const ref = Float64Array.from(p0), state = {};
          for (let step = 1; step <= 6; step++) {
            const g = rand(r, n);
            await sp.adamStep(P, T(g, [n]), M, V, { ...cfg, step });
            refAdamStep(ref, g, state, cfg);
          }
          expectClose(await P.data(), ref, { rtol: 1e-5, atol: 1e-6, label: `seed ${seed}` });
          expectClose(await M.data(), state.m, { rtol: 1e-5, atol: 1e-6, label: `seed ${seed} m` });
          expectClose(await V.data(), state.v, { rtol: 1e-4, atol: 1e-8, label: `seed ${seed} v` });
        });
      }
    });

    describe('bad input', function () {
      it('shape mismatches name the argument and the axis', async function () {
        const x = sp.zeros([2, 3, 8, 8], { device }), w = sp.zeros([4, 3, 3, 3], { device });
        await expectReject(sp.conv2dBackward(x, w, sp.zeros([2, 4, 6, 5], { device })), /gradOutput axis 3 \(W\) is 5, expected 6: the forward output has shape \[2, 4, 6, 6\]/, 'SPPNET_INVALID_ARGUMENT');
        await expectReject(sp.conv2dBackward(x, w, sp.zeros([2, 4, 6], { device })), /gradOutput must have rank 4 \[2, 4, 6, 6\]/);
        await expectReject(sp.conv2dBackward(x, sp.zeros([4, 2, 3, 3], { device }), sp.zeros([2, 4, 6, 6], { device })), /weight axis 1 \(in channels \/ groups\) is 2/);
        await expectReject(sp.conv2dBackward(x, w, sp.zeros([2, 4, 6, 6], { device }), { bias: 1 }), /options.bias must be a boolean/);
        const rb = sp.ragged([sp.zeros([3, 5, 5], { device }), sp.zeros([3, 7, 4], { device })]);
        const grb = sp.ragged([sp.zeros([4, 3, 3], { device }), sp.zeros([4, 5, 3], { device })]);
        await expectReject(sp.conv2dBackward(rb, w, grb), /gradOutput map 1 axis W is 3, expected 2 \(the forward output is 5x2, HxW\)/);
        await expectReject(sp.conv2dBackward(rb, w, sp.zeros([2, 4, 3, 3], { device })), /gradOutput must be a RaggedBatch/);
        await expectReject(sp.maxPool2dBackward(x, sp.zeros([2, 3, 4, 4], { device }), { kernel: 3, stride: 2 }), /gradOutput axis 2 \(H\) is 4, expected 3/);
        await expectReject(sp.localResponseNormBackward(x, sp.zeros([2, 2, 8, 8], { device }), { size: 5 }), /gradOutput axis 1 \(C\) is 2, expected 3/);
        await expectReject(sp.linearBackward(sp.zeros([2, 5], { device }), sp.zeros([3, 5], { device }), sp.zeros([2, 4], { device })), /gradOutput axis 1 \(out features\) is 4, expected 3/);
        await expectReject(sp.linearBackward(sp.zeros([2, 5], { device }), sp.zeros([3, 5], { device }), sp.zeros([3, 3], { device })), /gradOutput axis 0 \(rows\) is 3, expected 2/);
        await expectReject(sp.reluBackward(sp.zeros([2, 5], { device }), sp.zeros([2, 6], { device })), /gradOutput axis 1 is 6, expected 5/);
        await expectReject(sp.dropoutBackward(sp.zeros([4], { device }), sp.zeros([5], { device })), /mask axis 0 is 5, expected 4/);
        await expectReject(sp.sgdStep(sp.zeros([4], { device }), sp.zeros([4, 1], { device }), null, { lr: 1 }), /grad must have param's shape \[4\], got \[4, 1\]/);
        await expectReject(sp.adamStep(sp.zeros([4], { device }), sp.zeros([4], { device }), sp.zeros([3], { device }), sp.zeros([4], { device }), { lr: 1, step: 1 }), /m axis 0 is 3, expected 4/);
      });

      it('labels out of range, wrong length or not integers are clear errors', async function () {
        const l = sp.zeros([3, 5], { device });
        await expectReject(sp.softmaxCrossEntropy(l, [0, 5, 1]), /labels\[1\] = 5 is out of range: logits axis 1 has 5 classes, so labels must be in \[0, 5\)/, 'SPPNET_INVALID_ARGUMENT');
        await expectReject(sp.softmaxCrossEntropy(l, Int32Array.from([0, 1, -1])), /labels\[2\] = -1 is out of range/);
        await expectReject(sp.softmaxCrossEntropy(l, [0, 1]), /labels has 2 values, but logits axis 0 \(rows\) is 3/);
        await expectReject(sp.softmaxCrossEntropy(l, [0, 1.5, 2]), /labels\[1\] must be an integer/);
        await expectReject(sp.softmaxCrossEntropy(sp.zeros([3, 5, 1], { device }), [0, 1, 2]), /logits must have rank 2/);
      });

      it('options: dropout p and seed, SGD step and nesterov, Adam step, aliasing', async function () {
        const t = sp.zeros([4], { device });
        await expectReject(sp.dropout(t, { p: 1, seed: 1 }), /options.p must be a number in \[0, 1\), got number 1/);
        await expectReject(sp.dropout(t, { p: 0.5 }), /options.seed is required/);
        await expectReject(sp.dropout(t, { p: 0.5, seed: -1 }), /options.seed must be an integer in \[0, 2\^53\)/);
        await expectReject(sp.sgdStep(t, sp.zeros([4], { device }), sp.zeros([4], { device }), { lr: 0.1, momentum: 0.9 }), /options.step must be the 1-based step number/);
        await expectReject(sp.sgdStep(t, sp.zeros([4], { device }), null, { lr: 0.1, momentum: 0.9, step: 1 }), /momentumBuf must be a Tensor like param/);
        await expectReject(sp.sgdStep(t, sp.zeros([4], { device }), null, { lr: 0.1, nesterov: true }), /nesterov needs momentum > 0/);
        await expectReject(sp.sgdStep(t, sp.zeros([4], { device }), null, {}), /options.lr is required/);
        await expectReject(sp.sgdStep(t, t, null, { lr: 0.1 }), /grad is the same tensor as param/);
        await expectReject(sp.adamStep(t, sp.zeros([4], { device }), sp.zeros([4], { device }), sp.zeros([4], { device }), { lr: 0.1 }), /options.step must be the 1-based step number/);
        await expectReject(sp.adamStep(t, sp.zeros([4], { device }), sp.zeros([4], { device }), sp.zeros([4], { device }), { lr: 0.1, beta1: 1, step: 1 }), /options.beta1 must be a number in \[0, 1\)/);
      });

      it('disposed tensors are SPPNET_DISPOSED errors, and the process goes on', async function () {
        const x = sp.zeros([1, 2, 5, 5], { device }), w = sp.zeros([3, 2, 3, 3], { device }), g = sp.zeros([1, 3, 3, 3], { device });
        const dead = sp.zeros([1, 3, 3, 3], { device });
        dead.dispose();
        await expectReject(sp.conv2dBackward(x, w, dead), /sp.conv2dBackward: gradOutput was disposed/, 'SPPNET_DISPOSED');
        const deadW = sp.zeros([3, 2, 3, 3], { device });
        deadW.dispose();
        await expectReject(sp.conv2dBackward(x, deadW, g), /weight was disposed/, 'SPPNET_DISPOSED');
        const p = sp.zeros([4], { device });
        p.dispose();
        await expectReject(sp.adamStep(p, sp.zeros([4], { device }), sp.zeros([4], { device }), sp.zeros([4], { device }), { lr: 1, step: 1 }), /param was disposed/, 'SPPNET_DISPOSED');
        await expectReject(sp.reluBackward(dead, g), /output was disposed/, 'SPPNET_DISPOSED');
        const ok = await sp.conv2dBackward(x, w, g);
        expect(ok.gradWeight.shape).to.deep.equal([3, 2, 3, 3]);
      });
    });

    if (device === 'cuda') {
      it('agrees with the CPU: device mismatch is an error; dropout masks are identical', async function () {
        // Both devices named: the default device is CUDA here.
        const cpu = (shape) => sp.zeros(shape, { device: 'cpu' });
        const xc = cpu([1, 2, 5, 5]), wg = sp.zeros([3, 2, 3, 3], { device: 'cuda' });
        await expectReject(sp.conv2dBackward(xc, wg, cpu([1, 3, 3, 3])), /weight is on cuda, the input on cpu/, 'SPPNET_DEVICE_MISMATCH');
        await expectReject(sp.conv2dBackward(xc, cpu([3, 2, 3, 3]), sp.zeros([1, 3, 3, 3], { device: 'cuda' })), /gradOutput is on cuda, the input on cpu/, 'SPPNET_DEVICE_MISMATCH');
        await expectReject(sp.sgdStep(cpu([4]), sp.zeros([4], { device: 'cuda' }), null, { lr: 1 }), /grad is on cuda, param on cpu/, 'SPPNET_DEVICE_MISMATCH');
        const x = new Float32Array(10007).fill(1);
        const a = await sp.dropout(sp.tensor(x, [10007], { device: 'cpu' }), { p: 0.37, seed: 123456789 });
        const b = await sp.dropout(sp.tensor(x, [10007], { device: 'cuda' }), { p: 0.37, seed: 123456789 });
        expect(Buffer.from((await b.mask.data()).buffer).equals(Buffer.from((await a.mask.data()).buffer))).to.equal(true);
      });
    }
  });
}
