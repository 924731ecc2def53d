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

module.exports = { buildInfo, loadWorkloads, rng, randomArray, stats, nowMs, windowBytes, textTable, mdTable };
