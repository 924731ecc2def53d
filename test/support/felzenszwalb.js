'use strict';
// A plain reference of Felzenszwalb-Huttenlocher graph segmentation (the authors' segment-image.h
// and filter.h), as cpu/proposals_segment.cpp defines it: float arithmetic step for step
// (Math.fround), one 8-neighbour graph on the Euclidean distance of the smoothed channels, edges
// taken by increasing weight (ties in edge order), then components under minSize joined. On
// planar channels as they are (the native side's 'rgb' colour space).
const f = Math.fround;

function gaussMask(sigma) {
  sigma = Math.max(sigma, 0.01);
  const len = Math.ceil(sigma * 4) + 1;
  const m = [];
  for (let i = 0; i < len; i++) m.push(f(Math.exp(-0.5 * (i / sigma) * (i / sigma))));
  let sum = f(0);
  for (let i = 1; i < len; i++) sum = f(sum + Math.abs(m[i]));
  sum = f(f(2 * sum) + Math.abs(m[0]));
  return m.map((v) => f(v / sum));
}

/** Rows, then columns, borders clamped; each sum from the centre tap out. */
function smooth(src, w, h, m) {
  const tmp = new Float32Array(w * h), dst = new Float32Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let sum = f(m[0] * src[y * w + x]);
      for (let i = 1; i < m.length; i++) sum = f(sum + f(m[i] * f(src[y * w + Math.max(x - i, 0)] + src[y * w + Math.min(x + i, w - 1)])));
      tmp[y * w + x] = sum;
    }
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let sum = f(m[0] * tmp[y * w + x]);
      for (let i = 1; i < m.length; i++) sum = f(sum + f(m[i] * f(tmp[Math.max(y - i, 0) * w + x] + tmp[Math.min(y + i, h - 1) * w + x])));
      dst[y * w + x] = sum;
    }
  return dst;
}

/** Labels (row-major) of the segmentation of interleaved 8-bit RGB, numbered by first appearance. */
function felzenszwalb(rgb, w, h, { sigma, k, minSize }) {
  const n = w * h;
  const m = gaussMask(sigma);
  const ch = [0, 1, 2].map((c) => smooth(Float32Array.from({ length: n }, (_, p) => rgb[3 * p + c]), w, h, m));
  const edges = [];
  const add = (a, b) => {
    const d = ch.map((s) => f(s[a] - s[b]));
    edges.push({ a, b, w: f(Math.sqrt(f(f(f(d[0] * d[0]) + f(d[1] * d[1])) + f(d[2] * d[2])))) });
  };
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      if (x < w - 1) add(p, p + 1);
      if (y < h - 1) add(p, p + w);
      if (x < w - 1 && y < h - 1) add(p, p + w + 1);
      if (x < w - 1 && y > 0) add(p, p - w + 1);
    }
  edges.sort((e1, e2) => e1.w - e2.w); // stable: ties stay in edge order
  const parent = Int32Array.from({ length: n }, (_, i) => i), size = new Int32Array(n).fill(1), rank = new Int32Array(n);
  const thr = new Float32Array(n).fill(f(k));
  const find = (x) => {
    while (parent[x] !== x) x = parent[x];
    return x;
  };
  const join = (x, y) => {
    if (rank[x] > rank[y]) {
      parent[y] = x;
      size[x] += size[y];
      return x;
    }
    parent[x] = y;
    size[y] += size[x];
    if (rank[x] === rank[y]) rank[y]++;
    return y;
  };
  for (const e of edges) {
    let a = find(e.a);
    const b = find(e.b);
    if (a !== b && e.w <= thr[a] && e.w <= thr[b]) {
      a = join(a, b);
      thr[a] = f(e.w + f(f(k) / size[a]));
    }
  }
  for (const e of edges) {
    const a = find(e.a), b = find(e.b);
    if (a !== b && (size[a] < minSize || size[b] < minSize)) join(a, b);
  }
  const id = new Map();
  return Int32Array.from({ length: n }, (_, p) => {
    const r = find(p);
    if (!id.has(r)) id.set(r, id.size);
    return id.get(r);
  });
}

module.exports = { felzenszwalb };
