#!/usr/bin/env node
// sppnet's command line: classify images, serve, train, the ablation, the demo, detection (bin/detect.js), the backend.
'use strict';
const fs = require('fs');
const path = require('path');

const USAGE = `usage:
  sppnet classify --arch A [--weights w.safetensors|w.pth] [--labels labels.txt]
                  [--classes N] [--scales 224,256|natural] [--topk 5] [--device cpu|cuda]
                  [--linear-weights fp32|bf16] IMAGE...  (bf16: the fc weights in bfloat16, half their memory)
  sppnet classify --weights w.safetensors IMAGE...      (a file saved by sppnet carries its network, and
                                                         the class names and input normalisation of train --out)
  sppnet serve (--arch A [--classes N] | --weights w.safetensors | --detector d.safetensors) [--labels labels.txt] [--port 8080]
               [--host 127.0.0.1] [--max-batch 32] [--max-delay 2] [--max-queue 256] [--timeout 30000]
               [--shorter-side 256|none] [--max-pixels 36000000] [--max-batch-pixels 4000000]
               [--max-queued-pixels N] [--body-limit 16777216] [--max-files 16] [--max-rss BYTES]
               [--heap-growing-percent 300] [--linear-weights fp32|bf16]
               [--device cpu|cuda]      (HTTP: POST /v1/classify, /v1/logits, and /v1/detect with --detector;
                                         /healthz, /readyz, /metrics)
  sppnet train (--arch A | --spec net.json) --data synthetic|fashion-mnist|FOLDER [--val synthetic|fashion-mnist|FOLDER] [--classes N]
               [--count 1000] [--val-count 300] [--epochs 10] [--batch 32] [--sizes natural|180,224|48-96]
               [--input crop|warp] [--no-flip] [--optimizer sgd|adam|adamw] [--lr 0.01] [--momentum 0.9]
               [--weight-decay 5e-4] [--schedule constant|step|cosine] [--seed 0]
               [--out model.safetensors | --no-out] [--checkpoint ck.safetensors] [--resume ck.safetensors]
               [--device cpu|cuda]
               [--data-dir DIR] [--val-sizes 20,28,56] [--dropout 0]
               (FOLDER: one sub-folder of images per class; synthetic: --count images of --classes shapes,
               sides 48..128; fashion-mnist: Fashion-MNIST's IDX files in --data-dir, default Debian's
               /usr/share/datasets/fashion-mnist; as --val, its test split; without --arch/--spec the small
               SPP-net sp.fashionSpec; --val-sizes: the final model on --val resized to each size.
               The model is saved to --out, by default ./NAME.safetensors (NAME: the network's), which
               must not exist yet; --no-out keeps nothing)
  sppnet ablation [--epochs 6] [--train 1600] [--test 400] [--classes 4] [--size 64] [--seed 1]
                  [--multi-sizes 48,64,80|48-96] [--out DIR] [--device cpu|cuda]
                  (no SPP vs SPP single-size vs SPP multi-size, one size per epoch or MIN-MAX: a random
                  size per batch; synthetic shapes; table + SVG)
  sppnet ablation --data fashion-mnist [--data-dir DIR] [--train 12000] [--test 10000] [--epochs 6] [--batch 64]
                  [--seeds 1,2,3] [--arms nospp,single,multi-epoch,multi-batch] [--epoch-sizes 20,28,36,48,56]
                  [--batch-sizes 20-56] [--test-sizes 20,28,36,48,56] [--random-test 20-56] [--lr 0.002]
                  [--progress] [--out DIR] [--device cpu|cuda]
                  (the same on Fashion-MNIST, tested at other sizes than 28 px; mean ± std over the seeds;
                  DIR default: Debian's /usr/share/datasets/fashion-mnist, apt-get install dataset-fashion-mnist)
  sppnet demo [--out DIR] [--device cpu|cuda]            (trains a small SPP-net on synthetic images, then classifies
                                                          variable-size image files with it; nothing downloaded;
                                                          keeps the weights and images in DIR, default ./sppnet-demo)
  sppnet make-detection-data --out DIR [--images 300] [--seed 0] [--size 96-160|WxH|WxH-WxH] [--objects 1-5]
                  [--shapes 8] [--test-fraction 0.5] [--fashion [DIR]]
                                                         (a VOC-format detection dataset of synthetic scenes: several
                                                          shapes per image on cluttered backgrounds, boxes, difficult
                                                          flags; DIR/JPEGImages, Annotations, ImageSets/Main/{trainval,
                                                          test}.txt, classes.txt; --fashion pastes Fashion-MNIST items
                                                          too, from DIR or /usr/share/datasets/fashion-mnist)
  sppnet train-detector --data DIR [--out detector.safetensors] [--window-side 224] [--scales 480,576,688,864,1200]
                  [--single-scale 688] [--epochs 8] [--iterations 1500] [--mapping paper|released] [--no-bbox] [--svm]
                  [--seed 0] [--device cpu|cuda]
                                                         (SPP-net detection training on DIR's trainval split: windows
                                                          from sp.proposals, conv features once per image and scale,
                                                          fc layers fine-tuned on pooled windows, box regression)
  sppnet detect --weights detector.safetensors [--mode spp|rcnn] [--scales single|multi|S1,S2] [--classifier softmax|svm] [--min-score 0.05]
                  [--nms 0.3] [--max-detections 100] [--out-dir sppnet-detections] [--draw-min 0.5] [--no-draw] IMAGE...
                                                         (one JSON line per image: boxes [x1, y1, x2, y2] in 0-based
                                                          pixels, labels, scores, ms per stage; each image drawn with
                                                          its boxes into --out-dir)
  sppnet evaluate-detector --weights detector.safetensors --data DIR [--split test] [--mode spp|rcnn] [--scales single|multi] [--classifier softmax|svm]
                                                         (VOC2007 11-point AP per class and mAP, ms per image by stage)
  sppnet convert IN.pth OUT.safetensors                  (a PyTorch checkpoint's state_dict, torch.save(model.state_dict()),
                                                          as safetensors; nothing in the checkpoint is run)
  sppnet info                                            (which backend runs, and why)
A (--arch): zf5, zf5-released, convnet5, overfeat5, overfeat7 (the paper's), alexnet, vgg11, vgg13, vgg16, vgg19
(each also _bn), googlenet (torchvision's; their .pth checkpoints load as they are).
Image sizes are printed as H x W (height first), as the API's [H, W] and the HTTP service's "size".`;

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

// --scales: shorter-side sizes and/or 'natural' (each image as it is), as sp.classify takes them.
function scalesOf(v) {
  const parts = String(v).split(',').map((x) => x.trim());
  const out = parts.map((x) => (x === 'natural' ? x : Number(x)));
  if (!out.length || !out.every((x) => x === 'natural' || (Number.isInteger(x) && x > 0)))
    throw new Error(`--scales must be positive integers and/or natural, separated by commas, got ${JSON.stringify(v)}`);
  return out;
}

const readLabelsFile = (file) => fs.readFileSync(file, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter(Boolean);

// What `train --out` and the demo store besides the weights: the class names ("labels", a JSON
// array) and the normalisation the model was trained with ("mean", "std", JSON arrays).
async function weightsInfo(sp, o, model) {
  const info = { labels: undefined, mean: undefined, std: undefined, notes: [] };
  if (o.labels) info.labels = readLabelsFile(o.labels);
  if (!o.weights) return info;
  const md = await sp.readSafetensorsMetadata(o.weights);
  const json = (k) => {
    if (md[k] === undefined) return undefined;
    try {
      return JSON.parse(md[k]);
    } catch {
      info.notes.push(`the "${k}" stored in ${o.weights} is not JSON: ignored`);
      return undefined;
    }
  };
  const labels = json('labels');
  if (!o.labels && labels !== undefined) {
    if (Array.isArray(labels) && labels.length === model.classes && labels.every((l) => typeof l === 'string')) {
      info.labels = labels;
      info.notes.push(`class names from ${path.basename(o.weights)}: ${labels.length <= 8 ? labels.join(', ') : `${labels.slice(0, 8).join(', ')}, ...`}`);
    } else info.notes.push(`the labels stored in ${o.weights} are not ${model.classes} strings: ignored`);
  }
  const triple = (v) => Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
  const mean = json('mean'), std = json('std');
  if (mean !== undefined || std !== undefined) {
    if (triple(mean) && triple(std) && std.every((x) => x > 0)) Object.assign(info, { mean, std });
    else info.notes.push(`the mean/std stored in ${o.weights} are not 3 numbers each: ignored`);
  }
  return info;
}

function printResults(results, ms) {
  for (const r of results) {
    console.log(`\n${r.source}  (H x W: ${r.sizes.map(([h, w]) => `${h}x${w}`).join(', ')})`);
    for (const t of r.top) console.log(`  ${(t.score * 100).toFixed(2).padStart(6)}%  ${t.label ?? `class ${t.index}`}`);
  }
  console.log(`\n${results.length} image(s) in ${ms.toFixed(0)} ms`);
}

async function classifyCmd(sp, o) {
  const files = o._.slice(1);
  if (!files.length) throw new Error('classify: name at least one image');
  const fileLabels = o.labels ? readLabelsFile(o.labels) : undefined;
  const classes = o.classes ? ints(o.classes, 'classes')[0] : fileLabels ? fileLabels.length : undefined;
  if (!o.arch && !o.weights) throw new Error('classify: give --arch, or --weights of a file saved by sppnet');
  const scales = o.scales ? scalesOf(o.scales) : [224];
  const topk = o.topk ? ints(o.topk, 'topk')[0] : 5;
  const model = await sp.loadModel({ arch: o.arch, weights: o.weights, classes, device: o.device, linearWeights: o['linear-weights'] });
  try {
    if (!o.weights) console.warn(`note: no --weights given: ${o.arch} has random (He-initialised) weights, so its scores mean nothing`);
    const info = await weightsInfo(sp, o, model);
    // Notes go to stderr, so stdout holds the results only.
    for (const n of info.notes) console.warn(`note: ${n}`);
    if (info.mean) console.warn(`note: images normalised as the model was trained: mean ${info.mean.join(', ')}, std ${info.std.join(', ')}`);
    const t0 = performance.now();
    const res = await sp.classify(model, files, { scales, topk, labels: info.labels, mean: info.mean, std: info.std });
    printResults(res, performance.now() - t0);
  } finally {
    model.dispose();
  }
}

// Writes samples of a synthetic dataset as image files (values in about [-1, 1] -> 0..255), in
// several formats; read back with mean = std = 0.5 they give the same floats (to 8 bits).
async function writeSamples(sp, ds, indices, dir) {
  const sharp = require('sharp');
  const fmts = ['png', 'jpeg', 'webp'];
  const files = [];
  for (let k = 0; k < indices.length; k++) {
    const s = await ds.get(indices[k]);
    const [C, H, W] = s.shape;
    const px = Buffer.alloc(C * H * W);
    for (let c = 0; c < C; c++) for (let i = 0; i < H * W; i++) px[i * C + c] = Math.max(0, Math.min(255, Math.round(((s.data[c * H * W + i] + 1) / 2) * 255)));
    const fmt = fmts[k % fmts.length];
    const file = path.join(dir, `${String(k).padStart(2, '0')}-${ds.classes[s.label]}-${H}x${W}.${fmt === 'jpeg' ? 'jpg' : fmt}`);
    await sharp(px, { raw: { width: W, height: H, channels: C } })[fmt](fmt === 'png' ? {} : { quality: 95 }).toFile(file);
    files.push({ file, label: ds.classes[s.label] });
  }
  return files;
}

async function demoCmd(sp, o) {
  const b = sp.backend();
  console.log(`sppnet ${require('../package.json').version}: ${b.device} (${b.reason})`);
  const dir = typeof o.out === 'string' ? o.out : 'sppnet-demo';
  fs.mkdirSync(dir, { recursive: true });
  const weights = path.join(dir, 'demo-spp.safetensors');
  console.log(`The weights and images go to ${dir}${path.sep} (kept; delete the folder when done; --out DIR puts them elsewhere).`);
  const classes = 4;
  const train = sp.data.synthetic({ classes, count: 1600, minSize: 40, maxSize: 112, seed: 11 });
  const test = sp.data.synthetic({ classes, count: 200, minSize: 40, maxSize: 112, seed: 12 });
  console.log(`\n1. Train a small SPP-net (3 conv layers, SPP {4, 2, 1}, 2 fc) on ${train.description},`);
  console.log('   with multi-size training (each image warped to 48 or 64 px, switching every epoch, as the paper does).');
  const spec = sp.ablationSpec('spp', classes, [4, 2, 1], 8);
  spec.name = 'demo-spp';
  const model = await sp.buildModel({ spec, seed: 1, device: o.device });
  await sp.fit(model, train, { epochs: 6, batchSize: 32, sizes: [48, 64], input: 'warp', optimizer: { type: 'adam', lr: 0.002 }, schedule: { type: 'cosine' }, seed: 1, progress: true });
  const ev = await sp.evaluate(model, test, { input: 'natural' });
  console.log(`   held-out images at their natural sizes (40..112 px, never cropped or warped): ${(100 * ev.accuracy).toFixed(1)}% correct of ${ev.count}`);
  // The synthetic images are floats in about [-1, 1]: as files (0..255) they read back with mean = std = 0.5.
  const norm = { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
  await model.save(weights, { labels: JSON.stringify(train.classes), mean: JSON.stringify(norm.mean), std: JSON.stringify(norm.std) });
  model.dispose();
  console.log(`   saved ${weights} (with the class names and the input normalisation)`);

  const files = await writeSamples(sp, test, [0, 1, 2, 3, 4, 5, 6, 7], dir);
  console.log(`\n2. Load the saved weights and classify ${files.length} image files (PNG, JPEG, WebP) of different sizes,`);
  console.log(`   written to ${dir}${path.sep}, each as it is: one ragged batch, no crop or warp.`);
  const loaded = await sp.loadModel({ weights, device: o.device });
  const t0 = performance.now();
  const res = await sp.classify(loaded, files.map((f) => f.file), { ...norm, scales: ['natural'], topk: 2, labels: [...train.classes] });
  printResults(res.map((r) => ({ ...r, source: path.basename(r.source) })), performance.now() - t0);
  const right = res.filter((r, i) => r.top[0].label === files[i].label).length;
  console.log(`${right} of ${files.length} files classified as the shape they show.`);
  loaded.dispose();
  console.log(`\nThe weights and the ${files.length} images are in ${dir}${path.sep}. Classify them (or your own drawings) again with:`);
  console.log(`  npx sppnet classify --weights ${weights} --scales natural ${path.join(dir, '*.png')}`);
}

function parseSizes(v) {
  if (v === undefined || v === 'natural') return 'natural';
  const m = /^(\d+)-(\d+)$/.exec(String(v));
  if (m) return { min: Number(m[1]), max: Number(m[2]) };
  return ints(v, 'sizes');
}

async function datasetOf(sp, what, o, seed, split = 'train') {
  if (what === 'fashion-mnist') {
    const count = o.count === undefined ? undefined : ints(o.count, 'count')[0];
    return sp.data.fashionMnist(typeof o['data-dir'] === 'string' ? o['data-dir'] : sp.FASHION_MNIST_DIR, { split, count });
  }
  if (what === 'synthetic') return sp.data.synthetic({ classes: o.classes ? ints(o.classes, 'classes')[0] : 4, count: o.count ? ints(o.count, 'count')[0] : 1000, seed });
  return sp.data.imageFolder(what, { shorterSide: o['shorter-side'] ? ints(o['shorter-side'], 'shorter-side')[0] : undefined });
}

// Where train saves the model: --out, or ./NAME.safetensors; decided (and checked) before training.
function trainOut(o, name) {
  if (o['no-out']) {
    if (o.out !== undefined) throw new Error('train: give --out FILE or --no-out, not both');
    console.warn('note: --no-out: the trained model will not be saved (--checkpoint keeps one per epoch)');
    return null;
  }
  if (o.out === true) throw new Error('train: --out needs a file name');
  const out = o.out ?? `${name}.safetensors`;
  if (o.out === undefined && fs.existsSync(out))
    throw new Error(`train: no --out given and ${out} exists: give --out FILE (an existing --out file is replaced), or --no-out`);
  const dirOf = path.dirname(path.resolve(out));
  if (!fs.existsSync(dirOf) || !fs.statSync(dirOf).isDirectory()) throw new Error(`train: the folder of --out ${out} does not exist`);
  try {
    fs.accessSync(dirOf, fs.constants.W_OK);
  } catch {
    throw new Error(`train: cannot write in ${dirOf} (the folder of --out ${out})`);
  }
  return out;
}

async function trainCmd(sp, o) {
  if (!o.data) throw new Error('train: give --data synthetic or --data FOLDER (one sub-folder of images per class)');
  const seed = o.seed ? Number(o.seed) : 0;
  const data = await datasetOf(sp, o.data, o, seed * 2 + 1);
  // --val fashion-mnist is its test split, all 10,000 images unless --val-count says otherwise.
  const valCount = o['val-count'] ?? (o.val === 'fashion-mnist' ? undefined : 300);
  const val = o.val ? await datasetOf(sp, o.val, { ...o, count: valCount }, seed * 2 + 2, 'test') : undefined;
  const classes = data.classes.length;
  let spec;
  if (o.spec) spec = JSON.parse(fs.readFileSync(o.spec, 'utf8'));
  else if (!o.arch && o.data === 'fashion-mnist') {
    spec = sp.fashionSpec('spp', classes, [4, 2, 1], o.dropout === undefined ? 0 : Number(o.dropout));
    console.log('no --arch or --spec: the small Fashion-MNIST SPP-net (sp.fashionSpec: conv 16-32-64, SPP {4, 2, 1}, fc 128, fc 10)');
  } else if (!o.arch) throw new Error(`train: give --arch A (${sp.ARCHS.join(', ')}) or --spec net.json`);
  const out = trainOut(o, spec ? spec.name : o.arch);
  const model = await sp.buildModel({ arch: spec ? undefined : o.arch, spec, classes, seed, device: o.device });
  console.log(`training ${model.spec.name} (${classes} classes) on ${data.description}, ${sp.backend().device}`);
  if (out) console.log(`the model will be saved to ${out} at the end (--out)`);
  const optimizer = { type: o.optimizer ?? 'sgd' };
  if (o.lr) optimizer.lr = Number(o.lr);
  if (o.momentum) optimizer.momentum = Number(o.momentum);
  if (o['weight-decay']) optimizer.weightDecay = Number(o['weight-decay']);
  const res = await sp.fit(model, data, {
    epochs: o.epochs ? ints(o.epochs, 'epochs')[0] : 10,
    batchSize: o.batch ? ints(o.batch, 'batch')[0] : 32,
    sizes: parseSizes(o.sizes),
    input: o.input ?? 'crop',
    flip: !o['no-flip'],
    optimizer,
    schedule: { type: o.schedule ?? 'constant' },
    validation: val,
    seed,
    checkpoint: o.checkpoint,
    resume: o.resume,
    progress: true,
  });
  if (data.skipped && data.skipped.length) console.log(`${data.skipped.length} file(s) could not be decoded and were skipped`);
  if (val && o['val-sizes']) {
    // The final model on the validation images resized to other sizes (SPP nets take any size).
    for (const n of ints(o['val-sizes'], 'val-sizes')) {
      const at = { classes: val.classes, length: val.length, description: `${val.description} at ${n}x${n}`, get: async (i) => sp.data.resize(await val.get(i), n, n) };
      const e = await sp.evaluate(model, at, { input: 'natural', batchSize: 100 });
      console.log(`validation at ${n}x${n}: accuracy ${(100 * e.accuracy).toFixed(2)}%`);
    }
  }
  if (out && o.data === 'fashion-mnist') {
    // Grey images in 0..1: the class names are stored; image files are not what this model reads.
    await model.save(out, { labels: JSON.stringify(data.classes), input: 'grey 28x28 IDX images, values 0..1 (sp.data.fashionMnist)' });
    console.log(`saved ${out}`);
  } else if (out) {
    // The class names and the normalisation that image files need to look like the training data:
    // classify reads both back. Synthetic samples are floats in about [-1, 1] (files: mean = std = 0.5).
    const norm = o.data === 'synthetic' ? { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] } : { mean: [...sp.IMAGENET_MEAN], std: [...sp.IMAGENET_STD] };
    await model.save(out, { labels: JSON.stringify(data.classes), mean: JSON.stringify(norm.mean), std: JSON.stringify(norm.std) });
    console.log(`saved ${out}`);
  }
  const last = res.history[res.history.length - 1];
  console.log(`done: ${res.history.length} epochs, last loss ${last.loss.toFixed(4)}, accuracy ${(100 * last.accuracy).toFixed(1)}%${last.validation ? `, validation ${(100 * last.validation.accuracy).toFixed(1)}%` : ''}`);
  model.dispose();
}

async function ablationCmd(sp, o) {
  if (o.data !== undefined && o.data !== 'synthetic') {
    if (o.data !== 'fashion-mnist') throw new Error(`ablation: --data must be synthetic (the default) or fashion-mnist, got ${JSON.stringify(o.data)}`);
    return fashionAblationCmd(sp, o);
  }
  const n = (k, d) => (o[k] ? ints(o[k], k)[0] : d);
  const opts = { epochs: n('epochs', 6), trainImages: n('train', 1600), testImages: n('test', 400), classes: n('classes', 4), size: n('size', 64), seed: n('seed', 1), batchSize: n('batch', 32), device: o.device, progress: true };
  if (o['multi-sizes'] !== undefined) opts.multiSizes = parseSizes(o['multi-sizes']);
  console.log(`SPP-net ablation on synthetic shapes: ${opts.classes} classes, ${opts.trainImages} training / ${opts.testImages} test images, ${opts.epochs} epochs each, ${sp.backend().device}`);
  const r = await sp.ablation({ ...opts, onRow: (row) => console.log(`  ${row.name}, tested on ${row.test}: top-1 error ${(100 * row.error).toFixed(2)}%`) });
  const table = sp.ablationTable(r);
  console.log(`\n${table}\n`);
  const dir = o.out ?? '.';
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'ablation.md'), `# SPP-net ablation (synthetic data)\n\nCommand: \`sppnet ${process.argv.slice(2).join(' ')}\`\n\n${r.settings.data}\n\n${table}\n`);
  fs.writeFileSync(path.join(dir, 'ablation.json'), JSON.stringify(r, null, 1));
  const svg = require('../dist/io/svg');
  const chart = svg.barChart({
    title: 'SPP-net ablation on synthetic shapes: top-1 error (lower is better)',
    subtitle: `${r.settings.classes} classes, ${r.settings.trainImages} train / ${r.settings.testImages} test images, ${r.settings.epochs} epochs, seed ${r.settings.seed}, ${r.settings.device}`,
    yTitle: 'top-1 error, %',
    yMin: 0,
    width: 760,
    height: 420,
    categories: r.rows.map((x) => x.name),
    categoryNotes: r.rows.map((x) => x.test.replace(/ \(.*\)$/, '').slice(0, 34)),
    series: [{ name: 'top-1 error %', values: r.rows.map((x) => 100 * x.error) }],
    notes: r.rows.map((x) => `${x.name}: trained ${x.training}; tested on ${x.test}`),
  });
  svg.write(path.join(dir, 'ablation.svg'), chart);
  console.log(`wrote ${path.join(dir, 'ablation.md')}, ablation.json and ablation.svg`);
}

// ablation --data fashion-mnist: no SPP, SPP single-size and SPP multi-size (per epoch, per batch)
// on Fashion-MNIST, several seeds, tested at other sizes than the training size; table + SVG.
async function fashionAblationCmd(sp, o) {
  const n = (k) => (o[k] === undefined ? undefined : ints(o[k], k)[0]);
  const range = (k) => {
    if (o[k] === undefined) return undefined;
    const m = /^(\d+)-(\d+)$/.exec(String(o[k]));
    if (!m) throw new Error(`--${k} must be MIN-MAX, got ${JSON.stringify(o[k])}`);
    return { min: Number(m[1]), max: Number(m[2]) };
  };
  const opts = {
    dir: typeof o['data-dir'] === 'string' ? o['data-dir'] : undefined, trainImages: n('train'), testImages: n('test'), epochs: n('epochs'), batchSize: n('batch'), size: n('size'),
    epochSizes: o['epoch-sizes'] ? ints(o['epoch-sizes'], 'epoch-sizes') : undefined, batchSizes: range('batch-sizes'),
    testSizes: o['test-sizes'] ? ints(o['test-sizes'], 'test-sizes') : undefined, randomTest: range('random-test'),
    seeds: o.seeds ? String(o.seeds).split(',').map(Number) : undefined, arms: o.arms ? String(o.arms).split(',') : undefined,
    optimizer: o.lr ? { type: 'adam', lr: Number(o.lr) } : undefined, device: o.device, progress: o.progress ? true : false,
  };
  const t0 = Date.now();
  const name = { nospp: 'no SPP', single: 'SPP, single-size', 'multi-epoch': 'SPP, multi-size (per epoch)', 'multi-batch': 'SPP, multi-size (per batch)' };
  console.log(`SPP-net ablation on Fashion-MNIST, ${sp.backend().device}`);
  const r = await sp.fashionAblation({
    ...opts,
    onRun: (x) => console.log(`  ${name[x.arm]}, seed ${x.seed}: ${Object.entries(x.errors).map(([t, e]) => `${t} ${(100 * e).toFixed(2)}%`).join(', ')} (train ${x.trainSeconds.toFixed(0)} s, test ${x.evalSeconds.toFixed(0)} s)`),
  });
  const s = r.settings;
  const table = sp.fashionTable(r);
  const about = `${s.data}; test: ${s.testData}. ${s.epochs} epochs at batch ${s.batchSize} (${s.steps} optimizer steps per network), ${s.optimizer.type} lr ${s.optimizer.lr} cosine, seeds ${s.seeds.join(', ')}, ${s.device}; ${((Date.now() - t0) / 60000).toFixed(1)} min in all.`;
  console.log(`\n${about}\nTop-1 error (%), mean ± standard deviation over ${s.seeds.length} seed(s):\n\n${table}\n`);
  const dir = o.out ?? '.';
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'ablation-fashion.md'), `# SPP-net ablation (Fashion-MNIST)\n\nCommand: \`sppnet ${process.argv.slice(2).join(' ')}\`\n\n${about}\n\nTop-1 error (%), mean ± standard deviation over the seeds:\n\n${table}\n`);
  fs.writeFileSync(path.join(dir, 'ablation-fashion.json'), JSON.stringify(r, null, 1));
  require('../dist/io/svg').write(path.join(dir, 'ablation-fashion.svg'), require('../dist/train/fashion').fashionPlot(r));
  console.log(`wrote ${path.join(dir, 'ablation-fashion.md')}, ablation-fashion.json and ablation-fashion.svg`);
}

async function serveCmd(sp, o) {
  const fileLabels = o.labels ? readLabelsFile(o.labels) : undefined;
  const classes = o.classes ? ints(o.classes, 'classes')[0] : fileLabels ? fileLabels.length : undefined;
  if (o.detector === true) throw new Error('serve: --detector needs a file (sppnet train-detector --out FILE)');
  if (!o.arch && !o.weights && !o.detector) throw new Error('serve: give --arch, or --weights of a file saved by sppnet, or --detector FILE');
  const detector = o.detector ? await sp.loadDetector(o.detector, { device: o.device }) : undefined;
  let model, labels, mean, std;
  if (!o.arch && !o.weights) {
    // The detector's network classifies whole images too: background and its classes.
    model = detector.model;
    [labels, mean, std] = [['background', ...detector.config.classes], detector.config.mean, detector.config.std];
  } else {
    model = await sp.loadModel({ arch: o.arch, weights: o.weights, classes, device: o.device, linearWeights: o['linear-weights'] });
    let notes;
    ({ labels, mean, std, notes } = await weightsInfo(sp, o, model));
    for (const n of notes) console.warn(`note: ${n}`);
  }
  if (mean) console.warn(`note: images normalised as the model was trained: mean ${mean.join(', ')}, std ${std.join(', ')}`);
  const num = (name) => (o[name] === undefined ? undefined : ints(o[name], name)[0]);
  const { app, close } = await sp.createServer({
    model, labels, mean, std, detector, maxBatchSize: num('max-batch'), maxQueueDelayMs: o['max-delay'] === undefined ? undefined : Number(o['max-delay']),
    maxQueueLength: num('max-queue'), timeoutMs: num('timeout'), shorterSide: o['shorter-side'] === 'none' ? null : num('shorter-side'),
    maxPixels: num('max-pixels'), maxBatchPixels: num('max-batch-pixels'), maxQueuedPixels: num('max-queued-pixels'),
    bodyLimit: num('body-limit'), maxFiles: num('max-files'), maxRssBytes: num('max-rss'),
    // A bare flag parses as true: String() makes it NaN, which createServer refuses.
    heapGrowingPercent: o['heap-growing-percent'] === undefined ? require('../dist/serve/server').SERVE_HEAP_GROWING_PERCENT : Number(String(o['heap-growing-percent'])),
  });
  const port = o.port === undefined ? 8080 : Number(o.port);
  const address = await app.listen({ port, host: o.host || '127.0.0.1' });
  const b = sp.backend();
  console.log(`sppnet serving ${model.spec.name} (${model.classes} classes)${detector ? `, and detection of ${detector.config.classes.length} classes on POST /v1/detect,` : ''} on ${address} [${b.device}: ${b.reason}]`);
  let stopping = false;
  const stop = (sig) => {
    if (stopping) return;
    stopping = true;
    console.log(`${sig}: finishing requests in flight, then exiting`);
    close().then(() => {
      model.dispose();
      detector?.dispose();
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

// make-detection-data --out DIR: a VOC-format dataset of synthetic scenes (sp.makeDetectionData).
function rangeOf(v, name) {
  const m = /^(\d+)(?:-(\d+))?$/.exec(String(v));
  if (!m) throw new Error(`--${name} must be N or MIN-MAX (integers), got ${JSON.stringify(v)}`);
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

async function makeDetectionDataCmd(sp, o) {
  if (typeof o.out !== 'string') throw new Error('make-detection-data: give --out DIR (a new or empty folder)');
  const opts = {};
  if (o.images !== undefined) opts.images = ints(o.images, 'images')[0];
  if (o.seed !== undefined) opts.seed = Number(o.seed);
  if (o.size !== undefined) {
    // MIN-MAX (or N): each side drawn from the range; WxH, or WxH-WxH: per axis.
    const m = /^(\d+)x(\d+)(?:-(\d+)x(\d+))?$/.exec(String(o.size));
    if (m) [opts.minSize, opts.maxSize] = [[Number(m[1]), Number(m[2])], [Number(m[3] ?? m[1]), Number(m[4] ?? m[2])]];
    else [opts.minSize, opts.maxSize] = rangeOf(o.size, 'size');
  }
  if (o.objects !== undefined) [opts.minObjects, opts.maxObjects] = rangeOf(o.objects, 'objects');
  if (o.shapes !== undefined) opts.shapes = ints(o.shapes, 'shapes')[0];
  if (o['test-fraction'] !== undefined) opts.testFraction = Number(o['test-fraction']);
  if (o.fashion !== undefined) opts.fashion = o.fashion === true ? true : String(o.fashion);
  const t0 = Date.now();
  const r = await sp.makeDetectionData(o.out, opts);
  console.log(`wrote ${r.trainval + r.test} images (${r.trainval} trainval, ${r.test} test) to ${r.root} in ${((Date.now() - t0) / 1000).toFixed(1)} s:`);
  console.log(`  ${r.objects} objects (${r.difficult} difficult, ${r.truncated} truncated) of ${r.classes.length} classes: ${r.classes.join(', ')}`);
  console.log(`read it with: sp.data.voc('${r.root}', { split: 'test', classes: sp.detectionClasses('${r.root}') })`);
}

// convert IN.pth OUT.safetensors: a PyTorch checkpoint's state_dict as safetensors (float32).
async function convertCmd(sp, o) {
  const [, input, output] = o._;
  if (!input || !output || o._.length !== 3) throw new Error('convert takes two files: IN.pth OUT.safetensors');
  if (fs.existsSync(output)) throw new Error(`convert: ${output} exists already; remove it or choose another name`);
  const t0 = Date.now();
  const { tensors } = await sp.readPth(input, 'sppnet convert');
  await sp.writeSafetensors(output, tensors, { source: path.basename(input) });
  const floats = [...tensors.values()].reduce((a, t) => a + t.data.length, 0);
  console.log(`wrote ${output}: ${tensors.size} tensors, ${floats} floats (float32), in ${Date.now() - t0} ms`);
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
  if (cmd === 'train') return trainCmd(sp, o);
  if (cmd === 'ablation') return ablationCmd(sp, o);
  if (cmd === 'convert') return convertCmd(sp, o);
  if (cmd === 'make-detection-data') return makeDetectionDataCmd(sp, o);
  const detect = require('./detect');
  if (cmd === 'train-detector') return detect.trainDetectorCmd(sp, o);
  if (cmd === 'detect') return detect.detectCmd(sp, o);
  if (cmd === 'evaluate-detector') return detect.evaluateDetectorCmd(sp, o);
  throw new Error(`unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
}

main().catch((e) => {
  console.error(`sppnet: ${e.message}`);
  process.exitCode = 1;
});
