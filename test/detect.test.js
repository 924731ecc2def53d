'use strict';
// The detection pipeline's parts: windows onto feature maps (the paper's rule and the released
// code's), the scale of each window, box regression targets, ridge regression.
const { expect } = require('chai');
const { sp } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');
const { ridge } = require('../dist/detect/ridge');
const { trainSvm } = require('../dist/detect/svm');

describe('detection: windows onto feature maps', function () {
  it("the paper's rule: x' = floor(x / S) + 1 and ceil(x / S) - 1 in 1-based pixels and cells", function () {
    const o = { stride: 16 };
    // A 224-px window at stride 16: ZF-5's 13 x 13 conv5 cells.
    expect(sp.mapWindow([0, 0, 223, 223], 40, 40, o)).to.deep.equal([0, 0, 12, 12]);
    // Pixels 34..101 (1-based): cells floor(34/16)+1 = 3 .. ceil(101/16)-1 = 6, i.e. 2..5 0-based.
    expect(sp.mapWindow([33, 33, 100, 100], 40, 40, o)).to.deep.equal([2, 2, 5, 5]);
    // Empty (41..46 -> cells 3..2, 1-based): the midpoint, floor(1.5) = 1 0-based.
    expect(sp.mapWindow([40, 40, 45, 45], 40, 40, o)).to.deep.equal([1, 1, 1, 1]);
    // Clamped to the map.
    expect(sp.mapWindow([0, 0, 999, 999], 7, 9, o)).to.deep.equal([0, 0, 8, 6]);
  });

  it("the released code's rule, against its formula in 1-based coordinates on random boxes", function () {
    const seed = freshSeed();
    const r = rng(seed);
    const S = 16, o0 = 21, o = 6.5;
    for (let t = 0; t < 500; t++) {
      const x1 = r.int(0, 600), x2 = x1 + r.int(0, 400);
      const lo = Math.floor((x1 + 1 - o0 + o) / S + 0.5) + 1, hi = Math.ceil((x2 + 1 - o0 - o) / S - 0.5) + 1;
      if (lo > hi) continue;
      const n = 1 + r.int(0, 50);
      const clamp = (v) => Math.min(n - 1, Math.max(0, v - 1));
      const got = sp.mapWindow([x1, 0, x2, 0], 1, n, { stride: S, mapping: 'released' });
      expect([got[0], got[2]], `seed ${seed}: [${x1}, ${x2}] on ${n}`).to.deep.equal([clamp(lo), clamp(hi)]);
    }
  });

  it('the trunk stride of the built-in networks: ZF-5 16, the detection network 8', function () {
    const trunk = (spec) => spec.layers.slice(0, spec.layers.findIndex((l) => l.type === 'spp'));
    expect(sp.trunkStride(trunk(sp.archSpec('zf5', 10)))).to.equal(16);
    expect(sp.trunkStride(trunk(sp.archSpec('overfeat5', 10)))).to.equal(12);
    expect(sp.trunkStride(trunk(sp.detectionSpec(5)))).to.equal(8);
  });

  it('each window at the scale where its area is closest to side x side', function () {
    const seed = freshSeed();
    const r = rng(seed);
    const scales = [100, 150, 300, 480];
    for (let t = 0; t < 200; t++) {
      const H = r.int(50, 500), W = r.int(50, 500);
      const b = [r.int(0, W - 1), r.int(0, H - 1)];
      b.push(r.int(b[0], W - 1), r.int(b[1], H - 1));
      const [k] = sp.chooseScales(b, 1, [H, W], scales, 64);
      const area = (b[2] - b[0] + 1) * (b[3] - b[1] + 1);
      const gap = scales.map((s) => {
        const [h, w] = H <= W ? [s, Math.round((W * s) / H)] : [Math.round((H * s) / W), s];
        return Math.abs((area * h * w) / (H * W) - 64 * 64);
      });
      expect(gap[k], `seed ${seed}`).to.equal(Math.min(...gap));
      expect(gap.indexOf(gap[k]), `seed ${seed}: ties go to the smaller scale`).to.equal(k);
    }
  });

  it('scaleBox: pixel x covers [x, x + 1), which lands on [x f, (x + 1) f)', function () {
    expect(sp.scaleBox([0, 0, 9, 19], [100, 50], [200, 100])).to.deep.equal([0, 0, 19, 39]);
    expect(sp.scaleBox([10, 4, 19, 5], [10, 40], [5, 20])).to.deep.equal([5, 2, 9, 2]);
  });
});

describe('detection: box regression', function () {
  it('applyDeltas inverts boxDeltas; deltas are R-CNN\'s (centre shift over size, log size ratio)', function () {
    const seed = freshSeed();
    const r = rng(seed);
    expect(sp.boxDeltas([0, 0, 9, 9], [5, 0, 14, 19])).to.deep.equal([0.5, 0.5, 0, Math.log(2)]);
    for (let t = 0; t < 200; t++) {
      // Sizes within a factor 10 (log ratios under the clamp at 4).
      const p = [r.int(0, 200), r.int(0, 200)];
      p.push(p[0] + r.int(9, 99), p[1] + r.int(9, 99));
      const g = [r.int(0, 200), r.int(0, 200)];
      g.push(g[0] + r.int(9, 99), g[1] + r.int(9, 99));
      const back = sp.applyDeltas(p, sp.boxDeltas(p, g), [400, 400]);
      back.forEach((v, i) => expect(v, `seed ${seed}`).to.be.closeTo(g[i], 1e-9));
    }
    // Growth clamped at e^4, as py-faster-rcnn's log(1000 / 16); clipped to the image.
    const wide = sp.applyDeltas([500, 500, 509, 509], [0, 0, 9, 0], [2000, 2000]);
    expect(wide[2] - wide[0] + 1).to.be.closeTo(10 * Math.exp(4), 1e-9);
    expect(sp.applyDeltas([0, 0, 9, 9], [-1, -1, 0, 0], [50, 50])).to.deep.equal([0, 0, 0, 0]);
  });

  it('ridge regression equals the normal equations solved directly, primal and dual', async function () {
    const seed = freshSeed();
    const r = rng(seed);
    for (const [n, d] of [[40, 7], [5, 12], [13, 12], [1, 3]]) {
      const k = 3, lambda = 0.7;
      const X = Float32Array.from({ length: n * d }, () => r.normal());
      const Y = Float32Array.from({ length: n * k }, () => r.normal());
      const got = await ridge(X, n, d, Y, k, lambda);
      // Direct: (X1^T X1 + lambda I) w = X1^T y by Gaussian elimination in float64.
      const m = d + 1, row = (i) => [...X.subarray(i * d, (i + 1) * d), 1];
      for (let c = 0; c < k; c++) {
        const A = Array.from({ length: m }, (_, a) => Array.from({ length: m + 1 }, (_, b) => {
          let s = 0;
          for (let i = 0; i < n; i++) s += row(i)[a] * (b < m ? row(i)[b] : Y[i * k + c]);
          return s + (a === b ? lambda : 0);
        }));
        for (let p = 0; p < m; p++) {
          for (let q = p + 1; q < m; q++) {
            const f = A[q][p] / A[p][p];
            for (let b = p; b <= m; b++) A[q][b] -= f * A[p][b];
          }
        }
        const w = new Array(m).fill(0);
        for (let p = m - 1; p >= 0; p--) {
          let s = A[p][m];
          for (let b = p + 1; b < m; b++) s -= A[p][b] * w[b];
          w[p] = s / A[p][p];
        }
        for (let j = 0; j < d; j++) expect(got.weight[c * d + j], `seed ${seed}, n ${n}, d ${d}`).to.be.closeTo(w[j], 1e-3 * (1 + Math.abs(w[j])));
        expect(got.bias[c], `seed ${seed}`).to.be.closeTo(w[d], 1e-3 * (1 + Math.abs(w[d])));
      }
    }
  });
});

describe('detection: linear SVMs (liblinear -s 3 by dual coordinate descent)', function () {
  it('separates separable data: every margin about 1 or more, close to the generating direction', function () {
    const seed = freshSeed();
    const r = rng(seed);
    const n = 300, d = 5, w0 = [1, -2, 0.5, 0, 1.5];
    const X = [], y = new Int8Array(n);
    for (let i = 0; i < n; i++) {
      let x, s;
      do {
        x = Float32Array.from({ length: d }, () => r.normal());
        s = x.reduce((a, v, j) => a + v * w0[j], 0) + 0.3;
      } while (Math.abs(s) < 0.5); // a gap: separable
      X.push(x);
      y[i] = s > 0 ? 1 : -1;
    }
    // C large: the hard-margin solution, whose margins are all at least 1 (to the solver's tolerance;
    // coordinate descent may need many passes for it: up to 20,000 here, a few ms).
    const m = trainSvm(n, d, (i) => X[i], y, { C: 1e4, positiveWeight: 1, biasFeature: 1, eps: 1e-6, maxEpochs: 20000, seed });
    const f = (i) => X[i].reduce((a, v, j) => a + v * m.weight[j], 0) + m.bias;
    for (let i = 0; i < n; i++) expect(y[i] * f(i), `seed ${seed}, row ${i}`).to.be.above(0);
    expect(Math.min(...Array.from({ length: n }, (_, i) => y[i] * f(i))), `seed ${seed}`).to.be.above(0.98);
    // The direction agrees with the generating one.
    const cos = m.weight.reduce((a, v, j) => a + v * w0[j], 0) / Math.hypot(...m.weight) / Math.hypot(...w0);
    expect(cos, `seed ${seed}`).to.be.above(0.9);
  });

  it('weights positives: a larger positive weight moves the boundary towards the negatives', function () {
    const X = [[0], [1], [2], [3]].map((v) => Float32Array.from(v)), y = Int8Array.from([-1, -1, 1, 1]);
    const bias = (wp) => { const m = trainSvm(4, 1, (i) => X[i], y, { C: 0.05, positiveWeight: wp, biasFeature: 1, eps: 1e-6 }); return -m.bias / m.weight[0]; };
    expect(bias(4)).to.be.below(bias(1));
  });
});
