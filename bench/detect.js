#!/usr/bin/env node
// SPP-net detection against the R-CNN baseline on a generated VOC-format set (issue 15): one
// detector trained with sp.trainDetector on the trainval split, then on the test split, in one
// run: SPP-net at one scale, SPP-net at five scales, and the R-CNN baseline (each window cropped
// and warped to the training size with sp.cropResize, the whole network run on it; the same
// network, windows, threads and batching of windows). VOC2007 mAP and the time per image by stage.
//
//   node bench/detect.js [--images 200] [--seed 1] [--data DIR] [--weights detector.safetensors] [--out bench/out]
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
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), help: 'where results go' },
];
const RECIPE = { windowSide: 64, scales: [128, 192, 288, 432, 640], singleScale: 288 };

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 2, 12) });
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
    det = await sp.trainDetector(trainval, { ...RECIPE, pretrainEpochs: opt.epochs, finetuneIterations: opt.iterations, seed: opt.seed, log: (l) => console.log(l) });
    trainSeconds = (Date.now() - t0) / 1000;
    fs.mkdirSync(opt.out, { recursive: true });
    await sp.saveDetector(det, path.join(opt.out, 'detector.safetensors'));
  }
  const rcnnSet = opt.rcnnImages > 0 ? { ...test, images: test.images.slice(0, opt.rcnnImages), length: Math.min(opt.rcnnImages, test.length) } : test;
  const arms = [
    ['SPP-net, 1 scale', test, { scales: 'single' }],
    ['SPP-net, 5 scales', test, { scales: 'multi' }],
    ['R-CNN baseline', rcnnSet, { mode: 'rcnn' }],
    ['SPP-net, 1 scale, on the R-CNN images', rcnnSet, { scales: 'single' }],
  ];
  const rows = [];
  for (const [name, data, o] of arms) {
    if (name.includes('R-CNN images') && data === test) continue;
    const ev = await sp.evaluateDetector(det, data, o);
    rows.push({ name, images: data.length, mAP: ev.mAP, ap: ev.ap, windows: ev.windows, median: ev.median, mean: ev.mean });
    console.log(`${name}: mAP ${(100 * ev.mAP).toFixed(1)} on ${data.length} images, ${ev.windows.toFixed(0)} windows per image; median ms ${Object.entries(ev.median).map(([k, v]) => `${k} ${(1000 * v).toFixed(1)}`).join(', ')}`);
  }
  det.dispose();
  const ms = (v) => (1000 * v).toFixed(1);
  const stages = ['proposals', 'decode', 'conv', 'pooling', 'fc', 'nms', 'total'];
  const table = mdTable(['arm', 'images', 'mAP', ...stages.map((s) => `${s} ms`)], rows.map((r) => [r.name, r.images, (100 * r.mAP).toFixed(1), ...stages.map((s) => ms(r.median[s]))]), 1);
  const spp1 = rows.find((r) => r.name === (opt.rcnnImages > 0 ? 'SPP-net, 1 scale, on the R-CNN images' : 'SPP-net, 1 scale'));
  const rcnn = rows.find((r) => r.name === 'R-CNN baseline');
  const noProp = (r) => r.mean.total - r.mean.proposals;
  const ratios = { total: rcnn.mean.total / spp1.mean.total, withoutProposals: noProp(rcnn) / noProp(spp1), conv: rcnn.mean.conv / spp1.mean.conv };
  const text = `${table}\nR-CNN / SPP-net (1 scale), mean time per image: ${ratios.total.toFixed(1)}x overall, ${ratios.withoutProposals.toFixed(1)}x without proposals, ${ratios.conv.toFixed(1)}x in the conv layers\n`;
  console.log(`\n${text}`);
  console.log(writeResults(opt.out, 'detect', { command: commandLine(__filename), machine: machineInfo(), build: buildInfo(), root, recipe: RECIPE, trainSeconds, classes, rows, ratios }, text));
}

main().catch(failed);
