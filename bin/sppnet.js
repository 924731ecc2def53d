#!/usr/bin/env node
// sppnet's command line: classify images, run the demo, show the backend.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const USAGE = `usage:
  sppnet classify --arch zf5|convnet5|overfeat5|overfeat7 [--weights w.safetensors] [--labels labels.txt]
                  [--classes N] [--scales 224,256] [--topk 5] [--device cpu|cuda] IMAGE...
  sppnet classify --weights w.safetensors IMAGE...      (a file saved by sppnet carries its network)
  sppnet serve (--arch A [--classes N] | --weights w.safetensors) [--labels labels.txt] [--port 8080]
               [--host 127.0.0.1] [--max-batch 32] [--max-delay 2] [--max-queue 1024] [--timeout MS]
               [--shorter-side S] [--device cpu|cuda]      (HTTP: POST /v1/classify, /v1/logits; /healthz, /readyz, /metrics)
  sppnet demo [--device cpu|cuda]                        (synthetic images, nothing downloaded)
  sppnet info                                            (which backend runs, and why)`;

function parse(argv) {
  const o = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) o[a.slice(2, eq)] = a.slice(eq + 1);
      else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) o[a.slice(2)] = argv[++i];
      else o[a.slice(2)] = true;
    } else o._.push(a);
  }
  return o;
}

const ints = (s, name) => {
  const v = String(s).split(',').map((x) => Number(x.trim()));
  if (!v.length || !v.every((x) => Number.isInteger(x) && x > 0)) throw new Error(`--${name} must be positive integers separated by commas, got ${JSON.stringify(s)}`);
  return v;
};

function printResults(results, ms) {
  for (const r of results) {
    console.log(`\n${r.source}  (${r.sizes.map(([h, w]) => `${w}x${h}`).join(', ')})`);
    for (const t of r.top) console.log(`  ${(t.score * 100).toFixed(2).padStart(6)}%  ${t.label ?? `class ${t.index}`}`);
  }
  console.log(`\n${results.length} image(s) in ${ms.toFixed(0)} ms`);
}

async function classifyCmd(sp, o) {
  const files = o._.slice(1);
  if (!files.length) throw new Error('classify: name at least one image');
  let labels;
  if (o.labels) {
    labels = fs.readFileSync(o.labels, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  }
  const classes = o.classes ? ints(o.classes, 'classes')[0] : labels ? labels.length : undefined;
  if (!o.arch && !o.weights) throw new Error('classify: give --arch, or --weights of a file saved by sppnet');
  const model = await sp.loadModel({ arch: o.arch, weights: o.weights, classes, device: o.device });
  if (!o.weights) console.warn(`note: no --weights given: ${o.arch} has random (He-initialised) weights, so its scores mean nothing`);
  const t0 = performance.now();
  const res = await sp.classify(model, files, { scales: o.scales ? ints(o.scales, 'scales') : [224], topk: o.topk ? ints(o.topk, 'topk')[0] : 5, labels });
  printResults(res, performance.now() - t0);
  model.dispose();
}

// Synthetic images of several sizes and formats: shapes on noise, drawn with SVG through sharp.
async function makeDemoImages(dir) {
  const sharp = require('sharp');
  const kinds = ['circle', 'square', 'triangle', 'stripes'];
  const specs = [[224, 224, 'png'], [320, 180, 'jpeg'], [200, 300, 'webp'], [480, 360, 'png'], [256, 256, 'jpeg'], [180, 420, 'webp']];
  const files = [];
  for (let i = 0; i < specs.length; i++) {
    const [w, h, fmt] = specs[i];
    const kind = kinds[i % kinds.length];
    const s = Math.min(w, h) * 0.6, cx = w / 2, cy = h / 2;
    const shape = {
      circle: `<circle cx="${cx}" cy="${cy}" r="${s / 2}" fill="#e33"/>`,
      square: `<rect x="${cx - s / 2}" y="${cy - s / 2}" width="${s}" height="${s}" fill="#3a3"/>`,
      triangle: `<polygon points="${cx},${cy - s / 2} ${cx - s / 2},${cy + s / 2} ${cx + s / 2},${cy + s / 2}" fill="#33e"/>`,
      stripes: Array.from({ length: 8 }, (_, k) => `<rect x="${(k * w) / 8}" y="0" width="${w / 16}" height="${h}" fill="#ec3"/>`).join(''),
    }[kind];
    const svg = Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}"><rect width="100%" height="100%" fill="#777"/>${shape}</svg>`);
    const file = path.join(dir, `${kind}-${w}x${h}.${fmt === 'jpeg' ? 'jpg' : fmt}`);
    await sharp(svg)[fmt]().toFile(file);
    files.push(file);
  }
  return files;
}

async function demoCmd(sp, o) {
  const b = sp.backend();
  console.log(`sppnet ${require('../package.json').version}: ${b.device} (${b.reason})`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-demo-'));
  try {
    const files = await makeDemoImages(dir);
    console.log(`\nMade ${files.length} synthetic images of different sizes and formats in ${dir}.`);
    console.log('ZF-5 SPP-net (random weights until the training work lands): every image at its own size, no crop or warp,');
    console.log('one ragged batch per scale, scores averaged over the scales {180, 224} (the paper\'s multi-scale testing).');
    const labels = ['circle', 'square', 'triangle', 'stripes'];
    const model = await sp.loadModel({ arch: 'zf5', classes: labels.length, seed: 1, device: o.device });
    const t0 = performance.now();
    const res = await sp.classify(model, files, { scales: [180, 224], topk: 2, labels });
    printResults(res.map((r) => ({ ...r, source: path.basename(r.source) })), performance.now() - t0);
    model.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function serveCmd(sp, o) {
  const labels = o.labels ? fs.readFileSync(o.labels, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter(Boolean) : undefined;
  const classes = o.classes ? ints(o.classes, 'classes')[0] : labels ? labels.length : undefined;
  if (!o.arch && !o.weights) throw new Error('serve: give --arch, or --weights of a file saved by sppnet');
  const model = await sp.loadModel({ arch: o.arch, weights: o.weights, classes, device: o.device });
  const num = (name) => (o[name] === undefined ? undefined : ints(o[name], name)[0]);
  const { app, close } = await sp.createServer({
    model, labels, maxBatchSize: num('max-batch'), maxQueueDelayMs: o['max-delay'] === undefined ? undefined : Number(o['max-delay']),
    maxQueueLength: num('max-queue'), timeoutMs: num('timeout'), shorterSide: num('shorter-side'),
  });
  const port = o.port === undefined ? 8080 : Number(o.port);
  const address = await app.listen({ port, host: o.host || '127.0.0.1' });
  const b = sp.backend();
  console.log(`sppnet serving ${model.spec.name} (${model.classes} classes) on ${address} [${b.device}: ${b.reason}]`);
  let stopping = false;
  const stop = (sig) => {
    if (stopping) return;
    stopping = true;
    console.log(`${sig}: finishing requests in flight, then exiting`);
    close().then(() => {
      model.dispose();
      console.log('stopped');
      process.exit(0);
    }, (e) => {
      console.error(`sppnet: ${e.message}`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main() {
  const o = parse(process.argv.slice(2));
  const cmd = o._[0];
  if (!cmd || o.help || cmd === 'help') return console.log(USAGE);
  const sp = require('..');
  if (cmd === 'info') return console.log(JSON.stringify(sp.backend(), null, 2));
  if (cmd === 'classify') return classifyCmd(sp, o);
  if (cmd === 'demo') return demoCmd(sp, o);
  if (cmd === 'serve') return serveCmd(sp, o);
  throw new Error(`unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
}

main().catch((e) => {
  console.error(`sppnet: ${e.message}`);
  process.exitCode = 1;
});
