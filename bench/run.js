'use strict';
// SPP on the CPU: sppnet against TensorFlow.js ('wasm' and 'cpu' backends) on the SPP-net
// workloads W1-W4 of /work/shared/anchors/torch_anchor.py, with this machine's memory-bandwidth
// floor measured in the same run.
//
//   node bench/run.js [--quick] [--only W1,W2,...] [--wasm-threads N] [--no-tfjs-cpu]
//                     [--peer-windows K] [--cpu-windows K] [--out DIR]
//
// Prints one table; writes DIR/spp-cpu.md and DIR/spp-cpu.json (DIR defaults to bench/out).
//
// How the peer is built: TensorFlow.js has no adaptive pooling, so SPP is written as its users
// write it (see /work/shared/anchors/tfjs_anchor.js): per level n, tf.maxPool with the SPP-net
// paper's windows (window ceil(a/n), stride floor(a/n), 'valid') on NHWC data, reshape, concat;
// one such call per map for a ragged batch. sppnet runs with bins: 'paper', which computes the
// same bins, so both sides do the same work and the outputs can be compared element by element
// (see checkAgainst()). sppnet with its default bins: 'adaptive' is reported as well.
//
// What is timed: from the call to the result tensor existing. sppnet's promise resolves when
// the kernel is done; tfjs's cpu and wasm backends run kernels synchronously. Neither side
// downloads its result. Inputs (sp.ragged packing, tf tensors) are built outside the timed region.
const os = require('os');
const path = require('path');
const sp = require('../dist');
const tf = require('@tensorflow/tfjs');
const { startTfjs } = require('./tfjs_wasm');
const { copyBandwidth } = require('./membw');
const { amxNote, parseArgs, headerText, failed, commandLine, machineInfo, timeRuns, writeResults, buildInfo, loadWorkloads, rng, randomArray, windowBytes, textTable, mdTable, implRows, toNHWC, tfRowsToSppnet, fmtMs, fmtX } = require('./common');
const tfLevel = (x, n) => require('./common').tfLevel(tf, x, n);

// ---------------------------------------------------------------------------------------------
// Options

const OPTIONS = [
  { name: 'quick', type: 'flag', help: 'fewer timed calls' },
  { name: 'only', type: 'list', upper: true, choices: ['W1', 'W2', 'W3', 'W4'], default: null, arg: 'W1,W2,...', help: 'these workloads only' },
  { name: 'wasm-threads', type: 'int', default: null, help: "tfjs-wasm's threads (default: as many as sppnet's)" },
  { name: 'no-tfjs-cpu', type: 'flag', help: "skip tfjs's plain-JS 'cpu' backend" },
  { name: 'peer-windows', type: 'int', default: 200, arg: 'K', help: "W4's windows timed on the tfjs peers (scaled to all)" },
  { name: 'cpu-windows', type: 'int', default: 50, arg: 'K', help: "W4's windows timed on tfjs-cpu (scaled to all)" },
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), arg: 'DIR', help: 'where spp-cpu.md and .json go' },
];

// Repetitions after one warm-up run. W3 (346 MB) gets fewer; tfjs-cpu on W3 stops after its
// warm-up if that took longer than PEER_SLOW_S.
const REPS = {
  full: { ours: 21, oursW3: 11, wasm: 11, cpu: 5, cpuW3: 3 },
  quick: { ours: 7, oursW3: 5, wasm: 5, cpu: 3, cpuW3: 3 },
};
const PEER_SLOW_S = 20;

// ---------------------------------------------------------------------------------------------
// Inputs

// [C, H, W] -> [H, W, C] (tfjs's layout), `count` maps back to back.
/** One workload: its maps in NCHW (for sppnet) and NHWC (for tfjs), and what it reads. */
function buildWorkload(name, spec, levels, seed) {
  const next = rng(seed);
  const C = spec.channels;
  const w = { name, desc: spec.desc, levels, channels: C };
  if (name === 'W1' || name === 'W3') {
    w.kind = 'ragged';
    w.sizes = spec.sizes;
    w.nchw = spec.sizes.map(([H, W]) => randomArray(C * H * W, next));
    w.nhwc = w.nchw.map((a, i) => toNHWC(a, 1, C, spec.sizes[i][0], spec.sizes[i][1]));
    w.inputBytes = w.nchw.reduce((s, a) => s + a.byteLength, 0);
    w.readBytes = w.inputBytes;
  } else if (name === 'W2') {
    w.kind = 'dense';
    const [H, W] = spec.size;
    w.shape = [spec.batch, C, H, W];
    w.nchw = randomArray(spec.batch * C * H * W, next);
    w.nhwc = toNHWC(w.nchw, spec.batch, C, H, W);
    w.inputBytes = w.readBytes = w.nchw.byteLength;
  } else {
    w.kind = 'windows';
    const [H, W] = spec.size;
    w.shape = [1, C, H, W];
    w.windows = spec.windows;
    w.nchw = randomArray(C * H * W, next);
    w.nhwc = toNHWC(w.nchw, 1, C, H, W);
    w.inputBytes = w.nchw.byteLength;
    // Each window has to be read at least once; the 4.9 MB map itself stays in cache.
    w.readBytes = windowBytes(spec.windows, C);
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// sppnet side

function oursInput(w) {
  if (w.kind === 'ragged') return sp.ragged(w.nchw.map((a, i) => sp.tensor(a, [w.channels, ...w.sizes[i]], { device: 'cpu' })));
  return sp.tensor(w.nchw, w.shape, { device: 'cpu' }); // zero-copy view of the array
}

function oursOptions(w, bins) {
  const o = { levels: w.levels, bins };
  if (w.kind === 'windows') o.windows = w.windows;
  return o;
}

// ---------------------------------------------------------------------------------------------
// tfjs side

// SPP level n of x [B, H, W, C] with the paper's windows, as [B, n*n*C]. For n < a < 2n the
// 'valid' pooling yields more than n windows along that axis (a = 11, n = 6 gives 10); the
// paper's n bins are the first n of them, so keep those (sppnet's bins: 'paper' computes exactly
// these). Without the slice a ragged batch would not even concatenate.
const tfSpp = (x, levels) => tf.concat(levels.map((n) => tfLevel(x, n)), 1);

// Windows on one map [1, H, W, C]: slice each window, pool it per level, concat. Where a window
// is smaller than n along an axis the paper's stride floor(a/n) is 0 and tf.maxPool cannot make n
// bins, so the crop is first upsampled (nearest neighbour) to n along that axis. Those bins
// differ slightly from adaptive ones; this path is for timing (the check uses windows >= 6).
function tfSppWindows(fm, windows, levels) {
  const rows = windows.map(([, x0, y0, x1, y1]) => {
    const h = y1 - y0 + 1, wd = x1 - x0 + 1;
    const crop = tf.slice(fm, [0, y0, x0, 0], [1, h, wd, -1]);
    return tf.concat(levels.map((n) => tfLevel(h >= n && wd >= n ? crop : tf.image.resizeNearestNeighbor(crop, [Math.max(h, n), Math.max(wd, n)]), n)), 1);
  });
  return tf.concat(rows, 0);
}

/** Peer inputs on the active tfjs backend, and the function that pools them. */
function peerSetup(w, peerWindows) {
  if (w.kind === 'ragged') {
    const xs = w.nhwc.map((a, i) => tf.tensor4d(a, [1, w.sizes[i][0], w.sizes[i][1], w.channels]));
    return { fn: () => tf.tidy(() => tf.concat(xs.map((x) => tfSpp(x, w.levels)), 0)), dispose: () => xs.forEach((x) => x.dispose()), scale: 1, rows: w.sizes.length };
  }
  if (w.kind === 'dense') {
    const [N, C, H, W] = w.shape;
    const x = tf.tensor4d(w.nhwc, [N, H, W, C]);
    return { fn: () => tf.tidy(() => tfSpp(x, w.levels)), dispose: () => x.dispose(), scale: 1, rows: N };
  }
  const [, C, H, W] = w.shape;
  const fm = tf.tensor4d(w.nhwc, [1, H, W, C]);
  const subset = w.windows.slice(0, Math.min(peerWindows, w.windows.length));
  return {
    fn: () => tf.tidy(() => tfSppWindows(fm, subset, w.levels)),
    dispose: () => fm.dispose(),
    // Timed on the first `subset.length` windows and scaled linearly to all of them.
    scale: w.windows.length / subset.length,
    subset,
    rows: subset.length,
  };
}

// ---------------------------------------------------------------------------------------------
// Sanity check: sppnet (bins 'paper') against a tfjs backend, element by element.

// tfjs rows are NHWC-flattened per level: feature (i*n + j)*C + c. sppnet's are channel-major
// within a level: c*n*n + i*n + j. Reorders tfjs rows into sppnet's layout.
async function checkAgainst(w, oursIn, peer) {
  const maxLevel = Math.max(...w.levels);
  let ours, keep;
  if (w.kind === 'windows') {
    // Only windows of at least maxLevel on both axes pool without tfjs's upsampling detour.
    keep = peer.subset.map((r, k) => (r[3] - r[1] + 1 >= maxLevel && r[4] - r[2] + 1 >= maxLevel ? k : -1)).filter((k) => k >= 0);
    ours = await sp.spp(oursIn, { levels: w.levels, bins: 'paper', windows: keep.map((k) => peer.subset[k]) });
  } else {
    ours = await sp.spp(oursIn, { levels: w.levels, bins: 'paper' });
  }
  const a = await ours.data();
  ours.dispose();
  const t = peer.fn();
  const raw = await t.data();
  t.dispose();
  const F = w.channels * w.levels.reduce((s, n) => s + n * n, 0);
  let b = tfRowsToSppnet(raw, peer.rows, w.channels, w.levels);
  if (keep) {
    const sel = new Float32Array(keep.length * F);
    keep.forEach((k, i) => sel.set(b.subarray(k * F, (k + 1) * F), i * F));
    b = sel;
  }
  if (a.length !== b.length) return { rows: a.length / F, maxAbsDiff: NaN, note: `length mismatch ${a.length} vs ${b.length}` };
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return { rows: a.length / F, maxAbsDiff: d };
}

// ---------------------------------------------------------------------------------------------
// Report


const HEAD = ['work', 'implementation', 'reps', 'median ms', 'min ms', 'vs ours', 'floor ms', 'floor/ours'];

function tableRows(results) {
  return implRows(results, (r, impl, s) => [
    impl.ratio != null ? fmtX(impl.ratio) : impl.ours ? '1.0x' : '-',
    impl.ours ? fmtMs(r.floorMs) : '',
    impl.ours && s ? `${((100 * r.floorMs) / s.medianMs).toFixed(0)}%` : '',
  ], (impl) => impl.note || 'skipped');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 1, 9) });
  const reps = opt.quick ? REPS.quick : REPS.full;
  const spec = loadWorkloads();
  const names = opt.only || ['W1', 'W2', 'W3', 'W4'];
  const be = sp.backend();
  const oursThreads = be.cpu.threads;

  const wasmInfo = await startTfjs(tf, opt.wasmThreads ?? oursThreads);
  await tf.setBackend('cpu');

  const machine = {
    ...machineInfo(),
    sppnet: { device: 'cpu', isa: be.cpu.isa, amx: be.cpu.settings.amx, threads: oursThreads, cudaNote: be.device === 'cpu' ? be.reason : undefined },
    tfjs: { version: tf.version.tfjs, wasm: wasmInfo, cpuBackend: 'tfjs-backend-cpu (plain JS, 1 thread)' },
    mode: opt.quick ? 'quick' : 'full',
    build: buildInfo(),
    loadavgStart: os.loadavg(),
  };
  console.log(`sppnet SPP CPU bench, ${machine.date}`);
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memGiB} GiB; node ${machine.node}`);
  console.log(`sppnet: cpu, ${be.cpu.isa}${amxNote(be)}, ${oursThreads} threads (${be.reason})`);
  console.log(`sppnet build: ${machine.build.addonMtime} (addon mtime), commit ${machine.build.commit}${machine.build.dirty ? ' + local changes' : ''}`);
  console.log(`tfjs ${machine.tfjs.version}: wasm ${wasmInfo.build}, ${wasmInfo.threads} thread(s); cpu backend plain JS, 1 thread; prod mode`);

  // Bandwidth: a plain copy, read + write bytes counted, 1 thread and all cores. The floor uses
  // the faster of the two: no SPP can stream its input faster than the machine copies memory.
  process.stdout.write('measuring copy bandwidth (256 MiB Float32Array.set) ... ');
  const bw1 = await copyBandwidth({ threads: 1 });
  const bwN = await copyBandwidth({ threads: machine.cores });
  const bw = Math.max(bw1.bestBytesPerS, bwN.bestBytesPerS);
  console.log(`1 thread ${(bw1.bestBytesPerS / 1e9).toFixed(1)} GB/s, ${machine.cores} threads ${(bwN.bestBytesPerS / 1e9).toFixed(1)} GB/s (best of ${bwN.reps}; read+write)`);
  console.log(`floor = bytes the workload must read / ${(bw / 1e9).toFixed(1)} GB/s`);
  // On a shared 2-core machine anything else running skews both sides (tfjs-wasm's spinning
  // pthreads most): say so rather than print figures that look clean.
  if (machine.loadavgStart[0] > 0.7) console.log(`warning: 1-minute load average ${machine.loadavgStart[0].toFixed(2)} before the run: other processes are busy; figures will be noisy`);
  console.log('');

  const results = [];
  const checks = [];
  const notes = [];
  for (const name of names) {
    process.stdout.write(`${name}: building inputs ... `);
    const w = buildWorkload(name, spec[name], spec.levels, 1000 + Number(name.slice(1)));
    const oursIn = oursInput(w);
    const floorMs = (w.readBytes / bw) * 1e3;
    const r = { name, desc: w.desc, inputMB: w.inputBytes / 1e6, readMB: w.readBytes / 1e6, floorMs, impls: [] };
    const oursReps = name === 'W3' ? reps.oursW3 : reps.ours;

    // sppnet: 'paper' bins where every map / window allows them, and the default 'adaptive'.
    const paperOk = w.kind !== 'windows' || w.windows.every(([, x0, y0, x1, y1]) => Math.min(x1 - x0, y1 - y0) + 1 >= Math.max(...w.levels));
    let base = null;
    for (const bins of paperOk ? ['paper', 'adaptive'] : ['adaptive']) {
      process.stdout.write(`ours ${bins} ... `);
      const t = await timeRuns(() => sp.spp(oursIn, oursOptions(w, bins)), { reps: oursReps });
      const impl = { label: `sppnet ${bins}`, ours: true, bins, stats: t.stats };
      if (!base) base = impl;
      else impl.ratio = impl.stats.medianMs / base.stats.medianMs;
      r.impls.push(impl);
    }
    // The same call into an output allocated once ({ out }), as a server that keeps its buffers
    // runs it: what the kernel and the hand-over cost without a fresh output's page faults.
    {
      process.stdout.write('ours into out ... ');
      const first = await sp.spp(oursIn, oursOptions(w, 'adaptive'));
      const out = sp.zeros(first.shape, { device: 'cpu' });
      first.dispose();
      const t = await timeRuns(() => sp.spp(oursIn, { ...oursOptions(w, 'adaptive'), out }), { reps: oursReps, dispose: false });
      out.dispose();
      r.impls.push({ label: 'sppnet adaptive, into out', ours: true, bins: 'adaptive', into: 'out', stats: t.stats, ratio: t.stats.medianMs / base.stats.medianMs });
    }
    if (!paperOk) notes.push(`${name}: some windows are smaller than ${Math.max(...w.levels)} px, where bins 'paper' has stride 0; sppnet runs 'adaptive' (torchvision roi_pool's rule) and the peers' ratios are against it.`);

    // tfjs peers, on the same inputs; inputs uploaded to the backend outside the timed region.
    const peers = [['wasm', reps.wasm]];
    if (opt.tfjsCpu) peers.push(['cpu', name === 'W3' ? reps.cpuW3 : reps.cpu]);
    for (const [backendName, n] of peers) {
      process.stdout.write(`tfjs-${backendName} ... `);
      await tf.setBackend(backendName);
      // W4 peers run per window, so they are timed on the first K windows: tfjs-cpu, at
      // ~45 ms a window here, on fewer.
      const peer = peerSetup(w, backendName === 'cpu' ? opt.cpuWindows : opt.peerWindows);
      const t = await timeRuns(peer.fn, { reps: n, giveUpS: PEER_SLOW_S, scale: peer.scale });
      const label = `tfjs-${backendName}${backendName === 'wasm' ? ` ${wasmInfo.threads}T` : ''}${peer.scale !== 1 ? ` (${peer.rows} win x${peer.scale})` : ''}`;
      const impl = { label, ours: false, backend: backendName, stats: t.stats, warmupMs: t.warmupMs * peer.scale };
      if (impl.stats) impl.ratio = impl.stats.medianMs / base.stats.medianMs;
      else {
        impl.note = `skipped: 1 run ${(t.warmupMs / 1e3).toFixed(0)} s`;
        notes.push(`${name}: tfjs-${backendName} took ${(t.warmupMs / 1e3).toFixed(1)} s for its warm-up run (> ${PEER_SLOW_S} s), so no timed runs.`);
      }
      if (peer.scale !== 1) notes.push(`${name}: tfjs-${backendName} timed on the first ${peer.rows} of ${w.windows.length} windows, scaled x${peer.scale}.`);
      // The sanity check: one per backend on the first workload, and on W4's exact windows.
      if (results.length === 0 || w.kind === 'windows') {
        const c = await checkAgainst(w, oursIn, peer);
        checks.push({ workload: name, against: `tfjs-${backendName}`, ...c });
      }
      peer.dispose();
      r.impls.push(impl);
    }
    await tf.setBackend('cpu');
    oursIn.dispose();
    results.push(r);
    console.log('done');
  }

  machine.loadavgEnd = os.loadavg();
  const rows = tableRows(results);
  console.log('\n' + textTable(HEAD, rows));
  console.log('\nvs ours: median / sppnet\'s first row for the workload (bins \'paper\', or \'adaptive\' for W4), same run.');
  console.log(`floor: the bytes the workload must read (W1-W3: its input; W4: every window's area once) / ${(bw / 1e9).toFixed(1)} GB/s copy bandwidth; floor/ours = share of that speed sppnet reaches.`);
  for (const n of notes) console.log(`note: ${n}`);
  console.log(`load average (1, 5, 15 min): ${machine.loadavgStart.map((v) => v.toFixed(2)).join(' ')} before, ${machine.loadavgEnd.map((v) => v.toFixed(2)).join(' ')} after`);
  console.log('\nsanity check, sppnet bins \'paper\' vs tfjs, same inputs (max |diff| over all outputs):');
  for (const c of checks)
    console.log(`  ${c.workload} vs ${c.against}: ${c.rows} rows, max |diff| = ${c.maxAbsDiff}${c.maxAbsDiff === 0 ? ' (identical)' : ''}${c.note ? ` ${c.note}` : ''}`);

  const md = [
    `# SPP on the CPU: sppnet vs TensorFlow.js`,
    '',
    `${machine.date} — ${machine.cpu}, ${machine.cores} cores, node ${machine.node}; mode ${machine.mode}.`,
    `sppnet: ${be.cpu.isa}${amxNote(be)}, ${oursThreads} threads. tfjs ${machine.tfjs.version}: wasm (${wasmInfo.build}, ${wasmInfo.threads} threads), cpu (plain JS).`,
    `sppnet build ${machine.build.addonMtime}, commit ${machine.build.commit}${machine.build.dirty ? ' + local changes' : ''}; load average ${machine.loadavgStart[0].toFixed(2)} before, ${machine.loadavgEnd[0].toFixed(2)} after.`,
    `Copy bandwidth (read+write): 1 thread ${(bw1.bestBytesPerS / 1e9).toFixed(1)} GB/s, ${machine.cores} threads ${(bwN.bestBytesPerS / 1e9).toFixed(1)} GB/s; floor uses ${(bw / 1e9).toFixed(1)} GB/s.`,
    '',
    mdTable(HEAD, rows),
    '',
    ...results.map((r) => `- ${r.name}: ${r.desc}; input ${r.inputMB.toFixed(1)} MB${r.readMB !== r.inputMB ? `, windows' area ${r.readMB.toFixed(0)} MB` : ''}`),
    ...notes.map((n) => `- ${n}`),
    ...checks.map((c) => `- check ${c.workload} vs ${c.against}: ${c.rows} rows, max |diff| ${c.maxAbsDiff}`),
    '',
  ].join('\n');
  const command = commandLine(__filename);
  const json = { command, machine, bandwidth: { oneThread: bw1, allThreads: bwN, usedBytesPerS: bw }, results, checks, notes };
  console.log(`\n${writeResults(opt.out, 'spp-cpu', json, md)}`);
  // tfjs's wasm pthread workers keep the event loop alive.
  process.exit(0);
}

main().catch((e) => process.exit(failed(e)));
