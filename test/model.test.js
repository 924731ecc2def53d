'use strict';
// The model runner: the paper's networks, user specs, weights, ragged batches, predictions.
const { expect } = require('chai');
const { sp, expectClose, expectReject, inChildWith, WINOGRAD_FROM_32 } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');
const { refConv2d, refMaxPool2d, refLrn, refLinear } = require('./support/layers-reference');
const { refSpp } = require('./support/reference');

/** Map sizes through the conv part of a spec at an input side, from the layer formulas. */
function sizesAt(spec, side) {
  const out = [];
  let a = side;
  for (const l of spec.layers) {
    if (l.type === 'spp') break;
    const k = l.kernel, s = l.stride ?? (l.type === 'maxpool' ? l.kernel : 1), p = l.padding ?? 0;
    if (l.type === 'conv') a = Math.floor((a + 2 * p - k) / s) + 1;
    if (l.type === 'maxpool') a = Math.floor((a + 2 * p - k) / s) + 1;
    if (l.type !== 'lrn') out.push(`${l.name || l.type}:${a}`);
  }
  return out;
}

const tiny = (classes = 4) => ({
  name: 'tiny',
  inChannels: 3,
  layers: [
    { type: 'conv', name: 'conv1', out: 6, kernel: 3, stride: 1, padding: 1, relu: true },
    { type: 'lrn', size: 3, alpha: 0.01, beta: 0.75, k: 1 },
    { type: 'maxpool', kernel: 2, stride: 2 },
    { type: 'conv', name: 'conv2', out: 8, kernel: 3, padding: 1, relu: true },
    { type: 'spp', levels: [3, 1] },
    { type: 'fc', name: 'fc1', out: 16, relu: true },
    { type: 'dropout', p: 0.5 },
    { type: 'fc', name: 'fc2', out: classes },
  ],
});

describe('models', function () {
  it("the paper's networks have the paper's map sizes at 224x224", function () {
    expect(sizesAt(sp.archSpec('zf5', 10), 224)).to.deep.equal(['conv1:110', 'maxpool:55', 'conv2:27', 'maxpool:13', 'conv3:13', 'conv4:13', 'conv5:13']);
    expect(sizesAt(sp.archSpec('convnet5', 10), 224)).to.deep.equal(['conv1:55', 'conv2:55', 'maxpool:27', 'conv3:27', 'maxpool:13', 'conv4:13', 'conv5:13']);
    expect(sizesAt(sp.archSpec('overfeat5', 10), 224)).to.deep.equal(['conv1:109', 'maxpool:36', 'conv2:36', 'maxpool:18', 'conv3:18', 'conv4:18', 'conv5:18']);
    expect(sizesAt(sp.archSpec('overfeat7', 10), 224).slice(-2)).to.deep.equal(['conv6:18', 'conv7:18']);
  });

  it('names parameters as the equivalent PyTorch state_dict, with PyTorch layouts', async function () {
    const m = await sp.buildModel({ arch: 'zf5', classes: 7, device: 'cpu' });
    const shapes = Object.fromEntries(m.params.map((p) => [p.name, p.shape]));
    expect(shapes['conv1.weight']).to.deep.equal([96, 3, 7, 7]);
    expect(shapes['conv5.bias']).to.deep.equal([256]);
    expect(shapes['fc6.weight']).to.deep.equal([4096, 256 * 50]);
    expect(shapes['fc8.weight']).to.deep.equal([7, 4096]);
    expect(m.params).to.have.length(16);
    m.dispose();
  });

  it('a ragged batch gives the same logits as each image alone, and matches the plain reference', async function () {
    const seed = freshSeed();
    const r = rng(seed);
    const m = await sp.buildModel({ spec: tiny(), seed: seed % 1000, device: 'cpu' });
    const sizes = [[9, 13], [16, 11], [6, 6], [21, 30]];
    const imgs = sizes.map(([h, w]) => ({ data: Float32Array.from({ length: 3 * h * w }, () => r.normal()), C: 3, H: h, W: w }));
    const batch = await m.run(imgs.map((i) => sp.tensor(i.data, [3, i.H, i.W], { device: 'cpu' })));
    expect(batch.shape).to.deep.equal([4, 4]);
    const all = await batch.data();
    const sd = await m.stateDict();
    const W = (n) => sd.get(n).data;
    for (let i = 0; i < imgs.length; i++) {
      const alone = await (await m.run([sp.tensor(imgs[i].data, [3, imgs[i].H, imgs[i].W], { device: 'cpu' })])).data();
      expectClose(alone, all.subarray(i * 4, i * 4 + 4), { rtol: 1e-5, atol: 1e-6, label: `seed ${seed} image ${i} alone` });
      // The reference path: float64 layer references, no shared code with the kernels.
      let x = refConv2d(imgs[i], W('conv1.weight'), W('conv1.bias'), { cout: 6, kh: 3, kw: 3, padding: [1, 1], relu: true });
      x = refLrn(x, { size: 3, alpha: 0.01, beta: 0.75, k: 1 });
      x = refMaxPool2d(x, { kernel: [2, 2], stride: [2, 2] });
      x = refConv2d(x, W('conv2.weight'), W('conv2.bias'), { cout: 8, kh: 3, kw: 3, padding: [1, 1], relu: true });
      const f = refSpp([x], { levels: [3, 1] });
      const h = refLinear(f, 1, f.length, W('fc1.weight'), 16, W('fc1.bias'), true);
      const logits = refLinear(h, 1, 16, W('fc2.weight'), 4, W('fc2.bias'));
      expectClose(all.subarray(i * 4, i * 4 + 4), logits, { rtol: 1e-4, atol: 1e-4, label: `seed ${seed} image ${i} reference` });
    }
    m.dispose();
  });

  it("a concat's branches: those ending in a conv (batch norm folded too) write their channels in place, the others are copied; the plain reference's logits", async function () {
    // Model.run on the CPU gives each branch that ends in a conv its channels of the concat's
    // output to write (lib/core/spatial.ts, ChannelSlice); a branch ending in LRN, a max pool or a
    // ReLU is copied in after. Every mix, first run and compiled replays, against float64 references.
    const seed = freshSeed();
    const r = rng(seed);
    const spec = {
      name: 'branches', inChannels: 3,
      layers: [
        { type: 'conv', name: 'c1', out: 7, kernel: 3, padding: 1 },
        { type: 'concat', branches: [
          [{ type: 'conv', name: 'a', out: 5, kernel: 1 }],
          [{ type: 'maxpool', kernel: 3, stride: 1, padding: 1 }],
          [{ type: 'conv', name: 'b', out: 4, kernel: 1, relu: false }, { type: 'batchnorm', name: 'bb', relu: true }],
          [{ type: 'conv', name: 'c', out: 3, kernel: 3, padding: 1 }, { type: 'lrn', size: 3 }],
          [{ type: 'conv', name: 'd', out: 2, kernel: 1, relu: false }, { type: 'relu' }],
          [{ type: 'conv', name: 'e', out: 6, kernel: 3, padding: 1, relu: false }],
        ] },
        { type: 'spp', levels: [2, 1] },
        { type: 'fc', name: 'fc', out: 3 },
      ],
    };
    const m = await sp.buildModel({ spec, seed: seed % 1000, device: 'cpu' });
    const sd = await m.stateDict();
    // batch-norm statistics and affine that are not the identity
    const bn = { 'bb.weight': [0.5, 2], 'bb.bias': [-1, 1], 'bb.running_mean': [-0.5, 0.5], 'bb.running_var': [0.2, 3] };
    for (const [n, [lo, hi]] of Object.entries(bn)) sd.get(n).data.forEach((_, i, a) => { a[i] = lo + (hi - lo) * r.next(); });
    await m.loadStateDict(sd);
    const W = (n) => sd.get(n).data;
    const sizes = [[9, 13], [16, 11], [6, 6]];
    const imgs = sizes.map(([h, w]) => ({ data: Float32Array.from({ length: 3 * h * w }, () => r.normal()), C: 3, H: h, W: w }));
    const want = imgs.map((img) => {
      const x = refConv2d(img, W('c1.weight'), W('c1.bias'), { cout: 7, kh: 3, kw: 3, padding: [1, 1], relu: true });
      const conv = (name, cout, k, relu) => refConv2d(x, W(`${name}.weight`), W(`${name}.bias`), { cout, kh: k, kw: k, padding: [k >> 1, k >> 1], relu });
      const b = conv('b', 4, 1, false);
      const hw = b.H * b.W;
      b.data = b.data.map((v, i) => {
        const ch = Math.floor(i / hw);
        return Math.max(0, (v - W('bb.running_mean')[ch]) / Math.sqrt(W('bb.running_var')[ch] + 1e-5) * W('bb.weight')[ch] + W('bb.bias')[ch]);
      });
      const d = conv('d', 2, 1, false);
      d.data = d.data.map((v) => Math.max(0, v));
      const parts = [conv('a', 5, 1, true), refMaxPool2d(x, { kernel: [3, 3], stride: [1, 1], padding: [1, 1] }), b,
        refLrn(conv('c', 3, 3, true), { size: 3 }), d, conv('e', 6, 3, false)];
      const cat = { C: 27, H: x.H, W: x.W, data: Float64Array.from(parts.flatMap((p) => Array.from(p.data))) };
      const f = refSpp([cat], { levels: [2, 1] });
      return refLinear(f, 1, f.length, W('fc.weight'), 3, W('fc.bias'));
    });
    for (let k = 0; k < 3; k++) { // the layers, then the recorded and compiled run, then a replay
      const y = await m.run(imgs.map((i) => sp.tensor(i.data, [3, i.H, i.W], { device: 'cpu' })));
      const got = await y.data();
      y.dispose();
      want.forEach((logits, i) => expectClose(got.subarray(i * 3, i * 3 + 3), logits, { rtol: 1e-4, atol: 1e-4, label: `seed ${seed} run ${k} image ${i}` }));
    }
    m.dispose();
  });

  it('keeps Winograd filter transforms between runs, and drops them when trainStep or loadStateDict change the weights', async function () {
    // 3x3 stride-1 convs with >= 160 channels (32 here, in a child: inChildWith) and a map of >= 48 2x2 tiles
    // take the CPU's Winograd path, whose transformed filters a Model keeps per layer (the weights
    // only change through trainStep and loadStateDict).
    if (inChildWith(this, __filename, WINOGRAD_FROM_32)) return;
    await winogradCacheCase();
  });

  async function winogradCacheCase() {
    const seed = freshSeed();
    const r = rng(seed);
    const spec = {
      name: 'wino', inChannels: 3,
      layers: [
        { type: 'conv', name: 'conv1', out: 32, kernel: 3, padding: 1, relu: true },
        { type: 'conv', name: 'conv2', out: 40, kernel: 3, padding: 1, relu: true },
        { type: 'spp', levels: [2, 1] },
        { type: 'fc', name: 'fc', out: 3 },
      ],
    };
    const m = await sp.buildModel({ spec, seed: seed % 1000, device: 'cpu' });
    const img = { data: Float32Array.from({ length: 3 * 19 * 21 }, () => r.normal()), C: 3, H: 19, W: 21 };
    const reference = async () => {
      const sd = await m.stateDict();
      const W = (n) => sd.get(n).data;
      let x = refConv2d(img, W('conv1.weight'), W('conv1.bias'), { cout: 32, kh: 3, kw: 3, padding: [1, 1], relu: true });
      x = refConv2d(x, W('conv2.weight'), W('conv2.bias'), { cout: 40, kh: 3, kw: 3, padding: [1, 1], relu: true });
      const f = refSpp([x], { levels: [2, 1] });
      return refLinear(f, 1, f.length, W('fc.weight'), 3, W('fc.bias'));
    };
    const run = async () => (await m.run([sp.tensor(img.data, [3, 19, 21], { device: 'cpu' })])).data();
    const check = async (label) => expectClose(await run(), await reference(), { rtol: 1e-4, atol: 1e-4, label: `seed ${seed} ${label}` });
    await check('first run');
    await check('second run (cached transforms)');
    // The cache is used: spoiling it (header kept valid) changes the logits ...
    const caches = m.filterCaches;
    expect(Array.from(caches.keys())).to.deep.equal(['conv2']); // conv1 has 3 input channels: no Winograd
    const c2 = caches.get('conv2');
    const good = Float32Array.from(c2);
    const before = await run();
    c2.fill(0, 16);
    const spoiled = await run();
    expect(Array.from(spoiled).some((v, i) => Math.abs(v - before[i]) > 1e-3), 'spoiling the cache changed nothing').to.equal(true);
    c2.set(good);
    await check('cache restored');
    // ... handing out the live weights drops it (the caller may write them) ...
    m.parameters();
    expect(m.filterCaches.size).to.equal(0);
    await check('after parameters()');
    // ... and a trainStep (new weights) drops it: the run matches the reference with the new weights.
    await m.trainStep([sp.tensor(img.data, [3, 19, 21], { device: 'cpu' })], [1], { lr: 0.5 });
    expect(m.filterCaches.size).to.equal(0);
    await check('after trainStep');
    const sd = await m.stateDict();
    for (const v of sd.values()) v.data.forEach((e, i) => (v.data[i] = e * -0.5));
    await m.loadStateDict(sd);
    expect(m.filterCaches.size).to.equal(0);
    await check('after loadStateDict');
    m.dispose();
  }

  it('saves and loads safetensors: same logits; the file carries its spec; a file of another network is refused', async function () {
    const fs = require('fs'), os = require('os'), path = require('path');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-'));
    const file = path.join(dir, 'tiny.safetensors');
    const m = await sp.buildModel({ spec: tiny(), seed: 11, device: 'cpu' });
    await m.save(file);
    const img = sp.tensor(Float32Array.from({ length: 3 * 10 * 14 }, (_, i) => Math.cos(i)), [3, 10, 14], { device: 'cpu' });
    const a = await (await m.run([img])).data();
    const m2 = await sp.loadModel({ weights: file, device: 'cpu' });
    expect(m2.spec.name).to.equal('tiny');
    expect(Array.from(await (await m2.run([img])).data())).to.deep.equal(Array.from(a));
    const err = await expectReject(sp.loadModel({ arch: 'zf5', classes: 4, weights: file, device: 'cpu' }), /the weights in .*tiny.safetensors do not fit zf5/);
    expect(err.message).to.include('missing tensor "conv3.weight"');
    const bytes = fs.readFileSync(file);
    fs.writeFileSync(path.join(dir, 'cut.safetensors'), bytes.subarray(0, bytes.length - 100));
    await expectReject(sp.loadModel({ weights: path.join(dir, 'cut.safetensors'), device: 'cpu' }), /truncated/);
    [m, m2].forEach((x) => x.dispose());
    fs.rmSync(dir, { recursive: true });
  });

  it('features(), spp and head() give run()\'s logits; trainHeadStep changes the head\'s weights only', async function () {
    const seed = freshSeed();
    const r = rng(seed);
    const m = await sp.buildModel({ spec: sp.ablationSpec("spp", 5, [4, 2, 1], 8), seed: seed % 1000 });
    try {
      const imgs = [[3, 37, 53], [3, 29, 31]].map((s) => sp.tensor(Float32Array.from({ length: s[0] * s[1] * s[2] }, () => r.next() - 0.5), s));
      const maps = await m.features(imgs);
      expect(maps.sizes.map((s) => [...s])).to.deep.equal([[4, 6], [3, 4]]); // 37x53 and 29x31 through stride 2, two 2x2 pools
      const rows = await sp.spp(maps, { levels: [4, 2, 1] });
      expect(rows.shape).to.deep.equal([2, m.pooledFeatures]);
      const a = await m.head(rows), b = await m.run(imgs);
      expectClose(await a.data(), await b.data(), 1e-6, 1e-6, `seed ${seed}`);
      const before = await m.stateDict();
      m.setOptimizer({ type: 'sgd', lr: 0.05 });
      const step = await m.trainHeadStep(rows, [1, 4]);
      expect(step.count).to.equal(2);
      const after = await m.stateDict();
      for (const [name, t] of before) {
        const changed = t.data.some((v, i) => v !== after.get(name).data[i]);
        expect(changed, name).to.equal(name.startsWith('fc'));
      }
      const fc6 = await m.head(rows, { until: 'fc6' });
      expect(fc6.shape).to.deep.equal([2, 128]);
      expect(Math.min(...(await fc6.data()))).to.be.at.least(0); // its ReLU included
      fc6.dispose();
      await expectReject(m.head(rows, { until: 'conv1' }), /Model\.head: options\.until must name a layer after the spp layer \(fc6, fc7\)/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(m.head(sp.zeros([2, 7])), /Model\.head: rows must have shape \[N >= 1, 1344\]/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(m.trainHeadStep(rows, [1, 9]), /Model\.trainHeadStep: labels\[1\] is 9/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(m.trainHeadStep(rows, [1]), /labels has 1 entries for 2 rows/, 'SPPNET_INVALID_ARGUMENT');
      [maps, rows, a, b, ...imgs].forEach((t) => t.dispose());
    } finally {
      m.dispose();
    }
  });

  it('predict gives the top-k with labels, sorted by score', async function () {
    const m = await sp.buildModel({ spec: tiny(5), seed: 3, device: 'cpu' });
    const img = sp.tensor(Float32Array.from({ length: 3 * 12 * 12 }, (_, i) => Math.sin(i)), [3, 12, 12], { device: 'cpu' });
    const [top] = await m.predict([img], { topk: 3, labels: ['a', 'b', 'c', 'd', 'e'] });
    expect(top).to.have.length(3);
    expect(top[0].score).to.be.at.least(top[1].score);
    expect(top[1].score).to.be.at.least(top[2].score);
    expect(top.every((t) => ['a', 'b', 'c', 'd', 'e'][t.index] === t.label)).to.equal(true);
    m.dispose();
  });

  it('bad inputs: wrong channels, images below the minimum, weights that do not fit, a disposed model', async function () {
    const m = await sp.buildModel({ arch: 'zf5', classes: 3, device: 'cpu' });
    expect(m.minSize).to.deep.equal([29, 29]);
    await expectReject(m.run([sp.zeros([1, 64, 64], { device: 'cpu' })]), /images\[0\] has 1 channels \(axis 0\), zf5 takes 3/);
    await expectReject(m.run([sp.zeros([3, 64, 64], { device: 'cpu' }), sp.zeros([3, 20, 64], { device: 'cpu' })]), /image 1 is 20x64 \(HxW\), smaller than zf5's minimum 29x29/);
    const sd = await m.stateDict();
    sd.delete('conv2.bias');
    sd.set('conv1.weight', { shape: [96, 3, 5, 5], data: new Float32Array(96 * 75) });
    sd.set('extra.weight', { shape: [1], data: new Float32Array(1) });
    const err = await expectReject(sp.buildModel({ arch: 'zf5', classes: 3, weights: sd, device: 'cpu' }), /the weights do not fit zf5/);
    expect(err.message).to.include('missing tensor "conv2.bias" (expected shape [256])');
    expect(err.message).to.include('tensor "conv1.weight" has shape [96, 3, 5, 5], expected [96, 3, 7, 7]');
    expect(err.message).to.include('unexpected tensor "extra.weight"');
    m.dispose();
    await expectReject(m.run([sp.zeros([3, 64, 64], { device: 'cpu' })]), /the model was disposed/);
    expect(() => sp.archSpec('resnet50', 10)).to.throw(/unknown arch "resnet50"; known: zf5, zf5-released, convnet5, overfeat5, overfeat7, alexnet, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn, googlenet/);
    await expectReject(sp.buildModel({ spec: { ...tiny(), layers: tiny().layers.filter((l) => l.type !== 'spp') } }), /fc layer before the spp layer/);
  });

  it('dispose() during run: the run in flight finishes, later calls are SPPNET_DISPOSED, the memory is freed after', async function () {
    const device = sp.backend().device;
    const m = await sp.buildModel({ spec: tiny(), seed: 5, device });
    const img = sp.tensor(Float32Array.from({ length: 3 * 24 * 20 }, (_, i) => Math.sin(i)), [3, 24, 20], { device });
    const expected = await (await m.run([img])).data();
    const base = sp.memory();
    const inFlight = [m.run([img]), m.predict([img], { topk: 2 }), m.stateDict()];
    m.dispose(); // the calls above are in flight: each started (synchronously) before this
    await expectReject(m.run([img]), /^Model.run: the model was disposed$/, 'SPPNET_DISPOSED');
    await expectReject(m.predict([img]), /^Model.predict: the model was disposed$/, 'SPPNET_DISPOSED');
    await expectReject(m.trainStep([img], [0]), /^Model.trainStep: the model was disposed$/, 'SPPNET_DISPOSED');
    const [logits, top, sd] = await Promise.all(inFlight);
    expectClose(await logits.data(), expected, { rtol: 1e-6, atol: 1e-6, label: 'the run in flight' });
    expect(top[0]).to.have.length(2);
    expect(sd.size).to.equal(8);
    logits.dispose();
    // Weights (8), the activation buffers and the pool's bytes are gone now.
    const after = sp.memory();
    expect(base.tensors[device] - after.tensors[device]).to.be.at.least(8);
    expect(m.activationBytes).to.equal(0);
    m.releaseBuffers(); // nothing to do, no error
    // A dispose with nothing in flight frees at once.
    const m2 = await sp.buildModel({ spec: tiny(), seed: 5, device });
    const t0 = sp.memory().tensors[device];
    m2.dispose();
    expect(t0 - sp.memory().tensors[device]).to.equal(8);
    img.dispose();
  });

  it('a disposed image: SPPNET_DISPOSED naming the call and the image', async function () {
    const device = sp.backend().device;
    const m = await sp.buildModel({ spec: tiny(), seed: 5, device });
    const good = sp.zeros([3, 12, 12], { device });
    const gone = sp.zeros([3, 12, 12], { device });
    gone.dispose();
    await expectReject(m.run([good, gone]), /^Model.run: images\[1\] was disposed$/, 'SPPNET_DISPOSED');
    await expectReject(m.predict([gone]), /^Model.predict: images\[0\] was disposed$/, 'SPPNET_DISPOSED');
    await expectReject(m.trainStep([good, gone], [0, 1]), /^Model.trainStep: images\[1\] was disposed$/, 'SPPNET_DISPOSED');
    const batch = sp.ragged([good]);
    batch.dispose();
    await expectReject(m.run(batch), /^Model.run: images was disposed$/, 'SPPNET_DISPOSED');
    // An image on another device is moved; its error would name the call too.
    expect(Array.from((await m.run([good])).shape)).to.deep.equal([1, 4]);
    good.dispose();
    m.dispose();
  });
});

describe('activation buffers', function () {
  const device = sp.backend().device;
  const img = (h, w, seed = 1) => sp.tensor(Float32Array.from({ length: 3 * h * w }, (_, i) => Math.sin(i * 0.37 + seed)), [3, h, w], { device });
  // tiny()'s buffers for one HxW image: conv1 6HW, pool 6(H/2)(W/2), conv2 8(H/2)(W/2), spp 80, fc1 16 floats.
  const gc = async () => {
    if (typeof global.gc === 'function') global.gc();
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  };

  it('are kept within the budget; a batch that needs more still runs, freeing as it goes', async function () {
    const budget = 64 * 1024;
    const m = await sp.buildModel({ spec: tiny(), seed: 9, device, activationBudget: budget, activationIdleMs: Infinity });
    const ref = await sp.buildModel({ spec: tiny(), seed: 9, device, activationBudget: Infinity, activationIdleMs: Infinity });
    expect(m.activationBudget).to.deep.equal({ bytes: budget, idleMs: Infinity });
    const small = [img(12, 12)];
    // The second run of a signature records its compiled run (lib/nn/plans.ts), which keeps its buffers.
    for (let i = 0; i < 2; i++) (await m.run(small)).dispose();
    const kept = m.activationBytes;
    expect(kept).to.be.above(0).and.at.most(budget);
    // Steady state: the same batch again allocates only the packed batch and its result.
    let a0 = sp.memory().allocations[device];
    (await m.run(small)).dispose();
    expect(sp.memory().allocations[device] - a0).to.equal(2);
    expect(m.activationBytes).to.equal(kept);
    // conv1 alone needs 6 * 96 * 80 * 4 = 184 KB, more than the budget: it runs, with the same
    // logits as a model without a limit, and what is kept afterwards is within the budget.
    const big = [img(96, 80, 2), img(40, 50, 3)];
    const before = sp.memory();
    const y = await m.run(big);
    const want = await ref.run(big);
    expectClose(await y.data(), await want.data(), { rtol: 1e-5, atol: 1e-6, label: 'over the budget' });
    expect(m.activationBytes).to.be.at.most(budget);
    expect(ref.activationBytes).to.be.above(budget);
    const after = sp.memory();
    expect(after.bytes[device] - before.bytes[device]).to.be.at.most(budget + 4 * (2 * 4 + 1024) + ref.activationBytes);
    // Budget 0: nothing is kept between runs.
    const none = await sp.buildModel({ spec: tiny(), seed: 9, device, activationBudget: 0 });
    a0 = sp.memory().allocations[device];
    const z = await none.run(small);
    expect(sp.memory().allocations[device] - a0).to.be.above(2);
    expect(none.activationBytes).to.equal(0);
    expectClose(await z.data(), await (await ref.run(small)).data(), { rtol: 1e-6, atol: 1e-6, label: 'budget 0' });
    [y, want, z].forEach((t) => t.dispose());
    [m, ref, none].forEach((x) => x.dispose());
  });

  it('sp.memory().activationBytes adds up the live models; releaseBuffers() frees a model\'s now', async function () {
    const base = sp.memory().activationBytes;
    const a = await sp.buildModel({ spec: tiny(), seed: 1, device, activationIdleMs: Infinity });
    const b = await sp.buildModel({ spec: tiny(), seed: 2, device, activationIdleMs: Infinity });
    (await a.run([img(20, 20)])).dispose();
    (await b.run([img(30, 26)])).dispose();
    expect(a.activationBytes).to.be.above(0);
    expect(sp.memory().activationBytes - base).to.equal(a.activationBytes + b.activationBytes);
    const t0 = sp.memory().tensors[device];
    a.releaseBuffers();
    expect(a.activationBytes).to.equal(0);
    expect(sp.memory().activationBytes - base).to.equal(b.activationBytes);
    expect(sp.memory().tensors[device]).to.be.below(t0);
    // Released while a run uses them: that run's buffers are freed when it ends.
    const p = b.run([img(30, 26)]);
    b.releaseBuffers();
    (await p).dispose();
    expect(b.activationBytes).to.equal(0);
    (await b.run([img(30, 26)])).dispose(); // and later runs fill the pool again
    expect(b.activationBytes).to.be.above(0);
    b.dispose();
    a.dispose();
    expect(sp.memory().activationBytes).to.equal(base);
  });

  // On the CPU the buffers come from the addon and go back to the system when released, with no
  // GC: a JS array's memory waited for a collection and then often stayed in the C library's heap
  // (a server's RSS stayed near its peak after a burst).
  it('on the CPU, releasing gives the buffers\' memory back to the system at once (RSS, no GC)', async function () {
    if (device !== 'cpu' || process.platform !== 'linux') return this.skip();
    this.timeout(120000);
    const spec = { name: 'wide', inChannels: 3, layers: [{ type: 'conv', name: 'c', out: 8, kernel: 3, padding: 1 }, { type: 'spp', levels: [1] }] };
    const m = await sp.buildModel({ spec, seed: 1, device, activationIdleMs: Infinity });
    const x = sp.tensor(new Float32Array(3 * 2000 * 2000), [3, 2000, 2000], { device });
    (await m.run([x])).dispose(); // conv output: 8 x 2000 x 2000 floats = 128 MB, kept by the pool
    const kept = m.activationBytes;
    expect(kept).to.be.at.least(128e6);
    const rss = () => Number(require('fs').readFileSync('/proc/self/statm', 'utf8').split(' ')[1]) * 4096;
    const r0 = rss();
    m.releaseBuffers();
    // Node runs an external buffer's finaliser on the JS thread, on the next turn of the loop.
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    const r1 = rss();
    expect(m.activationBytes).to.equal(0);
    expect(r0 - r1, `RSS ${r0} -> ${r1} after releasing ${kept} bytes`).to.be.at.least(0.9 * kept);
    x.dispose();
    m.dispose();
  });

  it('are freed after activationIdleMs without a run; memory after a burst returns to its level before', async function () {
    await gc();
    const before = sp.memory();
    const host0 = process.memoryUsage().arrayBuffers;
    const m = await sp.buildModel({ spec: tiny(), seed: 4, device, activationBudget: 256 * 1024, activationIdleMs: 40 });
    const weights = sp.memory().bytes[device] - before.bytes[device];
    // A burst: a few runs, one with a large image (its conv1 output is 6 * 200 * 180 * 4 = 864 KB).
    for (const [h, w] of [[20, 20], [200, 180], [64, 48]]) {
      const x = img(h, w);
      (await m.run([x])).dispose();
      x.dispose();
    }
    expect(m.activationBytes).to.be.at.most(256 * 1024);
    await new Promise((r) => setTimeout(r, 150));
    expect(m.activationBytes).to.equal(0);
    await gc();
    const after = sp.memory();
    expect(after.activationBytes).to.equal(before.activationBytes);
    expect(after.bytes[device] - before.bytes[device]).to.equal(weights);
    if (device === 'cpu' && typeof global.gc === 'function') {
      // The host memory itself: the freed buffers went back at release.
      expect(process.memoryUsage().arrayBuffers - host0).to.be.below(weights + 1024 * 1024);
    } else if (device === 'cuda') {
      expect(after.deviceBytes - before.deviceBytes).to.equal(weights);
      // And the device's memory pool gave what the burst left unused back to the driver (on a
      // GPU, but for blocks of the pool's granularity the inputs still use).
      const spare = (x) => (x.devicePoolReserved ?? 0) - (x.devicePoolUsed ?? 0);
      const emulated = /emulator/.test(sp.backend().cuda.name || '');
      expect(spare(after)).to.be.at.most(spare(before) + (emulated ? 0 : 2 * 2 ** 20));
    }
    // An idle timer never keeps the process alive (it is unref'd): a child exits at once.
    const { runNode } = require('./support/child');
    const dist = require('path').resolve(__dirname, '..', 'dist');
    const t0 = Date.now();
    const r = runNode(['-e', `
      const sp = require(${JSON.stringify(dist)});
      sp.buildModel({ spec: ${JSON.stringify(tiny())}, activationIdleMs: 600000 }).then(async (m) => {
        await m.run([sp.zeros([3, 16, 16])]);
        console.log('ran, kept', m.activationBytes > 0);
      });`], { timeout: 60000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.include('ran, kept true');
    expect(Date.now() - t0).to.be.below(30000);
    m.dispose();
  });

  it('budget and idle time: options, then SPPNET_ACTIVATION_BUDGET / SPPNET_ACTIVATION_IDLE_MS, then 1 GiB and 10 s', async function () {
    const saved = { b: process.env.SPPNET_ACTIVATION_BUDGET, i: process.env.SPPNET_ACTIVATION_IDLE_MS };
    const restore = () => {
      for (const [k, v] of [['SPPNET_ACTIVATION_BUDGET', saved.b], ['SPPNET_ACTIVATION_IDLE_MS', saved.i]]) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    };
    try {
      delete process.env.SPPNET_ACTIVATION_BUDGET;
      delete process.env.SPPNET_ACTIVATION_IDLE_MS;
      const build = async (opts = {}) => {
        const m = await sp.buildModel({ spec: tiny(), device, ...opts });
        const b = m.activationBudget;
        m.dispose();
        return b;
      };
      expect(await build()).to.deep.equal({ bytes: 2 ** 30, idleMs: 10000 });
      process.env.SPPNET_ACTIVATION_BUDGET = '512M';
      process.env.SPPNET_ACTIVATION_IDLE_MS = '2500';
      expect(await build()).to.deep.equal({ bytes: 512 * 2 ** 20, idleMs: 2500 });
      expect(await build({ activationBudget: 1000, activationIdleMs: 0 })).to.deep.equal({ bytes: 1000, idleMs: 0 });
      process.env.SPPNET_ACTIVATION_BUDGET = '2GiB';
      process.env.SPPNET_ACTIVATION_IDLE_MS = 'Infinity';
      expect(await build()).to.deep.equal({ bytes: 2 * 2 ** 30, idleMs: Infinity });
      process.env.SPPNET_ACTIVATION_BUDGET = 'lots';
      await expectReject(build(), /^sp.loadModel: SPPNET_ACTIVATION_BUDGET must be a byte count \(e.g. 1073741824, 512M or 2G\) or Infinity, got "lots"$/, 'SPPNET_INVALID_ARGUMENT');
      process.env.SPPNET_ACTIVATION_BUDGET = '1G';
      process.env.SPPNET_ACTIVATION_IDLE_MS = '5s';
      await expectReject(build(), /SPPNET_ACTIVATION_IDLE_MS must be a number of milliseconds or Infinity, got "5s"/, 'SPPNET_INVALID_ARGUMENT');
      restore();
      for (const bad of [-1, 1.5, NaN, '1G'])
        await expectReject(sp.loadModel({ spec: tiny(), device, activationBudget: bad }), /^sp.loadModel: options.activationBudget must be a non-negative integer or Infinity, got /, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(sp.buildModel({ spec: tiny(), device, activationIdleMs: -5 }), /options.activationIdleMs must be a non-negative integer or Infinity, got number -5/);
    } finally {
      restore();
    }
  });
});
