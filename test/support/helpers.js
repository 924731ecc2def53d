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

/**
 * For a test that needs the addon loaded with other settings (the CPU kernels read theirs from the
 * environment once, at the load: cpu/settings.h): in the test process, runs this one test again
 * in a child mocha with `env` added and checks that it passed there, then returns true (the caller
 * returns); in that child (where `env` is already set), returns false and the caller runs its body.
 * `ctx` is the test's `this`, `file` its file (__filename).
 */
function inChildWith(ctx, file, env) {
  if (hasEnv(env)) return false;
  const out = mochaChild(file, `^${escapeRegExp(ctx.test.fullTitle())}$`, env);
  expect(out, `in a child with ${JSON.stringify(env)}: exactly this test ran`).to.match(/\b1 passing\b/);
  return true;
}

/**
 * describe(title, body) with the addon loaded with `env` added (see inChildWith): in the test
 * process, a block of one test that runs this block's tests in a child mocha and checks that
 * they all passed there; in that child, the block itself.
 */
function describeInChildWith(env, file, title, body) {
  if (hasEnv(env)) return describe(title, body);
  return describe(title, function () {
    it(`every test of the block, in a child with ${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')}`, function () {
      this.timeout(1800000);
      const out = mochaChild(file, `^${escapeRegExp(title)} `, env);
      const passed = out.match(/(\d+) passing/);
      expect(passed && Number(passed[1]), `in a child with ${JSON.stringify(env)}: tests ran\n${out}`).to.be.greaterThan(0);
      expect(out).to.not.match(/\d+ failing/);
    });
  });
}

const hasEnv = (env) => Object.entries(env).every(([k, v]) => process.env[k] === v);
const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Runs the tests of `file` whose full titles match `grep` in a child mocha with `env` added; fails unless it exits 0; returns its output. */
function mochaChild(file, grep, env) {
  const { runNode } = require('./child');
  const root = path.join(__dirname, '..', '..');
  const mocha = path.join(root, 'node_modules', 'mocha', 'bin', 'mocha.js');
  const r = runNode(['--expose-gc', mocha, '--reporter', 'spec', '--timeout', '600000', '--grep', grep, file],
    { cwd: root, env: { ...process.env, ...env }, timeout: 1700000 });
  const out = `${r.stdout}${r.stderr}`;
  expect(r.status, `in a child with ${JSON.stringify(env)}:\n${out}`).to.equal(0);
  return out;
}

/** inChildWith() for the CPU's Winograd path from 32 input and output channels (its default, 160, keeps small test layers on im2col). */
const WINOGRAD_FROM_32 = { SPPNET_WINOGRAD_MIN_CHANNELS: '32' };

module.exports = { sp, cudaStatus, expectClose, expectReject, settledMemory, inChildWith, describeInChildWith, WINOGRAD_FROM_32 };
