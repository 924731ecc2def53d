'use strict';
// bench/soak.js, briefly: the tiny network served by `sppnet serve` in a child process, 6 s of
// mixed valid and hostile traffic (bombs, truncated multipart, bodies over the limit, bad JSON...).
// The script's own verdict must be ok: the server alive and healthy, no 5xx but 503, valid
// requests answered, no memory growth. Longer runs: node bench/soak.js --minutes N.
const { expect } = require('chai');
const { runNode } = require('./support/child');
const fs = require('fs');
const os = require('os');
const path = require('path');

describe('bench/soak.js (a 6 s soak)', function () {
  it('keeps the service alive, healthy and bounded under mixed valid and hostile traffic', function () {
    this.timeout(240000);
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-soak-'));
    const r = runNode([path.join(__dirname, '..', 'bench', 'soak.js'), '--seconds', '6', '--arch', 'tiny', '--clients', '3', '--out', out], {
      timeout: 200000, env: { ...process.env, SPPNET_DEVICE: 'cpu' },
    });
    const text = `${r.stdout}${r.stderr}`;
    console.log(text.split('\n').filter((l) => /^(valid|server RSS|soak: (ok|FAIL))/.test(l)).map((l) => `      ${l}`).join('\n'));
    expect(r.status, text).to.equal(0);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'soak.json'), 'utf8'));
    expect(report.verdict, text).to.equal('ok');
    expect(report.totals.valid).to.be.at.least(10);
    expect(Object.keys(report.totals.hostile).length, 'hostile kinds sent').to.be.at.least(5);
  });
});
