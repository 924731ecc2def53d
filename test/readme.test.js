'use strict';
// The README's examples run as written. Every ```js block is saved as a file in a fresh project
// outside the repository, in which sppnet is installed the way the README says
// (`npm install /path/to/sppnet`, which links the clone), and run with node: it must exit 0. Every
// other code block must be marked, on the line just before its fence, with
//   <!-- readme-test: not run (why) -->
// so that a block is never skipped by accident. The examples that read a.jpg and b.png find two
// small images there. Also: what `npm pack` would put in the tarball the README offers.
const { expect } = require('chai');
const { runChild, runNode } = require('./support/child');
const fs = require('fs');
const os = require('os');
const path = require('path');
const sharp = require('sharp');

const root = path.resolve(__dirname, '..');
const MARK = /^\s*<!-- readme-test: not run \((.+)\) -->\s*$/;

/** The fenced code blocks of a Markdown text: { line (1-based, of the fence), lang, code, skip }. */
function codeBlocks(text) {
  const lines = text.split('\n');
  const blocks = [];
  let heading = '';
  for (let i = 0; i < lines.length; i++) {
    const h = /^#+\s+(.*)$/.exec(lines[i]);
    if (h) heading = h[1].replace(/`/g, '');
    const open = /^(\s*)```(\S*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const indent = open[1].length;
    let j = i + 1;
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) j++;
    if (j === lines.length) throw new Error(`README.md:${i + 1}: a code fence that is never closed`);
    const mark = i > 0 ? MARK.exec(lines[i - 1]) : null;
    blocks.push({ line: i + 1, heading, lang: open[2], code: lines.slice(i + 1, j).map((l) => l.slice(indent)).join('\n') + '\n', skip: mark ? mark[1] : null });
    i = j;
  }
  return blocks;
}

const blocks = codeBlocks(fs.readFileSync(path.join(root, 'README.md'), 'utf8'));
const runnable = blocks.filter((b) => b.lang === 'js' && !b.skip);

describe('README', function () {
  let dir;
  before(async function () {
    if (process.env.SPPNET_IN_BUNDLE) {
      console.log('      README examples skipped: this suite runs from an unpacked bundle (no npm there)');
      return this.skip();
    }
    this.timeout(120000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-readme-'));
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'readme-examples', private: true }));
    // As the README says; the clone is built already, so its install script need not run again.
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const r = runChild(npm, ['install', '--offline', '--ignore-scripts', '--no-audit', '--no-fund', root], { cwd: dir, timeout: 120000 });
    if (r.status !== 0) throw new Error(`npm install ${root} in ${dir} failed (${r.error ? r.error.message : `exit ${r.status}`}):\n${r.stdout}${r.stderr}`);
    expect(fs.realpathSync(path.join(dir, 'node_modules', 'sppnet'))).to.equal(fs.realpathSync(root));
    await sharp({ create: { width: 120, height: 90, channels: 3, background: { r: 200, g: 40, b: 30 } } }).jpeg().toFile(path.join(dir, 'a.jpg'));
    await sharp({ create: { width: 70, height: 100, channels: 3, background: { r: 20, g: 90, b: 200 } } }).png().toFile(path.join(dir, 'b.png'));
  });
  after(() => dir && fs.rmSync(dir, { recursive: true, force: true }));

  it('every code block is either a js example (run below) or marked as not run, with a reason', function () {
    const unmarked = blocks.filter((b) => b.lang !== 'js' && !b.skip).map((b) => `README.md:${b.line} (\`\`\`${b.lang || 'no language'})`);
    expect(unmarked, 'mark them <!-- readme-test: not run (why) --> or make them js examples').to.deep.equal([]);
    expect(runnable.length, 'js examples found').to.be.at.least(5);
    console.log(`      ${runnable.length} js examples run; not run: ${blocks.filter((b) => b.skip).map((b) => `:${b.line} (${b.skip})`).join('; ')}`);
  });

  for (const b of runnable) {
    it(`README.md:${b.line} (${b.heading}) runs as written`, function () {
      this.timeout(300000);
      const file = path.join(dir, `example-${b.line}.js`);
      fs.writeFileSync(file, b.code);
      const r = runNode([file], { cwd: dir, timeout: 280000 });
      expect(r.status, `README.md:${b.line} exited ${r.status}${r.signal ? ` (${r.signal})` : ''}:\n${r.stderr}\n${r.stdout}`).to.equal(0);
    });
  }

  it("the ES module form the Quick start mentions works: import * as sp from 'sppnet'", function () {
    const file = path.join(dir, 'esm.mjs');
    fs.writeFileSync(file, "import * as sp from 'sppnet';\nconst f = await sp.spp(sp.zeros([2, 5, 7]), { levels: [2, 1] });\nconsole.log(JSON.stringify(f.shape));\n");
    const r = runNode([file], { cwd: dir, timeout: 120000 });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('[1,10]');
  });

  it('npm pack would ship what an install from the tarball needs (dist/ included), and no build output', function () {
    this.timeout(60000);
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const r = runChild(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, timeout: 120000 });
    expect(r.status, r.stderr).to.equal(0);
    const files = new Set(JSON.parse(r.stdout)[0].files.map((f) => f.path));
    const need = ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'scripts/build.js', 'CMakeLists.txt', 'bin/sppnet.js'];
    // Every source file CMakeLists.txt compiles, and every file the CLI requires.
    const cmake = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
    for (const m of cmake.matchAll(/\b((?:binding|cpu|cuda|tools)\/[\w/]+\.(?:cpp|cu))\b/g)) need.push(m[1]);
    const cli = fs.readFileSync(path.join(root, 'bin', 'sppnet.js'), 'utf8');
    for (const m of cli.matchAll(/require\('(\.\.\/[^']+)'\)/g)) {
      const p = path.relative(root, path.resolve(root, 'bin', m[1]));
      need.push(fs.existsSync(path.join(root, p)) ? p : `${p}.js`);
    }
    need.push(...fs.readdirSync(path.join(root, 'dist')).filter((f) => f.endsWith('.js')).map((f) => `dist/${f}`));
    expect(need.filter((f) => !files.has(f)), 'missing from the tarball').to.deep.equal([]);
    expect([...files].filter((f) => /^(build|node_modules|test|\.gpu)\//.test(f)), 'not for the tarball').to.deep.equal([]);
  });
});
