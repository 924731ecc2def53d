'use strict';
// The CUDA tensor-core kernels (cuda/gemm_tc_kernels.cuh), compiled for the CPU by
// tools/tc_emulate.cpp (a fiber per CUDA thread, mma.sync emulated from the PTX fragment layouts),
// run on ragged conv batches and GEMMs in every math mode with a fresh seed: their indexing is
// checked on every machine, GPU or not. Built by `npm install` (build/tools/tc_emulate).
const { expect } = require('chai');
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { freshSeed } = require('./support/reference');

describe('tensor-core kernels under CPU emulation', function () {
  this.timeout(300000);
  it('agree with float64 within each mode\'s tolerance: ragged conv (1x1 maps to 40x33, groups, dilation, NaN/Inf), split-K GEMM', function () {
    const bin = path.join(__dirname, '..', 'build', 'tools', 'tc_emulate');
    expect(fs.existsSync(bin), `${bin} is built by npm install`).to.equal(true);
    const seed = freshSeed();
    let out;
    try {
      out = execFileSync(bin, [String(seed)], { encoding: 'utf8' });
    } catch (e) {
      throw new Error(`tc_emulate failed (seed ${seed}):\n${e.stdout || ''}${e.stderr || ''}`);
    }
    expect(out).to.match(/all cases passed: 0 failure\(s\)/);
    expect(out.match(/^ok /gm)).to.have.length(24);
  });
});
