'use strict';
// bench/load.js end to end in its --smoke mode (the tiny fixture network, 2 connections, half a
// second per point, batching on and off): it runs, writes valid JSON and markdown, and its chart
// draws. Timings are not checked here; speed lives in the benchmarks (npm run bench:load).
const { expect } = require('chai');
const { runNode } = require('./support/child');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');

describe('bench/load.js --smoke', function () {
  this.timeout(30000);
  let dir;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-load-'))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('load-tests the HTTP service with batching on and off and writes load-cpu.json, .md and a chart', function () {
    const r = runNode([path.join(root, 'bench', 'load.js'), '--smoke', '--no-gpu', '--out', dir], { env: { ...process.env, SPPNET_DEVICE: 'cpu' }, timeout: 25000 });
    expect(r.status, r.stderr + r.stdout).to.equal(0);
    const d = JSON.parse(fs.readFileSync(path.join(dir, 'load-cpu.json'), 'utf8'));
    expect(d.device).to.equal('cpu');
    expect(d.runs.map((x) => x.mode)).to.deep.equal(['on', 'off']);
    for (const run of d.runs) {
      expect(run.ok, JSON.stringify(run)).to.be.above(0);
      expect(run.errors + run.timeouts).to.equal(0);
      expect(run.reqPerS).to.be.above(0);
      expect(run.latencyMs.p50).to.be.at.most(run.latencyMs.p99);
      expect(run.meanBatchSize).to.be.at.least(1);
      expect(run.memory.peak.rss).to.be.at.least(run.memory.before.rss);
      expect(run.eventLoopDelayMs.p99).to.be.a('number');
    }
    expect(d.runs[1].meanBatchSize).to.equal(1); // batching off: one image per model call
    expect(d.gpu).to.deep.include({ skipped: true, reason: '--no-gpu' });
    expect(d.memory.timeline.length).to.be.above(1);
    expect(fs.readFileSync(path.join(dir, 'load-cpu.md'), 'utf8')).to.match(/\| batching on .*\| 2 \|/);
    const { loadChart } = require('../bench/plots');
    expect(loadChart(d)).to.match(/^<svg[\s\S]*<\/svg>\s*$/);
  });
});
