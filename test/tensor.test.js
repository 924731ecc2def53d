'use strict';
const { expect } = require('chai');
const { sp, expectReject } = require('./support/helpers');

describe('tensors', function () {
  it('carry dtype, shape and device, and share a Float32Array zero-copy on the CPU', async function () {
    const a = Float32Array.from([1, 2, 3, 4, 5, 6]);
    const t = sp.tensor(a, [2, 3], { device: 'cpu' });
    expect(t.dtype).to.equal('float32');
    expect(t.shape).to.deep.equal([2, 3]);
    expect(t.device).to.equal('cpu');
    expect(t.size).to.equal(6);
    a[4] = 50; // zero-copy: the tensor sees it
    const d = await t.data();
    expect(Array.from(d)).to.deep.equal([1, 2, 3, 4, 50, 6]);
    d[0] = -1; // data() is a copy
    expect((await t.data())[0]).to.equal(1);
  });

  it('accept number[] and other typed arrays by copying', async function () {
    const t = sp.tensor([1.5, 2.5], [2]);
    expect(Array.from(await t.data())).to.deep.equal([1.5, 2.5]);
    const u = sp.tensor(Float64Array.from([1, 2, 3]), [3, 1]);
    expect(Array.from(await u.data())).to.deep.equal([1, 2, 3]);
  });

  it('zeros and full', async function () {
    expect(Array.from(await sp.zeros([2, 2]).data())).to.deep.equal([0, 0, 0, 0]);
    expect(Array.from(await sp.full([3], 2.5).data())).to.deep.equal([2.5, 2.5, 2.5]);
  });

  it('throw on use after dispose, and dispose is idempotent', async function () {
    const t = sp.tensor([1, 2], [2]);
    t.dispose();
    t.dispose();
    expect(t.disposed).to.equal(true);
    await expectReject(t.data(), /Tensor.data: the tensor was disposed/, 'SPPNET_DISPOSED');
    await expectReject(sp.spp(t), /sp.spp: input was disposed/, 'SPPNET_DISPOSED');
    expect(() => sp.ragged([t])).to.throw(/sp.ragged: maps\[0\] was disposed/);
  });

  it('reject bad shapes and data with messages naming the argument', function () {
    expect(() => sp.tensor([1, 2, 3], [2, 2])).to.throw(/sp.tensor: shape \[2, 2\] has 4 elements, but data has 3/);
    expect(() => sp.tensor([1, 2], [2, -1])).to.throw(/sp.tensor: shape\[1\] must be a non-negative integer, got number -1/);
    expect(() => sp.tensor([1, 2], [2.5])).to.throw(/shape\[0\] must be a non-negative integer/);
    expect(() => sp.tensor('abc', [3])).to.throw(/data must be a Float32Array or an array of numbers/);
    expect(() => sp.tensor([1, 'x'], [2])).to.throw(/data\[1\] must be a number/);
    expect(() => sp.tensor([1], [1], { device: 'tpu' })).to.throw(/options.device must be 'cpu' or 'cuda'/);
    expect(() => sp.zeros([65536, 65536])).to.throw(/has 4294967296 elements, more than the 2\^31-1 a tensor may hold/);
  });
});

describe('tensors over memory the caller owns', function () {
  const dist = require('path').resolve(__dirname, '..', 'dist');

  it('dropped without dispose(), leave the live counts once the GC collects them', async function () {
    if (typeof global.gc !== 'function') return this.skip();
    // Collections and their FinalizationRegistry callbacks, until the count stops falling: ops that
    // ran inline (tiny, settled at once) give the event loop no turn, and the last object a loop
    // made may survive one collection.
    const settle = async (done = () => false) => {
      let last = Infinity;
      let still = 0;
      for (let round = 0; round < 40; round++) {
        global.gc();
        for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
        const now = sp.memory().tensors[sp.backend().device];
        if (done(now)) break;
        still = now >= last ? still + 1 : 0; // a round that freed nothing: finalizers may still be queued
        if (still >= 3) break;
        last = now;
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    await settle();
    const before = sp.memory();
    const drop = async () => {
      for (let i = 0; i < 200; i++) await sp.spp(sp.zeros([4, 8, 8]), { levels: [2, 1] }); // input and result dropped, never disposed
    };
    await drop();
    const view = sp.zeros([2, 3]).reshape([3, 2]); // a view keeps its owner counted
    const grown = sp.memory();
    const device = sp.backend().device;
    expect(grown.tensors[device] - before.tensors[device]).to.equal(401);
    expect(grown.allocations[device] - before.allocations[device]).to.equal(401);
    await settle((now) => now - before.tensors[device] <= 1);
    const after = sp.memory();
    expect(after.tensors[device] - before.tensors[device]).to.equal(1);
    expect(after.bytes[device] - before.bytes[device]).to.equal(24);
    expect(after.allocations[device] - before.allocations[device]).to.equal(401); // a running total
    expect(view.shape).to.deep.equal([3, 2]);
    view.dispose();
  });

  it("share the array's memory, and its ArrayBuffer can no longer be transferred away", async function () {
    const a = Float32Array.from([1, 2, 3, 4]);
    const t = sp.tensor(a, [4], { device: 'cpu' });
    // Node 20 copies a buffer marked untransferable instead of transferring it; newer Node throws.
    let copy;
    try {
      copy = structuredClone(a, { transfer: [a.buffer] });
    } catch (e) {
      expect(e.name).to.equal('DataCloneError');
    }
    if (copy) expect(Array.from(copy)).to.deep.equal([1, 2, 3, 4]);
    expect(a.length).to.equal(4);
    a[0] = 10;
    expect(Array.from(await t.data())).to.deep.equal([10, 2, 3, 4]);
    // A resizable ArrayBuffer may shrink under an op: its data is copied.
    const r = new Float32Array(new ArrayBuffer(16, { maxByteLength: 64 })).fill(2);
    const tr = sp.tensor(r, [4], { device: 'cpu' });
    r.buffer.resize(0);
    expect(Array.from(await tr.data())).to.deep.equal([2, 2, 2, 2]);
    // So does a SharedArrayBuffer: nothing can detach it.
    const s = new Float32Array(new SharedArrayBuffer(16));
    const ts = sp.tensor(s, [4], { device: 'cpu' });
    s[3] = 7;
    expect((await ts.data())[3]).to.equal(7);
  });

  it('over a detached ArrayBuffer: SPPNET_DISPOSED naming the call and the argument', async function () {
    const gone = new Float32Array(8);
    structuredClone(gone, { transfer: [gone.buffer] });
    expect(() => sp.tensor(gone, [2, 4], { device: 'cpu' })).to.throw(/sp.tensor: data's ArrayBuffer was detached/).with.property('code', 'SPPNET_DISPOSED');
    // A WebAssembly memory that grows detaches its old ArrayBuffer, mark or not.
    const mem = new WebAssembly.Memory({ initial: 1 });
    const t = sp.tensor(new Float32Array(mem.buffer, 0, 2 * 3 * 4).fill(1), [2, 3, 4], { device: 'cpu' });
    const m = sp.tensor(new Float32Array(mem.buffer, 4096, 3 * 4 * 4).fill(1), [3, 4, 4], { device: 'cpu' });
    mem.grow(1);
    await expectReject(t.data(), /^Tensor.data: the tensor was detached/, 'SPPNET_DISPOSED');
    await expectReject(sp.spp(t), /^sp.spp: input was detached/, 'SPPNET_DISPOSED');
    await expectReject(sp.relu(t), /^sp.relu: .* was detached/, 'SPPNET_DISPOSED');
    await expectReject(t.to('cpu'), /^Tensor.to: the tensor was detached/, 'SPPNET_DISPOSED');
    expect(() => sp.ragged([sp.zeros([3, 2, 2], { device: 'cpu' }), m])).to.throw(/^sp.ragged: maps\[1\] was detached/);
    const out = sp.tensor(new Float32Array(mem.buffer, 8192, 2 * 50), [2, 50], { device: 'cpu' });
    mem.grow(1);
    await expectReject(sp.spp(sp.zeros([2, 2, 4, 4], { device: 'cpu' }), { out }), /^sp.spp: options.out was detached/, 'SPPNET_DISPOSED');
    const model = await sp.buildModel({ spec: { name: 'one', inChannels: 3, layers: [{ type: 'spp', levels: [1] }, { type: 'fc', name: 'fc', out: 2 }] }, device: 'cpu' });
    await expectReject(model.run([sp.zeros([3, 4, 4], { device: 'cpu' }), m]), /^Model.run: images\[1\] was detached/, 'SPPNET_DISPOSED');
    model.dispose();
  });

  it('detached while an op reads it (a WebAssembly memory grown): SPPNET_DISPOSED, not what it read', async function () {
    const n = 32 * 160 * 160;
    const mem = new WebAssembly.Memory({ initial: Math.ceil((4 * n) / 65536) });
    const x = sp.tensor(new Float32Array(mem.buffer, 0, n).fill(1), [32, 160, 160], { device: 'cpu' });
    const w = sp.full([32, 32, 3, 3], 0.01, { device: 'cpu' });
    const p = sp.conv2d(x, w, null, { padding: 1 });
    await new Promise((r) => setImmediate(r)); // the op is queued (or done, on a fast machine)
    mem.grow(1);
    let err;
    try {
      (await p).dispose();
    } catch (e) {
      err = e;
    }
    // Detached before the op took the array, while it ran, or after it finished (then it resolved).
    if (err) {
      expect(err.code).to.equal('SPPNET_DISPOSED');
      expect(err.message).to.match(/^sp.conv2d: /);
    }
    w.dispose();
  });

  // Transferring the ArrayBuffer of a zero-copy tensor while an op read it, then letting the GC
  // free it, crashed the process (SIGSEGV: the op read freed memory): in a child process.
  it('transferring its ArrayBuffer while an op reads it cannot free the memory under the op', function () {
    this.timeout(120000);
    const { runNode } = require('./support/child');
    const script = `
      const sp = require(${JSON.stringify(dist)});
      const { Worker } = require('worker_threads');
      const sink = new Worker("require('worker_threads').parentPort.on('message', () => {})", { eval: true });
      (async () => {
        const w = sp.full([32, 32, 3, 3], 0.01, { device: 'cpu' });
        for (let it = 0; it < 6; it++) {
          const arr = new Float32Array(32 * 200 * 200).fill(1);
          const x = sp.tensor(arr, [32, 200, 200], { device: 'cpu' });
          const p = sp.conv2d(x, w, null, { padding: 1 });
          await new Promise((r) => setImmediate(r));
          try {
            if (it % 2) sink.postMessage(arr, [arr.buffer]);
            else structuredClone(arr, { transfer: [arr.buffer] });
          } catch (e) {
            if (e.name !== 'DataCloneError') throw e;
          }
          for (let k = 0; k < 4; k++) {
            global.gc();
            new Float32Array(arr.length).fill(-1); // reuse what was freed, if anything was
            await new Promise((r) => setTimeout(r, 1));
          }
          const y = await (await p).data();
          if (arr.length !== 32 * 200 * 200) throw new Error('the array was detached');
          // Interior outputs sum 32 * 9 inputs of 1 times 0.01.
          const v = y[16 * 200 * 200 + 100 * 200 + 100];
          if (Math.abs(v - 2.88) > 1e-4) throw new Error('read ' + v + ', expected 2.88');
        }
        await sink.terminate();
        console.log('6 transfers during ops: ok');
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const r = runNode(['--expose-gc', '-e', script], { timeout: 90000, env: { ...process.env, SPPNET_DEVICE: 'cpu' } });
    expect(r.signal, r.stderr).to.equal(null);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.include('6 transfers during ops: ok');
  });
});

describe('ragged batches', function () {
  it('pack maps of different sizes in one allocation with offsets', async function () {
    const a = sp.tensor(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i), [2, 3, 4]);
    const b = sp.tensor(Float32Array.from({ length: 2 * 1 * 5 }, (_, i) => 100 + i), [2, 1, 5]);
    const rb = sp.ragged([a, b]);
    expect(rb.count).to.equal(2);
    expect(rb.channels).to.equal(2);
    expect(rb.sizes).to.deep.equal([[3, 4], [1, 5]]);
    expect(rb.offsets).to.deep.equal([0, 24]);
    expect(rb.total).to.equal(34);
    expect(rb.shape(1)).to.deep.equal([2, 1, 5]);
    a.dispose(); // the batch holds its own copy
    const [x, y] = await rb.arrays();
    expect(x[23]).to.equal(23);
    expect(Array.from(y)).to.deep.equal([100, 101, 102, 103, 104, 105, 106, 107, 108, 109]);
    rb.dispose();
    await expectReject(rb.data(), /disposed/);
  });

  it('reject channel mismatches, wrong ranks and empty lists, naming the map', function () {
    const a = sp.zeros([3, 4, 4]), b = sp.zeros([2, 4, 4]), c = sp.zeros([1, 3, 4, 4]);
    expect(() => sp.ragged([a, b])).to.throw(/every map must have the same channels \(axis 0\): maps\[0\] has 3, maps\[1\] has 2/);
    expect(() => sp.ragged([a, c])).to.throw(/maps\[1\] must have rank 3 \[C, H, W\], got shape \[1, 3, 4, 4\]/);
    expect(() => sp.ragged([])).to.throw(/at least one tensor/);
    expect(() => sp.ragged([a, 'x'])).to.throw(/maps\[1\] must be a Tensor/);
    expect(() => sp.ragged([sp.zeros([3, 0, 4])])).to.throw(/maps\[0\] has an empty axis/);
  });
});

// Issue 16: a disposed op result of 1.33 MiB or more goes to the addon's cache of host blocks, and
// the next result of about its size is that memory (already faulted in), zeroed; a block an op
// still uses stays out of the cache until the op is over.
describe('host memory given back at dispose()', function () {
  const { runNode } = require('./support/child');
  const path = require('path');
  const { rng, freshSeed } = require('./support/reference');
  const shape = [5, 100, 1000]; // 2 MB: from the addon (hostHugeAtLeast is 1.33 MiB)

  async function bigResult(seed) {
    const r = rng(seed);
    const x = sp.tensor(Float32Array.from({ length: shape[0] * shape[1] * shape[2] }, () => 2 * r.next() - 1), shape, { device: 'cpu' });
    const y = await sp.relu(x); // queued (too big to run inline), its result from the addon
    x.dispose();
    return y;
  }

  it('reuses the memory of a disposed result for the next one, zeroed', async function () {
    const seed = freshSeed();
    const y = await bigResult(seed);
    const before = sp.memory();
    const values = await y.data();
    expect(values.some((v) => v > 0)).to.equal(true);
    y.dispose();
    expect(sp.memory().hostCacheBytes, `seed ${seed}`).to.be.greaterThan(before.hostCacheBytes);
    const z = sp.zeros(shape, { device: 'cpu' }); // the same size: the block just given back
    expect(sp.memory().hostCacheReused).to.equal(before.hostCacheReused + 1);
    const zd = await z.data();
    expect(zd.every((v) => v === 0), 'a reused block is zeroed').to.equal(true);
    // And an op writing into reused memory computes what it computes in new memory.
    const y2 = await bigResult(seed);
    expect(Array.from(await y2.data())).to.deep.equal(Array.from(values));
    y2.dispose();
    z.dispose();
  });

  it('keeps a block an op is using out of the cache until the op is over, and the op succeeds', async function () {
    const seed = freshSeed();
    const y = await bigResult(seed);
    const values = await y.data();
    const p = sp.relu(y); // in flight: reads y (its output may be a cached block)
    const before = sp.memory();
    y.dispose(); // given back while the op reads it
    expect(y.disposed).to.equal(true);
    expect(sp.memory().hostCacheBytes, 'not in the cache while the op runs').to.equal(before.hostCacheBytes);
    // Zeroed memory of y's size: were it y's, the op would read zeros (checked below).
    const other = sp.zeros(shape, { device: 'cpu' });
    const r = await p;
    expect(Array.from(await r.data()), `seed ${seed}`).to.deep.equal(Array.from(values)); // relu(relu(v)) = relu(v)
    expect((await other.data()).every((v) => v === 0)).to.equal(true);
    await new Promise((res) => setImmediate(res)); // the op's worker is gone by now
    expect(sp.memory().hostCacheBytes, 'in the cache once the op is over').to.be.greaterThan(before.hostCacheBytes);
    r.dispose();
    other.dispose();
  });

  it('a view of a disposed result throws SPPNET_DISPOSED instead of reading reused memory', async function () {
    const y = await bigResult(freshSeed());
    const v = y.reshape([y.size]);
    y.dispose();
    const z = sp.zeros(shape, { device: 'cpu' }); // y's memory again
    await expectReject(v.data(), /Tensor\.data: the tensor is a view of a tensor that was disposed/, 'SPPNET_DISPOSED');
    await expectReject(() => sp.relu(v), /view of a tensor that was disposed/, 'SPPNET_DISPOSED');
    expect((await z.data()).every((x) => x === 0)).to.equal(true);
    z.dispose();
  });

  it('ops queued on arrays over a SharedArrayBuffer, at an offset, still run (their buffer is looked up from the view)', async function () {
    const n = shape[0] * shape[1] * shape[2];
    const sab = new SharedArrayBuffer(4 * (n + 100));
    const a = new Float32Array(sab, 400, n); // (not .map(): that makes a new, unshared array)
    for (let i = 0; i < n; i++) a[i] = (i % 3) - 1;
    const t = sp.tensor(a, shape, { device: 'cpu' });
    const y = await sp.relu(t); // queued: too big to run inline
    const d = await y.data();
    expect(d[2]).to.equal(1);
    expect(d[0]).to.equal(0);
    expect(d.every((v, i) => v === Math.max(0, (i % 3) - 1))).to.equal(true);
    y.dispose();
    t.dispose();
  });

  it('a compiled plan holds the blocks it uses: disposed meanwhile, one goes back when the plan is released', async function () {
    const { native } = require('../dist/core/native');
    const { OpSequence } = require('../dist/core/sequence');
    const x = sp.zeros(shape, { device: 'cpu' });
    const y = sp.zeros(shape, { device: 'cpu' });
    const seq = new OpSequence();
    sp.relu(x, { out: y, sequence: seq }); // recorded, not run
    await new Promise((r) => setImmediate(r));
    const plan = seq.compileFrom(0);
    const before = sp.memory().hostCacheBytes;
    y.dispose();
    x.dispose();
    expect(sp.memory().hostCacheBytes, 'held by the plan').to.equal(before);
    native.releasePlan(plan);
    expect(sp.memory().hostCacheBytes, 'given back with the plan').to.be.greaterThan(before);
  });

  it('a run of a plan queued before releasePlan keeps the plan\'s blocks: one disposed meanwhile is not handed out while the run writes it', async function () {
    const { native } = require('../dist/core/native');
    const { OpSequence } = require('../dist/core/sequence');
    const n = shape[0] * shape[1] * shape[2];
    const x = sp.tensor(new Float32Array(n).fill(3), shape, { device: 'cpu' });
    const y = sp.zeros(shape, { device: 'cpu' });
    const seq = new OpSequence();
    sp.relu(x, { out: y, sequence: seq }); // recorded: the plan writes 3s into y
    await new Promise((r) => setImmediate(r));
    const plan = seq.compileFrom(0);
    // A conv ahead of it on the executor, so that the plan's run is still queued below.
    const busy = sp.conv2d(sp.zeros([1, 32, 128, 128], { device: 'cpu' }), sp.zeros([32, 32, 3, 3], { device: 'cpu' }), null, { padding: 1 });
    const run = native.runSequence([plan, undefined]);
    native.releasePlan(plan);
    y.dispose(); // the queued run still writes into y's block
    const z = sp.zeros(shape, { device: 'cpu' }); // must not be y's block
    (await busy).dispose();
    await run;
    const d = await z.data();
    expect(d.every((v) => v === 0), 'z was written by the plan\'s run').to.equal(true);
    await new Promise((r) => setImmediate(r)); // the run's worker is gone by now
    const before = sp.memory().hostCacheBytes;
    z.dispose();
    expect(sp.memory().hostCacheBytes).to.be.greaterThan(before);
    x.dispose();
    // And a released plan cannot be run again.
    expect(() => native.runSequence([plan, undefined])).to.throw(/released plan/);
  });

  it('a run of a plan queued before releasePlan keeps the JS arrays the plan reads and writes (collected otherwise: a crash)', function () {
    // In a child: before the fix the run wrote into collected memory (a segmentation fault).
    const { runNode } = require('./support/child');
    const root = require('path').join(__dirname, '..');
    const script = `
      const sp = require(${JSON.stringify(root)});
      const { native } = require(${JSON.stringify(path.join(root, 'dist', 'core', 'native'))});
      const n = 1 << 24;
      let inp = new Float32Array(n).fill(-1), out = new Float32Array(n);
      const plan = native.compileSequence([native.elementwise, { op: 'relu', rows: 1, cols: n, input: inp, inputOffset: 0, output: out, outputOffset: 0 }]);
      inp = out = null;
      const busy = sp.conv2d(sp.full([2, 64, 96, 96], 1), sp.full([64, 64, 5, 5], 0.01), null, { padding: 2 });
      const run = native.runSequence([plan, undefined]);
      native.releasePlan(plan);
      global.gc(); global.gc();
      Promise.all([busy, run]).then(() => console.log('run settled'));`;
    const r = runNode(['--expose-gc', '-e', script], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, timeout: 60000 });
    expect(r.status, `${r.stdout}${r.stderr}`).to.equal(0);
    expect(r.stdout).to.match(/run settled/);
  });

  it('host tensors over 4 GiB (more than Node 20 wraps in an external ArrayBuffer) come from V8, and dispose', function () {
    // In a child: its memory (untouched pages of 4 GiB) goes with it. Before the limit, hostAlloc
    // crashed the process with a double free.
    const { runNode } = require('./support/child');
    const script = `
      const sp = require(${JSON.stringify(require('path').join(__dirname, '..'))});
      const t = sp.zeros([2 ** 30 + 1024], { device: 'cpu' });
      console.log(t.size);
      t.dispose();
      const r = sp.zeros([2 ** 30 + 2048], { device: 'cpu' });
      console.log(r.size);`;
    const r = runNode(['-e', script], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, timeout: 60000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim().split('\n')).to.deep.equal([String(2 ** 30 + 1024), String(2 ** 30 + 2048)]);
  });

  it('arrays the caller gave sp.tensor() are never taken: dispose() leaves them alone', async function () {
    const a = new Float32Array(shape[0] * shape[1] * shape[2]).fill(3);
    const t = sp.tensor(a, shape, { device: 'cpu' });
    const before = sp.memory().hostCacheBytes;
    t.dispose();
    expect(a.length).to.equal(shape[0] * shape[1] * shape[2]);
    expect(a[7]).to.equal(3);
    expect(sp.memory().hostCacheBytes).to.equal(before);
  });

  it('SPPNET_HOST_CACHE_MB bounds the cache (0: nothing kept), and model.releaseBuffers() empties it', function () {
    const root = path.join(__dirname, '..');
    const code = `
      const sp = require('./dist');
      (async () => {
        const x = sp.zeros([5, 100, 1000], { device: 'cpu' });
        const ys = [];
        for (let i = 0; i < 4; i++) ys.push(await sp.relu(x));
        ys.forEach((y) => y.dispose());
        const kept = sp.memory().hostCacheBytes;
        const model = await sp.buildModel({ spec: { name: 'tiny', inChannels: 1, layers: [{ type: 'conv', name: 'c', out: 2, kernel: 1 }, { type: 'spp', levels: [1] }, { type: 'fc', name: 'f', out: 2 }] }, device: 'cpu' });
        (await model.run(sp.zeros([1, 1, 8, 8], { device: 'cpu' }))).dispose();
        model.releaseBuffers();
        await new Promise((r) => setTimeout(r, 200));
        console.log(JSON.stringify({ kept, after: sp.memory().hostCacheBytes }));
      })();`;
    const run = (mb) => {
      const r = runNode(['-e', code], { cwd: root, env: { ...process.env, SPPNET_DEVICE: 'cpu', SPPNET_HOST_CACHE_MB: String(mb) }, timeout: 60000 });
      expect(r.status, r.stderr).to.equal(0);
      return JSON.parse(r.stdout.trim().split('\n').pop());
    };
    const none = run(0);
    expect(none.kept).to.equal(0);
    const some = run(5); // room for two of the four 2 MiB blocks
    expect(some.kept).to.equal(4 << 20);
    expect(some.after).to.equal(0);
  });
});
