'use strict';
// Dynamic ragged batching: merging, priorities, queue limits, timeouts, cancellation, isolation of
// bad requests, draining, and the event loop under load.
const { expect } = require('chai');
const path = require('path');
const { monitorEventLoopDelay } = require('perf_hooks');
const { sp, expectClose, expectReject } = require('./support/helpers');

const fixture = path.join(__dirname, 'fixtures', 'tiny-spp.safetensors');
const image = (h, w, k = 0) => sp.tensor(Float32Array.from({ length: 3 * h * w }, (_, i) => Math.sin(0.1 * i + k)), [3, h, w], { device: 'cpu' });

describe('dynamic ragged batching', function () {
  let model;
  before(async () => (model = await sp.loadModel({ weights: fixture, device: 'cpu' })));
  after(() => model.dispose());

  it('merges concurrent requests of different sizes into ragged batches, each getting its own rows', async function () {
    const runner = sp.batching(model, { maxBatchSize: 4, maxQueueDelayMs: 20 });
    const imgs = [[9, 9], [12, 17], [20, 7], [5, 5], [30, 11], [8, 40], [16, 16], [7, 9], [11, 13]].map(([h, w], k) => image(h, w, k));
    const results = await Promise.all(imgs.map((t) => runner.run(t)));
    for (let k = 0; k < imgs.length; k++) {
      expect(results[k].shape).to.deep.equal([1, 4]);
      const alone = await (await model.run([imgs[k]])).data();
      expectClose(await results[k].data(), alone, { rtol: 1e-5, atol: 1e-6, label: `request ${k}` });
    }
    const st = runner.stats();
    expect(st.requests).to.equal(9);
    expect(st.batches).to.equal(3); // 4 + 4 + 1
    expect(st.batchSizes).to.deep.equal({ 4: 2, 1: 1 });
    await runner.close();
  });

  it('a request may carry several images; higher priorities run first', async function () {
    const runner = sp.batching(model, { maxBatchSize: 2, maxQueueDelayMs: 0 });
    const order = [];
    const first = runner.run([image(9, 9), image(10, 10)]).then((t) => (order.push('first'), t));
    // Queued while the first batch runs: low, then high priority.
    const low = runner.run(image(9, 9), { priority: 0 }).then((t) => (order.push('low'), t));
    const high = runner.run(image(9, 9), { priority: 5 }).then((t) => (order.push('high'), t));
    const all = await Promise.all([first, low, high]);
    expect(all[0].shape).to.deep.equal([2, 4]);
    expect(order).to.deep.equal(['first', 'high', 'low']);
    await runner.close();
  });

  it('refuses when the queue is full, times out, and cancels through AbortSignal', async function () {
    const runner = sp.batching(model, { maxBatchSize: 8, maxQueueDelayMs: 300, maxQueueLength: 2 });
    const a = runner.run(image(9, 9));
    const b = runner.run(image(9, 9), { timeoutMs: 20 });
    await expectReject(runner.run(image(9, 9)), /the queue is full \(2 requests waiting\)/, 'SPPNET_QUEUE_FULL');
    await expectReject(b, /timed out after 20 ms/, 'SPPNET_TIMEOUT');
    const ctl = new AbortController();
    const c = runner.run(image(9, 9), { signal: ctl.signal });
    ctl.abort();
    await expectReject(c, /aborted while queued/, 'SPPNET_ABORTED');
    const pre = new AbortController();
    pre.abort();
    await expectReject(runner.run(image(9, 9), { signal: pre.signal }), /aborted before it was queued/, 'SPPNET_ABORTED');
    expect((await a).shape).to.deep.equal([1, 4]);
    expect(runner.stats().rejected).to.deep.equal({ queueFull: 1, timeout: 1, aborted: 2 });
    await runner.close();
  });

  it('closes a batch at maxBatchPixels, refuses a request that can never fit, and emits each batch', async function () {
    const runner = sp.batching(model, { maxBatchSize: 8, maxQueueDelayMs: 20, maxBatchPixels: 300 });
    const events = [];
    runner.on('batch', (e) => events.push(e));
    // 10x10 = 100 pixels each: three fit in a batch of 300, the fourth starts the next.
    const r = await Promise.all([0, 1, 2, 3].map((k) => runner.run(image(10, 10, k))));
    r.forEach((t) => t.dispose());
    expect(events.map((e) => [e.images, e.pixels, e.ok])).to.deep.equal([[3, 300, true], [1, 100, true]]);
    expect(events[0].seconds).to.be.a('number');
    const err = await expectReject(runner.run([image(10, 20), image(10, 11)]), /^BatchingRunner\.run: the request's images have 310 pixels, more than maxBatchPixels 300$/, 'SPPNET_TOO_LARGE');
    expect(err).to.be.instanceOf(sp.SppnetError);
    expect(runner.stats().msPerPixel).to.equal(null); // two calls: too few to estimate waits from
    await runner.close();
  });

  it('refuses at once a request whose timeout is shorter than the work queued ahead of it', async function () {
    const runner = sp.batching(model, { maxBatchSize: 1, maxQueueDelayMs: 0 });
    for (let i = 0; i < 3; i++) (await runner.run(image(20, 20))).dispose(); // three calls, so that the runner knows its speed
    const ahead = Array.from({ length: 4 }, () => runner.run(image(20, 20)));
    const wait = runner.estimatedWaitMs(400);
    expect(wait).to.be.above(0);
    await expectReject(runner.run(image(20, 20), { timeoutMs: wait / 100 }), /the queue holds about \d+ ms of work, more than this request's timeout/, 'SPPNET_QUEUE_FULL');
    (await Promise.all(ahead)).forEach((t) => t.dispose());
    await runner.close();
  });

  it('asks the model to give back its activation buffers once idle (where the model can)', async function () {
    let released = 0;
    const m = await sp.loadModel({ weights: fixture, device: 'cpu' });
    const had = m.releaseBuffers;
    m.releaseBuffers = function () {
      released++;
      return had?.call(this);
    };
    const runner = sp.batching(m, { maxQueueDelayMs: 0, releaseBuffersAfterMs: 30 });
    (await runner.run(image(9, 9))).dispose();
    expect(released).to.equal(0);
    await new Promise((r) => setTimeout(r, 120));
    expect(released).to.equal(1);
    await runner.close();
    m.dispose();
  });

  it('a bad image fails only its own request', async function () {
    const runner = sp.batching(model, { maxBatchSize: 8, maxQueueDelayMs: 20 });
    const good = runner.run(image(12, 12));
    const bad = runner.run(sp.zeros([1, 12, 12], { device: 'cpu' })); // one channel: the model takes 3
    const tiny = runner.run(image(2, 2)); // smaller than the model's minimum
    expect((await good).shape).to.deep.equal([1, 4]);
    await expectReject(bad, /has 1 channels \(axis 0\), tiny-spp takes 3/);
    await expectReject(tiny, /smaller than tiny-spp's minimum/);
    await runner.close();
  });

  it('close() runs what is queued, then refuses new requests', async function () {
    const runner = sp.batching(model, { maxBatchSize: 4, maxQueueDelayMs: 1000 });
    const p = [runner.run(image(9, 9)), runner.run(image(10, 10))];
    await runner.close();
    const r = await Promise.all(p);
    expect(r.map((t) => t.shape[0])).to.deep.equal([1, 1]);
    await expectReject(runner.run(image(9, 9)), /the runner is closed/);
  });

  it('keeps the event loop responsive under load (lag measured and printed)', async function () {
    const big = await sp.loadModel({ arch: 'zf5', classes: 10, device: 'cpu' });
    const runner = sp.batching(big, { maxBatchSize: 8, maxQueueDelayMs: 2 });
    const h = monitorEventLoopDelay({ resolution: 5 });
    h.enable();
    const t0 = Date.now();
    const res = await Promise.all(Array.from({ length: 24 }, (_, k) => runner.run(image(64 + 8 * (k % 5), 64 + 12 * (k % 3), k))));
    const ms = Date.now() - t0;
    h.disable();
    res.forEach((t) => t.dispose());
    const p99 = h.percentile(99) / 1e6, max = h.max / 1e6;
    console.log(`      24 requests in ${ms} ms, ${runner.stats().batches} batches; event-loop delay p50 ${(h.percentile(50) / 1e6).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms`);
    // Inference runs off the main thread: the loop's worst delay stays far below the busy time.
    expect(max).to.be.below(Math.max(100, ms / 2));
    await runner.close();
    big.dispose();
  });
});
