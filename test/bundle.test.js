'use strict';
// The GPU bundle as a GPU host without Node.js gets it: scripts/gpu-bundle.sh builds .gpu/,
// scripts/gpu-carry.sh copies what the device tool carries (the working tree's tracked and
// untracked-not-ignored files, and .gpu) into an empty folder outside the repo, and there
// scripts/gpu-env.sh unpacks it exactly as scripts/gpu-run.sh does on the GPU host. Everything
// then runs with the bundled node and nothing else: PATH holds only basic tools (no node), HOME
// is empty, no NODE_PATH, and no node_modules above the folder. There: require('./dist') and
// every package from the bundle, the standalone check, gpu-run.sh stopping in its preflight
// (no GPU here) within 60 s with the reason, and the whole suite on the CPU.
// Skipped inside an unpacked bundle (SPPNET_IN_BUNDLE, set by gpu-env.sh): no recursion, and no
// bundle to build on the GPU host.
const { expect } = require('chai');
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { sp } = require('./support/helpers');

const root = path.resolve(__dirname, '..');
// What the scripts and the tests call besides node (a GPU host has these).
const TOOLS = ['bash', 'sh', 'env', 'cat', 'cp', 'mv', 'rm', 'mkdir', 'chmod', 'ls', 'tar', 'xz', 'sha256sum', 'grep', 'sed', 'awk',
  'head', 'tail', 'cut', 'tr', 'wc', 'sort', 'date', 'uname', 'stat', 'timeout', 'mktemp', 'dirname', 'basename', 'sleep', 'tee', 'touch', 'xargs', 'find'];

describe('GPU bundle, unpacked outside the repo with nothing but itself', function () {
  this.timeout(15 * 60 * 1000);
  let tmp, tree, env;

  // bash -c SCRIPT in the carried tree, with the bundle's environment only.
  const inTree = (script, extraEnv = {}, timeout = 14 * 60 * 1000) => {
    const t0 = Date.now();
    const r = spawnSync(path.join(tmp, 'bin', 'bash'), ['-c', `set -uo pipefail; ${script}`], { cwd: tree, env: { ...env, ...extraEnv }, encoding: 'utf8', timeout, maxBuffer: 64 << 20 });
    return { status: r.status, out: `${r.stdout}${r.stderr}`, seconds: (Date.now() - t0) / 1000, error: r.error };
  };

  before(function () {
    if (process.env.SPPNET_IN_BUNDLE) {
      console.log('      bundle tests skipped: this suite runs from an unpacked bundle (SPPNET_IN_BUNDLE)');
      return this.skip();
    }
    const b = sp.backend();
    if (!b.cuda.built) {
      console.log(`      bundle tests skipped: the addon has no CUDA backend to bundle (${b.cuda.error})`);
      return this.skip();
    }
    // The build as it is (a test does not rebuild the project): gpu-bundle.sh fails if sources are newer.
    // The PyTorch anchor comes from ../shared/anchors beside a developer's checkout; a clone without
    // it (CI) bundles none (the GPU benchmarks then have no stored anchor to compare with).
    const anchors = fs.existsSync(path.join(root, '..', 'shared', 'anchors', 'torch_anchor.py')) ? {} : { SPPNET_ANCHORS: 'none' };
    const built = spawnSync('bash', ['scripts/gpu-bundle.sh'], {
      cwd: root, encoding: 'utf8', timeout: 10 * 60 * 1000, env: { ...process.env, SPPNET_BUNDLE_NO_BUILD: '1', ...anchors },
    });
    expect(built.status, `gpu-bundle.sh failed:\n${built.stdout}${built.stderr}`).to.equal(0);
    console.log(built.stdout.split('\n').filter((l) => /archs|MiB|^\s+\d+\t/.test(l)).map((l) => `      ${l}`).join('\n'));

    tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-bundle-')));
    expect(path.relative(root, tmp).startsWith('..'), 'the folder must lie outside the repo').to.equal(true);
    for (let d = tmp; d !== path.dirname(d); d = path.dirname(d))
      expect(fs.existsSync(path.join(path.dirname(d), 'node_modules')), `${path.dirname(d)}/node_modules would be found by require()`).to.equal(false);
    tree = path.join(tmp, 'tree');
    const carried = spawnSync('bash', ['scripts/gpu-carry.sh', tree], { cwd: root, encoding: 'utf8' });
    expect(carried.status, carried.stderr).to.equal(0);
    for (const d of ['node_modules', 'build', 'dist']) expect(fs.existsSync(path.join(tree, d)), `${d} must not be carried`).to.equal(false);

    fs.mkdirSync(path.join(tmp, 'bin'));
    fs.mkdirSync(path.join(tmp, 'home'));
    fs.mkdirSync(path.join(tmp, 'tmp'));
    for (const t of TOOLS) {
      const found = spawnSync('bash', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim();
      if (found.startsWith('/')) fs.symlinkSync(found, path.join(tmp, 'bin', t));
    }
    expect(fs.existsSync(path.join(tmp, 'bin', 'node'))).to.equal(false);
    env = { PATH: path.join(tmp, 'bin'), HOME: path.join(tmp, 'home'), TMPDIR: path.join(tmp, 'tmp'), LANG: 'C.UTF-8' };
  });

  after(function () {
    if (tmp && !process.env.SPPNET_KEEP_BUNDLE_TMP) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('the bundled node alone runs: require(\'./dist\'), every package from the bundle, sharp\'s libvips, spp_check', function () {
    const probe = `const o = { execPath: process.execPath, device: require('./dist').backend().device, resolved: {} };
      for (const p of ['mocha', 'chai', 'sharp', 'fastify', '@fastify/multipart', 'autocannon', 'bindings']) o.resolved[p] = require.resolve(p);
      o.sharp = Object.keys(require('sharp').versions);
      console.log('PROBE ' + JSON.stringify(o));`;
    const r = inTree(`source scripts/gpu-env.sh && sppnet_unpack && echo "WHICH $(command -v node)" && SPPNET_DEVICE=cpu node -e "${probe}" && .gpu/spp_check W2 2`);
    expect(r.status, r.out).to.equal(0);
    const bundled = path.join(tree, '.gpu', 'bin', 'node');
    expect(r.out).to.include(`WHICH ${bundled}\n`);
    const o = JSON.parse(/^PROBE (.*)$/m.exec(r.out)[1]);
    expect(o.execPath).to.equal(bundled);
    expect(o.device).to.equal('cpu');
    for (const [p, file] of Object.entries(o.resolved)) expect(file.startsWith(path.join(tree, 'node_modules') + path.sep), `${p}: ${file}`).to.equal(true);
    expect(o.sharp).to.include('vips');
    expect(r.out).to.match(/^W2 max: .* ok$/m);
    expect(r.out).to.match(/^0 failed$/m);
    console.log(`      ${/^gpu-env: .*$/m.exec(r.out)[0]}`);
  });

  it('scripts/gpu-run.sh stops in its preflight within 60 s, says why, and writes summary.json', function () {
    if (sp.backend().cuda.available) return this.skip(); // a GPU here: the preflight would pass
    const out = path.join(tmp, 'out');
    const r = inTree('bash scripts/gpu-run.sh', { OUT: out }, 120 * 1000);
    expect(r.status, r.out).to.not.equal(0);
    expect(r.status, r.out).to.not.equal(null);
    expect(r.seconds).to.be.below(60);
    expect(r.out).to.match(/PREFLIGHT FAILED: .*(nvidia-smi not found|CUDA is unavailable)/);
    const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
    expect(s.ok).to.equal(false);
    expect(s.failed).to.deep.equal(['preflight']);
    expect(s.steps).to.have.length(1);
    expect(s.steps[0]).to.include({ name: 'preflight', status: 'fail', log: 'run.log' });
    expect(s.steps[0].why).to.match(/CUDA/);
    expect(s.bundle.node).to.equal(process.versions.node);
    expect(fs.readFileSync(path.join(out, 'run.log'), 'utf8')).to.match(/^===== \[preflight\] fail/m);
    console.log(`      exit ${r.status} after ${r.seconds.toFixed(1)} s: ${/PREFLIGHT FAILED: .*/.exec(r.out)[0].slice(0, 150)}...`);
  });

  it('the whole test suite passes there on the CPU, run as gpu-run.sh runs it', function () {
    const dry = inTree('source scripts/gpu-env.sh && sppnet_unpack >/dev/null && sppnet_mocha --dry-run');
    const total = /^(\d+) passed, 0 failed, 0 skipped$/m.exec(dry.out);
    expect(total, dry.out.slice(-3000)).to.not.equal(null);
    const r = inTree('source scripts/gpu-env.sh && sppnet_unpack && sppnet_mocha', { SPPNET_DEVICE: 'cpu' });
    const m = /^(\d+) passed, (\d+) failed, (\d+) skipped$/m.exec(r.out);
    expect(m, r.out.slice(-5000)).to.not.equal(null);
    console.log(`      in the bundle: ${m[0]} (${r.seconds.toFixed(0)} s)`);
    const [passed, failed, skipped] = m.slice(1).map(Number);
    expect(failed, r.out.slice(-8000)).to.equal(0);
    expect(r.status, r.out.slice(-3000)).to.equal(0);
    expect(passed + skipped, 'every test of the suite ran or skipped').to.equal(+total[1]);
    expect(passed).to.be.at.least(150);
    expect(r.out).to.match(/bundle tests skipped: this suite runs from an unpacked bundle/);
  });
});
