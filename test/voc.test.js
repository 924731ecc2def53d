'use strict';
// Detection data and evaluation (issue 15): the VOC annotation parser (a strict XML subset, with
// limits), sp.data.voc on a hand-written VOCdevkit, sp.makeDetectionData's round trip through
// sp.data.voc, and sp.vocEval on hand-computed cases and against py-faster-rcnn's voc_eval.py
// (test/fixtures/voc: a numpy port's outputs, written once; python is not needed here).
const { expect } = require('chai');
const fs = require('fs');
const os = require('os');
const path = require('path');
const zlib = require('zlib');
const sharp = require('sharp');
const sp = require('../dist');
const { parseXml } = require('../dist/io/voc');

function expectThrow(fn, pattern, code = 'SPPNET_INVALID_ARGUMENT') {
  let err;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected an error matching ${pattern}`).to.be.instanceOf(sp.SppnetError);
  expect(err.message).to.match(pattern);
  expect(err.code).to.equal(code);
}

async function expectReject(p, pattern, code = 'SPPNET_INVALID_ARGUMENT') {
  let err;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected an error matching ${pattern}`).to.be.instanceOf(sp.SppnetError);
  expect(err.message).to.match(pattern);
  expect(err.code).to.equal(code);
}

const obj = (name, [x1, y1, x2, y2], { difficult = 0, truncated = 0, extra = '' } = {}) =>
  `<object><name>${name}</name><pose>Left</pose><truncated>${truncated}</truncated><difficult>${difficult}</difficult>` +
  `<bndbox><xmin>${x1}</xmin><ymin>${y1}</ymin><xmax>${x2}</xmax><ymax>${y2}</ymax></bndbox>${extra}</object>`;
const ann = (objects, { w = 353, h = 500, head = '' } = {}) =>
  `${head}<annotation><folder>VOC2007</folder><filename>x.jpg</filename><size><width>${w}</width><height>${h}</height><depth>3</depth></size>` +
  `<segmented>0</segmented>${objects.join('\n')}</annotation>\n`;

describe('VOC annotations: the XML subset', function () {
  it('reads a VOC2007 annotation: size, objects, boxes as written (1-based, inclusive), difficult, truncated', function () {
    const xml = `<?xml version="1.0" encoding="utf-8"?>
<!-- a comment -->
<annotation verified="yes">
\t<folder>VOC2007</folder>
\t<filename>000001.jpg</filename>
\t<source><database>The VOC2007 Database</database><flickrid>341012865</flickrid></source>
\t<size><width>353</width><height>500</height><depth>3</depth></size>
\t<segmented>0</segmented>
\t${obj('dog', [48, 240, 195, 371], { truncated: 1 })}
\t${obj('person', [8, 12, 352, 498], { difficult: 1, extra: '<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>' })}
\t<note>fish &amp; chips &lt;3 &#65;&#x42;<![CDATA[<raw & text>]]></note>
</annotation>
`;
    const a = sp.parseVocAnnotation(Buffer.from(xml), 'test: 000001.xml');
    expect(a).to.deep.equal({
      filename: '000001.jpg', width: 353, height: 500, depth: 3,
      objects: [
        { name: 'dog', box: [48, 240, 195, 371], difficult: false, truncated: true, pose: 'Left' },
        { name: 'person', box: [8, 12, 352, 498], difficult: true, truncated: false, pose: 'Left' },
      ],
    });
    const root = parseXml(xml, 'test');
    expect(root.attributes).to.deep.equal({ verified: 'yes' });
    expect(root.children.find((c) => c.name === 'note').text).to.equal('fish & chips <3 AB<raw & text>');
    // Optional fields: difficult and truncated 0 when absent, depth 3, pose Unspecified; decimals allowed in boxes.
    const b = sp.parseVocAnnotation('<annotation><size><width>10</width><height>20</height></size><object><name> cat </name><bndbox><xmin>1.5</xmin><ymin>2</ymin><xmax>9</xmax><ymax>20</ymax></bndbox></object></annotation>', 'b');
    expect(b).to.deep.equal({ filename: '', width: 10, height: 20, depth: 3, objects: [{ name: 'cat', box: [1.5, 2, 9, 20], difficult: false, truncated: false, pose: 'Unspecified' }] });
  });

  it("reads VOC2012's richer objects: parts with their own boxes, actions, points, a nested <annotation> in <source>", function () {
    const xml = `<annotation>
\t<folder>VOC2012</folder>
\t<filename>2007_000027.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t\t<image>flickr</image>
\t</source>
\t<size>
\t\t<width>486</width>
\t\t<height>500</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>person</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>174</xmin>
\t\t\t<ymin>101</ymin>
\t\t\t<xmax>349</xmax>
\t\t\t<ymax>351</ymax>
\t\t</bndbox>
\t\t<part>
\t\t\t<name>head</name>
\t\t\t<bndbox><xmin>169</xmin><ymin>104</ymin><xmax>209</xmax><ymax>146</ymax></bndbox>
\t\t</part>
\t\t<part>
\t\t\t<name>hand</name>
\t\t\t<bndbox><xmin>278</xmin><ymin>210</ymin><xmax>297</xmax><ymax>233</ymax></bndbox>
\t\t</part>
\t\t<actions><jumping>0</jumping><other>1</other><walking>0</walking></actions>
\t\t<point><x>265</x><y>155</y></point>
\t</object>
</annotation>
`;
    expect(sp.parseVocAnnotation(xml, 'f')).to.deep.equal({
      filename: '2007_000027.jpg', width: 486, height: 500, depth: 3,
      objects: [{ name: 'person', box: [174, 101, 349, 351], difficult: false, truncated: false, pose: 'Unspecified' }],
    });
  });

  it('writes annotations that read back the same, names escaped', function () {
    const a = { filename: 'a&b.jpg', width: 64, height: 48, depth: 3, objects: [
      { name: 'tom & "jerry" <x>', box: [1, 2, 30, 40], difficult: true, truncated: false, pose: 'Frontal' },
      { name: 'disc', box: [5, 5, 64, 48], difficult: false, truncated: true, pose: 'Unspecified' },
    ] };
    const xml = sp.formatVocAnnotation(a);
    expect(xml).to.include('<name>tom &amp; &quot;jerry&quot; &lt;x&gt;</name>');
    expect(sp.parseVocAnnotation(xml, 'x')).to.deep.equal(a);
  });

  it('refuses malformed XML with the file and line in the message', function () {
    const bad = [
      ['', /F: line 1: the document is empty/],
      ['<annotation>', /<annotation> \(line 1\) is never closed/],
      ['<a>\n<b>\n</a>', /F: line 3: <\/a> closes <b> \(opened on line 2\)/],
      ['<a/><b/>', /content after the root element/],
      ['<a/> text', /text after the root element/],
      ['text <a/>', /text before the root element/],
      ['<!DOCTYPE lolz [<!ENTITY lol "lol">]><a>&lol;</a>', /a DOCTYPE \(not allowed/],
      ['<a><!ENTITY x "y"></a>', /DOCTYPE or declaration inside the document/],
      ['<a>&lol;</a>', /an unknown entity &lol;/],
      ['<a>fish & chips</a>', /a bare '&'/],
      ['<a>&#0;</a>', /an invalid character reference/],
      ['<a x=1/>', /attribute x in <a> must be quoted/],
      ['<a x="1" x="2"/>', /the attribute x appears twice/],
      ['<a x="<"/>', /a '<' in the value of the attribute x/],
      ['<a><!-- never closed </a>', /a comment that is never closed/],
      ['<a>\n\n<![CDATA[ x </a>', /F: line 3: a CDATA section that is never closed/],
      ['<a></a  b>', /expected '>' to close <\/a/],
      ['<a><1/></a>', /expected an element name after </],
      ['</a>', /a closing tag <\/a> with no element open/],
      ['<a><?xml version="1.0"?></a>', null], // a processing instruction inside: allowed
      ['<!-- c --><?xml version="1.0"?><a/>', /an XML declaration that is not at the start/],
    ];
    for (const [text, pattern] of bad) {
      if (pattern === null) parseXml(text, 'F');
      else expectThrow(() => parseXml(text, 'F'), pattern);
    }
    // Non-UTF-8 bytes.
    expectThrow(() => sp.parseVocAnnotation(Buffer.from([0x3c, 0x61, 0xff, 0x3e]), 'sp.data.voc: bad.xml'), /bad\.xml: not valid UTF-8/);
  });

  it('refuses annotations that are not VOC: the file, the line and the field in the message', function () {
    const cases = [
      ['<annotations/>', /the root element is <annotations>, expected <annotation>/],
      ['<annotation><object/></annotation>', /<annotation> has no <size>/],
      [ann([]).replace('<width>353', '<width>35.3'), /<width> must be an integer, got "35\.3"/],
      [ann([]).replace('<width>353', '<width>0'), /the image size must be positive/],
      [ann([]).replace('<height>500</height>', '<height>500</height><height>2</height>'), /<size> has 2 <height> elements, expected one/],
      [ann(['<object><name>dog</name></object>']), /line 1: <object> has no <bndbox>/],
      [ann(['<object><bndbox/></object>']), /<object> has no <name>/],
      [ann(['<object><name> </name><bndbox/></object>']), /an empty <name>/],
      [ann([obj('dog', [10, 5, 9, 8])]), /the box of dog has xmax < xmin or ymax < ymin: \[10, 5, 9, 8\]/],
      [ann([obj('dog', ['1e', 5, 9, 8])]), /<xmin> must be a number, got "1e"/],
      [ann([obj('dog', ['', 5, 9, 8])]), /<xmin> must be a number, got ""/],
      [ann([obj('dog', [1, 5, 9, 8], { difficult: 2 })]), /<difficult> must be 0 or 1, got "2"/],
      [ann([obj('dog', [1, 5, 9, 8], { truncated: 'yes' })]), /<truncated> must be 0 or 1, got "yes"/],
    ];
    for (const [text, pattern] of cases) expectThrow(() => sp.parseVocAnnotation(text, 'sp.data.voc: /d/Annotations/x.xml'), new RegExp(`^sp\\.data\\.voc: /d/Annotations/x\\.xml: (line \\d+: )?${pattern.source}`));
  });

  it('has limits: bytes, objects, nesting, elements (SPPNET_TOO_LARGE, naming the option)', function () {
    const three = ann([obj('a', [1, 1, 2, 2]), obj('b', [1, 1, 2, 2]), obj('c', [1, 1, 2, 2])]);
    expect(sp.parseVocAnnotation(three, 'f', { maxObjects: 3 }).objects).to.have.length(3);
    expectThrow(() => sp.parseVocAnnotation(three, 'f', { maxObjects: 2 }), /^f: 3 objects, more than options\.maxObjects 2/, 'SPPNET_TOO_LARGE');
    expectThrow(() => sp.parseVocAnnotation(three, 'f', { maxBytes: 100 }), /^f: the file has \d+ bytes, more than options\.maxBytes 100/, 'SPPNET_TOO_LARGE');
    expectThrow(() => parseXml('<a>'.repeat(70) + '</a>'.repeat(70), 'f'), /^f: line 1: elements nested deeper than 64/, 'SPPNET_TOO_LARGE');
    expectThrow(() => parseXml(`<a>${'<b/>'.repeat(20)}</a>`, 'f', { maxElements: 10 }), /^f: more than 10 elements/, 'SPPNET_TOO_LARGE');
    // The element cap follows the object cap: a file of many small elements outside <object>s is refused too.
    expectThrow(() => sp.parseVocAnnotation(ann(['<x/>'.repeat(200)]), 'f', { maxObjects: 1 }), /more than 192 elements/, 'SPPNET_TOO_LARGE');
  });
});

describe('sp.data.voc', function () {
  let root;
  const write = (rel, text) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  };
  before(function () {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-voc-'));
    write('ImageSets/Main/trainval.txt', '000005\n000007\n\n');
    write('ImageSets/Main/test.txt', '000001\r\n');
    write('ImageSets/Main/dog_trainval.txt', '000005 -1\n000007  1\n');
    write('Annotations/000005.xml', ann([obj('chair', [263, 211, 324, 339]), obj('chair', [165, 264, 253, 372], { difficult: 1, truncated: 1 })], { w: 500, h: 375 }));
    write('Annotations/000007.xml', ann([obj('car', [141, 50, 500, 330], { truncated: 1 })], { w: 500, h: 333 }));
    write('Annotations/000001.xml', ann([obj('dog', [48, 240, 195, 371]), obj('person', [8, 12, 352, 498])]));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('reads a split: ids, image paths, sizes, objects with VOC labels, boxes as in the files', async function () {
    const ds = await sp.data.voc(root);
    expect(ds.split).to.equal('trainval');
    expect(ds.classes).to.deep.equal(sp.VOC_CLASSES);
    expect(ds.length).to.equal(2);
    expect(ds.objectCount).to.equal(3);
    expect(ds.images).to.deep.equal([
      { id: '000005', path: path.join(root, 'JPEGImages', '000005.jpg'), width: 500, height: 375, objects: [
        { name: 'chair', label: 8, box: [263, 211, 324, 339], difficult: false, truncated: false, pose: 'Left' },
        { name: 'chair', label: 8, box: [165, 264, 253, 372], difficult: true, truncated: true, pose: 'Left' },
      ] },
      { id: '000007', path: path.join(root, 'JPEGImages', '000007.jpg'), width: 500, height: 333, objects: [
        { name: 'car', label: 6, box: [141, 50, 500, 330], difficult: false, truncated: true, pose: 'Left' },
      ] },
    ]);
    const test = await sp.data.voc(root, { split: 'test' });
    expect(test.images.map((i) => [i.id, i.objects.map((o) => [o.name, o.label])])).to.deep.equal([['000001', [['dog', 11], ['person', 14]]]]);
    expect(test.description).to.equal(`VOC ${root} (test): 1 images, 2 objects of 20 classes`);
  });

  it('takes a class list; objects of other classes are an error, or left out with unknown: skip', async function () {
    const ds = await sp.data.voc(root, { split: 'test', classes: ['person', 'dog'] });
    expect(ds.images[0].objects.map((o) => [o.name, o.label])).to.deep.equal([['dog', 1], ['person', 0]]);
    await expectReject(sp.data.voc(root, { split: 'test', classes: ['person'] }),
      new RegExp(`^sp\\.data\\.voc: ${path.join(root, 'Annotations', '000001.xml').replace(/[.\\/]/g, '\\$&')}: an object of class "dog", which options\\.classes does not name \\(person\\); pass the dataset's classes, or unknown: 'skip'`));
    const skip = await sp.data.voc(root, { split: 'test', classes: ['person'], unknown: 'skip' });
    expect(skip.images[0].objects.map((o) => o.name)).to.deep.equal(['person']);
    expect(skip.objectCount).to.equal(1);
  });

  it('says what is wrong with the folder, the split file or an annotation, naming the file', async function () {
    await expectReject(sp.data.voc(path.join(root, 'nope')), /cannot read the split file .*trainval\.txt: ENOENT \(.*nope has no ImageSets\/Main folder: is it a VOCdevkit year folder/);
    await expectReject(sp.data.voc(root, { split: 'val' }), /cannot read the split file .*val\.txt: ENOENT \(splits there: test, trainval\)/);
    await expectReject(sp.data.voc(root, { split: 'dog_trainval' }), /dog_trainval\.txt: line 1 must be one image id \(letters, digits, _ \. -\), got "000005 -1"/);
    await expectReject(sp.data.voc(root, { split: '../x' }), /options\.split must be a split name/);
    await expectReject(sp.data.voc(''), /root must be a folder path/);
    await expectReject(sp.data.voc(root, { classes: ['a', 'a'] }), /options\.classes names "a" twice/);
    await expectReject(sp.data.voc(root, { classes: [] }), /options\.classes must be a non-empty array/);
    await expectReject(sp.data.voc(root, { unknown: 'ignore' }), /options\.unknown must be 'error' or 'skip'/);
    await expectReject(sp.data.voc(root, { maxObjects: 0 }), /options\.maxObjects must be a positive integer/);
    // Limits.
    await expectReject(sp.data.voc(root, { maxImages: 1 }), /trainval\.txt lists 2 images, more than options\.maxImages 1/, 'SPPNET_TOO_LARGE');
    await expectReject(sp.data.voc(root, { maxObjects: 1 }), /000005\.xml: 2 objects, more than options\.maxObjects 1/, 'SPPNET_TOO_LARGE');
    await expectReject(sp.data.voc(root, { maxBytes: 200 }), /000005\.xml: the file has \d+ bytes, more than options\.maxBytes 200/, 'SPPNET_TOO_LARGE');
    // Broken lists and files.
    write('ImageSets/Main/dup.txt', '000005\n000005\n');
    await expectReject(sp.data.voc(root, { split: 'dup' }), /dup\.txt: line 2: the image id 000005 appears twice/);
    write('ImageSets/Main/empty.txt', '\n');
    await expectReject(sp.data.voc(root, { split: 'empty' }), /empty\.txt lists no images/);
    write('ImageSets/Main/missing.txt', '000005\n000009\n');
    await expectReject(sp.data.voc(root, { split: 'missing' }), /cannot read the annotation of 000009 \(.*missing\.txt lists it\): ENOENT/);
    write('ImageSets/Main/broken.txt', '000010\n');
    write('Annotations/000010.xml', '<annotation>\n<size><width>5</width><height>5</height></size>\n<object><name>dog</name>\n</annotation>');
    await expectReject(sp.data.voc(root, { split: 'broken' }), /^sp\.data\.voc: .*Annotations\/000010\.xml: line 4: <\/annotation> closes <object> \(opened on line 3\)/);
  });
});

/** Minimal IDX files (gzipped) of `n` 28x28 items with labels 0..9. */
function writeIdx(dir, set, n) {
  const img = Buffer.alloc(16 + n * 784);
  img.writeUInt32BE(0x0803, 0);
  [n, 28, 28].forEach((d, i) => img.writeUInt32BE(d, 4 + 4 * i));
  for (let k = 0; k < n; k++) for (let y = 6; y < 22; y++) for (let x = 8; x < 20; x++) img[16 + k * 784 + y * 28 + x] = 255;
  const lab = Buffer.alloc(8 + n);
  lab.writeUInt32BE(0x0801, 0);
  lab.writeUInt32BE(n, 4);
  for (let k = 0; k < n; k++) lab[8 + k] = k % 10;
  fs.writeFileSync(path.join(dir, `${set}-images-idx3-ubyte.gz`), zlib.gzipSync(img));
  fs.writeFileSync(path.join(dir, `${set}-labels-idx1-ubyte.gz`), zlib.gzipSync(lab));
}

describe('sp.makeDetectionData', function () {
  this.timeout(60000);
  let tmp;
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-det-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('writes a VOC-format dataset that sp.data.voc reads back: splits, sizes, boxes, flags, counts', async function () {
    const root = path.join(tmp, 'a');
    const r = await sp.makeDetectionData(root, { images: 5, seed: 7, minObjects: 2, maxObjects: 6 });
    expect(r.classes).to.deep.equal(sp.SYNTHETIC_CLASSES);
    expect(r.trainval + r.test).to.equal(5);
    expect(r.test).to.equal(Math.round(5 * 0.5));
    expect(sp.detectionClasses(root)).to.deep.equal(r.classes);
    const splits = [await sp.data.voc(root, { classes: r.classes }), await sp.data.voc(root, { split: 'test', classes: r.classes })];
    const images = splits.flatMap((s) => s.images);
    expect(images.map((i) => i.id).sort()).to.deep.equal(['000000', '000001', '000002', '000003', '000004']);
    const objects = images.flatMap((i) => i.objects);
    expect(objects.length).to.equal(r.objects);
    expect(objects.filter((o) => o.difficult).length).to.equal(r.difficult);
    expect(objects.filter((o) => o.truncated).length).to.equal(r.truncated);
    for (const im of images) {
      const meta = await sharp(im.path).metadata();
      expect([meta.format, meta.width, meta.height], im.id).to.deep.equal(['jpeg', im.width, im.height]);
      expect(im.width).to.be.within(96, 160);
      expect(im.height).to.be.within(96, 160);
      expect(im.objects.length).to.be.at.most(6); // hidden objects are left out
      for (const o of im.objects) {
        const [x1, y1, x2, y2] = o.box;
        expect(Number.isInteger(x1) && Number.isInteger(y2), 'integer boxes').to.equal(true);
        expect(x1 >= 1 && y1 >= 1 && x2 <= im.width && y2 <= im.height && x1 <= x2 && y1 <= y2, `${im.id}: ${o.box} in ${im.width}x${im.height}`).to.equal(true);
        expect(r.classes[o.label]).to.equal(o.name);
      }
    }
    // The boxes are those the scene drawing gives (image 0, the defaults): the round trip loses nothing.
    const { drawScene } = require('../dist/detect/scenes');
    const { mixSeed } = require('../dist/core/random');
    const scene = drawScene(mixSeed(7, 0), { minSize: [96, 96], maxSize: [160, 160], minObjects: 2, maxObjects: 6, minObjectSize: 8, maxObjectScale: 0.6, shapes: 8, noise: 0.05, clutter: 6, difficultSide: 8, minVisible: 0.4 });
    const im0 = images.find((i) => i.id === '000000');
    expect(im0.objects.map((o) => [o.label, o.box, o.difficult, o.truncated])).to.deep.equal(scene.objects.map((o) => [o.label, o.box, o.difficult, o.truncated]));
    expect([im0.width, im0.height]).to.deep.equal([scene.width, scene.height]);
    // A detector that returns the ground truth scores AP 1 on it.
    const test = splits[1];
    const dets = test.images.flatMap((im) => im.objects.map((o, k) => ({ image: im.id, label: o.name, score: 1 - k / 100, box: o.box })));
    const ev = sp.vocEval(dets, test);
    for (const c of ev.classes) expect(Number.isNaN(c.ap) ? c.positives : c.ap, c.name).to.be.closeTo(Number.isNaN(c.ap) ? 0 : 1, 1e-15);
  });

  it('is deterministic for a seed (the same bytes), and another seed draws other scenes', async function () {
    const files = (root) => ['ImageSets/Main/trainval.txt', 'ImageSets/Main/test.txt', 'classes.txt', ...['000000', '000001', '000002'].flatMap((id) => [`Annotations/${id}.xml`, `JPEGImages/${id}.jpg`])]
      .map((f) => fs.readFileSync(path.join(root, f)).toString('base64'));
    await sp.makeDetectionData(path.join(tmp, 'b1'), { images: 3, seed: 11 });
    await sp.makeDetectionData(path.join(tmp, 'b2'), { images: 3, seed: 11 });
    await sp.makeDetectionData(path.join(tmp, 'b3'), { images: 3, seed: 12 });
    expect(files(path.join(tmp, 'b1'))).to.deep.equal(files(path.join(tmp, 'b2')));
    expect(files(path.join(tmp, 'b1')).slice(3)).to.not.deep.equal(files(path.join(tmp, 'b3')).slice(3));
  });

  it('pastes Fashion-MNIST items as objects of ten more classes when given IDX files', async function () {
    const idx = path.join(tmp, 'fashion');
    fs.mkdirSync(idx);
    writeIdx(idx, 'train', 20);
    writeIdx(idx, 't10k', 10);
    const root = path.join(tmp, 'f');
    const r = await sp.makeDetectionData(root, { images: 6, seed: 1, fashion: idx, minObjects: 4, maxObjects: 6, shapes: 3 });
    expect(r.classes).to.deep.equal(['disc', 'square', 'triangle', ...sp.FASHION_CLASSES]);
    const ds = [await sp.data.voc(root, { classes: sp.detectionClasses(root) }), await sp.data.voc(root, { split: 'test', classes: sp.detectionClasses(root) })];
    const labels = ds.flatMap((d) => d.images.flatMap((i) => i.objects.map((o) => o.label)));
    expect(labels.some((l) => l >= 3), 'some items').to.equal(true);
    expect(labels.some((l) => l < 3), 'some shapes').to.equal(true);
    await expectReject(sp.makeDetectionData(path.join(tmp, 'g'), { images: 1, fashion: path.join(tmp, 'nowhere') }), /cannot read the Fashion-MNIST file .*nowhere\/train-images-idx3-ubyte/);
  });

  it('checks its options and refuses to write into a folder that has files', async function () {
    await expectReject(sp.makeDetectionData(path.join(tmp, 'a'), { images: 1 }), /a exists and is not an empty folder/);
    await expectReject(sp.makeDetectionData(path.join(tmp, 'x'), { images: 0 }), /options\.images must be an integer in \[1, 100000\], got number 0/);
    await expectReject(sp.makeDetectionData(path.join(tmp, 'x'), { minSize: 8 }), /options\.minSize must be an integer in \[16, 4096\]/);
    await expectReject(sp.makeDetectionData(path.join(tmp, 'x'), { minSize: 100, maxSize: [120, 90] }), /options\.maxSize must be an integer in \[100, 4096\] or a pair/);
    await expectReject(sp.makeDetectionData(path.join(tmp, 'x'), { maxObjects: 51 }), /options\.maxObjects must be an integer in \[1, 50\]/);
    await expectReject(sp.makeDetectionData(path.join(tmp, 'x'), { testFraction: 2 }), /options\.testFraction must be a number in \[0, 1\]/);
    await expectReject(sp.makeDetectionData(path.join(tmp, 'x'), { shapes: 9 }), /options\.shapes must be an integer in \[2, 8\]/);
    await expectReject(sp.makeDetectionData(path.join(tmp, 'no', 'x'), { images: 1 }), /the folder of .*no\/x does not exist/);
    expect(fs.existsSync(path.join(tmp, 'x'))).to.equal(false);
    // Written beside root and renamed when complete: no partial folder is left behind.
    expect(fs.readdirSync(tmp).filter((f) => f.includes('partial'))).to.deep.equal([]);
  });
});

describe('sp.vocEval', function () {
  // One class unless said; images a and b.
  const gt = (objects, classes = ['cat', 'dog']) => ({ classes, images: [{ id: 'a', objects }, { id: 'b', objects: [] }] });
  const det = (box, score, label = 'cat', image = 'a') => ({ image, label, score, box });
  const G1 = [10, 10, 59, 59], G2 = [100, 100, 149, 149];

  it('computes overlaps in pixels, inclusive (x2 - x1 + 1), as voc_eval.py', function () {
    expect(sp.vocIou([1, 1, 1, 1], [1, 1, 1, 1])).to.equal(1);
    expect(sp.vocIou([1, 1, 2, 2], [2, 2, 3, 3])).to.equal(1 / 7); // 1 pixel shared of 4 + 4 - 1
    expect(sp.vocIou([1, 1, 10, 10], [11, 1, 20, 10])).to.equal(0);
    expect(sp.vocIou([1, 1, 10, 10], [1, 1, 10, 5])).to.equal(0.5);
  });

  it('perfect detections: AP 1 per class and mAP 1, in both AP modes', function () {
    const g = gt([{ name: 'cat', box: G1 }, { name: 'dog', box: G2 }, { label: 0, box: [200, 10, 230, 40] }]);
    const dets = [det(G1, 0.9), det(G2, 0.8, 'dog'), det([200, 10, 230, 40], 0.7, 0)];
    for (const use07 of [true, false]) {
      const r = sp.vocEval(dets, g, { use07 });
      // 11 x (1 / 11) adds up to 1 + 2^-52, as voc_eval.py's loop gives it.
      expect(r.ap).to.deep.equal(use07 ? [1.0000000000000002, 1.0000000000000002] : [1, 1]);
      expect(r.mAP).to.be.closeTo(1, 1e-15);
      expect(r.classes[0]).to.include({ name: 'cat', positives: 2, detections: 2, truePositives: 2, falsePositives: 0 });
    }
  });

  it('one false positive ahead of the true positive: precision 1/2 at full recall, AP 1/2', function () {
    const r = sp.vocEval([det(G2, 0.9), det(G1, 0.8)], gt([{ name: 'cat', box: G1 }]));
    expect(r.classes[0].recall).to.deep.equal([0, 1]);
    expect(r.classes[0].precision).to.deep.equal([0, 0.5]);
    expect(r.ap[0]).to.be.closeTo(0.5, 1e-15); // 11 points of 0.5
    expect(sp.vocEval([det(G2, 0.9), det(G1, 0.8)], gt([{ name: 'cat', box: G1 }]), { use07: false }).ap[0]).to.equal(0.5);
  });

  it('TP, FP, TP over two objects: 11-point AP (6 x 1 + 5 x 2/3) / 11, envelope AP 1/2 + 1/2 x 2/3', function () {
    const dets = [det(G1, 0.9), det([300, 300, 320, 320], 0.8), det(G2, 0.7)];
    const g = gt([{ name: 'cat', box: G1 }, { name: 'cat', box: G2 }]);
    const r = sp.vocEval(dets, g);
    expect(r.classes[0].recall).to.deep.equal([0.5, 0.5, 1]);
    expect(r.classes[0].precision).to.deep.equal([1, 0.5, 2 / 3]);
    expect(r.ap[0]).to.be.closeTo((6 + 5 * (2 / 3)) / 11, 1e-12);
    expect(sp.vocEval(dets, g, { use07: false }).ap[0]).to.be.closeTo(0.5 + 0.5 * (2 / 3), 1e-12);
    // The detections' order in the array does not matter, only their scores.
    expect(sp.vocEval([dets[2], dets[0], dets[1]], g).ap[0]).to.equal(r.ap[0]);
  });

  it('duplicate detections: the second on a taken object is a false positive', function () {
    const g = gt([{ name: 'cat', box: G1 }, { name: 'cat', box: G2 }]);
    const r = sp.vocEval([det(G1, 0.9), det([11, 11, 59, 59], 0.8), det(G2, 0.7)], g);
    expect(r.classes[0]).to.include({ truePositives: 2, falsePositives: 1 });
    expect(r.classes[0].precision).to.deep.equal([1, 0.5, 2 / 3]);
    expect(r.ap[0]).to.be.closeTo(28 / 33, 1e-12);
    // One object, two hits: AP still 1 (the duplicate comes after full recall).
    expect(sp.vocEval([det(G1, 0.9), det(G1, 0.8)], gt([{ name: 'cat', box: G1 }])).ap[0]).to.be.closeTo(1, 1e-15);
  });

  it('difficult objects: not counted, and a detection on one is neither true nor false positive', function () {
    const g = gt([{ name: 'cat', box: G1 }, { name: 'cat', box: G2, difficult: true }, { name: 'dog', box: [200, 200, 220, 220], difficult: true }]);
    const r = sp.vocEval([det(G2, 0.95), det(G2, 0.9), det(G1, 0.8)], g);
    expect(r.classes[0]).to.include({ positives: 1, difficult: 1, truePositives: 1, falsePositives: 0 });
    expect(r.classes[0].recall).to.deep.equal([0, 0, 1]);
    expect(r.classes[0].precision).to.deep.equal([0, 0, 1]); // 0 / max(0, eps) before the first
    expect(r.ap[0]).to.be.closeTo(1, 1e-15);
    // A class whose only object is difficult has no ground truth: NaN, left out of the mAP.
    expect(r.ap[1]).to.be.NaN;
    expect(r.classes[1].positives).to.equal(0);
    expect(r.mAP).to.equal(r.ap[0]);
  });

  it('a class with no ground truth: AP NaN (voc_eval.py: 0 in 11-point mode), its detections false positives, not in the mAP', function () {
    const g = gt([{ name: 'cat', box: G1 }], ['cat', 'dog', 'bird']);
    const r = sp.vocEval([det(G1, 0.9), det(G1, 0.8, 'dog'), det(G2, 0.7, 'dog', 'b')], g);
    expect(r.ap[0]).to.be.closeTo(1, 1e-15);
    expect(r.ap[1]).to.be.NaN;
    expect(r.ap[2]).to.be.NaN;
    expect(r.classes[1]).to.include({ detections: 2, truePositives: 0, falsePositives: 2, positives: 0 });
    expect(r.mAP).to.be.closeTo(1, 1e-15);
    expect(sp.vocEval([], { classes: ['cat'], images: [{ id: 'a', objects: [] }] }).mAP).to.be.NaN;
    // A class with ground truth and no detections: AP 0.
    expect(sp.vocEval([], g).ap[0]).to.equal(0);
  });

  it('matches the object of highest overlap only, even when it is taken; images do not mix', function () {
    // det2 overlaps the taken A more than B (which it also overlaps by > 0.5): a false positive.
    const A = [0, 0, 99, 99], B = [20, 0, 119, 99];
    const g = { classes: ['cat'], images: [{ id: 'a', objects: [{ name: 'cat', box: A }, { name: 'cat', box: B }] }, { id: 'b', objects: [{ name: 'cat', box: A }] }] };
    expect(sp.vocIou([5, 0, 104, 99], A)).to.be.above(sp.vocIou([5, 0, 104, 99], B));
    expect(sp.vocIou([5, 0, 104, 99], B)).to.be.above(0.5);
    const r = sp.vocEval([det(A, 0.9), det([5, 0, 104, 99], 0.8), det(A, 0.7, 'cat', 'b')], g);
    expect(r.classes[0]).to.include({ truePositives: 2, falsePositives: 1, positives: 3 });
    // A detection of the wrong class does not take the object.
    expect(sp.vocEval([det(G1, 0.9, 'dog'), det(G1, 0.8)], gt([{ name: 'cat', box: G1 }])).classes[0].truePositives).to.equal(1);
  });

  it('an overlap of exactly the threshold: not enough, as voc_eval.py (>); enough with inclusive: true, as the MATLAB devkit (>=)', function () {
    const g = gt([{ name: 'cat', box: [1, 1, 10, 10] }]);
    const d = [det([1, 1, 10, 5], 0.9)]; // IoU exactly 0.5
    expect(sp.vocEval(d, g).classes[0].truePositives).to.equal(0);
    expect(sp.vocEval(d, g, { inclusive: true }).classes[0].truePositives).to.equal(1);
    expect(sp.vocEval(d, g, { iou: 0.4 }).classes[0].truePositives).to.equal(1);
    expect(sp.vocEval(d, g, { iou: 0.6, inclusive: true }).classes[0].truePositives).to.equal(0);
  });

  it("11-point thresholds are numpy's arange(0, 1.1, 0.1): recall exactly 0.6 does not reach t = 0.6000000000000001", function () {
    // 10 objects, 6 found first and nothing else: recall 0.6 at precision 1.
    const objects = Array.from({ length: 10 }, (_, i) => ({ name: 'cat', box: [i * 20, 0, i * 20 + 9, 9] }));
    const dets = objects.slice(0, 6).map((o, i) => det(o.box, 1 - i / 10));
    const r = sp.vocEval(dets, gt(objects));
    expect(r.classes[0].recall[5]).to.equal(0.6);
    expect(r.ap[0]).to.be.closeTo(6 / 11, 1e-15); // t = 0 .. 0.5
    expect(sp.vocEval(dets, gt(objects), { use07: false }).ap[0]).to.be.closeTo(0.6, 1e-15);
    expect(sp.vocAp([0.5, 1], [1, 0.5], true)).to.be.closeTo((6 + 5 * 0.5) / 11, 1e-15);
  });

  it('agrees with py-faster-rcnn voc_eval.py (a numpy port, fixtures) on random cases, to 1e-12', function () {
    const { cases, source } = require('./fixtures/voc/voc_eval_cases.json');
    expect(source).to.match(/voc_eval_port\.py/);
    let compared = 0;
    for (const c of cases) {
      for (const [key, use07] of [['use07', true], ['area', false]]) {
        const r = sp.vocEval(c.detections, { classes: c.classes, images: c.images }, { iou: c.iou, use07 });
        c.expected[key].forEach((e, k) => {
          const got = r.classes[k];
          const what = `case ${c.seed} ${key} ${e.name}`;
          expect(got.positives, what).to.equal(e.npos);
          expect(got.precision.length, what).to.equal(e.precision.length);
          got.precision.forEach((p, i) => expect(p, `${what} precision ${i}`).to.be.closeTo(e.precision[i], 1e-12));
          if (e.npos === 0) {
            // voc_eval.py: 0 in 11-point mode (NaN recalls), NaN otherwise; here NaN either way.
            expect(e.ap, what).to.equal(use07 ? 0 : null);
            expect(got.ap, what).to.be.NaN;
            return;
          }
          got.recall.forEach((x, i) => expect(x, `${what} recall ${i}`).to.be.closeTo(e.recall[i], 1e-12));
          expect(got.ap, what).to.be.closeTo(e.ap, 1e-12);
          compared++;
        });
      }
    }
    expect(compared).to.equal(cases.length * 2 * 3);
  });

  it('evaluates against a dataset from sp.data.voc, and refuses detections it cannot place', function () {
    const g = gt([{ name: 'cat', box: G1 }]);
    expectThrow(() => sp.vocEval([det(G1, 0.9, 'cat', 'zzz')], g), /^sp\.vocEval: detections\[0\]\.image must be the id of a ground-truth image, got the string "zzz"/);
    expectThrow(() => sp.vocEval([det(G1, 0.9, 'cow')], g), /detections\[0\]\.label must be a class name of the ground truth or an index in \[0, 2\), got the string "cow"/);
    expectThrow(() => sp.vocEval([det(G1, 0.9, 2)], g), /detections\[0\]\.label must be .* got number 2/);
    expectThrow(() => sp.vocEval([det(G1, NaN)], g), /detections\[0\]\.score must be a finite number, got number NaN/);
    expectThrow(() => sp.vocEval([det(G1, 0.9), det([5, 5, 4, 9], 0.9)], g), /detections\[1\]\.box must be \[x1, y1, x2, y2\], finite, x2 >= x1, y2 >= y1/);
    expectThrow(() => sp.vocEval({}, g), /detections must be an array/);
    expectThrow(() => sp.vocEval([], {}), /groundTruth must be a dataset from sp\.data\.voc or \{ classes, images/);
    expectThrow(() => sp.vocEval([], { classes: ['cat'], images: [{ id: 'a', objects: [] }, { id: 'a', objects: [] }] }), /groundTruth\.images\[1\]: the image id a appears twice/);
    expectThrow(() => sp.vocEval([], gt([{ name: 'cow', box: G1 }])), /groundTruth\.images\[0\]\.objects\[0\]\.label \(or \.name\) must be a class name/);
    expectThrow(() => sp.vocEval([], g, { iou: 0 }), /options\.iou must be a number in \(0, 1\]/);
    expectThrow(() => sp.vocEval([], g, { use07: 1 }), /options\.use07 must be a boolean/);
  });
});
