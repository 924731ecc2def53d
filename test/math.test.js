'use strict';
// The CUDA math modes of conv2d and linear (tf32, bf16, fp32 = 3xTF32, direct) against float64
// references, each held to its documented tolerance relative to sum |w x| + |b|; defaults,
// sp.setMath, SPPNET_MATH and option checks (these run everywhere); the tensor-core check.
// GPU parts skip, printing why, without a CUDA device of compute capability 8.0 or newer.
const { expect } = require('chai');
const { execFileSync } = require('child_process');
const path = require('path');
const { sp, cudaStatus, expectReject } = require('./support/helpers');
const { rng, freshSeed, randomMap } = require('./support/reference');
const { refConv2d, refLinear } = require('./support/layers-reference');

const rand = (r, n, scale = 1) => Float32Array.from({ length: n }, () => r.normal() * scale);
const absArr = (a) => Float32Array.from(a, Math.abs);

/** Worst |got - want| / (magnitude + tiny); NaN pattern and infinities must match exactly. */
function checkAgainst(got, want, mag, tol, label) {
  expect(got.length, `${label} length`).to.equal(want.length);
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    if (Number.isNaN(w) || !Number.isFinite(w)) {
      if (Number.isNaN(w) ? !Number.isNaN(g) : g !== w) throw new Error(`${label} element ${i}: expected ${w}, got ${g}`);
      continue;
    }
    const e = Math.abs(g - w) / (mag[i] + 1e-30);
    if (!(e <= worst)) (worst = e), (at = i);
  }
  if (!(worst <= tol)) throw new Error(`${label}: error ${worst.toExponential(3)} of sum |w x| at element ${at} (got ${got[at]}, want ${want[at]}) exceeds ${tol}`);
  return worst;
}

describe('math modes: defaults, options, SPPNET_MATH (every machine)', function () {
  let saved;
  beforeEach(() => (saved = sp.getMath()));
  afterEach(() => sp.setMath(saved));

  it('defaults are PyTorch\'s (TF32 convolutions, FP32 linear); setMath changes them and checks its argument', function () {
    if (!process.env.SPPNET_MATH) expect(sp.getMath()).to.deep.equal({ conv: 'tf32', linear: 'fp32' });
    expect(sp.setMath({ conv: 'bf16' })).to.deep.equal({ ...saved, conv: 'bf16' });
    expect(sp.getMath().conv).to.equal('bf16');
    expect(() => sp.setMath({ conv: 'fp16' })).to.throw(/sp\.setMath: conv must be one of 'tf32', 'bf16', 'fp32', 'direct', got "fp16"/);
    expect(() => sp.setMath({ gemm: 'tf32' })).to.throw(/sp\.setMath: unknown key "gemm" \(conv or linear\)/);
    expect(() => sp.setMath(null)).to.throw(/sp\.setMath: expected \{ conv\?, linear\? \}/);
    expect(sp.MATH_TOLERANCE).to.deep.equal({ tf32: 2e-3, bf16: 1.6e-2, fp32: 1e-5, direct: 1e-5 });
  });

  it('conv2d and linear check options.math, naming the allowed modes', async function () {
    const Z = (shape) => sp.zeros(shape, { device: 'cpu' }); // options are checked the same on every device
    const x = Z([1, 2, 5, 5]);
    await expectReject(sp.conv2d(x, Z([3, 2, 3, 3]), null, { math: 'half' }), /sp\.conv2d: options\.math must be one of 'tf32', 'bf16', 'fp32', 'direct', got "half"/);
    await expectReject(sp.linear(Z([2, 4]), Z([3, 4]), null, { math: 3 }), /sp\.linear: options\.math must be one of .* got 3/);
  });

  it('SPPNET_MATH sets the starting defaults; a bad value is an error naming it', function () {
    const run = (v) => execFileSync(process.execPath, ['-e', "console.log(JSON.stringify(require('./dist').getMath()))"],
      { cwd: path.join(__dirname, '..'), env: { ...process.env, SPPNET_MATH: v, SPPNET_DEVICE: 'cpu' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(JSON.parse(run('conv=bf16, linear=tf32'))).to.deep.equal({ conv: 'bf16', linear: 'tf32' });
    expect(JSON.parse(run('direct'))).to.deep.equal({ conv: 'direct', linear: 'direct' });
    expect(() => run('conv=fast')).to.throw(/SPPNET_MATH conv must be one of 'tf32', 'bf16', 'fp32', 'direct', got "fast"/);
  });

  it('the CPU computes in FP32 whatever the mode: bit-identical results', async function () {
    const seed = freshSeed();
    const r = rng(seed);
    const maps = [randomMap(r, 4, 9, 7), randomMap(r, 4, 3, 3)];
    // On the CPU explicitly: on the default device (CUDA when a GPU answers) the modes differ.
    const T = (data, shape) => sp.tensor(data, shape, { device: 'cpu' });
    const x = sp.ragged(maps.map((m) => T(m.data, [m.C, m.H, m.W])));
    const w = T(rand(r, 6 * 4 * 9), [6, 4, 3, 3]);
    const lx = T(rand(r, 5 * 30), [5, 30]), lw = T(rand(r, 7 * 30), [7, 30]);
    const ref = await (await sp.conv2d(x, w, null, { padding: 1, math: 'direct' })).data();
    const lref = await (await sp.linear(lx, lw, null, { math: 'direct' })).data();
    for (const math of ['tf32', 'bf16', 'fp32']) {
      expect(Array.from(await (await sp.conv2d(x, w, null, { padding: 1, math })).data()), `seed ${seed} ${math}`).to.deep.equal(Array.from(ref));
      expect(Array.from(await (await sp.linear(lx, lw, null, { math })).data()), `seed ${seed} ${math}`).to.deep.equal(Array.from(lref));
    }
  });

  it('without a tensor-core GPU the check does not run and says why (no warning)', async function () {
    const b = sp.backend();
    if (b.cuda.available && Number(b.cuda.computeCapability.split('.')[0]) >= 8) this.skip();
    let warned = false;
    const onWarn = (w) => (warned = warned || w.code === 'SPPNET_TENSOR_CORES');
    process.on('warning', onWarn);
    const c = await sp.tensorCoreCheck();
    await new Promise((res) => setImmediate(res));
    process.off('warning', onWarn);
    expect(c.ran).to.equal(false);
    expect(c.ok).to.equal(false);
    expect(c.detail).to.match(/^not run: /);
    expect(warned).to.equal(false);
  });
});

describe('math modes on CUDA (tensor cores)', function () {
  before(function () {
    const s = cudaStatus();
    if (!s.ok) {
      console.log(`      CUDA math tests skipped: ${s.why}`);
      this.skip();
    }
    const cc = sp.backend().cuda.computeCapability;
    if (Number(cc.split('.')[0]) < 8) {
      console.log(`      tensor-core tests skipped: compute capability ${cc} < 8.0 (conv2d and linear run the direct kernels there)`);
      this.skip();
    }
  });

  it('the tensor-core check passes in every mode and backend() reports it', async function () {
    const c = await sp.tensorCoreCheck();
    expect(c.ran).to.equal(true);
    for (const m of ['tf32', 'bf16', 'fp32']) expect(c.modes[m].ok, `${m}: ${c.detail}`).to.equal(true);
    expect(c.ok, c.detail).to.equal(true);
    const info = sp.backend().cuda.math;
    expect(info.check.ok).to.equal(true);
    expect(info.kernels).to.match(/tensor cores/);
  });

  const convCases = [
    // conv1 of ZF-5 on maps from the smallest allowed to large: many 128-pixel tiles, K = 147.
    { name: 'ZF-5 conv1 7x7 s2 p1, 3 -> 96', cin: 3, cout: 96, kh: 7, kw: 7, stride: [2, 2], padding: [1, 1], relu: true, sizes: [[5, 5], [37, 41], [121, 97], [6, 11]] },
    // N over two 128-channel tiles, K = 200 (not a multiple of 16), 60 tiny maps: tiles span dozens of maps.
    { name: '1x1, 200 -> 130, 60 maps of 1x1..4x4', cin: 200, cout: 130, kh: 1, kw: 1, sizes: 'tiny' },
    { name: '3x5 dilation (2,1) stride (1,2) groups 3', cin: 6, cout: 9, kh: 3, kw: 5, stride: [1, 2], padding: [1, 2], dilation: [2, 1], groups: 3, relu: true, sizes: [[9, 12], [20, 7], [3, 5]] },
    { name: 'ZF-5 conv3-like 3x3 p1, 64 -> 72 on one large and small maps', cin: 64, cout: 72, kh: 3, kw: 3, padding: [1, 1], sizes: [[83, 71], [1, 1], [2, 3], [13, 13]] },
  ];

  for (const math of ['tf32', 'bf16', 'fp32', 'direct'])
    it(`conv2d in ${math} stays within ${math === 'direct' ? 'FP32' : math} tolerance of float64 on ragged batches (poisoned outputs)`, async function () {
      const tol = sp.MATH_TOLERANCE[math];
      const seed = freshSeed();
      const r = rng(seed);
      for (const c of convCases) {
        const sizes = c.sizes === 'tiny' ? Array.from({ length: 60 }, () => [r.int(1, 4), r.int(1, 4)]) : c.sizes;
        const maps = sizes.map(([H, W]) => randomMap(r, c.cin, H, W));
        const g = c.groups || 1;
        const w = rand(r, c.cout * (c.cin / g) * c.kh * c.kw, 0.2), b = rand(r, c.cout);
        const x = sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W], { device: 'cuda' })));
        const W = sp.tensor(w, [c.cout, c.cin / g, c.kh, c.kw], { device: 'cuda' }), B = sp.tensor(b, [c.cout], { device: 'cuda' });
        const probe = await sp.conv2d(x, W, B, { ...c, math: 'direct' }); // for the output layout
        const out = sp.ragged(probe.sizes.map(([h, ww]) => sp.full([c.cout, h, ww], 7.77e30, { device: 'cuda' })));
        await sp.conv2d(x, W, B, { ...c, math, out });
        const got = await out.arrays();
        maps.forEach((m, i) => {
          const ref = refConv2d(m, w, b, c);
          const mag = refConv2d({ ...m, data: absArr(m.data) }, absArr(w), absArr(b), { ...c, relu: false });
          checkAgainst(got[i], ref.data, mag.data, tol, `seed ${seed} ${math} ${c.name} map ${i} (${m.H}x${m.W})`);
        });
        [x, W, B, probe, out].forEach((t) => t.dispose());
      }
    });

  for (const math of ['tf32', 'bf16', 'fp32'])
    it(`conv2d in ${math} propagates NaN and Inf as float64 does`, async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const m = randomMap(r, 5, 12, 10);
      m.data[3] = NaN;
      m.data[5 * 12 * 10 - 7] = Infinity;
      const w = rand(r, 8 * 5 * 9, 0.3), b = rand(r, 8);
      const o = { cout: 8, kh: 3, kw: 3, padding: [1, 1] };
      const y = await sp.conv2d(sp.tensor(m.data, [5, 12, 10], { device: 'cuda' }), sp.tensor(w, [8, 5, 3, 3], { device: 'cuda' }), sp.tensor(b, [8], { device: 'cuda' }), { padding: 1, math });
      const ref = refConv2d(m, w, b, o);
      const mag = refConv2d({ ...m, data: absArr(m.data) }, absArr(w), absArr(b), o);
      checkAgainst(await y.data(), ref.data, mag.data, sp.MATH_TOLERANCE[math], `seed ${seed} ${math}`);
      expect(Array.from(ref.data).some((v) => v === Infinity || v === -Infinity), 'the case has infinite outputs').to.equal(true);
    });

  for (const math of ['tf32', 'bf16', 'fp32', 'direct'])
    it(`linear in ${math}: split-K (3 x 3000 -> 257) and plain tiles (300 x 70 -> 130), bias, ReLU, poisoned outputs`, async function () {
      const tol = sp.MATH_TOLERANCE[math];
      const seed = freshSeed();
      const r = rng(seed);
      for (const [rows, inF, outF, relu] of [[3, 3000, 257, false], [300, 70, 130, true], [1, 1, 1, false]]) {
        const x = rand(r, rows * inF), w = rand(r, outF * inF, 0.1), b = rand(r, outF);
        const out = sp.full([rows, outF], 7.77e30, { device: 'cuda' });
        const T = (a, s) => sp.tensor(a, s, { device: 'cuda' });
        await sp.linear(T(x, [rows, inF]), T(w, [outF, inF]), T(b, [outF]), { relu, math, out });
        const ref = refLinear(x, rows, inF, w, outF, b, relu);
        const mag = refLinear(absArr(x), rows, inF, absArr(w), outF, absArr(b), false);
        checkAgainst(await out.data(), ref, mag, tol, `seed ${seed} ${math} linear ${rows}x${inF}->${outF}`);
        out.dispose();
      }
    });

  it('a call\'s math option wins over the default; the default applies otherwise', async function () {
    const saved = sp.getMath();
    try {
      const r = rng(freshSeed());
      const m = randomMap(r, 16, 20, 20);
      const x = sp.tensor(m.data, [16, 20, 20], { device: 'cuda' }), w = sp.tensor(rand(r, 24 * 16 * 9), [24, 16, 3, 3], { device: 'cuda' });
      const direct = await (await sp.conv2d(x, w, null, { math: 'direct' })).data();
      const bf16 = await (await sp.conv2d(x, w, null, { math: 'bf16' })).data();
      sp.setMath({ conv: 'bf16' });
      expect(Array.from(await (await sp.conv2d(x, w)).data())).to.deep.equal(Array.from(bf16));
      sp.setMath({ conv: 'direct' });
      expect(Array.from(await (await sp.conv2d(x, w)).data())).to.deep.equal(Array.from(direct));
      expect(Array.from(bf16)).to.not.deep.equal(Array.from(direct)); // the modes really differ
    } finally {
      sp.setMath(saved);
    }
  });
});
