'use strict';
// The CUDA path of lib/ and the binding, without a GPU: the suite runs with SPPNET_DEVICE=cuda on
// the emulated device (build/Release/sppnet_emu.node, loaded with SPPNET_CUDA_EMULATOR=1: the
// same binding with cuda/*.cu compiled for the CPU against tools/emu), as scripts/gpu-run.sh runs
// it on a GPU; and scripts/gpu-touch.js, compute-sanitizer's target there, must launch every
// kernel instantiation nvcc compiled. What only a GPU can show (timing, the hardware's own
// rounding, races inside one thread's run between barriers) stays for gpu-run.sh.
// Skipped inside an unpacked GPU bundle (SPPNET_IN_BUNDLE: a real device runs the suite there) and
// inside its own child run.
const { expect } = require('chai');
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { kernelsInCudaLibrary, launchedKernels } = require('./support/cuda-kernels');

const root = path.join(__dirname, '..');
// Test files whose work does not depend on the device (tools, child processes on the CPU, the
// bundle) stay out: they ran once already.
const DEVICE_FREE = new Set(['bundle.test.js', 'cuda-emulate.test.js', 'cuda-emulated.test.js', 'cli.test.js', 'bench-load.test.js', 'gpu-scripts.test.js', 'readme.test.js']);

describe('the CUDA path on the emulated device', function () {
  this.timeout(30 * 60 * 1000);
  const env = { ...process.env, SPPNET_CUDA_EMULATOR: '1', SPPNET_DEVICE: 'cuda', SPPNET_EMU_MEMORY_MB: '4096' };

  before(function () {
    if (process.env.SPPNET_IN_BUNDLE || process.env.SPPNET_CUDA_EMULATOR) {
      console.log('      (skipped: inside a GPU bundle, or already on the emulated device)');
      return this.skip();
    }
    const addon = path.join(root, 'build', 'Release', 'sppnet_emu.node');
    expect(fs.existsSync(addon), `${addon} is built by npm install`).to.equal(true);
  });

  it('the test suite passes with SPPNET_DEVICE=cuda, none of its CUDA tests skipped', function () {
    const files = fs.readdirSync(__dirname).filter((f) => f.endsWith('.test.js') && !DEVICE_FREE.has(f)).map((f) => path.join('test', f));
    const mocha = path.join(root, 'node_modules', 'mocha', 'bin', 'mocha.js');
    // The ablation trains three models on the CPU whatever the device: it ran once already.
    const args = ['--expose-gc', mocha, '--reporter', './test/support/reporter.js', '--timeout', '600000', '--grep', 'the ablation runs end to end', '--invert', ...files];
    const t0 = Date.now();
    const r = spawnSync(process.execPath, args, { cwd: root, env, encoding: 'utf8', maxBuffer: 256 << 20, timeout: 28 * 60 * 1000 });
    const out = `${r.stdout}${r.stderr}`;
    const summary = (out.match(/^(\d+) passed, (\d+) failed, (\d+) skipped$/m) || [])[0];
    console.log(`      ${files.length} files on the emulated device in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${summary || 'no summary line'}`);
    const tail = out.split('\n').slice(-80).join('\n');
    expect(summary, `the suite did not finish (status ${r.status}${r.signal ? `, ${r.signal}` : ''}):\n${tail}`).to.be.a('string');
    const [, passed, failed] = summary.match(/^(\d+) passed, (\d+) failed/).map(Number);
    expect(failed, `failures on the emulated device:\n${tail}`).to.equal(0);
    expect(r.status).to.equal(0);
    expect(passed).to.be.at.least(150);
    expect(out, 'the CUDA tests ran').to.not.match(/CUDA tests skipped/);
    expect(out).to.match(/sppnet CUDA emulator \(CPU\)/);
  });

  it('scripts/gpu-touch.js checks every op on it and launches every kernel nvcc compiled', function () {
    const log = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-touch-')), 'launches.txt');
    // 8 multiprocessors: the script sizes its 128-row-tile and split-K cases from the SM count.
    const r = spawnSync(process.execPath, [path.join('scripts', 'gpu-touch.js')], {
      cwd: root, env: { ...env, SPPNET_EMU_SMS: '8', SPPNET_EMU_LAUNCHES: log }, encoding: 'utf8', timeout: 10 * 60 * 1000,
    });
    const out = `${r.stdout}${r.stderr}`;
    expect(r.status, out).to.equal(0);
    expect(out).to.match(/gpu-touch: \d+ ops on cuda, 0 failed/);
    const launched = launchedKernels(fs.readFileSync(log, 'utf8'));
    const compiled = kernelsInCudaLibrary();
    if (!compiled) {
      console.log('      (no CUDA backend in this build: launches not compared with the compiled kernels)');
      return;
    }
    expect([...compiled].filter((k) => !launched.includes(k)), 'kernels gpu-touch.js never launches').to.deep.equal([]);
  });
});
