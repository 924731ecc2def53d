'use strict';
// sp.cropResize: torchvision's and torch's own crops (test/fixtures/crop, written by
// tools/make_crop_fixtures.py with torch 1.13 / torchvision 0.14), random cases with fresh seeds
// against the plain reference below (float32 rounding step by step: equal bit for bit), poisoned
// `out` buffers, the argument errors; on every device present (the emulated CUDA device too, under
// SPPNET_CUDA_EMULATOR=1 SPPNET_DEVICE=cuda, where the CUDA output must equal the CPU's bit for bit).
const { expect } = require('chai');
const fs = require('fs');
const path = require('path');
const { sp, cudaStatus, expectReject } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');

const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];
const FIXTURES = path.join(__dirname, 'fixtures', 'crop');
const f = Math.fround;

// ---- the reference: include/sppnet/crop.h's definition, each float operation rounded ----

function axis(a1, a2, out, p, align) {
  let lo = a1, hi = a2 + 1;
  if (p > 0) {
    const half = ((hi - lo) * 0.5 * out) / (out - 2 * p), c = (lo + hi) * 0.5;
    lo = c - half;
    hi = c + half;
  }
  const flo = f(lo), fhi = f(hi);
  if (align === 'pixels') {
    const start = f(flo - 0.5);
    return { start, step: f(f(f(fhi - 0.5) - start) / out), half: true };
  }
  return { start: flo, step: out > 1 ? f((fhi - 1 - flo) / (out - 1)) : 0, half: false };
}
const coord = (a, o) => {
  const t = f(a.start + f(o * a.step));
  return a.half ? f(t + f(0.5 * a.step)) : t;
};
function tap(s, n) {
  if (!(s > -1 && s < n)) return { i0: -2, h: 0, l: 0, in0: false, in1: false };
  const i0 = Math.floor(s), l = f(s - i0);
  return { i0, h: f(1 - l), l, in0: i0 >= 0, in1: i0 + 1 <= n - 1 };
}

/** images: [{ data, C, H, W }]; boxes: flat K*5. Returns a Float32Array [K, C, outH, outW]. */
function refCrop(images, boxes, [oh, ow], { context = 0, align = 'pixels' } = {}) {
  const K = boxes.length / 5, C = images[0].C;
  const y = new Float32Array(K * C * oh * ow);
  for (let k = 0; k < K; k++) {
    const [m, x1, y1, x2, y2] = Array.from(boxes.slice(5 * k, 5 * k + 5), f);
    const img = images[m];
    const ay = axis(y1, y2, oh, context, align), ax = axis(x1, x2, ow, context, align);
    for (let c = 0; c < C; c++) {
      const base = c * img.H * img.W;
      const px = (yy, xx) => img.data[base + yy * img.W + xx];
      for (let oy = 0; oy < oh; oy++) {
        const ty = tap(coord(ay, oy), img.H);
        for (let ox = 0; ox < ow; ox++) {
          const tx = tap(coord(ax, ox), img.W);
          const v00 = ty.in0 && tx.in0 ? px(ty.i0, tx.i0) : 0, v01 = ty.in0 && tx.in1 ? px(ty.i0, tx.i0 + 1) : 0;
          const v10 = ty.in1 && tx.in0 ? px(ty.i0 + 1, tx.i0) : 0, v11 = ty.in1 && tx.in1 ? px(ty.i0 + 1, tx.i0 + 1) : 0;
          const a = f(f(ty.h * tx.h) * v00), b = f(f(ty.h * tx.l) * v01), cc = f(f(ty.l * tx.h) * v10), d = f(f(ty.l * tx.l) * v11);
          y[((k * C + c) * oh + oy) * ow + ox] = f(f(f(a + b) + cc) + d);
        }
      }
    }
  }
  return y;
}

function sameBits(got, want, label) {
  expect(got.length, label).to.equal(want.length);
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    if (Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w))) continue;
    expect.fail(`${label}: element ${i}: got ${g}, want ${w}`);
  }
}

function loadFixtures() {
  // floats written in their shortest float32 form: read back as float32
  const f32 = (c) => ({ ...c, boxes: Float32Array.from(c.boxes), ref: Float32Array.from(c.ref), ...(c.padded ? { padded: Float32Array.from(c.padded) } : {}) });
  return fs.readdirSync(FIXTURES).filter((n) => n.endsWith('.json')).sort().map((file) => {
    const j = JSON.parse(fs.readFileSync(path.join(FIXTURES, file), 'utf8'));
    return { file, ...j, cases: j.cases.map(f32) };
  });
}
const fixtureImages = (c) => c.images.map((im) => ({ data: Float32Array.from(im.data), C: c.channels, H: im.h, W: im.w }));

function images(maps, device, kind) {
  const ts = maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W], { device }));
  if (kind === 'ragged') return sp.ragged(ts);
  if (kind === 'single') return ts[0];
  const { C, H, W } = maps[0];
  const all = new Float32Array(maps.length * C * H * W);
  maps.forEach((m, i) => all.set(m.data, i * C * H * W));
  ts.forEach((t) => t.dispose());
  return sp.tensor(all, [maps.length, C, H, W], { device });
}

describe('the cropResize reference', function () {
  it('reproduces torchvision: roi_align on the zero-padded image within 1e-5, bit for bit where roi_align reads inside; F.interpolate for corners within 1e-5', function () {
    let worst = 0, exactCount = 0;
    for (const { cases } of loadFixtures())
      for (const c of cases) {
        const got = refCrop(fixtureImages(c), c.boxes, c.size, c);
        const want = c.align === 'pixels' ? c.padded : c.ref;
        for (let i = 0; i < want.length; i++) {
          const e = Math.abs(got[i] - want[i]);
          worst = Math.max(worst, e);
          expect(e, `${c.name}: element ${i}: ${got[i]} vs ${want[i]}`).to.be.at.most(1e-5);
          if (c.interior && c.interior[i]) {
            expect(got[i], `${c.name}: interior element ${i}`).to.equal(c.ref[i]);
            exactCount++;
          }
        }
      }
    console.log(`      (worst |reference - torchvision| ${worst.toExponential(2)}; ${exactCount} interior elements equal roi_align's bit for bit)`);
    expect(exactCount).to.be.above(1000);
  });
});

for (const device of devices) {
  describe(`cropResize on ${device}`, function () {
    const T = (data, shape) => sp.tensor(Float32Array.from(data), shape, { device });

    for (const { file, cases } of loadFixtures()) {
      it(`matches torchvision (${file}): the reference bit for bit, roi_align / F.interpolate within 1e-5`, async function () {
        for (const c of cases) {
          const maps = fixtureImages(c);
          const X = images(maps, device, maps.length === 1 ? 'single' : 'ragged');
          const B = T(c.boxes, [c.boxes.length / 5, 5]);
          const Y = await sp.cropResize(X, B, c.size, { context: c.context, align: c.align });
          expect(Y.shape, c.name).to.deep.equal([c.boxes.length / 5, c.channels, ...c.size]);
          const got = await Y.data();
          sameBits(got, refCrop(maps, c.boxes, c.size, c), c.name);
          const want = c.align === 'pixels' ? c.padded : c.ref;
          for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i]), `${c.name}: element ${i}`).to.be.at.most(1e-5);
          if (c.interior) for (let i = 0; i < want.length; i++) if (c.interior[i]) expect(got[i], `${c.name}: interior element ${i}`).to.equal(c.ref[i]);
          [X, B, Y].forEach((t) => t.dispose());
        }
      });
    }

    it('equals the reference on random ragged, dense and single images with fresh seeds (boxes inside, across and outside, fractional, 1-pixel; both alignments; context)', async function () {
      const seed = freshSeed();
      console.log(`      (seed ${seed})`);
      const r = rng(seed);
      for (let trial = 0; trial < 12; trial++) {
        const kind = ['ragged', 'dense', 'single'][trial % 3];
        const C = r.int(1, 4), N = kind === 'single' ? 1 : r.int(1, 4);
        const H0 = r.int(1, 30), W0 = r.int(1, 30);
        const maps = Array.from({ length: N }, () => {
          const H = kind === 'ragged' ? r.int(1, 30) : H0, W = kind === 'ragged' ? r.int(1, 30) : W0;
          const data = new Float32Array(C * H * W).map(() => r.normal());
          return { data, C, H, W };
        });
        const K = r.int(0, 25);
        const boxes = [];
        for (let k = 0; k < K; k++) {
          const m = r.int(0, N - 1), { H, W } = maps[m];
          let x1 = r.int(-6, W + 3), y1 = r.int(-6, H + 3), bw = r.int(0, 2 * W), bh = r.int(0, 2 * H);
          if (r.int(0, 3) === 0) [x1, y1, bw, bh] = [x1 + r.normal(), y1 + r.normal(), Math.abs(bw + r.normal()), Math.abs(bh + r.normal())];
          if (r.int(0, 5) === 0) [bw, bh] = [0, 0];
          boxes.push(m, x1, y1, f(x1) + bw, f(y1) + bh);
        }
        const size = r.int(0, 1) ? r.int(1, 40) : [r.int(1, 40), r.int(1, 40)];
        const [oh, ow] = typeof size === 'number' ? [size, size] : size;
        const align = r.int(0, 2) ? 'pixels' : 'corners';
        const context = r.int(0, 1) ? r.int(0, Math.floor((Math.min(oh, ow) - 1) / 2)) : 0;
        const label = `seed ${seed}, trial ${trial}: ${kind}, ${N} image(s), C ${C}, K ${K}, size ${JSON.stringify(size)}, ${align}, context ${context}`;
        const X = images(maps, device, kind), B = T(boxes, [K, 5]);
        // a poisoned out buffer: every element must be written
        const out = sp.full([K, C, oh, ow], NaN, { device });
        const Y = await sp.cropResize(X, B, size, { align, context, out });
        expect(Y, label).to.equal(out);
        sameBits(await Y.data(), refCrop(maps, Float32Array.from(boxes), [oh, ow], { context, align }), label);
        [X, B, Y].forEach((t) => t.dispose());
      }
    });

    it('reads no pixel it does not sample: a NaN or infinity in the image reaches only the outputs that read it', async function () {
      const data = new Float32Array(2 * 6 * 7).map((_, i) => (i % 5) - 2);
      data[0] = NaN; // (c 0, y 0, x 0)
      data[6 * 7 + 6] = Infinity; // (c 1, y 0, x 6)
      const maps = [{ data, C: 2, H: 6, W: 7 }];
      const boxes = [0, 2, 1, 4, 4, 0, -3, -3, 2, 2, 0, 0, 0, 6, 5];
      const X = images(maps, device, 'single'), B = T(boxes, [3, 5]);
      const Y = await sp.cropResize(X, B, [5, 4]);
      const got = await Y.data();
      sameBits(got, refCrop(maps, boxes, [5, 4]), 'NaN and infinity');
      expect(got.slice(0, 2 * 20).every(Number.isFinite), 'the first window does not touch them').to.equal(true);
      [X, B, Y].forEach((t) => t.dispose());
    });

    it('zero boxes give [0, C, outH, outW]; a dense batch and its ragged twin give the same', async function () {
      const X = sp.zeros([2, 3, 5, 6], { device });
      const Y = await sp.cropResize(X, sp.zeros([0, 5], { device }), [4, 2]);
      expect(Y.shape).to.deep.equal([0, 3, 4, 2]);
      const maps = [0, 1].map(() => ({ data: new Float32Array(3 * 5 * 6).map(() => Math.random()), C: 3, H: 5, W: 6 }));
      const D = images(maps, device, 'dense'), R = images(maps, device, 'ragged'), B = T([1, 0, 0, 5, 4, 0, 1, 1, 3, 2], [2, 5]);
      const a = await (await sp.cropResize(D, B, 3)).data(), b = await (await sp.cropResize(R, B, 3)).data();
      sameBits(a, b, 'dense vs ragged');
      [X, Y, D, R, B].forEach((t) => t.dispose());
    });

    it('rejects bad arguments, naming sp.cropResize and the argument', async function () {
      const X = T(new Float32Array(2 * 3 * 4), [1, 2, 3, 4]);
      const B = T([0, 0, 0, 3, 2], [1, 5]);
      const bad = (msg) => new RegExp(`^sp\\.cropResize: ${msg}`);
      const rej = (boxes, re) => expectReject(async () => {
        const b = T(boxes, [boxes.length / 5, 5]);
        try {
          await sp.cropResize(X, b, 4);
        } finally {
          b.dispose();
        }
      }, re, 'SPPNET_INVALID_ARGUMENT');
      await rej([0, 0, 0, 3, 2, 1, 0, 0, 3, 2], bad('boxes\\[1\\] = \\(1, 0, 0, 3, 2\\): the image index must be an integer in \\[0, 1\\) \\(the images hold 1 image\\(s\\)\\)'));
      await rej([-1, 0, 0, 3, 2], bad('boxes\\[0\\] = \\(-1, .*the image index must be an integer'));
      await rej([0.5, 0, 0, 3, 2], bad('boxes\\[0\\] = \\(0\\.5, .*the image index must be an integer'));
      await rej([NaN, 0, 0, 3, 2], bad('boxes\\[0\\] = \\(nan, .*the image index must be an integer'));
      await rej([0, 0, NaN, 3, 2], bad('boxes\\[0\\] = \\(0, 0, nan, 3, 2\\): coordinates must be finite numbers within \\+-2\\^24'));
      await rej([0, 0, 0, Infinity, 2], bad('boxes\\[0\\] = .*coordinates must be finite'));
      await rej([0, 0, 0, 3e7, 2], bad('boxes\\[0\\] = .*coordinates must be finite numbers within \\+-2\\^24'));
      await rej([0, 3, 0, 2, 2], bad('boxes\\[0\\] = \\(0, 3, 0, 2, 2\\): the window is empty: need x1 <= x2 and y1 <= y2'));
      await rej([0, 0, 2, 3, 1.5], bad('boxes\\[0\\] = .*the window is empty'));
      const inv = (fn, re) => expectReject(fn, bad(re), 'SPPNET_INVALID_ARGUMENT');
      await inv(() => sp.cropResize(new Float32Array(4), B, 4), 'images must be a RaggedBatch or a Tensor');
      await inv(() => sp.cropResize(T([1, 2], [2]), B, 4), 'images must have rank 4');
      await inv(() => sp.cropResize(X, [[0, 0, 0, 1, 1]], 4), 'boxes must be a Tensor \\[K, 5\\]');
      await inv(() => sp.cropResize(X, T([0, 0, 1, 1], [1, 4]), 4), 'boxes must have shape \\[K, 5\\] \\(image index, x1, y1, x2, y2\\), got \\[1, 4\\]');
      for (const size of [0, 4097, 2.5, [3], [3, 0], '4', undefined, NaN])
        await inv(() => sp.cropResize(X, B, size), 'size must be an integer in \\[1, 4096\\] or a pair \\[outH, outW\\] of them');
      for (const context of [-1, 2, 1.5, '1'])
        await inv(() => sp.cropResize(X, B, [5, 4], { context }), 'options.context must be an integer >= 0 with 2 \\* context < min\\(outH, outW\\) = 4');
      await inv(() => sp.cropResize(X, B, 4, { align: 'center' }), "options.align must be 'pixels' or 'corners', got");
      await inv(() => sp.cropResize(X, B, 4, 'x'), 'options must be an object');
      await inv(() => sp.cropResize(X, B, 4, { out: sp.zeros([1, 2, 4, 5], { device }) }), 'options.out must have shape \\[1, 2, 4, 4\\]');
      const many = sp.zeros([70000, 5], { device });
      await inv(() => sp.cropResize(X, many, 128), 'the output would be \\[70000, 2, 128, 128\\] = 2293760000 elements, more than the 2\\^31-1');
      many.dispose();
      const D = T([0, 0, 0, 1, 1], [1, 5]);
      D.dispose();
      await expectReject(() => sp.cropResize(X, D, 4), bad('boxes was disposed'), 'SPPNET_DISPOSED');
      if (cudaStatus().ok) {
        const other = device === 'cpu' ? 'cuda' : 'cpu';
        const B2 = sp.tensor([0, 0, 0, 1, 1], [1, 5], { device: other });
        await expectReject(() => sp.cropResize(X, B2, 4), new RegExp(`^sp\\.cropResize: boxes is on ${other}, images on ${device}`), 'SPPNET_DEVICE_MISMATCH');
        const O2 = sp.zeros([1, 2, 4, 4], { device: other });
        await expectReject(() => sp.cropResize(X, B, 4, { out: O2 }), new RegExp(`^sp\\.cropResize: options\\.out is on ${other}`), 'SPPNET_DEVICE_MISMATCH');
        [B2, O2].forEach((t) => t.dispose());
      }
      [X, B].forEach((t) => t.dispose());
    });
  });
}

if (devices.includes('cuda'))
  describe('cropResize: the CUDA device against the CPU', function () {
    it('gives the CPU backend\'s values bit for bit on random windows (fresh seed)', async function () {
      const seed = freshSeed();
      console.log(`      (seed ${seed})`);
      const r = rng(seed);
      const maps = [r.int(1, 40), r.int(1, 40)].map((H) => ({ C: 3, H, W: r.int(1, 40) }));
      maps.forEach((m) => (m.data = new Float32Array(m.C * m.H * m.W).map(() => r.normal())));
      const boxes = [];
      for (let k = 0; k < 30; k++) {
        const m = r.int(0, 1);
        const x1 = r.int(-5, maps[m].W) + r.normal(), y1 = r.int(-5, maps[m].H) + r.normal();
        boxes.push(m, x1, y1, f(x1) + r.int(0, 40), f(y1) + r.int(0, 40));
      }
      for (const opts of [{}, { context: 3 }, { align: 'corners' }]) {
        const outs = [];
        for (const device of ['cpu', 'cuda']) {
          const X = images(maps, device, 'ragged'), B = sp.tensor(Float32Array.from(boxes), [30, 5], { device });
          const Y = await sp.cropResize(X, B, [17, 11], opts);
          outs.push(await Y.data());
          [X, B, Y].forEach((t) => t.dispose());
        }
        sameBits(outs[1], outs[0], `seed ${seed}, ${JSON.stringify(opts)}`);
      }
    });
  });
