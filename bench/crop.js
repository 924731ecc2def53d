#!/usr/bin/env node
// sp.cropResize on the CPU against its bandwidth floor and torchvision.ops.roi_align (CPU) on the
// same windows: R-CNN's warp of 2,000 proposal windows of one 500x375 3-channel image to 224x224
// and to 64x64 (context 0, align 'pixels'). roi_align(aligned=True, sampling_ratio=1) on the boxes
// [x1, y1, x2 + 1, y2 + 1] computes the same samples (include/sppnet/crop.h; equal within 1e-5,
// checked here on the first round). torchvision runs in one python child process
// (torch.set_num_threads(2)) that times itself (time.perf_counter around the call, after a
// warm-up); sp.cropResize is timed here around the awaited call, writing into one preallocated
// `out` tensor (so its time includes the hop to the CPU thread and back, no allocation). Rounds
// alternate between the two; medians are compared.
// Floor: output bytes / copy bandwidth (bench/membw.js: a Float32Array copy, read + write bytes
// counted, best of 7, with as many threads as SPPNET_NUM_THREADS or the cores): the time to stream
// the output once at the rate a copy moves bytes. The input (2.25 MB) stays in cache.
//
//   node bench/crop.js [--rounds 7] [--python /usr/bin/python3] [--no-torch] [--json out.json]
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const sp = require('../dist');
const { prng } = require('../dist/core/random');
const { copyBandwidth } = require('./membw');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const rounds = Number(arg('rounds', 7));
const python = arg('python', '/usr/bin/python3');
const withTorch = !process.argv.includes('--no-torch');
const jsonOut = arg('json', null);
const threads = Number(process.env.SPPNET_NUM_THREADS) || os.cpus().length;

const PY = `
import sys, time, numpy as np, torch, torchvision
torch.set_num_threads(2)
for line in sys.stdin:
    path, k, h, w, size, reps = line.split()
    k, h, w, size, reps = int(k), int(h), int(w), int(size), int(reps)
    a = np.fromfile(path, dtype=np.float32)
    img = torch.from_numpy(a[: 3 * h * w].reshape(1, 3, h, w).copy())
    b = torch.from_numpy(a[3 * h * w :].reshape(k, 5).copy())
    rois = b.clone(); rois[:, 3:] += 1
    y = torchvision.ops.roi_align(img, rois, (size, size), 1.0, 1, True)
    np.asarray(y[:4].contiguous().numpy(), np.float32).tofile(path + '.head')
    del y
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); y = torchvision.ops.roi_align(img, rois, (size, size), 1.0, 1, True); ts.append((time.perf_counter() - t) * 1e3); del y
    print(' '.join(f'{x:.3f}' for x in ts), flush=True)
`;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// R-CNN-like proposals: 2,000 windows of 16 px to the whole image, integer corners, inside.
function proposals(k, H, W, seed) {
  const r = prng(seed);
  const boxes = new Float32Array(5 * k);
  for (let i = 0; i < k; i++) {
    const w = Math.max(16, Math.floor(W * r() ** 1.5)), h = Math.max(16, Math.floor(H * r() ** 1.5));
    const x1 = Math.floor(r() * (W - w + 1)), y1 = Math.floor(r() * (H - h + 1));
    boxes.set([0, x1, y1, x1 + w - 1, y1 + h - 1], 5 * i);
  }
  return boxes;
}

async function main() {
  const H = 375, W = 500, C = 3, K = 2000;
  const r = prng(7);
  const image = new Float32Array(C * H * W).map(() => r() * 2 - 1);
  const boxes = proposals(K, H, W, 11);
  const X = sp.tensor(image, [C, H, W]), B = sp.tensor(boxes, [K, 5]);
  const bw = await copyBandwidth({ mib: 256, threads, reps: 7 });
  console.log(`copy bandwidth (${threads} thread(s), read + write): ${(bw.bestBytesPerS / 1e9).toFixed(2)} GB/s best`);
  let child, lines, pending, ask, dir;
  if (withTorch) {
    child = spawn(python, ['-c', PY], { stdio: ['pipe', 'pipe', 'inherit'] });
    lines = readline.createInterface({ input: child.stdout });
    pending = [];
    lines.on('line', (l) => pending.shift()(l));
    ask = (msg) => new Promise((res) => { pending.push(res); child.stdin.write(msg + '\n'); });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-crop-'));
  }
  const rows = [];
  for (const size of [224, 64]) {
    const out = sp.zeros([K, C, size, size]);
    const bytes = K * C * size * size * 4;
    await sp.cropResize(X, B, size, { out }); // warm-up
    let file;
    if (withTorch) {
      file = path.join(dir, `crop-${size}.f32`);
      const all = new Float32Array(C * H * W + 5 * K);
      all.set(image);
      all.set(boxes, C * H * W);
      fs.writeFileSync(file, Buffer.from(all.buffer));
    }
    const ours = [], theirs = [];
    for (let round = 0; round < rounds; round++) {
      const t0 = process.hrtime.bigint();
      await sp.cropResize(X, B, size, { out });
      ours.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (withTorch) theirs.push(...(await ask(`${file} ${K} ${H} ${W} ${size} 1`)).trim().split(' ').map(Number));
    }
    let agree = null;
    if (withTorch) {
      const head = new Float32Array(fs.readFileSync(file + '.head').buffer.slice(0));
      const mine = (await out.data()).subarray(0, head.length);
      agree = 0;
      for (let i = 0; i < head.length; i++) agree = Math.max(agree, Math.abs(head[i] - mine[i]));
    }
    out.dispose();
    const row = {
      size, windows: K, outputMB: bytes / 1e6, spMedianMs: median(ours), spMinMs: Math.min(...ours),
      floorMs: (bytes / bw.bestBytesPerS) * 1e3, torchvisionMedianMs: withTorch ? median(theirs) : null, maxAbsDiffFirst4: agree,
    };
    rows.push(row);
    console.log(`${K} windows -> ${size}x${size} (${row.outputMB.toFixed(0)} MB out): sp.cropResize median ${row.spMedianMs.toFixed(1)} ms ` +
      `(min ${row.spMinMs.toFixed(1)}), floor ${row.floorMs.toFixed(1)} ms (${(row.spMedianMs / row.floorMs).toFixed(2)}x)` +
      (withTorch ? `; roi_align median ${row.torchvisionMedianMs.toFixed(1)} ms (${(row.torchvisionMedianMs / row.spMedianMs).toFixed(2)}x ours); ` +
        `max |diff| on 4 windows ${agree.toExponential(1)}` : ''));
  }
  if (child) child.stdin.end();
  [X, B].forEach((t) => t.dispose());
  const result = { bench: 'crop', threads, rounds, copyBandwidthGBs: bw.bestBytesPerS / 1e9, cpu: os.cpus()[0].model, rows };
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(result, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
