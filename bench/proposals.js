#!/usr/bin/env node
// sp.proposals (selective search) on generated scenes: time per image, boxes per image and recall
// of the non-difficult ground-truth boxes at IoU 0.5 and 0.7, in 'fast' and 'single' modes; one
// 500x375 scene timed on its own; and OpenCV's selective search (bench/opencv_ss.py, fast mode) on
// the same images when python3 has cv2.ximgproc. Images are decoded before timing (both sides);
// sp.proposals is timed around the awaited call, after one warm-up call. Besides the wall time,
// the CPU time of the process (all its threads) over the same span: on a shared machine the wall
// time follows the load, the CPU time much less.
//
//   node bench/proposals.js [--data DIR] [--images 100] [--seed 1] [--python /usr/bin/python3]
//                           [--opencv-threads 1] [--no-opencv] [--json out.json]
//
// Without --data, the scenes are made with sp.makeDetectionData(tmp, { images, minSize: 224,
// maxSize: 320, minObjectSize: 24, seed }) and removed afterwards; every split of the dataset
// (trainval and test) is used. OpenCV's boxes are filtered as ours are (sides >= 20 px, no
// duplicates) before counting and recall; its own defaults (k = 150, 300) are kept.
'use strict';
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const sp = require('../dist');
const { rgbImage } = require('../dist/detect/proposals');
const { parseArgs, headerText, failed, commandLine } = require('./common');

const opt = parseArgs(
  process.argv.slice(2),
  [
    { name: 'data', type: 'path', help: 'a VOC-format dataset to use instead of generated scenes' },
    { name: 'images', type: 'int', default: 100, help: 'generated images' },
    { name: 'seed', type: 'int', min: 0, default: 1, help: 'generator seed' },
    { name: 'python', type: 'string', default: '/usr/bin/python3', help: 'python with cv2.ximgproc' },
    { name: 'opencv-threads', type: 'int', default: 1, help: "cv2.setNumThreads for OpenCV's run" },
    { name: 'no-opencv', type: 'flag', help: 'skip the OpenCV comparison' },
    { name: 'json', type: 'path', help: 'write the results here' },
  ],
  { usage: headerText(__filename, 1, 10) },
);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const iou = (a, b) => {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]) + 1, ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]) + 1;
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  return inter / ((a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter);
};

/** Recall counts of gt (0-based boxes) by flat boxes at IoU 0.5 and 0.7. */
function recall(flat, gt) {
  let r5 = 0, r7 = 0;
  for (const g of gt) {
    let best = 0;
    for (let i = 0; i < flat.length; i += 4) best = Math.max(best, iou([flat[i], flat[i + 1], flat[i + 2], flat[i + 3]], g));
    if (best >= 0.5) r5++;
    if (best >= 0.7) r7++;
  }
  return [r5, r7];
}

/** OpenCV's boxes as ours are kept: sides >= 20, the first of duplicates. */
function filterBoxes(flat) {
  const out = [], seen = new Set();
  for (let i = 0; i < flat.length; i += 4) {
    const b = flat.slice(i, i + 4);
    if (b[2] - b[0] + 1 < 20 || b[3] - b[1] + 1 < 20 || seen.has(String(b))) continue;
    seen.add(String(b));
    out.push(...b);
  }
  return out;
}

function summary(name, rows, total) {
  const ms = rows.map((r) => r.ms), cpu = rows.map((r) => r.cpuMs), n = rows.map((r) => r.count);
  const r5 = rows.reduce((s, r) => s + r.r5, 0), r7 = rows.reduce((s, r) => s + r.r7, 0);
  return { name, images: rows.length, medianMs: median(ms), meanMs: mean(ms), medianCpuMs: median(cpu), medianBoxes: median(n), meanBoxes: mean(n), recall05: r5 / total, recall07: r7 / total };
}

async function readDataset(root) {
  const classes = fs.readFileSync(path.join(root, 'classes.txt'), 'utf8').split('\n').filter(Boolean);
  const images = [];
  for (const split of ['trainval', 'test']) {
    const list = path.join(root, 'ImageSets', 'Main', `${split}.txt`);
    if (fs.existsSync(list) && fs.readFileSync(list, 'utf8').trim() !== '') images.push(...(await sp.data.voc(root, { split, classes })).images);
  }
  return images;
}

async function runOpencv(paths) {
  const probe = spawnSync(opt.python, ['-c', 'import cv2; cv2.ximgproc.segmentation'], { encoding: 'utf8' });
  if (probe.status !== 0) return { error: `no cv2.ximgproc in ${opt.python}` };
  const child = spawn(opt.python, [path.join(__dirname, 'opencv_ss.py'), String(opt.opencvThreads)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const pending = [];
  lines.on('line', (l) => pending.shift()(l));
  const out = [];
  for (const p of paths) {
    const line = await new Promise((res) => {
      pending.push(res);
      child.stdin.write(p + '\n');
    });
    const [ms, cpuMs, boxes] = line.split(' ');
    out.push({ ms: Number(ms), cpuMs: Number(cpuMs), boxes: boxes ? boxes.split(',').map(Number) : [] });
  }
  child.stdin.end();
  return { out, version: spawnSync(opt.python, ['-c', 'import cv2; print(cv2.__version__)'], { encoding: 'utf8' }).stdout.trim() };
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-proposals-bench-'));
  try {
    const root = opt.data ?? path.join(tmp, 'scenes');
    if (!opt.data) await sp.makeDetectionData(root, { images: opt.images, minSize: 224, maxSize: 320, minObjectSize: 24, seed: opt.seed });
    const images = await readDataset(root);
    const pixels = [];
    for (const im of images) pixels.push(await rgbImage('bench', im.path, 4e6));
    const gts = images.map((im) => im.objects.filter((o) => !o.difficult).map((o) => o.box.map((v) => v - 1)));
    const total = gts.reduce((s, g) => s + g.length, 0);
    console.log(`${images.length} images (${opt.data ? opt.data : `generated, seed ${opt.seed}`}), ${total} non-difficult objects`);
    const results = [];
    for (const mode of ['fast', 'single']) {
      await sp.proposals(pixels[0], { mode }); // warm-up
      const rows = [];
      for (let i = 0; i < images.length; i++) {
        const t = process.hrtime.bigint(), c = process.cpuUsage();
        const r = await sp.proposals(pixels[i], { mode });
        const ms = Number(process.hrtime.bigint() - t) / 1e6, used = process.cpuUsage(c);
        const [r5, r7] = recall(r.boxes, gts[i]);
        rows.push({ ms, cpuMs: (used.user + used.system) / 1e3, count: r.count, r5, r7 });
      }
      results.push(summary(`sp.proposals ${mode}`, rows, total));
    }
    // one 500x375 scene
    const big = path.join(tmp, 'big');
    await sp.makeDetectionData(big, { images: 1, minSize: [500, 375], maxSize: [500, 375], minObjectSize: 24, seed: opt.seed, testFraction: 0 });
    const bigImage = (await readDataset(big))[0];
    const bigPixels = await rgbImage('bench', bigImage.path, 4e6);
    const bigMs = [], bigCpu = [];
    let bigCount = 0;
    await sp.proposals(bigPixels);
    for (let k = 0; k < 10; k++) {
      const t = process.hrtime.bigint(), c = process.cpuUsage();
      bigCount = (await sp.proposals(bigPixels)).count;
      const used = process.cpuUsage(c);
      bigMs.push(Number(process.hrtime.bigint() - t) / 1e6);
      bigCpu.push((used.user + used.system) / 1e3);
    }
    const single500 = { size: '500x375', medianMs: median(bigMs), medianCpuMs: median(bigCpu), boxes: bigCount, opencvMs: null, opencvCpuMs: null };
    let opencv = null;
    if (!opt.noOpencv) {
      const cv = await runOpencv([...images.map((im) => im.path), bigImage.path, bigImage.path, bigImage.path]);
      if (cv.error) console.log(`OpenCV skipped: ${cv.error}`);
      else {
        const rows = images.map((im, i) => {
          const flat = filterBoxes(cv.out[i].boxes);
          const [r5, r7] = recall(flat, gts[i]);
          return { ms: cv.out[i].ms, cpuMs: cv.out[i].cpuMs, count: flat.length / 4, r5, r7 };
        });
        opencv = { ...summary(`OpenCV ${cv.version} fast (${opt.opencvThreads} thread${opt.opencvThreads > 1 ? 's' : ''})`, rows, total), version: cv.version };
        results.push(opencv);
        single500.opencvMs = median(cv.out.slice(images.length).map((o) => o.ms));
        single500.opencvCpuMs = median(cv.out.slice(images.length).map((o) => o.cpuMs));
      }
    }
    const head = ['', 'median ms', 'mean ms', 'median CPU ms', 'median boxes', 'mean boxes', 'recall@0.5', 'recall@0.7'];
    const rowsOut = results.map((r) => [r.name, r.medianMs.toFixed(1), r.meanMs.toFixed(1), r.medianCpuMs.toFixed(1), r.medianBoxes, r.meanBoxes.toFixed(0), r.recall05.toFixed(3), r.recall07.toFixed(3)]);
    const wd = head.map((h, j) => Math.max(h.length, ...rowsOut.map((r) => String(r[j]).length)));
    for (const r of [head, ...rowsOut]) console.log(r.map((c, j) => (j ? String(c).padStart(wd[j]) : String(c).padEnd(wd[j]))).join('  '));
    console.log(`500x375 scene, fast: ${single500.medianMs.toFixed(1)} ms (CPU ${single500.medianCpuMs.toFixed(1)} ms; medians of 10), ${single500.boxes} boxes` +
      (single500.opencvMs != null ? `; OpenCV ${single500.opencvMs.toFixed(1)} ms (CPU ${single500.opencvCpuMs.toFixed(1)} ms; medians of 3)` : ''));
    console.log(`load average at the end: ${os.loadavg().map((v) => v.toFixed(2)).join(', ')}`);
    const env = { command: commandLine(__filename), node: process.version, cpu: os.cpus()[0].model, cores: os.cpus().length, threads: sp.backend().cpu.threads };
    console.log(`(${env.cpu}, ${env.cores} cores, node ${env.node}, sp threads ${env.threads})`);
    if (opt.json) fs.writeFileSync(opt.json, JSON.stringify({ env, images: images.length, objects: total, results, single500 }, null, 2));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => process.exit(failed(e)));
