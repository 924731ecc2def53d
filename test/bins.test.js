'use strict';
// The bin rules as the README documents them, read back through max pooling of a ramp:
// max over a bin of values 0..a-1 is its last index, -max of the negated ramp its first.
const { expect } = require('chai');
const { sp, expectReject } = require('./support/helpers');

async function binsOf(a, n, bins) {
  const ramp = Float32Array.from({ length: a }, (_, i) => i);
  const t = sp.tensor(ramp, [1, 1, 1, a], { device: 'cpu' });
  const neg = sp.tensor(ramp.map((v) => -v), [1, 1, 1, a], { device: 'cpu' });
  // Pool a 1 x a map with level n: along H (length 1) every bin is row 0 and the n x n bins
  // repeat the same n column ranges, so row 0 of the output holds them.
  if (bins !== 'adaptive') {
    // H = 1 < n is not allowed for 'paper' and 'caffe'; use an a x a map instead.
    const sq = Float32Array.from({ length: a * a }, (_, i) => i % a);
    const hi = await (await sp.spp(sp.tensor(sq, [1, 1, a, a], { device: 'cpu' }), { levels: [n], bins })).data();
    const lo = await (await sp.spp(sp.tensor(sq.map((v) => -v), [1, 1, a, a], { device: 'cpu' }), { levels: [n], bins })).data();
    return Array.from({ length: n }, (_, j) => [-lo[j], hi[j] + 1]);
  }
  const last = await (await sp.spp(t, { levels: [n], bins })).data();
  const first = await (await sp.spp(neg, { levels: [n], bins })).data();
  return Array.from({ length: n }, (_, j) => [-first[j], last[j] + 1]);
}

describe('bin rules (README worked examples)', function () {
  it("'adaptive', a = 13 and a = 14, n = 6", async function () {
    expect(await binsOf(13, 6, 'adaptive')).to.deep.equal([[0, 3], [2, 5], [4, 7], [6, 9], [8, 11], [10, 13]]);
    expect(await binsOf(14, 6, 'adaptive')).to.deep.equal([[0, 3], [2, 5], [4, 7], [7, 10], [9, 12], [11, 14]]);
  });

  it("'adaptive' on a map smaller than the level repeats elements: a = 4, n = 6", async function () {
    expect(await binsOf(4, 6, 'adaptive')).to.deep.equal([[0, 1], [0, 2], [1, 2], [2, 3], [2, 4], [3, 4]]);
  });

  it("'paper', a = 13 and a = 14, n = 6: window ceil(a/n), stride floor(a/n); row 13 of 14 is not pooled", async function () {
    expect(await binsOf(13, 6, 'paper')).to.deep.equal([[0, 3], [2, 5], [4, 7], [6, 9], [8, 11], [10, 13]]);
    expect(await binsOf(14, 6, 'paper')).to.deep.equal([[0, 3], [2, 5], [4, 7], [6, 9], [8, 11], [10, 13]]);
    // a = 17 = 2*6 + 5: window 3, stride 2, covers 0..12, the last 4 rows are not pooled.
    expect(await binsOf(17, 6, 'paper')).to.deep.equal([[0, 3], [2, 5], [4, 7], [6, 9], [8, 11], [10, 13]]);
  });

  it("'caffe', a = 13, n = 4 and n = 2: kernel ceil(a/n), stride = kernel, padding (k*n - a + 1)/2, clipped", async function () {
    expect(await binsOf(13, 4, 'caffe')).to.deep.equal([[0, 2], [2, 6], [6, 10], [10, 13]]);
    expect(await binsOf(13, 2, 'caffe')).to.deep.equal([[0, 6], [6, 13]]);
  });

  it("'caffe' where Caffe's layer breaks is an error naming the map, size and level", async function () {
    // a = 13, n = 6: kernel 3, padding 3: the first bin lies wholly in the padding.
    const t = sp.tensor(new Float32Array(2 * 13 * 13).fill(1), [2, 1, 13, 13], { device: 'cpu' });
    await expectReject(sp.spp(t, { bins: 'caffe' }), /bins 'caffe' leave a bin of level 6 empty on map 0 of size 13x13/);
    // a = 6, n = 5: kernel 2, padding 2 -> Caffe's pooling makes 4 bins, not 5.
    const u = sp.tensor(new Float32Array(6 * 6).fill(1), [1, 1, 6, 6], { device: 'cpu' });
    await expectReject(sp.spp(u, { bins: 'caffe', levels: [5] }), /bins 'caffe' cannot pool map 0 of size 6x6 \(HxW\) into level 5/);
  });

  it("'paper' with a map smaller than a level is an error naming the map, its size and the level", async function () {
    const maps = [sp.tensor(new Float32Array(3 * 9 * 9).fill(1), [3, 9, 9]), sp.tensor(new Float32Array(3 * 4 * 9).fill(2), [3, 4, 9])];
    const rb = sp.ragged(maps);
    await expectReject(sp.spp(rb, { bins: 'paper' }), /map 1 is 4x9 \(HxW\), smaller than level 6 along H/);
  });
});

describe('addon.enums (the C++ enums, which lib/ reads)', function () {
  it('holds the values of the C++ headers, frozen, and lib/ uses them', function () {
    const { native } = require('../dist/core/native');
    const { MATH_CODE } = require('../dist/core/math');
    const { MAX_LEVELS } = require('../dist/ops/spp');
    const e = native.enums;
    expect(e.binRule).to.deep.equal({ adaptive: 0, paper: 1, caffe: 2 });
    expect(e.binCheck).to.deep.equal({ ok: 0, badArgs: 1, zeroStride: 2, empty: 3, countMismatch: 4 });
    expect(e.poolKind).to.deep.equal({ max: 0, avg: 1 });
    expect(e.convMath).to.deep.equal({ tf32: 0, bf16: 1, fp32: 2, direct: 3 });
    expect(MATH_CODE).to.equal(e.convMath);
    expect(e.maxLevels).to.equal(16);
    expect(e.hostHugeAtLeast).to.equal(Math.floor((2 << 20) * 2 / 3));
    expect(MAX_LEVELS).to.equal(e.maxLevels);
    expect(sp.MAX_LEVELS).to.equal(e.maxLevels);
    expect(Object.isFrozen(e) && Object.isFrozen(e.binRule) && Object.isFrozen(e.convMath)).to.equal(true);
  });
});
