'use strict';
// torchvision's networks (AlexNet, VGG 11-19 with and without batch norm, GoogLeNet, and an SPP
// variant) against torchvision's own logits: test/fixtures/torchvision/logits.json, written by
// tools/make_torchvision_fixtures.py (PyTorch 1.13, torchvision 0.14) from full-width models whose
// weights and images come from a formula both sides compute bit for bit
// (test/support/formula-weights.js). sppnet runs the images as one ragged batch; torchvision ran
// them one at a time. The criterion: per image, max |ours - torchvision| <= 1e-4 * max |torchvision|.
//
// On a GPU every case runs with 'fp32' math (3xTF32 convs and fc layers: TF32 alone would move the
// logits past 1e-4); on the emulated device (one CPU fiber per CUDA thread) only GoogLeNet, which
// holds every new layer kind, on its smallest image.
const fs = require('fs');
const os = require('os');
const path = require('path');
const { expect } = require('chai');
const { sp, cudaStatus, expectReject } = require('./support/helpers');
const { weightValues, formulaImage } = require('./support/formula-weights');
const fixture = require('./fixtures/torchvision/logits.json');

const emulated = process.env.SPPNET_CUDA_EMULATOR === '1';

function stateDict(c, skip = () => false) {
  const m = new Map();
  c.tensors.forEach(([name, shape], p) => {
    if (!skip(name)) m.set(name, { shape, data: weightValues(p, name, shape) });
  });
  return m;
}

function images(c, device) {
  return c.images.map(({ seed, shape }) => sp.tensor(formulaImage(seed, shape[1], shape[2]), shape, { device }));
}

/** Per image: max |got - want| / max |want|. */
function relErrors(got, want) {
  const k = want[0].length;
  return want.map((row, i) => {
    const scale = Math.max(...row.map(Math.abs));
    let e = 0;
    for (let j = 0; j < k; j++) e = Math.max(e, Math.abs(got[i * k + j] - row[j]));
    return e / scale;
  });
}

async function logitsOf(c, device, weights, count = c.images.length) {
  const model = await sp.loadModel({ arch: c.arch, classes: fixture.classes, weights, device, ...c.options });
  const xs = images(c, device).slice(0, count);
  try {
    const out = await model.run(xs);
    const got = await out.data();
    out.dispose();
    return got;
  } finally {
    xs.forEach((t) => t.dispose());
    model.dispose();
  }
}

const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];

for (const device of devices) {
  describe(`torchvision archs give torchvision's logits (${device}${emulated && device === 'cuda' ? ', emulated' : ''})`, function () {
    this.timeout(20 * 60 * 1000);
    let saved;
    before(() => {
      if (device === 'cuda') saved = sp.setMath({ conv: 'fp32', linear: 'fp32' });
    });
    after(() => {
      if (saved) sp.setMath(saved);
    });
    const cases = device === 'cuda' && emulated ? fixture.cases.filter((c) => c.case === 'googlenet') : fixture.cases;
    for (const c of cases) {
      it(`${c.case}: ${c.images.map((i) => `${i.shape[1]}x${i.shape[2]}`).join(', ')} in one ragged batch, within 1e-4`, async function () {
        const count = device === 'cuda' && emulated ? 1 : c.images.length;
        const got = await logitsOf(c, device, stateDict(c), count);
        const errs = relErrors(got, c.logits.slice(0, count));
        errs.forEach((e, i) => expect(e, `${c.case} image ${i}: relative error`).to.be.below(1e-4));
      });
    }
  });
}

describe('torchvision archs: structure, weights and options', function () {
  this.timeout(10 * 60 * 1000);
  const byCase = (name) => fixture.cases.find((c) => c.case === name);

  it("every arch declares exactly torchvision's state_dict (names, shapes, order), GoogLeNet's aux heads aside", async function () {
    for (const c of fixture.cases.filter((x) => x.case === x.arch)) {
      const spec = sp.torchvisionSpec(c.arch, { classes: fixture.classes });
      const params = sp.checkSpec(spec).params.map((p) => [p.name, p.shape]);
      const want = c.tensors.filter(([n]) => !n.startsWith('aux'));
      expect(params, c.arch).to.deep.equal(want);
    }
  });

  it('batch norm run alone (SPPNET_FUSE=0: a 1x1 depthwise conv) gives the folded logits', async function () {
    const c = byCase('vgg11_bn');
    const fused = await logitsOf(c, 'cpu', stateDict(c));
    process.env.SPPNET_FUSE = '0';
    try {
      const alone = await logitsOf(c, 'cpu', stateDict(c));
      relErrors(alone, c.logits).forEach((e) => expect(e).to.be.below(1e-4));
      relErrors(fused, [Array.from(alone.slice(0, 10))]).forEach((e) => expect(e).to.be.below(1e-5));
    } finally {
      delete process.env.SPPNET_FUSE;
    }
  });

  it('loads from a safetensors file written from the state_dict (the aux heads in it ignored)', async function () {
    const c = byCase('googlenet');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-tv-'));
    try {
      const file = path.join(dir, 'googlenet.safetensors');
      await sp.writeSafetensors(file, stateDict(c));
      const model = await sp.loadModel({ arch: 'googlenet', classes: fixture.classes, weights: file });
      const xs = images(c, 'cpu');
      const out = await model.run(xs);
      relErrors(await out.data(), c.logits).forEach((e) => expect(e).to.be.below(1e-4));
      out.dispose();
      xs.forEach((t) => t.dispose());
      model.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a missing batch-norm statistic is named; an arch option that does not apply is refused', async function () {
    const c = byCase('googlenet');
    await expectReject(sp.loadModel({ arch: 'googlenet', classes: 10, weights: stateDict(c, (n) => n === 'inception4c.branch2.1.bn.running_var') }),
      /missing tensor "inception4c\.branch2\.1\.bn\.running_var" \(expected shape \[256\]\)/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.loadModel({ arch: 'vgg16', transformInput: true }), /transformInput applies to googlenet only/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.loadModel({ arch: 'vgg16', pool: 'max' }), /options\.pool must be 'adaptive' or 'spp'/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.loadModel({ arch: 'zf5', pool: 'adaptive' }), /options\.pool must be 'spp' for zf5/, 'SPPNET_INVALID_ARGUMENT');
  });

  it("SPP variants: the pyramid replaces the adaptive pool and the first fc layer takes the pyramid's width", async function () {
    const widths = { alexnet: ['classifier.1.weight', 256], vgg16: ['classifier.0.weight', 512], googlenet: ['fc.weight', 1024] };
    for (const [arch, [fc, channels]] of Object.entries(widths)) {
      const plain = sp.checkSpec(sp.torchvisionSpec(arch, { classes: 10 }));
      const spp = sp.checkSpec(sp.torchvisionSpec(arch, { classes: 10, pool: 'spp' }));
      const lv = sp.checkSpec(sp.torchvisionSpec(arch, { classes: 10, levels: [4, 1] }));
      const n = { alexnet: 36, vgg16: 49, googlenet: 1 }[arch];
      expect(plain.params.find((p) => p.name === fc).shape[1], arch).to.equal(channels * n);
      expect(spp.params.find((p) => p.name === fc).shape[1], `${arch} spp`).to.equal(channels * 50);
      expect(lv.params.find((p) => p.name === fc).shape[1], `${arch} levels [4, 1]`).to.equal(channels * 17);
      expect(spp.spec.name).to.equal(`${arch}-spp`);
    }
  });

  it('a branch that changes the map size differently from the others is refused when the spec is checked', function () {
    const spec = { name: 'bad', inChannels: 3, layers: [
      { type: 'concat', branches: [[{ type: 'conv', name: 'a', out: 4, kernel: 3, padding: 1 }], [{ type: 'conv', name: 'b', out: 4, kernel: 3 }]] },
      { type: 'spp', levels: [1] }, { type: 'fc', name: 'fc', out: 2 }] };
    expect(() => sp.checkSpec(spec)).to.throw(/spec\.layers\[0\] \(concat\): branch 1 makes 0 of an input side 1 along H, branch 0 makes 1; the branches' maps must be the same size/);
    spec.layers[0].branches[1] = [{ type: 'spp' }];
    expect(() => sp.checkSpec(spec)).to.throw(/spec\.layers\[0\]\.branches\[1\]\[0\] \(spp\) is an spp layer inside a branch/);
  });

  it("one SGD step through batch norm and an Inception block equals PyTorch's (loss, weights, running statistics, eval logits)", async function () {
    const f = require('./fixtures/torchvision/bn-train.json');
    for (const device of devices) {
      const weights = new Map(f.tensors.map(([name, shape], p) => [name, { shape, data: weightValues(p, name, shape) }]));
      const model = await sp.loadModel({ spec: f.spec, weights, device });
      model.setOptimizer({ type: 'sgd', lr: f.lr, momentum: 0, weightDecay: 0 });
      const x = sp.tensor(Float32Array.from(f.images.flatMap(({ seed, shape }) => Array.from(formulaImage(seed, shape[1], shape[2])))), [2, 3, 9, 11], { device });
      const r = await model.trainStep(x, f.labels);
      expect(Math.abs(r.loss - f.loss), `${device}: loss ${r.loss} vs PyTorch's ${f.loss}`).to.be.below(1e-5);
      const sd = await model.stateDict();
      for (const [name, want] of Object.entries(f.after)) {
        const got = sd.get(name).data;
        const scale = Math.max(...want.map(Math.abs));
        want.forEach((v, i) => expect(Math.abs(got[i] - v), `${device}: ${name}[${i}] after the step`).to.be.at.most(1e-5 * Math.max(1, scale)));
      }
      const out = await model.run(x);
      const logits = await out.data();
      f.evalLogits.flat().forEach((v, i) => expect(Math.abs(logits[i] - v), `${device}: eval logit ${i}`).to.be.below(1e-4 * Math.max(1, Math.abs(v))));
      out.dispose();
      x.dispose();
      model.dispose();
    }
  });

  it('batch norm over a ragged batch: statistics over every pixel of every map, its backward against a float64 reference', async function () {
    const seed = (Date.now() % 100000) + 1;
    let s = seed;
    const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296) * 4 - 2;
    const C = 3, sizes = [[5, 7], [1, 1], [9, 4]];
    const maps = sizes.map(([h, w]) => sp.tensor(Float32Array.from({ length: C * h * w }, rnd), [C, h, w]));
    const x = sp.ragged(maps);
    const gamma = Float32Array.from({ length: C }, () => 0.5 + Math.abs(rnd())), beta = Float32Array.from({ length: C }, rnd);
    const p = { weight: sp.tensor(gamma, [C]), bias: sp.tensor(beta, [C]), runningMean: sp.zeros([C]), runningVar: sp.full([C], 1), numBatchesTracked: sp.zeros([]) };
    const { output, saved } = await sp.batchNormTrain(x, p, { eps: 1e-5, momentum: 0.1 });
    const gy = sp.ragged(sizes.map(([h, w]) => sp.tensor(Float32Array.from({ length: C * h * w }, rnd), [C, h, w])));
    const g = await sp.batchNormBackward(x, gy, saved);
    // The float64 reference, per channel over the concatenation of every map's plane.
    const xs = await x.data(), ys = await output.data(), gys = await gy.data(), dxs = await g.gradInput.data();
    const dg = await g.gradWeight.data(), db = await g.gradBias.data(), rm = await p.runningMean.data(), rv = await p.runningVar.data();
    for (let c = 0; c < C; c++) {
      const idx = [];
      let off = 0;
      for (const [h, w] of sizes) {
        for (let k = 0; k < h * w; k++) idx.push(off + c * h * w + k);
        off += C * h * w;
      }
      const M = idx.length;
      const mean = idx.reduce((a, i) => a + xs[i], 0) / M;
      const v = idx.reduce((a, i) => a + (xs[i] - mean) ** 2, 0) / M;
      const inv = 1 / Math.sqrt(v + 1e-5);
      const xh = (i) => (xs[i] - mean) * inv;
      const sdy = idx.reduce((a, i) => a + gys[i], 0), sdyxh = idx.reduce((a, i) => a + gys[i] * xh(i), 0);
      const tag = `seed ${seed}, channel ${c}`;
      expect(rm[c], tag).to.be.closeTo(0.1 * mean, 1e-6);
      expect(rv[c], tag).to.be.closeTo(0.9 + 0.1 * v * M / (M - 1), 1e-5);
      expect(dg[c], tag).to.be.closeTo(sdyxh, 1e-4 * M);
      expect(db[c], tag).to.be.closeTo(sdy, 1e-4 * M);
      for (const i of idx) {
        expect(ys[i], tag).to.be.closeTo(xh(i) * gamma[c] + beta[c], 1e-5 * (1 + Math.abs(ys[i])));
        expect(dxs[i], tag).to.be.closeTo(gamma[c] * inv * (gys[i] - sdy / M - xh(i) * sdyxh / M), 1e-4);
      }
    }
    expect((await p.numBatchesTracked.data())[0]).to.equal(1);
    [x, gy, output, g.gradInput, g.gradWeight, g.gradBias, ...Object.values(p)].forEach((t) => t.dispose());
  });
});
