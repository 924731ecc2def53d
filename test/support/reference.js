'use strict';
// Plain reference implementations, written from the formulas and sharing no code with the
// kernels (not even the bin helper): float64 arithmetic, nested loops, obviously right.

/** Bin i of n over length a: [start, end), per rule, as documented in the README. */
function refBin(rule, i, n, a) {
  let s, e;
  if (rule === 'paper') {
    const stride = Math.floor(a / n), win = Math.ceil(a / n);
    s = i * stride;
    e = s + win;
  } else if (rule === 'caffe') {
    const k = Math.ceil(a / n), pad = Math.floor((k * n - a + 1) / 2);
    s = i * k - pad;
    e = s + k;
  } else {
    s = Math.floor((i * a) / n);
    e = Math.ceil(((i + 1) * a) / n);
  }
  return [Math.max(0, s), Math.min(a, e)];
}

/**
 * maps: array of { data: Float32Array|number[], C, H, W }; regions: array of [m, y0, x0, h, w]
 * (defaults to whole maps). Returns Float64Array [R, C * sum(n*n)].
 */
function refSpp(maps, { levels = [6, 3, 2, 1], pool = 'max', bins = 'adaptive', regions } = {}) {
  const C = maps[0].C;
  regions = regions || maps.map((m, i) => [i, 0, 0, m.H, m.W]);
  const F = C * levels.reduce((a, n) => a + n * n, 0);
  const out = new Float64Array(regions.length * F);
  regions.forEach(([m, y0, x0, h, w], r) => {
    const { data, H, W } = maps[m];
    let k = r * F;
    for (const n of levels)
      for (let c = 0; c < C; c++)
        for (let i = 0; i < n; i++)
          for (let j = 0; j < n; j++) {
            const [ys, ye] = refBin(bins, i, n, h);
            const [xs, xe] = refBin(bins, j, n, w);
            let acc = pool === 'max' ? -Infinity : 0;
            let nan = false;
            for (let y = ys; y < ye; y++)
              for (let x = xs; x < xe; x++) {
                const v = data[c * H * W + (y0 + y) * W + (x0 + x)];
                if (Number.isNaN(v)) nan = true;
                if (pool === 'max') acc = Math.max(acc, v);
                else acc += v;
              }
            if (pool === 'avg') acc /= (ye - ys) * (xe - xs);
            out[k++] = nan ? NaN : acc;
          }
  });
  return out;
}

/** d(maps) for d(out) (Float32Array/Float64Array [R, F]); returns an array of Float64Array per map. */
function refSppBackward(maps, gradOut, { levels = [6, 3, 2, 1], pool = 'max', bins = 'adaptive', regions } = {}) {
  const C = maps[0].C;
  regions = regions || maps.map((m, i) => [i, 0, 0, m.H, m.W]);
  const F = C * levels.reduce((a, n) => a + n * n, 0);
  const grads = maps.map((m) => new Float64Array(m.C * m.H * m.W));
  regions.forEach(([m, y0, x0, h, w], r) => {
    const { data, H, W } = maps[m];
    const g = grads[m];
    let k = r * F;
    for (const n of levels)
      for (let c = 0; c < C; c++)
        for (let i = 0; i < n; i++)
          for (let j = 0; j < n; j++) {
            const gv = gradOut[k++];
            const [ys, ye] = refBin(bins, i, n, h);
            const [xs, xe] = refBin(bins, j, n, w);
            const idx = (y, x) => c * H * W + (y0 + y) * W + (x0 + x);
            if (pool === 'avg') {
              for (let y = ys; y < ye; y++) for (let x = xs; x < xe; x++) g[idx(y, x)] += gv / ((ye - ys) * (xe - xs));
              continue;
            }
            // First maximum in row-major order; the first NaN if there is one.
            let best = -1, bv = -Infinity;
            outer: for (let y = ys; y < ye; y++)
              for (let x = xs; x < xe; x++) {
                const v = data[idx(y, x)];
                if (Number.isNaN(v)) { best = idx(y, x); break outer; }
                if (best < 0 || v > bv) { best = idx(y, x); bv = v; }
              }
            g[best] += gv;
          }
  });
  return grads;
}

/** Small seeded PRNG (mulberry32), so a failing case can be replayed from its printed seed. */
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), // inclusive
    normal: () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next()),
  };
}

function freshSeed() {
  return process.env.SPPNET_TEST_SEED ? Number(process.env.SPPNET_TEST_SEED) : (Math.random() * 2 ** 32) >>> 0;
}

function randomMap(r, C, H, W) {
  const data = new Float32Array(C * H * W);
  for (let i = 0; i < data.length; i++) data[i] = r.normal();
  return { data, C, H, W };
}

module.exports = { refBin, refSpp, refSppBackward, rng, freshSeed, randomMap };
