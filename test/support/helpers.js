'use strict';
const { expect } = require('chai');
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
 * The CPU's Winograd path from `channels` input and output channels on (its default, 160, keeps
 * small test layers on im2col): returns the function that restores the setting. The addon reads
 * SPPNET_WINOGRAD_MIN_CHANNELS at each call.
 */
function winogradFrom(channels) {
  const saved = process.env.SPPNET_WINOGRAD_MIN_CHANNELS;
  process.env.SPPNET_WINOGRAD_MIN_CHANNELS = String(channels);
  return () => {
    if (saved === undefined) delete process.env.SPPNET_WINOGRAD_MIN_CHANNELS;
    else process.env.SPPNET_WINOGRAD_MIN_CHANNELS = saved;
  };
}

module.exports = { sp, cudaStatus, expectClose, expectReject, settledMemory, winogradFrom };
