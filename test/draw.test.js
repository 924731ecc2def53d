'use strict';
// Drawing detections (lib/io/draw.ts): box outlines, clipping, the bitmap font, tags and their
// placement, colours, errors, and the file round trip through sharp.
const { expect } = require('chai');
const fs = require('fs');
const os = require('os');
const path = require('path');
const sharp = require('sharp');
const { sp, expectReject } = require('./support/helpers');

/** A W x H RGB image whose every pixel differs from its neighbours (so any change shows). */
function scene(W, H) {
  const px = new Uint8Array(W * H * 3);
  for (let i = 0; i < px.length; i++) px[i] = 40 + ((i * 7) % 50);
  return px;
}
const at = (px, W, x, y) => Array.from(px.subarray((y * W + x) * 3, (y * W + x) * 3 + 3));

/** The pixels that differ between a and b, as 'x,y'. */
function changed(a, b, W) {
  const out = new Set();
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) out.add(`${Math.floor(i / 3) % W},${Math.floor(i / 3 / W)}`);
  return out;
}
/** 'x,y' for every pixel of [x1, x2] x [y1, y2]. */
function rect(x1, y1, x2, y2) {
  const out = [];
  for (let y = y1; y <= y2; y++) for (let x = x1; x <= x2; x++) out.push(`${x},${y}`);
  return out;
}
/** The pixels of an outline t wide drawn inwards from [x1, y1, x2, y2], clipped to W x H. */
function outline(x1, y1, x2, y2, t, W, H) {
  const all = [...rect(x1, y1, x2, y1 + t - 1), ...rect(x1, y2 - t + 1, x2, y2), ...rect(x1, y1, x1 + t - 1, y2), ...rect(x2 - t + 1, y1, x2, y2)];
  return new Set(all.filter((p) => { const [x, y] = p.split(',').map(Number); return x >= 0 && y >= 0 && x < W && y < H; }));
}

// 'A' and 'g' of the font, as the test reads them (8 rows of 5: the 8th for descenders).
const A = ['.###.', '#...#', '#...#', '#...#', '#####', '#...#', '#...#', '.....'];
const g = ['.....', '.....', '.####', '#...#', '#...#', '.####', '....#', '.###.'];

/** The ink of glyph rows drawn at (x0, y0) with scale s: true where the pixel is `ink`. */
function readGlyph(px, W, x0, y0, s, ink) {
  const rows = [];
  for (let r = 0; r < 8; r++) {
    let row = '';
    for (let c = 0; c < 5; c++) {
      const block = rect(x0 + c * s, y0 + r * s, x0 + c * s + s - 1, y0 + r * s + s - 1).map((p) => at(px, W, ...p.split(',').map(Number)).join());
      expect(new Set(block).size, `glyph pixel ${c},${r} is one ${s}x${s} block`).to.equal(1);
      row += block[0] === ink.join() ? '#' : '.';
    }
    rows.push(row);
  }
  return rows;
}

describe('drawDetections', function () {
  it('colours the edges of a box (fractional coordinates rounded) and leaves every other pixel alone', function () {
    const W = 100, H = 80;
    const before = scene(W, H);
    const px = before.slice();
    const out = sp.drawDetections(px, W, H, [{ box: [9.6, 20.4, 50.2, 59.5], label: '', colour: [255, 0, 0] }], { thickness: 2 });
    expect(out).to.equal(px);
    const edge = outline(10, 20, 50, 60, 2, W, H);
    expect([...changed(before, px, W)].sort()).to.deep.equal([...edge].sort());
    for (const p of edge) expect(at(px, W, ...p.split(',').map(Number))).to.deep.equal([255, 0, 0]);
    expect(at(px, W, 12, 22)).to.deep.equal(at(before, W, 12, 22)); // just inside the outline
  });

  it('clips at all four borders: a box larger than the image draws the inner part of its outline', function () {
    const W = 60, H = 40;
    const before = scene(W, H);
    const px = before.slice();
    sp.drawDetections(px, W, H, [{ box: [-5, -5, W + 4, H + 4], label: '', colour: [0, 200, 0] }], { thickness: 7 });
    // 7 pixels inwards from 5 outside: 2 pixels at each border.
    const expected = outline(0, 0, W - 1, H - 1, 2, W, H);
    expect([...changed(before, px, W)].sort()).to.deep.equal([...expected].sort());
    for (const p of expected) expect(at(px, W, ...p.split(',').map(Number))).to.deep.equal([0, 200, 0]);
  });

  it('draws the visible edges of a box partly outside, its tag slid into the image', function () {
    const W = 100, H = 80, s = 1;
    const before = scene(W, H);
    const px = before.slice();
    sp.drawDetections(px, W, H, [{ box: [-20, 30, 40, 200], label: 'x', colour: [255, 255, 0] }], { thickness: 3, fontScale: s });
    const tag = rect(0, 30 - 10 * s, 7 * s - 1, 29); // (1 char * 6 + 1) wide, (8 + 2) high, above the box
    const expected = new Set([...outline(-20, 30, 40, 200, 3, W, H), ...tag]);
    expect([...changed(before, px, W)].sort()).to.deep.equal([...expected].sort());
    expect(at(px, W, 40, 79)).to.deep.equal([255, 255, 0]); // the right edge reaches the bottom border
    expect(at(px, W, 0, 60)).to.deep.equal(at(before, W, 0, 60)); // no left edge: it lies outside
  });

  it('draws nothing for boxes wholly outside (labels included)', function () {
    const W = 50, H = 40;
    const before = scene(W, H);
    const px = before.slice();
    const boxes = [[W, 0, W + 10, 10], [-10, 0, -1, 10], [0, H, 10, H + 5], [0, -9, 10, -0.6], [-1e9, -1e9, -1e8, 1e9]];
    sp.drawDetections(px, W, H, boxes.map((box) => ({ box, label: 'cat', score: 0.9 })));
    expect(changed(before, px, W).size).to.equal(0);
  });

  it("renders 'A' (scale 1) and 'g' (scale 3, with its descender) as their bitmap rows, in a tag above the box", function () {
    const W = 120, H = 90;
    for (const [ch, rows, s] of [['A', A, 1], ['g', g, 3]]) {
      const px = new Uint8Array(W * H * 3);
      sp.drawDetections(px, W, H, [{ box: [10, 50, 60, 80], label: ch, colour: [255, 255, 255] }], { fontScale: s, thickness: 1 });
      const tx = 10, ty = 50 - 10 * s; // (8 + 2) * s high, ending just above the box's top edge
      expect(readGlyph(px, W, tx + s, ty + s, s, [0, 0, 0]), ch).to.deep.equal(rows);
      // The rest of the tag (7s x 10s) is the box's colour, and nothing above it was drawn.
      let ink = 0;
      for (const p of rect(tx, ty, tx + 7 * s - 1, ty + 10 * s - 1)) if (at(px, W, ...p.split(',').map(Number)).join() !== '255,255,255') ink++;
      expect(ink).to.equal(rows.join('').match(/#/g).length * s * s);
      expect(at(px, W, tx, ty - 1)).to.deep.equal([0, 0, 0]);
      expect(at(px, W, tx + 7 * s, ty)).to.deep.equal([0, 0, 0]);
    }
  });

  it('writes text in black or white, whichever contrasts more with the tag', function () {
    const W = 60, H = 40;
    for (const [colour, ink] of [[[255, 255, 0], [0, 0, 0]], [[0, 0, 128], [255, 255, 255]], [[250, 190, 212], [0, 0, 0]], [[145, 30, 180], [255, 255, 255]]]) {
      const px = new Uint8Array(W * H * 3).fill(77);
      sp.drawDetections(px, W, H, [{ box: [5, 20, 50, 35], label: 'A', colour }], { fontScale: 1, thickness: 1 });
      // The apex of 'A' (row 0, column 2) of a tag at (5, 10).
      expect(at(px, W, 5 + 1 + 2, 10 + 1), String(colour)).to.deep.equal(ink);
      expect(at(px, W, 5, 10)).to.deep.equal(colour);
    }
  });

  it('puts the tag inside the box when there is no room above, and slides it left at the right border', function () {
    const W = 80, H = 60;
    const px = new Uint8Array(W * H * 3);
    sp.drawDetections(px, W, H, [{ box: [70, 3, 79, 50], label: 'AB', colour: [255, 255, 255] }], { fontScale: 1, thickness: 1 });
    const tw = 2 * 6 + 1; // 13 wide, at x = 80 - 13
    expect(readGlyph(px, W, W - tw + 1, 3 + 1, 1, [0, 0, 0])).to.deep.equal(A);
    expect(at(px, W, W - tw, 3)).to.deep.equal([255, 255, 255]);
    expect(at(px, W, W - tw - 1, 3)).to.deep.equal([0, 0, 0]);
    expect(at(px, W, W - tw, 2)).to.deep.equal([0, 0, 0]);
  });

  it('adds the score with two decimals, cuts long labels at 64 characters, and shows non-ASCII as ?', function () {
    const W = 500, H = 40;
    const tagWidth = (label, score) => {
      const px = new Uint8Array(W * H * 3);
      sp.drawDetections(px, W, H, [{ box: [0, 20, 10, 30], label, score, colour: [255, 255, 255] }], { fontScale: 1, thickness: 1 });
      let x = 0;
      while (x < W && at(px, W, x, 10).join() === '255,255,255') x++;
      return x;
    };
    expect(tagWidth('A', 0.5)).to.equal('A 0.50'.length * 6 + 1);
    expect(tagWidth('', 0.93)).to.equal(4 * 6 + 1);
    expect(tagWidth('x'.repeat(200))).to.equal(64 * 6 + 1);
    expect(tagWidth('x'.repeat(64))).to.equal(64 * 6 + 1);
    // A non-ASCII label: one '?' a code point ('é' and the emoji are 1 each).
    expect(tagWidth('caf\u00e9 \u{1F600}')).to.equal(6 * 6 + 1);
    const px = new Uint8Array(W * H * 3);
    sp.drawDetections(px, W, H, [{ box: [0, 20, 10, 30], label: '\u00e9', colour: [255, 255, 255] }], { fontScale: 1, thickness: 1 });
    expect(readGlyph(px, W, 1, 11, 1, [0, 0, 0])).to.deep.equal(['.###.', '#...#', '....#', '...#.', '..#..', '.....', '..#..', '.....']);
  });

  it('gives a label the same palette colour every time, and different labels several colours', function () {
    const W = 40, H = 40;
    const edge = (label) => {
      const px = new Uint8Array(W * H * 3);
      sp.drawDetections(px, W, H, [{ box: [10, 10, 30, 30], label }]);
      return at(px, W, 30, 30).join();
    };
    expect(edge('dog')).to.equal(edge('dog'));
    const labels = ['aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor'];
    const colours = new Set(labels.map(edge));
    expect(colours.size).to.be.at.least(10);
    expect([...colours].every((c) => c !== '0,0,0')).to.equal(true);
    // Thickness and font scale by the image's size: max(2, round(min(W, H) / 200)), max(1, round(min / 400)).
    const big = new Uint8Array(1000 * 900 * 3);
    sp.drawDetections(big, 1000, 900, [{ box: [100, 100, 500, 500], label: '', colour: [9, 9, 9] }]);
    expect(at(big, 1000, 104, 300)).to.deep.equal([9, 9, 9]);
    expect(at(big, 1000, 105, 300)).to.deep.equal([0, 0, 0]);
  });

  it('refuses bad arguments with named errors and codes', function () {
    const px = new Uint8Array(10 * 10 * 3);
    const d = (boxes, opts, W = 10, H = 10, rgb = px) => () => sp.drawDetections(rgb, W, H, boxes, opts);
    const bad = 'SPPNET_INVALID_ARGUMENT';
    return Promise.all([
      expectReject(d([{ box: [1, 2, 3, 4], label: 'a' }, { box: [1, 2, NaN, 4], label: 'b' }]), /sp\.drawDetections: boxes\[1\]\.box\[2\] must be a finite number, got number NaN/, bad),
      expectReject(d([{ box: [1, 2, 3, Infinity], label: 'a' }]), /boxes\[0\]\.box\[3\] must be a finite number/, bad),
      expectReject(d([{ box: [5, 2, 3, 4], label: 'a' }]), /boxes\[0\]\.box must have x1 <= x2 and y1 <= y2/, bad),
      expectReject(d([{ box: [1, 2, 3], label: 'a' }]), /boxes\[0\]\.box must be \[x1, y1, x2, y2\], got an array of length 3/, bad),
      expectReject(d([{ box: [1, 2, 3, 4] }]), /boxes\[0\]\.label must be a string, got undefined/, bad),
      expectReject(d([{ box: [1, 2, 3, 4], label: 'a', score: NaN }]), /boxes\[0\]\.score must be a finite number/, bad),
      expectReject(d([{ box: [1, 2, 3, 4], label: 'a', colour: [0, 256, 0] }]), /boxes\[0\]\.colour must be \[r, g, b\], integers 0 to 255/, bad),
      expectReject(d([null]), /boxes\[0\] must be an object/, bad),
      expectReject(d('boxes'), /boxes must be an array/, bad),
      expectReject(d(Array.from({ length: 10001 }, () => ({ box: [0, 0, 1, 1], label: '' }))), /10001 boxes, more than the limit of 10000/, 'SPPNET_TOO_LARGE'),
      expectReject(d([], { thickness: 0 }), /options\.thickness must be an integer from 1 to 1000, got number 0/, bad),
      expectReject(d([], { fontScale: 1.5 }), /options\.fontScale must be an integer from 1 to 100/, bad),
      expectReject(d([], null), /options must be an object/, bad),
      expectReject(d([], {}, 11), /rgb has 300 bytes, expected width \* height \* 3 = 330 for 11x10 RGB/, bad),
      expectReject(d([], {}, 0), /width must be a positive integer, got number 0/, bad),
      expectReject(d([], {}, 10, 10, new Float32Array(300)), /rgb must be a Uint8Array/, bad),
    ]);
  });
});

describe('drawDetectionsToFile', function () {
  let dir;
  before(function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-draw-'));
  });
  after(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const W = 64, H = 48;
  const boxes = [{ box: [5, 20, 40, 45], label: 'cat', score: 0.93 }, { box: [30, -4, 70, 30], label: 'dog' }];
  const source = () => {
    const px = Buffer.alloc(W * H * 3);
    for (let i = 0; i < px.length; i++) px[i] = (i * 31) % 256;
    return px;
  };

  it('reads, draws and writes a PNG exactly (from bytes and from a path)', async function () {
    const px = source();
    const png = await sharp(px, { raw: { width: W, height: H, channels: 3 } }).png().toBuffer();
    const expected = sp.drawDetections(new Uint8Array(px), W, H, boxes);
    const inPath = path.join(dir, 'in.png');
    fs.writeFileSync(inPath, png);
    for (const src of [png, inPath]) {
      const out = path.join(dir, 'out.png');
      expect(await sp.drawDetectionsToFile(src, out, boxes)).to.deep.equal({ width: W, height: H });
      const back = await sharp(out).raw().toBuffer({ resolveWithObject: true });
      expect(back.info).to.include({ width: W, height: H, channels: 3 });
      expect(Buffer.compare(back.data, Buffer.from(expected))).to.equal(0);
    }
  });

  it('writes JPEG and WebP by the extension', async function () {
    const png = await sharp(source(), { raw: { width: W, height: H, channels: 3 } }).png().toBuffer();
    for (const [ext, format] of [['jpg', 'jpeg'], ['JPEG', 'jpeg'], ['webp', 'webp']]) {
      const out = path.join(dir, `out.${ext}`);
      await sp.drawDetectionsToFile(png, out, boxes, { quality: 80 });
      expect((await sharp(out).metadata()).format).to.equal(format);
    }
  });

  it('refuses bad arguments, unreadable images and images over maxPixels', async function () {
    const png = await sharp(source(), { raw: { width: W, height: H, channels: 3 } }).png().toBuffer();
    const out = path.join(dir, 'x.png');
    const bad = 'SPPNET_INVALID_ARGUMENT';
    await expectReject(sp.drawDetectionsToFile(png, path.join(dir, 'x.gif'), boxes), /sp\.drawDetectionsToFile: out must be a file path ending in \.jpg, \.jpeg, \.png or \.webp/, bad);
    await expectReject(sp.drawDetectionsToFile(42, out, boxes), /source must be a file path or the image's bytes/, bad);
    await expectReject(sp.drawDetectionsToFile(png, out, [{ box: [0, 0, NaN, 1], label: 'a' }]), /sp\.drawDetectionsToFile: boxes\[0\]\.box\[2\] must be a finite number/, bad);
    await expectReject(sp.drawDetectionsToFile(png, out, boxes, { thickness: -1 }), /sp\.drawDetectionsToFile: options\.thickness/, bad);
    await expectReject(sp.drawDetectionsToFile(png, out, boxes, { quality: 101 }), /options\.quality must be an integer from 1 to 100/, bad);
    await expectReject(sp.drawDetectionsToFile(path.join(dir, 'missing.png'), out, boxes), /cannot decode .*missing\.png/, bad);
    await expectReject(sp.drawDetectionsToFile(new Uint8Array([1, 2, 3]), out, boxes), /cannot decode a Uint8Array of 3 bytes/, bad);
    await expectReject(sp.drawDetectionsToFile(png, out, boxes, { maxPixels: 1000 }), /\(64x48\) has 3072 pixels, more than options\.maxPixels 1000/, 'SPPNET_TOO_LARGE');
    await expectReject(sp.drawDetectionsToFile(png, path.join(dir, 'no', 'such', 'dir.png'), boxes), /cannot write .*dir\.png/, bad);
    expect(fs.existsSync(out)).to.equal(false);
  });
});
