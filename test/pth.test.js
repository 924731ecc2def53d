'use strict';
// PyTorch checkpoints read directly (sp.readPth, sp.loadModel({ weights: 'x.pth' }), sppnet
// convert): fixtures made by tools/make_pth_fixtures.py with PyTorch 1.13 (dtypes, views with
// offsets and strides, a training checkpoint, and the files that must be refused: a whole pickled
// model, the legacy format, a pickle that calls os.system), plus corrupted copies.
const { expect } = require('chai');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { runNode } = require('./support/child');
const { sp, expectReject } = require('./support/helpers');

const dir = path.join(__dirname, 'fixtures', 'pth');
const fixture = (f) => path.join(dir, f);
const tinySafetensors = path.join(__dirname, 'fixtures', 'tiny-spp.safetensors');
const SEED = process.env.SEED !== undefined ? Number(process.env.SEED) : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
const { prng } = require('../dist/core/random');

describe('PyTorch checkpoints (.pth)', function () {
  let tmp;
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-pth-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('reads float32, float16, bfloat16, float64 and int64 tensors, views with offsets and strides, 0-d tensors and Parameters, exactly', async function () {
    const { tensors } = await sp.readPth(fixture('views.pth'));
    const expected = JSON.parse(fs.readFileSync(fixture('views.expected.json'), 'utf8'));
    expect([...tensors.keys()]).to.deep.equal(Object.keys(expected));
    for (const [name, e] of Object.entries(expected)) {
      const t = tensors.get(name);
      expect(t.shape, name).to.deep.equal(e.shape);
      expect(t.data).to.be.instanceOf(Float32Array);
      expect(Array.from(t.data), name).to.deep.equal(e.data.map(Math.fround));
    }
  });

  it('loads into a model: the same logits as the same weights from safetensors; a training checkpoint\'s state_dict too', async function () {
    const spec = JSON.parse((await sp.readSafetensorsMetadata(tinySafetensors)).spec);
    const a = await sp.loadModel({ weights: tinySafetensors, device: 'cpu' });
    const b = await sp.loadModel({ spec, weights: fixture('tiny-spp.pth'), device: 'cpu' });
    const c = await sp.loadModel({ spec, weights: fixture('checkpoint.pth'), device: 'cpu' });
    const r = prng(SEED);
    const img = (h, w) => sp.tensor(Float32Array.from({ length: spec.inChannels * h * w }, () => r() - 0.5), [spec.inChannels, h, w], { device: 'cpu' });
    const images = [img(31, 40), img(24, 24), img(45, 29)];
    try {
      const want = await (await a.run(images)).data();
      expect(Array.from(await (await b.run(images)).data()), `seed ${SEED}`).to.deep.equal(Array.from(want));
      expect(Array.from(await (await c.run(images)).data()), `seed ${SEED}`).to.deep.equal(Array.from(want));
    } finally {
      [a, b, c, ...images].forEach((x) => x.dispose());
    }
  });

  it('refuses a whole pickled model, saying how to save a state_dict, and runs nothing', async function () {
    await expectReject(sp.readPth(fixture('model.pth')), /names the Python global torch\.nn\.modules\.container\.Sequential.*nothing in the file was run.*whole pickled model.*torch\.save\(model\.state_dict\(\), PATH\)/s, 'SPPNET_INVALID_ARGUMENT');
  });

  it('refuses a pickle that calls os.system before anything runs', async function () {
    const marker = '/tmp/sppnet-pth-was-run';
    fs.rmSync(marker, { force: true });
    await expectReject(sp.readPth(fixture('evil.pth')), /names the Python global posix\.system, which sppnet does not load.*nothing in the file was run/s, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.loadModel({ arch: 'zf5', weights: fixture('evil.pth') }), /posix\.system/);
    expect(fs.existsSync(marker)).to.equal(false);
  });

  it('refuses views too large for a tensor, or for one file together, before allocating them', async function () {
    await expectReject(sp.readPth(fixture('huge.pth')), /tensor w \[3221225472\] would hold 3221225472 elements, more than the 2\^31-1 a tensor may hold/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(fixture('many.pth')), /its tensors would hold 1610612736 floats, more than the 1073741824 \(4 GiB\)/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('refuses the legacy format with how to re-save it, and files that are not checkpoints', async function () {
    await expectReject(sp.readPth(fixture('legacy.pth')), /legacy format \(before 1\.6.*torch\.save\(torch\.load\(PATH\), PATH\)/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.loadModel({ arch: 'zf5', weights: fixture('legacy.pth') }), /legacy format \(before 1\.6/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(path.join(dir, 'nope.pth')), /nope\.pth: cannot read it/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(tinySafetensors), /not a zip archive sppnet can read/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(42), /file must be a path to a \.pth or \.pt file, got number 42/);
  });

  it('corrupted copies (truncated, bytes flipped) give an SppnetError or a result, never a crash or another error', async function () {
    this.timeout(60000);
    const good = fs.readFileSync(fixture('views.pth'));
    const r = prng(SEED ^ 0x5eed);
    let refused = 0, read = 0;
    for (let i = 0; i < 300; i++) {
      // A third truncated at a random length, the rest with 1 to 4 bytes flipped.
      let bad = Buffer.from(good);
      if (i % 3 === 0) bad = bad.subarray(0, Math.floor(r() * bad.length));
      else for (let k = 0; k < 1 + (i % 4); k++) bad[Math.floor(r() * bad.length)] = Math.floor(r() * 256);
      const f = path.join(tmp, `bad${i}.pth`);
      fs.writeFileSync(f, bad);
      try {
        await sp.readPth(f);
        read++;
      } catch (e) {
        expect(e.code, `${e.stack}\nseed ${SEED}, case ${i}`).to.equal('SPPNET_INVALID_ARGUMENT');
        refused++;
      }
    }
    console.log(`      seed ${SEED}: 300 corrupted files, ${refused} refused with an SppnetError, ${read} read`);
    expect(refused).to.be.greaterThan(0);
  });

  it('sppnet convert IN.pth OUT.safetensors writes the same tensors, and will not overwrite', async function () {
    const out = path.join(tmp, 'tiny.safetensors');
    const cli = path.join(__dirname, '..', 'bin', 'sppnet.js');
    const r = runNode([cli, 'convert', fixture('tiny-spp.pth'), out], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, timeout: 60000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/wrote .*tiny\.safetensors: 8 tensors/);
    const a = await sp.readSafetensors(out), b = await sp.readSafetensors(tinySafetensors);
    for (const [k, t] of b.tensors) expect(Array.from(a.tensors.get(k).data), k).to.deep.equal(Array.from(t.data));
    const again = runNode([cli, 'convert', fixture('tiny-spp.pth'), out], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, timeout: 60000 });
    expect(again.status).to.equal(1);
    expect(again.stderr).to.match(/exists already/);
    const evil = runNode([cli, 'convert', fixture('evil.pth'), path.join(tmp, 'evil.safetensors')], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, timeout: 60000 });
    expect(evil.status).to.equal(1);
    expect(evil.stderr).to.match(/sppnet convert: .*posix\.system/);
  });
});
