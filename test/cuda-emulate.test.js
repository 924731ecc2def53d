'use strict';
// Every CUDA kernel of cuda/, compiled for the CPU from its own source against tools/emu's model
// of the CUDA runtime (a fiber per CUDA thread in a seeded random order between barriers, poisoned
// shared memory, guard pages, the tensor cores' truncating MMA), run through the cuda:: entry
// points against the CPU backend and float64 references with a fresh seed: the CUDA path's
// arithmetic, indexing and barriers are checked on every machine, GPU or not. Built by
// `npm install` (build/tools/cuda_emulate).
const { expect } = require('chai');
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { freshSeed } = require('./support/reference');
const { globalsInSource, kernelsInCudaLibrary, launchedKernels } = require('./support/cuda-kernels');

const root = path.join(__dirname, '..');
const bin = path.join(root, 'build', 'tools', 'cuda_emulate');

describe('CUDA kernels under CPU emulation', function () {
  this.timeout(600000);
  let out = '';
  let seed;

  before(function () {
    expect(fs.existsSync(bin), `${bin} is built by npm install`).to.equal(true);
    seed = freshSeed();
    try {
      out = execFileSync(bin, [String(seed)], { encoding: 'utf8', maxBuffer: 64 << 20 });
    } catch (e) {
      throw new Error(`cuda_emulate failed (seed ${seed}; rerun: ${bin} ${seed}):\n${e.stdout || ''}${e.stderr || ''}`);
    }
  });

  it('agree with the CPU backend and float64: SPP (every rule, windows, ties, NaN, beyond shared memory), conv and linear (direct and every tensor-core mode, split-K, long same-sign K), pooling, LRN, softmax, losses, optimizers, backward passes', function () {
    const fails = out.split('\n').filter((l) => l.startsWith('FAIL'));
    expect(fails, `seed ${seed}`).to.deep.equal([]);
    expect(out, `seed ${seed}`).to.match(/all cases passed: 0 failure\(s\) of \d+ cases/);
    expect(out.match(/^ok /gm).length).to.be.at.least(70);
  });

  it('ran every __global__ kernel in cuda/, and every instantiation nvcc compiled', function () {
    const launched = launchedKernels(out);
    const globals = globalsInSource();
    expect(globals.size, 'kernels found in cuda/').to.be.at.least(20);
    const base = new Set(launched.map((k) => k.replace(/<.*$/, '').replace(/^.*::/, '')));
    const missing = [...globals].filter((g) => !base.has(g));
    expect(missing, 'kernels in cuda/ that no emulated case launched').to.deep.equal([]);
    const compiled = kernelsInCudaLibrary(globals);
    if (!compiled) {
      console.log('      (no CUDA backend in this build: checked the kernels\' names in cuda/ only)');
      return;
    }
    const notRun = [...compiled].filter((k) => !launched.includes(k));
    expect(notRun, 'instantiations in build/libsppnet_cuda.a that no emulated case launched').to.deep.equal([]);
  });
});
