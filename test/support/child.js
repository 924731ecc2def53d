'use strict';
// Child processes in the tests: spawnSync with a time limit, through test/support/watchdog.js,
// which prints what a child that outlives its limit is doing (its threads, their kernel and
// native stacks) before it kills it. Returns spawnSync's result, with timedOut set when the
// watchdog stopped the child (status 124; its report is at the end of stderr).
const { spawn, spawnSync } = require('child_process');
const path = require('path');

const watchdog = path.join(__dirname, 'watchdog.js');

/** runChild(file, args, { timeout = 120000, ...spawnSync options }) */
function runChild(file, args = [], options = {}) {
  const { timeout = 120000, ...rest } = options;
  const r = spawnSync(process.execPath, [watchdog, String(timeout), file, ...args], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    ...rest,
    timeout: timeout + 120000, // the watchdog's own report and kill take well under this
  });
  r.timedOut = r.status === 124 && /\[watchdog\]/.test(r.stderr || '');
  return r;
}

/** runNode(args, options): runChild with this Node. */
const runNode = (args, options) => runChild(process.execPath, args, options);

/**
 * startServe(args): `sppnet serve ...args` (SPPNET_DEVICE=cpu) in a child process, once it listens:
 * { child, url, output() } (output: its stdout and stderr so far). Rejects with that output if it
 * exits first.
 */
async function startServe(args) {
  const cli = path.join(__dirname, '..', '..', 'bin', 'sppnet.js');
  const child = spawn(process.execPath, [cli, 'serve', ...args], { env: { ...process.env, SPPNET_DEVICE: 'cpu' } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const url = await new Promise((resolve, reject) => {
    const iv = setInterval(() => {
      const m = out.match(/on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) {
        clearInterval(iv);
        resolve(m[1]);
      }
    }, 20);
    child.once('exit', () => {
      clearInterval(iv);
      reject(new Error(`server exited: ${out}`));
    });
  });
  return { child, url, output: () => out };
}

module.exports = { runChild, runNode, startServe };
