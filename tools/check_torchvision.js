#!/usr/bin/env node
'use strict';
// torchvision's checkpoints end to end: for each DIR/<arch>.pth written by
// `/usr/bin/python3 tools/make_torchvision_fixtures.py --pth DIR` (torch.save of the full-width
// models whose logits test/fixtures/torchvision/logits.json holds), loads the .pth with
// sp.loadModel, converts it with `sppnet convert` to safetensors and loads that too, and compares
// both runs' logits (the fixture's images as one ragged batch) with torchvision's.
// Usage: node tools/check_torchvision.js DIR
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const sp = require('../dist');
const { formulaImage } = require('../test/support/formula-weights');
const fixture = require('../test/fixtures/torchvision/logits.json');

async function logits(c, weights) {
  const t0 = process.hrtime.bigint();
  const model = await sp.loadModel({ arch: c.arch, classes: fixture.classes, weights });
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const xs = c.images.map(({ seed, shape }) => sp.tensor(formulaImage(seed, shape[1], shape[2]), shape));
  const out = await model.run(xs);
  const got = await out.data();
  out.dispose();
  xs.forEach((x) => x.dispose());
  model.dispose();
  const k = fixture.classes;
  const err = Math.max(...c.logits.map((row, i) => Math.max(...row.map((v, j) => Math.abs(got[i * k + j] - v))) / Math.max(...row.map(Math.abs))));
  return { err, loadMs };
}

(async () => {
  const dir = process.argv[2];
  if (!dir) throw new Error('usage: node tools/check_torchvision.js DIR');
  let bad = 0;
  for (const c of fixture.cases.filter((x) => x.case === x.arch)) {
    const pth = path.join(dir, `${c.arch}.pth`);
    if (!fs.existsSync(pth)) continue;
    const st = path.join(dir, `${c.arch}.safetensors`);
    const a = await logits(c, pth);
    const t0 = Date.now();
    execFileSync(process.execPath, [path.join(__dirname, '..', 'bin', 'sppnet.js'), 'convert', pth, st], { stdio: 'ignore' });
    const convertMs = Date.now() - t0;
    const b = await logits(c, st);
    fs.rmSync(st);
    const ok = a.err <= 1e-4 && b.err <= 1e-4;
    bad += ok ? 0 : 1;
    console.log(`${c.arch.padEnd(10)} ${(fs.statSync(pth).size / 2 ** 20).toFixed(0).padStart(4)} MiB  .pth: rel err ${a.err.toExponential(2)} (load ${a.loadMs.toFixed(0)} ms)  ` +
      `converted .safetensors: rel err ${b.err.toExponential(2)} (convert ${convertMs} ms, load ${b.loadMs.toFixed(0)} ms)  ${ok ? 'ok' : 'FAIL'}`);
  }
  process.exitCode = bad ? 1 : 0;
})().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
