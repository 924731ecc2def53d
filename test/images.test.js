'use strict';
// Image decoding with sharp: formats, colour handling, the paper's resizing, normalisation, errors.
const { expect } = require('chai');
const sharp = require('sharp');
const { sp, expectClose, expectReject } = require('./support/helpers');
const { rng, freshSeed } = require('./support/reference');

async function randomImage(r, w, h) {
  const px = Buffer.from(Array.from({ length: w * h * 3 }, () => r.int(0, 255)));
  return { px, png: await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer() };
}

describe('images', function () {
  it('decodes PNG exactly into CHW floats with mean/std normalisation', async function () {
    const seed = freshSeed();
    const r = rng(seed);
    const { px, png } = await randomImage(r, 13, 7);
    const mean = [0.5, 0.25, 0.125], std = [0.5, 0.25, 2];
    const t = await sp.readImage(png, { mean, std, device: 'cpu' });
    expect(t.shape).to.deep.equal([3, 7, 13]);
    const expected = new Float64Array(3 * 7 * 13);
    for (let c = 0; c < 3; c++) for (let i = 0; i < 91; i++) expected[c * 91 + i] = (px[i * 3 + c] / 255 - mean[c]) / std[c];
    expectClose(await t.data(), expected, { rtol: 1e-6, atol: 1e-6, label: `seed ${seed}` });
  });

  it('decodes JPEG, WebP (alpha dropped) and one-channel PNG (to RGB); default ImageNet normalisation', async function () {
    const seed = freshSeed();
    const r = rng(seed);
    const { png } = await randomImage(r, 20, 10);
    const jpg = await sharp(png).jpeg({ quality: 95 }).toBuffer();
    const webp = await sharp(png).ensureAlpha().webp({ lossless: true }).toBuffer();
    const grey = await sharp(Buffer.alloc(6 * 4, 128), { raw: { width: 6, height: 4, channels: 1 } }).png().toBuffer();
    const [a, b, g] = await sp.readImages([jpg, webp, grey], { device: 'cpu' });
    expect(a.shape).to.deep.equal([3, 10, 20]);
    expect(b.shape).to.deep.equal([3, 10, 20]);
    expectClose(await b.data(), await (await sp.readImage(png, { device: 'cpu' })).data(), { rtol: 1e-6, atol: 1e-6, label: 'lossless webp = png' });
    expect(g.shape).to.deep.equal([3, 4, 6]);
    const gd = await g.data();
    expect(gd[0]).to.be.closeTo((128 / 255 - 0.485) / 0.229, 1e-5);
    expect(gd[24]).to.be.closeTo((128 / 255 - 0.456) / 0.224, 1e-5);
  });

  it("resizes as the paper does: shorter side to s, aspect ratio kept", async function () {
    const r = rng(freshSeed());
    const { png } = await randomImage(r, 300, 200);
    expect((await sp.readImage(png, { shorterSide: 224, device: 'cpu' })).shape).to.deep.equal([3, 224, 336]);
    const { png: tall } = await randomImage(r, 100, 250);
    expect((await sp.readImage(tall, { shorterSide: 180, device: 'cpu' })).shape).to.deep.equal([3, 450, 180]);
  });

  it('corrupt or missing images are clear errors naming the image; all failures listed together', async function () {
    await expectReject(sp.readImage(Buffer.from('definitely not an image')), /sp.readImage: cannot decode a Buffer of 23 bytes: .*unsupported image format/);
    const r = rng(freshSeed());
    const { png } = await randomImage(r, 10, 10);
    const truncated = png.subarray(0, 40);
    const err = await expectReject(sp.readImages([png, '/no/such/file.jpg', truncated]), /2 of 3 images failed/);
    expect(err.message).to.match(/\[1\] sp.readImage: cannot decode \/no\/such\/file.jpg/);
    expect(err.message).to.match(/\[2\] sp.readImage: cannot decode a Buffer of 40 bytes/);
    await expectReject(sp.readImage(png, { shorterSide: 0 }), /options.shorterSide must be a positive integer/);
    await expectReject(sp.readImage(png, { std: [1, 0, 1] }), /options.std must be 3 finite numbers > 0/);
  });

  it('maxPixels bounds the image as resized too: a 2000x1 strip at shorterSide 48 would be 96,000x48', async function () {
    // Found by the fuzz suite (seed 2538279354): a mutated JPEG header said 32542x1, under the
    // limit, and shorterSide 48 made it 74,976,768 pixels.
    const strip = await sharp({ create: { width: 2000, height: 1, channels: 3, background: '#808080' } }).png().toBuffer();
    await expectReject(sp.readImage(strip, { shorterSide: 48, maxPixels: 1_000_000 }),
      /sp.readImage: a Buffer of \d+ bytes \(2000x1\) resized to options.shorterSide 48 \(96000x48\) has 4608000 pixels \(4.6 MP\), more than options.maxPixels 1000000/, 'SPPNET_TOO_LARGE');
    const t = await sp.readImage(strip, { shorterSide: 2, maxPixels: 1_000_000 });
    expect(t.shape).to.deep.equal([3, 2, 4000]);
    t.dispose();
  });
});
