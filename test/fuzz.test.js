'use strict';
// Bounded, seeded fuzzing of what a hostile user controls: safetensors bytes, image bytes, HTTP
// requests. Each input must give a result that is valid, or an SppnetError with a code (never
// another exception type, a hang or a crash), and the HTTP service must answer every request with
// a 4xx/503 carrying an error code, never a 5xx from a bug, and keep serving afterwards.
// A few seconds in npm test; SPPNET_FUZZ_ITERATIONS=N (and SPPNET_FUZZ_SEED) for a longer run.
const { expect } = require('chai');
const path = require('path');
const sharp = require('sharp');
const { sp } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');

const ITER = Number(process.env.SPPNET_FUZZ_ITERATIONS || 0) || null;
const seedOf = () => Number(process.env.SPPNET_FUZZ_SEED || 0) || freshSeed();

// Mutations of a byte string, drawn from r: flips, overwrites with interesting values,
// truncation, insertion, duplication of a slice, and splices of random bytes.
function mutate(r, bytes) {
  let b = Buffer.from(bytes);
  const n = r.int(1, 4);
  for (let k = 0; k < n; k++) {
    const at = b.length ? r.int(0, b.length - 1) : 0;
    switch (r.int(0, 6)) {
      case 0: if (b.length) b[at] ^= 1 << r.int(0, 7); break;
      case 1: if (b.length) b[at] = [0, 0xff, 0x7f, 0x80, 0x20, 0x22, 0x5b, 0x7b][r.int(0, 7)]; break;
      case 2: b = b.subarray(0, r.int(0, b.length)); break;
      case 3: b = Buffer.concat([b.subarray(0, at), Buffer.from(Array.from({ length: r.int(1, 16) }, () => r.int(0, 255))), b.subarray(at)]); break;
      case 4: { const len = r.int(1, Math.max(1, Math.min(64, b.length - at))); b = Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]); break; }
      case 5: if (b.length >= 8) b.writeUInt32LE(r.int(0, 0xffffffff), Math.min(at, b.length - 4)); break;
      default: b = Buffer.concat([b, Buffer.from(Array.from({ length: r.int(1, 32) }, () => r.int(0, 255)))]);
    }
  }
  return b;
}

// An SppnetError with a code, or a failure naming the input.
function expectSppnetError(e, label) {
  if (!(e instanceof sp.SppnetError)) throw new Error(`${label}: threw ${e && e.constructor && e.constructor.name}: ${e && e.message}`);
  expect(e.code, label).to.match(/^SPPNET_[A-Z_]+$/);
}

describe('fuzz', function () {
  this.timeout(300000);

  it('safetensors: mutated files and headers parse into consistent tensors or fail with an SppnetError', function () {
    const seed = seedOf();
    const r = rng(seed);
    const valid = () => {
      const t = {};
      for (let i = 0, n = r.int(1, 4); i < n; i++) {
        const shape = Array.from({ length: r.int(0, 3) }, () => r.int(0, 5));
        t[`w${i}`] = { shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r.next() * 2 - 1) };
      }
      return sp.encodeSafetensors(t, r.int(0, 1) ? { arch: 'zf5', note: 'x'.repeat(r.int(0, 40)) } : undefined);
    };
    // Headers written by hand: the JSON's fields wrong in every way the format allows.
    const header = (obj, pad = 0) => {
      const json = Buffer.from(JSON.stringify(obj) + ' '.repeat(pad));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([len, json, Buffer.alloc(r.int(0, 64))]);
    };
    const weird = [
      () => header({ a: { dtype: 'F32', shape: [2 ** 31, 2 ** 31], data_offsets: [0, 16] } }),
      () => header({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }),
      () => header({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }),
      () => header({ a: { dtype: 'F32', shape: [4], data_offsets: [8, 4] } }),
      () => header({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 2 ** 53] } }),
      () => header({ a: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }),
      () => header({ a: { dtype: 'F16', shape: [3], data_offsets: [0, 5] } }),
      () => header({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }),
      () => header({ a: { dtype: 'F32', shape: 'big', data_offsets: [0, 4] } }),
      () => header({ a: 7 }),
      () => header([1, 2, 3]),
      () => header({ __metadata__: { k: 5 } }),
      () => header({ __metadata__: 'x' }),
      () => header({ ['\u0000'.repeat(3)]: { dtype: 'F32', shape: [], data_offsets: [0, 4] } }, r.int(0, 5)),
      () => { const b = header({}); b.writeBigUInt64LE(2n ** 63n); return b; },
      () => { const b = header({}); b.writeBigUInt64LE(BigInt(b.length)); return b; },
      () => Buffer.alloc(r.int(0, 7)),
    ];
    const n = ITER || 600;
    let ok = 0, refused = 0;
    for (let i = 0; i < n; i++) {
      const input = i % 5 === 4 ? weird[r.int(0, weird.length - 1)]() : mutate(r, valid());
      const label = `seed ${seed} input ${i} (${input.length} bytes)`;
      let f;
      try {
        f = sp.parseSafetensors(input);
      } catch (e) {
        expectSppnetError(e, label);
        refused++;
        continue;
      }
      ok++;
      for (const [name, t] of f.tensors) {
        expect(t.data, `${label} ${name}`).to.be.instanceOf(Float32Array);
        expect(t.data.length, `${label} ${name}`).to.equal(t.shape.reduce((a, b) => a * b, 1));
      }
      for (const v of Object.values(f.metadata)) expect(v, label).to.be.a('string');
    }
    console.log(`      seed ${seed}: ${n} inputs, ${ok} parsed, ${refused} refused with an SppnetError`);
  });

  it('images: mutated PNG, JPEG and WebP bytes decode to [3, H, W] within the pixel limit or fail with an SppnetError', async function () {
    const seed = seedOf();
    const r = rng(seed);
    const make = async (fmt) => {
      const w = r.int(1, 40), h = r.int(1, 40);
      const raw = Buffer.from(Array.from({ length: w * h * 3 }, () => r.int(0, 255)));
      const img = sharp(raw, { raw: { width: w, height: h, channels: 3 } });
      return fmt === 'png' ? img.png().toBuffer() : fmt === 'jpeg' ? img.jpeg().toBuffer() : img.webp().toBuffer();
    };
    const seeds = await Promise.all(['png', 'jpeg', 'webp', 'png', 'jpeg', 'webp'].map(make));
    // A PNG header claiming 50000 x 50000 (a decompression bomb's shape) with valid CRCs.
    const bomb = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000' } }).png().toBuffer();
    const { crc32 } = require('zlib');
    if (typeof crc32 === 'function') {
      bomb.writeUInt32BE(50000, 16);
      bomb.writeUInt32BE(50000, 20);
      bomb.writeUInt32BE(crc32(bomb.subarray(12, 29)) >>> 0, 29);
    }
    const maxPixels = 1_000_000;
    const n = ITER ? Math.ceil(ITER / 4) : 150;
    let ok = 0, refused = 0;
    for (let i = 0; i < n; i++) {
      const input = i === 0 ? bomb : mutate(r, seeds[r.int(0, seeds.length - 1)]);
      const label = `seed ${seed} image ${i} (${input.length} bytes)`;
      let t;
      try {
        t = await sp.readImage(new Uint8Array(input), { maxPixels, device: 'cpu', ...(r.int(0, 2) === 0 ? { shorterSide: r.int(1, 64) } : {}) });
      } catch (e) {
        expectSppnetError(e, label);
        refused++;
        continue;
      }
      ok++;
      expect(t.shape.length, label).to.equal(3);
      expect(t.shape[0], label).to.equal(3);
      expect(t.shape[1] * t.shape[2], label).to.be.at.most(maxPixels);
      t.dispose();
    }
    console.log(`      seed ${seed}: ${n} images, ${ok} decoded, ${refused} refused with an SppnetError`);
  });

  describe('HTTP service', function () {
    let model, srv;
    before(async () => {
      model = await sp.loadModel({ weights: path.join(__dirname, 'fixtures', 'tiny-spp.safetensors'), device: 'cpu' });
      srv = await sp.createServer({ model, maxBatchSize: 4, maxQueueDelayMs: 2, maxPixels: 1_000_000, bodyLimit: 256 * 1024 });
    });
    after(async () => {
      await srv.close();
      model.dispose();
    });

    it('mutated requests get a 4xx or 503 with an error code, never a 5xx, and the service keeps answering', async function () {
      const seed = seedOf();
      const r = rng(seed);
      const png = await sharp({ create: { width: 24, height: 20, channels: 3, background: '#3a7' } }).png().toBuffer();
      const boundary = 'sppnetfuzz';
      const part = (body, type = 'image/png', name = 'image') =>
        Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="a"\r\nContent-Type: ${type}\r\n\r\n`), body, Buffer.from('\r\n')]);
      const multipartBody = (parts) => Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`)]);
      const jsonBody = () => {
        const shape = [r.int(-1, 4), r.int(0, 9), r.int(0, 9)].slice(0, r.int(0, 3));
        const data = r.int(0, 3) === 0 ? 'x' : Array.from({ length: r.int(0, 300) }, () => (r.int(0, 20) === 0 ? null : r.next()));
        return Buffer.from(JSON.stringify(r.int(0, 4) === 0 ? [data] : { data, shape }));
      };
      const requests = [
        () => ({ url: '/v1/classify', type: 'image/png', body: mutate(r, png) }),
        () => ({ url: `/v1/classify?topk=${['-1', '0', '1e9', 'abc', '3', ''][r.int(0, 5)]}`, type: 'image/png', body: png }),
        () => ({ url: '/v1/classify', type: `multipart/form-data; boundary=${boundary}`, body: mutate(r, multipartBody([part(png), part(png)])) }),
        () => ({ url: '/v1/classify', type: `multipart/form-data; boundary=${boundary}`, body: multipartBody(Array.from({ length: r.int(0, 40) }, () => part(png))) }),
        () => ({ url: '/v1/classify', type: ['text/plain', 'application/json', 'image/gif', 'application/octet-stream'][r.int(0, 3)], body: mutate(r, png) }),
        () => ({ url: '/v1/logits', type: 'application/json', body: r.int(0, 1) ? jsonBody() : mutate(r, jsonBody()) }),
        () => ({ url: '/v1/classify', type: 'image/png', body: Buffer.alloc(r.int(300, 600) * 1024) }),
        () => ({ url: ['/v1/nope', '/v1/classify/..', '/%00', '/metrics?x=%ff'][r.int(0, 3)], type: 'image/png', body: png }),
      ];
      const n = ITER ? Math.ceil(ITER / 4) : 120;
      const statuses = {};
      for (let i = 0; i < n; i++) {
        const q = requests[r.int(0, requests.length - 1)]();
        const res = await srv.app.inject({ method: 'POST', url: q.url, headers: { 'content-type': q.type }, payload: q.body });
        statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
        const label = `seed ${seed} request ${i} to ${q.url} (${q.type}, ${q.body.length} bytes): ${res.statusCode} ${res.body.slice(0, 300)}`;
        expect(res.statusCode === 200 || (res.statusCode >= 400 && res.statusCode < 500) || res.statusCode === 503, label).to.equal(true);
        if (res.statusCode !== 200) {
          let body;
          try {
            body = JSON.parse(res.body);
          } catch {
            throw new Error(`${label}: the error body is not JSON`);
          }
          expect(body.error || body.message, label).to.be.a('string');
        }
      }
      console.log(`      seed ${seed}: ${n} requests, statuses ${JSON.stringify(statuses)}`);
      const good = await srv.app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: png });
      expect(good.statusCode, good.body).to.equal(200);
    });
  });
});
