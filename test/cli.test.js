'use strict';
// The command line: classify with saved weights and labels, the demo, and errors that exit 1.
const { expect } = require('chai');
const { runNode } = require('./support/child');
const fs = require('fs');
const os = require('os');
const path = require('path');
const sharp = require('sharp');
const { sp } = require('./support/helpers');

const cli = path.resolve(__dirname, '..', 'bin', 'sppnet.js');
const run = (args, timeout = 60000) => runNode([cli, ...args], { timeout, env: { ...process.env, SPPNET_DEVICE: 'cpu' } });

describe('command line', function () {
  let dir;
  before(async function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-cli-'));
    const m = await sp.buildModel({
      spec: { name: 'tiny', inChannels: 3, layers: [{ type: 'conv', name: 'c1', out: 4, kernel: 3 }, { type: 'spp', levels: [2, 1] }, { type: 'fc', name: 'fc', out: 3 }] },
      seed: 5,
      device: 'cpu',
    });
    await m.save(path.join(dir, 'tiny.safetensors'));
    m.dispose();
    fs.writeFileSync(path.join(dir, 'labels.txt'), 'cat\ndog\nbird\n');
    await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 200, g: 10, b: 10 } } }).png().toFile(path.join(dir, 'a.png'));
    await sharp({ create: { width: 25, height: 50, channels: 3, background: { r: 10, g: 10, b: 200 } } }).jpeg().toFile(path.join(dir, 'b.jpg'));
    fs.writeFileSync(path.join(dir, 'bad.jpg'), 'not a jpeg');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('classify prints the top-k with labels for each image', function () {
    const r = run(['classify', '--weights', path.join(dir, 'tiny.safetensors'), '--labels', path.join(dir, 'labels.txt'), '--topk', '2', '--scales', '32,48', path.join(dir, 'a.png'), path.join(dir, 'b.jpg')]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/a\.png\s+\(43x32, 64x48\)\n\s+\d+\.\d\d%\s+(cat|dog|bird)\n\s+\d+\.\d\d%\s+(cat|dog|bird)\n/);
    expect(r.stdout).to.match(/b\.jpg\s+\(32x64, 48x96\)/);
    expect(r.stdout).to.match(/2 image\(s\) in \d+ ms/);
  });

  it('a corrupt image, a missing file or a label count mismatch exits 1 with the reason', function () {
    let r = run(['classify', '--weights', path.join(dir, 'tiny.safetensors'), path.join(dir, 'bad.jpg')]);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/cannot decode .*bad\.jpg/);
    r = run(['classify', '--weights', path.join(dir, 'nope.safetensors'), path.join(dir, 'a.png')]);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/cannot read .*nope\.safetensors/);
    fs.writeFileSync(path.join(dir, 'two.txt'), 'x\ny\n');
    r = run(['classify', '--weights', path.join(dir, 'tiny.safetensors'), '--labels', path.join(dir, 'two.txt'), path.join(dir, 'a.png')]);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/labels must list 3 labels/);
    r = run(['frobnicate']);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/unknown command "frobnicate"/);
  });

  it('the demo trains and classifies with nothing downloaded', function () {
    this.timeout(300000);
    const r = run(['demo'], 280000);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stderr).to.match(/epoch 6\/6 loss \d+\.\d+ acc \d+\.\d%/);
    expect(r.stdout).to.match(/held-out images at their natural sizes .*: \d+\.\d% correct of 200/);
    expect(r.stdout).to.match(/8 image\(s\) in \d+ ms/);
    expect(r.stdout).to.match(/\d of 8 files classified as the shape they show/);
  });
});
