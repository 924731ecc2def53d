// Fashion-MNIST items for the detection scenes: the IDX files of Debian's dataset-fashion-mnist
// (/usr/share/datasets/fashion-mnist) or Zalando's download, read with lib/io/idx.ts (gzip or not; the
// header checked; sizes capped) when the generator is asked to paste them as objects.
import * as fs from 'fs';
import * as path from 'path';
import { fail } from '../core/errors';
import { IDX_MAX_BYTES, parseIdx, readIdxBytes } from '../io/idx';
import { FASHION_MNIST_DIR } from '../train/data';

export const FASHION_DIR = FASHION_MNIST_DIR;
/** Fashion-MNIST's ten classes as VOC class names (one word each). */
export const FASHION_CLASSES = Object.freeze(['tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankleboot']);

/** One IDX file (FILE or FILE.gz) through lib/io/idx.ts's reader. */
async function readIdx(fn: string, file: string, dims: 1 | 3): Promise<{ data: Uint8Array; shape: number[] }> {
  const f = fs.existsSync(`${file}.gz`) ? `${file}.gz` : file;
  const r = await parseIdx(fn, `the Fashion-MNIST file ${f}`, await readIdxBytes(fn, 'the Fashion-MNIST file', f, IDX_MAX_BYTES), dims, IDX_MAX_BYTES);
  return { data: r.data, shape: r.dims };
}

/** The items of one Fashion-MNIST set ('train' or 't10k') in `dir`: 28x28 grey images and labels 0..9. */
export async function readFashionItems(fn: string, dir: string, set: 'train' | 't10k'): Promise<{ pixels: Uint8Array; labels: Uint8Array; count: number }> {
  const images = await readIdx(fn, path.join(dir, `${set}-images-idx3-ubyte`), 3);
  const labels = await readIdx(fn, path.join(dir, `${set}-labels-idx1-ubyte`), 1);
  if (images.shape[1] !== 28 || images.shape[2] !== 28) fail(`${fn}: the ${set} images in ${dir} are ${images.shape[1]}x${images.shape[2]}, expected 28x28`);
  if (labels.shape[0] !== images.shape[0]) fail(`${fn}: ${dir} has ${images.shape[0]} ${set} images but ${labels.shape[0]} labels`);
  if (labels.data.some((l) => l > 9)) fail(`${fn}: the ${set} labels in ${dir} go beyond 9`);
  return { pixels: images.data, labels: labels.data, count: images.shape[0] };
}
