'use strict';
// spp() and sppBackward() against the plain reference, on random inputs with fresh seeds.
// Runs on the CPU, and on CUDA too when a device answers (see cuda.test.js for the skip reason).
const { expect } = require('chai');
const { sp, cudaStatus, expectClose } = require('./support/helpers');
const { refSpp, refSppBackward, rng, freshSeed, randomMap } = require('./support/reference');

const POISON = 7.77e30;
const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];

function makeBatch(maps, device) {
  return sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W], { device })));
}

/** Runs spp into a poisoned output buffer and compares with the reference. */
async function checkForward(maps, opts, device, label) {
  const batch = makeBatch(maps, device);
  const rows = opts.windows ? opts.windows.length : maps.length;
  const F = sp.sppFeatures(maps[0].C, opts.levels || [6, 3, 2, 1]);
  const out = sp.full([rows, F], POISON, { device });
  const res = await sp.spp(batch, { ...opts, out });
  expect(res).to.equal(out);
  const regions = opts.windows && opts.windows.map(([m, x0, y0, x1, y1]) => [m, y0, x0, y1 - y0 + 1, x1 - x0 + 1]);
  const expected = refSpp(maps, { ...opts, regions });
  const rtol = opts.pool === 'avg' ? 2e-6 : 0;
  expectClose(await res.data(), expected, { rtol, atol: opts.pool === 'avg' ? 1e-6 : 0, label });
  batch.dispose();
  out.dispose();
}

for (const device of devices) {
  describe(`spp forward on ${device}`, function () {
    for (const pool of ['max', 'avg']) {
      it(`${pool}: random ragged batch, sizes that do not divide evenly`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const C = r.int(1, 7);
        const maps = Array.from({ length: r.int(3, 9) }, () => randomMap(r, C, r.int(7, 41), r.int(7, 41)));
        await checkForward(maps, { pool }, device, `seed ${seed}`);
      });

      it(`${pool}: maps smaller than the pyramid, 1x1 maps, 1xW and Hx1`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const C = r.int(1, 5);
        const sizes = [[1, 1], [1, 9], [9, 1], [2, 3], [5, 5], [3, 7], [6, 6], [1, 1]];
        const maps = sizes.map(([h, w]) => randomMap(r, C, h, w));
        await checkForward(maps, { pool }, device, `seed ${seed}`);
      });

      it(`${pool}: many small maps`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const maps = Array.from({ length: 300 }, () => randomMap(r, 3, r.int(1, 9), r.int(1, 9)));
        await checkForward(maps, { pool, levels: [4, 2, 1] }, device, `seed ${seed}`);
      });

      it(`${pool}: a few large maps`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        // One for the channel-vector path, one wide enough (>= 128 columns) for the row path.
        const maps = [randomMap(r, 24, r.int(90, 120), r.int(90, 120)), randomMap(r, 24, r.int(40, 100), r.int(128, 150))];
        await checkForward(maps, { pool }, device, `seed ${seed}`);
      });

      it(`${pool}: bins 'paper' and 'caffe' where they are defined, other level sets`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const C = r.int(1, 4);
        const maps = Array.from({ length: 6 }, () => randomMap(r, C, r.int(7, 40), r.int(7, 40)));
        await checkForward(maps, { pool, bins: 'paper', levels: [7, 4, 3, 2, 1] }, device, `paper seed ${seed}`);
        // Caffe's rule works for these (a, n) pairs: 12, 13 (padded: kernel 4, pad 2 at n = 4) and 24 with levels 4, 2, 1.
        const caffeMaps = [randomMap(r, C, 12, 24), randomMap(r, C, 24, 13), randomMap(r, C, 13, 13)];
        await checkForward(caffeMaps, { pool, bins: 'caffe', levels: [4, 2, 1] }, device, `caffe seed ${seed}`);
        await checkForward(maps, { pool, levels: [1, 5, 2, 13] }, device, `unordered levels seed ${seed}`);
      });

      it(`${pool}: windows, including ones touching the borders and single pixels`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const C = r.int(1, 6);
        const maps = [randomMap(r, C, 23, 31), randomMap(r, C, 17, 12)];
        const windows = [
          [0, 0, 0, 30, 22], // the whole map
          [0, 0, 0, 0, 0], // single pixel, top-left
          [0, 30, 22, 30, 22], // single pixel, bottom-right
          [1, 0, 5, 11, 16], // touches left, right and bottom
          [1, 3, 0, 3, 16], // one column
        ];
        for (let k = 0; k < 60; k++) {
          const m = r.int(0, 1);
          const W = maps[m].W, H = maps[m].H;
          const x0 = r.int(0, W - 1), y0 = r.int(0, H - 1);
          windows.push([m, x0, y0, r.int(x0, W - 1), r.int(y0, H - 1)]);
        }
        await checkForward(maps, { pool, windows }, device, `seed ${seed}`);
      });
    }

    it('dense [N,C,H,W] and [C,H,W] inputs equal the same maps as a ragged batch', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const [N, C, H, W] = [5, 3, 13, 11];
      const maps = Array.from({ length: N }, () => randomMap(r, C, H, W));
      const dense = new Float32Array(N * C * H * W);
      maps.forEach((m, i) => dense.set(m.data, i * C * H * W));
      const t4 = sp.tensor(dense, [N, C, H, W], { device });
      const a = await (await sp.spp(t4)).data();
      expectClose(a, refSpp(maps), { label: `seed ${seed}` });
      const t3 = sp.tensor(maps[2].data, [C, H, W], { device });
      const b = await sp.spp(t3);
      expect(b.shape).to.deep.equal([1, C * 50]);
      expectClose(await b.data(), refSpp([maps[2]]), { label: `seed ${seed}` });
      const w = await sp.spp(t4, { windows: sp.tensor([3, 1, 2, 9, 12], [1, 5], { device: 'cpu' }), levels: [2] });
      expectClose(await w.data(), refSpp(maps, { levels: [2], regions: [[3, 2, 1, 11, 9]] }), { label: `seed ${seed}` });
    });

    it('output layout is PyTorch\'s: level by level, channel-major, bins row-major', async function () {
      // Map 0 of 2 channels, 2x2: channel c at (y, x) holds 100*c + 10*y + x.
      const data = Float32Array.from([0, 1, 10, 11, 100, 101, 110, 111]);
      const out = await (await sp.spp(sp.tensor(data, [1, 2, 2, 2], { device }), { levels: [2, 1] })).data();
      expect(Array.from(out)).to.deep.equal([0, 1, 10, 11, 100, 101, 110, 111, 11, 111]);
    });

    it('NaN and Inf propagate like PyTorch', async function () {
      const data = Float32Array.from([1, NaN, 3, 4, -Infinity, -Infinity, Infinity, 2, -1]);
      const t = sp.tensor(data, [1, 1, 3, 3], { device });
      // adaptive 2x2 over 3x3: bins [0,2) and [1,3) on each axis.
      const mx = await (await sp.spp(t, { levels: [2, 1] })).data();
      expectClose(mx, refSpp([{ data, C: 1, H: 3, W: 3 }], { levels: [2, 1] }));
      expect(Number.isNaN(mx[0]) && Number.isNaN(mx[1]) && Number.isNaN(mx[4])).to.equal(true);
      expect(mx[2]).to.equal(Infinity);
      const av = await (await sp.spp(t, { levels: [2, 1], pool: 'avg' })).data();
      expect(Number.isNaN(av[0])).to.equal(true);
      expect(av[2]).to.be.NaN; // -Inf + Inf
      // Wide maps (>= 128 columns on the CPU) take the row kernel, which checks each plane for NaN first.
      const wide = Float32Array.from({ length: 2 * 3 * 50 * 131 }, (_, i) => Math.sin(i));
      wide[3 * 50 * 131 + 17 * 131 + 44] = NaN; // map 1, channel 0
      wide[2 * 50 * 131 + 3] = -Infinity;
      const wmaps = [0, 1].map((m) => ({ data: wide.subarray(m * 19650, (m + 1) * 19650), C: 3, H: 50, W: 131 }));
      const wt = sp.tensor(wide, [2, 3, 50, 131], { device });
      for (const pool of ['max', 'avg']) expectClose(await (await sp.spp(wt, { pool })).data(), refSpp(wmaps, { pool }), { rtol: 1e-5, atol: 1e-6, label: `wide ${pool}` });
      const noNan = sp.tensor(Float32Array.from([-Infinity, -Infinity, 5, 7]), [1, 1, 2, 2], { device });
      expect(Array.from(await (await sp.spp(noNan, { levels: [2, 1] })).data())).to.deep.equal([-Infinity, -Infinity, 5, 7, 7]);
    });

    it('empty batch dimension gives an empty output', async function () {
      const t = sp.tensor(new Float32Array(0), [0, 4, 5, 5], { device });
      const out = await sp.spp(t);
      expect(out.shape).to.deep.equal([0, 200]);
    });
  });

  describe(`spp backward on ${device}`, function () {
    for (const pool of ['max', 'avg']) {
      it(`${pool}: matches the reference on a random ragged batch with windows (poisoned output)`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const C = r.int(1, 5);
        const maps = Array.from({ length: 4 }, () => randomMap(r, C, r.int(1, 29), r.int(1, 29)));
        // Ties: a constant patch in map 0 so that max must pick the first in row-major order.
        for (let i = 0; i < Math.min(6, maps[0].data.length); i++) maps[0].data[i] = 3.5;
        const batch = makeBatch(maps, device);
        for (const windows of [undefined, [[0, 0, 0, maps[0].W - 1, maps[0].H - 1], [2, 0, 0, 0, 0], [3, 0, 0, maps[3].W - 1, maps[3].H - 1], [0, 0, 0, maps[0].W - 1, maps[0].H - 1]]]) {
          const rows = windows ? windows.length : maps.length;
          const levels = [5, 3, 1];
          const F = sp.sppFeatures(C, levels);
          const g = Float32Array.from({ length: rows * F }, () => r.normal());
          const out = sp.ragged(maps.map((m) => sp.full([m.C, m.H, m.W], POISON, { device })));
          const dx = await sp.sppBackward(batch, sp.tensor(g, [rows, F], { device }), { pool, levels, windows, out });
          expect(dx).to.equal(out);
          const regions = windows && windows.map(([m, x0, y0, x1, y1]) => [m, y0, x0, y1 - y0 + 1, x1 - x0 + 1]);
          const ref = refSppBackward(maps, g, { pool, levels, regions });
          const got = await dx.arrays();
          got.forEach((a, i) => expectClose(a, ref[i], { rtol: 1e-5, atol: 1e-5, label: `seed ${seed} map ${i}` }));
        }
      });

      it(`${pool}: finite differences agree with the gradient`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const [C, H, W] = [2, 7, 5];
        // Well-separated distinct values so that a small step never changes a max bin's winner.
        const perm = Array.from({ length: C * H * W }, (_, i) => i).sort(() => r.next() - 0.5);
        const x = Float64Array.from(perm, (p) => p * 0.5 + r.next() * 0.01);
        const levels = [3, 2, 1];
        const F = sp.sppFeatures(C, levels);
        const wts = Float64Array.from({ length: F }, () => r.normal());
        const loss = async (xs) => {
          const out = await (await sp.spp(sp.tensor(Float32Array.from(xs), [1, C, H, W], { device }), { levels, pool })).data();
          return out.reduce((a, v, i) => a + v * wts[i], 0);
        };
        const dx = await (await sp.sppBackward(sp.tensor(Float32Array.from(x), [1, C, H, W], { device }), sp.tensor(Float32Array.from(wts), [1, F], { device }), { levels, pool })).data();
        const eps = 1e-2;
        for (let i = 0; i < x.length; i++) {
          const xp = Float64Array.from(x), xm = Float64Array.from(x);
          xp[i] += eps;
          xm[i] -= eps;
          const fd = ((await loss(xp)) - (await loss(xm))) / (2 * eps);
          expect(Math.abs(fd - dx[i]), `seed ${seed} element ${i}: fd ${fd} vs ${dx[i]}`).to.be.below(2e-3 * (1 + Math.abs(fd)));
        }
      });
    }

    it('dense input gives a dense gradient of the same shape', async function () {
      const t = sp.tensor(Float32Array.from({ length: 2 * 3 * 4 * 4 }, (_, i) => (i * 7919) % 97), [2, 3, 4, 4], { device });
      const g = await sp.sppBackward(t, sp.full([2, 3 * 5], 1, { device }), { levels: [2, 1] });
      expect(g.shape).to.deep.equal([2, 3, 4, 4]);
      const d = await g.data();
      // Each channel gets 4 + 1 units of gradient from max pooling.
      for (let p = 0; p < 6; p++) expect(d.slice(p * 16, p * 16 + 16).reduce((a, b) => a + b, 0)).to.equal(5);
    });
  });
}

describe('spp on every CPU instruction set', function () {
  // The small-region kernel has AVX-512, AVX2 and portable versions; SPPNET_CPU_ISA picks a
  // narrower one than the CPU has, so each is checked against the reference on this machine.
  const { runNode } = require('./support/child');
  const path = require('path');
  // The native one too (SPPNET_CPU_ISA names the widest), so that every build this machine runs
  // is checked with the same cases: level orders whose coarse bins come from finer ones (covers),
  // the paper rule, channel counts that leave partial blocks of 16 and 8, NaN in several maps.
  for (const isa of ['native', 'avx2', 'portable']) {
    it(`${isa}: max and avg on small maps and windows match the reference`, function () {
      const seed = freshSeed();
      const code = `
        const sp = require('./dist');
        const { refSpp, rng, randomMap } = require('./test/support/reference');
        (async () => {
          const r = rng(${seed});
          let bad = 0;
          for (const C of [19, 5, 40]) {
            const maps = Array.from({ length: 12 }, () => randomMap(r, C, r.int(1, 39), r.int(1, 45)));
            for (let k = 0; k < 3; k++) { const m = maps[r.int(0, 11)]; m.data[r.int(0, m.data.length - 1)] = NaN; }
            maps[0].data[3] = NaN;
            const rb = sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W], { device: 'cpu' })));
            const windows = [[1, 0, 0, maps[1].W - 1, maps[1].H - 1], [2, 0, 0, 0, 0]];
            // Windows covering more than their map (maps 0-3; map 0 holds a NaN): each map's blocks of
            // channels are interleaved once and the windows pooled from that (cpu/spp_cpu.cpp).
            const overlap = [];
            for (let i = 0; i < 4; i++) {
              const m = maps[i];
              overlap.push([i, 0, 0, m.W - 1, m.H - 1]);
              for (let k = 0; k < 6; k++) { const x0 = r.int(0, m.W - 1), y0 = r.int(0, m.H - 1); overlap.push([i, x0, y0, r.int(x0, m.W - 1), r.int(y0, m.H - 1)]); }
            }
            const big = maps.filter((m) => m.H >= 7 && m.W >= 7).map((m) => maps.indexOf(m));
            const paper = big.map((i) => [i, 0, 0, maps[i].W - 1, maps[i].H - 1]);
            const cases = [{}, { levels: [1, 2, 3, 6] }, { levels: [7, 4, 2, 1] }];
            if (paper.length) cases.push({ levels: [6, 3, 2, 1], bins: 'paper', windows: paper }, { levels: [1, 3, 6], bins: 'paper', windows: paper });
            for (const pool of ['max', 'avg'])
              for (const c of cases)
                for (const w of c.windows ? [c.windows] : [undefined, windows, overlap]) {
                  const got = await (await sp.spp(rb, { pool, ...c, windows: w })).data();
                  const regions = w && w.map(([m, x0, y0, x1, y1]) => [m, y0, x0, y1 - y0 + 1, x1 - x0 + 1]);
                  const ref = refSpp(maps, { pool, levels: c.levels, bins: c.bins, regions });
                  ref.forEach((e, i) => { const a = got[i]; if (!(Number.isNaN(e) ? Number.isNaN(a) : Math.abs(a - e) <= 1e-5 * (1 + Math.abs(e)))) bad++; });
                  if (got.length !== ref.length) bad++;
                }
          }
          console.log(sp.backend().cpu.isa + ' ' + bad);
        })();`;
      if (isa === 'native') {
        const res = runNode(['-e', code], { cwd: path.resolve(__dirname, '..'), env: { ...process.env, SPPNET_CPU_ISA: '' } });
        expect(res.stderr).to.equal('');
        expect(res.stdout.trim().split(' ')[1], `seed ${seed} (${res.stdout.trim()})`).to.equal('0');
        return;
      }
      const res = runNode(['-e', code], { cwd: path.resolve(__dirname, '..'), env: { ...process.env, SPPNET_CPU_ISA: isa } });
      expect(res.stderr).to.equal('');
      expect(res.stdout.trim(), `seed ${seed}`).to.equal(`${isa} 0`);
    });
  }
});
