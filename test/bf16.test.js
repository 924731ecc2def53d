'use strict';
// bfloat16 weights (sp.toBF16, sp.linear with a BF16Matrix, loadModel's linearWeights: 'bf16'):
// the rounding against a float64 reference of round-to-nearest-even, the products against a
// float64 reference on the rounded weights (FP32-tight) and on the original ones (the documented
// bound), a poisoned output, and the model's memory, logits, state_dict and refusals.
const { expect } = require('chai');
const { sp, cudaStatus, expectReject } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');
const { refLinear } = require('./support/layers-reference');
const { native } = require('../dist/core/native');

const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];
const rand = (r, n, scale = 1) => Float32Array.from({ length: n }, () => r.normal() * scale);

/**
 * The bfloat16 nearest to a float32 value v, ties to an even last bit: the two neighbours by
 * truncating the bits, then the nearer by float64 distance (exact for float32 values); past the
 * largest bfloat16 the upper neighbour is infinity, reached from half an ulp on (IEEE overflow).
 */
function refBf16(v) {
  if (Number.isNaN(v) || !Number.isFinite(v) || v === 0) return v;
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer);
  const low = u[0] & 0xffff;
  u[0] = u[0] & 0xffff0000;
  const down = f[0], downEven = ((u[0] >>> 16) & 1) === 0;
  if (low === 0) return down;
  u[0] = u[0] + 0x10000;
  const up = f[0];
  if (!Number.isFinite(up)) return low > 0x8000 || (low === 0x8000 && !downEven) ? up : down;
  const dd = Math.abs(v - down), du = Math.abs(up - v);
  return dd < du ? down : du < dd ? up : downEven ? down : up;
}

for (const device of devices) {
  describe(`bfloat16 weights on ${device}`, function () {
    it('sp.toBF16 rounds each weight to the nearest bfloat16 (ties to even; NaN, infinities, signed zeros, overflow to infinity)', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const special = [0, -0, 1, -1, NaN, Infinity, -Infinity, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, 3.4028234663852886e38, -3.3895313892515355e38, 1e-40, -1e-45, 2 ** -126];
      const v = new Float32Array(special.length + 1001);
      v.set(special);
      for (let i = special.length; i < v.length; i++) v[i] = r.normal() * 2 ** r.int(-30, 30);
      const m = await sp.toBF16(sp.tensor(v, [v.length / 4, 4], { device }));
      expect(m.dtype).to.equal('bfloat16');
      expect(m.shape).to.deep.equal([v.length / 4, 4]);
      expect(m.device).to.equal(device);
      expect(m.bytes).to.equal(2 * v.length);
      const got = await m.data();
      for (let i = 0; i < v.length; i++) {
        const want = refBf16(v[i]);
        const label = `seed ${seed} element ${i}: ${v[i]} -> ${got[i]}, want ${want}`;
        if (Number.isNaN(want)) expect(Number.isNaN(got[i]), label).to.equal(true);
        else expect(Object.is(got[i], want), label).to.equal(true);
      }
      expect(got[7]).to.equal(1); // 1 + 2^-8: the tie goes to the even 1
      expect(got[8]).to.equal(1 + 2 ** -6); // 1 + 3 * 2^-8: the tie goes to the even 1 + 2^-6
      expect(got[9]).to.equal(1 + 2 ** -7); // just past the tie: up
      expect(got[10]).to.equal(Infinity); // FLT_MAX rounds past the largest bfloat16
      m.dispose();
      expect(m.disposed).to.equal(true);
      await expectReject(m.data(), /was disposed/, 'SPPNET_DISPOSED');
    });

    it('sp.linear with a BF16Matrix: FP32-tight against the rounded weights, within 2^-8 of sum |x w| of the original ones, few rows and many, poisoned out', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      // rows 1-7: the CPU's streaming kernel; 8 and up its GEMM, the weights widened 256 rows at a time (outF 300).
      for (const [rows, inF, outF] of [[1, 37, 5], [2, 203, 29], [3, 129, 40], [4, 203, 26], [5, 600, 17], [7, 64, 31], [9, 45, 300], [21, 301, 29]]) {
        const x = rand(r, rows * inF), w = rand(r, outF * inF, 0.2), b = rand(r, outF);
        const W = sp.tensor(w, [outF, inF], { device });
        const m = await sp.toBF16(W);
        const wr = await m.data();
        const out = sp.tensor(new Float32Array(rows * outF).fill(-7.5e30), [rows, outF], { device });
        for (const relu of [false, true]) {
          const y = await sp.linear(sp.tensor(x, [rows, inF], { device }), m, sp.tensor(b, [outF], { device }), { relu, out });
          expect(y).to.equal(out);
          const got = await y.data();
          const onRounded = refLinear(x, rows, inF, wr, outF, b, relu), onOriginal = refLinear(x, rows, inF, w, outF, b, relu);
          for (let i = 0; i < got.length; i++) {
            const row = Math.floor(i / outF), o = i % outF;
            let mag = Math.abs(b[o]);
            for (let k = 0; k < inF; k++) mag += Math.abs(x[row * inF + k] * w[o * inF + k]);
            const label = `seed ${seed} ${rows}x${inF}->${outF} relu ${relu} element ${i}: got ${got[i]}`;
            expect(Math.abs(got[i] - onRounded[i]), `${label}, want ${onRounded[i]} (rounded weights)`).to.be.at.most(1e-5 * mag);
            expect(Math.abs(got[i] - onOriginal[i]), `${label}, want ${onOriginal[i]} (original weights)`).to.be.at.most(2 ** -8 * mag);
          }
        }
        W.dispose();
        m.dispose();
      }
    });

    it("math 'bf16' in sp.linear: BF16 products where the backend has them (x and weights rounded, FP32 sums), else within the mode's bound; odd K, ragged tiles, K blocks, NaN, poisoned out", async function () {
      this.timeout(30000);
      const seed = freshSeed();
      const r = rng(seed);
      // On a CPU with AVX-512 BF16: FP32 weights from 256 rows, a BF16Matrix from 8 (fewer: FP32 products).
      const products = device === 'cpu' && sp.backend().cpu.bf16;
      const from = native.enums.bf16ProductRows;
      expect(from).to.deep.equal({ fp32Weights: 256, bf16Weights: 8 });
      for (const [rows, inF, outF, packed] of [[267, 301, 29, false], [256, 1025, 19, false], [256, 45, 300, false], [9, 45, 13, true], [33, 1025, 7, true], [7, 45, 13, true], [255, 45, 13, false]]) {
        const x = rand(r, rows * inF), w = rand(r, outF * inF, 0.2), b = rand(r, outF);
        // Row 0: x = 1 + 2^-10 (bfloat16: 1) against weight row 0 of ones: the products show in the sum.
        for (let k = 0; k < inF; k++) (x[k] = 1 + 2 ** -10), (w[k] = 1);
        x[inF + 3] = NaN; // row 1: NaN out, every column
        const W = sp.tensor(w, [outF, inF], { device });
        const weight = packed ? await sp.toBF16(W) : W;
        const wv = packed ? await weight.data() : w;
        const bfX = x.map(refBf16), bfW = wv.map(refBf16);
        const bf = products && rows >= (packed ? from.bf16Weights : from.fp32Weights);
        const out = sp.tensor(new Float32Array(rows * outF).fill(-7.5e30), [rows, outF], { device });
        const mags = refLinear(x.map(Math.abs), rows, inF, wv.map(Math.abs), outF, b.map(Math.abs), false);
        for (const relu of [false, true]) {
          const y = await sp.linear(sp.tensor(x, [rows, inF], { device }), weight, sp.tensor(b, [outF], { device }), { relu, out, math: 'bf16' });
          expect(y).to.equal(out);
          const got = await y.data();
          const exact = bf ? refLinear(bfX, rows, inF, bfW, outF, b, relu) : refLinear(x, rows, inF, wv, outF, b, relu);
          for (let i = 0; i < got.length; i++) {
            const row = Math.floor(i / outF), o = i % outF;
            const label = `seed ${seed} ${rows}x${inF}->${outF} ${packed ? 'BF16Matrix' : 'FP32'} weight, relu ${relu}, element ${i}: got ${got[i]}`;
            if (row === 1) {
              expect(Number.isNaN(got[i]), label).to.equal(true);
              continue;
            }
            const mag = mags[i];
            if (products || device === 'cpu') expect(Math.abs(got[i] - exact[i]), `${label}, want ${exact[i]} (${bf ? 'BF16' : 'FP32'} products)`).to.be.at.most(1e-5 * mag);
            else expect(Math.abs(got[i] - exact[i]), `${label}, want ${exact[i]}`).to.be.at.most(sp.MATH_TOLERANCE.bf16 * mag);
          }
          const s0 = inF * (1 + 2 ** -10) + b[0];
          if (bf) expect(got[0], `seed ${seed}: row 0 took BF16 products`).to.be.closeTo(Math.max(relu ? 0 : -Infinity, inF + b[0]), 1e-4 * inF);
          else if (device === 'cpu') expect(got[0], `seed ${seed}: row 0 took FP32 products`).to.be.closeTo(Math.max(relu ? 0 : -Infinity, s0), 1e-4 * inF);
        }
        W.dispose();
        if (packed) weight.dispose();
        out.dispose();
      }
    });

    it('refuses a BF16Matrix where it does not apply, with codes naming the call', async function () {
      const m = await sp.toBF16(sp.zeros([3, 4], { device }));
      await expectReject(sp.linear(sp.zeros([2, 5], { device }), m), /sp.linear: weight axis 1 \(in features\) is 4, x axis 1 is 5/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(sp.linear(sp.zeros([2, 4], { device }), m, null, { math: 'bf17' }), /sp.linear: options.math must be one of 'tf32', 'bf16', 'fp32', 'direct', got "bf17"/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(sp.linearBackward(sp.zeros([2, 4], { device }), m, sp.zeros([2, 3], { device })), /sp.linearBackward: weight is a BF16Matrix, which is for inference/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(sp.toBF16(sp.zeros([2, 3, 4], { device })), /sp.toBF16: weight must have rank 2/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(sp.toBF16(new Float32Array(4)), /sp.toBF16: weight must be a Tensor/, 'SPPNET_INVALID_ARGUMENT');
      m.dispose();
      await expectReject(sp.linear(sp.zeros([2, 4], { device }), m), /sp.linear: weight was disposed/, 'SPPNET_DISPOSED');
    });

    it("a model loaded with linearWeights 'bf16': fc weights in half the bytes, logits within the bound, state_dict of the rounded weights, training refused", async function () {
      const seed = freshSeed();
      const spec = {
        name: 'bf16-test',
        inChannels: 3,
        layers: [
          { type: 'conv', name: 'c1', out: 6, kernel: 3, padding: 1, relu: true },
          { type: 'spp', levels: [3, 2, 1] },
          { type: 'fc', name: 'f1', out: 40, relu: true },
          { type: 'fc', name: 'f2', out: 7 },
        ],
      };
      const fp = await sp.loadModel({ spec, seed, device });
      const half = await sp.loadModel({ spec, seed, device, linearWeights: 'bf16' });
      expect(fp.linearWeights).to.equal('fp32');
      expect(half.linearWeights).to.equal('bf16');
      const fcFloats = 40 * 6 * 14 + 7 * 40;
      expect(fp.weightBytes - half.weightBytes).to.equal(2 * fcFloats);
      const r = rng(seed);
      const imgs = [[3, 9, 11], [3, 14, 8]].map((s) => sp.tensor(rand(r, s[0] * s[1] * s[2]), s, { device }));
      const a = await (await fp.run(imgs)).data(), b = await (await half.run(imgs)).data();
      let scale = 0, worst = 0;
      for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(a[i]));
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      expect(worst, `seed ${seed}`).to.be.greaterThan(0); // the weights were rounded
      expect(worst, `seed ${seed}`).to.be.at.most(2 ** -6 * scale + 1e-6);
      const sd = await half.stateDict(), sdFp = await fp.stateDict();
      const want = await sp.toBF16(sp.tensor(sdFp.get('f1.weight').data, [40, 84]));
      expect(Array.from(sd.get('f1.weight').data)).to.deep.equal(Array.from(await want.data()));
      expect(Array.from(sd.get('c1.weight').data)).to.deep.equal(Array.from(sdFp.get('c1.weight').data)); // convs stay FP32
      await expectReject(half.trainStep(imgs, [1, 2]), /Model.trainStep: the model keeps its fc weights in bfloat16/, 'SPPNET_INVALID_ARGUMENT');
      // A state_dict loaded into it is rounded too.
      await half.loadStateDict(sdFp);
      expect(Array.from((await half.stateDict()).get('f1.weight').data)).to.deep.equal(Array.from(await want.data()));
      await expectReject(sp.loadModel({ spec, device, linearWeights: 'fp16' }), /sp.loadModel: options.linearWeights must be 'fp32' or 'bf16', got the string "fp16"/, 'SPPNET_INVALID_ARGUMENT');
      want.dispose();
      fp.dispose();
      half.dispose();
    });
  });
}
