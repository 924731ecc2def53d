'use strict';
// torchvision's vgg16 and googlenet on the CPU: sppnet against onnxruntime-node on the same
// weights (issue 14). 1000 classes, 224x224 images, batch 1 and 4 (a dense [N,3,224,224] tensor).
//
//   [SPPNET_AMX=1] node bench/torchvision.js [--quick] [--rounds N] [--archs vgg16,googlenet] [--batches 1,4]
//                             [--dir DIR] [--ort-threads N] [--no-ort] [--seed S] [--out DIR]
//
// The weights: DIR/<arch>.pth and DIR/<arch>.onnx from
//   /usr/bin/python3 tools/export_torchvision_onnx.py DIR        (DIR defaults to /tmp/tvbench)
// (torchvision 0.14's own classes, seeded weights, torch.save and torch.onnx.export: the same
// numbers in both files). sppnet loads the .pth with sp.loadModel({ arch, classes: 1000, weights }),
// onnxruntime-node the .onnx (cpu provider, --ort-threads intra-op threads, default the cores).
// Without the .pth sppnet runs the arch with seeded weights (same work, no logits check); without
// onnxruntime-node (`npm run bench:ort` installs it) or the .onnx the ORT rows say why they are missing.
//
// Before timing, the logits of both on a seeded batch of 4 are compared (max |diff| over max
// |value|), and, where DIR/<arch>.ref.{f32,json} exist, both against torchvision's own logits.
//
// Timing: per arch and batch, one untimed call of each, then --rounds interleaved rounds
// (bench/common.js fairRounds: for each in turn, the order alternating, a 150 ms pause, then two
// calls back to back), so that both see the same machine and the same conditions; the table's
// medians are of the second, warm calls; the first calls after the pause are in the notes.
// (Until 2026-11-27 a round was "sppnet, ORT, pause": sppnet's calls always came after the idle
// pause, ORT's right after sppnet's.) ort/sppnet = ORT's median / sppnet's (> 1: sppnet is faster). FLOPs: conv and
// fc multiply-adds x 2 counted from the spec's shapes (torchvision quotes multiply-adds: its
// "15.47 GFLOPS" for vgg16 are 31 GFLOP here); floor = FLOPs / the peak of sp.measureCpuPeak (FMA
// chains on every thread at once, best of 3); bw floor = the weights' bytes / the copy bandwidth
// (bench/membw.js, all threads): each call reads every weight once. Also the process's CPU time per
// call (process.cpuUsage: all threads, spin-waits included), less hurt than the wall time by
// waiting for a core on a busy machine. SPPNET_CPU_NICE (default 10) sets sppnet's compute
// threads' nice; onnxruntime-node's run at 0: on a busy machine set SPPNET_CPU_NICE=0.
//
// Prints one table; writes OUT/torchvision-cpu.md and .json (--out OUT, default bench/out).
const fs = require('fs');
const os = require('os');
const path = require('path');
const sp = require('../dist');
const { copyBandwidth } = require('./membw');
const { amxNote, benchStart, fairRounds, failed, commandLine, machineInfo, buildInfo, rng, randomArray, nowMs, textTable, mdTable, implRows, writeResults, fmtMs, fmtX, pair } = require('./common');

const DIR = process.env.SPPNET_TV_DIR || '/tmp/tvbench';
const ARCHS = ['vgg16', 'googlenet'];
const CLASSES = 1000;
const SIDE = 224;

const OPTIONS = [
  { name: 'quick', type: 'flag', help: 'fewer rounds' },
  { name: 'rounds', type: 'int', default: null, arg: 'N', help: 'interleaved timed rounds per arch and batch (default 15; --quick 5)' },
  { name: 'archs', type: 'list', choices: ARCHS, default: ARCHS, arg: 'vgg16,googlenet', help: 'these archs' },
  { name: 'batches', type: 'ints', default: [1, 4], help: 'batch sizes' },
  { name: 'dir', type: 'path', default: DIR, help: 'where <arch>.pth and <arch>.onnx are (or $SPPNET_TV_DIR)' },
  { name: 'ort-threads', type: 'int', default: os.cpus().length, help: "onnxruntime-node's intra-op threads: the cores" },
  { name: 'ort-spin', type: 'choice', choices: ['on', 'off'], default: 'on', help: "onnxruntime-node's intra-op threads spin-wait between runs (its default, on); off: session.intra_op.allow_spinning 0" },
  { name: 'no-ort', type: 'flag', help: 'skip onnxruntime-node' },
  { name: 'seed', type: 'int', default: 14, arg: 'S', help: 'seed of the images (and of the weights without a .pth)' },
  { name: 'out', type: 'path', default: path.join(__dirname, 'out'), arg: 'DIR', help: 'where torchvision-cpu.md and .json go' },
];
const ROUNDS = { full: 15, quick: 5 };
// sppnet's compute threads run at nice SPPNET_CPU_NICE (default 10: a server's event loop keeps a
// core); onnxruntime-node's at the process's own (0). On an idle machine the same; on a busy one
// nice 10 gets a fraction of a core's share against other work, and the comparison measures the
// scheduler: run with SPPNET_CPU_NICE=0 there.
const CPU_NICE = Number(process.env.SPPNET_CPU_NICE ?? 10);

// ---------------------------------------------------------------------------------------------
// FLOPs and weights of a spec (convs, concat branches, ceil-mode pools, spp, fc)

/** PyTorch's pooled side: floor or ceil, and a ceil window must start inside the input or its padding. */
function poolSide(a, k, s, p, ceil) {
  let o = (ceil ? Math.ceil((a + 2 * p - k) / s) : Math.floor((a + 2 * p - k) / s)) + 1;
  if (ceil && (o - 1) * s >= a + p) o -= 1;
  return o;
}

/** Conv and fc FLOPs (2 per multiply-add) of one H x W image, and the parameters' count. */
function netFlops(spec, H, W) {
  let fcF = 0, params = 0, feat = 0;
  const walk = (layers, c, h, w) => {
    let convF = 0;
    for (const l of layers) {
      if (l.type === 'conv') {
        const [kh, kw] = pair(l.kernel, 1), [sh, sw] = pair(l.stride, 1), [ph, pw] = pair(l.padding, 0);
        h = Math.floor((h + 2 * ph - kh) / sh) + 1;
        w = Math.floor((w + 2 * pw - kw) / sw) + 1;
        convF += 2 * l.out * c * kh * kw * h * w;
        params += l.out * c * kh * kw + (l.bias === false ? 0 : l.out);
        c = l.out;
      } else if (l.type === 'maxpool') {
        const [kh, kw] = pair(l.kernel, 1), [sh, sw] = pair(l.stride ?? l.kernel, 1), [ph, pw] = pair(l.padding, 0);
        h = poolSide(h, kh, sh, ph, l.ceilMode);
        w = poolSide(w, kw, sw, pw, l.ceilMode);
      } else if (l.type === 'batchnorm') {
        params += 2 * c; // folded into the conv before it at run time
      } else if (l.type === 'concat') {
        const outs = l.branches.map((b) => walk(b, c, h, w));
        convF += outs.reduce((s, o) => s + o.convF, 0);
        c = outs.reduce((s, o) => s + o.c, 0);
        [h, w] = [outs[0].h, outs[0].w];
      } else if (l.type === 'spp') {
        feat = c * (l.levels ?? sp.DEFAULT_LEVELS).reduce((s, n) => s + n * n, 0);
      } else if (l.type === 'fc') {
        fcF += 2 * feat * l.out;
        params += feat * l.out + l.out;
        feat = l.out;
      }
    }
    return { convF, c, h, w };
  };
  const r = walk(spec.layers, spec.inChannels, H, W);
  return { convF: r.convF, fcF, total: r.convF + fcF, map: [r.h, r.w], channels: r.c, params };
}

// ---------------------------------------------------------------------------------------------

/** max |a - b| / max |b|, the max |b|, and whether the top-1 classes agree per row. */
function compare(a, b, rows) {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); m = Math.max(m, Math.abs(b[i])); }
  const k = a.length / rows;
  const argmax = (x, r) => { let j = 0; for (let i = 1; i < k; i++) if (x[r * k + i] > x[r * k + j]) j = i; return j; };
  let top1 = 0;
  for (let r = 0; r < rows; r++) top1 += argmax(a, r) === argmax(b, r) ? 1 : 0;
  return { maxAbsDiff: d, maxAbs: m, relDiff: d / m, top1Agree: `${top1}/${rows}` };
}

async function oursLogits(model, data, shape) {
  const x = sp.tensor(data, shape);
  const y = await model.run(x);
  const out = await y.data();
  y.dispose();
  x.dispose();
  return out;
}

async function ortLogits(ort, session, data, shape) {
  const r = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', data, shape) });
  return r[session.outputNames[0]].data;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const statsOf = (xs) => (xs.length ? { reps: xs.length, medianMs: median(xs), minMs: Math.min(...xs), maxMs: Math.max(...xs), samplesMs: xs } : null);

const HEAD = ['work', 'implementation', 'reps', 'median ms', 'min ms', 'img/s', 'ort/sppnet', 'min: ort/sppnet', 'CPU ms', 'CPU: ort/sppnet', 'GFLOP/s', 'floor ms', '% peak', 'bw floor ms'];

async function main() {
  const { opt, be, cores, oursThreads, tStart } = benchStart(__filename, 1, 31, OPTIONS, { full: null, quick: null });
  const amx = amxNote(be);
  const rounds = opt.rounds ?? (opt.quick ? ROUNDS.quick : ROUNDS.full);
  let ort = null, ortVersion = null, ortMissing = opt.ort ? null : 'off (--no-ort)';
  if (opt.ort) {
    try {
      ort = require('onnxruntime-node');
      ortVersion = require('onnxruntime-node/package.json').version;
    } catch (e) {
      ortMissing = e.code === 'MODULE_NOT_FOUND' ? 'off: onnxruntime-node is not installed (npm run bench:ort installs it without saving)' : `off: ${e.message}`;
      ort = null;
    }
  }
  const machine = {
    ...machineInfo(),
    sppnet: { device: 'cpu', isa: be.cpu.isa, threads: oursThreads, nice: CPU_NICE, amx: be.cpu.settings.amx },
    ort: ort ? { version: ortVersion, intraOpThreads: opt.ortThreads, interOpThreads: 1, spinning: opt.ortSpin } : { off: ortMissing },
    mode: opt.quick ? 'quick' : 'full',
    rounds,
    build: buildInfo(),
    loadavgStart: os.loadavg(),
  };
  console.log(`torchvision vgg16 / googlenet CPU bench, ${machine.date}`);
  console.log(`machine: ${machine.cpu}, ${cores} cores, ${machine.memGiB} GiB; node ${machine.node}`);
  console.log(`sppnet: cpu, ${be.cpu.isa}${amx}, ${oursThreads} threads at nice ${CPU_NICE}${process.env.SPPNET_CPU_NICE === undefined ? ' (default; SPPNET_CPU_NICE)' : ' (SPPNET_CPU_NICE)'}; build ${machine.build.addonMtime} (addon mtime), commit ${machine.build.commit}${machine.build.dirty ? ' + local changes' : ''}`);
  console.log(`onnxruntime-node ${ort ? `${ortVersion}, cpu provider, ${opt.ortThreads} intra-op threads, spinning ${opt.ortSpin}` : ortMissing}`);

  process.stdout.write(`measuring the FP32 peak (FMA chains, ${be.cpu.isa}, ${oursThreads} threads at once, best of 3) ... `);
  let probe = null;
  for (let r = 0; r < 3; r++) {
    const p = await sp.measureCpuPeak({ threads: oursThreads, seconds: 0.3 });
    if (!probe || p.gflops > probe.gflops) probe = p;
  }
  const peakGflops = probe.gflops;
  console.log(`${peakGflops.toFixed(0)} GFLOP/s (${probe.perThread.map((g) => g.toFixed(0)).join(' + ')})`);
  process.stdout.write(`measuring the copy bandwidth (${cores} threads, 256 MiB) ... `);
  const bw = (await copyBandwidth({ threads: cores })).bestBytesPerS;
  console.log(`${(bw / 1e9).toFixed(1)} GB/s (read + write)`);
  if (machine.loadavgStart[0] > 0.7) {
    console.log(`warning: 1-minute load average ${machine.loadavgStart[0].toFixed(2)} before the run: other processes are busy; figures will be noisy (the rounds are interleaved, so the ratios less so)`);
    if (CPU_NICE > 0) console.log(`warning: sppnet computes at nice ${CPU_NICE}, onnxruntime-node at nice 0: with other work running the ratios favour onnxruntime-node (SPPNET_CPU_NICE=0 for a like-for-like run)`);
  }
  console.log('');

  const results = [], checks = [], flops = {}, notes = [];
  for (const arch of opt.archs) {
    const spec = sp.torchvisionSpec(arch, { classes: CLASSES });
    const f = netFlops(spec, SIDE, SIDE);
    flops[arch] = { ...f, gflop: f.total / 1e9, weightMiB: (f.params * 4) / 2 ** 20 };
    const pth = path.join(opt.dir, `${arch}.pth`), onnx = path.join(opt.dir, `${arch}.onnx`);
    console.log(`${arch}: ${(f.convF / 1e9).toFixed(2)} conv + ${(f.fcF / 1e9).toFixed(3)} fc GFLOP per ${SIDE}x${SIDE} image (last map ${f.channels}x${f.map.join('x')}); ${(f.params / 1e6).toFixed(1)} M parameters (${flops[arch].weightMiB.toFixed(0)} MiB)`);

    let t0 = nowMs();
    const havePth = fs.existsSync(pth);
    const model = havePth ? await sp.loadModel({ arch, classes: CLASSES, weights: pth }) : await sp.buildModel({ arch, classes: CLASSES, seed: opt.seed, device: 'cpu' });
    const loadMs = nowMs() - t0;
    if (!havePth) notes.push(`${arch}: no ${pth} (make it with /usr/bin/python3 tools/export_torchvision_onnx.py ${opt.dir}): sppnet ran seeded weights, no logits check.`);
    let session = null, ortNote = ortMissing, ortLoadMs = null;
    if (ort && !fs.existsSync(onnx)) ortNote = `off: no ${onnx} (/usr/bin/python3 tools/export_torchvision_onnx.py ${opt.dir})`;
    else if (ort) {
      t0 = nowMs();
      // ORT's threads spin-wait after a run (allow_spinning, on by default) for tens of ms: in
      // interleaved rounds they took cores from the sppnet call that followed (googlenet 1x224:
      // 17 ms alone, 25-27 ms right after an ORT run, 2026-11-26): fairRounds pauses before each
      // pair of calls; --ort-spin off stops the spinning (ORT then runs slower).
      session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: opt.ortThreads, interOpNumThreads: 1, executionProviders: ['cpu'],
        ...(opt.ortSpin === 'off' ? { extra: { session: { intra_op: { allow_spinning: '0' } } } } : {}) });
      ortLoadMs = nowMs() - t0;
    }
    console.log(`  loaded: sppnet ${havePth ? pth : 'seeded weights'} in ${loadMs.toFixed(0)} ms${session ? `; onnxruntime-node ${onnx} in ${ortLoadMs.toFixed(0)} ms` : ''}`);

    // Same logits? A seeded batch of 4 through both; torchvision's own where DIR/<arch>.ref.* exist.
    const next = rng(opt.seed);
    const check = { arch, pth: havePth ? pth : null, onnx: session ? onnx : null };
    if (havePth) {
      const xs = randomArray(4 * 3 * SIDE * SIDE, next);
      const a = await oursLogits(model, xs, [4, 3, SIDE, SIDE]);
      if (session) check.sppnetVsOrt = compare(a, await ortLogits(ort, session, xs, [4, 3, SIDE, SIDE]), 4);
      const refF = path.join(opt.dir, `${arch}.ref.f32`), refJ = path.join(opt.dir, `${arch}.ref.json`);
      if (fs.existsSync(refF) && fs.existsSync(refJ)) {
        const buf = fs.readFileSync(refF);
        const xr = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
        const ref = JSON.parse(fs.readFileSync(refJ, 'utf8'));
        const want = Float32Array.from(ref.logits.flat());
        const rows = ref.logits.length;
        check.torch = `torch ${ref.torch}, torchvision ${ref.torchvision}`;
        check.sppnetVsTorch = compare(await oursLogits(model, xr, [rows, 3, SIDE, SIDE]), want, rows);
        if (session) check.ortVsTorch = compare(await ortLogits(ort, session, xr, [rows, 3, SIDE, SIDE]), want, rows);
      }
      const show = (k, what) => check[k] && console.log(`  logits ${what}: max |diff| ${check[k].maxAbsDiff.toExponential(2)} (max |value| ${check[k].maxAbs.toFixed(2)}, relative ${check[k].relDiff.toExponential(2)}), top-1 agree ${check[k].top1Agree}`);
      show('sppnetVsOrt', 'sppnet vs onnxruntime-node, seeded 4x224');
      show('sppnetVsTorch', 'sppnet vs torchvision, its seeded 2x224');
      show('ortVsTorch', 'onnxruntime-node vs torchvision, same');
    }
    checks.push(check);

    for (const N of opt.batches) {
      const shape = [N, 3, SIDE, SIDE];
      const data = randomArray(N * 3 * SIDE * SIDE, rng(opt.seed + N));
      const x = sp.tensor(data, shape);
      const feeds = session ? { [session.inputNames[0]]: new ort.Tensor('float32', data, shape) } : null;
      // Wall time, and the process's CPU time (user + system, all threads) over the call: on a
      // busy machine the wall time includes waiting for a core, the CPU time mostly not (it
      // counts spin-waiting, which both libraries' thread pools do between parallel steps).
      const ours = async () => (await model.run(x)).dispose();
      const peer = () => session.run(feeds);
      process.stdout.write(`  ${arch} ${N}x${SIDE}: warm-up ... `);
      const warmT = async (f) => { const t = nowMs(); await f(); return nowMs() - t; };
      const warm = { ours: await warmT(ours), ort: session ? await warmT(peer) : null };
      process.stdout.write(`${rounds} rounds `);
      let so, co, sr = [], cr = [], idle;
      if (session) {
        const fr = await fairRounds(rounds, ours, peer, { progress: () => process.stdout.write('.') });
        so = fr.a.warm.map((c) => c.ms), co = fr.a.warm.map((c) => c.cpuMs), sr = fr.b.warm.map((c) => c.ms), cr = fr.b.warm.map((c) => c.cpuMs);
        idle = { ours: median(fr.a.idle.map((c) => c.ms)), ort: median(fr.b.idle.map((c) => c.ms)) };
      } else {
        so = [], co = [];
        for (let r = 0; r < rounds; r++) {
          const c = process.cpuUsage();
          so.push(await warmT(ours));
          const u = process.cpuUsage(c);
          co.push((u.user + u.system) / 1e3);
          process.stdout.write('.');
        }
      }
      x.dispose();
      console.log(' done');
      const F = f.total * N;
      const derive = (impl) => {
        if (!impl.stats) return impl;
        impl.imgPerS = (N / impl.stats.medianMs) * 1e3;
        impl.gflops = F / impl.stats.medianMs / 1e6;
        impl.pctPeak = (100 * (F / (peakGflops * 1e9)) * 1e3) / impl.stats.medianMs;
        return impl;
      };
      const base = derive({ label: `sppnet ${oursThreads}T`, backend: 'sppnet', stats: statsOf(so), cpu: statsOf(co), warmupMs: warm.ours });
      const row = { name: `${arch} ${N}x${SIDE}`, arch, images: N, gflopPerRun: F / 1e9, floorMs: (F / (peakGflops * 1e9)) * 1e3, bwFloorMs: ((f.params * 4) / bw) * 1e3, impls: [base] };
      if (session) {
        const o = derive({ label: `onnxruntime-node ${opt.ortThreads}T`, backend: 'ort', stats: statsOf(sr), cpu: statsOf(cr), warmupMs: warm.ort });
        o.ratio = o.stats.medianMs / base.stats.medianMs;
        o.minRatio = o.stats.minMs / base.stats.minMs;
        o.cpuRatio = o.cpu.medianMs / base.cpu.medianMs;
        // Per-round ratios: each pairs two calls a few hundred ms apart, so a slow spell hits both.
        const per = sr.map((t, i) => t / so[i]);
        o.roundRatio = { median: median(per), min: Math.min(...per), max: Math.max(...per) };
        // The first call after each pause, for each: the median, and ORT's over sppnet's.
        row.idle = { oursMs: idle.ours, ortMs: idle.ort, ratio: idle.ort / idle.ours };
        row.impls.push(o);
      } else {
        row.impls.push({ label: 'onnxruntime-node', backend: 'ort', note: ortNote });
      }
      results.push(row);
    }
    model.dispose();
    if (session) await session.release();
  }

  machine.loadavgEnd = os.loadavg();
  machine.seconds = (nowMs() - tStart) / 1e3;
  const rows = implRows(results, (r, impl, s) => [
    s ? fmtMs(impl.imgPerS) : '-',
    impl.ratio != null ? fmtX(impl.ratio) : impl.backend === 'sppnet' ? '1.0x' : '-',
    impl.minRatio != null ? fmtX(impl.minRatio) : impl.backend === 'sppnet' ? '1.0x' : '-',
    impl.cpu ? fmtMs(impl.cpu.medianMs) : '-',
    impl.cpuRatio != null ? fmtX(impl.cpuRatio) : impl.backend === 'sppnet' ? '1.0x' : '-',
    s ? fmtMs(impl.gflops) : '-',
    impl.backend === 'sppnet' ? fmtMs(r.floorMs) : '',
    s ? `${impl.pctPeak.toFixed(0)}%` : '-',
    impl.backend === 'sppnet' ? fmtMs(r.bwFloorMs) : '',
  ]);
  const legend = [
    `median, min, CPU ms: of the warm calls (the second of two back to back; see the header). ort/sppnet: onnxruntime-node's median over sppnet's, same run, interleaved rounds; > 1 means sppnet is faster. min: the same of the fastest calls. CPU ms: the median of the process's CPU time (user + system, all threads) per call, spin-waits included; CPU: ort/sppnet its ratio.${results.some((r) => r.impls[1].roundRatio) ? ` Per-round ratios (median, min-max): ${results.filter((r) => r.impls[1].roundRatio).map((r) => `${r.name} ${r.impls[1].roundRatio.median.toFixed(2)} (${r.impls[1].roundRatio.min.toFixed(2)}-${r.impls[1].roundRatio.max.toFixed(2)})`).join('; ')}.`: ''}${results.some((r) => r.idle) ? ` The first call after each 150 ms pause (medians, ms; ort/sppnet): ${results.filter((r) => r.idle).map((r) => `${r.name} sppnet ${fmtMs(r.idle.oursMs)}, ORT ${fmtMs(r.idle.ortMs)} (${fmtX(r.idle.ratio)})`).join('; ')}.` : ''}`,
    `FLOPs: conv + fc, 2 per multiply-add, from the specs' shapes: ${opt.archs.map((a) => `${a} ${flops[a].gflop.toFixed(2)} GFLOP per image (${(flops[a].convF / 1e9).toFixed(2)} conv + ${(flops[a].fcF / 1e9).toFixed(3)} fc)`).join(', ')}. floor = FLOPs / peak ${peakGflops.toFixed(0)} GFLOP/s (sp.measureCpuPeak, ${oursThreads} thread${oursThreads > 1 ? "s" : ""} of ${be.cpu.isa} FMA chains at once); % peak = floor / median.`,
    `bw floor = the weights' bytes (${opt.archs.map((a) => `${a} ${flops[a].weightMiB.toFixed(0)} MiB`).join(', ')}) / copy bandwidth ${(bw / 1e9).toFixed(1)} GB/s (${cores} threads): every call reads each weight once.`,
  ];
  const checkLines = checks.flatMap((c) => [
    ['sppnetVsOrt', 'sppnet vs onnxruntime-node (seeded 4x224)'],
    ['sppnetVsTorch', 'sppnet vs torchvision (its seeded 2x224)'],
    ['ortVsTorch', 'onnxruntime-node vs torchvision (same)'],
  ].filter(([k]) => c[k]).map(([k, what]) => `${c.arch} logits, ${what}: max |diff| ${c[k].maxAbsDiff.toExponential(2)}, max |value| ${c[k].maxAbs.toFixed(2)}, relative ${c[k].relDiff.toExponential(2)}, top-1 agree ${c[k].top1Agree}`));
  console.log('\n' + textTable(HEAD, rows));
  console.log('');
  for (const l of [...legend, ...checkLines, ...notes]) console.log(l);
  console.log(`load average (1, 5, 15 min): ${machine.loadavgStart.map((v) => v.toFixed(2)).join(' ')} before, ${machine.loadavgEnd.map((v) => v.toFixed(2)).join(' ')} after; ${machine.seconds.toFixed(0)} s in all`);

  const md = [
    '# vgg16 and googlenet on the CPU: sppnet vs onnxruntime-node',
    '',
    `${machine.date} — ${machine.cpu}, ${cores} cores, node ${machine.node}; mode ${machine.mode}, ${rounds} interleaved rounds; ${machine.seconds.toFixed(0)} s.`,
    `sppnet: ${be.cpu.isa}${amx}, ${oursThreads} threads at nice ${CPU_NICE}, build ${machine.build.addonMtime}, commit ${machine.build.commit}${machine.build.dirty ? ' + local changes' : ''}. ` +
      `onnxruntime-node ${ort ? `${ortVersion} (cpu, ${opt.ortThreads} intra-op threads, spinning ${opt.ortSpin})` : ortMissing}. Weights: ${opt.dir}/<arch>.{pth,onnx} (tools/export_torchvision_onnx.py).`,
    `Peak ${peakGflops.toFixed(0)} GFLOP/s, copy bandwidth ${(bw / 1e9).toFixed(1)} GB/s. Load average ${machine.loadavgStart[0].toFixed(2)} before, ${machine.loadavgEnd[0].toFixed(2)} after.`,
    '',
    mdTable(HEAD, rows),
    '',
    ...[...legend, ...checkLines, ...notes].map((l) => `- ${l}`),
    '',
  ].join('\n');
  const json = { command: `${process.env.SPPNET_CPU_NICE !== undefined ? `SPPNET_CPU_NICE=${process.env.SPPNET_CPU_NICE} ` : ''}${commandLine(__filename)}`, machine, peak: { ...probe, peakGflops }, copyBandwidth: bw, flops, checks, results, notes };
  console.log(`\n${writeResults(opt.out, 'torchvision-cpu', json, md)}`);
}

main().catch((e) => process.exit(failed(e)));
