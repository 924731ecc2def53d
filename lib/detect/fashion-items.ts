// Fashion-MNIST items for the detection scenes: the IDX files of Debian's dataset-fashion-mnist
// (/usr/share/datasets/fashion-mnist) or Zalando's download, read minimally (gzip or not; the
// header checked; sizes capped) when the generator is asked to paste them as objects.
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { fail } from '../core/errors';

export const FASHION_DIR = '/usr/share/datasets/fashion-mnist';
/** Fashion-MNIST's ten classes as VOC class names (one word each). */
export const FASHION_CLASSES = Object.freeze(['tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankleboot']);

const MAX_BYTES = 64 * 2 ** 20; // the training images are 47 MB inflated

function readIdx(fn: string, file: string, dims: number): { data: Uint8Array; shape: number[] } {
  const gz = fs.existsSync(`${file}.gz`) ? `${file}.gz` : file;
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(gz);
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = zlib.gunzipSync(bytes, { maxOutputLength: MAX_BYTES });
  } catch (e) {
    return fail(`${fn}: cannot read the Fashion-MNIST file ${gz}: ${(e as Error).message}`);
  }
  if (bytes.length < 4 + 4 * dims || bytes.readUInt16BE(0) !== 0 || bytes[2] !== 0x08 || bytes[3] !== dims)
    fail(`${fn}: ${gz} is not an IDX file of unsigned bytes with ${dims} dimensions`);
  const shape = Array.from({ length: dims }, (_, i) => bytes.readUInt32BE(4 + 4 * i));
  const n = shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== 4 + 4 * dims + n) fail(`${fn}: ${gz} holds ${bytes.length - 4 - 4 * dims} bytes of data, its header says ${n}`);
  return { data: new Uint8Array(bytes.buffer, bytes.byteOffset + 4 + 4 * dims, n), shape };
}

/** The items of one Fashion-MNIST set ('train' or 't10k') in `dir`: 28x28 grey images and labels 0..9. */
export function readFashionItems(fn: string, dir: string, set: 'train' | 't10k'): { pixels: Uint8Array; labels: Uint8Array; count: number } {
  const images = readIdx(fn, path.join(dir, `${set}-images-idx3-ubyte`), 3);
  const labels = readIdx(fn, path.join(dir, `${set}-labels-idx1-ubyte`), 1);
  if (images.shape[1] !== 28 || images.shape[2] !== 28) fail(`${fn}: the ${set} images in ${dir} are ${images.shape[1]}x${images.shape[2]}, expected 28x28`);
  if (labels.shape[0] !== images.shape[0]) fail(`${fn}: ${dir} has ${images.shape[0]} ${set} images but ${labels.shape[0]} labels`);
  if (labels.data.some((l) => l > 9)) fail(`${fn}: the ${set} labels in ${dir} go beyond 9`);
  return { pixels: images.data, labels: labels.data, count: images.shape[0] };
}
