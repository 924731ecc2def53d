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

// Hostile checkpoints, written here byte by byte (a stored zip around a hand-made pickle): each is
// refused with an SppnetError and a code, early, without the memory or time it asks for. The cases
// come from a fuzzing run against the reader (bench/RESULTS.md, 2026-11-27 14:35 section).
describe('PyTorch checkpoints (.pth) from an attacker', function () {
  let tmp;
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-pth-hostile-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const b = (...parts) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Array.isArray(p) ? Buffer.from(p) : p)));
  const G = (m, n) => b(`c${m}\n${n}\n`);
  const S = (s) => {
    const u = Buffer.from(s, 'utf8'), n = Buffer.alloc(4);
    n.writeUInt32LE(u.length);
    return b('X', n, u);
  };
  const L = (v) => { // LONG1, little-endian two's complement
    let x = BigInt(v);
    const out = [];
    do {
      out.push(Number(x & 0xffn));
      x >>= 8n;
    } while (!((x === 0n && !(out[out.length - 1] & 0x80)) || (x === -1n && out[out.length - 1] & 0x80)));
    return b([0x8a, out.length], out);
  };
  const tup = (...xs) => b('(', ...xs, 't');
  const tensor = (storage, numel, offset, shape, stride, module = 'torch') => {
    const pid = tup(S('storage'), G(module, storage), S('0'), S('cpu'), L(numel));
    return b(G('torch._utils', '_rebuild_tensor_v2'), tup(b(pid, 'Q'), L(offset), tup(...shape.map(L)), tup(...stride.map(L)), [0x89], G('collections', 'OrderedDict'), ')R'), 'R');
  };
  const stateDict = (...entries) => b([0x80, 0x02], G('collections', 'OrderedDict'), ')R(', ...entries.flatMap(([k, t]) => [S(k), t]), 'u.');

  /** A stored zip of [name, bytes] entries (CRCs zero: the reader does not check them). */
  function zip(entries) {
    const locals = [], central = [];
    let at = 0;
    for (const [name, data] of entries) {
      const n = Buffer.from(name), lh = Buffer.alloc(30), ch = Buffer.alloc(46);
      lh.writeUInt32LE(0x04034b50, 0), lh.writeUInt32LE(data.length, 18), lh.writeUInt32LE(data.length, 22), lh.writeUInt16LE(n.length, 26);
      ch.writeUInt32LE(0x02014b50, 0), ch.writeUInt32LE(data.length, 20), ch.writeUInt32LE(data.length, 24), ch.writeUInt16LE(n.length, 28), ch.writeUInt32LE(at, 42);
      locals.push(lh, n, data);
      central.push(ch, n);
      at += 30 + n.length + data.length;
    }
    const cd = Buffer.concat(central), end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0), end.writeUInt16LE(entries.length, 8), end.writeUInt16LE(entries.length, 10), end.writeUInt32LE(cd.length, 12), end.writeUInt32LE(at, 16);
    return Buffer.concat([...locals, cd, end]);
  }
  let k = 0;
  const pth = (pickle, storage = Buffer.alloc(16), extra = []) => {
    const f = path.join(tmp, `h${k++}.pth`);
    fs.writeFileSync(f, zip([['archive/data.pkl', pickle], ['archive/byteorder', Buffer.from('little')], ['archive/data/0', storage], ...extra]));
    return f;
  };

  it('reads the hand-made checkpoint these cases start from', async function () {
    const st = Buffer.alloc(16);
    st.writeFloatLE(1.5, 4);
    const { tensors } = await sp.readPth(pth(stateDict(['w', tensor('FloatStorage', 4, 1, [2], [2])]), st));
    expect(Array.from(tensors.get('w').data)).to.deep.equal([1.5, 0]);
  });

  it('refuses views that would expand a few stored elements into gigabytes (stride 0)', async function () {
    await expectReject(sp.readPth(pth(stateDict(['w', tensor('FloatStorage', 1, 0, [16384, 16384], [0, 0])]))),
      /its tensors would hold 268435456 floats from 1 stored elements, more than 8 times as many plus 2\^20/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('refuses a storage of a type that is not a storage, a negative size, a size not an integer, one storage with two types', async function () {
    await expectReject(sp.readPth(pth(stateDict(['w', tensor('OrderedDict', 1, 0, [1], [1], 'collections')]))),
      /a storage of type collections\.OrderedDict, which is not one of torch's FloatStorage/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(pth(stateDict(['w', tensor('HalfStorage', -5, 0, [0], [1])]))), /a persistent id that is not a storage/, 'SPPNET_INVALID_ARGUMENT');
    const bigShape = b(G('torch._utils', '_rebuild_tensor_v2'), tup(b(tup(S('storage'), G('torch', 'FloatStorage'), S('0'), S('cpu'), L(4)), 'Q'), L(0), tup(L(0), b('G', Buffer.from([0x7e, 0x37, 0xe4, 0x3c, 0x88, 0x00, 0x00, 0x00]))), tup(L(1), L(1)), [0x89], G('collections', 'OrderedDict'), ')R'), 'R');
    await expectReject(sp.readPth(pth(stateDict(['w', bigShape]))), /rebuilt from arguments that are not \(storage, offset, size, stride\)/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(pth(stateDict(['a', tensor('FloatStorage', 4, 0, [4], [1])], ['b', tensor('HalfStorage', 4, 0, [4], [1])]))),
      /storage 0 is declared twice, as 4 FloatStorage and as 4 HalfStorage elements/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('stops a pickle that makes more values than a state_dict could (a megabyte of EMPTY_LIST)', async function () {
    await expectReject(sp.readPth(pth(b([0x80, 0x02], Buffer.alloc(2 ** 20 + 10, ']'), '.'))), /the pickle makes more than 1048576 values/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('describes what is not a state_dict without walking it: shared nesting, huge lists, BigInt and cyclic keys, deep STACK_GLOBAL', async function () {
    // Each level a tuple of 20 references to the level below: 20^7 leaves in 1.5 KB, as a dict key.
    let p = b([0x80, 0x02], '}', S('A'.repeat(1000)), [0x71, 0], 'Ns');
    for (let lvl = 1; lvl <= 7; lvl++) p = b(p, '(', ...Array(20).fill(b([0x68, lvl - 1])), 't', [0x71, lvl], 'Ns');
    await expectReject(sp.readPth(pth(b(p, '.'))), /a dict with keys "A{60}\.\.\.", an array of length 20/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(pth(b([0x80, 0x02], '](', Buffer.alloc(300000, 'N'), 'e.'))), /it holds an array of length 300000, not a state_dict/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(pth(b([0x80, 0x02], '}', L(2n ** 70n), 'Ns.'))), /a dict with keys bigint 1180591620717411303424/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(pth(b([0x80, 0x02], '}', ']', [0x71, 0, 0x68, 0], 'a', 'Ns.'))), /a dict with keys an array of length 1/, 'SPPNET_INVALID_ARGUMENT');
    await expectReject(sp.readPth(pth(b([0x80, 0x02], 'N', Buffer.alloc(200000, 0x85), S('x'), [0x93], '.'))), /STACK_GLOBAL of something that is not a module and a name/, 'SPPNET_INVALID_ARGUMENT');
  });

  it('checks a zip record against the file before allocating it; reads a local header only for an entry it uses; refuses names listed twice', async function () {
    const good = stateDict(['w', tensor('FloatStorage', 4, 0, [4], [1])]);
    const f = pth(good);
    const bytes = fs.readFileSync(f);
    bytes.writeUInt32LE(0xfffffff0, bytes.length - 22 + 12); // the directory's size
    fs.writeFileSync(f, bytes);
    await expectReject(sp.readPth(f), /a record points outside the file \(\d+ \+ 4294967280 > \d+ bytes\)/, 'SPPNET_INVALID_ARGUMENT');
    // An entry nobody reads whose local header is not one: opened all the same.
    const g = pth(good, Buffer.alloc(16), [['archive/unused', Buffer.alloc(4)]]);
    const gb = fs.readFileSync(g);
    const at = gb.indexOf(Buffer.from('archive/unused')) - 30;
    gb.writeUInt32LE(0xdeadbeef, at);
    fs.writeFileSync(g, gb);
    expect((await sp.readPth(g)).tensors.get('w').shape).to.deep.equal([4]);
    await expectReject(sp.readPth(pth(good, Buffer.alloc(16), [['archive/data/0', Buffer.alloc(16)]])), /entry archive\/data\/0 is listed twice/, 'SPPNET_INVALID_ARGUMENT');
  });
});
