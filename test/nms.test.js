'use strict';
// sp.nms and sp.batchedNms: torchvision's own results (test/fixtures/nms, written by
// tools/make_nms_fixtures.py with torch 1.13 / torchvision 0.14), random cases with fresh seeds
// against the plain reference below, and the argument errors; on every device present.
const { expect } = require('chai');
const fs = require('fs');
const path = require('path');
const { sp, cudaStatus, expectReject } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');

const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];
const FIXTURES = path.join(__dirname, 'fixtures', 'nms');

// ---- the reference, from torchvision's definition (csrc/ops/cpu/nms_kernel.cpp) ----

/**
 * libstdc++'s std::sort (introsort, GCC 12), which torch 1.13's CPU sort runs: the order it leaves
 * tied elements in. The heap-sort fallback (recursion deeper than 2 log2 n) is not modelled.
 */
function stdSort(a, less) {
  const swap = (i, j) => ([a[i], a[j]] = [a[j], a[i]]);
  const linearInsert = (last) => {
    const v = a[last];
    let next = last - 1;
    while (less(v, a[next])) {
      a[last] = a[next];
      last = next--;
    }
    a[last] = v;
  };
  const insertion = (first, last) => {
    for (let i = first + 1; i < last; i++) {
      if (less(a[i], a[first])) {
        const v = a[i];
        for (let k = i; k > first; k--) a[k] = a[k - 1];
        a[first] = v;
      } else linearInsert(i);
    }
  };
  const medianToFirst = (r, x, y, z) => {
    if (less(a[x], a[y])) {
      if (less(a[y], a[z])) swap(r, y);
      else if (less(a[x], a[z])) swap(r, z);
      else swap(r, x);
    } else if (less(a[x], a[z])) swap(r, x);
    else if (less(a[y], a[z])) swap(r, z);
    else swap(r, y);
  };
  const partition = (first, last, pivot) => {
    for (;;) {
      while (less(a[first], a[pivot])) first++;
      last--;
      while (less(a[pivot], a[last])) last--;
      if (!(first < last)) return first;
      swap(first, last);
      first++;
    }
  };
  const loop = (first, last, depth) => {
    while (last - first > 16) {
      if (depth === 0) throw new Error('stdSort: the heap-sort fallback is not modelled');
      depth--;
      const mid = first + ((last - first) >> 1);
      medianToFirst(first, first + 1, mid, last - 1);
      const cut = partition(first + 1, last, first);
      loop(cut, last, depth);
      last = cut;
    }
  };
  const n = a.length;
  if (n < 2) return a;
  loop(0, n, 2 * Math.floor(Math.log2(n)));
  if (n > 16) {
    insertion(0, 16);
    for (let i = 16; i < n; i++) linearInsert(i);
  } else insertion(0, n);
  return a;
}

/**
 * torch's sort(descending=True) indices: NaN first, then larger first. stable (what nms uses): ties
 * in index order; else (torch's default, batched_nms's final sort) as std::sort leaves them.
 */
function sortDesc(scores, idx, stable) {
  const pairs = idx.map((i) => [scores[i], i]);
  const before = (p, q) => (Number.isNaN(p[0]) && !Number.isNaN(q[0])) || p[0] > q[0];
  if (stable) pairs.sort((p, q) => (before(p, q) ? -1 : before(q, p) ? 1 : p[1] - q[1]));
  else stdSort(pairs, before);
  return pairs.map((p) => p[1]);
}

/** torchvision.ops.nms on float32 boxes (a flat Float32Array) and scores, over the boxes `idx`. */
function refNms(boxes, scores, iou, idx = [...scores.keys()]) {
  const f = Math.fround;
  const max = (a, b) => (a < b ? b : a), min = (a, b) => (b < a ? b : a);
  const area = (i) => f(f(boxes[4 * i + 2] - boxes[4 * i]) * f(boxes[4 * i + 3] - boxes[4 * i + 1]));
  const order = sortDesc(scores, idx, true);
  const suppressed = new Set(), keep = [];
  for (let a = 0; a < order.length; a++) {
    const i = order[a];
    if (suppressed.has(i)) continue;
    keep.push(i);
    for (let b = a + 1; b < order.length; b++) {
      const j = order[b];
      if (suppressed.has(j)) continue;
      const w = max(0, f(min(boxes[4 * i + 2], boxes[4 * j + 2]) - max(boxes[4 * i], boxes[4 * j])));
      const h = max(0, f(min(boxes[4 * i + 3], boxes[4 * j + 3]) - max(boxes[4 * i + 1], boxes[4 * j + 1])));
      const inter = f(w * h);
      const ovr = f(inter / f(f(area(i) + area(j)) - inter));
      if (ovr > iou) suppressed.add(j); // the float IoU against the double threshold
    }
  }
  return keep;
}

/** torchvision's _batched_nms_vanilla: nms per class, the kept indices ascending, then sorted by score. */
function refBatchedNms(boxes, scores, classes, iou) {
  const kept = [];
  for (const c of new Set(classes)) kept.push(...refNms(boxes, scores, iou, [...classes.keys()].filter((i) => classes[i] === c)));
  return sortDesc(scores, kept.sort((a, b) => a - b), false);
}

function randomCase(r, n, { ties = false, integer = false, nans = false, classes = 0 } = {}) {
  const boxes = new Float32Array(4 * n), scores = new Float32Array(n);
  const centres = Array.from({ length: Math.max(1, Math.floor(n / 10)) }, () => [r.next() * 300, r.next() * 300]);
  for (let i = 0; i < n; i++) {
    const [cx, cy] = centres[r.int(0, centres.length - 1)];
    let x = cx + r.normal() * 6, y = cy + r.normal() * 6, w = 5 + r.next() * 30, h = 5 + r.next() * 30;
    if (integer) [x, y, w, h] = [Math.round(x / 4), Math.round(y / 4), r.int(1, 6), r.int(1, 6)];
    if (r.next() < 0.03) w = -w; // degenerate
    boxes.set([x, y, x + w, y + h], 4 * i);
    if (i > 0 && r.next() < 0.05) {
      const j = r.int(0, i - 1);
      boxes.copyWithin(4 * i, 4 * j, 4 * j + 4); // a copy of an earlier box
    }
    scores[i] = ties && r.next() < 0.5 ? r.int(0, 3) / 4 : r.next();
    if (nans && r.next() < 0.05) scores[i] = NaN;
    if (nans && r.next() < 0.02) boxes[4 * i + r.int(0, 3)] = [NaN, Infinity, -Infinity][r.int(0, 2)]; // a box that never interacts, or one of infinite area
  }
  const cls = classes ? Float32Array.from({ length: n }, () => r.int(0, classes - 1)) : undefined;
  return { boxes, scores, classes: cls };
}

function loadFixtures() {
  return fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.json')).sort().map((f) => {
    const doc = JSON.parse(fs.readFileSync(path.join(FIXTURES, f), 'utf8'));
    const num = (v) => (v === null ? NaN : Number(v)); // NaN is null, infinities are strings
    return { file: f, cases: doc.cases.map((c) => ({ ...c, boxes: Float32Array.from(c.boxes, num), scores: Float32Array.from(c.scores, num) })) };
  });
}

describe('the nms reference', function () {
  it('reproduces the fixtures (so the random cases test the same thing as they do)', function () {
    for (const { cases } of loadFixtures())
      for (const c of cases) {
        const want = c.classes ? refBatchedNms(c.boxes, c.scores, c.classes, c.iou) : refNms(c.boxes, c.scores, c.iou);
        expect(want, c.name).to.deep.equal(c.keep);
      }
  });
});

for (const device of devices) {
  describe(`nms on ${device}`, function () {
    const T = (data, shape) => sp.tensor(Float32Array.from(data), shape, { device });
    async function run(c, iou = c.iou) {
      const n = c.scores.length;
      const B = T(c.boxes, [n, 4]), S = T(c.scores, [n]), C = c.classes ? T(c.classes, [n]) : null;
      try {
        return C ? await sp.batchedNms(B, S, C, { iou }) : await sp.nms(B, S, { iou });
      } finally {
        [B, S, C].forEach((t) => t && t.dispose());
      }
    }

    for (const { file, cases } of loadFixtures()) {
      it(`gives torchvision's indices, in order: ${file} (${cases.map((c) => c.scores.length).join(', ')} boxes)`, async function () {
        for (const c of cases) {
          const got = await run(c);
          expect(got, c.name).to.be.instanceOf(Int32Array);
          expect(Array.from(got), c.name).to.deep.equal(c.keep);
        }
      });
    }

    it('agrees with the reference on random boxes with fresh seeds: ties, NaN scores, NaN and infinite coordinates, integer boxes, degenerate boxes, per class', async function () {
      const seed = freshSeed();
      const r = rng(seed);
      const sizes = [0, 1, 2, 17, 64, 65, 130, 600, 3000];
      for (const n of sizes)
        for (const opts of [{}, { ties: true, nans: true }, { integer: true, ties: true }, { classes: 3, ties: true }, { classes: 12, integer: true, nans: true }]) {
          const c = randomCase(r, n, opts);
          const iou = [0, 0.3, 0.5, 0.7, 1, 1 / 3][r.int(0, 5)];
          const want = c.classes ? refBatchedNms(c.boxes, c.scores, c.classes, iou) : refNms(c.boxes, c.scores, iou);
          const got = await run(c, iou);
          expect(Array.from(got), `seed ${seed}, n ${n}, ${JSON.stringify(opts)}, iou ${iou}`).to.deep.equal(want);
        }
    });

    it('rejects bad arguments, naming the call and the argument', async function () {
      const B = T([0, 0, 1, 1, 0, 0, 2, 2], [2, 4]), S = T([0.5, 0.7], [2]), C = T([0, 1], [2]);
      await expectReject(() => sp.nms([0, 0, 1, 1], S, { iou: 0.5 }), /^sp\.nms: boxes must be a Tensor \[N, 4\]/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.nms(T([0, 0, 1, 1, 2, 2], [2, 3]), S, { iou: 0.5 }), /^sp\.nms: boxes must have shape \[N, 4\] \(x1, y1, x2, y2\), got \[2, 3\]/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.nms(T([0, 0, 1, 1], [4]), S, { iou: 0.5 }), /^sp\.nms: boxes must have shape \[N, 4\].*got \[4\]/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.nms(B, T([1, 2, 3], [3]), { iou: 0.5 }), /^sp\.nms: scores has 3 values, but boxes has 2 boxes \(axis 0\)/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.nms(B, T([1, 2], [2, 1]), { iou: 0.5 }), /^sp\.nms: scores must have rank 1 \[2\], got shape \[2, 1\]/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.nms(B, new Float32Array(2), { iou: 0.5 }), /^sp\.nms: scores must be a Tensor \[2\]/, 'SPPNET_INVALID_ARGUMENT');
      for (const iou of [1.5, -0.1, NaN, Infinity, '0.5'])
        await expectReject(() => sp.nms(B, S, { iou }), /^sp\.nms: options\.iou must be a number in \[0, 1\], got/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.nms(B, S, {}), /^sp\.nms: options\.iou is required/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.nms(B, S), /^sp\.nms: options\.iou is required/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.nms(B, S, 0.5), /^sp\.nms: options must be an object/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.batchedNms(B, S, [0, 1], { iou: 0.5 }), /^sp\.batchedNms: classes must be a Tensor \[2\]/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.batchedNms(B, S, T([0], [1]), { iou: 0.5 }), /^sp\.batchedNms: classes has 1 values, but boxes has 2 boxes/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.batchedNms(B, S, T([0, 1.5], [2]), { iou: 0.5 }), /^sp\.batchedNms: classes\[1\] is 1\.5: class ids must be integers/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.batchedNms(B, S, T([NaN, 1], [2]), { iou: 0.5 }), /^sp\.batchedNms: classes\[0\] is nan: class ids must be integers/, 'SPPNET_INVALID_ARGUMENT');
      await expectReject(() => sp.batchedNms(B, S, C, { iou: NaN }), /^sp\.batchedNms: options\.iou must be a number in \[0, 1\]/, 'SPPNET_INVALID_ARGUMENT');
      const D = T([0, 0, 1, 1, 0, 0, 2, 2], [2, 4]), E = T([1, 2], [2]), F = T([0, 0], [2]);
      D.dispose();
      E.dispose();
      F.dispose();
      await expectReject(() => sp.nms(D, S, { iou: 0.5 }), /^sp\.nms: boxes was disposed/, 'SPPNET_DISPOSED');
      await expectReject(() => sp.nms(B, E, { iou: 0.5 }), /^sp\.nms: scores was disposed/, 'SPPNET_DISPOSED');
      await expectReject(() => sp.batchedNms(B, S, F, { iou: 0.5 }), /^sp\.batchedNms: classes was disposed/, 'SPPNET_DISPOSED');
      if (cudaStatus().ok) {
        const other = device === 'cpu' ? 'cuda' : 'cpu';
        const S2 = sp.tensor([0.5, 0.7], [2], { device: other }), C2 = sp.tensor([0, 1], [2], { device: other });
        await expectReject(() => sp.nms(B, S2, { iou: 0.5 }), new RegExp(`^sp\\.nms: scores is on ${other}, boxes on ${device}`), 'SPPNET_DEVICE_MISMATCH');
        await expectReject(() => sp.batchedNms(B, S, C2, { iou: 0.5 }), new RegExp(`^sp\\.batchedNms: classes is on ${other}, boxes on ${device}`), 'SPPNET_DEVICE_MISMATCH');
        [S2, C2].forEach((t) => t.dispose());
      }
      [B, S, C].forEach((t) => t.dispose());
    });

    it('an empty set keeps nothing; a single box is kept', async function () {
      expect(Array.from(await sp.nms(sp.zeros([0, 4], { device }), sp.zeros([0], { device }), { iou: 0.5 }))).to.deep.equal([]);
      expect(Array.from(await sp.batchedNms(sp.zeros([0, 4], { device }), sp.zeros([0], { device }), sp.zeros([0], { device }), { iou: 0.5 }))).to.deep.equal([]);
      expect(Array.from(await sp.nms(T([1, 1, 2, 2], [1, 4]), T([NaN], [1]), { iou: 0 }))).to.deep.equal([0]);
    });
  });
}
