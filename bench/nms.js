#!/usr/bin/env node
// sp.nms against torchvision.ops.nms on the CPU, on the same boxes: 2,000 and 20,000 random boxes
// in two layouts, iou 0.5. torchvision runs in one python child process (torch.set_num_threads(2))
// that times itself (time.perf_counter around the call, after a warm-up); sp.nms is timed here
// around the awaited call (so its time includes the hop to the CPU thread and back). Rounds
// alternate between the two; the medians are compared. Both results are checked to be equal.
//
//   node bench/nms.js [--rounds 15] [--python /usr/bin/python3] [--json out.json]
//
// Layouts: 'overlapping' is torchvision's own test data (rand(N, 4) * 100, x2y2 += x1y1: every box
// overlaps most others, few are kept); 'proposals' spreads boxes of 8-128 px over 1000 x 1000
// (like a detector's proposals on one image: many are kept).
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const sp = require('../dist');
const { prng } = require('../dist/core/random');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const rounds = Number(arg('rounds', 15));
const python = arg('python', '/usr/bin/python3');
const jsonOut = arg('json', null);

const PY = `
import sys, time, numpy as np, torch, torchvision
torch.set_num_threads(2)
for line in sys.stdin:
    path, n, iou, reps = line.split()
    n, iou, reps = int(n), float(iou), int(reps)
    a = np.fromfile(path, dtype=np.float32)
    boxes = torch.from_numpy(a[: 4 * n].reshape(n, 4).copy()); scores = torch.from_numpy(a[4 * n :].copy())
    keep = torchvision.ops.nms(boxes, scores, iou)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); keep = torchvision.ops.nms(boxes, scores, iou); ts.append((time.perf_counter() - t) * 1e3)
    print(' '.join(f'{x:.4f}' for x in ts), '|', ','.join(map(str, keep.tolist())), flush=True)
`;

function makeBoxes(layout, n, seed) {
  const r = prng(seed);
  const boxes = new Float32Array(4 * n), scores = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (layout === 'overlapping') {
      const x = r() * 100, y = r() * 100;
      boxes.set([x, y, x + r() * 100, y + r() * 100], 4 * i);
    } else {
      const x = r() * 1000, y = r() * 1000;
      boxes.set([x, y, x + 8 + r() * 120, y + 8 + r() * 120], 4 * i);
    }
    scores[i] = r();
  }
  return { boxes, scores };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  const child = spawn(python, ['-c', PY], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const pending = [];
  lines.on('line', (l) => pending.shift()(l));
  const ask = (msg) => new Promise((res) => {
    pending.push(res);
    child.stdin.write(msg + '\n');
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-nms-'));
  const rows = [];
  for (const layout of ['overlapping', 'proposals'])
    for (const n of [2000, 20000]) {
      const { boxes, scores } = makeBoxes(layout, n, 15 + n);
      const file = path.join(dir, `${layout}-${n}.f32`);
      const both = new Float32Array(5 * n);
      both.set(boxes);
      both.set(scores, 4 * n);
      fs.writeFileSync(file, Buffer.from(both.buffer));
      const B = sp.tensor(boxes, [n, 4], { device: 'cpu' }), S = sp.tensor(scores, [n], { device: 'cpu' });
      const reps = n > 10000 ? 3 : 10;
      let keep = await sp.nms(B, S, { iou: 0.5 }); // warm-up
      const ours = [], theirs = [];
      let same = true;
      for (let k = 0; k < rounds; k++) {
        for (let j = 0; j < reps; j++) {
          const t = process.hrtime.bigint();
          keep = await sp.nms(B, S, { iou: 0.5 });
          ours.push(Number(process.hrtime.bigint() - t) / 1e6);
        }
        const [ts, kept] = (await ask(`${file} ${n} 0.5 ${reps}`)).split(' | ');
        theirs.push(...ts.split(' ').map(Number));
        same = same && kept === Array.from(keep).join(',');
      }
      const row = { layout, n, kept: keep.length, spMs: median(ours), torchvisionMs: median(theirs), sameIndices: same };
      row.ratio = row.torchvisionMs / row.spMs;
      rows.push(row);
      console.log(`${layout.padEnd(11)} n=${String(n).padStart(5)} kept ${String(row.kept).padStart(5)}: sp.nms ${row.spMs.toFixed(3)} ms, ` +
        `torchvision ${row.torchvisionMs.toFixed(3)} ms, torchvision / sp ${row.ratio.toFixed(2)}x, same indices: ${same}`);
      B.dispose();
      S.dispose();
    }
  child.stdin.end();
  fs.rmSync(dir, { recursive: true, force: true });
  const env = { node: process.version, cpu: os.cpus()[0].model, cores: os.cpus().length, rounds };
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ env, rows }, null, 2));
  console.log(`(${env.cpu}, ${env.cores} cores, node ${env.node}; medians of ${rounds} interleaved rounds)`);
  if (rows.some((r) => !r.sameIndices)) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
