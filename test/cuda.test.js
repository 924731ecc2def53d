'use strict';
// CUDA against the CPU on the same random inputs, device errors, memory accounting.
// Skipped, with the reason printed, when no CUDA device answers.
const { expect } = require('chai');
const { sp, cudaStatus, expectClose, expectReject } = require('./support/helpers');
const { rng, freshSeed, randomMap } = require('./support/reference');

describe('CUDA path', function () {
  before(function () {
    const s = cudaStatus();
    if (!s.ok) {
      console.log(`      CUDA tests skipped: ${s.why}`);
      this.skip();
    }
  });

  async function both(maps, opts, backward) {
    const mk = (device) => sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W], { device })));
    const c = mk('cpu'), g = mk('cuda');
    const yc = await sp.spp(c, opts), yg = await sp.spp(g, opts);
    expect(yg.device).to.equal('cuda');
    const res = { fwd: [await yc.data(), await yg.data()] };
    if (backward) {
      const go = Float32Array.from({ length: yc.size }, (_, i) => Math.sin(i));
      const dc = await sp.sppBackward(c, sp.tensor(go, yc.shape, { device: 'cpu' }), opts);
      const dg = await sp.sppBackward(g, sp.tensor(go, yc.shape, { device: 'cuda' }), opts);
      res.bwd = [await dc.data(), await dg.data()];
      dg.dispose();
    }
    g.dispose();
    yg.dispose();
    return res;
  }

  for (const pool of ['max', 'avg'])
    for (const bins of ['adaptive', 'paper'])
      it(`agrees with the CPU: ${pool}, bins ${bins}, ragged maps from 6x6 to 200x150, windows, forward and backward`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const C = r.int(1, 40);
        const maps = [randomMap(r, C, 200, 150), ...Array.from({ length: 20 }, () => randomMap(r, C, r.int(6, 60), r.int(6, 60)))];
        const tol = pool === 'avg' ? { rtol: 1e-5, atol: 1e-6 } : {};
        const a = await both(maps, { pool, bins }, true);
        expectClose(a.fwd[1], a.fwd[0], { ...tol, label: `seed ${seed} fwd` });
        expectClose(a.bwd[1], a.bwd[0], { rtol: 1e-5, atol: 1e-5, label: `seed ${seed} bwd` });
        const windows = Array.from({ length: 300 }, () => {
          const m = r.int(0, maps.length - 1), W = maps[m].W, H = maps[m].H;
          const x0 = r.int(0, W - 6), y0 = r.int(0, H - 6);
          return [m, x0, y0, r.int(x0 + 5, W - 1), r.int(y0 + 5, H - 1)];
        });
        const b = await both(maps, { pool, bins, windows }, true);
        expectClose(b.fwd[1], b.fwd[0], { ...tol, label: `seed ${seed} windows fwd` });
        expectClose(b.bwd[1], b.bwd[0], { rtol: 1e-4, atol: 1e-5, label: `seed ${seed} windows bwd` });
      });

  it('agrees with the CPU on 1x1 maps and maps smaller than the pyramid', async function () {
    const seed = freshSeed();
    const r = rng(seed);
    const maps = Array.from({ length: 50 }, () => randomMap(r, 64, r.int(1, 5), r.int(1, 5)));
    const a = await both(maps, {}, true);
    expectClose(a.fwd[1], a.fwd[0], { label: `seed ${seed}` });
    expectClose(a.bwd[1], a.bwd[0], { rtol: 1e-5, atol: 1e-5, label: `seed ${seed}` });
  });

  it('writes every output element (poisoned out) and propagates NaN', async function () {
    const x = sp.tensor(Float32Array.from({ length: 3 * 4 * 7 * 5 }, (_, i) => (i === 17 ? NaN : Math.cos(i))), [3, 4, 7, 5], { device: 'cuda' });
    const out = sp.full([3, 200], 7.77e30, { device: 'cuda' });
    await sp.spp(x, { out });
    const ref = await (await sp.spp(await x.to('cpu'))).data();
    expectClose(await out.data(), ref, { label: 'poisoned' });
  });

  it('out of device memory is a JS error with the CUDA message, and the process goes on', async function () {
    const before = sp.memory().deviceBytes;
    const err = (() => {
      try {
        sp.zeros([2 ** 31 - 1], { device: 'cuda' }); // 8 GiB: fits some cards; then ask for far more
        for (let i = 0; i < 64; i++) sp.zeros([2 ** 31 - 1], { device: 'cuda' });
      } catch (e) {
        return e;
      }
    })();
    global.gc && global.gc();
    expect(err, 'expected cudaMalloc to fail').to.be.instanceOf(Error);
    expect(err.code).to.equal('SPPNET_OUT_OF_MEMORY');
    expect(err.message).to.match(/cudaMalloc of \d+ bytes: cudaErrorMemoryAllocation/);
    const y = await sp.spp(sp.full([1, 2, 3, 3], 1, { device: 'cuda' }), { levels: [1] });
    expect(Array.from(await y.data())).to.deep.equal([1, 1]);
    expect(before).to.be.a('number');
  });

  it('dispose frees device memory at once', function () {
    const before = sp.memory();
    const t = sp.zeros([1 << 20], { device: 'cuda' });
    expect(sp.memory().deviceBytes - before.deviceBytes).to.equal(4 << 20);
    t.dispose();
    expect(sp.memory().deviceBytes).to.equal(before.deviceBytes);
  });

  it('mixing devices is an error', async function () {
    const x = sp.zeros([1, 2, 3, 3], { device: 'cuda' });
    await expectReject(sp.spp(x, { out: sp.zeros([1, 100]) }), /options.out is on cpu, the input on cuda/);
    expect(() => sp.ragged([sp.zeros([2, 3, 3]), sp.zeros([2, 3, 3], { device: 'cuda' })])).to.throw(/every map must be on one device/);
  });
});
