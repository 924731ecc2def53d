'use strict';
// The service against the hostile client of issue 12: decompression bombs (a 5900x5900 PNG of
// ~110 KB, a 4000x3000 JPEG of ~70 KB) answered resized with the server's memory bounded (read
// from /proc in a server process of its own) while others are still answered; two of them in one
// request refused from their headers; multipart that cannot pass the body limit; /metrics that
// counts every response, fastify's own refusals included; 503 with Retry-After when the queue, the
// pixel budget or memory is full; timeouts and clients that go away cancel queued work.
// Bounds, not timings (a busy 2-core machine): the only times asserted are generous ones.
const { expect } = require('chai');
const { fork } = require('child_process');
const { send } = require('./support/http');
const path = require('path');
const sharp = require('sharp');
const { sp } = require('./support/helpers');

const fixture = path.join(__dirname, 'fixtures', 'tiny-spp.safetensors');
const MiB = 2 ** 20;
const png = (w, h, r = 200) => sharp({ create: { width: w, height: h, channels: 3, background: { r, g: 40, b: 90 } } }).png().toBuffer();

// A flat image compresses to almost nothing: the bombs of the issue.
let bombs;
async function makeBombs() {
  if (!bombs) {
    const flat = (w, h) => sharp({ create: { width: w, height: h, channels: 3, background: { r: 120, g: 30, b: 200 } } });
    const [bigPng, bigJpeg] = await Promise.all([flat(5900, 5900).png({ compressionLevel: 9 }).toBuffer(), flat(4000, 3000).jpeg().toBuffer()]);
    bombs = { bigPng, bigJpeg };
  }
  return bombs;
}

function multipart(files, name = 'image') {
  const boundary = '----sppnet' + Math.random().toString(16).slice(2);
  const parts = files.map((buf, i) => Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="${i}.png"\r\nContent-Type: image/png\r\n\r\n`),
    buf, Buffer.from('\r\n'),
  ]));
  return { body: Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`)]), type: `multipart/form-data; boundary=${boundary}` };
}

describe('HTTP service against hostile clients (issue 12)', function () {
  this.timeout(120000);
  let model;
  before(async () => (model = await sp.loadModel({ weights: fixture, device: 'cpu' })));
  after(() => model.dispose());

  describe('bounded work per request', function () {
    let srv, url;
    before(async () => {
      srv = await sp.createServer({ model, bodyLimit: 256 * 1024, maxFiles: 4 });
      url = await srv.app.listen({ port: 0, host: '127.0.0.1' });
    });
    after(() => srv.close());

    it('two 5900x5900 PNGs in one request are refused from their headers: 413 naming maxPixels, nothing decoded', async function () {
      const { bigPng } = await makeBombs();
      const m = multipart([bigPng, bigPng]);
      const rss0 = process.memoryUsage.rss();
      const t0 = Date.now();
      const r = await send(`${url}/v1/classify`, { headers: { 'content-type': m.type }, body: m.body });
      expect(r.status, r.body).to.equal(413);
      expect(r.json.code).to.equal('SPPNET_TOO_LARGE');
      expect(r.json.error).to.equal('POST /v1/classify: the images (5900x5900 + 5900x5900) hold 69620000 pixels (69.6 MP), more than maxPixels 36000000 (36 MP)');
      expect(Date.now() - t0).to.be.below(10000); // a header read each (generous: milliseconds on an idle machine)
      expect(process.memoryUsage.rss() - rss0).to.be.below(200 * MiB); // decoding one would take 104 MB of pixels
      expect(srv.runner.stats().requests).to.equal(0);
    });

    it('kept as sent (shorterSide: null), a bomb meets the model\'s pixel budget: 413 naming maxBatchPixels', async function () {
      const { bigPng } = await makeBombs();
      const s = await sp.createServer({ model, shorterSide: null });
      try {
        const r = await s.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: bigPng });
        expect(r.statusCode, r.body).to.equal(413);
        expect(r.json().error).to.equal('POST /v1/classify: the request\'s images have 34810000 pixels (34.8 MP), more than maxBatchPixels 4000000 (4 MP)');
      } finally {
        await s.close();
      }
    });

    it('multipart cannot pass bodyLimit: all parts together, with or without Content-Length', async function () {
      const part = Buffer.alloc(100 * 1024, 7); // bytes are counted before anything is decoded
      for (const chunked of [false, true]) {
        const m = multipart([part, part, part]);
        const r = await send(`${url}/v1/classify`, { headers: { 'content-type': m.type }, body: m.body, chunked });
        expect(r.status, `chunked ${chunked}: ${r.body}`).to.equal(413);
        expect(r.json.code).to.equal('SPPNET_TOO_LARGE');
        expect(r.json.error).to.match(/^POST \/v1\/classify: the body has \d+ bytes \([\d.]+ KiB\), more than bodyLimit 262144 \(256 KiB\)$/);
      }
      // One file alone over the limit, and a raw body over it (fastify's own check, restated).
      const big = multipart([Buffer.alloc(300 * 1024, 1)]);
      let r = await send(`${url}/v1/classify`, { headers: { 'content-type': big.type }, body: big.body, chunked: true });
      expect(r.status).to.equal(413);
      expect(r.json.error).to.match(/more than bodyLimit 262144 \(256 KiB\)|larger than bodyLimit 262144/);
      r = await send(`${url}/v1/classify`, { headers: { 'content-type': 'image/png' }, body: Buffer.alloc(300 * 1024, 1) });
      expect(r.status).to.equal(413);
      expect(r.json).to.deep.equal({ error: 'POST /v1/classify: the body is larger than bodyLimit 262144 bytes (256 KiB)', code: 'FST_ERR_CTP_BODY_TOO_LARGE' });
      // More files than maxFiles.
      const tiny = await png(20, 20);
      const many = multipart([tiny, tiny, tiny, tiny, tiny]);
      r = await send(`${url}/v1/classify`, { headers: { 'content-type': many.type }, body: many.body });
      expect(r.status).to.equal(413);
      expect(r.json).to.deep.equal({ error: 'POST /v1/classify: more than maxFiles 4 files', code: 'FST_FILES_LIMIT' });
      // And the service still answers.
      r = await send(`${url}/v1/classify`, { headers: { 'content-type': 'image/png' }, body: tiny });
      expect(r.status, r.body).to.equal(200);
    });
  });

  describe('decompression bombs against ZF-5, in a server process of its own', function () {
    let child, url;
    const ask = (type) => new Promise((resolve) => {
      const on = (m) => {
        if (m.type === type) {
          child.off('message', on);
          resolve(m);
        }
      };
      child.on('message', on);
      child.send({ type });
    });
    before(async function () {
      this.timeout(180000);
      await makeBombs();
      child = fork(path.join(__dirname, 'support', 'serve-child.js'), [JSON.stringify({ arch: 'zf5' })], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      url = await new Promise((resolve, reject) => {
        child.once('message', (m) => resolve(m.url));
        child.once('exit', (code) => reject(new Error(`the server exited (${code})`)));
      });
      // Warm up: the model's first run takes its activation buffers for a 256-pixel image.
      const r = await send(`${url}/v1/classify`, { headers: { 'content-type': 'image/png' }, body: await png(300, 256) });
      expect(r.status, r.body).to.equal(200);
    });
    after(async () => {
      if (child && child.exitCode === null) {
        child.send({ type: 'exit' });
        await new Promise((r) => child.once('exit', r));
      }
    });

    for (const [name, key, size] of [['a 5900x5900 PNG', 'bigPng', [256, 256]], ['a 4000x3000 JPEG', 'bigJpeg', [256, 341]]]) {
      it(`${name} is answered resized, memory bounded, while a small request is still answered`, async function () {
        const body = bombs[key];
        const before = await ask('mem');
        await ask('resetPeak');
        const small = await png(320, 240, 30);
        const t0 = Date.now();
        const [big, other] = await Promise.all([
          send(`${url}/v1/classify`, { headers: { 'content-type': `image/${key === 'bigPng' ? 'png' : 'jpeg'}` }, body }),
          send(`${url}/v1/classify`, { headers: { 'content-type': 'image/png' }, body: small }),
        ]);
        const ms = Date.now() - t0;
        const after = await ask('mem');
        expect(big.status, big.body).to.equal(200);
        expect(big.json.results[0].size).to.deep.equal(size);
        expect(other.status, other.body).to.equal(200);
        const MB = (b) => (b / MiB).toFixed(0);
        console.log(`      ${name} (${(body.length / 1024).toFixed(0)} KB): ${ms} ms with a small request beside it; server RSS ${MB(before.rss)} MiB before, peak ${MB(after.peak)} MiB, ${MB(after.rss)} MiB after`);
        // Decoded at full size it would take 104 MB (PNG) or 36 MB (JPEG) of pixels and, through
        // ZF-5, gigabytes of activations (11 GB in the issue); resized, a few tens of MB.
        expect(after.peak - before.rss).to.be.below(400 * MiB);
        expect(after.rss - before.rss).to.be.below(300 * MiB);
        expect(ms).to.be.below(60000); // generous: about a second on an idle 2-core machine
      });
    }
  });

  describe('/metrics counts every response', function () {
    it('totals equal the responses sent, hostile ones included (404, 413, 415, 400 invalid JSON, 503)', async function () {
      const srv = await sp.createServer({ model, bodyLimit: 64 * 1024, maxJsonBytes: 8 * 1024, maxQueueLength: 2, maxQueueDelayMs: 300 });
      const url = await srv.app.listen({ port: 0, host: '127.0.0.1' });
      try {
        const img = await png(40, 30);
        const sent = [];
        const go = async (what, route, o) => {
          const r = await send(`${url}${what}`, o);
          sent.push({ route, code: String(r.status) });
          if (r.status !== 200) {
            // Every failure: a code, and a message naming the call.
            expect(r.json, r.body).to.have.all.keys('error', 'code');
            expect(r.json.error).to.match(/^(GET|POST) \/\S*: \S/);
          }
          return r;
        };
        await go('/v1/classify', '/v1/classify', { headers: { 'content-type': 'image/png' }, body: img });
        await go('/v1/classify', '/v1/classify', { headers: { 'content-type': 'image/png' }, body: Buffer.alloc(100 * 1024) }); // 413 fastify
        await go('/v1/classify', '/v1/classify', { headers: { 'content-type': 'image/png' }, body: Buffer.alloc(100 * 1024), chunked: true }); // 413 fastify, no length
        const m = multipart([Buffer.alloc(40 * 1024), Buffer.alloc(40 * 1024)]);
        await go('/v1/classify', '/v1/classify', { headers: { 'content-type': m.type }, body: m.body }); // 413 ours
        await go('/v1/classify', '/v1/classify', { headers: { 'content-type': 'application/xml' }, body: Buffer.from('<a/>') }); // 415
        await go('/v1/logits', '/v1/logits', { headers: { 'content-type': 'application/json' }, body: Buffer.from('{"data": [1, 2,') }); // 400 invalid JSON
        await go('/v1/logits', '/v1/logits', { headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify({ data: new Array(5000).fill(1), shape: [3, 40, 40] })) }); // 413 maxJsonBytes
        await go('/v1/classify', '/v1/classify', { headers: { 'content-type': 'image/png' }, body: Buffer.from('not a png') }); // 400
        await go('/v1/classify', '/v1/classify', { headers: { 'content-type': 'multipart/form-data' }, body: Buffer.from('xx') }); // 400: no boundary
        await go('/nowhere', 'unmatched', { method: 'GET' }); // 404
        await go('/v1/classify', 'unmatched', { method: 'GET' }); // 404: no GET route
        // Three at once with maxQueueLength 2 (they wait 300 ms for a batch): one 503.
        await Promise.all([0, 1, 2].map(() => go('/v1/classify', '/v1/classify', { headers: { 'content-type': 'image/png' }, body: img })));
        const codes = sent.map((s) => s.code).sort();
        expect(codes).to.include.members(['200', '400', '404', '413', '415', '503']);
        expect(codes.filter((c) => c === '413')).to.have.length(4);
        await new Promise((r) => setTimeout(r, 50)); // onResponse runs after the last byte is out
        const text = (await send(`${url}/metrics`, { method: 'GET' })).body;
        const counted = {};
        for (const [, route, code, n] of text.matchAll(/^sppnet_requests_total\{route="([^"]*)",code="(\d+)"\} (\d+)$/gm)) counted[`${route} ${code}`] = Number(n);
        const expected = {};
        for (const s of sent) expected[`${s.route} ${s.code}`] = (expected[`${s.route} ${s.code}`] ?? 0) + 1;
        expect(counted).to.deep.equal(expected);
        const durations = Number(text.match(/^sppnet_request_duration_seconds_count\{route="\/v1\/classify"\} (\d+)$/m)[1]);
        expect(durations).to.equal(sent.filter((s) => s.route === '/v1/classify').length);
        expect(text).to.match(/^sppnet_rejected_total\{reason="too_large"\} 4$/m);
        expect(text).to.match(/^sppnet_rejected_total\{reason="queue_full"\} 1$/m);
      } finally {
        await srv.close();
      }
    });
  });

  describe('overload: 503 with Retry-After at once', function () {
    it('when the queued pixels would pass maxQueuedPixels', async function () {
      const srv = await sp.createServer({ model, maxQueuedPixels: 100_000, maxQueueDelayMs: 300, retryAfterS: 3 });
      try {
        const img = await png(400, 300); // resized to 341x256 = 87,296 pixels
        const rs = await Promise.all([0, 1].map(() => srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: img })));
        const codes = rs.map((r) => r.statusCode).sort();
        expect(codes).to.deep.equal([200, 503]);
        const over = rs.find((r) => r.statusCode === 503);
        expect(over.headers['retry-after']).to.equal('3');
        expect(over.json()).to.deep.equal({ error: 'POST /v1/classify: the service holds 87296 pixels of admitted images; 87296 more would pass maxQueuedPixels 100000 (0.1 MP); retry later', code: 'SPPNET_QUEUE_FULL' });
        const m = (await srv.app.inject({ method: 'GET', url: '/metrics' })).body;
        expect(m).to.match(/^sppnet_queued_pixels 0$/m);
        expect(m).to.match(/^sppnet_rejected_total\{reason="queued_pixels"\} 1$/m);
      } finally {
        await srv.close();
      }
    });

    it('when memory is over maxRssBytes: inference refused, health and metrics still answered, not ready', async function () {
      const srv = await sp.createServer({ model, maxRssBytes: 1024 * 1024 });
      try {
        await new Promise((r) => setTimeout(r, 400)); // @fastify/under-pressure samples every 250 ms
        const r = await srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: await png(30, 30) });
        expect(r.statusCode).to.equal(503);
        expect(r.headers['retry-after']).to.equal('1');
        expect(r.json().code).to.equal('SPPNET_OUT_OF_MEMORY');
        expect(r.json().error).to.match(/^POST \/v1\/classify: the service holds \d+ bytes of memory \([\d.]+ MiB\), more than maxRssBytes 1048576 \(1 MiB\); retry later$/);
        expect((await srv.app.inject({ method: 'GET', url: '/healthz' })).statusCode).to.equal(200);
        expect((await srv.app.inject({ method: 'GET', url: '/metrics' })).statusCode).to.equal(200);
        const ready = await srv.app.inject({ method: 'GET', url: '/readyz' });
        expect(ready.statusCode).to.equal(503);
        expect(ready.json().status).to.equal('under pressure');
      } finally {
        await srv.close();
      }
    });

    it('a timeout cancels queued work: 503 SPPNET_TIMEOUT, and the queue is empty again', async function () {
      const srv = await sp.createServer({ model, timeoutMs: 300, maxQueueDelayMs: 5000 });
      try {
        const t0 = Date.now();
        const r = await srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: await png(30, 30) });
        expect(r.statusCode, r.body).to.equal(503);
        expect(r.headers['retry-after']).to.equal('1');
        expect(r.json().code).to.be.oneOf(['SPPNET_TIMEOUT', 'FST_ERR_HANDLER_TIMEOUT']);
        expect(Date.now() - t0).to.be.below(4000); // well before the batch would have gone
        await new Promise((r2) => setTimeout(r2, 400));
        const st = srv.runner.stats();
        expect(st.queued).to.equal(0);
        expect(st.batches).to.equal(0);
      } finally {
        await srv.close();
      }
    });

    it('a client that goes away cancels its queued work', async function () {
      const srv = await sp.createServer({ model, maxQueueDelayMs: 3000 });
      const url = await srv.app.listen({ port: 0, host: '127.0.0.1' });
      try {
        const r = await send(`${url}/v1/classify`, { headers: { 'content-type': 'image/png' }, body: await png(30, 30), abortAfterMs: 300 });
        expect(r.status).to.equal('aborted');
        for (let i = 0; i < 50 && srv.runner.stats().rejected.aborted === 0; i++) await new Promise((r2) => setTimeout(r2, 20));
        const st = srv.runner.stats();
        expect(st.rejected.aborted).to.equal(1);
        expect(st.queued).to.equal(0);
        expect(st.batches).to.equal(0);
      } finally {
        await srv.close();
      }
    });

    it('requests waiting for decodes are answered by their time, not after the decodes ahead of them', async function () {
      // One decode at a time; a request of eight bombs (34.8 MP each, ~0.1 s each to decode) and a
      // tiny image after it. Fastify's handlerTimeout never fires over a real connection on Node
      // 20: the waits have their own deadline, so the bombs still waiting leave at the first
      // request's time (503 SPPNET_TIMEOUT), and the tiny image is answered by its own (200 if it
      // got its turn in time, else 503 SPPNET_TIMEOUT), not after eight decodes.
      const { bigPng } = await makeBombs();
      const srv = await sp.createServer({ model, maxConcurrentDecodes: 1, timeoutMs: 150, maxPixels: 300_000_000 });
      const url = await srv.app.listen({ port: 0, host: '127.0.0.1' });
      try {
        const m = multipart(Array(8).fill(bigPng));
        const a = send(`${url}/v1/classify`, { headers: { 'content-type': m.type }, body: m.body });
        // a's pixels are held just before its decodes are queued
        const held = async () => Number((await srv.app.inject({ method: 'GET', url: '/metrics' })).body.match(/^sppnet_queued_pixels (\d+)/m)[1]) > 0;
        for (let i = 0; i < 500 && !(await held()); i++) await new Promise((r) => setTimeout(r, 2));
        const t0 = Date.now();
        const b = await send(`${url}/v1/classify`, { headers: { 'content-type': 'image/png' }, body: await png(30, 30) });
        const ms = Date.now() - t0;
        // its deadline's (at a decode wait) or, where it got its turn just in time, the runner's
        if (b.status !== 200) expect(b.json.code, b.body).to.equal('SPPNET_TIMEOUT');
        expect(ms, `${b.status}`).to.be.below(450);
        const ra = await a;
        expect(ra.status, ra.body).to.equal(503);
        expect(ra.json.code).to.equal('SPPNET_TIMEOUT');
        const metrics = (await srv.app.inject({ method: 'GET', url: '/metrics' })).body;
        expect(Number(metrics.match(/sppnet_rejected_total\{reason="timeout"\} (\d+)/)[1])).to.be.at.least(1);
      } finally {
        await srv.close();
      }
    });
  });
});
