'use strict';
// Memory bandwidth of this machine, measured as a plain copy: Float32Array.prototype.set of a
// large buffer (V8 turns it into a memmove). The figure counts the bytes read plus the bytes
// written, the convention of the PyTorch anchor's "d2d copy" (2 * bytes / time), so that
// "input bytes / bandwidth" is the time to stream the input through the memory system once.
// With threads > 1 the copy is split into equal slices, one per worker_thread, over
// SharedArrayBuffers; the time is from posting 'go' to the last worker's 'done'.
const { Worker } = require('worker_threads');
const { percentile } = require('./common');

const WORKER_SRC = `
const { parentPort, workerData } = require('worker_threads');
const { src, dst, lo, hi } = workerData;
const s = new Float32Array(src, lo * 4, hi - lo), d = new Float32Array(dst, lo * 4, hi - lo);
parentPort.on('message', (m) => {
  if (m === 'go') { d.set(s); parentPort.postMessage('done'); } else parentPort.close();
});
parentPort.postMessage('ready');
`;

const once = (w, what) => new Promise((resolve, reject) => {
  const onMsg = (m) => { if (m === what) { w.off('error', reject); resolve(); } else reject(new Error(`membw worker said ${m}`)); };
  w.once('message', onMsg);
  w.once('error', reject);
});

/**
 * Copy bandwidth in bytes/s (read + write), best of `reps` timed copies after one untimed copy.
 * Best rather than median: the floor derived from it must be a lower bound on time.
 */
async function copyBandwidth({ mib = 256, threads = 1, reps = 7 } = {}) {
  const n = (mib * 2 ** 20) / 4;
  const src = new SharedArrayBuffer(n * 4), dst = new SharedArrayBuffer(n * 4);
  new Float32Array(src).fill(1); // touch every page before timing
  new Float32Array(dst).fill(0);
  const times = [];
  if (threads <= 1) {
    const s = new Float32Array(src), d = new Float32Array(dst);
    for (let r = 0; r <= reps; r++) {
      const t0 = process.hrtime.bigint();
      d.set(s);
      if (r > 0) times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
  } else {
    const workers = [];
    for (let i = 0; i < threads; i++) {
      const lo = Math.floor((i * n) / threads), hi = Math.floor(((i + 1) * n) / threads);
      const w = new Worker(WORKER_SRC, { eval: true, workerData: { src, dst, lo, hi } });
      const ready = once(w, 'ready');
      workers.push(w);
      await ready;
    }
    try {
      for (let r = 0; r <= reps; r++) {
        const done = workers.map((w) => once(w, 'done'));
        const t0 = process.hrtime.bigint();
        workers.forEach((w) => w.postMessage('go'));
        await Promise.all(done);
        if (r > 0) times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      }
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
  }
  const bytes = 2 * n * 4;
  return { mib, threads, reps, bestBytesPerS: bytes / Math.min(...times), medianBytesPerS: bytes / percentile(times, 0.5) };
}

module.exports = { copyBandwidth };
