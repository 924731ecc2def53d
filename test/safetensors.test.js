'use strict';
// safetensors reader and writer: round trips, hand-built files with F16 / BF16 / F64 special values,
// every class of corrupt file, state-dict checks and atomic writes.
const fs = require('fs');
const os = require('os');
const path = require('path');
const { expect } = require('chai');
const st = require('../dist/io/safetensors');
const { SppnetError } = require('../dist/core/errors');
const { expectReject } = require('./support/helpers');

// ------------------------------------------------------------------------------------------------
// Helpers

/** mulberry32 (sppnet's own seeded PRNG), so a failing run can be replayed with SEED=... */
const { prng: rng } = require('../dist/core/random');
const SEED = process.env.SEED !== undefined ? Number(process.env.SEED) : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;

/**
 * Builds a safetensors file by hand, independently of encodeSafetensors: `header` is the JSON text
 * (or an object to stringify), `data` the raw data section. The header is not padded, so the data
 * section generally starts at an unaligned offset.
 */
function buildFile(header, data = new Uint8Array(0), headerLen) {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = Buffer.alloc(8 + json.length + data.length);
  out.writeBigUInt64LE(BigInt(headerLen === undefined ? json.length : headerLen), 0);
  json.copy(out, 8);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 8 + json.length);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** Little-endian bytes of a list of 16-bit patterns, float32s or float64s. */
function u16le(values) {
  const b = Buffer.alloc(2 * values.length);
  values.forEach((v, i) => b.writeUInt16LE(v, 2 * i));
  return b;
}
function f32le(values) {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeFloatLE(v, 4 * i));
  return b;
}
function f64le(values) {
  const b = Buffer.alloc(8 * values.length);
  values.forEach((v, i) => b.writeDoubleLE(v, 8 * i));
  return b;
}

/** Same value, bit for bit (tells -0 from +0 and matches NaN with NaN). */
function expectSameFloats(actual, expected, label) {
  expect(actual, label).to.be.instanceOf(Float32Array);
  expect(actual.length, `${label} length`).to.equal(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i]))
      throw new Error(`${label}[${i}]: expected ${Object.is(expected[i], -0) ? '-0' : expected[i]}, got ${Object.is(actual[i], -0) ? '-0' : actual[i]}`);
  }
}

/** The error a sync or async call throws; fails the test if it throws nothing or a non-SppnetError. */
async function errorOf(fnOrPromise) {
  try {
    await (typeof fnOrPromise === 'function' ? fnOrPromise() : fnOrPromise);
  } catch (e) {
    expect(e, `expected an SppnetError, got ${e && e.stack}`).to.be.instanceOf(SppnetError);
    expect(e.code).to.equal('SPPNET_INVALID_ARGUMENT');
    return e;
  }
  throw new Error('expected an error, but the call succeeded');
}

/** parseSafetensors(bytes, name) must fail, and its message must match every pattern. */
async function expectParseError(bytes, patterns, name = 'bad.safetensors') {
  const e = await errorOf(() => st.parseSafetensors(bytes, name));
  const first = e.message.split('\n')[0];
  expect(first).to.include(`parseSafetensors: ${name} is not a valid safetensors file`);
  for (const p of patterns) expect(e.message).to.match(p);
  return e;
}

function tmpDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-st-'));
}

// ------------------------------------------------------------------------------------------------

describe('safetensors', function () {
  describe(`round trip (seed ${SEED}; replay with SEED=${SEED})`, function () {
    const rand = rng(SEED);
    const randomTensor = (shape) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return { shape, data: Float32Array.from({ length: n }, () => (rand() - 0.5) * 10 ** Math.floor(rand() * 8 - 4)) };
    };
    const tensors = new Map([
      ['features.0.weight', randomTensor([8, 3, 3, 3])], // conv [out, in, kh, kw]
      ['features.0.bias', randomTensor([8])],
      ['classifier.1.weight', randomTensor([5, 1 + Math.floor(rand() * 40)])], // linear [out, in]
      ['classifier.1.bias', randomTensor([5])],
      ['num_batches_tracked', randomTensor([])], // 0-d
      ['empty', randomTensor([0, 4])], // no elements
      ['also_empty', randomTensor([3, 0, 2])],
    ]);
    // Special values survive unchanged, bit for bit.
    tensors.get('features.0.bias').data.set([-0, Infinity, -Infinity, NaN, 1.401298464324817e-45, 3.4028234663852886e38]);
    const metadata = { format: 'pt', note: 'späť ✓', empty: '' };

    it('reads back every tensor, shape and metadata exactly', async function () {
      const bytes = st.encodeSafetensors(tensors, metadata);
      const back = await st.readSafetensors(bytes);
      expect([...back.tensors.keys()].sort()).to.deep.equal([...tensors.keys()].sort());
      for (const [name, t] of tensors) {
        const got = back.tensors.get(name);
        expect(got.dtype, name).to.equal('float32');
        expect(got.shape, name).to.deep.equal(t.shape);
        expectSameFloats(got.data, t.data, `${name} (seed ${SEED})`);
        expect(got.data.buffer, `${name} must not alias the file bytes`).to.not.equal(bytes.buffer);
      }
      expect(back.tensors.get('num_batches_tracked').data.length).to.equal(1);
      expect(back.tensors.get('empty').data.length).to.equal(0);
      expect(back.metadata).to.deep.equal(metadata);
    });

    it('readSafetensorsMetadata reads the metadata from the header alone', async function () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-st-md-'));
      try {
        const file = path.join(dir, 'w.safetensors');
        await st.writeSafetensors(file, tensors, metadata);
        expect(await st.readSafetensorsMetadata(file)).to.deep.equal(metadata);
        // The tensors are not read: a file cut after its header still gives its metadata.
        const bytes = fs.readFileSync(file);
        fs.writeFileSync(file, bytes.subarray(0, 8 + Number(bytes.readBigUInt64LE(0))));
        expect(await st.readSafetensorsMetadata(file)).to.deep.equal(metadata);
        await st.writeSafetensors(file, tensors);
        expect(await st.readSafetensorsMetadata(file)).to.deep.equal({});
        fs.writeFileSync(file, bytes.subarray(0, 20));
        await expectReject(st.readSafetensorsMetadata(file), /readSafetensorsMetadata: .*w\.safetensors is not a valid safetensors file .*header length \d+ is longer than the file: only 12 bytes follow/s);
        fs.writeFileSync(file, bytes.subarray(0, 5));
        await expectReject(st.readSafetensorsMetadata(file), /file is 5 bytes, shorter than the 8-byte header length prefix/);
        await expectReject(st.readSafetensorsMetadata(path.join(dir, 'nope.safetensors')), /readSafetensorsMetadata: cannot read .*nope\.safetensors: no such file/);
        await expectReject(st.readSafetensorsMetadata(dir), /cannot read .*: it is a directory/);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('lays the file out as the reference implementation does', function () {
      const bytes = st.encodeSafetensors(tensors, metadata);
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
      const n = Number(buf.readBigUInt64LE(0));
      expect((8 + n) % 8, 'data section starts at a multiple of 8').to.equal(0);
      const text = buf.subarray(8, 8 + n).toString('utf8');
      // Bytes, not characters: the metadata may hold multi-byte UTF-8.
      expect(Buffer.byteLength(text.trimEnd()), 'header padded with spaces only').to.be.at.least(n - 7);
      expect(text.slice(text.trimEnd().length)).to.match(/^ *$/);
      const header = JSON.parse(text);
      expect(header.__metadata__).to.deep.equal(metadata);
      const names = Object.keys(header).filter((k) => k !== '__metadata__');
      expect(names).to.deep.equal([...tensors.keys()].sort());
      let offset = 0;
      for (const name of names) {
        const e = header[name];
        expect(e.dtype).to.equal('F32');
        expect(e.shape).to.deep.equal(tensors.get(name).shape);
        const data = tensors.get(name).data;
        expect(e.data_offsets, name).to.deep.equal([offset, offset + 4 * data.length]);
        // Little-endian float32, independently of the host.
        for (let i = 0; i < data.length; i++) {
          const v = buf.readFloatLE(8 + n + offset + 4 * i);
          if (!Object.is(v, data[i])) throw new Error(`${name}[${i}] stored as ${v}, expected ${data[i]} (seed ${SEED})`);
        }
        offset += 4 * data.length;
      }
      expect(buf.length).to.equal(8 + n + offset);
    });

    it('gives the same bytes for a Map and a plain object, and for a Float32Array view into a larger buffer', function () {
      const obj = Object.fromEntries(tensors);
      expect(Buffer.from(st.encodeSafetensors(obj, metadata)).equals(Buffer.from(st.encodeSafetensors(tensors, metadata)))).to.equal(true);
      const big = Float32Array.from({ length: 20 }, (_, i) => i * 0.5);
      const view = big.subarray(3, 9);
      const back = st.parseSafetensors(st.encodeSafetensors({ v: { shape: [2, 3], data: view } }));
      expectSameFloats(back.tensors.get('v').data, Float32Array.from([1.5, 2, 2.5, 3, 3.5, 4]), 'v');
    });
  });

  it('matches a hand-computed golden file', function () {
    const bytes = st.encodeSafetensors({ b: { shape: [1], data: Float32Array.of(-2) }, a: { shape: [2], data: Float32Array.of(1, 0.5) } });
    const json = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}';
    const padded = json + ' '.repeat((8 - (json.length % 8)) % 8);
    const expected = Buffer.concat([Buffer.from([padded.length, 0, 0, 0, 0, 0, 0, 0]), Buffer.from(padded), f32le([1, 0.5, -2])]);
    expect(Buffer.from(bytes).toString('hex')).to.equal(expected.toString('hex'));
    // No metadata given: no __metadata__ key at all.
    expect(Buffer.from(bytes).toString()).to.not.include('__metadata__');
  });

  describe('hand-built files with F16, BF16 and F64', function () {
    // F16 bit patterns and their exact values.
    const halves = [
      [0x0000, 0], [0x8000, -0], [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504],
      [0x0400, 2 ** -14], // smallest normal
      [0x0001, 2 ** -24], // smallest subnormal
      [0x8001, -(2 ** -24)],
      [0x03ff, 1023 * 2 ** -24], // largest subnormal
      [0x0200, 2 ** -15],
      [0x7c00, Infinity], [0xfc00, -Infinity], [0x7e00, NaN], [0xfe01, NaN],
    ];
    // BF16 bit patterns and their exact values.
    const bhalves = [
      [0x0000, 0], [0x8000, -0], [0x3f80, 1], [0xc049, -3.140625], [0x7f7f, (2 - 2 ** -7) * 2 ** 127],
      [0x0001, 2 ** -133], // subnormal
      [0x0080, 2 ** -126],
      [0x7f80, Infinity], [0xff80, -Infinity], [0x7fc0, NaN],
    ];
    // F64 values and the float32 they must become (round to nearest).
    const doubles = [
      [1 / 3, Math.fround(1 / 3)], [-0, -0], [Infinity, Infinity], [-Infinity, -Infinity], [NaN, NaN],
      [1e300, Infinity], [-1e300, -Infinity], [1e-50, 0], [2 ** -149, 2 ** -149], [123.5, 123.5],
    ];
    const f32 = [1.5, -0, 2 ** -149, -7.25];

    function file() {
      // Layout: h (F16, 30 bytes) | f (F32 at offset 30: unaligned) | b (BF16) | d (F64) | gap-free.
      const hBytes = u16le(halves.map(([b]) => b));
      const fBytes = f32le(f32);
      const bBytes = u16le(bhalves.map(([b]) => b));
      const dBytes = f64le(doubles.map(([v]) => v));
      let at = 0;
      const span = (len) => [at, (at += len)];
      const header = {
        __metadata__: { source: 'hand-built' },
        'h.weight': { dtype: 'F16', shape: [3, 5], data_offsets: span(hBytes.length) },
        'f.weight': { dtype: 'F32', shape: [2, 2], data_offsets: span(fBytes.length) },
        'b.weight': { dtype: 'BF16', shape: [10], data_offsets: span(bBytes.length) },
        'd.weight': { dtype: 'F64', shape: [5, 1, 2], data_offsets: span(dBytes.length) },
      };
      return buildFile(header, Buffer.concat([hBytes, fBytes, bBytes, dBytes]));
    }

    it('converts every special value exactly', function () {
      const bytes = file();
      // Also check the data is not required to be aligned: parse from an odd offset in a larger buffer.
      const shifted = new Uint8Array(bytes.length + 3);
      shifted.set(bytes, 3);
      for (const input of [bytes, shifted.subarray(3)]) {
        const { tensors, metadata } = st.parseSafetensors(input, 'hand.safetensors');
        expect(metadata).to.deep.equal({ source: 'hand-built' });
        expect(tensors.get('h.weight').shape).to.deep.equal([3, 5]);
        expectSameFloats(tensors.get('h.weight').data, halves.map(([, v]) => v), 'F16');
        expect(tensors.get('f.weight').shape).to.deep.equal([2, 2]);
        expectSameFloats(tensors.get('f.weight').data, f32, 'F32');
        expectSameFloats(tensors.get('b.weight').data, bhalves.map(([, v]) => v), 'BF16');
        expect(tensors.get('d.weight').shape).to.deep.equal([5, 1, 2]);
        expectSameFloats(tensors.get('d.weight').data, doubles.map(([, v]) => v), 'F64');
      }
    });

    it('converts all 65536 half-precision patterns exactly', function () {
      const all = Array.from({ length: 65536 }, (_, i) => i);
      const { tensors } = st.parseSafetensors(buildFile({ all: { dtype: 'F16', shape: [256, 256], data_offsets: [0, 131072] } }, u16le(all)));
      const got = tensors.get('all').data;
      // Independent decoding by formula.
      const expected = all.map((h) => {
        const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
        if (e === 31) return m ? NaN : s * Infinity;
        return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
      });
      expectSameFloats(got, expected, 'F16 pattern');
    });

    it('reads a file from disk by path', async function () {
      const dir = tmpDir();
      try {
        const p = path.join(dir, 'hand.safetensors');
        fs.writeFileSync(p, file());
        const { tensors } = await st.readSafetensors(p);
        expect([...tensors.keys()].sort()).to.deep.equal(['b.weight', 'd.weight', 'f.weight', 'h.weight']);
        expectSameFloats(tensors.get('f.weight').data, f32, 'F32');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('corrupt files', function () {
    const good = { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] };

    it('shorter than 8 bytes', async function () {
      await expectParseError(new Uint8Array(5), [/file is 5 bytes, shorter than the 8-byte header length prefix/]);
      await expectParseError(new Uint8Array(0), [/file is 0 bytes/]);
    });

    it('header length longer than the file', async function () {
      await expectParseError(buildFile({ a: good }, new Uint8Array(16), 1000), [/header length 1000 is longer than the file: only \d+ bytes follow the 8-byte length prefix/]);
    });

    it('absurd header length', async function () {
      const bytes = new Uint8Array(64);
      new DataView(bytes.buffer).setBigUint64(0, 2n ** 40n, true);
      await expectParseError(bytes, [/header length 1099511627776 is absurd: more than the 100000000 bytes/]);
    });

    it('header that is not JSON, not UTF-8 or not an object', async function () {
      await expectParseError(buildFile('{"a": {"dtype": "F32",'), [/header is not valid JSON: /]);
      await expectParseError(buildFile('[1, 2]'), [/header must be a JSON object, got an array of length 2/]);
      await expectParseError(buildFile('null'), [/header must be a JSON object, got null/]);
      const notUtf8 = buildFile('{"a":1}');
      notUtf8[9] = 0xff;
      await expectParseError(notUtf8, [/header \(7 bytes\) is not valid UTF-8/]);
    });

    it('truncated data section', async function () {
      const bytes = buildFile({ a: good, b: { dtype: 'F32', shape: [4], data_offsets: [16, 32] } }, new Uint8Array(32)).subarray(0, -12);
      await expectParseError(bytes, [/truncated: tensor "b" needs bytes \[16, 32\) but the data section has only 20 bytes/]);
    });

    it('a header that lies about the byte length', async function () {
      await expectParseError(buildFile({ a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, new Uint8Array(24)),
        [/header lies: tensor "a" has shape \[2, 3\] and dtype F32, which needs 24 bytes, but data_offsets \[0, 20\] span 20 bytes/]);
      await expectParseError(buildFile({ h: { dtype: 'F16', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
        [/header lies: tensor "h" has shape \[3\] and dtype F16, which needs 6 bytes, but data_offsets \[0, 8\] span 8 bytes/]);
    });

    it('overlapping tensors (but empty tensors may share an offset)', async function () {
      await expectParseError(buildFile({ a: good, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, new Uint8Array(24)),
        [/tensors "a" \[0, 16\) and "b" \[8, 24\) overlap/]);
      // A tensor inside another one.
      await expectParseError(buildFile({ big: { dtype: 'F32', shape: [8], data_offsets: [0, 32] }, in1: { dtype: 'F32', shape: [1], data_offsets: [4, 8] }, in2: { dtype: 'F32', shape: [1], data_offsets: [20, 24] } }, new Uint8Array(32)),
        [/tensors "big" \[0, 32\) and "in1" \[4, 8\) overlap/, /tensors "big" \[0, 32\) and "in2" \[20, 24\) overlap/]);
      const ok = st.parseSafetensors(buildFile({ a: good, e1: { dtype: 'F32', shape: [0], data_offsets: [4, 4] }, e2: { dtype: 'F32', shape: [0, 3], data_offsets: [4, 4] } }, new Uint8Array(16)));
      expect(ok.tensors.get('e2').shape).to.deep.equal([0, 3]);
    });

    it('unsupported and unknown dtypes', async function () {
      const e = await expectParseError(buildFile({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] }, mask: { dtype: 'BOOL', shape: [3], data_offsets: [16, 19] } }, new Uint8Array(19)),
        [/tensor "ids" has dtype I64, which cannot be loaded as float32 \(supported: F32, F16, BF16, F64\)/, /tensor "mask" has dtype BOOL, which cannot be loaded as float32/]);
      expect(e.message).to.not.match(/header lies/); // sizes of refused dtypes are known and were right
      await expectParseError(buildFile({ q: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, new Uint8Array(16)), [/tensor "q": unknown dtype "F128"/]);
    });

    it('bad metadata', async function () {
      await expectParseError(buildFile({ __metadata__: { epoch: 3, ok: 'yes', nested: { a: 'b' } }, a: good }, new Uint8Array(16)),
        [/__metadata__\["epoch"\] must be a string, got number 3/, /__metadata__\["nested"\] must be a string, got an object/]);
      await expectParseError(buildFile({ __metadata__: ['x'], a: good }, new Uint8Array(16)), [/__metadata__ must be an object mapping strings to strings, got an array of length 1/]);
    });

    it('malformed entries', async function () {
      const e = await expectParseError(buildFile({
        nodt: { shape: [1], data_offsets: [0, 4] },
        types: { dtype: 7, shape: 'x', data_offsets: [0, 4] },
        neg: { dtype: 'F32', shape: [-1, 1.5], data_offsets: [0, 4] },
        offs: { dtype: 'F32', shape: [1], data_offsets: [0] },
        rev: { dtype: 'F32', shape: [0], data_offsets: [8, 4] },
        notobj: 42,
      }, new Uint8Array(16)), [
        /tensor "nodt": entry is missing "dtype"/,
        /tensor "types": dtype must be a string, got number 7/,
        /tensor "types": shape must be an array of non-negative integers, got the string "x"/,
        /tensor "neg": shape\[0\] must be a non-negative integer, got number -1/,
        /tensor "neg": shape\[1\] must be a non-negative integer, got number 1.5/,
        /tensor "offs": data_offsets must be \[begin, end\] with non-negative integers, got \[number 0\]/,
        /tensor "rev": data_offsets \[8, 4\] are reversed: begin must be <= end/,
        /tensor "notobj": entry must be an object with dtype, shape and data_offsets, got number 42/,
      ]);
      expect(e.message).to.match(/\(8 problem\(s\)\):/);
    });

    it('lists every problem of a file with several in one error', async function () {
      const e = await expectParseError(buildFile({
        __metadata__: { epoch: 3 },
        a: good,
        overlaps: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
        lies: { dtype: 'F32', shape: [5], data_offsets: [16, 24] },
        ids: { dtype: 'I32', shape: [2], data_offsets: [24, 32] },
        past: { dtype: 'F32', shape: [4], data_offsets: [32, 48] },
      }, new Uint8Array(40)), [
        /__metadata__\["epoch"\] must be a string/,
        /tensors "a" \[0, 16\) and "overlaps" \[8, 16\) overlap/,
        /header lies: tensor "lies" has shape \[5\]/,
        /tensor "ids" has dtype I32/,
        /truncated: tensor "past" needs bytes \[32, 48\) but the data section has only 40 bytes/,
      ]);
      const lines = e.message.split('\n');
      expect(lines[0]).to.equal('parseSafetensors: bad.safetensors is not a valid safetensors file (5 problem(s)):');
      expect(lines).to.have.length(6);
      lines.slice(1).forEach((l) => expect(l).to.match(/^ {2}- /));
    });

    it('readSafetensors names the path, and reports a missing file', async function () {
      const dir = tmpDir();
      try {
        const p = path.join(dir, 'broken.safetensors');
        fs.writeFileSync(p, buildFile({ a: good }, new Uint8Array(8)));
        const e = await errorOf(st.readSafetensors(p));
        expect(e.message.split('\n')[0]).to.equal(`readSafetensors: ${p} is not a valid safetensors file (1 problem(s)):`);
        expect(e.message).to.match(/truncated: tensor "a" needs bytes \[0, 16\) but the data section has only 8 bytes/);
        const missing = await errorOf(st.readSafetensors(path.join(dir, 'nope.safetensors')));
        expect(missing.message).to.match(/readSafetensors: cannot read .*nope\.safetensors: no such file/);
        const bad = await errorOf(st.readSafetensors(42));
        expect(bad.message).to.equal('readSafetensors: source must be a file path or a Uint8Array, got number 42');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('encodeSafetensors argument checks', function () {
    it('lists every bad tensor and metadata value in one error', async function () {
      const e = await errorOf(() => st.encodeSafetensors(new Map([
        ['ok', { shape: [2], data: new Float32Array(2) }],
        ['short', { shape: [2, 3], data: new Float32Array(5) }],
        ['', { shape: [1], data: new Float32Array(1) }],
        ['f64', { shape: [1], data: new Float64Array(1) }],
        ['neg', { shape: [-2], data: new Float32Array(0) }],
        ['__metadata__', { shape: [1], data: new Float32Array(1) }],
      ]), { epoch: 3 }));
      const lines = e.message.split('\n');
      expect(lines[0]).to.equal('encodeSafetensors: cannot encode the tensors (6 problem(s)):');
      expect(e.message).to.match(/tensor "short": shape \[2, 3\] has 6 elements, but data has 5/);
      expect(e.message).to.match(/tensor names must be non-empty strings, got the string ""/);
      expect(e.message).to.match(/tensor "f64": data must be a Float32Array, got a Float64Array/);
      expect(e.message).to.match(/tensor "neg": shape\[0\] must be a non-negative integer, got number -2/);
      expect(e.message).to.match(/tensor "__metadata__": the name __metadata__ is reserved/);
      expect(e.message).to.match(/metadata\["epoch"\] must be a string, got number 3/);
      const notMap = await errorOf(() => st.encodeSafetensors(null));
      expect(notMap.message).to.match(/encodeSafetensors: tensors must be a Map or an object mapping names to \{shape, data\}, got null/);
    });
  });

  describe('checkStateDict', function () {
    const expected = new Map([
      ['conv1.weight', { shape: [96, 3, 7, 7] }],
      ['conv1.bias', { shape: [96] }],
      ['fc.weight', { shape: [10, 256] }],
      ['fc.bias', { shape: [10] }],
    ]);
    const host = (shape) => ({ dtype: 'float32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });

    it('passes when names and shapes match, with a Map or a plain object', function () {
      const got = new Map([...expected].map(([k, v]) => [k, host(v.shape)]));
      expect(() => st.checkStateDict(expected, got, 'loadModel')).to.not.throw();
      expect(() => st.checkStateDict(Object.fromEntries(expected), got, 'loadModel')).to.not.throw();
    });

    it('lists missing, unexpected and wrong-shaped tensors together', async function () {
      const got = new Map([
        ['conv1.weight', host([96, 3, 7, 7])],
        ['conv1.bias', host([64])],
        ['fc.weight', host([256, 10])],
        ['fc8.weight', host([1000, 4096])],
      ]);
      const e = await errorOf(() => st.checkStateDict(expected, got, 'loadModel: weights file w.safetensors does not fit zf5'));
      const lines = e.message.split('\n');
      expect(lines[0]).to.equal('loadModel: weights file w.safetensors does not fit zf5 (1 missing, 1 unexpected, 2 with the wrong shape):');
      expect(lines.slice(1)).to.deep.equal([
        '  - missing tensor "fc.bias" (expected shape [10])',
        '  - unexpected tensor "fc8.weight" (shape [1000, 4096])',
        '  - tensor "conv1.bias" has shape [64], expected [96]',
        '  - tensor "fc.weight" has shape [256, 10], expected [10, 256]',
      ]);
    });

    it('tells a 0-d tensor from a 1-element one, and hints at a DataParallel prefix', async function () {
      const e = await errorOf(() => st.checkStateDict({ step: { shape: [] } }, new Map([['step', host([1])]]), 'load'));
      expect(e.message).to.include('tensor "step" has shape [1], expected []');
      const got = new Map([...expected].map(([k, v]) => [`module.${k}`, host(v.shape)]));
      const p = await errorOf(() => st.checkStateDict(expected, got, 'load'));
      expect(p.message).to.match(/^load \(4 missing, 4 unexpected\):/);
      expect(p.message).to.match(/unexpected tensor "module.fc.bias" \(shape \[10\]\)/);
      expect(p.message).to.match(/hint: .*"module\." prefix/);
    });
  });

  describe('writeSafetensors', function () {
    let dir;
    beforeEach(function () {
      dir = tmpDir();
    });
    afterEach(function () {
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const tensors = { 'fc.weight': { shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) }, 'fc.bias': { shape: [2], data: Float32Array.of(-1, 0.25) } };

    it('writes a readable file and leaves no temporary file', async function () {
      const p = path.join(dir, 'w.safetensors');
      await st.writeSafetensors(p, tensors, { arch: 'zf5' });
      expect(fs.readdirSync(dir)).to.deep.equal(['w.safetensors']);
      expect(Buffer.from(fs.readFileSync(p)).equals(Buffer.from(st.encodeSafetensors(tensors, { arch: 'zf5' })))).to.equal(true);
      const back = await st.readSafetensors(p);
      expect(back.metadata).to.deep.equal({ arch: 'zf5' });
      expectSameFloats(back.tensors.get('fc.weight').data, tensors['fc.weight'].data, 'fc.weight');
      // Overwriting replaces the file.
      await st.writeSafetensors(p, { x: { shape: [], data: Float32Array.of(7) } });
      expect(fs.readdirSync(dir)).to.deep.equal(['w.safetensors']);
      expectSameFloats((await st.readSafetensors(p)).tensors.get('x').data, [7], 'x');
    });

    it('writes nothing when the data is invalid, and keeps an existing file intact', async function () {
      const fresh = path.join(dir, 'fresh.safetensors');
      const e = await errorOf(st.writeSafetensors(fresh, { w: { shape: [3, 3], data: new Float32Array(8) } }));
      expect(e.message).to.match(/^writeSafetensors: cannot encode the tensors \(1 problem\(s\)\):\n {2}- tensor "w": shape \[3, 3\] has 9 elements, but data has 8$/);
      expect(fs.readdirSync(dir)).to.deep.equal([]);

      const existing = path.join(dir, 'existing.safetensors');
      await st.writeSafetensors(existing, tensors);
      const before = fs.readFileSync(existing);
      await errorOf(st.writeSafetensors(existing, { w: { shape: [2], data: new Float32Array(3) } }));
      expect(fs.readdirSync(dir)).to.deep.equal(['existing.safetensors']);
      expect(fs.readFileSync(existing).equals(before)).to.equal(true);
    });

    it('reports a folder that does not exist, leaving nothing behind', async function () {
      const p = path.join(dir, 'no', 'such', 'w.safetensors');
      const e = await errorOf(st.writeSafetensors(p, tensors));
      expect(e.message).to.include(`writeSafetensors: cannot write ${p}: `);
      expect(e.message).to.match(/ENOENT/);
      expect(fs.readdirSync(dir)).to.deep.equal([]);
      // The rename fails after the temporary file was written (the target is a folder): it is removed.
      const folder = path.join(dir, 'taken');
      fs.mkdirSync(folder);
      fs.writeFileSync(path.join(folder, 'keep'), 'x');
      const r = await errorOf(st.writeSafetensors(folder, tensors));
      expect(r.message).to.include(`writeSafetensors: cannot write ${folder}: `);
      expect(fs.readdirSync(dir)).to.deep.equal(['taken']);
      expect(fs.readdirSync(folder)).to.deep.equal(['keep']);
      const bad = await errorOf(st.writeSafetensors('', tensors));
      expect(bad.message).to.equal('writeSafetensors: path must be a non-empty string, got the string ""');
    });
  });
});
