'use strict';
const { expect } = require('chai');
const path = require('path');
const sp = require('../../dist');

/** Whether the CUDA path can run here, and why not. */
function cudaStatus() {
  const b = sp.backend();
  return { ok: b.cuda.available, why: b.cuda.error || '' };
}

/** Compares a Float32Array with a reference (exact for max, tolerance for avg); NaN must match NaN. */
function expectClose(actual, expected, { rtol = 0, atol = 0, label = '' } = {}) {
  expect(actual.length, `${label} length`).to.equal(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(e)) {
      if (!Number.isNaN(a)) throw new Error(`${label} element ${i}: expected NaN, got ${a}`);
      continue;
    }
    if (a === e) continue;
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e)))
      throw new Error(`${label} element ${i}: expected ${e}, got ${a} (rtol ${rtol}, atol ${atol})`);
  }
}

async function expectReject(promiseOrFn, pattern, code) {
  let err;
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
  } catch (e) {
    err = e;
  }
  expect(err, `expected an error matching ${pattern}`).to.be.instanceOf(Error);
  expect(err.message).to.match(pattern);
  if (code) expect(err.code).to.equal(code);
  return err;
}

/**
 * sp.memory() once the tensors other code dropped without dispose() are collected (a full GC,
 * then the FinalizationRegistry callbacks): a count read after this moves only with what the test
 * does, not with older garbage the GC happens to collect meanwhile. Without --expose-gc (npm test
 * exposes it) it is sp.memory() as it stands.
 */
async function settledMemory() {
  if (typeof global.gc === 'function') {
    global.gc();
    for (let i = 0; i < 2; i++) await new Promise((res) => setImmediate(res));
  }
  return sp.memory();
}

// The environment the addon loaded with (its settings are fixed then: cpu/settings.h).
const LOADED_ENV = { ...process.env };
const loadedWith = (env) => Object.entries(env).every(([k, v]) => LOADED_ENV[k] === v);

/** In a child loaded with `env`: the settings sp.backend() reports agree with it (so the test does what it means to). */
function expectLoadedSettings(env) {
  const s = sp.backend().cpu.settings;
  if (env.SPPNET_WINOGRAD_MIN_CHANNELS !== undefined) expect(s.winogradMinChannels, 'SPPNET_WINOGRAD_MIN_CHANNELS in effect').to.equal(Number(env.SPPNET_WINOGRAD_MIN_CHANNELS));
}

/**
 * For a test that needs the addon loaded with other settings (the CPU kernels' are fixed at the
 * load: cpu/settings.h): in the test process, runs this one test again in a child mocha with `env`
 * added and checks that it passed there, then returns true (the caller returns); in that child
 * (loaded with `env`), checks that the settings are in effect and returns false: the caller runs
 * its body. `ctx` is the test's `this`, `file` its file (__filename).
 */
function inChildWith(ctx, file, env) {
  if (loadedWith(env)) {
    expectLoadedSettings(env);
    return false;
  }
  const results = mochaChild(file, `^${escapeRegExp(ctx.test.fullTitle())}$`, env, ctx.timeout());
  expect(results.size, `in a child with ${JSON.stringify(env)}: exactly this test ran`).to.equal(1);
  reportChild(results.get(ctx.test.fullTitle()), env);
  return true;
}

/**
 * describe(title, body) with the addon loaded with `env` added (see inChildWith). In the test
 * process: the block's tests run once in a child mocha (in a before hook), and each test of the
 * block is a test here too, with its result from the child (so -g, the reporter and the counts
 * see every test). In the child: the block itself, after a check that the settings are in effect.
 */
function describeInChildWith(env, file, title, body) {
  if (loadedWith(env))
    return describe(title, function () {
      before(() => expectLoadedSettings(env));
      body.call(this);
    });
  const titles = collectTitles(body);
  return describe(title, function () {
    let results;
    before(function () {
      this.timeout(20 * 60 * 1000);
      results = mochaChild(file, `^${escapeRegExp(title)} `, env, this.timeout());
    });
    for (const t of titles)
      it(t, function () {
        reportChild(results.get(`${title} ${t}`), env);
      });
  });
}

/** The full titles (below the block) of the tests a describe body defines, collected without running them. */
function collectTitles(body) {
  const names = ['describe', 'it', 'before', 'after', 'beforeEach', 'afterEach'];
  const saved = names.map((n) => global[n]);
  const titles = [];
  const prefix = [];
  const ctx = { timeout() {}, slow() {}, retries() {} };
  global.it = (t) => titles.push([...prefix, t].join(' '));
  global.describe = (t, b) => {
    prefix.push(t);
    b.call(ctx);
    prefix.pop();
  };
  for (const n of ['before', 'after', 'beforeEach', 'afterEach']) global[n] = () => {};
  try {
    body.call(ctx);
  } finally {
    names.forEach((n, k) => (global[n] = saved[k]));
  }
  return titles;
}

function reportChild(r, env) {
  if (!r) throw new Error(`in a child with ${JSON.stringify(env)}: this test did not run there`);
  if (r.state === 'passed') return;
  if (r.state === 'pending') return;
  const e = new Error(`in a child with ${JSON.stringify(env)}: ${r.err && r.err.message}\n${(r.err && r.err.stack) || ''}`);
  throw e;
}

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Runs the tests of `file` whose full titles match `grep` in a child mocha with `env` added, within
 * `timeout` ms (the caller's own limit); returns each test's result by full title ({ state, err }).
 * Fails with the child's output if it did not finish or wrote no results.
 */
function mochaChild(file, grep, env, timeout) {
  const fs = require('fs');
  const os = require('os');
  const { runNode } = require('./child');
  const root = path.join(__dirname, '..', '..');
  const mocha = path.join(root, 'node_modules', 'mocha', 'bin', 'mocha.js');
  const json = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-child-')), 'results.json');
  const limit = Math.max(30000, (timeout > 0 ? timeout : 600000) - 15000);
  const r = runNode(['--expose-gc', mocha, '--reporter', 'json', '--reporter-option', `output=${json}`, '--timeout', String(limit), '--grep', grep, file],
    { cwd: root, env: { ...process.env, ...env }, timeout: limit });
  const out = `${r.stdout}${r.stderr}`;
  if (!fs.existsSync(json)) throw new Error(`in a child with ${JSON.stringify(env)}: no results (status ${r.status}${r.timedOut ? ', timed out' : ''}):\n${out.slice(-4000)}`);
  const res = JSON.parse(fs.readFileSync(json, 'utf8'));
  fs.rmSync(path.dirname(json), { recursive: true, force: true });
  const results = new Map();
  for (const t of res.passes) results.set(t.fullTitle, { state: 'passed' });
  for (const t of res.pending) results.set(t.fullTitle, { state: 'pending' });
  for (const t of res.failures) results.set(t.fullTitle, { state: 'failed', err: { message: `${t.err.message}\n(child output:)\n${out.slice(-3000)}`, stack: t.err.stack } });
  return results;
}

const WINOGRAD_FROM_32 = { SPPNET_WINOGRAD_MIN_CHANNELS: '32' };

module.exports = { sp, cudaStatus, expectClose, expectReject, settledMemory, inChildWith, describeInChildWith, WINOGRAD_FROM_32 };
