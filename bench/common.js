'use strict';
// Helpers shared by bench/run.js (CPU) and bench/gpu_spp.js (CUDA).
const fs = require('fs');
const path = require('path');

/** bench/workloads.json: the map sizes and windows of W1-W4 (see bench/make_workloads.py). */
function loadWorkloads() {
  return JSON.parse(fs.readFileSync(path.join(__dirname, 'workloads.json'), 'utf8'));
}

// mulberry32: a small seeded PRNG, so every run pools the same numbers.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n uniform numbers in [-1, 1) from `next`. */
function randomArray(n, next) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = 2 * next() - 1;
  return a;
}

/** Median, min and max of timing samples (ms), each multiplied by `scale`. */
function stats(samples, scale = 1) {
  if (samples.length === 0) return null;
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { reps: s.length, medianMs: median * scale, minMs: s[0] * scale, maxMs: s[s.length - 1] * scale, samplesMs: samples, scale };
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/** Bytes of every window's area, read once: W4's floor (the map itself is cache-sized). */
function windowBytes(windows, channels) {
  return windows.reduce((s, [, x0, y0, x1, y1]) => s + 4 * channels * (x1 - x0 + 1) * (y1 - y0 + 1), 0);
}

/** Fixed-width text table; the first `left` columns are left-aligned. */
function textTable(head, rows, left = 2) {
  const all = [head, ...rows];
  const wd = head.map((_, j) => Math.max(...all.map((r) => String(r[j]).length)));
  const line = (r) => r.map((c, j) => (j < left ? String(c).padEnd(wd[j]) : String(c).padStart(wd[j]))).join('  ');
  return [line(head), wd.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

function mdTable(head, rows, left = 2) {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, j) => (j < left ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** The addon's build time and the git commit (and whether lib/ or the kernels have local changes). */
function buildInfo() {
  const info = { addonMtime: null, commit: null, dirty: null };
  try {
    info.addonMtime = fs.statSync(path.join(__dirname, '..', 'build', 'Release', 'sppnet.node')).mtime.toISOString();
  } catch {}
  try {
    const git = (args) => require('child_process').execFileSync('git', args, { cwd: path.join(__dirname, '..'), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    info.commit = git(['rev-parse', '--short', 'HEAD']);
    info.dirty = git(['status', '--porcelain', '--untracked-files=no', '--', 'lib', 'cpu', 'cuda', 'include', 'binding']) !== '';
  } catch {}
  return info;
}

/** [N, C, H, W] (row-major) to [N, H, W, C], tfjs's layout. */
function toNHWC(src, count, C, H, W) {
  const dst = new Float32Array(src.length);
  const plane = H * W, map = C * plane;
  for (let m = 0; m < count; m++) {
    const o = m * map;
    for (let c = 0; c < C; c++) {
      const s = o + c * plane;
      for (let p = 0; p < plane; p++) dst[o + p * C + c] = src[s + p];
    }
  }
  return dst;
}

/** One pyramid level in tfjs as its users build it: maxPool with the paper's window ceil(a/n) and stride floor(a/n). */
function tfLevel(tf, x, n) {
  const [B, H, W] = x.shape;
  let p = tf.maxPool(x, [Math.ceil(H / n), Math.ceil(W / n)], [Math.floor(H / n), Math.floor(W / n)], 'valid');
  if (p.shape[1] !== n || p.shape[2] !== n) p = tf.slice(p, [0, 0, 0, 0], [-1, n, n, -1]);
  return tf.reshape(p, [B, -1]);
}

/** tfjs's pyramid rows (per level: bins x channels) in sppnet's layout (per level: channels x bins). */
function tfRowsToSppnet(data, rows, C, levels) {
  const F = C * levels.reduce((s, n) => s + n * n, 0);
  const out = new Float32Array(rows * F);
  for (let r = 0; r < rows; r++) {
    let base = r * F;
    for (const n of levels) {
      const nn = n * n;
      for (let b = 0; b < nn; b++) for (let c = 0; c < C; c++) out[base + c * nn + b] = data[base + b * C + c];
      base += C * nn;
    }
  }
  return out;
}

const pair = (v, d) => (v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : v);

/**
 * Conv and fc FLOPs (2 per multiply-add) of one H x W image through a model spec, the last map's
 * size and channels. `defaultLevels` stands for an spp layer without levels.
 */
function specFlops(spec, H, W, defaultLevels = [6, 3, 2, 1]) {
  let c = spec.inChannels, h = H, w = W, convF = 0, fcF = 0, feat = 0;
  for (const l of spec.layers) {
    if (l.type === 'conv') {
      const [kh, kw] = pair(l.kernel, 1), [sh, sw] = pair(l.stride, 1), [ph, pw] = pair(l.padding, 0);
      h = Math.floor((h + 2 * ph - kh) / sh) + 1;
      w = Math.floor((w + 2 * pw - kw) / sw) + 1;
      convF += 2 * l.out * c * kh * kw * h * w;
      c = l.out;
    } else if (l.type === 'maxpool') {
      const [kh, kw] = pair(l.kernel, 1), [sh, sw] = pair(l.stride ?? l.kernel, 1), [ph, pw] = pair(l.padding, 0);
      if (l.ceilMode) throw new Error('specFlops: ceilMode not handled');
      h = Math.floor((h + 2 * ph - kh) / sh) + 1;
      w = Math.floor((w + 2 * pw - kw) / sw) + 1;
    } else if (l.type === 'spp') {
      feat = c * (l.levels ?? defaultLevels).reduce((s, n) => s + n * n, 0);
    } else if (l.type === 'fc') {
      fcF += 2 * feat * l.out;
      feat = l.out;
    }
  }
  return { convF, fcF, total: convF + fcF, map: [h, w], channels: c };
}

const fmtMs = (v) => (v == null ? '-' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const fmtX = (v) => (v == null ? '-' : `${v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)}x`);

module.exports = { buildInfo, loadWorkloads, rng, randomArray, stats, nowMs, windowBytes, textTable, mdTable, toNHWC, tfLevel, tfRowsToSppnet, specFlops, pair, fmtMs, fmtX };
