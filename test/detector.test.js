'use strict';
// The detection pipeline end to end on a small generated set: sp.trainDetector's stages, detect in
// SPP-net and R-CNN-baseline modes, per-class NMS, save and load, evaluation, POST /v1/detect, and
// bad input. The figures that matter (mAP, time per image against the R-CNN baseline) are
// bench/detect.js's, not a test's.
const { expect } = require('chai');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { sp, expectReject } = require('./support/helpers');

describe('detection pipeline', function () {
  this.timeout(300000);
  let dir, trainval, test, det;
  const RECIPE = { windowSide: 48, scales: [96, 144, 192], singleScale: 144, pretrainEpochs: 2, finetuneIterations: 60, finetuneBatch: 64 };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-detector-'));
    const root = path.join(dir, 'voc');
    await sp.makeDetectionData(root, { images: 16, seed: 5, minSize: 128, maxSize: 160, minObjectSize: 20, shapes: 3 });
    const classes = sp.detectionClasses(root);
    trainval = await sp.data.voc(root, { split: 'trainval', classes });
    test = await sp.data.voc(root, { split: 'test', classes });
    const lines = [];
    // Trained on the CPU whatever the default device: on the emulated CUDA device (npm test runs the
    // suite there too) training would take minutes; the last test runs the trained detector on CUDA.
    det = await sp.trainDetector(trainval, { ...RECIPE, svm: true, seed: 3, device: 'cpu', log: (l) => lines.push(l) });
    expect(lines.join('\n')).to.match(/stage 1 epoch 2\/2/).and.match(/stage 3 iteration 60\/60/).and.match(/stage 4: box regressors/).and.match(/stage 5: 3 linear SVMs on fc7 \(256 features\)/);
    // One pass of hard-negative mining (the default) over every proposal of the 8 training images.
    const mined = [...lines.join('\n').matchAll(/(\d+) mined, (\d+) easy dropped/g)].map((m) => Number(m[1]));
    expect(mined, lines.join('\n')).to.have.length(3);
    expect(mined.some((n) => n > 0), lines.join('\n')).to.equal(true);
  });
  after(() => {
    det?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('detects: boxes inside the image, by score, at most maxDetections, no two of a class overlapping past the NMS IoU', async function () {
    const im = test.images[0];
    const r = await det.detect(im.path, { minScore: 0, maxDetections: 40 });
    expect(r.width).to.equal(im.width);
    expect(r.height).to.equal(im.height);
    expect(r.windows).to.be.above(0);
    expect(r.detections.length).to.be.within(1, 40);
    for (const d of r.detections) {
      expect(test.classes).to.include(d.label);
      expect(d.box[0]).to.be.within(0, d.box[2]);
      expect(d.box[1]).to.be.within(0, d.box[3]);
      expect(d.box[2]).to.be.below(im.width);
      expect(d.box[3]).to.be.below(im.height);
    }
    const scores = r.detections.map((d) => d.score);
    expect(scores).to.deep.equal([...scores].sort((a, b) => b - a));
    // torchvision's continuous IoU, as sp.batchedNms applies it to [x1, x2 + 1).
    const iou = (a, b) => {
      const w = Math.min(a[2], b[2]) + 1 - Math.max(a[0], b[0]), h = Math.min(a[3], b[3]) + 1 - Math.max(a[1], b[1]);
      const i = Math.max(0, w) * Math.max(0, h), area = (q) => (q[2] + 1 - q[0]) * (q[3] + 1 - q[1]);
      return i / (area(a) + area(b) - i);
    };
    for (let i = 0; i < r.detections.length; i++)
      for (let j = i + 1; j < r.detections.length; j++)
        if (r.detections[i].label === r.detections[j].label) expect(iou(r.detections[i].box, r.detections[j].box)).to.be.at.most(0.3 + 1e-6);
    for (const k of ['proposals', 'decode', 'conv', 'pooling', 'fc', 'nms', 'total']) expect(r.timing[k], k).to.be.at.least(0);
  });

  it('the R-CNN baseline and SPP-net score the same windows with the same network; multi-scale and released mapping run', async function () {
    const im = test.images[1];
    const boxes = im.objects.flatMap((o) => o.box.map((v) => v - 1));
    const spp = await det.detect(im.path, { boxes, minScore: 0 });
    const rcnn = await det.detect(im.path, { boxes, minScore: 0, mode: 'rcnn', chunk: 2 });
    const multi = await det.detect(im.path, { boxes, minScore: 0, scales: 'multi' });
    expect([spp.windows, rcnn.windows, multi.windows]).to.deep.equal([boxes.length / 4, boxes.length / 4, boxes.length / 4]);
    expect(rcnn.timing.proposals).to.equal(0);
    for (const r of [spp, rcnn, multi]) expect(r.detections.length).to.be.above(0);
  });

  it('saves and loads: the same detections; a model file is not a detector', async function () {
    const file = path.join(dir, 'det.safetensors');
    await sp.saveDetector(det, file);
    const back = await sp.loadDetector(file, { device: 'cpu' });
    try {
      expect(back.config).to.deep.equal(det.config);
      expect(back.hasRegressor).to.equal(true);
      const im = test.images[2].path;
      const [a, b] = [await det.detect(im), await back.detect(im)];
      expect(b.detections).to.deep.equal(a.detections);
      expect(back.hasSvm).to.equal(true);
      const [c, d] = [await det.detect(im, { classifier: 'svm' }), await back.detect(im, { classifier: 'svm' })];
      expect(d.detections).to.deep.equal(c.detections);
    } finally {
      back.dispose();
    }
    const modelFile = path.join(dir, 'model.safetensors');
    await det.model.save(modelFile);
    await expectReject(sp.loadDetector(modelFile), /sp\.loadDetector: .* holds no detector configuration/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('starts from given weights with stage 1 skipped (pretrainEpochs: 0): the conv layers stay as given; random training scales', async function () {
    const { tensors } = await sp.readSafetensors(await (async () => {
      const f = path.join(dir, 'start.safetensors');
      await sp.saveDetector(det, f);
      return f;
    })());
    const lines = [];
    const again = await sp.trainDetector(trainval, { ...RECIPE, weights: tensors, pretrainEpochs: 0, trainScales: 'random', finetuneIterations: 10, device: 'cpu', log: (l) => lines.push(l) });
    try {
      expect(lines.join('\n')).to.not.match(/stage 1/);
      const a = await det.model.stateDict(), b = await again.model.stateDict();
      for (const [k, v] of a) {
        const same = v.data.every((x, i) => x === b.get(k).data[i]);
        expect(same, k).to.equal(!k.startsWith('fc'));
      }
    } finally {
      again.dispose();
    }
    await expectReject(sp.trainDetector(trainval, { trainScales: 'all' }), /options\.trainScales must be 'single', 'multi' or 'random'/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.trainDetector(trainval, { jitter: -1 }), /options\.jitter must be an integer in \[0, 64\]/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.trainDetector(trainval, { pretrainSides: [48, 0] }), /options\.pretrainSides must be a non-empty array of sides in \[1, 1024\]/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.trainDetector(trainval, { svm: { hardNegativePasses: 1.5 } }), /options\.svm\.hardNegativePasses must be an integer in \[0, 16\], got number 1\.5/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.trainDetector(trainval, { svm: 'yes' }), /options\.svm must be a boolean or SVM options/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('the SVM classifier scores windows by margin (default minScore -1); the classifier is checked', async function () {
    const r = await det.detect(test.images[0].path, { classifier: 'svm' });
    expect(r.detections.length).to.be.above(0);
    for (const d of r.detections) expect(d.score).to.be.at.least(-1);
    const ev = await sp.evaluateDetector(det, test, { classifier: 'svm' });
    expect(ev.mAP).to.be.within(0, 1);
  });

  it('evaluates a split: mAP in [0, 1], time per image by stage', async function () {
    const ev = await sp.evaluateDetector(det, test);
    expect(ev.images).to.equal(test.length);
    expect(ev.mAP).to.be.within(0, 1);
    expect(ev.ap).to.have.length(test.classes.length);
    expect(ev.median.total).to.be.above(0);
  });

  it('bad input: a clear error with a code, naming the call and the argument', async function () {
    const im = test.images[0].path;
    await expectReject(det.detect(im, { mode: 'fast' }), /Detector\.detect: options\.mode must be 'spp' or 'rcnn'/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(det.detect(im, { scales: [0] }), /Detector\.detect: options\.scales must be/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(det.detect(im, { boxes: [0, 0, 5] }), /options\.boxes has 3 numbers/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(det.detect(im, { boxes: [5, 0, 1, 9] }), /window 0 is \[5, 0, 1, 9\]/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(det.detect(im, { minScore: 2 }), /options\.minScore must be in \[0, 1\]/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(det.detect(im, { classifier: 'svm', minScore: NaN }), /options\.minScore must be a finite number \(an SVM margin\)/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(det.detect(im, { classifier: 'trees' }), /options\.classifier must be 'softmax' or 'svm'/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(det.detect(42), /Detector\.detect: image must be a file path/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(det.detect(im, { maxPixels: 1000 }), /Detector\.detect: .*000000\.jpg \(\d+x\d+\) has \d+ pixels.*options\.maxPixels/, 'SPPNET_TOO_LARGE');
    await expectReject(sp.trainDetector(trainval, { scales: [] }), /sp\.trainDetector: options\.scales must be/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.trainDetector(trainval, { finetuneIterations: 0 }), /options\.finetuneIterations must be a positive integer/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.trainDetector({}), /sp\.trainDetector: data must be a dataset/, 'SPPNET_INVALID_ARGUMENT');
    // A hostile configuration in a file.
    const file = path.join(dir, 'bad.safetensors');
    const sd = await det.model.stateDict();
    await sp.writeSafetensors(file, sd, { spec: JSON.stringify(det.model.spec), detector: JSON.stringify({ ...det.config, windowSide: 1e9 }) });
    await expectReject(sp.loadDetector(file), /sp\.loadDetector: the detector's configuration: windowSide must be in \[1, 4096\]/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('POST /v1/detect: detections as JSON; one image only; maxPixels before decoding', async function () {
    const srv = await sp.createServer({ model: det.model, detector: det, maxPixels: 100_000 });
    try {
      const body = fs.readFileSync(test.images[0].path);
      const ok = await srv.app.inject({ method: 'POST', url: '/v1/detect?minScore=0.01', headers: { 'content-type': 'image/jpeg' }, payload: body });
      expect(ok.statusCode, ok.body).to.equal(200);
      const j = ok.json();
      expect(j.size).to.deep.equal([test.images[0].height, test.images[0].width]);
      expect(j.detections.length).to.be.above(0);
      expect(j.detections[0]).to.have.keys(['label', 'class', 'score', 'box']);
      expect(j.timing.totalMs).to.be.above(0);
      const bad = await srv.app.inject({ method: 'POST', url: '/v1/detect?scales=all', headers: { 'content-type': 'image/jpeg' }, payload: body });
      expect(bad.statusCode).to.equal(400);
      expect(bad.json().error).to.match(/POST \/v1\/detect: scales must be 'single' or 'multi'/);
      const big = await require('sharp')({ create: { width: 400, height: 300, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toBuffer();
      const tooBig = await srv.app.inject({ method: 'POST', url: '/v1/detect', headers: { 'content-type': 'image/png' }, payload: big });
      expect(tooBig.statusCode).to.equal(413);
      expect(tooBig.json().code).to.equal('SPPNET_TOO_LARGE');
      const m = await srv.app.inject({ method: 'GET', url: '/metrics' });
      expect(m.body).to.match(/route="\/v1\/detect",code="200"/);
    } finally {
      await srv.close();
    }
  });

  it("stops once aborted: Detector.detect's signal between stages, nothing left behind; a bad signal is refused", async function () {
    const im = test.images[0].path;
    await expectReject(det.detect(im, { signal: 'soon' }), /Detector\.detect: options\.signal must be an AbortSignal, got the string "soon"/, 'SPPNET_INVALID_ARGUMENT');
    const early = new AbortController();
    const p = det.detect(im, { signal: early.signal });
    early.abort(); // before its first stage (it is reading the header)
    await expectReject(p, /Detector\.detect: aborted before the proposals/, 'SPPNET_ABORTED');
    const boxes = test.images[0].objects.flatMap((o) => o.box.map((v) => v - 1));
    for (const mode of ['spp', 'rcnn']) {
      const ac = new AbortController();
      const q = det.detect(im, { signal: ac.signal, boxes, mode });
      ac.abort();
      await expectReject(q, /Detector\.detect: aborted before decoding the image/, 'SPPNET_ABORTED');
    }
    // Aborted at every point of a run: each call resolves or stops with SPPNET_ABORTED, and every
    // tensor a stopped call made is disposed (counted after three runs of each kind: the model keeps
    // buffers for the shapes it has seen, and lays them out anew by the third run).
    for (let i = 0; i < 3; i++) for (const mode of ['spp', 'rcnn']) await det.detect(im, { mode, chunk: 2 });
    const before = sp.memory().tensors.cpu;
    const outcomes = [];
    for (const ms of [0, 1, 2, 4, 8, 16, 32, 64]) {
      for (const mode of ['spp', 'rcnn']) {
        const ac = new AbortController();
        setTimeout(() => ac.abort(), ms);
        outcomes.push(await det.detect(im, { signal: ac.signal, mode, chunk: 2 }).then(() => 'done', (e) => (e.code === 'SPPNET_ABORTED' ? e.message.replace(/.*aborted before /, '') : Promise.reject(e))));
      }
    }
    expect(sp.memory().tensors.cpu, outcomes.join(', ')).to.equal(before);
    // Aborted inside a stage, for certain: during the convolutions (SPP-net), during a chunk's fc
    // layers (R-CNN).
    for (const [mode, stage, method] of [['spp', 'pooling the windows', 'features'], ['rcnn', 'windows 2-73', 'head']]) {
      const ac = new AbortController();
      const m = det.model, orig = m[method];
      m[method] = (...a) => (ac.abort(), orig.apply(m, a));
      try {
        await expectReject(det.detect(im, { signal: ac.signal, mode, chunk: 2 }), new RegExp(`aborted before ${stage}`), 'SPPNET_ABORTED');
      } finally {
        delete m[method];
      }
      expect(sp.memory().tensors.cpu, mode).to.equal(before);
    }
  });

  it('POST /v1/detect: work stops with its response: a request whose client left never runs; one past its time stops, holding its pixels until then', async function () {
    const { send } = require('./support/http');
    const body = fs.readFileSync(test.images[0].path);
    const own = Object.getOwnPropertyDescriptor(det, 'detect');
    // Detections start in order; each waits for a gate of the test's before it runs.
    const started = [], outcomes = [], gates = [];
    const orig = det.detect.bind(det);
    det.detect = (image, o) => {
      started.push(o);
      const gate = new Promise((r) => gates.push(r));
      return gate.then(() => orig(image, o)).then((r) => (outcomes.push('done'), r), (e) => (outcomes.push(e.code), Promise.reject(e)));
    };
    const until = async (f) => { for (let i = 0; i < 400 && !(await f()); i++) await new Promise((r) => setTimeout(r, 10)); expect(await f()).to.equal(true); };
    const servers = [];
    const serve = async (timeoutMs) => {
      const srv = await sp.createServer({ model: det.model, detector: det, maxConcurrentDetections: 1, timeoutMs });
      servers.push(srv);
      const url = await srv.app.listen({ port: 0, host: '127.0.0.1' });
      const metrics = async () => (await srv.app.inject({ method: 'GET', url: '/metrics' })).body;
      return {
        metrics,
        queued: async () => Number((await metrics()).match(/^sppnet_queued_pixels (\d+)/m)[1]),
        post: (o = {}) => send(`${url}/v1/detect?minScore=0.01`, { headers: { 'content-type': 'image/jpeg' }, body, ...o }),
      };
    };
    try {
      let { queued, post, metrics } = await serve(60_000);
      const a = post();
      await until(async () => started.length === 1);
      const one = await queued();
      let leave;
      const b = post({ abortWhen: new Promise((r) => (leave = r)) });
      await until(async () => (await queued()) === 2 * one); // b holds its pixels and waits its turn
      leave();
      expect((await b).status).to.equal('aborted');
      await until(async () => (await queued()) === one); // b left the line
      gates[0]();
      expect((await a).status).to.equal(200);
      expect(started.length, 'the request whose client left never ran').to.equal(1);
      expect(outcomes).to.deep.equal(['done']);
      expect(await metrics()).to.match(/sppnet_rejected_total\{reason="aborted"\} 1\b/);
      // Past its time: 503 at once; its detection stops at its next stage, its pixels held till then
      // (over a real connection: fastify's own handlerTimeout never fires there on Node 20).
      ({ queued, post, metrics } = await serve(1500));
      const c = await post();
      expect(c.status, c.body).to.equal(503);
      expect(c.json).to.deep.equal({ error: 'POST /v1/detect: timed out after 1500 ms (timeoutMs)', code: 'SPPNET_TIMEOUT' });
      expect(started.length).to.equal(2);
      expect(await queued()).to.equal(one);
      gates[1]();
      await until(async () => outcomes.length === 2);
      expect(outcomes[1]).to.equal('SPPNET_ABORTED');
      await until(async () => (await queued()) === 0);
      expect(await metrics()).to.match(/sppnet_rejected_total\{reason="timeout"\} 1\b/);
      // A client that leaves while its detection runs: counted once, as aborted, not again when its time passes.
      let leaveD;
      const d = post({ abortWhen: new Promise((r) => (leaveD = r)) });
      await until(async () => started.length === 3);
      leaveD();
      expect((await d).status).to.equal('aborted');
      await new Promise((r) => setTimeout(r, 1700));
      gates[2]();
      await until(async () => outcomes.length === 3);
      expect(outcomes[2]).to.equal('SPPNET_ABORTED');
      const m = await metrics();
      expect(m).to.match(/sppnet_rejected_total\{reason="timeout"\} 1\b/).and.match(/sppnet_rejected_total\{reason="aborted"\} 1\b/);
    } finally {
      if (own) Object.defineProperty(det, 'detect', own);
      else delete det.detect;
      for (const srv of servers) await srv.close();
    }
  });

  it('runs on CUDA: the detector loaded onto the device finds what the CPU one finds', async function () {
    if (sp.backend().device !== 'cuda') this.skip();
    const file = path.join(dir, 'det-cuda.safetensors');
    await sp.saveDetector(det, file);
    const onCuda = await sp.loadDetector(file, { device: 'cuda' });
    try {
      expect(onCuda.model.device).to.equal('cuda');
      const im = test.images[0];
      const boxes = im.objects.flatMap((o) => o.box.map((v) => v - 1));
      for (const o of [{ minScore: 0 }, { classifier: 'svm', minScore: -100 }, { mode: 'rcnn', minScore: 0 }]) {
        const [a, b] = [await det.detect(im.path, { ...o, boxes }), await onCuda.detect(im.path, { ...o, boxes })];
        expect(b.windows).to.equal(a.windows);
        expect(b.detections.length, JSON.stringify(o)).to.be.above(0);
        // Convolutions on CUDA default to TF32: scores agree closely, not bit for bit (and NMS may
        // then keep a different box here and there): the best detection is compared.
        expect(b.detections[0].score, JSON.stringify(o)).to.be.closeTo(a.detections[0].score, 0.02);
      }
    } finally {
      onCuda.dispose();
    }
  });
});
