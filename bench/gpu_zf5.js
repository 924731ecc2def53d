'use strict';
// sppnet's side of the GPU ZF-5 comparison (issue 4): the network of the PyTorch anchor
// (/work/shared/anchors/torch_anchor.py: conv1 96x7x7/2 p1, LRN 5, pool 3/2 p1, conv2 256x5x5/2 p1,
// LRN, pool, conv3-5 3x3 p1, SPP {6,3,2,1} adaptive, fc6-fc8) on CUDA, in each math mode:
//   W5  uniform batch 32x3x224x224, whole network     (PyTorch: one call, cuDNN)
//   W5c the same, conv1-5 only
//   W6  ragged batch of 32 images with sides 180..480, whole network, ONE model.run call
//       (PyTorch: a per-image loop, one call per image)
//   G   our GEMM (sp.linear, no bias) on 4096x4096x4096 (PyTorch: torch.matmul, cuBLAS)
//
//   node bench/gpu_zf5.js [--torch TORCH_ANCHOR_JSON] [--anchor STORED_JSON] [--cublas TORCH_GEMM_JSON] [--quick] [--modes tf32,fp32,bf16]
//
// TORCH_ANCHOR_JSON is what torch_anchor.py wrote on the same machine in the same session
// (W5/W5c/W6 keys, fp32 and tf32), TORCH_GEMM_JSON what bench/torch_gemm.py wrote; with them each
// row gets PyTorch's time and the ratio PyTorch / sppnet (> 1: sppnet faster). STORED_JSON is an
// earlier torch_anchor.py result (e.g. torch_anchor_h100_2026-11-24.json), used when
// TORCH_ANCHOR_JSON is not given or missing; its rows say so. --quick: 5 timed calls instead of 20.
// --smoke: the same code on the CPU with 2 images and a 256^3 GEMM, 1 timed call: a test of this
// script (CI runs it), not a benchmark.
// Writes gpu_zf5.json and gpu_zf5.md to $OUT (or bench/out).
//
// Method. Weights and inputs are on the device before timing. Each timed call is
// `await model.run(x)` (or sp.linear) bracketed by process.hrtime: validation, the hop to the
// worker thread, every kernel and the stream synchronisation, so wall-clock end to end; PyTorch's
// figures (triton do_bench) are CUDA-event times of the GPU work alone, so the comparison leans
// against sppnet. One warm-up call (it runs the tensor-core check too), then median of >= 20 calls.
// Floors: FLOPs / the H100 SXM's dense peak (TF32 495, BF16 990 TFLOP/s with sparsity off; FP32
// on the tensor cores is 3 TF32 products: 165) and the weights' bytes / the copy bandwidth.
const fs = require('fs');
const path = require('path');
const sp = require('../dist');
const { parseArgs, headerText, failed, timeRuns, writeResults, rng, randomArray, textTable, mdTable, specFlops, fmtMs, fmtX } = require('./common');

const LEVELS = [...sp.DEFAULT_LEVELS];
const PEAK_TFLOPS = { tf32: 495, bf16: 990, fp32: 165, direct: 67 };

const OPTIONS = [
  { name: 'torch', type: 'string', default: null, arg: 'TORCH_ANCHOR_JSON', help: 'what torch_anchor.py wrote on this machine in this session' },
  { name: 'anchor', type: 'string', default: null, arg: 'STORED_JSON', help: 'a stored torch_anchor.py result, where --torch is not given or missing' },
  { name: 'cublas', type: 'string', default: null, arg: 'TORCH_GEMM_JSON', help: "what bench/torch_gemm.py wrote: cuBLAS's GEMM times" },
  { name: 'quick', type: 'flag', help: '5 timed calls instead of 20' },
  { name: 'smoke', type: 'flag', help: 'on the CPU, 2 images, a 256^3 GEMM, 1 timed call: a test of this script' },
  { name: 'modes', type: 'list', choices: Object.keys(PEAK_TFLOPS), default: ['tf32', 'fp32', 'bf16'], arg: 'tf32,fp32,...', help: 'the math modes to run' },
];

const conv = (name, out, kernel, stride, padding) => ({ type: 'conv', name, out, kernel, stride, padding, relu: true });
function anchorSpec(withHead) {
  const lrn = { type: 'lrn', size: 5, alpha: 1e-4, beta: 0.75, k: 1 };
  const pool = { type: 'maxpool', kernel: 3, stride: 2, padding: 1 };
  const layers = [
    conv('conv1', 96, 7, 2, 1), lrn, pool,
    conv('conv2', 256, 5, 2, 1), lrn, pool,
    conv('conv3', 384, 3, 1, 1), conv('conv4', 384, 3, 1, 1), conv('conv5', 256, 3, 1, 1),
    { type: 'spp', levels: LEVELS, bins: 'adaptive' },
  ];
  if (withHead) layers.push({ type: 'fc', name: 'fc6', out: 4096, relu: true }, { type: 'fc', name: 'fc7', out: 4096, relu: true }, { type: 'fc', name: 'fc8', out: 1000, relu: false });
  return { name: withHead ? 'zf5-anchor-full' : 'zf5-anchor-conv', inChannels: 3, layers };
}

const timeIt = async (fn, reps) => (await timeRuns(fn, { reps })).stats;

async function main() {
  const o = parseArgs(process.argv.slice(2), OPTIONS, { usage: headerText(__filename, 1, 20) });
  const b = sp.backend();
  const device = o.smoke ? 'cpu' : 'cuda';
  if (b.device !== device && !o.smoke) throw new Error(`no CUDA device: ${b.reason}`);
  const n = o.smoke ? 2 : 32; // images per batch
  const sameRun = o.torch && fs.existsSync(o.torch);
  const peerFile = sameRun ? o.torch : o.anchor;
  if (!sameRun && o.anchor && !fs.existsSync(o.anchor)) throw new Error(`--anchor ${o.anchor} not found`);
  const torch = peerFile ? JSON.parse(fs.readFileSync(peerFile, 'utf8')) : null;
  const peer = torch ? (sameRun ? `PyTorch on this machine (${o.torch})` : `the stored PyTorch anchor ${path.basename(o.anchor)}`) : null;
  if (peer) console.log(`peer: ${peer}`);
  const tag = sameRun ? '' : ' (stored)';
  const cublas = o.cublas && fs.existsSync(o.cublas) ? JSON.parse(fs.readFileSync(o.cublas, 'utf8')) : null;
  const reps = o.smoke ? 1 : o.quick ? 5 : 20;
  const r = rng(7);
  const full = await sp.buildModel({ spec: anchorSpec(true), classes: 1000, seed: 1, device });
  const convOnly = await sp.buildModel({ spec: anchorSpec(false), seed: 1, device });
  const xb = sp.tensor(randomArray(n * 3 * 224 * 224, r), [n, 3, 224, 224], { device });
  const sizes = Array.from({ length: n }, () => [180 + Math.floor(r() * 301), 180 + Math.floor(r() * 301)]);
  const rb = sp.ragged(sizes.map(([h, w]) => sp.tensor(randomArray(3 * h * w, r), [3, h, w], { device })));
  const f224 = specFlops(anchorSpec(true), 224, 224, LEVELS);
  const fRagged = sizes.reduce((s, [h, w]) => { const f = specFlops(anchorSpec(true), h, w, LEVELS); return s + f.convF + f.fcF; }, 0);
  const N = o.smoke ? 256 : 4096;
  const A = sp.tensor(randomArray(N * N, r), [N, N], { device }), B = sp.tensor(randomArray(N * N, r), [N, N], { device });
  const rows = [];
  const torchMs = (key) => (torch && torch[key] ? torch[key].ms : null);
  for (const math of o.modes) {
    sp.setMath({ conv: math, linear: math });
    const tTag = math === 'fp32' || math === 'tf32' ? math : null; // the anchor has fp32 and tf32 runs
    const add = (work, s, flops, peerMs, peerName) => {
      const floorMs = flops / (PEAK_TFLOPS[math] * 1e12) * 1e3;
      rows.push({ work, math, reps: s.reps, median: s.medianMs, min: s.minMs, flops, tflops: flops / (s.medianMs * 1e-3) / 1e12, floorMs, peerMs, peerName, ratio: peerMs ? peerMs / s.medianMs : null });
    };
    add(`W5 ZF-5 uniform ${n}x224`, await timeIt(() => full.run(xb), reps), n * (f224.convF + f224.fcF), tTag && torchMs(`W5 ZF-5 SPP-net fwd uniform 32x3x224x224 ${tTag}`), `PyTorch one call${tag}`);
    add(`W5c ZF-5 conv1-5 ${n}x224`, await timeIt(() => convOnly.run(xb), reps), n * f224.convF, tTag && torchMs(`W5c ZF-5 conv1-5 only uniform 32x224 ${tTag}`), `PyTorch one call${tag}`);
    add(`W6 ZF-5 ragged ${n} [180..480]`, await timeIt(() => full.run(rb), reps), fRagged, tTag && torchMs(`W6 ZF-5 SPP-net fwd ragged 32 imgs [180..480]^2 loop ${tTag}`), `PyTorch per-image loop${tag}`);
    const g = cublas && cublas[`gemm4096_${math}`];
    add(`G GEMM ${N}^3`, await timeIt(() => sp.linear(A, B, null, { math }), reps), 2 * N * N * N, g ? g.ms : null, 'cuBLAS (torch.matmul)');
  }
  const check = await sp.tensorCoreCheck();
  const head = ['work', 'math', 'reps', 'median ms', 'min ms', 'TFLOP/s', 'floor ms', 'peer', 'peer ms', 'peer/ours'];
  const table = rows.map((x) => [x.work, x.math, x.reps, fmtMs(x.median), fmtMs(x.min), x.tflops.toFixed(1), fmtMs(x.floorMs), x.peerName, x.peerMs ? fmtMs(x.peerMs) : 'n/a', x.ratio ? fmtX(x.ratio) : 'n/a']);
  const where = o.smoke ? `CPU ${b.cpu.isa} x${b.cpu.threads} (--smoke: a test of this script, not a benchmark)` : `${b.cuda.name} (cc ${b.cuda.computeCapability})`;
  console.log(`${where}; tensor-core check: ${check.ok ? 'passed' : check.ran ? 'FAILED' : 'not run'} (${check.detail})`);
  console.log(textTable(head, table));
  const out = process.env.OUT || path.join(__dirname, 'out');
  writeResults(out, 'gpu_zf5', { device: b.cuda, check, peer, reps, rows, sizes }, mdTable(head, table) + '\n');
  [full, convOnly].forEach((m) => m.dispose());
  [xb, rb, A, B].forEach((t) => t.dispose());
}

main().catch((e) => process.exit(failed(e)));
