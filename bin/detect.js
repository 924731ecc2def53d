// sppnet's detection commands: train-detector, detect, evaluate-detector (see USAGE in sppnet.js).
'use strict';
const fs = require('fs');
const path = require('path');

const ints = (s, name) => {
  const v = String(s).split(',').map((x) => Number(x.trim()));
  if (!v.length || !v.every((x) => Number.isInteger(x) && x > 0)) throw new Error(`--${name} must be positive integers separated by commas, got ${JSON.stringify(s)}`);
  return v;
};
const num = (s, name) => {
  const v = Number(s);
  if (s === true || !Number.isFinite(v)) throw new Error(`--${name} must be a number, got ${JSON.stringify(s)}`);
  return v;
};

/** The dataset at --data: a VOC-format folder (sppnet make-detection-data writes one), its split. */
async function vocOf(sp, o, split) {
  if (typeof o.data !== 'string') throw new Error('give --data DIR, a VOC-format dataset (sppnet make-detection-data --out DIR writes one)');
  const classesFile = path.join(o.data, 'classes.txt');
  const classes = o.classes ? String(o.classes).split(',') : fs.existsSync(classesFile) ? sp.detectionClasses(o.data) : undefined;
  return sp.data.voc(o.data, { split, classes });
}

/** --scales for detect and evaluate: single, multi, or shorter sides. */
const scalesOpt = (v) => (v === undefined ? undefined : v === 'single' || v === 'multi' ? v : ints(v, 'scales'));

// train-detector --data DIR --out FILE: sp.trainDetector on the trainval split, saved with sp.saveDetector.
async function trainDetectorCmd(sp, o) {
  const out = o.out === undefined ? 'detector.safetensors' : o.out;
  if (out === true) throw new Error('train-detector: --out needs a file name');
  if (o.out === undefined && fs.existsSync(out)) throw new Error(`train-detector: no --out given and ${out} exists: give --out FILE`);
  const data = await vocOf(sp, o, o.split ?? 'trainval');
  const opts = { log: (l) => console.log(l), device: o.device };
  if (o['window-side']) opts.windowSide = ints(o['window-side'], 'window-side')[0];
  if (o.scales) opts.scales = ints(o.scales, 'scales');
  if (o['single-scale']) opts.singleScale = ints(o['single-scale'], 'single-scale')[0];
  if (o.epochs) opts.pretrainEpochs = ints(o.epochs, 'epochs')[0];
  if (o.iterations) opts.finetuneIterations = ints(o.iterations, 'iterations')[0];
  if (o.seed !== undefined) opts.seed = num(o.seed, 'seed');
  if (o.mapping) opts.mapping = o.mapping;
  if (o['no-bbox']) opts.bboxLambda = false;
  if (o.svm) opts.svm = true;
  const t0 = Date.now();
  const det = await sp.trainDetector(data, opts);
  try {
    await sp.saveDetector(det, out);
    console.log(`trained on ${data.length} images in ${((Date.now() - t0) / 1000).toFixed(1)} s; wrote ${out}`);
  } finally {
    det.dispose();
  }
}

function detectOpts(o) {
  const d = {};
  if (o.mode) d.mode = o.mode;
  if (o.scales) d.scales = scalesOpt(o.scales);
  if (o['min-score'] !== undefined) d.minScore = num(o['min-score'], 'min-score');
  if (o.nms !== undefined) d.nms = num(o.nms, 'nms');
  if (o['max-detections']) d.maxDetections = ints(o['max-detections'], 'max-detections')[0];
  if (o['no-bbox']) d.regress = false;
  if (o.classifier) d.classifier = o.classifier;
  return d;
}

// detect --weights W IMAGE...: detections as JSON lines on stdout, each image drawn into --out-dir.
async function detectCmd(sp, o) {
  const files = o._.slice(1);
  if (!files.length) throw new Error('detect: name at least one image');
  if (typeof o.weights !== 'string') throw new Error('detect: give --weights FILE, a detector (sppnet train-detector --out FILE)');
  const outDir = o['out-dir'] === undefined ? 'sppnet-detections' : o['out-dir'];
  if (outDir !== false && o['no-draw'] === undefined) fs.mkdirSync(outDir, { recursive: true });
  const drawMin = o['draw-min'] === undefined ? 0.5 : num(o['draw-min'], 'draw-min');
  const det = await sp.loadDetector(o.weights, { device: o.device });
  try {
    for (const f of files) {
      const r = await det.detect(f, detectOpts(o));
      const round = (v) => Math.round(v * 10) / 10;
      const dets = r.detections.map((d) => ({ label: d.label, score: Number(d.score.toFixed(4)), box: d.box.map(round) }));
      console.log(JSON.stringify({ image: f, width: r.width, height: r.height, windows: r.windows, detections: dets, ms: Object.fromEntries(Object.entries(r.timing).map(([k, v]) => [k, Number((v * 1000).toFixed(1))])) }));
      if (o['no-draw'] === undefined) {
        const file = path.join(outDir, `${path.basename(f, path.extname(f))}.detections.jpg`);
        const shown = r.detections.filter((d) => d.score >= drawMin);
        await sp.drawDetectionsToFile(f, file, shown.map((d) => ({ box: d.box, label: d.label, score: d.score })));
        console.warn(`note: drew ${shown.length} detection(s) with score >= ${drawMin} on ${file}`);
      }
    }
  } finally {
    det.dispose();
  }
}

// evaluate-detector --weights W --data DIR: VOC2007 mAP on the test split, time per image by stage.
async function evaluateDetectorCmd(sp, o) {
  if (typeof o.weights !== 'string') throw new Error('evaluate-detector: give --weights FILE, a detector');
  const data = await vocOf(sp, o, o.split ?? 'test');
  const det = await sp.loadDetector(o.weights, { device: o.device });
  try {
    const ev = await sp.evaluateDetector(det, data, detectOpts(o));
    console.log(`${data.length} images (${o.split ?? 'test'}), ${ev.windows.toFixed(0)} windows per image, mode ${o.mode ?? 'spp'}, scales ${o.scales ?? 'single'}, classifier ${o.classifier ?? 'softmax'}`);
    for (const c of ev.classes) console.log(`  ${c.name.padEnd(12)} AP ${(c.ap * 100).toFixed(1).padStart(5)}  (${c.positives} objects)`);
    console.log(`  mAP ${(ev.mAP * 100).toFixed(1)}`);
    const ms = (t) => Object.entries(t).map(([k, v]) => `${k} ${(v * 1000).toFixed(1)}`).join(', ');
    console.log(`  median ms per image: ${ms(ev.median)}`);
  } finally {
    det.dispose();
  }
}

module.exports = { trainDetectorCmd, detectCmd, evaluateDetectorCmd };
