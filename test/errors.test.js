'use strict';
// Every class of bad input gets a clear error, leaves the process alive and other tensors intact.
const { expect } = require('chai');
const { sp, cudaStatus, expectReject } = require('./support/helpers');

// Every tensor here is made on an explicit device, each device present in turn: on the default
// device (CUDA when a GPU answers) a CPU input would meet a CUDA argument and fail the device
// check before the check a test is about.
const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];

for (const device of devices) {
  describe(`bad input to spp on ${device}`, function () {
    const data = Float32Array.from({ length: 2 * 3 * 8 * 9 }, (_, i) => Math.cos(i));
    const made = [];
    const keep = (t) => (made.push(t), t);
    const Z = (shape) => keep(sp.zeros(shape, { device }));
    const T = (values, shape) => keep(sp.tensor(values, shape, { device }));
    let x;
    beforeEach(function () {
      x = T(data, [2, 3, 8, 9]);
    });
    afterEach(async function () {
      // The input is untouched and still usable after every failure.
      expect(Array.from(await x.data())).to.deep.equal(Array.from(data));
      const y = keep(await sp.spp(x, { levels: [1] }));
      expect(y.shape).to.deep.equal([2, 3]);
      made.splice(0).forEach((t) => t.dispose());
    });

    it('wrong rank', async function () {
      await expectReject(sp.spp(Z([3, 4])), /input must have rank 4 \[N, C, H, W\] or 3 \[C, H, W\], got rank 2 with shape \[3, 4\]/);
      await expectReject(sp.spp(Z([1, 1, 1, 3, 4])), /got rank 5/);
    });

    it('not a tensor', async function () {
      await expectReject(sp.spp([1, 2, 3]), /input must be a RaggedBatch or a Tensor/);
      await expectReject(sp.spp(x, 'max'), /options must be an object/);
    });

    it('empty spatial axes', async function () {
      await expectReject(sp.spp(Z([1, 3, 0, 4])), /input axis H is empty in shape \[1, 3, 0, 4\]/);
    });

    it('non-positive, fractional or too many levels', async function () {
      await expectReject(sp.spp(x, { levels: [6, 0] }), /options.levels\[1\] must be a positive integer, got number 0/);
      await expectReject(sp.spp(x, { levels: [-2] }), /options.levels\[0\] must be a positive integer, got number -2/);
      await expectReject(sp.spp(x, { levels: [1.5] }), /options.levels\[0\] must be a positive integer/);
      await expectReject(sp.spp(x, { levels: [] }), /at least one level/);
      await expectReject(sp.spp(x, { levels: 6 }), /options.levels must be an array/);
      await expectReject(sp.spp(x, { levels: Array(17).fill(1) }), /at most 16 levels/);
    });

    it('unknown pool or bins', async function () {
      await expectReject(sp.spp(x, { pool: 'min' }), /options.pool must be 'max', 'avg', got the string "min"/);
      await expectReject(sp.spp(x, { bins: 'fancy' }), /options.bins must be 'adaptive', 'paper', 'caffe'/);
    });

    it('windows outside the map, inverted, non-integer or naming a missing map', async function () {
      await expectReject(sp.spp(x, { windows: [[0, 0, 0, 8, 7], [1, 0, 0, 9, 7]] }), /options.windows\[1\] = \(map 1, x0 0, y0 0, x1 9, y1 7\) lies outside map 1 of size 8x9 \(HxW\)/);
      await expectReject(sp.spp(x, { windows: [[0, -1, 0, 3, 3]] }), /options.windows\[0\].*lies outside map 0/);
      await expectReject(sp.spp(x, { windows: [[0, 5, 0, 3, 3]] }), /options.windows\[0\] = .* is empty: need x0 <= x1 and y0 <= y1/);
      await expectReject(sp.spp(x, { windows: [[0, 0, 0, 3, 3], [2, 0, 0, 1, 1]] }), /options.windows\[1\] names map 2, but the input has 2 map\(s\)/);
      await expectReject(sp.spp(x, { windows: [[0, 0.5, 0, 3, 3]] }), /options.windows\[0\].x0 must be an integer, got number 0.5/);
      await expectReject(sp.spp(x, { windows: [[0, NaN, 0, 3, 3]] }), /options.windows\[0\].x0 must be an integer, got number NaN/);
      await expectReject(sp.spp(x, { windows: [[0, 0, 0, 3]] }), /options.windows\[0\] must be \[map, x0, y0, x1, y1\]/);
      await expectReject(sp.spp(x, { windows: Z([2, 4]) }), /options.windows must have shape \[K, 5\]/);
    });

    it('disposed input, windows or out', async function () {
      const w = T([0, 0, 0, 1, 1], [1, 5]);
      w.dispose();
      await expectReject(sp.spp(x, { windows: w }), /options.windows was disposed/, 'SPPNET_DISPOSED');
      const out = Z([2, 150]);
      out.dispose();
      await expectReject(sp.spp(x, { out }), /options.out was disposed/, 'SPPNET_DISPOSED');
    });

    it('wrongly shaped out', async function () {
      await expectReject(sp.spp(x, { out: Z([2, 149]) }), /options.out must have shape \[2, 150\], got \[2, 149\]/);
    });

    it('outputs that overflow 32-bit sizes', async function () {
      // 2 maps x 3 channels x 30000^2 bins: 5.4e9 elements.
      await expectReject(sp.spp(x, { levels: [30000] }), /the output would be \[2, 2700000000\] = 5400000000 elements, more than the 2\^31-1/);
      await expectReject(sp.spp(x, { levels: [50000] }), /options.levels\[0\] = 50000 gives more than 2\^31-1 bins per channel/);
    });

    it('bad gradients to sppBackward', async function () {
      await expectReject(sp.sppBackward(x, Z([2, 149])), /gradOutput must have shape \[2, 150\] \(rows, C \* sum\(n\*n\)\), got \[2, 149\]/);
      await expectReject(sp.sppBackward(x, 'g'), /gradOutput must be a Tensor \[2, 150\]/);
      await expectReject(sp.sppBackward(x, Z([2, 150]), { out: Z([2, 3, 8, 8]) }), /options.out must have the input's shape or layout/);
    });

    it('NaN and Inf are data, not errors', async function () {
      const y = T(Float32Array.from([NaN, Infinity, -Infinity, 0]), [1, 1, 2, 2]);
      const out = await keep(await sp.spp(y, { levels: [1] })).data();
      expect(Number.isNaN(out[0])).to.equal(true);
    });
  });
}

describe('bad input on the CUDA device when there is none', function () {
  before(function () {
    if (sp.backend().cuda.available) {
      console.log('      (skipped: a CUDA device is present; see cuda.test.js)');
      this.skip();
    }
  });

  it('asking for a CUDA tensor is an error that says why, not a silent fallback', function () {
    const err = (() => {
      try {
        sp.tensor([1, 2], [2], { device: 'cuda' });
      } catch (e) {
        return e;
      }
    })();
    expect(err).to.be.instanceOf(sp.SppnetError);
    expect(err.code).to.equal('SPPNET_UNAVAILABLE');
    expect(err.message).to.match(/sp.tensor: device 'cuda' requested, but CUDA is unavailable: /);
    expect(err.message).to.include(sp.backend().cuda.error);
  });
});
