'use strict';
// Compiled runs (lib/nn/plans.ts): from the second run of an input signature on, Model.run and
// Model.features run a plan compiled from a recorded run (copy in, the plan, copy out: one native
// call). They must give what the layers give, bit for bit, for every input, and never let one
// run see another's buffers, stale weights or stale settings.
const { expect } = require('chai');
const { sp, describeInChildWith, WINOGRAD_FROM_32 } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');
const { native } = require('../dist/core/native');

// Every layer kind Model.run records, a concat of branches among them.
const { devices, rand, everyKindSpec: spec } = require('./support/run-spec');

/** What the layers give (plans off), as an array. */
async function direct(call) {
  process.env.SPPNET_PLANS = '0';
  try {
    const y = await call();
    const d = await (y instanceof sp.RaggedBatch ? y.data() : y.data());
    y.dispose();
    return Array.from(d);
  } finally {
    delete process.env.SPPNET_PLANS;
  }
}

/** Native calls and compiled plans made while f runs. */
async function counting(f) {
  const run = native.runSequence, compile = native.compileSequence;
  const seen = { calls: 0, steps: [], compiled: 0 };
  native.runSequence = (steps) => {
    seen.calls += 1;
    seen.steps.push(steps.length / 2);
    return run.call(native, steps);
  };
  native.compileSequence = (steps, timed) => {
    seen.compiled += 1;
    seen.timed = timed;
    return compile.call(native, steps, timed);
  };
  try {
    await f();
  } finally {
    native.runSequence = run;
    native.compileSequence = compile;
  }
  return seen;
}

for (const device of devices) {
  describeInChildWith(WINOGRAD_FROM_32, __filename, `compiled runs (plans) on ${device}`, function () {
    this.timeout(300000);
    // c1 and c2 (32 channels) take the CPU's Winograd path (from 32 channels in these tests), whose
    // filter caches a plan then reads.
    const img = (r, s) => sp.tensor(rand(r, s[0] * s[1] * s[2]), s, { device });

    it('give the layers\' logits bit for bit for fresh inputs of a signature, from the second run on, in one native call of three steps', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const model = await sp.loadModel({ spec, seed: seed % 1000, device });
      const shapes = [[3, 19, 23], [3, 30, 17], [3, 16, 16]];
      const seen = await counting(async () => {
        for (let k = 0; k < 5; k++) {
          const imgs = shapes.map((s) => img(r, s));
          const want = await direct(() => model.run(imgs));
          const y = await model.run(imgs);
          expect(Array.from(await y.data()), `seed ${seed} run ${k}`).to.deep.equal(want);
          y.dispose();
        }
      });
      // Each round: the direct run, then model.run. Run 1 goes through the layers (one step per
      // op), run 2 records and compiles, runs 3-5 replay: copy in, plan, copy out.
      const runs = seen.steps.filter((_, i) => i % 2 === 1);
      expect(seen.compiled, 'plans compiled').to.equal(1);
      expect(runs[0], 'steps of the first run').to.be.greaterThan(10);
      expect(runs.slice(1), 'steps of the compiled runs').to.deep.equal([3, 3, 3, 3]);
      expect(seen.calls).to.equal(10);
      model.dispose();
    });

    it('time their steps under SPPNET_PLAN_TIMES=1 (Model.planTimes: one entry a plan, a mean per recorded op), and not otherwise', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const x = [img(r, [3, 19, 23]), img(r, [3, 30, 17])];
      const plain = await sp.loadModel({ spec, seed: 3, device });
      for (let k = 0; k < 3; k++) (await plain.run(x)).dispose();
      expect(plain.planTimes(), 'a plan compiled without the variable').to.deep.equal([]);
      plain.dispose();
      process.env.SPPNET_PLAN_TIMES = '1';
      let timed, seen;
      try {
        timed = await sp.loadModel({ spec, seed: 3, device });
        seen = await counting(async () => {
          for (let k = 0; k < 6; k++) (await timed.run(x)).dispose();
        });
      } finally {
        delete process.env.SPPNET_PLAN_TIMES;
      }
      // Run 1 through the layers (one native call a step), run 2 records and compiles: the plan's
      // own steps are run 1's but its copies in and out; runs 2-6 run the plan.
      expect(seen.timed, 'compiled timed').to.equal(true);
      const t = timed.planTimes();
      expect(t.length, `seed ${seed}`).to.equal(1);
      expect(t[0].runs, 'runs of the plan').to.equal(5);
      expect(t[0].stepMs.length, 'a time per recorded op').to.equal(seen.steps[0] - 2);
      expect(t[0].stepMs.every((ms) => Number.isFinite(ms) && ms >= 0), 'finite, non-negative').to.equal(true);
      expect(t[0].stepMs.some((ms) => ms > 0), 'some time measured').to.equal(true);
      timed.dispose();
    });

    it('keep signatures apart (sizes, kind, features vs run) and each result its own tensor', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const model = await sp.loadModel({ spec, seed: 7, device });
      // Four signatures (as many as a model keeps), three of them the same 3x20x21 image as a
      // ragged batch, a [C, H, W] tensor and a dense [1, C, H, W] tensor: only the kind differs.
      const inputs = [
        () => [img(r, [3, 20, 21])],
        () => img(r, [3, 20, 21]),
        () => sp.tensor(rand(r, 3 * 20 * 21), [1, 3, 20, 21], { device }),
        () => [img(r, [3, 21, 20]), img(r, [3, 17, 30])],
      ];
      const kinds = ['RaggedBatch', 'Tensor', 'Tensor', 'RaggedBatch'];
      const kept = [];
      const seen = await counting(async () => {
        for (let round = 0; round < 4; round++) {
          for (let k = 0; k < inputs.length; k++) {
            const x = inputs[k]();
            const want = await direct(() => model.run(x));
            const y = await model.run(x);
            const got = Array.from(await y.data());
            expect(got, `seed ${seed} round ${round} input ${k}`).to.deep.equal(want);
            kept.push({ y, got });
            const wantF = await direct(() => model.features(x));
            const f = await model.features(x);
            expect(f.constructor.name, 'features keep the input\'s kind').to.equal(kinds[k]);
            if (!Array.isArray(x)) expect(f.shape, 'and its shape').to.deep.equal([...x.shape.slice(0, -3), 8 + 6 + 32, 10, 10]);
            expect(Array.from(await f.data()), `seed ${seed} features round ${round} input ${k}`).to.deep.equal(wantF);
            f.dispose();
          }
        }
      });
      // Rounds 2-4 replay: each run and features signature compiled once (8 of them, the oldest
      // dropped past 4 per model), and compiled again only after being dropped.
      expect(seen.compiled, 'plans compiled').to.be.at.least(8);
      expect(seen.steps.filter((n) => n === 3).length, 'compiled runs').to.be.at.least(8);
      // A later run never wrote into an earlier result.
      for (const { y, got } of kept) {
        expect(Array.from(await y.data())).to.deep.equal(got);
        y.dispose();
      }
      model.dispose();
    });

    // On the CPU one executor thread runs the sequences one after another; on CUDA (the emulated
    // device in npm test) they run on several threads, where a plan shared by two runs would mix them.
    it('keep concurrent runs of one signature apart (a plan in use: the others take the layers)', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const model = await sp.loadModel({ spec, seed: 5, device });
      const shapes = [[3, 17, 21], [3, 24, 18]];
      for (let k = 0; k < 2; k++) (await model.run(shapes.map((s) => img(r, s)))).dispose(); // compiled
      const batches = Array.from({ length: 6 }, () => shapes.map((s) => img(r, s)));
      const want = [];
      for (const b of batches) want.push(await direct(() => model.run(b)));
      const outs = await Promise.all(batches.map((b) => model.run(b)));
      for (let k = 0; k < outs.length; k++) expect(Array.from(await outs[k].data()), `seed ${seed} batch ${k}`).to.deep.equal(want[k]);
      outs.forEach((o) => o.dispose());
      model.dispose();
    });

    it('follow the weights (loadStateDict, trainStep) and the math settings', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const model = await sp.loadModel({ spec, seed: 11, device });
      const x = [img(r, [3, 20, 20]), img(r, [3, 25, 19])];
      for (let k = 0; k < 3; k++) (await model.run(x)).dispose();
      const before = await direct(() => model.run(x));
      const sd = await model.stateDict();
      for (const v of sd.values()) v.data.forEach((e, i) => (v.data[i] = e * 0.75 + 0.01));
      await model.loadStateDict(sd);
      const after = await direct(() => model.run(x));
      expect(after).to.not.deep.equal(before);
      for (let k = 0; k < 3; k++) expect(Array.from(await (await model.run(x)).data()), `seed ${seed} after loadStateDict, run ${k}`).to.deep.equal(after);
      await model.trainStep(x, [1, 3], { lr: 0.1 });
      const trained = await direct(() => model.run(x));
      for (let k = 0; k < 3; k++) expect(Array.from(await (await model.run(x)).data()), `seed ${seed} after trainStep, run ${k}`).to.deep.equal(trained);
      if (device === 'cpu' && sp.backend().cpu.bf16) {
        // BF16 products in the fc layers from enough rows: with 256 images of 1x1 pooled features, the
        // plan recorded under FP32 must not serve the BF16 setting.
        const big = sp.tensor(rand(r, 300 * 3 * 9 * 9), [300, 3, 9, 9], { device });
        for (let k = 0; k < 2; k++) (await model.run(big)).dispose();
        const saved = sp.getMath();
        try {
          sp.setMath({ linear: 'bf16' });
          const want = await direct(() => model.run(big));
          for (let k = 0; k < 3; k++) expect(Array.from(await (await model.run(big)).data()), `seed ${seed} bf16 run ${k}`).to.deep.equal(want);
        } finally {
          sp.setMath(saved);
        }
      }
      model.dispose();
    });

    it('give their buffers back: releaseBuffers, a small activation budget, dispose', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const model = await sp.loadModel({ spec, seed: 2, device });
      for (let k = 0; k < 3; k++) (await model.run([img(r, [3, 30, 30])])).dispose();
      expect(model.activationBytes, 'a compiled run holds its buffers').to.be.greaterThan(0);
      model.releaseBuffers();
      expect(model.activationBytes, 'after releaseBuffers').to.equal(0);
      const x = [img(r, [3, 30, 30])];
      const want = await direct(() => model.run(x));
      for (let k = 0; k < 3; k++) expect(Array.from(await (await model.run(x)).data())).to.deep.equal(want);
      model.dispose();
      // Under a budget smaller than one run, plans are dropped as soon as a run needs room, and every run is right.
      const small = await sp.loadModel({ spec, seed: 2, device, activationBudget: 64 * 1024 });
      const sizes = [[3, 40, 40], [3, 33, 41], [3, 40, 40], [3, 33, 41], [3, 40, 40]];
      for (const s of sizes) {
        const xi = [img(r, s)];
        const w = await direct(() => small.run(xi));
        expect(Array.from(await (await small.run(xi)).data()), `seed ${seed} ${s}`).to.deep.equal(w);
      }
      // Plans of more than MAX_PLANS signatures: the oldest are dropped, every run stays right.
      for (let k = 0; k < 14; k++) {
        const xi = [img(r, [3, 16 + (k % 7), 18])];
        const w = await direct(() => small.run(xi));
        expect(Array.from(await (await small.run(xi)).data()), `seed ${seed} signature ${k % 7}`).to.deep.equal(w);
      }
      // Afterwards within the budget again (no plan kept over it, arena or not).
      expect(small.activationBytes, 'within the budget after the runs').to.be.at.most(64 * 1024);
      small.dispose();
      expect(small.activationBytes, 'after dispose').to.equal(0);
    });

    it('reject a run whose input is disposed while it is recorded with SPPNET_DISPOSED, naming Model.run', async function () {
      const small = { name: 'disposed-input', inChannels: 3, layers: [{ type: 'conv', name: 'c1', out: 4, kernel: 3, padding: 1 }, { type: 'maxpool', kernel: 2 }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'f', out: 3 }] };
      const model = await sp.loadModel({ spec: small, seed: 1, device });
      let rejected = 0;
      for (let d = 0; d < 24; d++) {
        // An op's result: addon memory on the CPU (detached at dispose), a device buffer on CUDA.
        const x = await sp.relu(sp.full([1, 3, 400, 400], 1, { device }));
        const p = model.run(x);
        (async () => {
          for (let k = 0; k < d; k++) await null;
          x.dispose();
        })();
        await p.then((y) => y.dispose(), (e) => {
          rejected += 1;
          expect(e.code, e.message).to.equal('SPPNET_DISPOSED');
          expect(e.message).to.match(/^Model\.run: /);
        });
      }
      expect(rejected, 'some runs saw their input go').to.be.above(0);
      model.dispose();
    });

    it('let a plan refused at its recording go at once (releaseBuffers during the run), not at a GC', async function () {
      const r = rng(freshSeed());
      const model = await sp.loadModel({ spec, seed: 2, device });
      const x = [img(r, [3, 30, 30])];
      (await model.run(x)).dispose(); // first sighting
      const release = native.releasePlan;
      let released = 0;
      native.releasePlan = (p) => {
        released += 1;
        return release.call(native, p);
      };
      try {
        const seen = await counting(async () => {
          const p = model.run(x); // second sighting: recorded and compiled
          model.releaseBuffers(); // during it: the plan is refused
          (await p).dispose();
        });
        expect(seen.compiled, 'a plan was compiled').to.equal(1);
        expect(released, 'the refused plan released').to.equal(1);
        expect(model.activationBytes).to.equal(0);
      } finally {
        native.releasePlan = release;
      }
      // The next sightings record again later and run right.
      const want = await direct(() => model.run(x));
      for (let k = 0; k < 3; k++) expect(Array.from(await (await model.run(x)).data())).to.deep.equal(want);
      model.dispose();
    });

    it('lay a plan\'s buffers out in one arena planned from the first run: fewer bytes, the same results', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const bytes = {};
      for (const arena of ['0', '1']) {
        process.env.SPPNET_ARENA = arena;
        try {
          const model = await sp.loadModel({ spec, seed: 3, device });
          for (let k = 0; k < 4; k++) {
            const x = [img(r, [3, 48, 40]), img(r, [3, 21, 33])]; // fresh images of one signature
            const want = await direct(() => model.run(x));
            const y = await model.run(x);
            expect(Array.from(await y.data()), `seed ${seed} arena ${arena} run ${k}`).to.deep.equal(want);
            y.dispose();
          }
          bytes[arena] = model.activationBytes;
          model.dispose();
        } finally {
          delete process.env.SPPNET_ARENA;
        }
      }
      expect(bytes['1'], `activation bytes with the arena, ${JSON.stringify(bytes)}`).to.be.greaterThan(0).and.below(bytes['0']);
    });

    it('are dropped past 4 per model, when idle, and free their device memory without a GC', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      if (device === 'cuda') await sp.tensorCoreCheck(); // its result is part of a signature: settled before counting
      const idle = device === 'cuda' ? 3000 : 150; // the emulated device's runs take seconds, with pauses between them
      const model = await sp.loadModel({ spec, seed: 6, device, activationIdleMs: idle });
      const xs = Array.from({ length: 6 }, (_, k) => [img(r, [3, 16 + k, 19])]);
      (await model.run(img(r, [3, 30, 30]))).dispose(); // the folded batch norm's weights exist from here on
      model.releaseBuffers();
      const base = native.memoryStats().deviceBytes;
      const seen = await counting(async () => {
        for (const x of xs) for (let i = 0; i < 2; i++) (await model.run(x)).dispose();
      });
      expect(seen.compiled, 'one plan per signature').to.equal(6);
      expect(model.plans.size, 'plans kept').to.equal(4);
      expect(model.activationBytes).to.be.greaterThan(0);
      await new Promise((res) => setTimeout(res, idle + 250));
      expect(model.plans.size, 'plans after the idle time').to.equal(0);
      expect(model.activationBytes, 'activation bytes after the idle time').to.equal(0);
      if (device === 'cuda') expect(native.memoryStats().deviceBytes, 'device bytes after the idle release').to.equal(base);
      // One signature: its plan holds every buffer the pool had (it keeps none itself), and the
      // idle time still frees them.
      for (let i = 0; i < 3; i++) (await model.run(xs[0])).dispose();
      expect(model.plans.size).to.equal(1);
      await new Promise((res) => setTimeout(res, idle + 250));
      expect(model.activationBytes, 'activation bytes after the idle time, one signature').to.equal(0);
      model.dispose();
    });

    it('record nothing for layers that make no op, and run them right', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const m = await sp.buildModel({ spec: { name: 'noop', inChannels: 3, layers: [{ type: 'dropout', p: 0.5 }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'f', out: 3 }] }, seed: 1, device });
      const x = img(r, [3, 9, 11]);
      const want = Array.from(await x.data());
      for (let k = 0; k < 4; k++) {
        const f = await m.features(x);
        expect(Array.from(await f.data()), `features ${k}`).to.deep.equal(want);
        if (f !== x) f.dispose(); // through the layers, the input itself; compiled, a copy
      }
      m.dispose();
    });

    it('finish a run in flight when the model is disposed, then free its memory', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const model = await sp.loadModel({ spec, seed: 4, device });
      const x = [img(r, [3, 26, 22])];
      const want = await direct(() => model.run(x));
      for (let k = 0; k < 2; k++) (await model.run(x)).dispose();
      const p = model.run(x);
      model.dispose();
      expect(Array.from(await (await p).data())).to.deep.equal(want);
      expect(model.activationBytes).to.equal(0);
      let err;
      try {
        await model.run(x);
      } catch (e) {
        err = e;
      }
      expect(err && err.code).to.equal('SPPNET_DISPOSED');
    });
  });
}

describe('compiled runs and worker threads', function () {
  it('terminating 20 workers while they replay plans leaves the process running', async function () {
    this.timeout(120000);
    const { Worker } = require('worker_threads');
    const dist = JSON.stringify(require('path').resolve(__dirname, '..', 'dist'));
    const code = `
      const sp = require(${dist});
      const { parentPort } = require('worker_threads');
      (async () => {
        const m = await sp.buildModel({ spec: { name: 't', inChannels: 3, layers: [
          { type: 'conv', name: 'c1', out: 16, kernel: 3, padding: 1 }, { type: 'maxpool', kernel: 2 },
          { type: 'conv', name: 'c2', out: 32, kernel: 3, padding: 1 }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'f', out: 4 } ] }, seed: 1, device: 'cpu' });
        const x = sp.tensor(new Float32Array(3 * 64 * 64).fill(0.5), [1, 3, 64, 64], { device: 'cpu' });
        for (let i = 0; ; i++) { (await m.run(x)).dispose(); if (i === 3) parentPort.postMessage('compiled'); }
      })();`;
    for (let k = 0; k < 20; k++) {
      const w = new Worker(code, { eval: true });
      await new Promise((res, rej) => (w.once('message', res), w.once('error', rej)));
      await new Promise((r) => setTimeout(r, k % 5));
      await w.terminate();
    }
  });
});

describe('the activation arena (planArena, RunBuffers.useArena)', function () {
  const { planArena, ActivationPool, RunBuffers } = require('../dist/nn/memory');

  // Elements [a, a + n) of a CPU view, from its allocation's start.
  const span = (t) => {
    const a = t.storage('test', 'a buffer').array;
    return [a.byteOffset / 4, a.byteOffset / 4 + a.length, a.buffer];
  };

  it('never overlaps two buffers alive at once, on random traces; needs at least the peak of the live bytes', function () {
    const seed = freshSeed();
    const r = rng(seed);
    for (let round = 0; round < 200; round++) {
      const trace = [], alive = [];
      let takes = 0;
      const steps = 1 + Math.floor(r.next() * 60);
      for (let t = 0; t < steps; t++) {
        if (alive.length > 0 && r.next() < 0.45) {
          const k = Math.floor(r.next() * alive.length);
          trace.push({ give: alive.splice(k, 1)[0] });
        } else {
          trace.push({ take: 1 + Math.floor(r.next() * (r.next() < 0.2 ? 50000 : 3000)) });
          alive.push(takes++);
        }
      }
      const plan = planArena(trace);
      const life = [], size = [];
      trace.forEach((e, t) => {
        if ('take' in e) life.push([t, trace.length]), size.push(e.take);
        else life[e.give][1] = t;
      });
      let peak = 0;
      trace.forEach((_, t) => (peak = Math.max(peak, life.reduce((a, [s0, s1], i) => a + (s0 <= t && t < s1 ? size[i] : 0), 0))));
      expect(plan.total, `seed ${seed} round ${round}`).to.be.at.least(peak);
      for (let i = 0; i < size.length; i++) {
        expect(plan.offsets[i] % 1024, 'aligned').to.equal(0);
        expect(plan.offsets[i] + size[i]).to.be.at.most(plan.total);
        for (let j = 0; j < i; j++) {
          const together = life[i][0] < life[j][1] && life[j][0] < life[i][1];
          const apart = plan.offsets[i] + size[i] <= plan.offsets[j] || plan.offsets[j] + size[j] <= plan.offsets[i];
          if (together) expect(apart, `seed ${seed} round ${round}: takes ${j} and ${i} are alive at once and overlap`).to.equal(true);
        }
      }
    }
  });

  it('serves takes from the arena while the run follows its trace, and from the pool once it does not', function () {
    const pool = new ActivationPool('cpu', Infinity, Infinity);
    const trace = [{ take: 5000 }, { take: 3000 }, { give: 0 }, { take: 4000 }, { give: 1 }, { give: 2 }];
    const run = new RunBuffers(pool, true);
    run.useArena(trace, 'test');
    expect(run.arenaBytes).to.equal(4 * planArena(trace).total);
    const a = run.take(5000, 'test'), b = run.take(3000, 'test');
    run.give(a);
    const c = run.take(4000, 'test'); // follows the trace: a view of the arena, where a was
    expect(span(c)[2]).to.equal(span(a)[2]);
    expect(span(c)[0]).to.equal(span(a)[0]);
    const d = run.take(777, 'test'); // the trace gives 1 here: off the trace, from the pool
    expect(span(d)[2]).to.not.equal(span(a)[2]);
    const e = run.take(4000, 'test'); // and so is every later take
    expect(span(e)[2]).to.not.equal(span(a)[2]);
    for (const t of [b, c, d, e]) run.give(t);
    run.release(false);
    expect(pool.bytes, 'the arena and the pool buffers kept, once each').to.equal(4 * (ActivationPool.bucket(planArena(trace).total) + ActivationPool.bucket(777) + ActivationPool.bucket(4000)));
    pool.trim();
    expect(pool.bytes, 'nothing after trim').to.equal(0);
    // Only before the first take: later, take numbers would not be the trace's.
    const late = new RunBuffers(pool, true);
    const f = late.take(5000, 'test');
    late.useArena(trace, 'test');
    expect(late.arenaBytes).to.equal(0);
    late.give(f);
    late.release(false);
    pool.dispose();
  });
});
