'use strict';
// sppnet's side of the GPU SPP comparison: workloads W1-W4 on CUDA, on the map sizes and
// windows of bench/workloads.json (the same ones bench/torch_spp.py runs PyTorch on).
//
//   node bench/gpu_spp.js [TORCH_JSON] [--anchor ANCHOR_JSON [--anchor-same-run]] [--quick] [--only W1,W2,...] [--no-flush] [--device cpu]
//
// TORCH_JSON: torch_spp.json from bench/torch_spp.py, run on the same machine: adds PyTorch's
// time, the ratio PyTorch / sppnet and the bandwidth floor (from PyTorch's 1 GiB copy, read +
// write counted) to each row. ANCHOR_JSON: a stored torch_anchor.py result (its W1-W4 keys, e.g.
// torch_anchor_h100_2026-11-24.json), used when TORCH_JSON is not given or missing; with
// --anchor-same-run it is labelled as PyTorch on this machine (torch_anchor.py just ran here). Writes
// gpu_spp.json (and gpu_spp.md) to $OUT, or bench/out. Exits 1 when a workload's CUDA output
// differs from the CPU's (max pooling is exact). --device cpu runs the same script on sppnet's
// CPU path: a smoke test, not a benchmark.
//
// Method. Inputs go to the device once, outside the timed region: a ragged batch is packed with
// sp.ragged() beforehand, as PyTorch's list of maps is built before its timed closure. Each
// timed call is `await sp.spp(input, { levels, bins: 'adaptive', windows? })` bracketed by
// process.hrtime: host planning and validation, the hop to the worker thread, the kernel and a
// stream synchronisation, so wall-clock end to end. PyTorch's figure (triton do_bench) is CUDA-
// event time on the GPU alone, so the comparison is, if anything, unfavourable to sppnet. As
// do_bench flushes the L2 cache before each call, so does this script (unless --no-flush): it
// pools a 256 MiB scratch tensor, untimed, between calls. bins 'adaptive' is PyTorch's rule
// (adaptive_max_pool2d, and roi_pool's up to float rounding). Each workload's CUDA output is
// checked against sppnet's CPU output on the same data.
const fs = require('fs');
const path = require('path');
const sp = require('../dist');
const { parseArgs, headerText, failed, timeRuns, opProbe, writeResults, loadWorkloads, rng, randomArray, windowBytes, textTable, mdTable } = require('./common');

const OPTIONS = [
  { name: 'anchor', type: 'string', default: null, arg: 'ANCHOR_JSON', help: "a stored torch_anchor.py result: PyTorch's side where TORCH_JSON is not given or missing" },
  { name: 'anchor-same-run', type: 'flag', key: 'sameRun', help: 'the anchor was measured on this machine just before (label it so)' },
  { name: 'quick', type: 'flag', help: '30 timed calls after 5 warm-ups (default: 200 after 20)' },
  { name: 'only', type: 'list', upper: true, choices: ['W1', 'W2', 'W3', 'W4'], default: null, arg: 'W1,W2,...', help: 'these workloads only' },
  { name: 'no-flush', type: 'flag', help: 'do not flush the L2 cache before each timed call' },
  { name: 'device', type: 'choice', choices: ['cuda', 'cpu'], default: 'cuda', help: "cpu: sppnet's CPU path, a smoke test of this script" },
];

// Timed calls after warm-up calls, per workload.
const REPS = { full: { warmup: 20, reps: 200 }, quick: { warmup: 5, reps: 30 } };

/** The workload's host data (NCHW), and how sppnet is called on it. */
function buildHost(name, spec, seed) {
  const next = rng(seed);
  const C = spec.channels;
  if (name === 'W1' || name === 'W3') {
    const maps = spec.sizes.map(([H, W]) => randomArray(C * H * W, next));
    const bytes = maps.reduce((s, a) => s + a.byteLength, 0);
    return { kind: 'ragged', maps, shapes: spec.sizes.map(([H, W]) => [C, H, W]), inputBytes: bytes, readBytes: bytes };
  }
  const shape = name === 'W2' ? [spec.batch, C, ...spec.size] : [1, C, ...spec.size];
  const data = randomArray(shape.reduce((a, b) => a * b, 1), next);
  const w = { kind: name === 'W2' ? 'dense' : 'windows', data, shape, inputBytes: data.byteLength, readBytes: data.byteLength };
  if (name === 'W4') {
    w.windows = spec.windows;
    w.readBytes = windowBytes(spec.windows, C); // each window's area once; the map is L2-sized
  }
  return w;
}

/** Uploads the host data to `device`; a ragged batch is packed there and the loose maps freed. */
function upload(h, device) {
  if (h.kind !== 'ragged') return sp.tensor(h.data, h.shape, { device });
  const maps = h.maps.map((a, i) => sp.tensor(a, h.shapes[i], { device }));
  const rb = sp.ragged(maps);
  maps.forEach((m) => m.dispose());
  return rb;
}

async function maxAbsDiff(a, b) {
  const [x, y] = [await a.data(), await b.data()];
  if (x.length !== y.length) return NaN;
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  return d;
}

/**
 * A stored torch_anchor.py result (keys "W1 SPP ragged ...": { ms }, bw_TBps) in torch_spp.json's
 * shape. The anchor's W1-W4 are the workloads of bench/workloads.json (its own draws).
 */
function fromAnchor(file, sameRun) {
  const a = JSON.parse(fs.readFileSync(file, 'utf8'));
  const workloads = {};
  for (const [k, v] of Object.entries(a)) {
    const m = /^(W[1-4]) /.exec(k);
    if (m && v && typeof v.ms === 'number') workloads[m[1]] = { us: v.ms * 1e3, desc: k };
  }
  if (!Object.keys(workloads).length || typeof a.bw_TBps !== 'number') throw new Error(`--anchor ${file}: no W1-W4 timings or bw_TBps in it`);
  // --anchor-same-run: torch_anchor.py ran on this machine just before (scripts/gpu-run.sh's torch step).
  return { device: sameRun ? `torch_anchor.py run on this machine just before (${path.basename(file)})` : `stored anchor ${path.basename(file)}`, torch: null, stored: true, bw_TBps: a.bw_TBps, workloads };
}

const fmtUs = (v) => (v == null ? '-' : v >= 100 ? v.toFixed(0) : v.toFixed(1));

async function main() {
  const opt = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 1, 14), positional: { key: 'torch', name: 'TORCH_JSON', help: 'torch_spp.json from bench/torch_spp.py on this machine: PyTorch\'s side' } });
  const be = sp.backend();
  if (opt.device === 'cuda' && !be.cuda.available) {
    console.error(`gpu_spp.js: CUDA is unavailable: ${be.cuda.error || be.reason}`);
    console.error('(run it on the GPU machine, or with --device cpu for a smoke test)');
    process.exit(2);
  }
  let torch = null;
  if (opt.torch && fs.existsSync(opt.torch)) torch = JSON.parse(fs.readFileSync(opt.torch, 'utf8'));
  else if (opt.anchor) {
    if (opt.torch) console.log(`${opt.torch} not found: using the stored anchor ${opt.anchor}`);
    torch = fromAnchor(opt.anchor, opt.sameRun);
  } else if (opt.torch) throw new Error(`${opt.torch} not found`);
  const spec = loadWorkloads();
  const names = opt.only || ['W1', 'W2', 'W3', 'W4'];
  const { warmup, reps } = opt.quick ? REPS.quick : REPS.full;
  const device = opt.device;
  const bw = torch ? torch.bw_TBps * 1e12 : null; // bytes/s, read + write

  const where = device === 'cuda' ? `${be.cuda.name} (cc ${be.cuda.computeCapability}, CUDA ${be.cuda.runtimeVersion})` : `CPU ${be.cpu.isa} x${be.cpu.threads} (smoke test)`;
  console.log(`sppnet SPP on ${where}, ${new Date().toISOString()}`);
  if (torch) console.log(`PyTorch ${torch.stored ? `from the ${torch.device}` : `${torch.torch} on ${torch.device}`}; copy bandwidth ${torch.bw_TBps.toFixed(2)} TB/s (read+write)`);
  if (torch && device === 'cuda' && torch.device !== be.cuda.name && !torch.stored) console.log(`warning: PyTorch ran on ${torch.device}, sppnet on ${be.cuda.name}`);

  // The L2 flush: pooling a 256 MiB tensor reads all of it (levels [1]: one max per channel).
  const scratch = opt.flush && device === 'cuda' ? sp.tensor(new Float32Array(2 ** 26), [1024, 256, 256], { device }) : null;
  const flush = async () => {
    if (scratch) (await sp.spp(scratch, { levels: [1] })).dispose();
  };

  const results = [];
  for (const name of names) {
    const h = buildHost(name, spec[name], 2000 + Number(name.slice(1)));
    const input = upload(h, device);
    const opts = { levels: spec.levels, bins: 'adaptive' };
    if (h.windows) opts.windows = h.windows; // a plain array, validated by sp.spp on every call

    // What ran on the executor (table upload, launch, the GPU's work, the stream sync) against the
    // wall time, the rest being JS, argument checks and the hand-over; and the kernel's GPU time.
    const probe = opProbe(device);
    const before = async () => {
      await flush();
      probe.before();
    };
    const st = (await timeRuns(() => sp.spp(input, opts), { warmup, reps, before, after: probe.after })).stats;
    const { exMs, gpuMs } = probe.medians();

    // Check: the same call on sppnet's CPU path, on the same data.
    let check = null;
    if (device === 'cuda') {
      const cpuIn = upload(h, 'cpu');
      const [a, b] = [await sp.spp(input, opts), await sp.spp(cpuIn, opts)];
      check = await maxAbsDiff(a, b);
      [a, b, cpuIn].forEach((t) => t.dispose());
    }
    input.dispose();

    const t = torch && torch.workloads[name];
    const floorUs = bw ? (h.readBytes / bw) * 1e6 : null;
    const r = {
      name,
      desc: spec[name].desc,
      inputMB: h.inputBytes / 1e6,
      readMB: h.readBytes / 1e6,
      sppnet: { ...st, medianUs: st.medianMs * 1e3, minUs: st.minMs * 1e3, executorMedianUs: exMs * 1e3, kernelMedianUs: gpuMs === undefined ? null : gpuMs * 1e3 },
      torchUs: t ? t.us : null,
      ratioTorchOverOurs: t ? t.us / (st.medianMs * 1e3) : null,
      floorUs,
      checkMaxAbsDiffVsCpu: check,
    };
    results.push(r);
    console.log(`${name}: sppnet median ${fmtUs(r.sppnet.medianUs)} us${t ? `, PyTorch ${fmtUs(t.us)} us` : ''}${check !== null ? `, max |CUDA - CPU| = ${check}` : ''}`);
  }
  if (scratch) scratch.dispose();

  const withKernels = results.some((r) => r.sppnet.kernelMedianUs !== null);
  const head = ['work', 'workload', 'sppnet median us', 'min us', 'on executor us', ...(withKernels ? ['kernel us'] : []), 'PyTorch us', 'PyTorch/sppnet', 'floor us', 'floor/sppnet'];
  const rows = results.map((r) => [
    r.name,
    r.desc,
    fmtUs(r.sppnet.medianUs),
    fmtUs(r.sppnet.minUs),
    fmtUs(r.sppnet.executorMedianUs),
    ...(withKernels ? [fmtUs(r.sppnet.kernelMedianUs)] : []),
    fmtUs(r.torchUs),
    r.ratioTorchOverOurs != null ? `${r.ratioTorchOverOurs.toFixed(2)}x` : '-',
    fmtUs(r.floorUs),
    r.floorUs != null ? `${((100 * r.floorUs) / r.sppnet.medianUs).toFixed(0)}%` : '-',
  ]);
  console.log('\n' + textTable(head, rows));
  console.log(`\n${reps} timed calls after ${warmup} warm-up calls${scratch ? ', L2 flushed before each' : ''}; sppnet: wall-clock per await sp.spp() (bins 'adaptive'), and of it the median time on the addon's ${device === 'cuda' ? 'CUDA' : 'CPU'} executor (for CUDA: table upload, launch, the GPU's work and the stream sync; the rest is JS, checks and the hand-over)${withKernels ? ", and the kernel's GPU time (CUDA events, SPPNET_CUDA_KERNEL_TIMES=1)" : ''}; PyTorch: do_bench CUDA-event median.`);
  if (bw) console.log(`floor: bytes read (W1-W3: input; W4: every window's area once) / ${(bw / 1e12).toFixed(2)} TB/s, PyTorch's copy bandwidth on its machine.`);

  const outDir = process.env.OUT || path.join(__dirname, 'out');
  const meta = { date: new Date().toISOString(), device: where, backend: be, warmup, reps, flushL2: !!scratch, torchJson: torch && torch.stored ? opt.anchor : opt.torch, torch: torch ? { device: torch.device, version: torch.torch, bw_TBps: torch.bw_TBps } : null };
  console.log(writeResults(outDir, 'gpu_spp', { ...meta, results }, `# sppnet SPP on ${where}\n\n${meta.date}\n\n${mdTable(head, rows)}\n`));
  const off = results.filter((r) => r.checkMaxAbsDiffVsCpu !== null && r.checkMaxAbsDiffVsCpu !== 0);
  if (off.length) {
    console.error(`CUDA and CPU outputs differ: ${off.map((r) => `${r.name} max |diff| ${r.checkMaxAbsDiffVsCpu}`).join(', ')}`);
    process.exitCode = 1;
  }
}

main().catch((e) => process.exit(failed(e)));
