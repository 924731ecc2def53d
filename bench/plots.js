#!/usr/bin/env node
// Draws the CPU benchmark results as SVG (lib/io/svg.ts, compiled to dist/io/svg.js; no plotting dependency):
//   bench/out/spp-cpu.json  -> bench/out/spp-cpu.svg  (median ms per workload, sppnet vs tfjs; log y)
//   bench/out/zf5-cpu.json  -> bench/out/zf5-cpu.svg  (img/s per implementation per workload; log y)
//   bench/out/load-cpu.json -> bench/out/load-cpu.svg (throughput, p99/p50 and RSS vs concurrency;
//   load-gpu.json likewise where the load test ran on a GPU)
//   bench/out/train-cpu.json -> bench/out/train-cpu.svg (images/s per training step per workload; log y)
// Missing JSON files are skipped. Options: --dir DIR (default bench/out), --png (also write a
// PNG preview next to each SVG, through sharp), --help.
'use strict';
const fs = require('fs');
const path = require('path');
const svg = require('../dist/io/svg');
const { parseArgs, headerText, failed } = require('./common');

/** A chart's subtitle: the run's machine, date and mode, and which way is better. */
function runSubtitle(d, better, shared = '') {
  const m = d.machine ?? {};
  return `${m.cpu ?? ''} ${m.cores ?? ''} cores${shared}, ${m.date ? m.date.slice(0, 16).replace('T', ' ') + ' UTC' : ''}, ${m.mode ?? ''} run; ${better} is better`;
}

/**
 * Images/s per implementation (labels shortened by `short`), one series each in the order they
 * first appear in `order`'s workloads, one value per workload; and a note per missing value.
 */
function imgPerSSeries(d, short, order = d.results) {
  const names = [];
  for (const w of order) for (const i of w.impls) if (!names.includes(short(i.label))) names.push(short(i.label));
  const series = names.map((n) => ({ name: n, values: d.results.map((w) => w.impls.find((i) => short(i.label) === n)?.imgPerS ?? null) }));
  const notes = [];
  for (const w of d.results) for (const i of w.impls) if (i.imgPerS == null && i.note) notes.push(`${w.name} ${short(i.label)}: ${i.note.replace(/^n\/a: /, '')}`);
  return { series, notes };
}

function sppChart(d) {
  // Series: sppnet with each bin rule, and each tfjs backend; a workload without one reads n/a.
  const seriesOf = (impl) => (impl.ours ? `sppnet ${impl.bins ?? ''}`.trim() : impl.backend === 'wasm' ? 'tfjs-wasm' : impl.backend === 'cpu' ? 'tfjs-cpu' : impl.label);
  const names = [];
  for (const w of d.results) for (const i of w.impls) if (!names.includes(seriesOf(i))) names.push(seriesOf(i));
  const wasmLabel = d.results.flatMap((w) => w.impls).find((i) => i.backend === 'wasm')?.label ?? '';
  const series = names.map((n) => ({
    name: n === 'tfjs-wasm' && /\b\d+T\b/.test(wasmLabel) ? `tfjs-wasm (${/\b(\d+)T\b/.exec(wasmLabel)[1]} threads)` : n,
    values: d.results.map((w) => w.impls.find((i) => seriesOf(i) === n)?.stats?.medianMs ?? null),
  }));
  const scaled = d.results.flatMap((w) => w.impls.filter((i) => /\bx\d+\)/.test(i.label)).map((i) => `${w.name} ${i.label}`));
  return svg.barChart({
    title: 'SPP layer on the CPU: median time per call',
    subtitle: runSubtitle(d, 'lower'),
    yTitle: 'median ms per call',
    logY: true,
    width: 760,
    height: 430,
    categories: d.results.map((w) => w.name),
    categoryNotes: d.results.map((w) => w.desc.replace(/^ragged /, '').replace(/ maps /, ' x ').slice(0, 30)),
    series,
    notes: [
      'sppnet paper = the tfjs peers\' bins (same output); W4 has windows under 6 px, where only the adaptive rule is defined.',
      ...(scaled.length ? [`Scaled from a subset of windows: ${scaled.join('; ')}.`] : []),
      'From bench/out/spp-cpu.json (npm run bench:spp).',
    ],
  });
}

function zf5Chart(d) {
  const short = (label) =>
    label
      .replace(/^sppnet \(anchor net, paper bins\)$/, 'sppnet (anchor net)')
      .replace(/^sppnet archSpec\('zf5', (\d+)\) \(\+fc6-8\)$/, 'sppnet ZF-5 +fc6-8')
      .replace(/^onnxruntime-node (\d+)T$/, 'onnxruntime-node ($1 thr)')
      .replace(/^tfjs-wasm (\d+)T$/, 'tfjs-wasm ($1 thr)');
  // Series in the order of the workload that has the most implementations.
  const { series, notes } = imgPerSSeries(d, short, [...d.results].sort((a, b) => b.impls.length - a.impls.length));
  return svg.barChart({
    title: 'ZF-5 forward on the CPU: images per second',
    subtitle: runSubtitle(d, 'higher'),
    yTitle: 'images / s',
    logY: true,
    width: 760,
    height: 440,
    categories: d.results.map((w) => w.name),
    categoryNotes: d.results.map((w) => (w.sizes && w.sizes.length > 1 && new Set(w.sizes.map(String)).size > 1 ? `${w.images} images, mixed sizes` : `${w.images} x ${w.sizes?.[0]?.join('x') ?? ''}`)),
    series,
    notes: [...notes.map((n) => `n/a: ${n}`), 'From bench/out/zf5-cpu.json (npm run bench:zf5).'],
  });
}

function trainChart(d) {
  const short = (label) => label.replace(/^sppnet cpu (\d+)T$/, 'sppnet ($1 thr)').replace(/^tfjs-wasm (\d+)T$/, 'tfjs-wasm ($1 thr)');
  const { series, notes } = imgPerSSeries(d, short);
  return svg.barChart({
    title: 'One training step on the CPU: images per second',
    subtitle: runSubtitle(d, 'higher', ' (shared)'),
    yTitle: 'images / s (forward + backward + SGD)',
    logY: true,
    width: 760,
    height: 440,
    categories: d.results.map((w) => w.name),
    categoryNotes: d.results.map((w) => (new Set(w.sizes.map(String)).size > 1 ? `${w.images} images, mixed sizes` : `${w.images} x ${w.sizes[0].join('x')}`)),
    series,
    notes: [...notes.map((n) => `n/a: ${n}`), 'From bench/out/train-cpu.json (npm run bench:train).'],
  });
}

/** The load test: throughput, p99 / p50 latency and server RSS vs concurrency, batching on vs off. */
function loadChart(d) {
  const modes = [...new Set(d.runs.map((r) => r.mode))];
  const label = (mode) => (mode === 'on' || mode === 'off' ? `batching ${mode}` : d.runs.find((r) => r.mode === mode)?.modeLabel ?? mode);
  const pts = (mode, f) => d.runs.filter((r) => r.mode === mode && f(r) != null).map((r) => [r.connections, f(r)]);
  const xTicks = [...new Set(d.runs.map((r) => r.connections))].sort((a, b) => a - b);
  const common = { logX: xTicks.length > 1, xTicks, xTitle: 'concurrent connections', width: 480, height: 380 };
  const thr = svg.lineChart({
    ...common,
    title: 'Throughput',
    yTitle: 'requests (images) / s',
    yMin: 0,
    showValues: true,
    series: modes.map((m) => ({ name: label(m), points: pts(m, (r) => r.reqPerS) })),
  });
  const p99 = svg.lineChart({
    ...common,
    title: 'Latency p99 (p50 dotted)',
    yTitle: 'ms',
    logY: true,
    showValues: true,
    series: [
      ...modes.map((m) => ({ name: `${label(m)} p99`, points: pts(m, (r) => r.latencyMs.p99) })),
      ...modes.map((m, i) => ({ name: `${label(m)} p50`, points: pts(m, (r) => r.latencyMs.p50), color: svg.PALETTE[i], dash: '2 3', showValues: false })),
    ],
  });
  const charts = [thr, p99];
  // Server memory over the whole run (sampled by bench/load.js), when recorded.
  const tl = d.memory?.timeline;
  if (tl && tl.length > 1) {
    const firstOff = d.runs.find((r) => r.mode !== d.runs[0].mode);
    const at = (r) => (r.startS != null ? `${r.startS.toFixed(0)} s` : '');
    charts.push(svg.lineChart({
      width: 480,
      height: 380,
      title: 'Server memory over the run',
      subtitle: firstOff?.startS != null ? `${label(d.runs[0].mode)} until ${at(firstOff)}, then ${label(firstOff.mode)}` : undefined,
      xTitle: 'seconds since the model was loaded',
      yTitle: 'MiB',
      yMin: 0,
      series: [
        { name: 'RSS', points: tl.map((p) => [p.t, p.rss / 2 ** 20]), markers: false },
        { name: 'external (tensors)', points: tl.map((p) => [p.t, p.external / 2 ** 20]), markers: false },
        { name: 'JS heap', points: tl.map((p) => [p.t, p.heapUsed / 2 ** 20]), markers: false },
      ],
    }));
  }
  const m = d.model;
  const order = modes.map(label).join(', then ');
  const knobs = (d.settings.modes ?? []).map((x) => `${label(x.mode)}: max batch ${x.maxBatchSize}, max delay ${x.maxQueueDelayMs} ms`).join('; ');
  return svg.combine(charts, {
    title: `sppnet HTTP service under load (${(d.device ?? 'cpu').toUpperCase()}): ${m.name}, mixed-size images`,
    notes: [
      `Model: ${m.description}.${knobs ? ` ${knobs}.` : ''}`,
      `Images: ${d.images.description}.`,
      `${d.machine.cpu}, ${d.machine.cores} cores, ${d.machine.date.slice(0, 16).replace('T', ' ')} UTC; ${d.settings.durationS} s per point (${d.settings.quick ? 'quick' : 'full'} run), ${order}, lowest concurrency first. Shared machine: noisy.`,
      `Load: ${d.settings.client ?? 'autocannon on loopback'}. From bench/out/${d.device === 'cuda' ? 'load-gpu' : 'load-cpu'}.json (${d.command ?? 'npm run bench:load'}).`,
    ],
  });
}

async function main() {
  const { dir, png } = parseArgs(process.argv.slice(2), [
    { name: 'dir', type: 'path', default: path.join(__dirname, 'out'), help: 'where the JSON files are read and the SVGs written' },
    { name: 'png', type: 'flag', help: 'also a PNG preview next to each SVG (through sharp)' },
  ], { usage: headerText(__filename, 1, 8) });
  const jobs = [
    ['spp-cpu', sppChart],
    ['zf5-cpu', zf5Chart],
    ['load-cpu', loadChart],
    ['load-gpu', loadChart],
    ['train-cpu', trainChart],
  ];
  for (const [name, draw] of jobs) {
    const src = path.join(dir, `${name}.json`);
    if (!fs.existsSync(src)) {
      console.log(`skip ${name}: no ${path.relative(process.cwd(), src)}`);
      continue;
    }
    const out = svg.write(path.join(dir, `${name}.svg`), draw(JSON.parse(fs.readFileSync(src, 'utf8'))));
    console.log(`wrote ${path.relative(process.cwd(), out)}`);
    if (png) console.log(`wrote ${path.relative(process.cwd(), await svg.toPng(out))}`);
  }
}

if (require.main === module) {
  main().catch((e) => process.exit(failed(e)));
}

module.exports = { sppChart, zf5Chart, loadChart, trainChart };
