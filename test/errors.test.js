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
      // bins checked per window size (once per run of equal sizes): the first window too small for
      // 'paper' level 6 is named, after others of a size that bins
      await expectReject(sp.spp(x, { bins: 'paper', windows: [[0, 0, 0, 6, 6], [0, 1, 1, 7, 7], [0, 0, 0, 4, 6], [0, 0, 0, 6, 6]] }),
        /bins 'paper' need window 2 to be at least n along each axis for each level n: window 2 is 7x5 \(HxW\), smaller than level 6 along W/);
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

describe('bad model specs', function () {
  const base = () => ({
    name: 'x', inChannels: 3,
    layers: [
      { type: 'conv', name: 'c1', out: 8, kernel: 3 }, { type: 'lrn', size: 3 }, { type: 'maxpool', kernel: 2 },
      { type: 'spp', levels: [2, 1] }, { type: 'dropout', p: 0.5 }, { type: 'fc', name: 'f', out: 2 },
    ],
  });
  const L = (i, label) => `spec\\.layers\\[${i}\\] \\(${label}\\)`;
  // Each: how the spec is spoiled, and the message (after "sp.loadModel: ").
  const cases = [
    ['a conv with out 1e9 (issue 12)', (s) => (s.layers[0].out = 1e9), `${L(0, 'c1')}: its weight c1.weight \\[1000000000, 3, 3, 3\\] \\(out, input channels / groups, kernel\\) would hold 27000000000 elements, more than the 2\\^31-1 a tensor may hold`],
    ['a negative out', (s) => (s.layers[0].out = -3), `${L(0, 'c1')}.out must be a positive integer \\(at most 2\\^31-1\\), got number -3`],
    ['a fractional out', (s) => (s.layers[5].out = 2.5), `${L(5, 'f')}.out must be a positive integer .*got number 2.5`],
    ['an out past 32 bits', (s) => (s.layers[0].out = 2 ** 40), `${L(0, 'c1')}.out must be a positive integer \\(at most 2\\^31-1\\), got number 1099511627776`],
    ['a huge kernel', (s) => (s.layers[0].kernel = 1e6), `${L(0, 'c1')}.kernel must be an integer >= 1 and <= 65536, or a pair \\[h, w\\] of them, got number 1000000`],
    ['a kernel whose weight overflows', (s) => (s.layers[0].kernel = [60000, 60000]), `${L(0, 'c1')}: its weight c1.weight \\[8, 3, 60000, 60000\\]`],
    ['a fractional kernel', (s) => (s.layers[0].kernel = [3, 1.5]), `${L(0, 'c1')}.kernel must be an integer`],
    ['a missing kernel', (s) => delete s.layers[0].kernel, `${L(0, 'c1')}.kernel is required`],
    ['stride 0', (s) => (s.layers[0].stride = 0), `${L(0, 'c1')}.stride must be an integer >= 1`],
    ['a negative padding', (s) => (s.layers[0].padding = -1), `${L(0, 'c1')}.padding must be an integer >= 0`],
    ['a dilation past 32 bits', (s) => (s.layers[0].dilation = 2 ** 32), `${L(0, 'c1')}.dilation must be an integer >= 1 and <= 65536`],
    ['groups that do not divide', (s) => (s.layers[0].groups = 5), `${L(0, 'c1')}.groups number 5 must divide 3 in and 8 out channels`],
    ['a relu that is not a boolean', (s) => (s.layers[5].relu = 'yes'), `${L(5, 'f')}.relu must be a boolean`],
    ['inChannels 1e12', (s) => (s.inChannels = 1e12), 'spec.inChannels must be a positive integer \\(at most 2\\^31-1\\), got number 1000000000000'],
    ['no name', (s) => delete s.name, 'spec.name must be a non-empty string, got undefined'],
    ['an lrn size 0', (s) => (s.layers[1].size = 0), `${L(1, 'lrn')}.size must be a positive integer`],
    ['an lrn size past 32 bits', (s) => (s.layers[1].size = 2 ** 33), `${L(1, 'lrn')}.size must be at most 2\\^31-1, got 8589934592`],
    ['an lrn alpha NaN', (s) => (s.layers[1].alpha = NaN), `${L(1, 'lrn')}.alpha must be a finite number, got number NaN`],
    ['a pool kernel 0', (s) => (s.layers[2].kernel = 0), `${L(2, 'maxpool')}.kernel must be an integer >= 1`],
    ['a pool stride 1e9', (s) => (s.layers[2].stride = 1e9), `${L(2, 'maxpool')}.stride must be an integer >= 1 and <= 65536`],
    ['a pool padding over half the kernel', (s) => (s.layers[2].padding = 5), `${L(2, 'maxpool')}.padding 5x5 must be at most half the kernel 2x2`],
    ['a pool ceilMode that is not a boolean', (s) => (s.layers[2].ceilMode = 1), `${L(2, 'maxpool')}.ceilMode must be a boolean, got number 1`],
    ['a level past 46340', (s) => (s.layers[3].levels = [1e5]), `${L(3, 'spp')}.levels\\[0\\] = 100000 gives more than 2\\^31-1 bins per channel`],
    ['17 levels', (s) => (s.layers[3].levels = Array(17).fill(1)), `${L(3, 'spp')}.levels may name at most 16 levels, got 17`],
    ['an unknown pool', (s) => (s.layers[3].pool = 'min'), `${L(3, 'spp')}.pool must be 'max', 'avg', got the string "min"`],
    ['an unknown bin rule', (s) => (s.layers[3].bins = 'fancy'), `${L(3, 'spp')}.bins must be 'adaptive', 'paper', 'caffe'`],
    ['features past 32 bits', (s) => Object.assign(s.layers[0], { out: 2 ** 20, kernel: 1 }) && (s.layers[3].levels = [46340]),
      `${L(3, 'spp')}.levels \\[46340\\] on 1048576 channels give 2251707488665600 features per image, more than the 2\\^31-1 a row may hold`],
    ['dropout p 1', (s) => (s.layers[4].p = 1), `${L(4, 'dropout')}.p must be a number in \\[0, 1\\), got number 1`],
    ['an fc with out 1e9', (s) => (s.layers[5].out = 1e9), `${L(5, 'f')}: its weight f.weight \\[1000000000, 40\\] \\(out, the 40 features of the layers before\\) would hold 40000000000 elements`],
    ['weights over 4 GiB together', (s) => Object.assign(s.layers[0], { out: 1024, kernel: 1 }) && (s.layers[3].levels = [6, 3, 2, 1]) && (s.layers[5].out = 30000),
      "x's weights would hold 1536034096 floats \\(5.7 GiB\\), more than the 1073741824 \\(4 GiB\\) a model may hold; the largest is f.weight \\[30000, 51200\\] of spec.layers\\[5\\] \\(f\\)"],
    ['a layer that leaves nothing of any image', (s) => Object.assign(s.layers[0], { stride: 65536 }),
      `${L(2, 'maxpool')} leaves nothing along H of any image up to 65536 pixels`],
  ];
  for (const [what, spoil, message] of cases) {
    it(`${what}: SPPNET_INVALID_ARGUMENT naming the layer and the field, before anything is allocated`, async function () {
      const spec = base();
      spoil(spec);
      const before = sp.memory();
      await expectReject(sp.loadModel({ spec, device: 'cpu' }), new RegExp(`^sp\\.loadModel: ${message}`), 'SPPNET_INVALID_ARGUMENT');
      expect(sp.memory().allocations).to.deep.equal(before.allocations);
      expect(() => sp.checkSpec(spec)).to.throw(sp.SppnetError);
    });
  }

  it('the same checks for minimumSize and buildModel; the paper networks pass', async function () {
    const spec = base();
    spec.layers[0].out = 1e9;
    expect(() => sp.minimumSize(spec)).to.throw(/^sp.minimumSize: spec.layers\[0\] \(c1\): its weight/);
    await expectReject(sp.buildModel({ spec }), /^sp.loadModel: spec.layers\[0\] \(c1\): its weight/, 'SPPNET_INVALID_ARGUMENT');
    expect(sp.minimumSize(sp.archSpec('zf5', 1000))).to.deep.equal([29, 29]);
    for (const arch of ['convnet5', 'overfeat5', 'overfeat7']) expect(() => sp.checkSpec(sp.archSpec(arch, 1000))).to.not.throw();
    await expectReject(sp.loadModel({ arch: 'zf5', classes: 1e9 }), /^sp.loadModel: spec.layers\[\d+\] \(fc8\): its weight fc8.weight \[1000000000, 4096\]/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('images whose activations would overflow a tensor: SPPNET_INVALID_ARGUMENT naming the layer, not a RangeError', async function () {
    const m = await sp.buildModel({ spec: { name: 'wide', inChannels: 1, layers: [{ type: 'conv', name: 'c', out: 64, kernel: 1 }, { type: 'spp', levels: [1] }, { type: 'fc', name: 'f', out: 2 }] }, device: 'cpu' });
    const img = sp.zeros([1, 6000, 6000], { device: 'cpu' });
    await expectReject(m.run([img]), /^Model.run: spec.layers\[0\] \(c\) would output 2304000000 elements for these images, more than the 2\^31-1 a tensor may hold/, 'SPPNET_INVALID_ARGUMENT');
    img.dispose();
    m.dispose();
  });
});

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
