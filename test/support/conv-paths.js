'use strict';
// Checks for the tests of one CPU conv path (test/layers.test.js runs them in child processes
// whose environment picks the path: the direct, lanes and AMX paths): in the child, a ragged case
// against the float64 reference and a model's packed-filter cache; in the parent, the child run
// with the path on and off.
const crypto = require('crypto');
const path = require('path');
const { randomMap, refSpp } = require('./reference');
const { refConv2d, refLinear } = require('./layers-reference');

/**
 * sp.conv2d of conv `c` over random maps of `sizes` (a ragged batch; a NaN in the first map, an
 * infinity in the last) into a poisoned `out`, against refConv2d. Options: `inf` (the infinity:
 * -Infinity by default, 'random' for either sign), `infPlane0` (put it in channel 0, so that an
 * infinite weight of channel 1 never multiplies it), `infWeight` (one weight of input channel 1
 * -Infinity, where c has no padding: the reference skips padded taps where PyTorch multiplies
 * zeros), `bound` (the error allowed relative to sum |w x| + |b| of each output, non-finite
 * results exactly; else |got - ref| <= 2e-4 (1 + |ref|)). Returns { bad, worst, outputs, hash }
 * (hash: 12 hex digits of the outputs' SHA-256, to tell runs whose sums differ in order apart).
 */
async function raggedCase(sp, r, c, sizes, { inf = -Infinity, infPlane0 = false, infWeight = false, bound } = {}) {
  const maps = sizes.map(([H, W]) => randomMap(r, c.cin, H, W));
  maps[0].data[r.int(0, maps[0].data.length - 1)] = NaN;
  const last = maps[maps.length - 1];
  last.data[r.int(0, (infPlane0 ? last.H * last.W : last.data.length) - 1)] = inf === 'random' ? (r.int(0, 1) ? Infinity : -Infinity) : inf;
  const w = Float32Array.from({ length: c.cout * c.cin * c.kh * c.kw }, () => r.normal() * 0.3);
  if (infWeight && !c.padding) w[(r.int(0, c.cout - 1) * c.cin + 1) * c.kh * c.kw] = -Infinity;
  const b = Float32Array.from({ length: c.cout }, () => r.normal());
  const refs = maps.map((m) => refConv2d(m, w, b, c));
  const mags = bound === undefined ? null : maps.map((m) => refConv2d({ ...m, data: m.data.map(Math.abs) }, w.map(Math.abs), b.map(Math.abs), { ...c, relu: false }));
  const out = sp.ragged(refs.map((e) => sp.tensor(new Float32Array(c.cout * e.H * e.W).fill(-6.5e31), [c.cout, e.H, e.W])));
  const rb = sp.ragged(maps.map((m) => sp.tensor(m.data, [m.C, m.H, m.W])));
  const outputs = await (await sp.conv2d(rb, sp.tensor(w, [c.cout, c.cin, c.kh, c.kw]), sp.tensor(b, [c.cout]), { ...c, out })).arrays();
  const t = tally(bound);
  refs.forEach((e, i) => {
    if (mags) return t.check(outputs[i], e.data, mags[i].data);
    e.data.forEach((v, j) => {
      const g = outputs[i][j];
      if (Number.isNaN(v) ? !Number.isNaN(g) : !(g === v || Math.abs(g - v) <= 2e-4 * (1 + Math.abs(v)))) t.bad++;
    });
  });
  return { bad: t.bad, worst: t.worst, outputs, hash: hash12(outputs) };
}

/**
 * Errors against a bound: check(got, ref, mag, b = bound) counts the elements further than b x mag
 * from the reference (non-finite references exactly, any NaN for NaN) in `bad`, the largest
 * |got - ref| / mag of the finite ones in `worst`.
 */
function tally(bound) {
  const t = {
    bad: 0,
    worst: 0,
    check(got, ref, mag, b = bound) {
      for (let i = 0; i < got.length; i++) {
        const v = ref[i], g = got[i];
        if (!Number.isFinite(v)) {
          if (!Object.is(g, v) && !(Number.isNaN(v) && Number.isNaN(g))) t.bad++;
          continue;
        }
        const err = Math.abs(g - v) / (mag[i] + 1e-30);
        t.worst = Math.max(t.worst, err);
        if (!(err <= b)) t.bad++;
      }
    },
  };
  return t;
}

/** 12 hex digits of the SHA-256 of typed arrays' bytes: runs whose sums differ in order tell apart. */
function hash12(arrays) {
  const h = crypto.createHash('sha256');
  arrays.forEach((a) => h.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength)));
  return h.digest('hex').slice(0, 12);
}

/**
 * A model of one conv (`conv`: a spec layer, relu on, named conv1) on an `H` x `W` image, then
 * SPP {2, 1} and an fc of 3: the logits of two runs against the reference, then the conv's filter
 * cache: `cacheOk(length)` must hold, spoiling it must change the logits, restoring it must give
 * the first run's. Returns the count of failures (1000 for each cache failure).
 */
async function filterCacheCheck(sp, r, conv, H, W, cacheOk = () => true) {
  const spec = { name: 'path', inChannels: 3, layers: [{ type: 'conv', name: 'conv1', relu: true, ...conv }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'fc', out: 3 }] };
  const m = await sp.buildModel({ spec, seed: 7, device: 'cpu' });
  const img = { data: Float32Array.from({ length: 3 * H * W }, () => r.normal()), C: 3, H, W };
  const sd = await m.stateDict();
  const Wt = (n) => sd.get(n).data;
  const pair = (v) => (Array.isArray(v) ? v : [v, v]);
  const [kh, kw] = pair(conv.kernel);
  const geometry = { cout: conv.out, kh, kw, stride: pair(conv.stride ?? 1), padding: pair(conv.padding ?? 0), relu: true };
  const f = refSpp([refConv2d(img, Wt('conv1.weight'), Wt('conv1.bias'), geometry)], { levels: [2, 1] });
  const ref = refLinear(f, 1, f.length, Wt('fc.weight'), 3, Wt('fc.bias'));
  const run = async () => Array.from(await (await m.run([sp.tensor(img.data, [3, H, W])])).data());
  const one = await run(), two = await run();
  let bad = 0;
  [one, two].forEach((y) => y.forEach((v, j) => { if (!(Math.abs(v - ref[j]) <= 1e-4 * (1 + Math.abs(ref[j])))) bad++; }));
  const cache = m.filterCaches.get('conv1');
  if (!cache || !cacheOk(cache.length)) return bad + 1000;
  const good = Float32Array.from(cache);
  cache.fill(0, 16);
  const spoiled = await run();
  if (!spoiled.some((v, j) => Math.abs(v - one[j]) > 1e-3)) bad += 1000;
  cache.set(good);
  if ((await run()).some((v, j) => v !== one[j])) bad += 1000;
  m.dispose();
  return bad;
}

/**
 * Parent side: the child script `code` run on the CPU with `flag` (the path's variable) '1' on 1
 * and 2 threads, then '0' on 1 thread; its stdout lines, each child's stderr expected empty.
 * Where the first line is `skip` (no such CPU) the test is skipped (`test`: mocha's this). Then
 * expects `pattern` of the first line, the same line on 2 threads (the same sums), 'bad 0' with the
 * path off, and each case's hash (the third word, comma-separated) other with it off: the path ran.
 */
/**
 * The child script `code` run on the CPU with `flag` set to `on` (null: unset, the default) on 1
 * and 2 threads, then '0' on 1 thread: their stdout, each child's stderr expected empty.
 */
function onAndOffRuns(code, flag, on) {
  const { expect } = require('chai');
  const { runNode } = require('./child');
  return [['1', on], ['2', on], ['1', '0']].map(([threads, value]) => {
    const env = { ...process.env, SPPNET_NUM_THREADS: threads, SPPNET_DEVICE: 'cpu' };
    if (value === null) delete env[flag];
    else env[flag] = value;
    const res = runNode(['-e', code], { cwd: path.resolve(__dirname, '..', '..'), env });
    expect(res.stderr).to.equal('');
    return res.stdout.trim();
  });
}

function onAndOff(test, code, seed, { flag, skip, pattern, label }) {
  const { expect } = require('chai');
  const results = onAndOffRuns(code, flag, '1');
  if (results[0] === skip) test.skip();
  expect(results[0], `seed ${seed}`).to.match(pattern);
  expect(results[1], `seed ${seed}: the same sums on 2 threads`).to.equal(results[0]);
  expect(results[2], `seed ${seed}: ${flag}=0`).to.match(/^bad 0 /);
  const on = results[0].split(' ')[2].split(','), off = results[2].split(' ')[2].split(',');
  on.forEach((h, i) => expect(h, `seed ${seed} case ${i}: ${label}`).to.not.equal(off[i]));
}

module.exports = { raggedCase, filterCacheCheck, onAndOff, onAndOffRuns, tally, hash12 };
