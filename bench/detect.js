#!/usr/bin/env node
// SPP-net detection against the R-CNN baseline on a generated VOC-format set (issue 15): one
// detector trained with sp.trainDetector on the trainval split, then on the test split, in one
// run: SPP-net at one scale, SPP-net at five scales, and the R-CNN baseline (each window cropped
// and warped to the training size with sp.cropResize, the whole network run on it; the same
// network, windows, threads and batching of windows). VOC2007 mAP and the time per image by stage.
//
//   node bench/detect.js [--images 200] [--seed 1] [--data DIR] [--weights detector.safetensors] [--zf5-images 3] [--out bench/out]
//   node bench/detect.js --zf5-only [--zf5-images 3] [--zf5-windows 2000]   # the timing alone, on the default device
//
// The set: sp.makeDetectionData with sides 224-320 px, objects from 24 px (DIR when given and
// already there). Scales: shorter sides 128, 192, 288, 432, 640 (single: 288), windows pooled at
// the scale where they are closest to 64 x 64 px, the size the network is trained on.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const sp = require('../dist');
const { parseArgs, headerText, commandLine, machineInfo, buildInfo, mdTable, writeResults, failed } = require('./common');

const OPTIONS = [
  { name: 'images', type: 'int', default: 200, help: 'images in the generated set (half test)' },
  { name: 'seed', type: 'int', min: 0, default: 1, help: 'seed of the set and the training' },
  { name: 'data', type: 'path', default: null, help: 'the set (generated here when missing)' },
  { name: 'weights', type: 'path', default: null, help: 'a trained detector (else trained here, and saved to OUT/detector.safetensors)' },
  { name: 'epochs', type: 'int', default: 10, help: 'stage-1 epochs' },
  { name: 'iterations', type: 'int', default: 1500, help: 'stage-3 iterations' },
  { name: 'rcnn-images', type: 'int', default: 0, help: 'R-CNN on the first N test images only (0: all)' },
  { name: 'zf5-windows', type: 'int', min: 0, default: 2000, help: 'ZF-5 timing: also one image with this many windows (its proposals, then seeded random boxes; 0: skip), the paper\'s ~2,000' },
  { name: 'zf5-images', type: 'int', min: 0, default: 3, help: 'timing only, the paper\'s regime: ZF-5 (random weights) on N generated 500x375 scenes, 224-px windows, scale 688 (0: skip)' },
  { name: 'zf5-only', type: 'flag', help: 'only the ZF-5 timing, on the default device (no training, no mAP): as scripts/gpu-run.sh runs it' },
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), help: 'where results go' },
];
const STAGES = ['proposals', 'decode', 'conv', 'pooling', 'fc', 'nms', 'total'];
const ms = (v) => (1000 * v).toFixed(1);

/** The ZF-5 timing's report (zf5Timing's result). */
function zf5Text(zf5, opt) {
  let text = `\nZF-5 (random weights) on ${sp.backend().device}, ${zf5.images} scenes of 500x375, ${zf5.windows.toFixed(0)} windows per image, 224-px windows, scale 688, timing only:\n`;
  text += mdTable(['mode', ...STAGES.map((s) => `${s} ms`)], zf5.rows.map((r) => [r.name, ...STAGES.map((s) => ms(r.mean[s]))]), 1);
  text += `\nR-CNN / SPP-net: ${zf5.ratios.total.toFixed(1)}x overall, ${zf5.ratios.withoutProposals.toFixed(1)}x without proposals, ${zf5.ratios.conv.toFixed(1)}x in the conv layers\n`;
  if (zf5.many) text += `With ${opt.zf5Windows} windows (one image): ${zf5.many.total.toFixed(1)}x overall, ${zf5.many.withoutProposals.toFixed(1)}x without proposals, ${zf5.many.conv.toFixed(1)}x in the conv layers\n`;
  if (zf5.manyBf16) text += `With ${opt.zf5Windows} windows and BF16 fc products in both modes: ${zf5.manyBf16.total.toFixed(1)}x overall, ${zf5.manyBf16.withoutProposals.toFixed(1)}x without proposals, ${zf5.manyBf16.conv.toFixed(1)}x in the conv layers\n`;
  return text;
}
const RECIPE = { windowSide: 64, scales: [128, 192, 288, 432, 640], singleScale: 288 };

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 2, 13) });
  if (opt.zf5Only) {
    if (opt.zf5Images < 1) throw new Error('--zf5-only needs --zf5-images of at least 1');
    const zf5 = await zf5Timing(opt);
    const text = zf5Text(zf5, opt);
    console.log(text);
    const be = sp.backend();
    console.log(writeResults(opt.out, 'detect', { command: commandLine(__filename), machine: machineInfo(), build: buildInfo(), device: be.device, backend: be.reason, zf5 }, text));
    return;
  }
  const root = opt.data ?? path.join(os.tmpdir(), `sppnet-detect-${opt.images}-${opt.seed}`);
  if (!fs.existsSync(path.join(root, 'classes.txt'))) {
    fs.rmSync(root, { recursive: true, force: true });
    await sp.makeDetectionData(root, { images: opt.images, seed: opt.seed, minSize: 224, maxSize: 320, minObjectSize: 24 });
  }
  const classes = sp.detectionClasses(root);
  const trainval = await sp.data.voc(root, { split: 'trainval', classes });
  const test = await sp.data.voc(root, { split: 'test', classes });
  console.log(`${root}: ${trainval.length} trainval, ${test.length} test images, ${classes.length} classes; backend ${JSON.stringify(sp.backend().cpu)}`);
  let det, trainSeconds = null;
  if (opt.weights) det = await sp.loadDetector(opt.weights);
  else {
    const t0 = Date.now();
    det = await sp.trainDetector(trainval, { ...RECIPE, svm: true, pretrainEpochs: opt.epochs, finetuneIterations: opt.iterations, seed: opt.seed, log: (l) => console.log(l) });
    trainSeconds = (Date.now() - t0) / 1000;
    fs.mkdirSync(opt.out, { recursive: true });
    await sp.saveDetector(det, path.join(opt.out, 'detector.safetensors'));
  }
  // For the 1-scale arm, the head fine-tuned again from the detector's weights (stage 1 skipped) on
  // windows pooled at the single scale, as they are at test time, and at a random scale of the five
  // (the released code's training).
  let detSingle = null, detRandom = null;
  if (!opt.weights) {
    const { tensors } = await sp.readSafetensors(path.join(opt.out, 'detector.safetensors'));
    detSingle = await sp.trainDetector(trainval, { ...RECIPE, weights: tensors, pretrainEpochs: 0, trainScales: 'single', finetuneIterations: opt.iterations, seed: opt.seed });
    detRandom = await sp.trainDetector(trainval, { ...RECIPE, weights: tensors, pretrainEpochs: 0, trainScales: 'random', finetuneIterations: opt.iterations, seed: opt.seed });
  }
  const rcnnSet = opt.rcnnImages > 0 ? { ...test, images: test.images.slice(0, opt.rcnnImages), length: Math.min(opt.rcnnImages, test.length) } : test;
  const arms = [
    ['SPP-net, 1 scale', test, { scales: 'single' }],
    ['SPP-net, 5 scales', test, { scales: 'multi' }],
    ['R-CNN baseline', rcnnSet, { mode: 'rcnn' }],
    ...(det.hasSvm ? [['SPP-net, 1 scale, SVMs', test, { scales: 'single', classifier: 'svm' }], ['SPP-net, 5 scales, SVMs', test, { scales: 'multi', classifier: 'svm' }], ['R-CNN baseline, SVMs', rcnnSet, { mode: 'rcnn', classifier: 'svm' }]] : []),
    ['SPP-net, 1 scale, on the R-CNN images', rcnnSet, { scales: 'single' }],
  ];
  const rows = [];
  if (detRandom) arms.splice(2, 0, ['SPP-net, 1 scale, head fine-tuned at the single scale', test, { scales: 'single' }, detSingle], ['SPP-net, 1 scale, head fine-tuned at random scales', test, { scales: 'single' }, detRandom]);
  for (const [name, data, o, which] of arms) {
    if (name.includes('R-CNN images') && data === test) continue;
    const ev = await sp.evaluateDetector(which ?? det, data, o);
    rows.push({ name, images: data.length, mAP: ev.mAP, ap: ev.ap, windows: ev.windows, median: ev.median, mean: ev.mean });
    console.log(`${name}: mAP ${(100 * ev.mAP).toFixed(1)} on ${data.length} images, ${ev.windows.toFixed(0)} windows per image; median ms ${Object.entries(ev.median).map(([k, v]) => `${k} ${(1000 * v).toFixed(1)}`).join(', ')}`);
  }
  det.dispose();
  detSingle?.dispose();
  detRandom?.dispose();
  const zf5 = opt.zf5Images > 0 ? await zf5Timing(opt) : null;
  const table = mdTable(['arm', 'images', 'mAP', ...STAGES.map((s) => `${s} ms`)], rows.map((r) => [r.name, r.images, (100 * r.mAP).toFixed(1), ...STAGES.map((s) => ms(r.median[s]))]), 1);
  const spp1 = rows.find((r) => r.name === (opt.rcnnImages > 0 ? 'SPP-net, 1 scale, on the R-CNN images' : 'SPP-net, 1 scale'));
  const rcnn = rows.find((r) => r.name === 'R-CNN baseline');
  const noProp = (r) => r.mean.total - r.mean.proposals;
  const ratios = { total: rcnn.mean.total / spp1.mean.total, withoutProposals: noProp(rcnn) / noProp(spp1), conv: rcnn.mean.conv / spp1.mean.conv };
  let text = `${table}\nR-CNN / SPP-net (1 scale), mean time per image: ${ratios.total.toFixed(1)}x overall, ${ratios.withoutProposals.toFixed(1)}x without proposals, ${ratios.conv.toFixed(1)}x in the conv layers\n`;
  if (zf5) text += zf5Text(zf5, opt);
  console.log(`\n${text}`);
  console.log(writeResults(opt.out, 'detect', { command: commandLine(__filename), machine: machineInfo(), build: buildInfo(), root, recipe: RECIPE, trainSeconds, classes, rows, ratios, zf5 }, text));
}

/** The paper's regime, time only: ZF-5 with random weights (time does not depend on them) as a 21-class detector. */
async function zf5Timing(opt) {
  const root = path.join(os.tmpdir(), `sppnet-detect-zf5-${opt.zf5Images}-${opt.seed}`);
  if (!fs.existsSync(path.join(root, 'classes.txt'))) {
    fs.rmSync(root, { recursive: true, force: true });
    await sp.makeDetectionData(root, { images: opt.zf5Images, seed: opt.seed, minSize: [500, 375], maxSize: [500, 375], minObjectSize: 40, testFraction: 1 });
  }
  const test = await sp.data.voc(root, { split: 'test', classes: sp.detectionClasses(root) });
  const model = await sp.loadModel({ arch: 'zf5', classes: 21 });
  const config = { classes: Array.from({ length: 20 }, (_, i) => `c${i}`), scales: [480, 576, 688, 864, 1200], singleScale: 688, windowSide: 224, mapping: 'paper', offset0: 21, offset: 6.5, context: 0, mean: [...sp.IMAGENET_MEAN], std: [...sp.IMAGENET_STD] };
  const det = new sp.Detector(model, config, null);
  const rows = [];
  try {
    for (const [name, o] of [['SPP-net, 1 scale', { scales: 'single' }], ['R-CNN baseline', { mode: 'rcnn', chunk: 64 }]]) {
      const times = [];
      let windows = 0;
      for (const im of test.images) {
        const r = await det.detect(im.path, { ...o, minScore: 0.01 });
        times.push(r.timing);
        windows += r.windows;
      }
      const mean = Object.fromEntries(Object.keys(times[0]).map((k) => [k, times.reduce((a, t) => a + t[k], 0) / times.length]));
      rows.push({ name, mean, windows: windows / times.length });
      console.log(`ZF-5 ${name}: ${JSON.stringify(mean)}`);
    }
  } finally {
    det.dispose();
  }
  if (opt.zf5Windows > 0) {
    // The paper's ~2,000 windows per image: the first image's proposals, filled up with seeded random boxes.
    const im = test.images[0];
    const p = await sp.proposals(im.path);
    const r = require('../dist/core/random').prng(opt.seed);
    const boxes = Array.from(p.boxes.subarray(0, 4 * Math.min(p.count, opt.zf5Windows)));
    while (boxes.length < 4 * opt.zf5Windows) {
      const w = 20 + Math.floor(r() * (im.width - 20)), h = 20 + Math.floor(r() * (im.height - 20));
      const x = Math.floor(r() * (im.width - w + 1)), y = Math.floor(r() * (im.height - h + 1));
      boxes.push(x, y, x + w - 1, y + h - 1);
    }
    // FP32 fc layers, then (on a CPU with AVX-512 BF16) both modes again with bfloat16 fc weights and BF16 products (math 'bf16').
    const maths = ['fp32', ...(sp.backend().cpu.bf16 && sp.backend().device === 'cpu' ? ['bf16'] : [])];
    for (const math of maths) {
      const saved = sp.getMath();
      sp.setMath({ linear: math });
      try {
        const tag = math === 'fp32' ? '' : ', BF16 fc products';
        for (const [name, o] of [[`SPP-net, 1 scale, ${opt.zf5Windows} windows${tag}`, { scales: 'single' }], [`R-CNN baseline, ${opt.zf5Windows} windows${tag}`, { mode: 'rcnn', chunk: 64 }]]) {
          const det2 = new sp.Detector(await sp.loadModel({ arch: 'zf5', classes: 21, linearWeights: math }), config, null);
          try {
            const t = (await det2.detect(im.path, { ...o, boxes, minScore: 0.01 })).timing;
            t.proposals = rows[0].mean.proposals; // the same selective search as above, once per image
            t.total += t.proposals;
            rows.push({ name, mean: t, windows: opt.zf5Windows, math });
            console.log(`ZF-5 ${name}: ${JSON.stringify(t)}`);
          } finally {
            det2.dispose();
          }
        }
      } finally {
        sp.setMath(saved);
      }
    }
  }
  const ratioOf = (spp, rcnn) => ({ total: rcnn.mean.total / spp.mean.total, withoutProposals: (rcnn.mean.total - rcnn.mean.proposals) / (spp.mean.total - spp.mean.proposals), conv: rcnn.mean.conv / spp.mean.conv });
  const [spp, rcnn] = rows;
  const ratios = ratioOf(spp, rcnn);
  const many = rows.length >= 4 ? ratioOf(rows[2], rows[3]) : null;
  const manyBf16 = rows.length >= 6 ? ratioOf(rows[4], rows[5]) : null;
  return { images: test.length, windows: spp.windows, rows, ratios, many, manyBf16 };
}

main().catch(failed);
