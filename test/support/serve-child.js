'use strict';
// A service in a process of its own, so that a test can read its memory: forked by the tests with
// the server's options as JSON in argv[2] (plus "arch"), it answers over IPC:
//   { type: 'ready', url }                        once it listens on 127.0.0.1
//   -> { type: 'mem' }          <- { type: 'mem', rss, peak }   (bytes; peak = VmHWM on Linux)
//   -> { type: 'resetPeak' }    <- { type: 'resetPeak', ok }    (the peak restarts from now)
//   -> { type: 'stats' }        <- { type: 'stats', stats }     (the batching runner's)
//   -> { type: 'exit' }
const fs = require('fs');
const sp = require('../../dist');

const opts = JSON.parse(process.argv[2] || '{}');

/** Resident set now and its high-water mark since the last reset, from /proc (sampled where there is none). */
let sampledPeak = 0;
const sampler = setInterval(() => (sampledPeak = Math.max(sampledPeak, process.memoryUsage.rss())), 5);
sampler.unref();
function mem() {
  const rss = process.memoryUsage.rss();
  try {
    const m = fs.readFileSync('/proc/self/status', 'utf8').match(/^VmHWM:\s+(\d+) kB/m);
    if (m) return { rss, peak: Number(m[1]) * 1024 };
  } catch {}
  return { rss, peak: Math.max(sampledPeak, rss) };
}
function resetPeak() {
  sampledPeak = 0;
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5'); // resets VmHWM to the current RSS
    return true;
  } catch {
    return false;
  }
}

(async () => {
  const arch = opts.arch ?? 'zf5';
  delete opts.arch;
  const model = await sp.loadModel({ arch, classes: 10, seed: 1, device: 'cpu' });
  const srv = await sp.createServer({ model, ...opts });
  const url = await srv.app.listen({ port: 0, host: '127.0.0.1' });
  process.on('message', async (m) => {
    if (m.type === 'mem') process.send({ type: 'mem', ...mem() });
    else if (m.type === 'resetPeak') process.send({ type: 'resetPeak', ok: resetPeak() });
    else if (m.type === 'stats') process.send({ type: 'stats', stats: srv.runner.stats() });
    else if (m.type === 'exit') {
      await srv.close();
      model.dispose();
      process.exit(0);
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.send({ type: 'ready', url });
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
