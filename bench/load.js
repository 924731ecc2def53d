#!/usr/bin/env node
'use strict';
// Load test of the HTTP service (sp.createServer) on loopback: throughput, latency percentiles,
// errors, mean batch size, event-loop delay and memory at several concurrencies, with dynamic
// batching on (the server's defaults) and off (max batch size 1).
//
//   node bench/load.js [--quick | --smoke] [--arch small|zf5|tiny] [--connections 1,4,16,64]
//                      [--duration S] [--max-requests N] [--modes on,off] [--pool medium|mixed]
//                      [--no-gpu] [--out DIR]
//   node bench/load.js --bomb [--arch zf5] [--out DIR]
//
// Writes DIR/load-cpu.json and DIR/load-cpu.md (DIR defaults to bench/out), and, where sppnet runs
// on CUDA (sp.backend().device === 'cuda'), the same again on the GPU: load-gpu.{json,md}.
// --quick: 3 s a point (about 40 s in all); the default: 15 s a point (about 2 min); --smoke:
// the tiny test network, 2 connections, 0.5 s a point (a few seconds; for the test suite).
// --pool mixed: the medium pool plus large photos (up to 4000x3000), which the server resizes to
// its shorter side (256) before the model; the default pool is 160..330 px a side.
// --bomb: the decompression bombs of issue 12 instead (a flat 5900x5900 PNG of ~110 KB and a flat
// 4000x3000 JPEG of ~70 KB) sent to a server with its defaults while 4 connections keep sending
// pool images: the bomb's time, the server's RSS peak (VmHWM) and after, and the other requests'
// latencies and errors beside a baseline without the bomb -> DIR/bomb-cpu.{json,md}.
//
// The server runs in this process, listening on 127.0.0.1 port 0, with what `sppnet serve` sets
// beyond createServer's defaults (SERVE: V8's heap growing percent 300). The load comes from autocannon
// in a child process (bench/load_client.js), so its CPU time is not on the server's event loop
// and its memory is not in the server's RSS; on a 2-core machine both still share the cores.
// Each request POSTs one pre-encoded PNG or JPEG of a pool of mixed sizes (made with sharp from
// seeded random pixels: nothing downloaded) to /v1/classify as a raw body. A point ends after
// --duration seconds or --max-requests responses, whichever comes first.
const fs = require('fs');
const os = require('os');
const path = require('path');
const v8 = require('v8');
const { fork } = require('child_process');
const { monitorEventLoopDelay } = require('perf_hooks');
const sharp = require('sharp');
const sp = require('../dist');
const { parseArgs, headerText, failed, commandLine, machineInfo, writeResults, rng, mdTable, textTable, buildInfo } = require('./common');

/** What `sppnet serve` passes to createServer beyond its defaults (bin/sppnet.js, serveCmd). */
const SERVE = { heapGrowingPercent: require('../dist/serve/server').SERVE_HEAP_GROWING_PERCENT };

// ---------------------------------------------------------------------------------------------
// Options

const PRESETS = {
  full: { durationS: 15, maxRequests: 20000, connections: [1, 4, 16, 64], warmupS: 1.5 },
  quick: { durationS: 3, maxRequests: 5000, connections: [1, 4, 16, 64], warmupS: 1 },
  smoke: { durationS: 0.5, maxRequests: 500, connections: [2], warmupS: 0.2 },
};

// (A function: MODES and ARCHS come below.)
const options = () => [
  { name: 'quick', type: 'flag', key: 'preset', set: 'quick', default: 'full', help: '3 s a point (default: 15 s)' },
  { name: 'smoke', type: 'flag', key: 'preset', set: 'smoke', help: 'the tiny network, 2 connections, 0.5 s a point: a test of this script' },
  { name: 'arch', type: 'choice', choices: Object.keys(ARCHS), default: null, help: 'the served network (default: small; tiny with --smoke, zf5 with --bomb)' },
  { name: 'connections', type: 'ints', default: null, arg: 'N,N,...', help: 'the concurrencies (default: 1,4,16,64; 2 with --smoke)' },
  { name: 'duration', type: 'number', key: 'durationS', default: null, arg: 'S', help: 'seconds a point (default: by preset)' },
  { name: 'max-requests', type: 'int', default: null, help: 'responses a point at most (default: by preset)' },
  { name: 'modes', type: 'list', choices: Object.keys(MODES), default: ['on', 'off'], arg: 'on,off', help: 'batching on and/or off' },
  { name: 'pool', type: 'choice', choices: ['medium', 'mixed'], default: 'medium', help: 'mixed: add large photos the server resizes' },
  { name: 'bomb', type: 'flag', help: 'the decompression bombs of issue 12 instead -> bomb-cpu.{json,md}' },
  { name: 'no-gpu', type: 'flag', help: 'skip the GPU run where sppnet has CUDA' },
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), arg: 'DIR', help: 'where the results go' },
];

function parseOptions(argv) {
  const o = parseArgs(argv, options(), { usage: headerText(__filename, 2, 20) });
  const p = PRESETS[o.preset];
  o.arch = o.arch ?? (o.preset === 'smoke' ? 'tiny' : o.bomb ? 'zf5' : 'small');
  o.connections = o.connections ?? p.connections;
  o.durationS = o.durationS ?? p.durationS;
  o.maxRequests = o.maxRequests ?? p.maxRequests;
  o.warmupS = Math.min(p.warmupS, o.durationS);
  return o;
}

// Batching on: the server's defaults (createServer without batching options); off: one image
// per model call, every request runs alone.
const MODES = {
  on: { label: 'batching on (max 32, 2 ms)', server: {}, maxBatchSize: 32, maxQueueDelayMs: 2 },
  off: { label: 'batching off (max 1)', server: { maxBatchSize: 1 }, maxBatchSize: 1, maxQueueDelayMs: 2 },
};

// ---------------------------------------------------------------------------------------------
// Models and images

// ZF-5 (the paper's layout: 7x7/2 conv, LRN, pool, 5x5/2 conv, LRN, pool, three 3x3 convs, SPP
// {6,3,2,1}) with a quarter of its channels and 512-wide fc layers: 0.21 GFLOP at 224x224
// (conv 0.207 + fc 0.004), about 1/12 of ZF-5's 2.4, so that 2 cores serve tens of images a second.
function smallSpec(classes) {
  const conv = (name, out, kernel, stride = 1, padding = 0) => ({ type: 'conv', name, out, kernel, stride, padding, relu: true });
  const lrn = { type: 'lrn', size: 5, alpha: 1e-4, beta: 0.75, k: 2 };
  return {
    name: 'zf5-quarter',
    inChannels: 3,
    layers: [
      conv('conv1', 24, 7, 2, 1), lrn, { type: 'maxpool', kernel: 3, stride: 2, padding: 1 },
      conv('conv2', 64, 5, 2, 1), lrn, { type: 'maxpool', kernel: 3, stride: 2, padding: 0 },
      conv('conv3', 96, 3, 1, 1), conv('conv4', 96, 3, 1, 1), conv('conv5', 64, 3, 1, 1),
      { type: 'spp', levels: [...sp.DEFAULT_LEVELS], pool: 'max' },
      { type: 'fc', name: 'fc6', out: 512, relu: true },
      { type: 'fc', name: 'fc7', out: 512, relu: true },
      { type: 'fc', name: 'fc8', out: classes },
    ],
  };
}

// Image pools: [height, width] of each image, PNG and JPEG alternating.
const POOL_MEDIUM = [[224, 224], [180, 320], [320, 240], [256, 256], [160, 200], [288, 192], [200, 300], [240, 180],
  [224, 280], [300, 300], [192, 256], [176, 176], [256, 200], [210, 330], [320, 320], [168, 224]];
const POOL_TINY = [[24, 32], [40, 28], [32, 32], [48, 36], [20, 44], [36, 48], [30, 30], [44, 24]];
// --pool mixed: the medium pool with a quarter of large photos (PNG and JPEG alternating as above).
const POOL_MIXED = [...POOL_MEDIUM.slice(0, 12), [1080, 1920], [3000, 4000], [1200, 1600], [768, 1024]];

const ARCHS = {
  small: {
    load: (device) => sp.loadModel({ spec: smallSpec(10), seed: 1, device }),
    describe: (m) => `zf5-quarter (ZF-5's layout with a quarter of its channels, fc 512-512-${m.classes}; 0.21 GFLOP at 224x224; random weights, seed 1)`,
    pool: POOL_MEDIUM,
  },
  zf5: {
    load: (device) => sp.loadModel({ arch: 'zf5', classes: 1000, seed: 1, device }),
    describe: (m) => `ZF-5 SPP-net (sp.archSpec('zf5', ${m.classes}): conv1-5, SPP {6,3,2,1}, fc6-8; ~2.4 GFLOP at 224x224; random weights, seed 1)`,
    pool: POOL_MEDIUM,
  },
  tiny: {
    load: (device) => sp.loadModel({ weights: path.join(__dirname, '..', 'test', 'fixtures', 'tiny-spp.safetensors'), device }),
    describe: () => 'tiny-spp (the test fixture test/fixtures/tiny-spp.safetensors: 2 small convs, SPP {2,1}, 2 fc; a few kFLOP)',
    pool: POOL_TINY,
  },
};

/** Pre-encoded images of the pool's sizes: smooth colour fields, a few discs and some noise. */
async function makeImages(sizes, seed = 7) {
  const next = rng(seed);
  const out = [];
  for (let k = 0; k < sizes.length; k++) {
    const [h, w] = sizes[k];
    const px = Buffer.alloc(h * w * 3);
    const base = [next() * 255, next() * 255, next() * 255];
    const grad = [next() * 2 - 1, next() * 2 - 1, next() * 2 - 1];
    const discs = Array.from({ length: 3 }, () => ({ x: next() * w, y: next() * h, r: (0.1 + 0.25 * next()) * Math.min(h, w), c: [next() * 255, next() * 255, next() * 255] }));
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const d = discs.find((q) => (x - q.x) ** 2 + (y - q.y) ** 2 < q.r * q.r);
        for (let c = 0; c < 3; c++) {
          const v = d ? d.c[c] : base[c] + grad[c] * (x + y) * 0.5;
          px[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, v + (next() - 0.5) * 24));
        }
      }
    }
    const fmt = k % 2 === 0 ? 'png' : 'jpeg';
    const img = sharp(px, { raw: { width: w, height: h, channels: 3 } });
    const body = await (fmt === 'png' ? img.png() : img.jpeg({ quality: 85 })).toBuffer();
    out.push({ body, contentType: `image/${fmt}`, height: h, width: w });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers

// A forced GC for the before/after heap figures (the flag must be set before gc is looked up).
v8.setFlagsFromString('--expose-gc');
const gc = require('vm').runInNewContext('gc');

const MB = (b) => b / 2 ** 20;
function memNow() {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers };
}
/**
 * Samples memory every `ms` until stopped; keeps the peak of each field, and with `timeline`, a
 * sample every `timeline` ms ({ t: seconds since the start, rss, heapUsed, external }).
 */
function memWatch(ms = 100, timeline = 0) {
  const t0 = performance.now();
  const peak = memNow();
  const series = [];
  let lastT = -Infinity;
  const take = () => {
    const m = memNow();
    for (const k of Object.keys(peak)) peak[k] = Math.max(peak[k], m[k]);
    const t = performance.now() - t0;
    if (timeline && t - lastT >= timeline) {
      lastT = t;
      series.push({ t: +(t / 1e3).toFixed(2), rss: m.rss, heapUsed: m.heapUsed, external: m.external });
    }
  };
  take();
  const timer = setInterval(take, ms);
  return { peak, series, t0, stop: () => (clearInterval(timer), take(), peak) };
}

const EL_RESOLUTION_MS = 5;
/** Event-loop delay beyond the monitor's timer (ms): p50, p99, max. */
function loopDelay() {
  const h = monitorEventLoopDelay({ resolution: EL_RESOLUTION_MS });
  h.enable();
  return () => {
    h.disable();
    const f = (ns) => +Math.max(0, ns / 1e6 - EL_RESOLUTION_MS).toFixed(2);
    return { p50: f(h.percentile(50)), p99: f(h.percentile(99)), max: f(h.max), samples: h.count };
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Images and model calls of the runner between two stats() snapshots. */
function batchDelta(a, b) {
  let images = 0, calls = 0;
  for (const [s, c] of Object.entries(b.batchSizes)) {
    const d = c - (a.batchSizes[s] ?? 0);
    images += Number(s) * d;
    calls += d;
  }
  return {
    images, batches: calls, meanBatchSize: calls ? images / calls : null,
    rejected: { queueFull: b.rejected.queueFull - a.rejected.queueFull, timeout: b.rejected.timeout - a.rejected.timeout },
  };
}

// ---------------------------------------------------------------------------------------------
// The load generator (child process)

function startClient() {
  const child = fork(path.join(__dirname, 'load_client.js'), [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map();
  let seq = 0;
  let hello, loaded;
  const exited = new Promise((_, reject) => child.once('exit', (code) => {
    const e = new Error(`load client exited (${code})`);
    reject(e);
    for (const w of waiting.values()) w.reject(e);
  }));
  exited.catch(() => {});
  const helloP = new Promise((resolve) => child.on('message', (m) => {
    if (m.type === 'hello') resolve((hello = m));
    else if (m.type === 'ready') loaded?.();
    else if (m.type === 'result' || m.type === 'error') {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      if (m.type === 'result') w.resolve(m.result);
      else w.reject(new Error(`load client: ${m.message}`));
    }
  }));
  return {
    /** Sends the image pool; resolves with the child's hello (autocannon's version). */
    load: async (images) => {
      await Promise.race([helloP, exited]);
      const done = new Promise((r) => (loaded = r));
      child.send({ type: 'images', images: images.map((i) => ({ body: i.body, contentType: i.contentType })) });
      await Promise.race([done, exited]);
      return hello;
    },
    run: (o) => new Promise((resolve, reject) => {
      const id = ++seq;
      waiting.set(id, { resolve, reject });
      child.send({ type: 'run', id, ...o });
    }),
    close: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', resolve);
      child.send({ type: 'exit' });
    }),
  };
}

// ---------------------------------------------------------------------------------------------

/** One device's load test: every mode, every concurrency. */
async function loadTest(opt, device, images, client, log) {
  const arch = ARCHS[opt.arch];
  const model = await arch.load(device);
  const memory = { start: memNow() };
  const tensorsStart = sp.memory();
  const watchAll = memWatch(100, opt.preset === 'full' ? 500 : 250);
  const sinceStart = () => +((performance.now() - watchAll.t0) / 1e3).toFixed(2);
  const runs = [];
  for (const modeName of opt.modes) {
    const mode = MODES[modeName];
    const srv = await sp.createServer({ model, ...SERVE, ...mode.server });
    const address = await srv.app.listen({ port: 0, host: '127.0.0.1' });
    const url = `${address}/v1/classify?topk=1`;
    const timeoutS = 30;
    // Warm-up (not recorded): the model's activation buffers, fastify's and sharp's first calls.
    await client.run({ url, connections: 4, durationS: opt.warmupS, maxRequests: opt.maxRequests, timeoutS });
    if (!memory.afterWarmup) memory.afterWarmup = memNow();
    for (const c of opt.connections) {
      await sleep(200);
      const s0 = srv.runner.stats();
      const before = memNow();
      const watch = memWatch(100, 1000);
      const stopLoop = loopDelay();
      const startS = sinceStart();
      const r = await client.run({ url, connections: c, durationS: opt.durationS, maxRequests: opt.maxRequests, timeoutS });
      const eventLoopDelayMs = stopLoop();
      // Requests cut off when the point stopped may still be running: let them finish.
      for (let i = 0; i < 100 && (srv.runner.stats().queued > 0 || srv.runner.stats().running > 0); i++) await sleep(20);
      const peak = watch.stop();
      const after = memNow();
      const b = batchDelta(s0, srv.runner.stats());
      const run = {
        mode: modeName, modeLabel: mode.label, connections: c,
        reqPerS: r.reqPerS, okPerS: r.okPerS, latencyMs: r.latencyMs,
        completed: r.completed, ok: r.ok, non2xx: r.non2xx, errors: r.errors, timeouts: r.timeouts, statusCodes: r.statusCodes,
        startS, elapsedS: r.elapsedS, stoppedBy: r.stoppedBy,
        modelCalls: b.batches, images: b.images, meanBatchSize: b.meanBatchSize, rejected: b.rejected,
        eventLoopDelayMs, memory: { before, after, peak, timeline: watch.series },
        tensors: { count: sp.memory().tensors[device], bytes: sp.memory().bytes[device] },
      };
      runs.push(run);
      log(run);
    }
    await srv.close();
  }
  watchAll.stop();
  memory.end = memNow();
  gc();
  memory.endAfterGc = memNow();
  memory.activationBytesEnd = sp.memory().activationBytes;
  // Idle: the model frees its activation buffers after activationIdleMs without a run.
  const idleMs = model.activationBudget.idleMs;
  if (Number.isFinite(idleMs) && opt.preset !== 'smoke') {
    await sleep(idleMs + 1500);
    gc();
    memory.afterIdle = memNow();
    memory.activationBytesAfterIdle = sp.memory().activationBytes;
    memory.idleMs = idleMs;
  }
  memory.peak = watchAll.peak;
  memory.timeline = watchAll.series;
  const tensorsEnd = sp.memory();
  const modelInfo = { name: model.spec.name, arch: opt.arch, classes: model.classes, device, description: arch.describe(model) };
  model.dispose();
  return { runs, memory, tensors: { start: tensorsStart, end: tensorsEnd }, model: modelInfo };
}

const HEAD = ['mode', 'conns', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'non-2xx', 'errors', 'mean batch', 'loop p99 ms', 'RSS MiB after (peak)', 'heap MiB after'];
const f3 = (v) => (v == null ? '-' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
function rowsOf(runs) {
  return runs.map((r) => [
    r.modeLabel, r.connections, f3(r.reqPerS), f3(r.latencyMs.p50), f3(r.latencyMs.p90), f3(r.latencyMs.p99),
    r.non2xx ? `${r.non2xx} (${Object.entries(r.statusCodes).filter(([s]) => !/^2/.test(s)).map(([s, n]) => `${n}x${s}`).join(' ')})` : '0',
    r.errors + r.timeouts, r.meanBatchSize == null ? '-' : r.meanBatchSize.toFixed(1), f3(r.eventLoopDelayMs.p99),
    `${MB(r.memory.after.rss).toFixed(0)} (${MB(r.memory.peak.rss).toFixed(0)})`, MB(r.memory.after.heapUsed).toFixed(0),
  ]);
}

/** RSS over a point, every 10 s (MiB), for the points of 20 s or more: flat after the warm-up? */
function rssOverTime(r) {
  const tl = r.memory.timeline ?? [];
  if (!tl.length || tl[tl.length - 1].t < 20) return null;
  const at = [];
  for (let t = 0; t <= tl[tl.length - 1].t + 0.5; t += 10) {
    const x = tl.reduce((best, p) => (Math.abs(p.t - t) < Math.abs(best.t - t) ? p : best));
    at.push(`${t} s ${MB(x.rss).toFixed(0)}`);
  }
  return `${r.modeLabel}, ${r.connections} connections: RSS MiB ${at.join(', ')}`;
}

function summaryLines(d) {
  const m = d.memory;
  const mem = (x) => `RSS ${MB(x.rss).toFixed(0)} MiB, heap ${MB(x.heapUsed).toFixed(0)} MiB, external ${MB(x.external).toFixed(0)} MiB`;
  const t = d.tensors;
  return [
    `Memory (server process): at start ${mem(m.start)}; after warm-up ${mem(m.afterWarmup)}; at the end ${mem(m.end)}, after a forced GC ${mem(m.endAfterGc)} (activation buffers ${MB(m.activationBytesEnd ?? 0).toFixed(0)} MiB)${m.afterIdle ? `; after ${(m.idleMs / 1e3).toFixed(0)} s idle (+1.5 s) and a GC ${mem(m.afterIdle)} (activation buffers ${MB(m.activationBytesAfterIdle).toFixed(0)} MiB)` : ''}; peak RSS ${MB(m.peak.rss).toFixed(0)} MiB, peak heap ${MB(m.peak.heapUsed).toFixed(0)} MiB.`,
    `Live sppnet tensors: ${t.start.tensors[d.device]} (${MB(t.start.bytes[d.device]).toFixed(1)} MiB) with the model loaded, ${t.end.tensors[d.device]} (${MB(t.end.bytes[d.device]).toFixed(1)} MiB) after the last point, before model.dispose().`,
    ...d.runs.map(rssOverTime).filter(Boolean),
    `Event-loop delay: beyond the ${EL_RESOLUTION_MS} ms timer of perf_hooks.monitorEventLoopDelay, over each point; worst p99 ${Math.max(...d.runs.map((r) => r.eventLoopDelayMs.p99)).toFixed(1)} ms, worst max ${Math.max(...d.runs.map((r) => r.eventLoopDelayMs.max)).toFixed(1)} ms.`,
  ];
}

function markdown(d) {
  const m = d.machine;
  return [
    `# The HTTP service under load (${d.device.toUpperCase()})`,
    '',
    `\`${d.command}\` — ${m.date.slice(0, 16).replace('T', ' ')} UTC, ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, node ${m.node}; sppnet build ${m.build.addonMtime ?? '?'}, commit ${m.build.commit ?? '?'}${m.build.dirty ? ' + local changes' : ''}; load average ${m.loadavgStart[0].toFixed(2)} before, ${m.loadavgEnd[0].toFixed(2)} after; ${m.seconds.toFixed(0)} s in all.`,
    `Model: ${d.model.description}. Images: ${d.images.description}.`,
    `Load: ${d.settings.client}; each point ${d.settings.durationS} s or ${d.settings.maxRequests} responses, whichever first; timeout ${d.settings.timeoutS} s. ${d.settings.note}`,
    '',
    mdTable(HEAD, rowsOf(d.runs)),
    '',
    ...summaryLines(d).map((l) => `- ${l}`),
    `- req/s counts every completed response (2xx or not); latencies are of the 2xx responses, client side (autocannon, loopback), decode and top-k included. "mean batch" = images per model call on the server over the point; "errors" = connection errors and client timeouts.`,
    ...d.notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// --bomb: the decompression bombs of issue 12

/** The process's peak resident set since the last reset (VmHWM), or null where /proc has none. */
function peakRss() {
  try {
    const m = fs.readFileSync('/proc/self/status', 'utf8').match(/^VmHWM:\s+(\d+) kB/m);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}
function resetPeakRss() {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
  } catch {}
}

async function post(url, body, contentType) {
  const t0 = performance.now();
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': contentType }, body });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, ms: +(performance.now() - t0).toFixed(1), json };
}

async function bombTest(opt, client) {
  const arch = ARCHS[opt.arch];
  const model = await arch.load('cpu');
  const srv = await sp.createServer({ model, ...SERVE });
  const address = await srv.app.listen({ port: 0, host: '127.0.0.1' });
  const url = `${address}/v1/classify?topk=1`;
  const flat = (w, h) => sharp({ create: { width: w, height: h, channels: 3, background: { r: 120, g: 30, b: 200 } } });
  const bombs = [
    { name: '5900x5900 PNG', body: await flat(5900, 5900).png({ compressionLevel: 9 }).toBuffer(), type: 'image/png' },
    { name: '4000x3000 JPEG', body: await flat(4000, 3000).jpeg().toBuffer(), type: 'image/jpeg' },
  ];
  const bgConnections = 4, bgS = 8;
  const background = () => client.run({ url, connections: bgConnections, durationS: bgS, maxRequests: 100000, timeoutS: 30 });
  // Warm-up, then the background alone: the baseline its latencies are compared with.
  await client.run({ url, connections: 4, durationS: 2, maxRequests: 100000, timeoutS: 30 });
  const memStart = memNow();
  const stopBase = loopDelay();
  const baseline = await background();
  const baselineLoop = stopBase();
  const rows = [];
  for (const b of bombs) {
    await sleep(500);
    const before = memNow();
    resetPeakRss();
    const watch = memWatch(20);
    const stopLoop = loopDelay();
    const bg = background();
    await sleep(1500);
    const r = await post(url, b.body, b.type);
    const bgRes = await bg;
    const loop = stopLoop();
    const sampled = watch.stop();
    const after = memNow();
    rows.push({
      bomb: b.name, bytes: b.body.length, status: r.status, ms: r.ms, size: r.json?.results?.[0]?.size ?? null, code: r.json?.code ?? null,
      rss: { before: before.rss, peak: peakRss() ?? sampled.rss, peakSource: peakRss() === null ? 'sampled every 20 ms' : 'VmHWM', after: after.rss },
      background: { ok: bgRes.ok, non2xx: bgRes.non2xx, errors: bgRes.errors + bgRes.timeouts, reqPerS: bgRes.reqPerS, latencyMs: bgRes.latencyMs },
      eventLoopDelayMs: loop,
    });
  }
  // Refused from the headers: two PNG bombs in one request, and one with resizing turned off.
  const boundary = '----sppnetbench';
  const two = Buffer.concat([0, 1].flatMap((i) => [Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="${i}.png"\r\nContent-Type: image/png\r\n\r\n`), bombs[0].body, Buffer.from('\r\n')]).concat([Buffer.from(`--${boundary}--\r\n`)]));
  const refusedTwo = await post(url, two, `multipart/form-data; boundary=${boundary}`);
  await srv.close();
  const kept = await sp.createServer({ model, ...SERVE, shorterSide: null });
  const keptUrl = `${await kept.app.listen({ port: 0, host: '127.0.0.1' })}/v1/classify`;
  const refusedKept = await post(keptUrl, bombs[0].body, 'image/png');
  await kept.close();
  const memEnd = memNow();
  model.dispose();
  return {
    model: { name: model.spec.name, arch: opt.arch, description: arch.describe(model) },
    background: { connections: bgConnections, durationS: bgS, baseline: { ok: baseline.ok, non2xx: baseline.non2xx, errors: baseline.errors + baseline.timeouts, reqPerS: baseline.reqPerS, latencyMs: baseline.latencyMs }, baselineLoop },
    rows,
    refused: [
      { what: 'two 5900x5900 PNGs in one multipart request', status: refusedTwo.status, ms: refusedTwo.ms, error: refusedTwo.json?.error },
      { what: 'one 5900x5900 PNG, server with shorterSide: null', status: refusedKept.status, ms: refusedKept.ms, error: refusedKept.json?.error },
    ],
    memory: { start: memStart, end: memEnd },
  };
}

function bombMarkdown(d) {
  const m = d.machine;
  const lat = (l) => `p50 ${f3(l.p50)} / p99 ${f3(l.p99)} / max ${f3(l.max)}`;
  return [
    '# Decompression bombs against the HTTP service (CPU)',
    '',
    `\`${d.command}\` — ${m.date.slice(0, 16).replace('T', ' ')} UTC, ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, node ${m.node}; commit ${m.build.commit ?? '?'}${m.build.dirty ? ' + local changes' : ''}; load average ${m.loadavgStart[0].toFixed(2)} before, ${m.loadavgEnd[0].toFixed(2)} after.`,
    `Model: ${d.model.description}. Server: createServer defaults (shorter side 256, maxPixels 36 MP, maxBatchPixels 4 MP). Background: ${d.background.connections} connections of pool images for ${d.background.durationS} s, the bomb sent 1.5 s in.`,
    '',
    mdTable(['bomb', 'bytes', 'status', 'answered in ms', 'size seen by the model', 'RSS MiB before', 'peak', 'after', 'others: ok', 'non-2xx', 'errors', 'others: latency ms', 'loop p99 ms'], [
      ['(none: baseline)', '-', '-', '-', '-', '-', '-', '-', d.background.baseline.ok, d.background.baseline.non2xx, d.background.baseline.errors, lat(d.background.baseline.latencyMs), f3(d.background.baselineLoop.p99)],
      ...d.rows.map((r) => [r.bomb, r.bytes, r.status, f3(r.ms), r.size ? r.size.join('x') : r.code, MB(r.rss.before).toFixed(0), MB(r.rss.peak).toFixed(0), MB(r.rss.after).toFixed(0), r.background.ok, r.background.non2xx, r.background.errors, lat(r.background.latencyMs), f3(r.eventLoopDelayMs.p99)]),
    ]),
    '',
    ...d.refused.map((r) => `- ${r.what}: ${r.status} in ${r.ms} ms — ${r.error}`),
    `- RSS peak: ${d.rows[0]?.rss.peakSource ?? '?'} of the server process (reset before each bomb). Latencies are client side (autocannon / fetch on loopback).`,
    '',
  ].join('\n');
}

async function main() {
  const tStart = performance.now();
  const opt = parseOptions(process.argv.slice(2));
  const be = sp.backend();
  const arch = ARCHS[opt.arch];
  const client = startClient(); // starts while the images are made
  const images = await makeImages(opt.pool === 'mixed' ? POOL_MIXED : arch.pool);
  const hello = await client.load(images);
  const machine = {
    ...machineInfo(),
    sppnet: { device: be.device, reason: be.reason, isa: be.cpu.isa, threads: be.cpu.threads },
    build: buildInfo(),
    loadavgStart: os.loadavg(),
  };
  const command = commandLine(__filename);
  const fmts = [...new Set(images.map((i) => i.contentType.slice(6).toUpperCase()))].join(' and ');
  const settings = {
    preset: opt.preset, quick: opt.preset !== 'full', durationS: opt.durationS, maxRequests: opt.maxRequests, warmupS: opt.warmupS, timeoutS: 30,
    connections: opt.connections, modes: opt.modes.map((m) => ({ mode: m, label: MODES[m].label, maxBatchSize: MODES[m].maxBatchSize, maxQueueDelayMs: MODES[m].maxQueueDelayMs, maxQueueLength: 1024 })),
    client: `autocannon ${hello.autocannon} in a child process (bench/load_client.js), keep-alive, POST /v1/classify?topk=1 with a raw image body`,
    eventLoopResolutionMs: EL_RESOLUTION_MS,
    note: 'Server and load generator share this machine\'s cores, and other jobs may be running: the figures are noisy, compare within a run.',
  };
  const imagesInfo = {
    count: images.length,
    sizes: images.map((i) => [i.height, i.width]),
    bytes: images.reduce((a, i) => a + i.body.length, 0),
    description: `${images.length} ${fmts} images of mixed sizes (${Math.min(...images.map((i) => Math.min(i.height, i.width)))} to ${Math.max(...images.map((i) => Math.max(i.height, i.width)))} px a side, ${(images.reduce((a, i) => a + i.body.length, 0) / images.length / 1024).toFixed(0)} KiB on average), generated with sharp from seeded pixels; the server resizes each to a shorter side of 256 (its default) before the model`,
  };
  console.log(`sppnet load test, ${machine.date}: ${command}`);
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores; node ${machine.node}; sppnet ${be.device} (${be.reason})`);
  console.log(`model ${opt.arch}; ${imagesInfo.description}`);
  console.log(`${settings.client}; connections ${opt.connections.join(', ')}; ${opt.durationS} s or ${opt.maxRequests} responses a point; modes ${opt.modes.join(', ')}`);
  console.log(`note: ${settings.note}`);
  if (machine.loadavgStart[0] > 0.7) console.log(`warning: 1-minute load average ${machine.loadavgStart[0].toFixed(2)} before the run: other processes are busy`);

  if (opt.bomb) {
    const res = await bombTest(opt, client);
    await client.close();
    const d = { command, machine: { ...machine, loadavgEnd: os.loadavg() }, ...res };
    const md = bombMarkdown(d);
    writeResults(opt.out, 'bomb-cpu', d, md);
    console.log(`\n${md}`);
    return;
  }

  const devices = ['cpu'];
  let gpu;
  if (be.device === 'cuda' && opt.gpu) devices.push('cuda');
  else gpu = { skipped: true, reason: !opt.gpu ? '--no-gpu' : `sppnet runs on the CPU here: ${be.reason}` };
  const outputs = [];
  for (const device of devices) {
    console.log(`\n[${device}]`);
    const res = await loadTest(opt, device, images, client, (r) =>
      console.log(`  ${r.modeLabel.padEnd(27)} c=${String(r.connections).padStart(3)}: ${f3(r.reqPerS).padStart(6)} req/s, p50 ${f3(r.latencyMs.p50)} ms, p99 ${f3(r.latencyMs.p99)} ms, non-2xx ${r.non2xx}, errors ${r.errors + r.timeouts}, mean batch ${r.meanBatchSize == null ? '-' : r.meanBatchSize.toFixed(1)}, loop p99 ${f3(r.eventLoopDelayMs.p99)} ms, RSS ${MB(r.memory.after.rss).toFixed(0)} MiB (peak ${MB(r.memory.peak.rss).toFixed(0)})`),
    );
    const d = {
      device, command, npmScript: process.env.npm_lifecycle_event ?? null,
      machine: { ...machine }, model: res.model, images: imagesInfo, settings, runs: res.runs, memory: res.memory, tensors: res.tensors, notes: [],
    };
    outputs.push(d);
  }
  await client.close();
  const seconds = (performance.now() - tStart) / 1e3;
  for (const d of outputs) {
    d.machine.loadavgEnd = os.loadavg();
    d.machine.seconds = seconds;
    if (d.device === 'cpu') {
      d.gpu = gpu ?? { skipped: false, file: 'load-gpu.json' };
      d.notes.push(gpu ? `GPU load test skipped: ${gpu.reason}.` : 'The GPU run is in load-gpu.md.');
    }
    const name = `load-${d.device === 'cuda' ? 'gpu' : 'cpu'}`;
    const wrote = writeResults(opt.out, name, d, markdown(d));
    console.log(`\n[${d.device}]\n${textTable(HEAD, rowsOf(d.runs))}`);
    for (const l of summaryLines(d)) console.log(l);
    console.log(wrote);
  }
  if (gpu) console.log(`GPU load test skipped: ${gpu.reason}`);
  console.log(`load average (1, 5, 15 min): ${machine.loadavgStart.map((v) => v.toFixed(2)).join(' ')} before, ${os.loadavg().map((v) => v.toFixed(2)).join(' ')} after; ${seconds.toFixed(0)} s in all`);
}

if (require.main === module) {
  main().catch((e) => process.exit(failed(e)));
}

module.exports = { smallSpec, makeImages, MODES, PRESETS };
