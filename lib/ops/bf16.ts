// bfloat16 weight matrices for sp.linear: half the bytes of float32, so half the time where a
// fully connected layer is bound by reading its weights (few rows: batch-1 inference), and half
// the model's memory. Products and sums stay FP32; only each weight is rounded (to nearest even,
// relative error at most 2^-9 = 0.2%). Inference only: there is no backward through them.
import { Device } from '../core/backend';
import { describe, fail } from '../core/errors';
import { Storage, tensor, Tensor } from '../core/tensor';

/** float32 -> bfloat16 bits, rounding to nearest even; a NaN stays a (quiet) NaN. As include/sppnet/bf16.h. */
function roundBits(u: number): number {
  if ((u & 0x7fffffff) >>> 0 > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** `data` rounded to bfloat16, two values to a float32 slot (element i: the i-th uint16 of the buffer; little-endian hosts). */
function pack(data: Float32Array): Float32Array {
  const out = new Float32Array(Math.ceil(data.length / 2));
  const h = new Uint16Array(out.buffer, 0, data.length);
  const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let i = 0; i < u.length; ++i) h[i] = roundBits(u[i]);
  return out;
}

/**
 * A weight matrix [out, in] stored as bfloat16, for sp.linear's weight argument (and models loaded
 * with `linearWeights: 'bf16'`). Make one with sp.toBF16(); free it with dispose().
 */
export class BF16Matrix {
  readonly dtype = 'bfloat16' as const;
  readonly shape: readonly [number, number];
  /** @internal The bits, two to a float: ceil(out * in / 2) floats. */
  readonly packed: Tensor;

  /** @internal Use sp.toBF16(). */
  constructor(packed: Tensor, shape: readonly [number, number]) {
    this.packed = packed;
    this.shape = Object.freeze([shape[0], shape[1]]) as readonly [number, number];
  }

  get device(): Device {
    return this.packed.device;
  }

  get disposed(): boolean {
    return this.packed.disposed;
  }

  /** Bytes the values take (2 per element). */
  get bytes(): number {
    return 4 * this.packed.size;
  }

  /** @internal The storage, or SPPNET_DISPOSED naming `fn` and `what`. */
  storage(fn: string, what: string): Storage {
    return this.packed.storage(fn, what);
  }

  /** The values widened to float32 (exact), row-major. */
  async data(): Promise<Float32Array> {
    const bits = new Uint16Array((await this.packed.read('BF16Matrix.data', 'the matrix')).buffer);
    const n = this.shape[0] * this.shape[1];
    const out = new Float32Array(n);
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; ++i) u[i] = bits[i] << 16;
    return out;
  }

  dispose(): void {
    this.packed.dispose();
  }

  toString(): string {
    return `BF16Matrix([${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/** @internal A BF16Matrix from host float32 values (a model's weights as loaded), on `device`. */
export function bf16FromHost(data: Float32Array, shape: readonly [number, number], device: Device): BF16Matrix {
  return new BF16Matrix(tensor(pack(data), [Math.ceil((shape[0] * shape[1]) / 2)], { device }), shape);
}

/**
 * A rank-2 weight [out, in] rounded to bfloat16 (to nearest even), on the weight's device, for
 * sp.linear. The tensor itself is left as it is.
 */
export async function toBF16(weight: Tensor): Promise<BF16Matrix> {
  const fn = 'sp.toBF16';
  if (!(weight instanceof Tensor)) fail(`${fn}: weight must be a Tensor, got ${describe(weight)}`);
  weight.storage(fn, 'weight');
  if (weight.rank !== 2) fail(`${fn}: weight must have rank 2 ([out, in]), got shape [${weight.shape.join(', ')}]`);
  const host = await weight.read(fn, 'weight');
  return bf16FromHost(host, [weight.shape[0], weight.shape[1]], weight.device);
}
