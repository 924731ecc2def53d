'use strict';
// The load generator of bench/load.js, run as a child process (fork) so that autocannon's own CPU
// time and memory stay off the server's event loop and out of its RSS. Over IPC ('advanced'
// serialization, so Buffers pass as they are):
//   parent -> { type: 'images', images: [{ body: Buffer, contentType }] }   the pool, once
//   parent -> { type: 'run', id, url, connections, durationS, maxRequests, timeoutS }
//   child  -> { type: 'result', id, result }  or  { type: 'error', id, message }
// Each request POSTs one image of the pool (round robin, offset per connection) to `url`.
// A point ends at whichever comes first: `maxRequests` responses (autocannon's `amount`) or
// `durationS` seconds (then tracker.stop()). Latencies are taken from autocannon's 'response'
// event (hrtime, sub-millisecond), successful (2xx) responses only.
const autocannon = require('autocannon');

let images = [];

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

function runPoint(o) {
  return new Promise((resolve, reject) => {
    let next = 0;
    const lat = [];
    const codes = {};
    const t0 = process.hrtime.bigint();
    const inst = autocannon(
      {
        url: o.url,
        connections: o.connections,
        amount: Math.max(o.maxRequests, o.connections),
        timeout: o.timeoutS,
        sampleInt: 200,
        requests: [
          {
            method: 'POST',
            setupRequest: (req) => {
              const img = images[next++ % images.length];
              return { ...req, body: img.body, headers: { 'content-type': img.contentType } };
            },
          },
        ],
      },
      (err, res) => {
        clearTimeout(timer);
        if (err) return reject(err);
        const elapsedS = Number(process.hrtime.bigint() - t0) / 1e9;
        lat.sort((a, b) => a - b);
        const ok = lat.length;
        const completed = Object.values(codes).reduce((a, b) => a + b, 0);
        resolve({
          connections: o.connections,
          elapsedS,
          completed,
          sent: res.requests?.sent ?? null,
          ok,
          non2xx: res.non2xx,
          errors: res.errors,
          timeouts: res.timeouts,
          resets: res.resets,
          statusCodes: codes,
          reqPerS: completed / elapsedS,
          okPerS: ok / elapsedS,
          latencyMs: {
            mean: ok ? lat.reduce((a, b) => a + b, 0) / ok : null,
            min: lat[0] ?? null,
            p50: percentile(lat, 50),
            p90: percentile(lat, 90),
            p99: percentile(lat, 99),
            max: lat[ok - 1] ?? null,
          },
          stoppedBy: completed >= o.maxRequests ? 'request cap' : 'duration',
        });
      },
    );
    inst.on('response', (_client, statusCode, _bytes, responseTime) => {
      codes[statusCode] = (codes[statusCode] ?? 0) + 1;
      if (statusCode >= 200 && statusCode < 300) lat.push(responseTime);
    });
    const timer = setTimeout(() => inst.stop(), o.durationS * 1000);
  });
}

process.on('message', (m) => {
  if (m.type === 'images') {
    images = m.images.map((x) => ({ body: Buffer.from(x.body), contentType: x.contentType }));
    process.send({ type: 'ready', images: images.length });
  } else if (m.type === 'run') {
    runPoint(m).then(
      (result) => process.send({ type: 'result', id: m.id, result }),
      (e) => process.send({ type: 'error', id: m.id, message: e.message }),
    );
  } else if (m.type === 'exit') process.exit(0);
});
process.on('disconnect', () => process.exit(0));
process.send({ type: 'hello', pid: process.pid, autocannon: require('autocannon/package.json').version });
