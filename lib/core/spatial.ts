// Spatial inputs of the ops: a RaggedBatch, a dense [N, C, H, W] tensor or one map [C, H, W], all
// described as N maps with offsets; and outputs of the same kind.
import { Device } from './backend';
import { describe, fail } from './errors';
import { keyNames, NativeLayout } from './native';
import { RaggedBatch } from './ragged';
import { allocate, Storage, Tensor } from './tensor';

export type Spatial = RaggedBatch | Tensor;

export interface SpatialLayout {
  kind: 'ragged' | 'dense' | 'single';
  store: Storage;
  device: Device;
  channels: number;
  sizes: Array<readonly [number, number]>;
  offsets: number[];
  total: number;
}

export function spatialLayout(fn: string, input: unknown, name = 'input'): SpatialLayout {
  if (input instanceof RaggedBatch) {
    const store = input.storage(fn, name);
    return { kind: 'ragged', store, device: store.device, channels: input.channels, sizes: [...input.sizes], offsets: [...input.offsets], total: input.total };
  }
  if (!(input instanceof Tensor)) fail(`${fn}: ${name} must be a RaggedBatch or a Tensor [N, C, H, W] or [C, H, W], got ${describe(input)}`);
  const store = input.storage(fn, name);
  if (input.rank !== 3 && input.rank !== 4)
    fail(`${fn}: ${name} must have rank 4 [N, C, H, W] or 3 [C, H, W], got rank ${input.rank} with shape [${input.shape.join(', ')}]`);
  const [N, C, H, W] = input.rank === 4 ? input.shape : [1, ...input.shape];
  const axes = input.rank === 4 ? ['N', 'C', 'H', 'W'] : ['C', 'H', 'W'];
  const dims = input.rank === 4 ? [N, C, H, W] : [C, H, W];
  dims.forEach((d, i) => {
    if (d < 1 && axes[i] !== 'N') fail(`${fn}: ${name} axis ${axes[i]} is empty in shape [${input.shape.join(', ')}]`);
  });
  return {
    kind: input.rank === 4 ? 'dense' : 'single',
    store,
    device: store.device,
    channels: C,
    sizes: Array.from({ length: N }, () => [H, W] as const),
    offsets: Array.from({ length: N }, (_, i) => i * C * H * W),
    total: input.size,
  };
}

/**
 * @internal Channels [first, first + channels) of every map of `whole` (a RaggedBatch or a map
 * tensor), as the output of an op that writes each map at its own offset: a map's channels are
 * contiguous, so the part of map i starts at its offset + first x H x W. Model.run gives one to
 * each branch of a concat that ends in a conv, which writes its channels of the concat's output
 * in place (no copy after). Only ops whose out option says so take one (conv2d on the CPU).
 */
export class ChannelSlice {
  readonly kind: SpatialLayout['kind'];
  readonly device: Device;
  readonly sizes: Array<readonly [number, number]>;
  readonly offsets: number[];
  private readonly whole: Spatial;

  constructor(whole: Spatial, first: number, readonly channels: number) {
    const L = spatialLayout('Model.run', whole, 'a concat output');
    if (!Number.isInteger(first) || !Number.isInteger(channels) || first < 0 || channels < 1 || first + channels > L.channels)
      fail(`internal: channels [${first}, ${first + channels}) of ${L.channels}`);
    // The CPU's conv kernels place every map by its offset; CUDA's direct conv kernel indexes its
    // output as maps back to back.
    if (L.device !== 'cpu') fail('internal: a channel slice of a CUDA tensor');
    this.whole = whole;
    this.kind = L.kind;
    this.device = L.device;
    this.sizes = L.sizes;
    this.offsets = L.offsets.map((o, i) => o + first * L.sizes[i][0] * L.sizes[i][1]);
  }

  /** The whole output's storage (the offsets are within it). */
  storage(fn: string, what: string): Storage {
    return this.whole.storage(fn, what);
  }
}

/** The element count of maps of `channels` x h x w, one per size. */
export function mapElements(channels: number, sizes: ReadonlyArray<readonly [number, number]>): number {
  let n = 0;
  for (const [h, w] of sizes) n += h * w;
  return channels * n;
}

/** A new output of the input's kind: channels and per-map sizes given. */
export function allocateLike(kind: SpatialLayout['kind'], device: Device, channels: number, sizes: Array<readonly [number, number]>, fn: string): Spatial {
  if (kind === 'ragged') {
    const total = mapElements(channels, sizes);
    return new RaggedBatch(allocate([total], device, fn), channels, sizes);
  }
  const [h, w] = sizes[0] ?? [0, 0];
  return allocate(kind === 'dense' ? [sizes.length, channels, h, w] : [channels, h, w], device, fn);
}

/** The native description of a layout under a prefix ('in' / 'out'). */
export function nativeLayout<P extends string>(prefix: P, channels: number, sizes: Array<readonly [number, number]>, offsets?: number[]): NativeLayout<P> {
  const n = sizes.length;
  const offs = new Float64Array(n), hs = new Int32Array(n), ws = new Int32Array(n);
  for (let i = 0, off = 0; i < n; i++) {
    const [h, w] = sizes[i];
    hs[i] = h;
    ws[i] = w;
    offs[i] = offsets ? offsets[i] : off;
    off += channels * h * w;
  }
  const [ko, kh, kw, kc] = keyNames(layoutKeys, prefix, (p) => [`${p}Offsets`, `${p}Heights`, `${p}Widths`, `${p}Channels`] as const);
  const o: Record<string, unknown> = {};
  o[ko] = offs;
  o[kh] = hs;
  o[kw] = ws;
  o[kc] = channels;
  return o as NativeLayout<P>;
}
const layoutKeys = new Map<string, readonly [string, string, string, string]>();
