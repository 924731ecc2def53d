'use strict';
// CUDA against the CPU on the same random inputs, device errors, memory: accounting, the pool,
// what V8 is told. Skipped, with the reason printed, when no CUDA device answers. Every tensor
// names its device: the default device is CUDA here, so a CPU tensor must say so.
const { expect } = require('chai');
const { sp, cudaStatus, expectClose, expectReject, inChildWith } = require('./support/helpers');
const { rng, freshSeed, randomMap } = require('./support/reference');
// Internals, to allocate device memory without a host array to upload (sp.zeros makes one).
const { allocate } = require('../dist/core/tensor');
const { native } = require('../dist/core/native');

const MiB = 1 << 20;
const ticks = async (n) => {
  for (let i = 0; i < n; i++) await new Promise((res) => setImmediate(res));
};
// Tests that compare memory counters collect other tests' dropped tensors first, so they need
// global.gc (node --expose-gc; npm test passes it) and skip, saying so, without it. (V8's count of
// external memory, which the addon adjusts by each device buffer's bytes, is not visible from JS
// in Node 20: process.memoryUsage().external leaves it out. What the count does, starting GCs, is.)
function haveGc() {
  if (typeof global.gc === 'function') return true;
  console.log('      (skipped: needs global.gc: run node with --expose-gc, as npm test does)');
  return false;
}
async function collect() {
  global.gc();
  await ticks(2);
}

describe('CUDA path', function () {
  before(function () {
    const s = cudaStatus();
    if (!s.ok) {
      console.log(`      CUDA tests skipped: ${s.why}`);
      this.skip();
    }
  });
  // Device tensors other tests dropped without dispose() are freed whenever the GC finalises
  // them, which moves the counters these tests compare: collect them first (with --expose-gc;
  // without it those comparisons may see another test's garbage go).
  beforeEach(async function () {
    if (typeof global.gc === 'function') await collect();
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
    x.dispose();
    out.dispose();
  });

  it('out of device memory is a JS error with the CUDA message; the memory comes back; a larger block fits after', async function () {
    this.timeout(300000);
    const before = sp.memory();
    const held = [];
    let err;
    try {
      // 1 GiB blocks, uninitialised (no host copy), until the GPU is full; each one kept and disposed below.
      for (let i = 0; i < 4096 && !err; i++) {
        try {
          held.push(allocate([2 ** 28], 'cuda', 'the OOM test'));
        } catch (e) {
          err = e;
        }
      }
      expect(err, `expected an allocation to fail after ${held.length} GiB`).to.be.instanceOf(Error);
      expect(err.code).to.equal('SPPNET_OUT_OF_MEMORY');
      expect(err.message).to.match(/cudaMallocAsync of 1073741824 bytes: cudaErrorMemoryAllocation/);
      expect(sp.memory().deviceBytes - before.deviceBytes).to.equal(held.length * 2 ** 30);
    } finally {
      held.forEach((t) => t.dispose());
    }
    const after = sp.memory();
    expect(after.deviceBuffers).to.equal(before.deviceBuffers);
    expect(after.deviceBytes).to.equal(before.deviceBytes);
    expect(after.tensors.cuda).to.equal(before.tensors.cuda);
    expect(after.bytes.cuda).to.equal(before.bytes.cuda);
    // The pool kept those blocks; a block larger than each needs them given back (trim, retry).
    const big = allocate([2 ** 30], 'cuda', 'the OOM test'); // 4 GiB
    big.dispose();
    // The process goes on.
    const x = sp.full([1, 2, 3, 3], 1, { device: 'cuda' });
    const y = await sp.spp(x, { levels: [1] });
    expect(Array.from(await y.data())).to.deep.equal([1, 1]);
    [x, y].forEach((t) => t.dispose());
  });

  it('dispose frees device memory at once, into the pool, which keeps it', async function () {
    const before = sp.memory();
    const t = sp.zeros([1 << 20], { device: 'cuda' });
    expect(sp.memory().deviceBytes - before.deviceBytes).to.equal(4 << 20);
    t.dispose();
    expect(sp.memory().deviceBytes).to.equal(before.deviceBytes);
    // 256 MiB freed, then a synchronisation (the next allocation waits for its stream): with the
    // default release threshold (0) the pool would give the block back to the driver there.
    const big = allocate([64 * MiB], 'cuda', 'the pool test');
    const during = sp.memory();
    expect(during.devicePoolUsed).to.be.at.least(during.deviceBytes);
    expect(during.devicePoolReserved).to.be.at.least(during.devicePoolUsed);
    big.dispose();
    sp.zeros([1], { device: 'cuda' }).dispose();
    await ticks(2);
    const m = sp.memory();
    expect(m.devicePoolReserved - m.devicePoolUsed, 'freed bytes the pool holds').to.be.at.least(256 * MiB);
  });

  it('device bytes are reported to V8: dropped device buffers are collected before the device fills', async function () {
    this.timeout(300000);
    if (!haveGc()) this.skip();
    await collect();
    const before = sp.memory();
    // Twice the device's memory in 256 MiB buffers, each dropped at once, never freed by hand, with
    // no global.gc() call: only V8 knowing their bytes makes it collect (and the addon free) them
    // in time. Their JS wrappers are a few bytes each: heap growth alone would start no GC.
    const each = 256 * MiB, n = Math.ceil((2 * sp.backend().cuda.totalMemory) / each);
    let failedAt = -1;
    for (let i = 0; i < n && failedAt < 0; i++) {
      try {
        (() => new native.DeviceBuffer(each / 4))();
      } catch (e) {
        expect(e.code).to.equal('SPPNET_OUT_OF_MEMORY');
        failedAt = i;
      }
      await ticks(1); // finalisers run between ticks
    }
    expect(failedAt, `allocation ${failedAt} of ${n} failed: the GC did not free dropped buffers`).to.equal(-1);
    for (let i = 0; i < 20 && sp.memory().deviceBuffers > before.deviceBuffers; i++) await collect();
    expect(sp.memory().deviceBuffers, 'the GC freed every dropped buffer').to.equal(before.deviceBuffers);
    expect(sp.memory().deviceBytes).to.equal(before.deviceBytes);
  });

  it('a 96 MiB device tensor allocated and disposed over and over starts no full GC', async function () {
    // V8 starts a mark-compact whenever its external-memory count grows past its limit (64 MiB):
    // told each buffer's bytes as they came, a large result allocated and disposed per call cost
    // a full GC per call (3-6 ms on an H100's host). The count follows the bytes held in steps of
    // 128 MiB (binding/common.h, ExternalReport).
    const { PerformanceObserver, constants } = require('perf_hooks');
    const full = [];
    const obs = new PerformanceObserver((list) => full.push(...list.getEntries().filter((e) => e.detail && e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR)));
    obs.observe({ entryTypes: ['gc'] });
    try {
      await ticks(2);
      full.length = 0;
      for (let i = 0; i < 12; i++) {
        allocate([24 * MiB], 'cuda', 'the GC test', true).dispose();
        await ticks(1);
      }
      await new Promise((res) => setTimeout(res, 50)); // the observer's entries come in a later task
    } finally {
      obs.disconnect();
    }
    expect(full.length, '12 allocations of 96 MiB: full GCs meanwhile').to.be.at.most(2);
  });

  it('SPPNET_CUDA_KERNEL_TIMES=1: launches and GPU time per kernel; without it, none', async function () {
    this.timeout(120000);
    if (process.env.SPPNET_CUDA_KERNEL_TIMES !== '1') expect(native.kernelTimes()).to.equal(null);
    if (inChildWith(this, __filename, { SPPNET_CUDA_KERNEL_TIMES: '1' })) return;
    const x = sp.tensor(Float32Array.from({ length: 2 * 8 * 13 * 13 }, (_, i) => Math.sin(i)), [2, 8, 13, 13], { device: 'cuda' });
    const w = sp.tensor(Float32Array.from({ length: 5 * 8 * 9 }, (_, i) => Math.cos(i)), [5, 8, 3, 3], { device: 'cuda' });
    const before = native.kernelTimes();
    expect(before).to.be.an('object');
    const n = (t, k) => (t[k] ? t[k][0] : 0);
    for (let i = 0; i < 3; i++) (await sp.spp(x)).dispose();
    (await sp.conv2d(x, w, null, { padding: 1, math: 'direct' })).dispose();
    const after = native.kernelTimes();
    expect(n(after, 'spp_forward_kernel<MODE>') - n(before, 'spp_forward_kernel<MODE>')).to.equal(3);
    expect(n(after, 'conv2d_kernel') - n(before, 'conv2d_kernel')).to.equal(1);
    expect(after['spp_forward_kernel<MODE>'][1]).to.be.above(0);
    [x, w].forEach((t) => t.dispose());
  });

  it('disposing a tensor an op is using is safe: the op finishes, then the memory is freed', async function () {
    const before = sp.memory();
    const x = sp.full([8, 64, 96, 96], 2, { device: 'cuda' });
    const p = sp.spp(x, { levels: [4, 2, 1] });
    await ticks(1); // the op is queued (or done): its checks and the native call ran in microtasks
    x.dispose(); // an op in flight still holds the memory
    const y = await p;
    expect(Array.from((await y.data()).subarray(0, 3))).to.deep.equal([2, 2, 2]);
    y.dispose();
    expect(sp.memory().deviceBuffers).to.equal(before.deviceBuffers);
    expect(sp.memory().deviceBytes).to.equal(before.deviceBytes);
  });

  it('works in worker_threads (each its own pool setting and V8 accounting), and terminating one mid-op leaves the rest working', async function () {
    const { Worker } = require('worker_threads');
    const path = require('path');
    const code = `
      const { parentPort, workerData } = require('worker_threads');
      const sp = require(${JSON.stringify(path.resolve(__dirname, '..', 'dist'))});
      (async () => {
        if (workerData.busy) {
          const big = sp.full([16, 256, 120, 120], 1, { device: 'cuda' });
          parentPort.postMessage('busy');
          for (;;) (await sp.spp(big, { levels: [6, 3, 2, 1] })).dispose(); // until terminated
        }
        const x = sp.tensor(Float32Array.from({ length: 2 * 3 * 9 * 7 }, (_, i) => Math.sin(i + workerData.k)), [2, 3, 9, 7], { device: 'cuda' });
        const y = await sp.spp(x, { levels: [3, 1] });
        const out = Array.from(await y.data());
        [x, y].forEach((t) => t.dispose());
        parentPort.postMessage({ out, memory: sp.memory() });
      })().catch((e) => parentPort.postMessage({ error: e.message }));`;
    const start = (data) => {
      const w = new Worker(code, { eval: true, workerData: data });
      const first = new Promise((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      return { w, first };
    };
    const busy = start({ busy: true });
    expect(await busy.first).to.equal('busy');
    const runs = [0, 1, 2].map((k) => start({ k }));
    await new Promise((res) => setTimeout(res, 20));
    await busy.w.terminate(); // while its spp calls run
    for (const [k, r] of runs.entries()) {
      const res = await r.first;
      expect(res.error).to.equal(undefined);
      const data = Float32Array.from({ length: 2 * 3 * 9 * 7 }, (_, i) => Math.sin(i + k));
      const want = await (await sp.spp(sp.tensor(data, [2, 3, 9, 7], { device: 'cpu' }), { levels: [3, 1] })).data();
      expectClose(Float32Array.from(res.out), want, { label: `worker ${k}` });
      expect(res.memory.deviceBuffers).to.equal(0);
      expect(res.memory.devicePoolReserved).to.be.a('number');
      await r.w.terminate();
    }
    const x = sp.full([1, 2, 3, 3], 1, { device: 'cuda' });
    const y = await sp.spp(x, { levels: [1] });
    expect(Array.from(await y.data())).to.deep.equal([1, 1]);
    [x, y].forEach((t) => t.dispose());
  });

  it('mixing devices is an error', async function () {
    const x = sp.zeros([1, 2, 3, 3], { device: 'cuda' });
    await expectReject(sp.spp(x, { out: sp.zeros([1, 100], { device: 'cpu' }) }), /options.out is on cpu, the input on cuda/);
    const g = sp.zeros([2, 3, 3], { device: 'cuda' });
    expect(() => sp.ragged([sp.zeros([2, 3, 3], { device: 'cpu' }), g])).to.throw(/every map must be on one device/);
    [x, g].forEach((t) => t.dispose());
  });
});
