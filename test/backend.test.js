'use strict';
// Device policy: SPPNET_DEVICE=auto|cpu|cuda, and backend() saying which path runs and why.
const { expect } = require('chai');
const { runNode } = require('./support/child');
const path = require('path');
const { sp, expectReject } = require('./support/helpers');

const root = path.resolve(__dirname, '..');
function inChild(env, code) {
  const r = runNode(['-e', code], { cwd: root, env: { ...process.env, ...env }, timeout: 60000 });
  return { status: r.status, out: r.stdout.trim(), err: r.stderr.trim() };
}

describe('backend()', function () {
  it('reports the device, the reason and the details', function () {
    const b = sp.backend();
    expect(b.device).to.be.oneOf(['cpu', 'cuda']);
    expect(b.reason).to.be.a('string').and.not.empty;
    expect(b.cpu.threads).to.be.at.least(1);
    expect(b.cpu.isa).to.be.oneOf(['avx512', 'avx2', 'portable']);
    expect(b.cuda.built).to.be.a('boolean');
    if (b.cuda.available) {
      expect(b.cuda.name).to.be.a('string').and.not.empty;
      expect(b.cuda.computeCapability).to.match(/^\d+\.\d+$/);
    } else {
      expect(b.cuda.error).to.be.a('string').and.not.empty;
      if (b.policy === 'auto') expect(b.reason).to.match(/^auto: using the CPU because /);
    }
    console.log(`      backend: ${b.device} (${b.reason})`);
  });

  it('SPPNET_DEVICE=cpu picks the CPU whatever the build', function () {
    const r = inChild({ SPPNET_DEVICE: 'cpu' }, "const sp=require('./dist'); const b=sp.backend(); console.log(b.device, b.reason, sp.tensor([1],[1]).device)");
    expect(r.status).to.equal(0);
    expect(r.out).to.equal('cpu SPPNET_DEVICE=cpu cpu');
  });

  it('SPPNET_DEVICE=cuda without a usable device is an error that says why', function () {
    if (sp.backend().cuda.available) this.skip();
    const r = inChild({ SPPNET_DEVICE: 'cuda' }, "const sp=require('./dist'); try { sp.tensor([1],[1]); console.log('no error') } catch (e) { console.log(e.code + ' ' + e.message) }");
    expect(r.out).to.match(/^SPPNET_UNAVAILABLE SPPNET_DEVICE=cuda, but CUDA is unavailable: .+/);
  });

  it('an unknown SPPNET_DEVICE is an error naming the variable', function () {
    const r = inChild({ SPPNET_DEVICE: 'gpu0' }, "const sp=require('./dist'); try { sp.backend(); console.log('no error') } catch (e) { console.log(e.message) }");
    expect(r.out).to.equal(`SPPNET_DEVICE must be 'auto', 'cpu' or 'cuda', got "gpu0"`);
  });

  it('memory() counts live device buffers', function () {
    const m = sp.memory();
    expect(m.deviceBuffers).to.be.a('number');
    expect(m.deviceBytes).to.be.a('number');
  });

  it('measureCpuPeak times FMA chains on the kernels\' ISA, one figure per thread, and rejects bad options', async function () {
    const isa = sp.backend().cpu.isa;
    const one = await sp.measureCpuPeak({ threads: 1, seconds: 0.05 });
    expect(one.isa).to.equal(isa);
    expect(one.perThread).to.have.length(1);
    // Any core does at least a few FP32 FLOP per ns; none does 1000 (a broken loop or timer would).
    expect(one.gflops).to.be.within(1, 1000);
    const two = await sp.measureCpuPeak({ threads: 2, seconds: 0.05 });
    expect(two.perThread).to.have.length(2);
    expect(two.gflops).to.be.closeTo(two.perThread[0] + two.perThread[1], 1e-9);
    await expectReject(sp.measureCpuPeak({ threads: 0 }), /opts.threads must be an integer in \[1, 1024\], got 0/);
    await expectReject(sp.measureCpuPeak({ seconds: -1 }), /opts.seconds must be a number in \(0, 10\], got -1/);
  });
});
