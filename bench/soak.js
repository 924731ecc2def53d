#!/usr/bin/env node
'use strict';
// Soak test of the HTTP service as deployed: `sppnet serve` in a child process, fed for N minutes
// with a mix of valid images and hostile requests (decompression bombs, two bombs in one
// multipart body, truncated multipart, bodies over the limit, wrong types, bad JSON, huge tensor
// shapes) by a few concurrent clients, while the server's RSS, the valid requests' latency and the
// answers' statuses are sampled every second.
//
//   node bench/soak.js [--minutes M | --seconds S] [--arch zf5|convnet5|overfeat5|tiny] [--clients N]
//                      [--hostile F] [--out DIR] [--seed N]
//
// Exits non-zero, saying why, on: the server dying or /healthz failing; any 5xx other than a 503;
// more than 2% of valid requests not answered 200 (503s included: the load is meant to be
// sustainable); or memory growth (the median RSS of the last fifth of the run more than 25% and
// 200 MB above that of the second fifth); or /metrics disagreeing with the answers the clients
// got (sppnet_requests_total by route and code, read after the run, against every answer
// received, /healthz probes included; connections that ended without an answer make a bound, not
// an equality). Writes DIR/soak.json (default bench/out): per-second
// samples and the verdict. Defaults: 5 minutes, zf5 with random weights, 8 clients, 30% hostile.
const fs = require('fs');
const http = require('http');
const path = require('path');
const { spawn } = require('child_process');
const sharp = require('sharp');
const { parseArgs, headerText, percentile, writeResults } = require('./common');

const OPTIONS = [
  { name: 'minutes', type: 'number', key: 'seconds', map: (m) => 60 * m, arg: 'M', help: 'how long to run, in minutes (default: 5)' },
  { name: 'seconds', type: 'number', default: 300, arg: 'S', help: 'how long to run, in seconds' },
  { name: 'arch', type: 'string', default: 'zf5', arg: 'NAME', help: 'the served network, random weights (tiny: the test fixture)' },
  { name: 'clients', type: 'int', default: 8, help: 'concurrent clients' },
  { name: 'hostile', type: 'number', min: 0, max: 1, default: 0.3, arg: 'F', help: 'the share of hostile requests' },
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), arg: 'DIR', help: 'where soak.json goes' },
  { name: 'seed', type: 'int', min: 0, default: 1, help: 'seed of the request mix' },
];

let seed = 1;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

// ---- inputs ----
async function makeInputs() {
  const noise = async (w, h, fmt) => {
    const raw = Buffer.alloc(w * h * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = int(0, 255);
    const img = sharp(raw, { raw: { width: w, height: h, channels: 3 } });
    return fmt === 'png' ? img.png().toBuffer() : img.jpeg({ quality: 85 }).toBuffer();
  };
  const valid = [];
  for (let i = 0; i < 12; i++) valid.push({ body: await noise(int(64, 400), int(64, 400), i % 2 ? 'png' : 'jpeg'), type: i % 2 ? 'image/png' : 'image/jpeg' });
  const flat = (w, h, fmt) => {
    const img = sharp({ create: { width: w, height: h, channels: 3, background: { r: 90, g: 140, b: 60 } } });
    return fmt === 'png' ? img.png({ compressionLevel: 9 }).toBuffer() : img.jpeg().toBuffer();
  };
  const bomb = await flat(5900, 5900, 'png'); // ~100 KB that decodes to 104 MB of pixels
  const bigJpeg = await flat(4000, 3000, 'jpeg');
  const boundary = 'sppnetsoak';
  const part = (body, type) =>
    Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="x"\r\nContent-Type: ${type}\r\n\r\n`), body, Buffer.from('\r\n')]);
  const multipart = (parts) => ({ body: Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`)]), type: `multipart/form-data; boundary=${boundary}` });
  const two = multipart([part(bomb, 'image/png'), part(bomb, 'image/png')]);
  const okMulti = multipart([part(valid[0].body, valid[0].type), part(valid[1].body, valid[1].type)]);
  const hostile = [
    { name: 'bomb png 5900x5900', url: '/v1/classify', body: bomb, type: 'image/png' },
    { name: 'jpeg 4000x3000', url: '/v1/classify', body: bigJpeg, type: 'image/jpeg' },
    { name: 'two bombs in one multipart', url: '/v1/classify', ...two },
    { name: 'truncated multipart', url: '/v1/classify', body: okMulti.body.subarray(0, Math.floor(okMulti.body.length * 0.6)), type: okMulti.type },
    { name: 'body over the limit', url: '/v1/classify', body: Buffer.alloc(40 * 1024 * 1024, 7), type: 'image/png' },
    { name: 'wrong content type', url: '/v1/classify', body: valid[0].body, type: 'text/plain' },
    { name: 'not an image', url: '/v1/classify', body: Buffer.from('GIF89a garbage'.repeat(50)), type: 'image/png' },
    { name: 'invalid JSON', url: '/v1/logits', body: Buffer.from('{"data": [1, 2,'), type: 'application/json' },
    { name: 'huge tensor shape', url: '/v1/logits', body: Buffer.from(JSON.stringify({ data: [1, 2, 3], shape: [3, 100000, 100000] })), type: 'application/json' },
  ];
  return { valid: [...valid, { ...okMulti, multi: true }], hostile };
}

// ---- HTTP ----
function post(port, url, body, type) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.request({ host: '127.0.0.1', port, path: url, method: 'POST', headers: { 'content-type': type, 'content-length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
      res.on('error', () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    });
    req.on('error', (e) => resolve({ status: 0, error: e.code || e.message, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    req.end(body);
  });
}
/** GET url: { status (0: no answer), body }. */
function get(port, url, timeout = 5000) {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path: url, timeout }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', () => resolve({ status: 0, body: '' })).on('timeout', function () {
      this.destroy();
      resolve({ status: 0, body: '' });
    });
  });
}

const rssOf = (pid) => {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
};
const pct = percentile;
const median = (xs) => percentile(xs, 0.5);

async function main() {
  const o = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 2, 18) });
  seed = o.seed >>> 0 || 1;
  const inputs = await makeInputs();
  // 'tiny': the test fixture's network (a few kFLOP an image), for a smoke run.
  const modelArgs = o.arch === 'tiny' ? ['--weights', path.join(__dirname, '..', 'test', 'fixtures', 'tiny-spp.safetensors')] : ['--arch', o.arch, '--classes', '10'];
  const server = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'sppnet.js'), 'serve', ...modelArgs, '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SPPNET_DEVICE: process.env.SPPNET_DEVICE || 'cpu' },
  });
  let serverOut = '';
  let exited = null;
  server.stdout.on('data', (d) => (serverOut += d));
  server.stderr.on('data', (d) => (serverOut += d));
  server.on('exit', (code, signal) => (exited = { code, signal }));
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`the server did not start in 120 s:\n${serverOut}`)), 120000);
    const poll = setInterval(() => {
      const m = serverOut.match(/on http:\/\/[^:]+:(\d+)/);
      if (m || exited) {
        clearInterval(poll);
        clearTimeout(t);
        if (m) resolve(Number(m[1]));
        else reject(new Error(`the server exited at start (${JSON.stringify(exited)}):\n${serverOut}`));
      }
    }, 50);
  });
  console.log(`soak: ${o.arch} served by pid ${server.pid} on port ${port}; ${o.seconds} s, ${o.clients} clients, ${Math.round(o.hostile * 100)}% hostile`);

  const t0 = Date.now();
  const end = t0 + o.seconds * 1000;
  const samples = [];
  let window = { valid: [], validBad: 0, hostile: {}, fiveHundreds: 0 };
  const totals = { valid: 0, validBad: 0, hostile: {}, statuses: {}, fiveHundreds: [] };
  // Answers received, by the route label /metrics uses (the route's pattern) and status.
  const answered = {};
  const answer = (url, status) => {
    if (!status) return;
    const key = `${url.split('?')[0]} ${status}`;
    answered[key] = (answered[key] || 0) + 1;
  };
  const record = (kind, name, r, url) => {
    answer(url, r.status);
    totals.statuses[r.status] = (totals.statuses[r.status] || 0) + 1;
    if (r.status >= 500 && r.status !== 503) {
      window.fiveHundreds++;
      totals.fiveHundreds.push(`${name}: ${r.status}`);
    }
    if (kind === 'valid') {
      totals.valid++;
      if (r.status === 200) window.valid.push(r.ms);
      else (window.validBad++, totals.validBad++);
    } else {
      const h = (totals.hostile[name] = totals.hostile[name] || {});
      h[r.status] = (h[r.status] || 0) + 1;
    }
  };
  const client = async () => {
    while (Date.now() < end && !exited) {
      if (rnd() < o.hostile) {
        const h = inputs.hostile[int(0, inputs.hostile.length - 1)];
        record('hostile', h.name, await post(port, h.url, h.body, h.type), h.url);
      } else {
        const v = inputs.valid[int(0, inputs.valid.length - 1)];
        record('valid', 'valid', await post(port, '/v1/classify', v.body, v.type), '/v1/classify');
      }
    }
  };
  const sampler = setInterval(async () => {
    const health = (await get(port, '/healthz')).status;
    answer('/healthz', health);
    samples.push({
      t: (Date.now() - t0) / 1000, rss: rssOf(server.pid), health, valid: window.valid.length, validBad: window.validBad,
      p50: median(window.valid), p99: pct(window.valid, 0.99), fiveHundreds: window.fiveHundreds,
    });
    window = { valid: [], validBad: 0, hostile: {}, fiveHundreds: 0 };
  }, 1000);
  await Promise.all(Array.from({ length: o.clients }, client));
  clearInterval(sampler);
  await new Promise((r) => setTimeout(r, 1200)); // a /healthz probe still on its way
  // /metrics against the answers received: every response is counted once, hostile ones included.
  let metrics = null;
  if (!exited) {
    const { status, body: text } = await get(port, '/metrics', 10000);
    if (status === 200) {
      const counted = {};
      for (const [, route, code, n] of text.matchAll(/^sppnet_requests_total\{route="([^"]*)",code="(\d+)"\} (\d+)$/gm))
        if (route !== '/metrics') counted[`${route} ${code}`] = Number(n);
      const keys = [...new Set([...Object.keys(counted), ...Object.keys(answered)])].sort();
      const diff = keys.filter((k) => (counted[k] || 0) !== (answered[k] || 0)).map((k) => `${k}: ${counted[k] || 0} counted, ${answered[k] || 0} answered`);
      const sum = (o2) => Object.values(o2).reduce((a, b) => a + b, 0);
      metrics = { counted, answered, countedTotal: sum(counted), answeredTotal: sum(answered), unanswered: totals.statuses[0] || 0, diff };
    }
  }
  const died = exited;
  if (!died) server.kill('SIGTERM');
  await new Promise((r) => (exited ? r() : server.once('exit', r)));

  // ---- verdict ----
  const why = [];
  if (died) why.push(`the server died during the run: ${JSON.stringify(died)}`);
  const unhealthy = samples.filter((s) => s.health !== 200).length;
  if (unhealthy) why.push(`/healthz failed in ${unhealthy} of ${samples.length} samples`);
  if (totals.fiveHundreds.length) why.push(`${totals.fiveHundreds.length} 5xx answers other than 503, e.g. ${totals.fiveHundreds.slice(0, 3).join('; ')}`);
  if (totals.valid && totals.validBad / totals.valid > 0.02) why.push(`${totals.validBad} of ${totals.valid} valid requests were not answered 200`);
  const rss = samples.map((s) => s.rss).filter((x) => x !== null);
  const fifth = Math.floor(rss.length / 5);
  let growth = null;
  if (fifth >= 2) {
    const early = median(rss.slice(fifth, 2 * fifth)), late = median(rss.slice(4 * fifth));
    growth = { earlyMB: early / 2 ** 20, lateMB: late / 2 ** 20 };
    if (late > early * 1.25 && late - early > 200 * 2 ** 20) why.push(`memory grew: median RSS ${growth.earlyMB.toFixed(0)} MB in the second fifth, ${growth.lateMB.toFixed(0)} MB in the last`);
  }
  if (!died) {
    if (!metrics) why.push('/metrics could not be read after the run');
    // Exact unless some connections ended without an answer (each may or may not have been counted).
    else if (metrics.unanswered === 0 ? metrics.diff.length > 0 : metrics.countedTotal < metrics.answeredTotal || metrics.countedTotal > metrics.answeredTotal + metrics.unanswered)
      why.push(`/metrics disagrees with the answers received: ${metrics.diff.slice(0, 4).join('; ')} (${metrics.unanswered} connections ended without an answer)`);
  }
  const allValid = samples.flatMap((s) => (s.p99 === null ? [] : [s.p99]));
  const report = {
    options: o, seconds: (Date.now() - t0) / 1000, totals: { ...totals, fiveHundreds: totals.fiveHundreds.length },
    rssMB: { max: Math.max(...rss) / 2 ** 20, ...growth }, metrics, p99PerSecondMs: { median: median(allValid), max: pct(allValid, 1) },
    verdict: why.length ? 'FAIL' : 'ok', why, samples,
  };
  writeResults(o.out, 'soak', report);
  console.log(`valid: ${totals.valid} requests, ${totals.validBad} not 200; per-second p99 median ${report.p99PerSecondMs.median?.toFixed(0)} ms, max ${report.p99PerSecondMs.max?.toFixed(0)} ms`);
  console.log(`hostile: ${Object.entries(totals.hostile).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join('; ')}`);
  if (metrics) console.log(`/metrics: ${metrics.countedTotal} responses counted, ${metrics.answeredTotal} answers received (${metrics.unanswered} connections without an answer)${metrics.diff.length ? `; differ: ${metrics.diff.slice(0, 4).join('; ')}` : '; equal by route and code'}`);
  console.log(`server RSS: max ${report.rssMB.max.toFixed(0)} MB${growth ? `, median ${growth.earlyMB.toFixed(0)} MB (2nd fifth) -> ${growth.lateMB.toFixed(0)} MB (last fifth)` : ''}`);
  console.log(`soak: ${report.verdict}${why.length ? `: ${why.join('; ')}` : ''} (wrote ${path.join(o.out, 'soak.json')})`);
  process.exitCode = why.length ? 1 : 0;
}

main().catch((e) => {
  console.error(`soak: ${e.message}`);
  process.exit(2);
});
