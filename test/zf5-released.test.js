'use strict';
// arch 'zf5-released': the ZF-5 of the SPP-net authors' release (ShaoqingRen/SPP_net,
// model-defs/Zeiler_conv5.prototxt, Caffe). Sizes and values are checked against plain JS written
// from Caffe's own formulas (conv: floor; pooling: ceil, clipped when padded; LRN WITHIN_CHANNEL as
// Caffe's layer composes it: x * (1 + alpha * AVE-pool(x^2))^-beta, the pool size x size with pad
// (size-1)/2 and Caffe's divisor) and the release's detection pooling
// (utils/spm_pool/spm_pool_caffe_mex.cpp: bins floor(i/n*a) .. ceil((i+1)/n*a) in float).
const { expect } = require('chai');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { sp, expectClose, expectReject } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');

const f32 = Math.fround;

// Caffe's ConvolutionLayer output side.
const caffeConvSide = (a, k, s, p) => Math.floor((a + 2 * p - k) / s) + 1;
// Caffe's PoolingLayer output side: ceil in float, and the last window must start inside the image when padded.
function caffePoolSide(a, k, s, p) {
  let n = Math.ceil(f32(f32(a + 2 * p - k) / s)) + 1;
  if (p > 0 && (n - 1) * s >= a + p) n -= 1;
  return n;
}

/** Map sides through the prototxt's layers, by Caffe's formulas (written here, not read from the spec). */
function prototxtSides(a) {
  const conv1 = caffeConvSide(a, 7, 2, 1), pool1 = caffePoolSide(conv1, 3, 2, 0);
  const conv2 = caffeConvSide(pool1, 5, 2, 0), pool2 = caffePoolSide(conv2, 3, 2, 0);
  return { conv1, pool1, conv2, pool2, conv5: pool2 };
}

/** Map sides through the spec's conv part, by the library (sp.conv2d / sp.maxPool2d output shapes). */
async function specSides(spec, a) {
  const out = [];
  let x = sp.zeros([spec.inChannels, a, a], { device: 'cpu' });
  for (const l of spec.layers) {
    if (l.type === 'spp') break;
    let y = null;
    if (l.type === 'conv') {
      const w = sp.zeros([l.out, x.shape[0], l.kernel, l.kernel], { device: 'cpu' });
      y = await sp.conv2d(x, w, undefined, { stride: l.stride, padding: l.padding });
      w.dispose();
    } else if (l.type === 'maxpool') {
      y = await sp.maxPool2d(x, { kernel: l.kernel, stride: l.stride, padding: l.padding, ceilMode: l.ceilMode });
    }
    if (y) {
      x.dispose();
      x = y;
      out.push(x.shape[1]);
      expect(x.shape[2]).to.equal(x.shape[1]);
    }
  }
  x.dispose();
  return out;
}

// ---- a plain reference of the released network (Caffe's layers), Float64 ----
function refConv(x, w, b, cout, k, s, p) {
  const H = caffeConvSide(x.H, k, s, p), W = caffeConvSide(x.W, k, s, p);
  const y = new Float64Array(cout * H * W);
  for (let o = 0; o < cout; o++)
    for (let i = 0; i < H; i++)
      for (let j = 0; j < W; j++) {
        let acc = b[o];
        for (let c = 0; c < x.C; c++)
          for (let u = 0; u < k; u++) {
            const yy = i * s - p + u;
            if (yy < 0 || yy >= x.H) continue;
            for (let v = 0; v < k; v++) {
              const xx = j * s - p + v;
              if (xx < 0 || xx >= x.W) continue;
              acc += x.data[(c * x.H + yy) * x.W + xx] * w[((o * x.C + c) * k + u) * k + v];
            }
          }
        y[(o * H + i) * W + j] = Math.max(acc, 0); // ReLU after every conv
      }
  return { data: y, C: cout, H, W };
}

/**
 * Caffe's LRN, WITHIN_CHANNEL, as its LRNLayer composes it (lrn_layer.cpp): a PowerLayer squares x,
 * a PoolingLayer averages the squares (AVE, kernel size, stride 1, pad (size-1)/2; divisor: the
 * window clipped to [-pad, H + pad), before clipping to the map), a PowerLayer takes
 * (1 + alpha * average)^-beta (shift 1: Caffe's k does not apply), and an EltwiseLayer multiplies by x.
 */
function refCaffeLrn(x, { size, alpha, beta }) {
  const { C, H, W } = x, pad = (size - 1) / 2;
  const y = new Float64Array(C * H * W);
  for (let c = 0; c < C; c++)
    for (let py = 0; py < H; py++)
      for (let px = 0; px < W; px++) {
        const hs = py - pad, ws = px - pad;
        const he = Math.min(hs + size, H + pad), we = Math.min(ws + size, W + pad);
        const poolSize = (he - hs) * (we - ws);
        let s = 0;
        for (let yy = Math.max(hs, 0); yy < Math.min(he, H); yy++)
          for (let xx = Math.max(ws, 0); xx < Math.min(we, W); xx++) s += x.data[(c * H + yy) * W + xx] ** 2;
        const i = (c * H + py) * W + px;
        y[i] = x.data[i] * (1 + alpha * (s / poolSize)) ** -beta;
      }
  return { data: y, C, H, W };
}

/** Caffe's max PoolingLayer (pad 0 here): windows [i*s, min(i*s + k, a)). */
function refCaffePool(x, k, s) {
  const H = caffePoolSide(x.H, k, s, 0), W = caffePoolSide(x.W, k, s, 0);
  const y = new Float64Array(x.C * H * W);
  for (let c = 0; c < x.C; c++)
    for (let i = 0; i < H; i++)
      for (let j = 0; j < W; j++) {
        let m = -Infinity;
        for (let yy = i * s; yy < Math.min(i * s + k, x.H); yy++)
          for (let xx = j * s; xx < Math.min(j * s + k, x.W); xx++) m = Math.max(m, x.data[(c * x.H + yy) * x.W + xx]);
        y[(c * H + i) * W + j] = m;
      }
  return { data: y, C: x.C, H, W };
}

/** The release's spm_pool_caffe_mex on a whole map: levels in order, channel-major, bins row-major; float bin bounds. */
function refMexSpp(x, levels) {
  const out = [];
  for (const n of levels) {
    const nf = f32(n);
    const lo = (i, a) => Math.floor(f32(f32(i / nf) * a)), hi = (i, a) => Math.ceil(f32(f32((i + 1) / nf) * a));
    for (let c = 0; c < x.C; c++)
      for (let by = 0; by < n; by++)
        for (let bx = 0; bx < n; bx++) {
          let m = -Infinity;
          for (let yy = lo(by, x.H); yy < hi(by, x.H); yy++)
            for (let xx = lo(bx, x.W); xx < hi(bx, x.W); xx++) m = Math.max(m, x.data[(c * x.H + yy) * x.W + xx]);
          out.push(m);
        }
  }
  return out;
}

function refFc(x, w, b, out, relu) {
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b[o];
    for (let i = 0; i < x.length; i++) s += x[i] * w[o * x.length + i];
    y[o] = relu ? Math.max(s, 0) : s;
  }
  return y;
}

function refReleased(img, sd, classes) {
  const W = (n) => sd.get(n).data;
  const lrn = { size: 3, alpha: 5e-5, beta: 0.75, k: 1 };
  let x = refConv(img, W('conv1.weight'), W('conv1.bias'), 96, 7, 2, 1);
  x = refCaffePool(refCaffeLrn(x, lrn), 3, 2);
  x = refConv(x, W('conv2.weight'), W('conv2.bias'), 256, 5, 2, 0);
  x = refCaffePool(refCaffeLrn(x, lrn), 3, 2);
  x = refConv(x, W('conv3.weight'), W('conv3.bias'), 384, 3, 1, 1);
  x = refConv(x, W('conv4.weight'), W('conv4.bias'), 384, 3, 1, 1);
  x = refConv(x, W('conv5.weight'), W('conv5.bias'), 256, 3, 1, 1);
  let v = refMexSpp(x, [1, 2, 3, 6]);
  v = refFc(v, W('fc6.weight'), W('fc6.bias'), 4096, true);
  v = refFc(v, W('fc7.weight'), W('fc7.bias'), 4096, true);
  return refFc(v, W('fc8.weight'), W('fc8.bias'), classes, false);
}

describe("arch 'zf5-released' (SPP_net's Zeiler_conv5.prototxt)", function () {
  const spec = sp.archSpec('zf5-released', 1000);

  it('has the prototxt layers: conv2 unpadded, ceil-mode pools, LRN 3 / 5e-5 / 0.75 / 1, SPP {1,2,3,6} adaptive, fc6-8', function () {
    const L = spec.layers;
    expect(spec.name).to.equal('zf5-released');
    expect(spec.inChannels).to.equal(3);
    expect(L.map((l) => l.name || l.type)).to.deep.equal(
      ['conv1', 'lrn', 'maxpool', 'conv2', 'lrn', 'maxpool', 'conv3', 'conv4', 'conv5', 'spp', 'fc6', 'dropout', 'fc7', 'dropout', 'fc8']);
    const convs = L.filter((l) => l.type === 'conv').map(({ name, out, kernel, stride, padding, relu }) => [name, out, kernel, stride, padding, relu]);
    expect(convs).to.deep.equal([
      ['conv1', 96, 7, 2, 1, true], ['conv2', 256, 5, 2, 0, true], ['conv3', 384, 3, 1, 1, true],
      ['conv4', 384, 3, 1, 1, true], ['conv5', 256, 3, 1, 1, true]]);
    for (const l of L.filter((x) => x.type === 'lrn')) expect(l).to.deep.equal({ type: 'lrn', size: 3, alpha: 5e-5, beta: 0.75, k: 1, region: 'within' });
    for (const l of L.filter((x) => x.type === 'maxpool')) expect(l).to.deep.equal({ type: 'maxpool', kernel: 3, stride: 2, padding: 0, ceilMode: true });
    expect(L[9]).to.deep.equal({ type: 'spp', levels: [1, 2, 3, 6], pool: 'max', bins: 'adaptive' });
    expect(L.filter((l) => l.type === 'fc').map(({ name, out, relu }) => [name, out, relu])).to.deep.equal([['fc6', 4096, true], ['fc7', 4096, true], ['fc8', 1000, false]]);
    expect(L.filter((l) => l.type === 'dropout').map((l) => l.p)).to.deep.equal([0.5, 0.5]);
    // levels given: used as given; the other archs keep {6,3,2,1}
    expect(sp.archSpec('zf5-released', 10, [4, 1]).layers[9].levels).to.deep.equal([4, 1]);
    expect(sp.archSpec('zf5', 10).layers.find((l) => l.type === 'spp').levels).to.deep.equal([6, 3, 2, 1]);
    expect(() => sp.archSpec('resnet50', 10)).to.throw(/known: zf5, zf5-released, convnet5/);
  });

  it('parameters: the Caffe blob names as state_dict names, Caffe = PyTorch layouts; 12800 features after SPP', async function () {
    const checked = sp.checkSpec(spec);
    expect(checked.features).to.equal(256 * (1 + 4 + 9 + 36));
    expect(checked.params.map((p) => [p.name, p.shape])).to.deep.equal([
      ['conv1.weight', [96, 3, 7, 7]], ['conv1.bias', [96]], ['conv2.weight', [256, 96, 5, 5]], ['conv2.bias', [256]],
      ['conv3.weight', [384, 256, 3, 3]], ['conv3.bias', [384]], ['conv4.weight', [384, 384, 3, 3]], ['conv4.bias', [384]],
      ['conv5.weight', [256, 384, 3, 3]], ['conv5.bias', [256]], ['fc6.weight', [4096, 12800]], ['fc6.bias', [4096]],
      ['fc7.weight', [4096, 4096]], ['fc7.bias', [4096]], ['fc8.weight', [1000, 4096]], ['fc8.bias', [1000]]]);
  });

  it("map sides are Caffe's at 224, 225, 227, 301 and the smallest image, 31; 30 is refused", async function () {
    const expected = {
      224: { conv1: 110, pool1: 55, conv2: 26, pool2: 13, conv5: 13 },
      225: { conv1: 111, pool1: 55, conv2: 26, pool2: 13, conv5: 13 },
      227: { conv1: 112, pool1: 56, conv2: 26, pool2: 13, conv5: 13 },
      301: { conv1: 149, pool1: 74, conv2: 35, pool2: 17, conv5: 17 },
      31: { conv1: 14, pool1: 7, conv2: 2, pool2: 1, conv5: 1 },
    };
    for (const [a, e] of Object.entries(expected)) {
      expect(prototxtSides(Number(a)), `Caffe at ${a}`).to.deep.equal(e);
      expect(await specSides(spec, Number(a)), `spec at ${a}`).to.deep.equal([e.conv1, e.pool1, e.conv2, e.pool2, e.conv5, e.conv5, e.conv5]);
    }
    expect(prototxtSides(30).pool2).to.equal(0);
    expect(sp.minimumSize(spec)).to.deep.equal([31, 31]);
    // every side from the smallest to 400: the spec's pools (PyTorch's ceil rule) agree with Caffe's
    const pool = spec.layers[2];
    for (let a = 1; a <= 400; a++) {
      const x = sp.zeros([1, 1, a], { device: 'cpu' });
      if (caffePoolSide(a, 3, 2, 0) < 1) {
        await expectReject(sp.maxPool2d(x, { ...pool, kernel: [1, 3], stride: [1, 2] }), /too small/);
      } else {
        const y = await sp.maxPool2d(x, { ...pool, kernel: [1, 3], stride: [1, 2] });
        expect(y.shape[2], `side ${a}`).to.equal(caffePoolSide(a, 3, 2, 0));
        y.dispose();
      }
      x.dispose();
    }
  });

  it("one LRN of the spec on a random ragged batch equals Caffe's WITHIN_CHANNEL layer within 1e-5, on every device", async function () {
    const seed = freshSeed();
    const r = rng(seed);
    const C = 96, sizes = [[9, 11], [1, 1], [2, 7], [13, 5]];
    const maps = sizes.map(([H, W]) => ({ C, H, W, data: Float32Array.from({ length: C * H * W }, () => (r.next() * 2 - 1) * 300) })); // large enough that the norm matters
    const lrn = spec.layers[1];
    const want = maps.flatMap((m) => Array.from(refCaffeLrn(m, { size: 3, alpha: 5e-5, beta: 0.75 }).data));
    // the normalisation is not negligible there: the output differs from the input by more than 10% somewhere
    const flat = maps.flatMap((m) => Array.from(m.data));
    expect(want.some((v, i) => Math.abs(v - flat[i]) > 0.1 * Math.abs(flat[i]))).to.equal(true);
    for (const device of sp.backend().cuda.available ? ['cpu', 'cuda'] : ['cpu']) {
      const x = sp.ragged(maps.map((m) => sp.tensor(m.data, [C, m.H, m.W], { device })));
      const out = sp.ragged(sizes.map(([H, W]) => sp.full([C, H, W], NaN, { device }))); // poisoned
      const y = await sp.localResponseNorm(x, { size: lrn.size, alpha: lrn.alpha, beta: lrn.beta, k: lrn.k, region: lrn.region, out });
      expectClose(await y.data(), Float64Array.from(want), { rtol: 1e-5, atol: 1e-30, label: `seed ${seed}, ${device}` });
      [x, y].forEach((t) => t.dispose());
    }
  });

  it('the within-channel LRN backward equals central differences of the float64 reference (odd sizes 1, 3, 5)', async function () {
    const seed = freshSeed();
    const r = rng(seed);
    for (const size of [1, 3, 5]) {
      const m = { C: 2, H: 4, W: 5 };
      m.data = Float64Array.from({ length: m.C * m.H * m.W }, () => (r.next() * 2 - 1) * 3);
      const dy = Float64Array.from({ length: m.data.length }, () => r.next() * 2 - 1);
      const p = { size, alpha: 0.7, beta: 0.75 };
      const f = (d) => refCaffeLrn({ ...m, data: d }, p).data.reduce((a, v, i) => a + v * dy[i], 0);
      const num = Float64Array.from(m.data, (v, i) => {
        const h = 1e-5, d1 = Float64Array.from(m.data), d2 = Float64Array.from(m.data);
        d1[i] += h;
        d2[i] -= h;
        return (f(d1) - f(d2)) / (2 * h);
      });
      for (const device of sp.backend().cuda.available ? ['cpu', 'cuda'] : ['cpu']) {
        const x = sp.tensor(Float32Array.from(m.data), [m.C, m.H, m.W], { device });
        const g = sp.tensor(Float32Array.from(dy), [m.C, m.H, m.W], { device });
        const dx = await sp.localResponseNormBackward(x, g, { ...p, k: 1, region: 'within' });
        expectClose(await dx.data(), num, { rtol: 1e-4, atol: 1e-5, label: `seed ${seed}, size ${size}, ${device}` });
        [x, g, dx].forEach((t) => t.dispose());
      }
    }
    await expectReject(sp.localResponseNorm(sp.zeros([2, 3, 3], { device: 'cpu' }), { size: 4, region: 'within' }), /options\.size must be odd with region 'within'/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.lrnMaxPool2d(sp.zeros([2, 3, 3], { device: 'cpu' }), { lrn: { size: 3, region: 'within' }, pool: { kernel: 2 } }), /region 'within' is not fused/, 'SPPNET_INVALID_ARGUMENT');
  });

  it("the whole network equals a plain reference of the prototxt's layers and the release's SPP pooling", async function () {
    this.timeout(600000);
    const seed = freshSeed();
    const r = rng(seed);
    const classes = 5;
    const m = await sp.buildModel({ arch: 'zf5-released', classes, seed: seed % 1000, device: 'cpu' });
    const sd = await m.stateDict();
    // pixels of the scale of the release (0-255 less the mean), so that the LRNs matter
    const sizes = [[31, 31], [47, 39], [61, 53]]; // the smallest, and odd sizes (conv5 1x1, 2x1, 3x3)
    const imgs = sizes.map(([h, w]) => sp.tensor(Float32Array.from({ length: 3 * h * w }, () => (r.next() * 2 - 1) * 128), [3, h, w], { device: 'cpu' }));
    const logits = await (await m.run(imgs)).data();
    for (let i = 0; i < imgs.length; i++) {
      const [h, w] = sizes[i];
      const ref = refReleased({ data: await imgs[i].data(), C: 3, H: h, W: w }, sd, classes);
      const scale = Math.max(...ref.map(Math.abs));
      expectClose(logits.subarray(i * classes, (i + 1) * classes), ref, { rtol: 1e-3, atol: 1e-4 * scale, label: `image ${h}x${w}, seed ${seed}` });
    }
    imgs.forEach((t) => t.dispose());
    m.dispose();
  });

  it('saves and loads: same logits, the file carries the spec; loads by arch too', async function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-zf5r-'));
    const file = path.join(dir, 'zf5r.safetensors');
    try {
      const m = await sp.buildModel({ arch: 'zf5-released', classes: 3, seed: 7, device: 'cpu' });
      expect(m.minSize).to.deep.equal([31, 31]);
      await m.save(file);
      const img = sp.tensor(Float32Array.from({ length: 3 * 45 * 51 }, (_, i) => Math.sin(i)), [3, 45, 51], { device: 'cpu' });
      const a = Array.from(await (await m.run([img])).data());
      const m2 = await sp.loadModel({ weights: file, device: 'cpu' });
      expect(m2.spec).to.deep.equal(sp.archSpec('zf5-released', 3));
      expect(Array.from(await (await m2.run([img])).data())).to.deep.equal(a);
      const m3 = await sp.loadModel({ arch: 'zf5-released', classes: 3, weights: file, device: 'cpu' });
      expect(Array.from(await (await m3.run([img])).data())).to.deep.equal(a);
      await expectReject(m3.run([sp.zeros([3, 30, 64], { device: 'cpu' })]), /smaller than zf5-released's minimum 31x31/);
      [m, m2, m3, img].forEach((x) => x.dispose());
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
