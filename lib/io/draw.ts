// Detections drawn onto an image: boxes as outlines and their labels in filled tags, in a built-in
// 5x7 bitmap font (with descenders) scaled by an integer; onto interleaved 8-bit RGB pixels, or from an image file to
// another (sharp, through images.ts).
import { describe, fail, isPositiveInt, overLimit, SppnetError } from '../core/errors';
import { decodeRgb, describeSource, probeImage, writeRgbImage } from './images';

export interface DrawnBox {
  /** [x1, y1, x2, y2]: 0-based inclusive pixel indices (rounded to the nearest); may be fractional or partly outside the image. */
  box: [number, number, number, number];
  /** The text of the tag (printable ASCII; other characters show as '?'); '' draws the box alone. */
  label: string;
  /** Drawn after the label with two decimals ("cat 0.93"). */
  score?: number;
  /** [r, g, b], 0 to 255; default: a palette colour chosen by the label, so one class keeps one colour. */
  colour?: [number, number, number];
}

export interface DrawOptions {
  /** Line width in pixels, drawn inwards from the box's edges; default max(2, round(min(W, H) / 200)). */
  thickness?: number;
  /** Integer scale of the font (1: glyphs of 5x8 pixels in 6x8 cells, capitals 7 high); default max(1, round(min(W, H) / 400)). */
  fontScale?: number;
}

export interface DrawFileOptions extends DrawOptions {
  /** Refuse images with more pixels than this (default 100 megapixels), from the header, before decoding (SPPNET_TOO_LARGE). */
  maxPixels?: number;
  /** JPEG and WebP quality, 1 to 100 (default 90). */
  quality?: number;
}

/** At most this many boxes a call. */
export const DRAW_MAX_BOXES = 10_000;
/** Labels longer than this are cut, ending in '...'. */
export const DRAW_MAX_LABEL = 64;
const MAX_THICKNESS = 1000;
const MAX_FONT_SCALE = 100;

// The font: printable ASCII 32..126, each glyph 8 rows of 5 pixels (a classic 5x7 LCD font with a
// row below for descenders), a row as 2 hex digits (0x10 the leftmost pixel); a glyph fills a 6x8
// cell (a column of space to its right).
const FONT_HEX =
  '0000000000000000 0404040404000400 0a0a0a0000000000 0a0a1f0a1f0a0a00 040f140e051e0400 1819020408130300' + //   ! " # $ %
  '0c12140815120d00 0c04080000000000 0204080808040200 0804020202040800 000a041f040a0000 0004041f04040000' + // & ' ( ) * +
  '00000000000c0408 0000001f00000000 00000000000c0c00 0001020408100000 0e11131519110e00 040c040404040e00' + // , - . / 0 1
  '0e11010204081f00 1f02040201110e00 02060a121f020200 1f101e0101110e00 0608101e11110e00 1f01020408080800' + // 2 3 4 5 6 7
  '0e11110e11110e00 0e11110f01020c00 000c0c000c0c0000 000c0c000c0c0408 0204081008040200 00001f001f000000' + // 8 9 : ; < =
  '0804020102040800 0e11010204000400 0e11010d15150e00 0e1111111f111100 1e11111e11111e00 0e11101010110e00' + // > ? @ A B C
  '1c12111111121c00 1f10101e10101f00 1f10101c10101000 0e11101013110e00 1111111f11111100 0e04040404040e00' + // D E F G H I
  '0702020202120c00 1112141814121100 1010101010101f00 111b151111111100 1111191513111100 0e11111111110e00' + // J K L M N O
  '1e11111e10101000 0e11111115120d00 1e11111e14121100 0f10100e01011e00 1f04040404040400 1111111111110e00' + // P Q R S T U
  '11111111110a0400 11111115151b1100 11110a040a111100 11110a0404040400 1f01020408101f00 0e08080808080e00' + // V W X Y Z [
  '0010080402010000 0e02020202020e00 040a110000000000 0000000000001f00 0804020000000000 00000e010f110f00' + // \ ] ^ _ ` a
  '1010161911111e00 00000e1010110e00 01010d1311110f00 00000e111f100e00 0609081c08080800 00000f11110f010e' + // b c d e f g
  '1010161911111100 04000c0404040e00 020006020202120c 0808090a0c0a0900 0c04040404040e00 00001a1515111100' + // h i j k l m
  '0000161911111100 00000e1111110e00 00001e1111111e10 00000f1111110f01 0000161910101000 00000e100e011e00' + // n o p q r s
  '08081c0808090600 0000111111130d00 00001111110a0400 0000111115150a00 0000110a040a1100 00001111110f010e' + // t u v w x y
  '00001f0204081f00 0204040804040200 0404040404040400 0804040204040800 0000081502000000'; // z { | } ~
export const GLYPH_WIDTH = 5;
/** Rows of a glyph: capitals and digits use the top 7, the descenders of g, j, p, q, y, comma and semicolon the 8th. */
export const GLYPH_HEIGHT = 8;
const FONT = Uint8Array.from(FONT_HEX.replace(/ /g, '').match(/../g) as string[], (h) => parseInt(h, 16));

/** The rows of a printable ASCII character's glyph (bit 0x10 the leftmost pixel); '?' for any other. */
export function glyphRows(ch: string): number[] {
  let c = ch.charCodeAt(0);
  if (!(c >= 32 && c <= 126)) c = 63;
  return Array.from(FONT.subarray((c - 32) * GLYPH_HEIGHT, (c - 31) * GLYPH_HEIGHT));
}

/** 20 colours that tell apart on photographs (Kelly's and Tableau's, less the near-greys). */
export const DRAW_PALETTE: ReadonlyArray<readonly [number, number, number]> = Object.freeze([
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
  [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
  [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [255, 255, 255],
].map((c) => Object.freeze(c) as unknown as readonly [number, number, number]));

/** The default colour of a label: DRAW_PALETTE by its FNV-1a hash (UTF-16 code units), the same in every run. */
export function labelColour(label: string): [number, number, number] {
  let h = 0x811c9dc5;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193) >>> 0;
  return [...DRAW_PALETTE[h % DRAW_PALETTE.length]] as [number, number, number];
}

/** Black or white, whichever contrasts more with `c` (WCAG's contrast ratio on sRGB luminance). */
export function textColour(c: readonly number[]): [number, number, number] {
  const lin = (v: number) => ((v /= 255) <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  const L = 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  return (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) ? [0, 0, 0] : [255, 255, 255];
}

/** The text of a box's tag: the label (cut at DRAW_MAX_LABEL characters, non-ASCII as '?') and the score. */
export function tagText(label: string, score?: number): string {
  let t = label.replace(/[^\x20-\x7e]/gu, '?');
  if (t.length > DRAW_MAX_LABEL) t = t.slice(0, DRAW_MAX_LABEL - 3) + '...';
  if (score !== undefined) t = t ? `${t} ${score.toFixed(2)}` : score.toFixed(2);
  return t;
}

interface Checked {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  colour: [number, number, number];
  text: string;
}

function checkBoxes(fn: string, boxes: unknown): Checked[] {
  if (!Array.isArray(boxes)) fail(`${fn}: boxes must be an array of { box, label, score?, colour? }, got ${describe(boxes)}`);
  if (boxes.length > DRAW_MAX_BOXES) fail(`${fn}: ${boxes.length} boxes, more than the limit of ${DRAW_MAX_BOXES}`, 'SPPNET_TOO_LARGE');
  return boxes.map((b: unknown, i) => {
    const at = `${fn}: boxes[${i}]`;
    if (typeof b !== 'object' || b === null) fail(`${at} must be an object { box, label, score?, colour? }, got ${describe(b)}`);
    const { box, label, score, colour } = b as DrawnBox;
    if (!Array.isArray(box) || box.length !== 4) fail(`${at}.box must be [x1, y1, x2, y2], got ${describe(box)}`);
    box.forEach((v, j) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${at}.box[${j}] must be a finite number, got ${describe(v)}`);
    });
    const [x1, y1, x2, y2] = box.map(Math.round);
    if (x2 < x1 || y2 < y1) fail(`${at}.box must have x1 <= x2 and y1 <= y2 (after rounding), got [${box.join(', ')}]`);
    if (typeof label !== 'string') fail(`${at}.label must be a string, got ${describe(label)}`);
    if (score !== undefined && (typeof score !== 'number' || !Number.isFinite(score))) fail(`${at}.score must be a finite number, got ${describe(score)}`);
    if (colour !== undefined && (!Array.isArray(colour) || colour.length !== 3 || !colour.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)))
      fail(`${at}.colour must be [r, g, b], integers 0 to 255, got ${Array.isArray(colour) ? `[${colour.map((v) => describe(v)).join(', ')}]` : describe(colour)}`);
    return { x1, y1, x2, y2, colour: colour ? ([...colour] as [number, number, number]) : labelColour(label), text: tagText(label, score) };
  });
}

function checkOptions(fn: string, opts: unknown, width: number, height: number): { thickness: number; fontScale: number } {
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const o = opts as DrawOptions;
  const side = Math.min(width, height);
  const pick = (name: 'thickness' | 'fontScale', dflt: number, max: number) => {
    const v = o[name] ?? dflt;
    if (!isPositiveInt(v) || v > max) fail(`${fn}: options.${name} must be an integer from 1 to ${max}, got ${describe(o[name])}`);
    return v;
  };
  return { thickness: pick('thickness', Math.max(2, Math.round(side / 200)), MAX_THICKNESS), fontScale: pick('fontScale', Math.max(1, Math.round(side / 400)), MAX_FONT_SCALE) };
}

/** Fills [x1, x2] x [y1, y2] (inclusive, clipped to the image) with `c`. */
function fillRect(rgb: Uint8Array, W: number, H: number, x1: number, y1: number, x2: number, y2: number, c: readonly number[]): void {
  x1 = Math.max(0, x1), y1 = Math.max(0, y1), x2 = Math.min(W - 1, x2), y2 = Math.min(H - 1, y2);
  for (let y = y1; y <= y2; y++) {
    for (let i = (y * W + x1) * 3, end = (y * W + x2) * 3; i <= end; i += 3) {
      rgb[i] = c[0], rgb[i + 1] = c[1], rgb[i + 2] = c[2];
    }
  }
}

/** The tag of a box: a filled rectangle of its colour with the text in black or white, 1 scaled pixel of padding. */
function drawTag(rgb: Uint8Array, W: number, H: number, b: Checked, s: number): void {
  const tw = (b.text.length * (GLYPH_WIDTH + 1) + 1) * s;
  const th = (GLYPH_HEIGHT + 2) * s;
  const top = Math.max(0, b.y1); // the box's top edge, as seen
  // Above the box's top-left corner; inside the box when there is no room above; slid left (not
  // past x = 0) rather than cut by the right border.
  const ty = top - th >= 0 ? top - th : top;
  const tx = Math.max(0, Math.min(b.x1, W - tw));
  fillRect(rgb, W, H, tx, ty, tx + tw - 1, ty + th - 1, b.colour);
  const ink = textColour(b.colour);
  for (let k = 0; k < b.text.length; k++) {
    const rows = glyphRows(b.text[k]);
    const gx = tx + s + k * (GLYPH_WIDTH + 1) * s;
    if (gx >= W) break;
    for (let r = 0; r < GLYPH_HEIGHT; r++) {
      for (let c = 0; c < GLYPH_WIDTH; c++) {
        if (rows[r] & (0x10 >> c)) fillRect(rgb, W, H, gx + c * s, ty + s + r * s, gx + c * s + s - 1, ty + s + r * s + s - 1, ink);
      }
    }
  }
}

/**
 * Draws boxes with their labels (and "label 0.93" when score is given) onto interleaved 8-bit RGB
 * pixels (row-major, 3 bytes a pixel), in place; returns the same array. Each box is an outline
 * `thickness` pixels wide drawn inwards from its edges, in its colour; its tag (text in black or
 * white, whichever contrasts more) sits above its top-left corner, or inside the box when there is
 * no room above. Everything is clipped to the image: a box wholly outside draws nothing. All boxes
 * are drawn first, then all tags, so no outline crosses a label.
 */
export function drawDetections(rgb: Uint8Array, width: number, height: number, boxes: readonly DrawnBox[], options: DrawOptions = {}): Uint8Array {
  const fn = 'sp.drawDetections';
  if (!(rgb instanceof Uint8Array)) fail(`${fn}: rgb must be a Uint8Array of interleaved RGB pixels, got ${describe(rgb)}`);
  if (!isPositiveInt(width)) fail(`${fn}: width must be a positive integer, got ${describe(width)}`);
  if (!isPositiveInt(height)) fail(`${fn}: height must be a positive integer, got ${describe(height)}`);
  if (rgb.length !== width * height * 3) fail(`${fn}: rgb has ${rgb.length} bytes, expected width * height * 3 = ${width * height * 3} for ${width}x${height} RGB`);
  const opts = checkOptions(fn, options, width, height);
  draw(rgb, width, height, checkBoxes(fn, boxes), opts);
  return rgb;
}

function draw(rgb: Uint8Array, W: number, H: number, boxes: Checked[], opts: { thickness: number; fontScale: number }): void {
  const t = opts.thickness;
  const visible = boxes.filter((b) => b.x2 >= 0 && b.y2 >= 0 && b.x1 < W && b.y1 < H);
  for (const b of visible) {
    const { x1, y1, x2, y2, colour: c } = b;
    fillRect(rgb, W, H, x1, y1, x2, Math.min(y2, y1 + t - 1), c); // top
    fillRect(rgb, W, H, x1, Math.max(y1, y2 - t + 1), x2, y2, c); // bottom
    fillRect(rgb, W, H, x1, y1, Math.min(x2, x1 + t - 1), y2, c); // left
    fillRect(rgb, W, H, Math.max(x1, x2 - t + 1), y1, x2, y2, c); // right
  }
  for (const b of visible) if (b.text) drawTag(rgb, W, H, b, opts.fontScale);
}

/**
 * Reads an image (a path or its bytes; EXIF orientation applied) to RGB with sharp, draws the
 * boxes (drawDetections) and writes `out`, its format from the extension: .jpg/.jpeg, .png or
 * .webp. Returns the image's size.
 */
export async function drawDetectionsToFile(source: string | Uint8Array, out: string, boxes: readonly DrawnBox[], options: DrawFileOptions = {}): Promise<{ width: number; height: number }> {
  const fn = 'sp.drawDetectionsToFile';
  if (typeof source !== 'string' && !(source instanceof Uint8Array)) fail(`${fn}: source must be a file path or the image's bytes, got ${describe(source)}`);
  if (typeof out !== 'string' || !/\.(jpe?g|png|webp)$/i.test(out)) fail(`${fn}: out must be a file path ending in .jpg, .jpeg, .png or .webp, got ${describe(out)}`);
  if (typeof options !== 'object' || options === null) fail(`${fn}: options must be an object, got ${describe(options)}`);
  const { maxPixels, quality, ...drawOpts } = options;
  if (maxPixels !== undefined && !isPositiveInt(maxPixels)) fail(`${fn}: options.maxPixels must be a positive integer, got ${describe(maxPixels)}`);
  if (quality !== undefined && !(isPositiveInt(quality) && quality <= 100)) fail(`${fn}: options.quality must be an integer from 1 to 100, got ${describe(quality)}`);
  const checked = checkBoxes(fn, boxes); // the boxes' and options' errors before any decoding
  checkOptions(fn, drawOpts, 1, 1);
  const header = await probeImage(fn, source);
  const opts = checkOptions(fn, drawOpts, header.width, header.height);
  const limit = maxPixels ?? 100_000_000;
  const pixels = header.width * header.height;
  if (pixels > limit) throw overLimit(fn, `${describeSource(source)} (${header.width}x${header.height}) has`, pixels, 'pixels', 'options.maxPixels', limit);
  const { data, width, height } = await decodeRgb(fn, source, header);
  draw(data, width, height, checked, opts);
  try {
    await writeRgbImage(out, data, width, height, quality ?? 90);
  } catch (e) {
    throw new SppnetError(`${fn}: cannot write ${out}: ${(e as Error).message}`, 'SPPNET_INVALID_ARGUMENT');
  }
  return { width, height };
}
