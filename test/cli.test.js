'use strict';
// The command line: classify with saved weights and labels, train -> classify / serve with the
// class names stored in the weights, where train saves, the demo, and errors that exit 1.
const { expect } = require('chai');
const { runNode, startServe } = require('./support/child');
const fs = require('fs');
const os = require('os');
const path = require('path');
const sharp = require('sharp');
const { sp } = require('./support/helpers');

const cli = path.resolve(__dirname, '..', 'bin', 'sppnet.js');
const run = (args, { timeout = 60000, ...opts } = {}) => runNode([cli, ...args], { timeout, env: { ...process.env, SPPNET_DEVICE: 'cpu' }, ...opts });
// A network small enough to train in a second on synthetic images cropped to 32 px.
const TINY_NET = { name: 'tinynet', inChannels: 3, layers: [{ type: 'conv', name: 'c1', out: 4, kernel: 3, stride: 2, relu: true }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'fc', out: 3 }] };

describe('command line', function () {
  let dir;
  before(async function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-cli-'));
    const m = await sp.buildModel({
      spec: { name: 'tiny', inChannels: 3, layers: [{ type: 'conv', name: 'c1', out: 4, kernel: 3 }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'fc', out: 3 }] },
      seed: 5,
      device: 'cpu',
    });
    await m.save(path.join(dir, 'tiny.safetensors'));
    m.dispose();
    fs.writeFileSync(path.join(dir, 'labels.txt'), 'cat\ndog\nbird\n');
    await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 200, g: 10, b: 10 } } }).png().toFile(path.join(dir, 'a.png'));
    await sharp({ create: { width: 25, height: 50, channels: 3, background: { r: 10, g: 10, b: 200 } } }).jpeg().toFile(path.join(dir, 'b.jpg'));
    fs.writeFileSync(path.join(dir, 'bad.jpg'), 'not a jpeg');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('classify prints the top-k with labels for each image, sizes as H x W', function () {
    const r = run(['classify', '--weights', path.join(dir, 'tiny.safetensors'), '--labels', path.join(dir, 'labels.txt'), '--topk', '2', '--scales', '32,48', path.join(dir, 'a.png'), path.join(dir, 'b.jpg')]);
    expect(r.status, r.stderr).to.equal(0);
    // a.png is 40 wide, 30 high: shorter side 32 -> 32 x 43 (H x W), as HTTP's size: [H, W].
    expect(r.stdout).to.match(/a\.png\s+\(H x W: 32x43, 48x64\)\n\s+\d+\.\d\d%\s+(cat|dog|bird)\n\s+\d+\.\d\d%\s+(cat|dog|bird)\n/);
    expect(r.stdout).to.match(/b\.jpg\s+\(H x W: 64x32, 96x48\)/);
    expect(r.stdout).to.match(/2 image\(s\) in \d+ ms/);
  });

  it('classify --scales natural (or mixed with sizes) as the API takes them; bad scales exit 1', function () {
    let r = run(['classify', '--weights', path.join(dir, 'tiny.safetensors'), '--scales', 'natural,48', path.join(dir, 'a.png')]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/a\.png\s+\(H x W: 30x40, 48x64\)\n\s+\d+\.\d\d%\s+class \d/);
    r = run(['classify', '--weights', path.join(dir, 'tiny.safetensors'), '--scales', 'natural,0', path.join(dir, 'a.png')]);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/--scales must be positive integers and\/or natural/);
  });

  it('classify --linear-weights bf16 keeps the fc weights in bfloat16: the same top classes, scores within the rounding', function () {
    const args = ['classify', '--weights', path.join(dir, 'tiny.safetensors'), '--labels', path.join(dir, 'labels.txt'), '--topk', '3', path.join(dir, 'a.png')];
    const fp = run(args), half = run([...args, '--linear-weights', 'bf16']);
    expect(fp.status, fp.stderr).to.equal(0);
    expect(half.status, half.stderr).to.equal(0);
    const scores = (out) => [...out.matchAll(/(\d+\.\d\d)%\s+(\w+)/g)].map((m) => [m[2], Number(m[1])]);
    const a = scores(fp.stdout), b = scores(half.stdout);
    expect(a.length).to.equal(3);
    for (const [label, p] of a) expect(Math.abs(b.find((x) => x[0] === label)[1] - p), half.stdout).to.be.at.most(1);
    const bad = run([...args, '--linear-weights', 'fp16']);
    expect(bad.status).to.equal(1);
    expect(bad.stderr).to.match(/options.linearWeights must be 'fp32' or 'bf16'/);
  });

  it('the usage names every option the commands read', function () {
    const r = run(['--help']);
    expect(r.status).to.equal(0);
    for (const opt of ['--count', '--val-count', '--scales 224,256|natural', '--no-out', 'sppnet demo [--out DIR]', 'H x W']) expect(r.stdout).to.include(opt);
    // Every --option that bin/sppnet.js reads appears in the usage.
    const src = fs.readFileSync(cli, 'utf8');
    const read = new Set([...src.matchAll(/\bo\['([a-z-]+)'\]|\bo\.([a-z]+)\b/g)].map((m) => m[1] || m[2]).filter((k) => k !== '_' && k !== 'help'));
    const mentioned = new Set([...r.stdout.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1]));
    expect([...read].filter((k) => !mentioned.has(k)), 'options read but not in the usage').to.deep.equal([]);
  });

  describe('train, then classify and serve with the class names it stored', function () {
    let work, weights;
    before(function () {
      work = path.join(dir, 'train');
      fs.mkdirSync(work);
      fs.writeFileSync(path.join(work, 'net.json'), JSON.stringify(TINY_NET));
    });
    const train = (extra) => run(['train', '--spec', 'net.json', '--data', 'synthetic', '--classes', '3', '--count', '48', '--sizes', '32', '--epochs', '1', '--batch', '16', ...extra], { cwd: work });

    it('train --out saves the class names; classify and serve print them, not class N', async function () {
      this.timeout(60000);
      weights = path.join(work, 'shapes.safetensors');
      const t = train(['--out', weights]);
      expect(t.status, t.stderr).to.equal(0);
      expect(t.stdout).to.include(`the model will be saved to ${weights} at the end (--out)`);
      expect(t.stdout).to.include(`saved ${weights}`);
      // stderr is a pipe here: progress lines carry an ETA.
      expect(t.stderr).to.match(/epoch 1\/1 \[=+\] 3\/3 loss .* eta \d+s/);
      const md = await sp.readSafetensorsMetadata(weights);
      expect(JSON.parse(md.labels)).to.deep.equal(['disc', 'square', 'triangle']);
      expect(JSON.parse(md.mean)).to.deep.equal([0.5, 0.5, 0.5]);

      const c = run(['classify', '--weights', weights, '--topk', '3', '--scales', 'natural', path.join(dir, 'a.png')]);
      expect(c.status, c.stderr).to.equal(0);
      expect(c.stderr).to.include('class names from shapes.safetensors: disc, square, triangle');
      expect(c.stderr).to.include('normalised as the model was trained: mean 0.5, 0.5, 0.5, std 0.5, 0.5, 0.5');
      expect(c.stdout).to.match(/\d%\s+(disc|square|triangle)\n.*\d%\s+(disc|square|triangle)\n.*\d%\s+(disc|square|triangle)\n/s);
      expect(c.stdout).to.not.match(/class \d/);
      // --labels still wins over the stored names.
      const l = run(['classify', '--weights', weights, '--labels', path.join(dir, 'labels.txt'), '--topk', '1', path.join(dir, 'a.png')]);
      expect(l.status, l.stderr).to.equal(0);
      expect(l.stdout).to.match(/\d%\s+(cat|dog|bird)\n/);
      expect(l.stderr).to.not.include('class names from');

      const { child, url, output } = await startServe(['--weights', weights, '--port', '0']);
      try {
        const out = output();
        expect(out).to.include('class names from shapes.safetensors');
        // Trained on synthetic images (mean = std = 0.5): served with the same normalisation, said at start.
        expect(out).to.include('normalised as the model was trained: mean 0.5, 0.5, 0.5, std 0.5, 0.5, 0.5');
        const res = await fetch(`${url}/v1/classify?topk=3`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: fs.readFileSync(path.join(dir, 'a.png')) });
        expect(res.status).to.equal(200);
        const body = await res.json();
        expect(body.results[0].size).to.deep.equal([256, 341]); // resized to the default shorter side
        expect(body.results[0].top.map((x) => x.label).sort()).to.deep.equal(['disc', 'square', 'triangle']);
      } finally {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    });

    it('train without --out saves to ./NAME.safetensors, refuses up front to replace it, and --no-out keeps nothing', function () {
      this.timeout(60000);
      const dflt = path.join(work, 'tinynet.safetensors');
      let t = train([]);
      expect(t.status, t.stderr).to.equal(0);
      expect(t.stdout).to.include('the model will be saved to tinynet.safetensors at the end (--out)');
      expect(fs.existsSync(dflt)).to.equal(true);
      const t0 = Date.now();
      t = train([]);
      expect(t.status).to.equal(1);
      expect(t.stderr).to.include('train: no --out given and tinynet.safetensors exists: give --out FILE (an existing --out file is replaced), or --no-out');
      expect(t.stderr).to.not.match(/epoch/); // refused before training
      expect(Date.now() - t0).to.be.below(20000);
      fs.rmSync(dflt);
      t = train(['--no-out']);
      expect(t.status, t.stderr).to.equal(0);
      expect(t.stderr).to.include('note: --no-out: the trained model will not be saved');
      expect(fs.existsSync(dflt)).to.equal(false);
      t = train(['--out', path.join(work, 'no', 'such', 'dir', 'x.safetensors')]);
      expect(t.status).to.equal(1);
      expect(t.stderr).to.match(/the folder of --out .*x\.safetensors does not exist/);
      t = train(['--out', 'x.safetensors', '--no-out']);
      expect(t.status).to.equal(1);
      expect(t.stderr).to.include('give --out FILE or --no-out, not both');
    });
  });

  it('make-detection-data writes a VOC-format dataset that sp.data.voc reads; it never writes into a folder with files', async function () {
    this.timeout(60000);
    const out = path.join(dir, 'det');
    const r = run(['make-detection-data', '--out', out, '--images', '4', '--seed', '3', '--size', '64x48-80x60', '--objects', '2-3', '--shapes', '4', '--test-fraction', '0.25']);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/wrote 4 images \(3 trainval, 1 test\) to .*det in [\d.]+ s:\n  \d+ objects \(\d+ difficult, \d+ truncated\) of 4 classes: disc, square, triangle, cross\n/);
    const classes = sp.detectionClasses(out);
    const ds = await sp.data.voc(out, { classes });
    expect(ds.length).to.equal(3);
    for (const im of ds.images) {
      expect(im.width).to.be.within(64, 80);
      expect(im.height).to.be.within(48, 60);
    }
    const again = run(['make-detection-data', '--out', out, '--images', '2']);
    expect(again.status).to.equal(1);
    expect(again.stderr).to.include('exists and is not an empty folder');
    const bad = run(['make-detection-data', '--out', path.join(dir, 'det2'), '--objects', 'many']);
    expect(bad.status).to.equal(1);
    expect(bad.stderr).to.include('--objects must be N or MIN-MAX');
  });

  it('train-detector, evaluate-detector and detect: a detector file, mAP per class, JSON boxes and a drawn picture', async function () {
    this.timeout(300000);
    const data = path.join(dir, 'detdata');
    let r = run(['make-detection-data', '--out', data, '--images', '8', '--seed', '4', '--size', '96-128', '--shapes', '3']);
    expect(r.status, r.stderr).to.equal(0);
    const w = path.join(dir, 'det.safetensors');
    r = run(['train-detector', '--data', data, '--out', w, '--window-side', '32', '--scales', '64,96', '--single-scale', '96', '--epochs', '1', '--iterations', '20'], { timeout: 240000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/stage 1 epoch 1\/1/).and.match(/stage 4: box regressors/).and.match(/wrote .*det\.safetensors/);
    r = run(['evaluate-detector', '--weights', w, '--data', data, '--scales', 'multi'], { timeout: 240000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/disc +AP +[\d.]+|disc +AP +NaN/).and.match(/mAP [\d.]+/).and.match(/median ms per image: proposals [\d.]+, decode/);
    const img = path.join(data, 'JPEGImages', '000000.jpg');
    const outDir = path.join(dir, 'drawn');
    r = run(['detect', '--weights', w, '--out-dir', outDir, '--draw-min', '0', img], { timeout: 120000 });
    expect(r.status, r.stderr).to.equal(0);
    const line = JSON.parse(r.stdout.trim().split('\n')[0]);
    expect(line.image).to.equal(img);
    expect(line.detections.length).to.be.above(0);
    expect(line.detections[0]).to.have.keys(['label', 'score', 'box']);
    const meta = await sharp(path.join(outDir, '000000.detections.jpg')).metadata();
    expect([meta.width, meta.height]).to.deep.equal([line.width, line.height]);
    r = run(['detect', '--weights', path.join(dir, 'tiny.safetensors'), img]);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/holds no detector configuration/);
  });

  it('a corrupt image, a missing file or a label count mismatch exits 1 with the reason', function () {
    let r = run(['classify', '--weights', path.join(dir, 'tiny.safetensors'), path.join(dir, 'bad.jpg')]);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/cannot decode .*bad\.jpg/);
    r = run(['classify', '--weights', path.join(dir, 'nope.safetensors'), path.join(dir, 'a.png')]);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/cannot read .*nope\.safetensors/);
    fs.writeFileSync(path.join(dir, 'two.txt'), 'x\ny\n');
    r = run(['classify', '--weights', path.join(dir, 'tiny.safetensors'), '--labels', path.join(dir, 'two.txt'), path.join(dir, 'a.png')]);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/labels must list 3 labels/);
    r = run(['frobnicate']);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/unknown command "frobnicate"/);
  });

  it('train and ablation --data fashion-mnist read IDX files from --data-dir (fixtures here, not the real data)', function () {
    this.timeout(300000);
    const fm = path.join(dir, 'fashion');
    fs.mkdirSync(fm);
    const zlib = require('zlib');
    const idx = (magic, dims, bytes) => {
      const h = Buffer.alloc(4 + 4 * dims.length);
      [magic, ...dims].forEach((v, k) => h.writeUInt32BE(v, 4 * k));
      return zlib.gzipSync(Buffer.concat([h, Buffer.from(bytes)]));
    };
    const seed = (Date.now() & 0xffff) + 1;
    const byte = (i) => ((i * 2654435761 + seed * 97) >>> 13) & 255;
    for (const [stem, n] of [['train', 64], ['t10k', 20]]) {
      fs.writeFileSync(path.join(fm, `${stem}-images-idx3-ubyte.gz`), idx(0x803, [n, 28, 28], Array.from({ length: n * 784 }, (_, i) => byte(i))));
      fs.writeFileSync(path.join(fm, `${stem}-labels-idx1-ubyte.gz`), idx(0x801, [n], Array.from({ length: n }, (_, i) => byte(i + 7) % 10)));
    }
    let r = run(['train', '--data', 'fashion-mnist', '--data-dir', fm, '--val', 'fashion-mnist', '--epochs', '1', '--batch', '32', '--sizes', '20-36', '--input', 'warp', '--optimizer', 'adam', '--val-sizes', '20,36', '--no-out'], { timeout: 120000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/training fashion-spp \(10 classes\) on Fashion-MNIST train: 64 images of 28x28, 10 classes/);
    expect(r.stdout).to.match(/validation at 20x20: accuracy \d+\.\d\d%\nvalidation at 36x36: accuracy \d+\.\d\d%/);
    const out = path.join(dir, 'abl');
    r = run(['ablation', '--data', 'fashion-mnist', '--data-dir', fm, '--epochs', '1', '--batch', '32', '--seeds', '1,2', '--arms', 'nospp,multi-batch', '--test-sizes', '20,36', '--out', out], { timeout: 200000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/\| SPP, multi-size \(per batch\) \| a random size in 20\.\.56 per batch \| at the test size \| \d+\.\d\d ± \d+\.\d\d \|/);
    for (const f of ['ablation-fashion.md', 'ablation-fashion.json', 'ablation-fashion.svg']) expect(fs.existsSync(path.join(out, f)), f).to.equal(true);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'ablation-fashion.json'), 'utf8')).runs).to.have.length(4);
    r = run(['ablation', '--data', 'mnist']);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.include('ablation: --data must be synthetic (the default) or fashion-mnist, got "mnist"');
    r = run(['train', '--data', 'fashion-mnist', '--data-dir', dir, '--no-out']);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/sp\.data\.fashionMnist: no train-images-idx3-ubyte\.gz or train-images-idx3-ubyte in /);
  });

  it('the demo trains and classifies with nothing downloaded, and keeps its weights where it says', function () {
    this.timeout(300000);
    const out = path.join(dir, 'demo');
    const r = run(['demo', '--out', out], { timeout: 280000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.include(`The weights and images go to ${out}${path.sep} (kept`);
    expect(r.stderr).to.match(/epoch 6\/6 loss \d+\.\d+ acc \d+\.\d%/);
    expect(r.stdout).to.match(/held-out images at their natural sizes .*: \d+\.\d% correct of 200/);
    expect(r.stdout).to.match(/8 image\(s\) in \d+ ms/);
    expect(r.stdout).to.match(/\d of 8 files classified as the shape they show/);
    const weights = path.join(out, 'demo-spp.safetensors');
    expect(fs.existsSync(weights)).to.equal(true);
    const images = fs.readdirSync(out).filter((f) => /\.(png|jpg|webp)$/.test(f));
    expect(images).to.have.length(8);
    for (const f of images) expect(f).to.match(/^\d\d-(disc|square|triangle|cross)-\d+x\d+\.(png|jpg|webp)$/);
    // The command it suggests works as printed (the shell expands the glob; here, by hand).
    const m = new RegExp(`npx sppnet classify --weights (\\S+) --scales natural (\\S+)\\*\\.png`).exec(r.stdout);
    expect(m, r.stdout).to.not.equal(null);
    expect(m[1]).to.equal(weights);
    const pngs = images.filter((f) => f.endsWith('.png')).map((f) => path.join(out, f));
    const c = run(['classify', '--weights', m[1], '--scales', 'natural', '--topk', '1', ...pngs]);
    expect(c.status, c.stderr).to.equal(0);
    expect(c.stderr).to.include('class names from demo-spp.safetensors: disc, square, triangle, cross');
    // File names say H x W, as the output does.
    for (const p of pngs) {
      const [, h, w] = /-(\d+)x(\d+)\.png$/.exec(p);
      expect(c.stdout).to.include(`${path.basename(p)}  (H x W: ${h}x${w})`);
    }
    expect(c.stdout).to.not.match(/class \d/);
  });
});
