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

module.exports = { sp, cudaStatus, expectClose, expectReject };
