'use strict';
// The HTTP service: classify raw and multipart images, JSON tensors, health, metrics, limits and
// errors; a real server on loopback shut down by SIGTERM while a request is in flight. The hostile
// clients of issue 12 (decompression bombs, oversized multipart, traffic that /metrics missed,
// overload) are in test/server-hostile.test.js.
const { expect } = require('chai');
const { runNode, startServe } = require('./support/child');
const fs = require('fs');
const os = require('os');
const path = require('path');
const sharp = require('sharp');
const { sp } = require('./support/helpers');

const fixture = path.join(__dirname, 'fixtures', 'tiny-spp.safetensors');
const png = (w, h, r = 200) => sharp({ create: { width: w, height: h, channels: 3, background: { r, g: 40, b: 90 } } }).png().toBuffer();

function multipart(files) {
  const boundary = '----sppnet' + Math.random().toString(16).slice(2);
  const parts = files.map((buf, i) => Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="${i}.png"\r\nContent-Type: image/png\r\n\r\n`),
    buf, Buffer.from('\r\n'),
  ]));
  return { body: Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`)]), type: `multipart/form-data; boundary=${boundary}` };
}

describe('HTTP service', function () {
  let model, srv;
  before(async () => {
    model = await sp.loadModel({ weights: fixture, device: 'cpu' });
    srv = await sp.createServer({ model, labels: ['a', 'b', 'c', 'd'], maxBatchSize: 8, maxQueueDelayMs: 5, maxPixels: 1_000_000, shorterSide: null });
  });
  after(async () => {
    await srv.close();
    model.dispose();
  });

  it('loads fastify and prom-client only when a server is made (require(\'sppnet\') stays light)', function () {
    const root = path.join(__dirname, '..');
    const script = `
      const loaded = () => Object.keys(require.cache).filter((f) => /node_modules[\\\\/](fastify|@fastify|prom-client)[\\\\/]/.test(f)).length;
      const sp = require(${JSON.stringify(root)});
      const before = loaded();
      sp.loadModel({ weights: ${JSON.stringify(fixture)}, device: 'cpu' })
        .then((model) => sp.createServer({ model }).then((s) => { console.log(JSON.stringify({ before, after: loaded() })); return s.close(); }).then(() => model.dispose()));`;
    const r = runNode(['-e', script], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, timeout: 60000 });
    expect(r.status, r.stderr).to.equal(0);
    const { before, after } = JSON.parse(r.stdout.trim().split('\n').pop());
    expect(before, 'modules of fastify or prom-client loaded by require(sppnet)').to.equal(0);
    expect(after).to.be.above(10);
  });

  it('classifies a raw image body: top-k with labels, size and timing', async function () {
    const r = await srv.app.inject({ method: 'POST', url: '/v1/classify?topk=2', headers: { 'content-type': 'image/png' }, payload: await png(40, 30) });
    expect(r.statusCode, r.body).to.equal(200);
    const j = r.json();
    expect(j.results).to.have.length(1);
    expect(j.results[0].size).to.deep.equal([30, 40]);
    expect(j.results[0].top).to.have.length(2);
    expect(['a', 'b', 'c', 'd']).to.include(j.results[0].top[0].label);
    expect(j.timing.totalMs).to.be.a('number');
  });

  it('resizes to a shorter side of 256 by default (the paper\'s full-image view), aspect ratio kept', async function () {
    const s = await sp.createServer({ model });
    try {
      const r = await s.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: await png(40, 30) });
      expect(r.statusCode, r.body).to.equal(200);
      expect(r.json().results[0].size).to.deep.equal([256, 341]);
    } finally {
      await s.close();
    }
    let err;
    await sp.createServer({ model, shorterSide: 0 }).catch((e) => (err = e));
    expect(err.message).to.match(/createServer: options.shorterSide must be a positive integer or null/);
    expect(err.code).to.equal('SPPNET_INVALID_ARGUMENT');
  });

  it('heapGrowingPercent sets V8\'s heap growing factor for the process (sppnet serve: 300), and is checked', async function () {
    this.timeout(60000);
    // In a child (the flag is process-wide), traced: V8 states the limit it sets at each full GC
    // and the factor it used ("new limit: N KB (factor)").
    // 50 (factor 1.5), which V8 does not choose itself here: allocating this fast it picks its
    // largest, 4.
    const dist = path.join(__dirname, '..', 'dist');
    const script = `const sp = require(${JSON.stringify(dist)});
      (async () => {
        const model = await sp.loadModel({ weights: ${JSON.stringify(fixture)} });
        const s = await sp.createServer({ model, heapGrowingPercent: 50 });
        let keep = [];
        for (let i = 0; i < 2e6; i++) { keep.push({ i }); if (keep.length > 3e5) keep = []; }
        await s.close(); model.dispose(); console.log('done');
      })();`;
    const r = runNode(['--trace-gc-verbose', '-e', script], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, timeout: 50000 });
    expect(r.status, r.stderr).to.equal(0);
    const factors = [...r.stdout.matchAll(/\[HeapController\] Limit: .* new limit: \d+ KB \(([\d.]+)\)/g)].map((m) => Number(m[1]));
    expect(factors.length, 'no full GC traced').to.be.greaterThan(0);
    expect(factors.at(-1)).to.equal(1.5);
    for (const bad of [-1, 1.5, '300', 1001]) {
      let err;
      await sp.createServer({ model, heapGrowingPercent: bad }).catch((e) => (err = e));
      expect(err && err.message, String(bad)).to.match(/createServer: options.heapGrowingPercent must be an integer from 0 to 1000, got/);
      expect(err.code).to.equal('SPPNET_INVALID_ARGUMENT');
    }
  });

  it('normalises images with the mean and std it is given (default ImageNet\'s), as sp.readImage does', async function () {
    const img = await png(40, 30, 77);
    const scores = async (norm) => {
      const s = await sp.createServer({ model, labels: ['a', 'b', 'c', 'd'], shorterSide: null, topk: 4, ...norm });
      try {
        const r = await s.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: img });
        expect(r.statusCode, r.body).to.equal(200);
        return Object.fromEntries(r.json().results[0].top.map((t) => [t.label, t.score]));
      } finally {
        await s.close();
      }
    };
    const norm = { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
    // The same image through sp.readImage with that normalisation, through the model directly.
    const x = await sp.readImage(img, norm);
    const logits = await model.run([x]);
    const l = Array.from(await logits.data());
    const mx = Math.max(...l);
    const e = l.map((v) => Math.exp(v - mx));
    const z = e.reduce((a, b) => a + b, 0);
    const want = Object.fromEntries(['a', 'b', 'c', 'd'].map((k, i) => [k, e[i] / z]));
    x.dispose();
    logits.dispose();
    const got = await scores(norm);
    for (const k of Object.keys(want)) expect(got[k], k).to.be.closeTo(want[k], 1e-4);
    const imagenet = await scores({});
    expect(Object.keys(want).some((k) => Math.abs(imagenet[k] - want[k]) > 1e-4)).to.equal(true);
    let err;
    await sp.createServer({ model, std: [1, 0, 1] }).catch((e2) => (err = e2));
    expect(err.message).to.match(/createServer: options.std must be 3 finite numbers > 0/);
    expect(err.code).to.equal('SPPNET_INVALID_ARGUMENT');
  });

  it('classifies several multipart images of different sizes in one request, and concurrent requests share batches', async function () {
    const m = multipart([await png(40, 30), await png(17, 60, 10), await png(25, 25, 90)]);
    const r = await srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': m.type }, payload: m.body });
    expect(r.statusCode, r.body).to.equal(200);
    expect(r.json().results.map((x) => x.size)).to.deep.equal([[30, 40], [60, 17], [25, 25]]);
    const before = srv.runner.stats().batches;
    const rs = await Promise.all(Array.from({ length: 6 }, async (_, i) => srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: await png(20 + i, 30, 20 * i) })));
    rs.forEach((x) => expect(x.statusCode).to.equal(200));
    expect(srv.runner.stats().batches - before).to.be.below(6);
  });

  it('takes JSON tensors on /v1/logits', async function () {
    const data = Array.from({ length: 3 * 9 * 9 }, (_, i) => Math.sin(0.11 * i));
    const r = await srv.app.inject({ method: 'POST', url: '/v1/logits', payload: { data, shape: [3, 9, 9] } });
    expect(r.statusCode, r.body).to.equal(200);
    const expected = require('./fixtures/tiny-spp.expected.json').logits[0];
    r.json().logits.forEach((v, i) => expect(v).to.be.closeTo(expected[i], 1e-4));
    const bad = await srv.app.inject({ method: 'POST', url: '/v1/logits', payload: { data: [1, 2], shape: [3, 9] } });
    expect(bad.statusCode).to.equal(400);
    expect(bad.json().error).to.match(/^POST \/v1\/logits: shape must be \[C, H, W\]/);
  });

  it('answers 400 for a corrupt or missing image, 413 for one too large, and stays up', async function () {
    let r = await srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/jpeg' }, payload: Buffer.from('not a jpeg at all') });
    expect(r.statusCode).to.equal(400);
    expect(r.json().error).to.match(/image 0: cannot decode .*unsupported image format/);
    r = await srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: await png(1200, 1000) });
    expect(r.statusCode).to.equal(413);
    expect(r.json().code).to.equal('SPPNET_TOO_LARGE');
    expect(r.json().error).to.match(/^POST \/v1\/classify: the images \(1200x1000\) hold 1200000 pixels \(1\.2 MP\), more than maxPixels 1000000 \(1 MP\)$/);
    r = await srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: await png(3, 3) });
    expect(r.statusCode).to.equal(400);
    expect(r.json().error).to.match(/smaller than tiny-spp's minimum/);
    r = await srv.app.inject({ method: 'POST', url: '/v1/classify?topk=0', headers: { 'content-type': 'image/png' }, payload: await png(30, 30) });
    expect(r.statusCode).to.equal(400);
    r = await srv.app.inject({ method: 'GET', url: '/healthz' });
    expect(r.json()).to.deep.equal({ status: 'ok' });
  });

  it('serves readiness and Prometheus metrics', async function () {
    expect((await srv.app.inject({ method: 'GET', url: '/readyz' })).json().status).to.equal('ready');
    const m = (await srv.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(m).to.match(/^sppnet_requests_total\{route="\/v1\/classify",code="200"\} \d+$/m);
    expect(m).to.match(/^sppnet_requests_total\{route="\/v1\/classify",code="400"\} \d+$/m);
    expect(m).to.match(/^sppnet_request_duration_seconds_bucket\{le="\+Inf",route="\/v1\/classify"\} \d+$/m);
    expect(m).to.match(/^sppnet_queue_depth 0$/m);
    expect(m).to.match(/^sppnet_in_flight_requests 0$/m); // /metrics itself is not admission-controlled
    expect(m).to.match(/^sppnet_batch_size_count [1-9]\d*$/m);
    expect(m).to.match(/^sppnet_batch_pixels_count [1-9]\d*$/m);
    expect(m).to.match(/^sppnet_batches_total [1-9]\d*$/m);
    expect(m).to.match(/^sppnet_device_memory_bytes \d+$/m);
    expect(m).to.match(/^sppnet_rejected_total\{reason="too_large"\} [1-9]\d*$/m);
    // prom-client's default process metrics, event-loop delay among them.
    expect(m).to.match(/^process_resident_memory_bytes \d+$/m);
    expect(m).to.match(/^nodejs_eventloop_lag_p99_seconds [\d.e-]+$/m);
    // The activation buffers, where sp.memory() reports them.
    if (typeof sp.memory().activationBytes === 'number') expect(m).to.match(/^sppnet_activation_bytes \d+$/m);
  });

  it('overload gets 503 with retry-after', async function () {
    const small = await sp.createServer({ model, maxBatchSize: 1, maxQueueDelayMs: 200, maxQueueLength: 1, shorterSide: null });
    const img = await png(30, 30);
    const rs = await Promise.all(Array.from({ length: 5 }, () => small.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: img })));
    const codes = rs.map((r) => r.statusCode).sort();
    expect(codes).to.include(200);
    expect(codes).to.include(503);
    const over = rs.find((r) => r.statusCode === 503);
    expect(over.headers['retry-after']).to.equal('1');
    expect(over.json().code).to.equal('SPPNET_QUEUE_FULL');
    expect(over.json().error).to.match(/^POST \/v1\/classify: 1 requests are in flight, maxQueueLength 1; retry later$/);
    await small.close();
  });

  it('npx sppnet serve: a real server on loopback finishes the request in flight on SIGTERM', async function () {
    this.timeout(60000);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-serve-'));
    const { child, url, output } = await startServe(['--weights', fixture, '--port', '0', '--max-delay', '300']);
    // The request waits ~300 ms in the batching queue; SIGTERM arrives meanwhile.
    const pending = fetch(`${url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: await png(30, 30) });
    await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGTERM');
    const res = await pending;
    expect(res.status).to.equal(200);
    expect((await res.json()).results).to.have.length(1);
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).to.equal(0);
    expect(output()).to.match(/SIGTERM: finishing requests in flight/);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
