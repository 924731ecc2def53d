'use strict';
// Model.run records its layers' native calls and runs them as one sequence (lib/core/sequence.ts,
// binding RunSequence): the same logits, bit for bit, as layer-by-layer calls (SPPNET_SEQUENCE=0),
// one native call per run, concurrent runs kept apart, and the buffers a run read kept alive.
const { expect } = require('chai');
const { sp, describeInChildWith, WINOGRAD_FROM_32 } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');
const { native } = require('../dist/core/native');

const { devices, rand, everyKindSpec: spec } = require('./support/run-spec');

async function logits(model, imgs, sequence) {
  const saved = process.env.SPPNET_SEQUENCE;
  process.env.SPPNET_SEQUENCE = sequence ? '1' : '0';
  try {
    const before = native.memoryStats();
    const y = await model.run(imgs);
    const after = native.memoryStats();
    const data = await y.data();
    y.dispose();
    return { data, calls: after.opsInline + after.opsQueued - before.opsInline - before.opsQueued };
  } finally {
    if (saved === undefined) delete process.env.SPPNET_SEQUENCE;
    else process.env.SPPNET_SEQUENCE = saved;
  }
}

for (const device of devices) {
  describeInChildWith(WINOGRAD_FROM_32, __filename, `Model.run as one op sequence on ${device}`, function () {
    // c2 (32 channels) takes the CPU's Winograd path as well (from 32 channels in these tests).
    this.timeout(300000);

    it('gives the logits of layer-by-layer calls bit for bit, in one native call', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const model = await sp.loadModel({ spec, seed: seed % 1000, device });
      const imgs = [[3, 19, 23], [3, 30, 17], [3, 16, 16]].map((s) => sp.tensor(rand(r, s[0] * s[1] * s[2]), s, { device }));
      const a = await logits(model, imgs, true), b = await logits(model, imgs, false);
      expect(Array.from(a.data), `seed ${seed}`).to.deep.equal(Array.from(b.data));
      if (device === 'cpu') {
        expect(a.calls, 'native calls with a sequence').to.equal(1);
        expect(b.calls, 'native calls layer by layer').to.be.greaterThan(10);
      }
      // head() records too: the same rows through the head both ways.
      const pooled = sp.tensor(rand(r, 2 * model.pooledFeatures), [2, model.pooledFeatures], { device });
      process.env.SPPNET_SEQUENCE = '0';
      const h0 = await (await model.head(pooled)).data();
      delete process.env.SPPNET_SEQUENCE;
      const h1 = await (await model.head(pooled)).data();
      expect(Array.from(h1)).to.deep.equal(Array.from(h0));
      model.dispose();
    });

    it('keeps concurrent runs apart (their buffers are never shared while recorded) and the inputs they read alive', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const model = await sp.loadModel({ spec, seed: 3, device });
      const batches = Array.from({ length: 6 }, (_, k) => [[3, 17 + k, 21], [3, 24, 16 + 2 * k]].map((s) => rand(r, s[0] * s[1] * s[2])));
      const shapes = (k) => [[3, 17 + k, 21], [3, 24, 16 + 2 * k]];
      const alone = [];
      for (let k = 0; k < batches.length; k++) alone.push((await logits(model, batches[k].map((d, i) => sp.tensor(d, shapes(k)[i], { device })), true)).data);
      // All at once, each from an array of tensors (packed into a batch the run owns and frees after its sequence).
      const outs = await Promise.all(batches.map((b, k) => model.run(b.map((d, i) => sp.tensor(d, shapes(k)[i], { device })))));
      for (let k = 0; k < outs.length; k++) expect(Array.from(await outs[k].data()), `seed ${seed} batch ${k}`).to.deep.equal(Array.from(alone[k]));
      model.dispose();
    });
  });
}

// Model.trainStep records the forward's ops of consecutive recordable layers, and the optimizer's
// updates, and runs each run of them as one native call (lib/nn/backprop.ts, lib/nn/optim.ts).
// everyKindSpec has layers that record (conv, lrn, maxpool, concat, relu, spp, fc) and layers that
// read back first (batch norm, inside a concat's neighbourhood too, and dropout p 0.5).
describe('Model.trainStep as op sequences', function () {
  this.timeout(600000);
  for (const device of devices)
    for (const type of ['sgd', 'adam'])
      it(`${device}, ${type}: the losses and every weight bit for bit as with one native call per op (SPPNET_SEQUENCE=0), in fewer calls`, async function () {
        const seed = freshSeed();
        const r = rng(seed);
        const shapes = [[3, 19, 23], [3, 30, 17], [3, 16, 16]];
        const imgs = shapes.map((s) => sp.tensor(rand(r, s[0] * s[1] * s[2]), s, { device }));
        const labels = [1, 4, 0];
        const train = async (sequence) => {
          const saved = process.env.SPPNET_SEQUENCE;
          process.env.SPPNET_SEQUENCE = sequence ? '1' : '0';
          try {
            const model = await sp.loadModel({ spec, seed: seed % 1000, device });
            model.setOptimizer(type === 'sgd' ? { type, lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 } : { type, lr: 0.01, weightDecay: 1e-3 });
            const losses = [], calls = [];
            for (let k = 0; k < 3; k++) {
              const before = native.memoryStats();
              losses.push((await model.trainStep(imgs, labels, { seed: 11 + k })).loss);
              const after = native.memoryStats();
              calls.push(after.opsInline + after.opsQueued - before.opsInline - before.opsQueued);
            }
            const weights = await model.stateDict();
            model.dispose();
            return { losses, calls, weights };
          } finally {
            if (saved === undefined) delete process.env.SPPNET_SEQUENCE;
            else process.env.SPPNET_SEQUENCE = saved;
          }
        };
        const a = await train(true), b = await train(false);
        expect(a.losses, `seed ${seed}`).to.deep.equal(b.losses);
        expect([...a.weights.keys()]).to.deep.equal([...b.weights.keys()]);
        for (const [name, w] of b.weights) expect(Array.from(a.weights.get(name).data), `seed ${seed}: ${name}`).to.deep.equal(Array.from(w.data));
        // 16 parameters' updates in one call, and the forward's recordable runs in one call each.
        expect(a.calls[2], `native calls a step: ${a.calls} recorded, ${b.calls} one by one`).to.be.below(b.calls[2] - 20);
        imgs.forEach((t) => t.dispose());
      });
});
