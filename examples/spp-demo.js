#!/usr/bin/env node
// The SPP-net idea in one screen: images of any size -> conv feature maps of any size -> one
// fixed-length vector each, in one call over a ragged batch; then detection windows on one map.
'use strict';
const sp = require('..');

function randomMap(C, H, W) {
  const data = new Float32Array(C * H * W);
  for (let i = 0; i < data.length; i++) data[i] = Math.random() * 2 - 1;
  return sp.tensor(data, [C, H, W]);
}

(async () => {
  const b = sp.backend();
  console.log(`sppnet backend: ${b.device} (${b.reason})`);
  console.log(`CPU: ${b.cpu.threads} threads, ${b.cpu.isa}; CUDA built: ${b.cuda.built}`);

  // conv5 maps (256 channels) of images 180..600 px: sizes 11..37 at stride 16.
  const sizes = Array.from({ length: 64 }, () => [11 + Math.floor(Math.random() * 27), 11 + Math.floor(Math.random() * 27)]);
  const maps = sizes.map(([h, w]) => randomMap(256, h, w));
  const batch = sp.ragged(maps);
  maps.forEach((m) => m.dispose());
  let t0 = process.hrtime.bigint();
  const feats = await sp.spp(batch, { levels: [6, 3, 2, 1] });
  let ms = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(`\nSPP {6,3,2,1} over a ragged batch of ${batch.count} maps (256 x [11..37]^2, ${(batch.total * 4 / 1e6).toFixed(1)} MB):`);
  console.log(`  -> [${feats.shape.join(', ')}] in ${ms.toFixed(2)} ms, one call, no padding or resizing`);

  // Detection: 2,000 windows on one 256x60x80 map (the paper's 24-102x speed-up over R-CNN).
  const fm = randomMap(256, 60, 80);
  const windows = Array.from({ length: 2000 }, () => {
    const x0 = Math.floor(Math.random() * 70), y0 = Math.floor(Math.random() * 50);
    return [0, x0, y0, Math.min(79, x0 + 2 + Math.floor(Math.random() * 38)), Math.min(59, y0 + 2 + Math.floor(Math.random() * 28))];
  });
  t0 = process.hrtime.bigint();
  const wf = await sp.spp(fm, { windows });
  ms = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(`SPP over ${windows.length} windows of one 256x60x80 map -> [${wf.shape.join(', ')}] in ${ms.toFixed(2)} ms`);

  const first = (await wf.data()).slice(0, 5);
  console.log(`  window 0, first features: ${Array.from(first, (v) => v.toFixed(3)).join(' ')}`);
  [batch, feats, fm, wf].forEach((t) => t.dispose());
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
