'use strict';
// node test/support/watchdog.js LIMIT_MS FILE [ARGS...]: runs FILE ARGS with the watchdog's stdio
// and exits as it exits. If it is still running after LIMIT_MS, prints to stderr what every
// thread of it and of its descendants is doing (name, state, kernel wait channel, the kernel
// stack where readable, and the native stacks from gdb or cuda-gdb where either exists), then
// kills them all and exits 124. Used through test/support/child.js, so that a child process that
// hangs fails its test and says where, instead of hanging the suite (spawnSync without a timeout
// blocks mocha's own timeouts too).
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');

const [limitArg, file, ...args] = process.argv.slice(2);
const limit = Number(limitArg);
const child = spawn(file, args, { stdio: 'inherit' });
const read = (p) => {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return '';
  }
};

function descendants(root) {
  const kids = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const stat = read(`/proc/${d}/stat`);
    const m = /\) \S+ (\d+)/.exec(stat);
    if (!m) continue;
    const ppid = Number(m[1]);
    if (!kids.has(ppid)) kids.set(ppid, []);
    kids.get(ppid).push(Number(d));
  }
  const out = [];
  const walk = (p) => {
    out.push(p);
    for (const k of kids.get(p) || []) walk(k);
  };
  walk(root);
  return out;
}

function debugger_() {
  for (const g of ['gdb', '/usr/local/cuda/bin/cuda-gdb', 'cuda-gdb']) {
    const r = spawnSync('bash', ['-c', `command -v ${g}`], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return null;
}

function report(pid) {
  const lines = [`[watchdog] process ${pid}: ${read(`/proc/${pid}/cmdline`).replace(/\0/g, ' ').slice(0, 300)}`];
  let tasks = [];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return lines.concat('[watchdog]   (gone)');
  }
  for (const t of tasks) {
    const stat = read(`/proc/${pid}/task/${t}/stat`);
    const state = (/\) (\S)/.exec(stat) || [])[1] || '?';
    const stack = read(`/proc/${pid}/task/${t}/stack`).split('\n').slice(0, 6).map((l) => l.replace(/^\[<[0-9a-f]+>\] /, '')).join(' < ');
    lines.push(`[watchdog]   thread ${t} ${read(`/proc/${pid}/task/${t}/comm`)} state ${state} wchan ${read(`/proc/${pid}/task/${t}/wchan`) || '-'}${stack ? ` kernel: ${stack}` : ''}`);
  }
  const gdb = debugger_();
  if (gdb) {
    const r = spawnSync(gdb, ['-p', String(pid), '-batch', '-nx', '-ex', 'set pagination off', '-ex', 'thread apply all bt 25'], { encoding: 'utf8', timeout: 60000, maxBuffer: 32 << 20 });
    const bt = `${r.stdout || ''}${r.stderr || ''}`
      .split('\n')
      .filter((l) => /^(Thread|#)/.test(l))
      .join('\n');
    lines.push(`[watchdog]   native stacks (${gdb}):\n${bt || `(none: ${(r.stderr || r.error || '').toString().trim().split('\n').pop()})`}`);
  } else lines.push('[watchdog]   native stacks: no gdb or cuda-gdb on this machine');
  return lines;
}

const timer = setTimeout(() => {
  const pids = descendants(child.pid);
  process.stderr.write(`\n[watchdog] ${file} ${args.join(' ').slice(0, 200)}: still running after ${limit} ms; what it is doing:\n`);
  for (const p of pids) process.stderr.write(report(p).join('\n') + '\n');
  for (const p of pids.reverse()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {}
  }
  process.exitCode = 124;
  child.removeAllListeners('exit');
  child.once('exit', () => process.exit(124));
}, limit);

child.on('error', (e) => {
  clearTimeout(timer);
  process.stderr.write(`[watchdog] cannot run ${file}: ${e.message}\n`);
  process.exit(127);
});
child.on('exit', (code, signal) => {
  clearTimeout(timer);
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
    setTimeout(() => process.exit(128), 1000);
  } else process.exit(code);
});
