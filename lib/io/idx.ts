// IDX files, the format of MNIST, Fashion-MNIST, EMNIST and KMNIST (http://yann.lecun.com/exdb/mnist/):
// a big-endian header (two zero bytes, a type byte, a dimension count, then each dimension as a
// uint32) and the items, row-major. Gzipped files (magic 1f 8b) are inflated with zlib. Only the
// unsigned-byte type (0x08) is read, as the image and label files of these data sets use. The
// header is checked strictly and every size is capped before anything is allocated.
import { promises as fsp } from 'fs';
import { promisify } from 'util';
import * as zlib from 'zlib';
import { describe, fail, formatAmount, isPositiveInt, SppnetError } from '../core/errors';

/** Default cap on an IDX file's bytes after inflating (header included): 256 MiB (Fashion-MNIST's training images: 47 MB). */
export const IDX_MAX_BYTES = 256 * 2 ** 20;
/** The largest cap one may set: Node's largest Buffer on 64-bit hosts is over this; 2 GiB - 1 keeps indices in int32. */
const IDX_MAX_BYTES_LIMIT = 2 ** 31 - 1;

export interface IdxArray {
  /** The dimensions from the header: [N] for labels, [N, H, W] for images. */
  dims: number[];
  /** The items, row-major, one byte each (a view into the file's bytes). */
  data: Uint8Array;
}

export interface IdxReadOptions {
  /** The most bytes the file may have once inflated, header included (default IDX_MAX_BYTES, 256 MiB; at most 2^31 - 1). */
  maxBytes?: number;
}

const gunzip = promisify(zlib.gunzip) as (buf: Uint8Array, opts: zlib.ZlibOptions) => Promise<Buffer>;

/** True when the bytes start with the gzip magic 1f 8b. */
export function isGzip(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b;
}

export function checkMaxBytes(fn: string, opts: IdxReadOptions): number {
  const v = opts.maxBytes ?? IDX_MAX_BYTES;
  if (!isPositiveInt(v) || v > IDX_MAX_BYTES_LIMIT) fail(`${fn}: options.maxBytes must be an integer in [1, ${IDX_MAX_BYTES_LIMIT}], got ${describe(opts.maxBytes)}`);
  return v;
}

/**
 * Parses the bytes of an IDX file (gzipped or not) that must have `ndim` dimensions (1: labels,
 * magic 0x00000801; 3: images, magic 0x00000803). `what` names the argument in errors.
 */
export async function parseIdx(fn: string, what: string, bytes: Uint8Array, ndim: 1 | 3, maxBytes: number): Promise<IdxArray> {
  let buf = bytes;
  if (isGzip(bytes)) {
    try {
      // maxOutputLength stops inflating past the cap (a small gzip can inflate to gigabytes).
      buf = await gunzip(bytes, { maxOutputLength: maxBytes + 1 });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError)
        throw new SppnetError(`${fn}: ${what} inflates to more than options.maxBytes ${maxBytes} bytes (${formatAmount(maxBytes, 'bytes')}); raise options.maxBytes to read it`, 'SPPNET_TOO_LARGE');
      return fail(`${fn}: ${what} starts with the gzip magic 1f 8b but cannot be inflated: ${err.message}`);
    }
  }
  if (buf.length > maxBytes)
    throw new SppnetError(`${fn}: ${what} has ${buf.length} bytes, more than options.maxBytes ${maxBytes} (${formatAmount(maxBytes, 'bytes')}); raise options.maxBytes to read it`, 'SPPNET_TOO_LARGE');
  const kind = ndim === 1 ? 'a label file' : 'an image file';
  const magic = ndim === 1 ? '00000801' : '00000803';
  if (buf.length < 4) fail(`${fn}: ${what} has ${buf.length} bytes, too short for an IDX header (${kind} starts with the magic 0x${magic})`);
  const hex = Array.from(buf.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join('');
  if (hex !== magic) {
    const other = hex === '00000801' ? ' (that is a label file\'s magic: are images and labels swapped?)' : hex === '00000803' ? ' (that is an image file\'s magic: are images and labels swapped?)' : '';
    const typ = buf[0] === 0 && buf[1] === 0 && buf[2] !== 0x08 ? ` (element type 0x${buf[2].toString(16).padStart(2, '0')}; only unsigned bytes, 0x08, are read)` : '';
    fail(`${fn}: ${what} is not ${kind} in IDX format: its magic is 0x${hex}, expected 0x${magic}${other}${typ}`);
  }
  const head = 4 + 4 * ndim;
  if (buf.length < head) fail(`${fn}: ${what} is truncated in its header: ${buf.length} bytes, the header of ${kind} has ${head}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims = Array.from({ length: ndim }, (_, k) => dv.getUint32(4 + 4 * k, false));
  const names = ndim === 1 ? ['items'] : ['items', 'rows', 'columns'];
  dims.forEach((d, k) => {
    if (d === 0) fail(`${fn}: ${what} declares 0 ${names[k]} in its header`);
  });
  // The declared size, checked against the cap before it is trusted (products in floating point: exact below 2^53).
  const items = dims.reduce((a, d) => a * d, 1);
  if (head + items > maxBytes)
    throw new SppnetError(`${fn}: ${what} declares ${dims.join(' x ')} = ${items} bytes of items, more than options.maxBytes ${maxBytes} (${formatAmount(maxBytes, 'bytes')}); raise options.maxBytes to read it`, 'SPPNET_TOO_LARGE');
  if (buf.length < head + items) fail(`${fn}: ${what} is truncated: its header declares ${dims.join(' x ')} (${head + items} bytes with the header), it has ${buf.length}`);
  if (buf.length > head + items) fail(`${fn}: ${what} has ${buf.length - head - items} bytes after the ${dims.join(' x ')} items its header declares (${head + items} bytes with the header)`);
  return { dims, data: buf.subarray(head) };
}

/** Reads an IDX file (path) or its bytes, checking the file's size against the cap before reading it. */
export async function readIdxBytes(fn: string, what: string, src: string | Uint8Array, maxBytes: number): Promise<Uint8Array> {
  if (src instanceof Uint8Array) return src;
  if (typeof src !== 'string' || src === '') fail(`${fn}: ${what} must be a file path or a Uint8Array of the file's bytes, got ${describe(src)}`);
  let size: number;
  try {
    const st = await fsp.stat(src);
    if (!st.isFile()) fail(`${fn}: ${what} ${src} is not a file`);
    size = st.size;
  } catch (e) {
    if (e instanceof SppnetError) throw e;
    return fail(`${fn}: cannot read ${what} ${src}: ${(e as Error).message}`);
  }
  // A gzip is at most a little larger than what it holds (stored blocks: 5 bytes in 64 KiB), so the cap bounds the file too.
  if (size > maxBytes + Math.ceil(maxBytes / 1000) + 1024)
    throw new SppnetError(`${fn}: ${what} ${src} has ${size} bytes, more than options.maxBytes ${maxBytes} (${formatAmount(maxBytes, 'bytes')}); raise options.maxBytes to read it`, 'SPPNET_TOO_LARGE');
  try {
    return await fsp.readFile(src);
  } catch (e) {
    return fail(`${fn}: cannot read ${what} ${src}: ${(e as Error).message}`);
  }
}
