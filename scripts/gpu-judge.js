#!/usr/bin/env node
// The pass/fail rule and the key figures of each step of scripts/gpu-run.sh, from the step's exit
// status, its log and the files it wrote: one place for what "passed" means on the GPU host.
// Prints the step's entry of summary.json (one JSON line); exits 0 when the step passed, 1 if not.
//
//   node scripts/gpu-judge.js STEP RC SECONDS LIMIT LOG [FILE [OUT_JSON]]
//
// STEP: spp_check | memcheck | racecheck | synccheck | mocha | torch | gpu_spp | gpu_zf5 | zf5_layers | detect | sass.
// FILE: the JSON a benchmark wrote, or for sass the cuobjdump -sass text (OUT_JSON: where the
// per-kernel counts go). SPPNET_GPU_NAME and SPPNET_GPU_CC (from the preflight) name the device.
// A step passes only on positive evidence that CUDA ran (the device's name in spp_check's output,
// gpu-touch's "ops on cuda" line, no "CUDA ... skipped" in the suite), never on silence.
'use strict';
const fs = require('fs');
const path = require('path');

const read = (f) => (f && fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
const readJson = (f) => {
  try {
    return JSON.parse(fs.readFileSync(f, 'utf8'));
  } catch {
    return null;
  }
};
const round = (v, d = 3) => (typeof v === 'number' && Number.isFinite(v) ? Number(v.toPrecision(d)) : v ?? null);

function sppCheck(log) {
  const rows = [];
  let cur = null;
  for (const l of log.split('\n')) {
    let m = /^(W\d) (max|avg): .*cpu\s+([\d.]+) us .*max err\/\(1\+\|ref\|\) (\S+) (ok|FAIL)/.exec(l);
    if (m) {
      rows.push((cur = { work: `${m[1]} ${m[2]}`, cpuUs: +m[3], cpuOk: m[5] === 'ok' }));
      continue;
    }
    m = /^\s+cuda\s+([\d.]+) us .*max err\/\(1\+\|ref\|\) (\S+) (ok|FAIL)/.exec(l);
    if (m && cur) Object.assign(cur, { cudaUs: +m[1], cudaErr: +m[2], cudaOk: m[3] === 'ok' });
  }
  const dev = (/^CUDA: (.*)$/m.exec(log) || [])[1] || null;
  const want = process.env.SPPNET_GPU_NAME;
  const why = [];
  if (!dev || (want && dev !== want)) why.push(`spp_check saw CUDA device ${JSON.stringify(dev)}, expected ${JSON.stringify(want || 'a device')}`);
  if (rows.length !== 8) why.push(`${rows.length} of the 8 workload lines (W1-W4, max and avg)`);
  const bad = rows.filter((r) => !r.cpuOk || !r.cudaOk).map((r) => r.work + (r.cudaUs === undefined ? ' (no cuda run)' : ''));
  if (bad.length) why.push(`failed or not run on CUDA: ${bad.join(', ')}`);
  if (!/^0 failed$/m.test(log)) why.push('no "0 failed" line');
  return { why, figures: { device: dev, rows } };
}

function sanitizer(tool) {
  return (log) => {
    const why = [];
    const touch = /^gpu-touch: (\d+) ops on (\w+), (\d+) failed/m.exec(log);
    if (!/^gpu-touch: device cuda\b/m.test(log) || !touch || touch[2] !== 'cuda') why.push('gpu-touch.js did not run on CUDA to its end');
    else if (touch[3] !== '0') why.push(`gpu-touch.js: ${touch[3]} of ${touch[1]} ops failed`);
    const errors = [...log.matchAll(/ERROR SUMMARY: (\d+) errors?/g)].map((m) => +m[1]);
    const races = [...log.matchAll(/RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)/g)].map((m) => ({ hazards: +m[1], errors: +m[2], warnings: +m[3] }));
    const figures = { ops: touch ? +touch[1] : 0, opsFailed: touch ? +touch[3] : null };
    if (tool === 'racecheck') {
      if (!races.length) why.push('no RACECHECK SUMMARY line');
      const r = races.reduce((a, x) => ({ hazards: a.hazards + x.hazards, errors: a.errors + x.errors, warnings: a.warnings + x.warnings }), { hazards: 0, errors: 0, warnings: 0 });
      if (r.hazards || r.errors || r.warnings) why.push(`racecheck: ${r.hazards} hazards (${r.errors} errors, ${r.warnings} warnings)`);
      Object.assign(figures, r);
    } else {
      if (!errors.length) why.push('no ERROR SUMMARY line');
      const n = errors.reduce((a, b) => a + b, 0);
      if (n) why.push(`${tool}: ${n} errors`);
      figures.errors = n;
    }
    figures.firstReports = log.split('\n').filter((l) => /^========= +(Invalid|Race|Barrier|Program hit|Error|Warning|.*hazard)/i.test(l)).slice(0, 5);
    return { why, figures };
  };
}

function mocha(log) {
  const why = [];
  const all = [...log.matchAll(/^(\d+) passed, (\d+) failed, (\d+) skipped$/gm)];
  const s = all.length ? all[all.length - 1] : null;
  const figures = s ? { passed: +s[1], failed: +s[2], skipped: +s[3] } : { passed: 0, failed: null, skipped: null };
  if (!s) why.push('no "N passed, N failed, N skipped" line');
  else {
    if (figures.failed) why.push(`${figures.failed} tests failed`);
    if (figures.passed < 100) why.push(`only ${figures.passed} tests passed`);
  }
  // A skip note, not a test's title (a passed test's line starts with ✔, a failed one's with "N) ").
  const noCuda = log.split('\n').filter((l) => !/^\s*(✔|\d+\) )/.test(l) && /(CUDA|tensor-core)[^\n]*tests skipped|skipped: no CUDA device/.test(l));
  if (noCuda.length) why.push(`CUDA tests skipped: ${noCuda[0].trim()}`);
  figures.failures = log.split('\n').filter((l) => /^\s+\d+\) /.test(l)).slice(0, 10).map((l) => l.trim());
  return { why, figures };
}

function gpuSpp(log, file) {
  const d = readJson(file);
  if (!d) return { why: [`no ${path.basename(file || 'gpu_spp.json')} written`], figures: {} };
  const why = [];
  const names = d.results.map((r) => r.name);
  if (names.join() !== 'W1,W2,W3,W4') why.push(`workloads run: ${names.join(', ') || 'none'}`);
  const off = d.results.filter((r) => r.checkMaxAbsDiffVsCpu !== 0).map((r) => `${r.name} ${r.checkMaxAbsDiffVsCpu}`);
  if (off.length) why.push(`CUDA output differs from the CPU's: ${off.join(', ')}`);
  const rows = d.results.map((r) => ({ work: r.name, medianUs: round(r.sppnet.medianUs), peerUs: round(r.torchUs), peerOverOurs: round(r.ratioTorchOverOurs), floorUs: round(r.floorUs) }));
  return { why, figures: { peer: d.torch ? `${d.torch.device} (${d.torchJson})` : null, rows } };
}

/** torch_anchor.py on the GPU host: the peer of gpu_spp and gpu_zf5 on the same machine. */
function torchAnchor(log, file) {
  const d = readJson(file);
  if (!d) return { why: [`no ${path.basename(file || 'torch_anchor.json')} written`], figures: {} };
  const ms = Object.fromEntries(Object.entries(d).filter(([, v]) => v && typeof v.ms === 'number').map(([k, v]) => [k, round(v.ms)]));
  const why = [];
  for (const w of ['W1', 'W2', 'W3', 'W4', 'W5']) if (!Object.keys(ms).some((k) => k.startsWith(`${w} `))) why.push(`no ${w} timing`);
  if (typeof d.bw_TBps !== 'number') why.push('no copy bandwidth');
  return { why, figures: { bw_TBps: round(d.bw_TBps), ms } };
}

/** bench/zf5_layers.js --device cuda --json: each layer's wall time and time on the CUDA executor. */
function zf5Layers(log, file) {
  const d = readJson(file);
  if (!d) return { why: [`no ${path.basename(file || 'zf5_layers.json')} written`], figures: {} };
  const why = [];
  if (d.device !== 'cuda') why.push(`ran on ${d.device}, not cuda`);
  const rows = Array.isArray(d.rows) ? d.rows : [];
  const batches = [...new Set(rows.map((r) => r.batch))];
  if (!batches.length) why.push('no rows');
  const figures = { where: d.where, math: d.math };
  for (const b of batches) {
    const rs = rows.filter((r) => r.batch === b);
    if (!rs.some((r) => r.name.startsWith('Model.run'))) why.push(`batch ${b}: no Model.run row`);
    if (rs.some((r) => !(r.ms > 0) || !(r.exMs >= 0))) why.push(`batch ${b}: a row without times`);
    // [wall ms, on the executor ms, and with SPPNET_CUDA_KERNEL_TIMES=1 the kernels' GPU ms]
    figures[`batch ${b}`] = Object.fromEntries(rs.map((r) => [r.name, [round(r.ms), round(r.exMs), ...(r.gpuMs !== undefined ? [round(r.gpuMs)] : [])]]));
  }
  return { why, figures };
}

/** bench/detect.js --zf5-only on CUDA: SPP-net and the R-CNN baseline, time per image by stage. */
function detect(log, file) {
  const d = readJson(file);
  if (!d) return { why: [`no ${path.basename(file || 'detect.json')} written`], figures: {} };
  const why = [];
  if (d.device !== 'cuda') why.push(`ran on ${d.device}, not cuda`);
  const z = d.zf5;
  if (!z || !Array.isArray(z.rows) || z.rows.length < 2 || !z.ratios) return { why: [...why, 'no SPP-net and R-CNN timings'], figures: {} };
  const ms = (t) => Object.fromEntries(Object.entries(t).map(([k, v]) => [k, round(1000 * v)]));
  const figures = { windows: round(z.windows), rows: z.rows.map((r) => ({ name: r.name, ms: ms(r.mean) })), ratios: z.ratios, many: z.many || null };
  if (!(z.ratios.total > 0)) why.push('no time ratio');
  return { why, figures };
}

function gpuZf5(log, file) {
  const d = readJson(file);
  if (!d) return { why: [`no ${path.basename(file || 'gpu_zf5.json')} written`], figures: {} };
  const why = [];
  if (!d.check || !d.check.ok) why.push(`tensor-core check failed: ${d.check ? d.check.detail : 'not run'}`);
  if (!d.rows.length || d.rows.some((r) => !(r.median > 0))) why.push('missing or invalid timings');
  const rows = d.rows.map((r) => ({ work: r.work, math: r.math, medianMs: round(r.median), tflops: round(r.tflops), peerMs: round(r.peerMs), peerOverOurs: round(r.ratio) }));
  return { why, figures: { peer: d.peer || null, check: d.check ? d.check.ok : null, rows } };
}

// _ZN6sppnet4cuda2tc4kern14conv_tc_kernelILi64ELi0EEEvNS2_8ConvArgsE -> conv_tc_kernel<64,0>
function shortName(mangled) {
  let s;
  if (mangled.startsWith('_ZN')) s = mangled.slice(3);
  else if (mangled.startsWith('_Z')) s = mangled.slice(2);
  else return mangled;
  let last = mangled;
  for (let k; (k = /^(\d+)/.exec(s)); ) {
    last = s.substr(k[1].length, +k[1]);
    s = s.slice(k[1].length + +k[1]);
  }
  if (!s.startsWith('I')) return last;
  const args = [];
  s = s.slice(1);
  for (let a; (a = /^L[a-z](n?\d+)E/.exec(s)); s = s.slice(a[0].length)) args.push(a[1].replace(/^n/, '-'));
  return `${last}<${args.join(',')}>`;
}

/** Per arch and kernel: instructions, HMMA, LDL, STL of a cuobjdump -sass listing. */
function parseSass(text) {
  const archs = {};
  let arch = null, fn = null;
  for (const l of text.split('\n')) {
    let m = /^\s*code for (sm_\w+)/.exec(l) || /^arch = (sm_\w+)/.exec(l);
    if (m) {
      arch = m[1];
      archs[arch] = archs[arch] || {};
      continue;
    }
    m = /^\s*Function : (\S+)/.exec(l);
    if (m && arch) {
      fn = archs[arch][m[1]] = { name: shortName(m[1]), instructions: 0, hmma: 0, ldl: 0, stl: 0 };
      continue;
    }
    m = /^\s*\/\*[0-9a-f]{4,}\*\/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)[.\s;]/.exec(l);
    if (m && fn) {
      fn.instructions++;
      if (m[1] === 'HMMA') fn.hmma++;
      else if (m[1] === 'LDL') fn.ldl++;
      else if (m[1] === 'STL') fn.stl++;
    }
  }
  return archs;
}

function sass(log, file, outJson) {
  const archs = parseSass(read(file));
  if (outJson) fs.writeFileSync(outJson, JSON.stringify(archs, null, 1));
  const why = [];
  const cc = (process.env.SPPNET_GPU_CC || '9.0').replace('.', '');
  const own = Object.keys(archs).find((a) => a === `sm_${cc}` || a === `sm_${cc}a`);
  if (!own) why.push(`no sm_${cc} code in the addon (archs: ${Object.keys(archs).join(', ') || 'none'})`);
  const figures = {};
  for (const [a, fns] of Object.entries(archs)) {
    const list = Object.values(fns);
    const tc = list.filter((f) => /_tc_kernel/.test(f.name));
    const noHmma = Number(a.replace(/\D/g, '')) >= 80 ? tc.filter((f) => f.hmma === 0).map((f) => f.name) : [];
    if (noHmma.length) why.push(`${a}: tensor-core kernels without HMMA: ${noHmma.join(', ')}`);
    figures[a] = {
      kernels: list.length,
      tensorCoreKernels: tc.length,
      hmma: tc.reduce((s, f) => s + f.hmma, 0),
      local: list.filter((f) => f.ldl || f.stl).map((f) => `${f.name} LDL ${f.ldl} STL ${f.stl}`),
    };
  }
  if (own && !figures[own].tensorCoreKernels) why.push(`${own}: no tensor-core kernels found`);
  return { why, figures };
}

const JUDGES = { spp_check: sppCheck, memcheck: sanitizer('memcheck'), racecheck: sanitizer('racecheck'), synccheck: sanitizer('synccheck'), mocha, torch: torchAnchor, gpu_spp: gpuSpp, gpu_zf5: gpuZf5, zf5_layers: zf5Layers, detect, sass };

function main() {
  const [step, rc, seconds, limit, logFile, file, outJson] = process.argv.slice(2);
  if (!JUDGES[step]) throw new Error(`unknown step ${step} (${Object.keys(JUDGES).join(', ')})`);
  const { why, figures } = JUDGES[step](read(logFile), file, outJson);
  if (rc === '124' || rc === '137') why.unshift(`timed out after ${limit} s`);
  else if (rc !== '0') why.unshift(`exit status ${rc}`);
  const entry = { name: step, status: why.length ? 'fail' : 'pass', seconds: +seconds, limit_s: +limit, log: 'run.log', why: why.join('; '), figures };
  console.log(JSON.stringify(entry));
  process.exitCode = why.length ? 1 : 0;
}

if (require.main === module) main();
module.exports = { parseSass, shortName, JUDGES };
