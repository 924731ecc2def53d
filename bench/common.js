'use strict';
// Helpers shared by the bench/ scripts: command-line options (parseArgs), timing (timeRuns,
// stats, percentile), tables and result files (textTable, mdTable, implRows, writeResults), the
// workloads and seeded random data, and the tfjs peers' layout conversions.
const fs = require('fs');
const os = require('os');
const path = require('path');

/** bench/workloads.json: the map sizes and windows of W1-W4 (see bench/make_workloads.py). */
function loadWorkloads() {
  return JSON.parse(fs.readFileSync(path.join(__dirname, 'workloads.json'), 'utf8'));
}

// mulberry32 (sppnet's seeded PRNG), so every run pools the same numbers.
const { prng: rng } = require('../dist/core/random');

/** n uniform numbers in [-1, 1) from `next`. */
function randomArray(n, next) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = 2 * next() - 1;
  return a;
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/** Median, min and max of timing samples (ms), each multiplied by `scale`. */
function stats(samples, scale = 1) {
  if (samples.length === 0) return null;
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { reps: s.length, medianMs: median * scale, minMs: s[0] * scale, maxMs: s[s.length - 1] * scale, samplesMs: samples, scale };
}


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

// ---------------------------------------------------------------------------------------------
// Command-line options

const camel = (name) => name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());

/** An error in the command line: the scripts print its message alone (no stack) and exit 1. */
class UsageError extends Error {}

/** Lines `from` (inclusive) to `to` (exclusive) of a script's header comment: its --help text. */
function headerText(file, from, to) {
  return fs.readFileSync(file, 'utf8').split('\n').slice(from, to).map((l) => l.replace(/^\/\/ ?/, '')).join('\n');
}

// What each option type accepts: [check, what it must be]. `o` is the option's row.
const TYPES = {
  string: [() => true, () => 'a value'],
  path: [() => true, () => 'a path'],
  int: [(v, o) => Number.isInteger(v) && v >= (o.min ?? 1) && v <= (o.max ?? Infinity), (o) => ((o.min ?? 1) === 1 ? 'a positive integer' : `an integer >= ${o.min}`)],
  number: [(v, o) => (o.min == null ? v > 0 : v >= o.min) && v <= (o.max ?? Infinity), (o) => (o.min == null ? 'a number > 0' : o.max != null ? `a number in [${o.min}, ${o.max}]` : `a number >= ${o.min}`)],
  ints: [(v) => v.length > 0 && v.every((x) => Number.isInteger(x) && x > 0), () => 'positive integers separated by commas'],
  list: [(v, o) => v.length > 0 && (!o.choices || v.every((x) => o.choices.includes(x))), (o) => (o.choices ? `a comma-separated list of ${o.choices.join(',')}` : 'a comma-separated list')],
  choice: [(v, o) => o.choices.includes(v), (o) => `one of ${o.choices.join(', ')}`],
};

function convert(o, raw) {
  switch (o.type) {
    case 'path':
      return path.resolve(raw);
    case 'int':
    case 'number':
      return raw.trim() === '' ? NaN : Number(raw);
    case 'ints':
      return raw.split(',').map((x) => (x.trim() === '' ? NaN : Number(x)));
    case 'list':
      return raw.split(',').map((x) => (o.upper ? x.trim().toUpperCase() : x.trim())).filter(Boolean);
    default:
      return raw;
  }
}

/** A path as the scripts print it: relative to the working directory when below it. */
function shownPath(p) {
  const rel = path.relative(process.cwd(), p);
  return rel === '' ? '.' : rel.startsWith('..') ? p : rel;
}

/** The --help text of an option table: the usage lines, then one line per option. */
function helpText(table, usage, positional) {
  const flag = (o) => `--${o.name}${o.type === 'flag' ? '' : ` ${o.arg ?? (o.type === 'path' ? 'PATH' : o.type === 'int' || o.type === 'number' ? 'N' : o.type === 'choice' ? o.choices.join('|') : o.type === 'list' || o.type === 'ints' ? 'A,B,...' : 'VALUE')}`}`;
  const w = Math.max(...table.map((o) => flag(o).length), '-h, --help'.length, positional ? positional.name.length : 0);
  const dflt = (o) => (o.type === 'flag' || o.default == null ? '' : ` (default: ${Array.isArray(o.default) ? o.default.join(',') : o.type === 'path' ? shownPath(o.default) : o.default})`);
  return [...(usage ? [usage.replace(/\n+$/, ''), ''] : []), 'Options:', ...(positional ? [`  ${positional.name.padEnd(w)}  ${positional.help}`] : []), ...table.map((o) => `  ${flag(o).padEnd(w)}  ${o.help}${dflt(o)}`), `  ${'-h, --help'.padEnd(w)}  this text`, ''].join('\n');
}

/**
 * Parses `argv` against a table of options, one row each:
 *   { name: 'only', type: 'list', default: null, help: 'these workloads only', arg: 'W1,W2,...' }
 * and returns { [key]: value }; key is the name in camelCase unless the row gives `key`.
 * Types: 'flag' (no value: sets `set`, default true; a name 'no-x' sets key x to false, default
 * true), 'string', 'path' (resolved), 'int' (>= min, default 1), 'number' (> 0, or >= min; <= max),
 * 'ints' (positive integers separated by commas), 'list' (comma-separated; `choices`, `upper`),
 * 'choice' (one of `choices`). A row's `map` turns the checked value into the stored one (e.g.
 * minutes to seconds). `--name value` and `--name=value` both work. `positional: { key, name,
 * help }` takes one bare argument. -h / --help prints `usage` and the options and exits 0. Errors
 * are UsageErrors, the same words in every script: "unknown argument X (try --help)", "--name
 * needs a value", "--name must be <what>, got X".
 */
function parseArgs(argv, table, { usage = '', positional = null } = {}) {
  const rows = table.map((o) => {
    const r = { ...o };
    if (r.type === 'flag' && r.name.startsWith('no-') && r.key === undefined) Object.assign(r, { key: camel(r.name.slice(3)), set: false, default: true });
    r.key = r.key ?? camel(r.name);
    if (r.type === 'flag' && r.set === undefined) r.set = true;
    return r;
  });
  const out = {};
  for (const r of rows) if (!(r.key in out) || r.default !== undefined) out[r.key] = r.default ?? (r.type === 'flag' ? false : null);
  if (positional) out[positional.key] = out[positional.key] ?? null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') {
      console.log(helpText(rows, usage, positional));
      process.exit(0);
    }
    const eq = a.indexOf('=');
    const name = a.startsWith('--') ? a.slice(2, eq >= 0 ? eq : undefined) : null;
    const r = name !== null && rows.find((x) => x.name === name);
    if (!r) {
      if (positional && !a.startsWith('-') && out[positional.key] === null) {
        out[positional.key] = a;
        continue;
      }
      throw new UsageError(`unknown argument ${a} (try --help)`);
    }
    if (r.type === 'flag') {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      out[r.key] = r.set;
      continue;
    }
    let raw;
    if (eq >= 0) raw = a.slice(eq + 1);
    else if (i + 1 < argv.length) raw = argv[++i];
    else throw new UsageError(`--${name} needs a value`);
    const v = convert(r, raw);
    const [ok, what] = TYPES[r.type];
    if (!ok(v, r)) throw new UsageError(`--${name} must be ${what(r)}, got ${raw}`);
    out[r.key] = r.map ? r.map(v) : v;
  }
  return out;
}

/** How the script was run, for its result files: `node bench/NAME.js ARGS`. */
function commandLine(file) {
  return `node bench/${path.basename(file)}${process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''}`;
}

/** For main().catch: a UsageError's message alone, anything else in full; exit status 1. */
function failed(e) {
  console.error(e instanceof UsageError ? e.message : e);
  return 1;
}

// ---------------------------------------------------------------------------------------------
// Timing

/**
 * Times `fn` (returning a result, or a promise of one): `warmup` untimed calls, whose time is
 * warmupMs, then `reps` timed calls, each after `before()` and followed by `after()` (both untimed)
 * where given. If the warm-up
 * took longer than `giveUpS` seconds there are no timed calls. Each result with a dispose() is
 * disposed (unless dispose: false); with keep: true none is, and the first (the warm-up's) and the
 * last timed result come back as first and last. Returns { samples (ms), warmupMs, stats:
 * stats(samples, scale), first?, last? }.
 */
async function timeRuns(fn, { reps, warmup = 1, giveUpS = Infinity, before = null, after = null, dispose = true, keep = false, scale = 1 }) {
  const done = (x) => {
    if (dispose && !keep && x && typeof x.dispose === 'function') x.dispose();
  };
  const res = { samples: [], warmupMs: 0 };
  let t0 = nowMs();
  for (let i = 0; i < warmup; i++) {
    const x = await fn();
    if (keep && i === 0) res.first = x;
    done(x);
  }
  res.warmupMs = nowMs() - t0;
  if (res.warmupMs <= giveUpS * 1e3) {
    for (let r = 0; r < reps; r++) {
      if (before) await before();
      t0 = nowMs();
      const x = await fn();
      res.samples.push(nowMs() - t0);
      if (after) after(); // outside the timed span (e.g. reading the addon's time counters)
      if (keep) res.last = x;
      done(x);
    }
  }
  res.stats = stats(res.samples, scale);
  return res;
}

/**
 * Interleaved rounds of two implementations that treat both alike. Each round, for each of the
 * two in turn (the order alternating between rounds): a pause of `pauseMs` with nothing running,
 * then two calls back to back. The first call of a pair is "after idle" (on a VM a core that
 * slept that long wakes slowly, and onnxruntime's threads spin-wait for tens of ms after a run,
 * taking cores from whatever runs next: the pause waits them out), the second "warm" (the
 * threads and caches its own first call left). Until 2026-11-27 the rounds were "sppnet, ORT,
 * pause": sppnet's calls always came after the pause, ORT's always right after sppnet's.
 * a, b: async () => void, one call each. Returns, for each, `warm` and `idle`: { ms, cpuMs }
 * per round (cpuMs: the process's user + system CPU time over the call, all threads).
 */
async function fairRounds(rounds, a, b, { pauseMs = 150, progress = () => {} } = {}) {
  const res = [a, b].map(() => ({ warm: [], idle: [] }));
  const call = async (f) => {
    const c = process.cpuUsage();
    const t = nowMs();
    await f();
    const ms = nowMs() - t;
    const u = process.cpuUsage(c);
    return { ms, cpuMs: (u.user + u.system) / 1e3 };
  };
  for (let r = 0; r < rounds; r++) {
    for (const k of r % 2 === 0 ? [0, 1] : [1, 0]) {
      await new Promise((done) => setTimeout(done, pauseMs));
      const f = k === 0 ? a : b;
      res[k].idle.push(await call(f));
      res[k].warm.push(await call(f));
    }
    progress(r);
  }
  return { a: res[0], b: res[1] };
}

/** The p-quantile (0..1) of `xs` by rank: the sorted value at floor(p * n) (the max for p = 1); null for none. */
function percentile(xs, p) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

/**
 * Where an op's time went, per timed call: the addon's time on the executor of `device` (the CPU
 * kernels; on CUDA the launches, the GPU's work and the stream syncs) and, with
 * SPPNET_CUDA_KERNEL_TIMES=1 on CUDA (`kernels`), the GPU time of the kernels it launched (CUDA
 * events). before()/after() go to timeRuns' hooks (outside the timed span); medians() gives
 * { exMs, gpuMs? } of the calls seen.
 */
function opProbe(device) {
  const { native } = require('../dist/core/native');
  const busy = () => native.memoryStats()[device === 'cuda' ? 'cudaOpNs' : 'cpuOpNs'] / 1e6;
  const kernels = device === 'cuda' && native.kernelTimes() !== null;
  const gpu = () => Object.values(native.kernelTimes()).reduce((s, [, ms]) => s + ms, 0);
  const ex = [], gp = [];
  let b0 = 0, g0 = 0;
  return {
    kernels,
    before() {
      b0 = busy();
      if (kernels) g0 = gpu();
    },
    after() {
      ex.push(busy() - b0);
      if (kernels) gp.push(gpu() - g0);
    },
    medians: () => ({ exMs: percentile(ex, 0.5), ...(kernels ? { gpuMs: percentile(gp, 0.5) } : {}) }),
  };
}

// ---------------------------------------------------------------------------------------------
// Tables and result files

/**
 * The rows of a CPU benchmark's table: per workload r, per implementation impl, the cells every
 * such table starts with (work, implementation, reps, median ms or `missing`, min ms), then
 * rest(r, impl, impl.stats).
 */
function implRows(results, rest, missing = (impl) => impl.note) {
  return results.flatMap((r) => r.impls.map((impl) => {
    const s = impl.stats;
    return [r.name, impl.label, s ? String(s.reps) : '-', s ? fmtMs(s.medianMs) : missing(impl), s ? fmtMs(s.minMs) : '-', ...rest(r, impl, s)];
  }));
}

/**
 * Writes DIR/NAME.json (JSON indented by 1) and, where `md` is given, DIR/NAME.md, making DIR.
 * Returns the "wrote ..." line the scripts print (DIR relative to the working directory when below it).
 */
function writeResults(dir, name, json, md) {
  fs.mkdirSync(dir, { recursive: true });
  if (md != null) fs.writeFileSync(path.join(dir, `${name}.md`), md);
  fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(json, null, 1));
  return `wrote ${path.join(shownPath(dir), `${name}.${md != null ? 'md' : 'json'}`)}${md != null ? ` and ${name}.json` : ''}`;
}

/** The machine fields every result file starts with: date, CPU model, cores, memory, node. */
function machineInfo() {
  return { date: new Date().toISOString(), cpu: os.cpus()[0].model.trim(), cores: os.cpus().length, memGiB: +(os.totalmem() / 2 ** 30).toFixed(1), node: process.version };
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
function specFlops(spec, H, W, defaultLevels = require('../dist').DEFAULT_LEVELS) {
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

/** ' + AMX bf16x3 convs (SPPNET_AMX=1)' when sppnet's CPU convs are not FP32 (said wherever a benchmark names the CPU), else ''. */
// What the CPU's arithmetic is beyond the FP32 default, for a benchmark's header: bf16x3 on AMX
// (SPPNET_AMX=1), math 'bf16' in force (SPPNET_MATH / sp.setMath) and where its products run.
const amxNote = (be) => {
  const m = require('../dist').getMath();
  const bf16 = ['conv', 'linear'].filter((k) => m[k] === 'bf16');
  return (be.cpu.settings.amx ? ' + AMX bf16x3 convs (SPPNET_AMX=1)' : '') +
    (bf16.length ? ` + math 'bf16' for ${bf16.join(' and ')}${amxProductsGranted(be) ? ' (BF16 products on AMX tiles)' : ''}` : '');
};
// Whether BF16 products take AMX tiles (asks Linux for the tile state: for runs about to use them).
const amxProductsGranted = (be) => be.cpu.settings.amxProducts && require('../dist/core/native').native.amxProductsGranted();

/**
 * The start of a CPU benchmark's main(): its options (usage from lines from..to of `file`'s
 * header), its repetitions (reps.quick or reps.full), sppnet's backend, the cores, sppnet's
 * threads, and the start time.
 */
function benchStart(file, from, to, options, reps) {
  const opt = parseArgs(process.argv.slice(2), options, { usage: headerText(file, from, to) });
  const be = require('../dist').backend();
  return { opt, reps: opt.quick ? reps.quick : reps.full, be, cores: os.cpus().length, oursThreads: be.cpu.threads, tStart: nowMs() };
}

module.exports = {
  parseArgs, headerText, benchStart, failed, commandLine,
  timeRuns, fairRounds, stats, percentile, nowMs, opProbe,
  textTable, mdTable, implRows, writeResults, fmtMs, fmtX,
  machineInfo, buildInfo, amxNote, amxProductsGranted, loadWorkloads, rng, randomArray, windowBytes, toNHWC, tfLevel, tfRowsToSppnet, specFlops, pair,
};
