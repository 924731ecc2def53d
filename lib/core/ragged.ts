// Ragged batches: N maps [C, Hi, Wi] with one C, packed back to back in one allocation.
import { Device } from './backend';
import { CallSite, describe, fail, MAX_ELEMENTS, SppnetError } from './errors';
import { native } from './native';
import { allocate, Storage, Tensor } from './tensor';

export class RaggedBatch {
  /** Number of maps. */
  readonly count: number;
  /** Channels, shared by every map. */
  readonly channels: number;
  /** [H, W] of each map. */
  readonly sizes: ReadonlyArray<readonly [number, number]>;
  /** Element offset of each map in the packed storage. */
  readonly offsets: readonly number[];
  /** Elements in all maps together. */
  readonly total: number;
  readonly device: Device;
  readonly dtype = 'float32' as const;
  private packed: Tensor;

  /** @internal Use sp.ragged(), or an op's result. */
  constructor(packed: Tensor, channels: number, sizes: ReadonlyArray<readonly [number, number]>) {
    this.packed = packed;
    this.channels = channels;
    this.sizes = Object.freeze(sizes.map((s) => Object.freeze([s[0], s[1]] as const)));
    this.count = sizes.length;
    const offsets: number[] = [];
    let off = 0;
    for (const [h, w] of sizes) {
      offsets.push(off);
      off += channels * h * w;
    }
    this.offsets = Object.freeze(offsets);
    this.total = off;
    this.device = packed.device;
  }

  /** Shape [C, H, W] of map i. */
  shape(i: number): [number, number, number] {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) fail(`RaggedBatch.shape: index must be an integer in [0, ${this.count}), got ${describe(i)}`);
    return [this.channels, this.sizes[i][0], this.sizes[i][1]];
  }

  get disposed(): boolean {
    return this.packed.disposed;
  }

  /** @internal */
  storage(fn: string, what: string): Storage {
    if (this.packed.disposed) throw new SppnetError(`${fn}: ${what} was disposed`, 'SPPNET_DISPOSED');
    return this.packed.storage(fn, what);
  }

  /** The packed elements of every map, map after map (each [C, H, W], row-major). */
  data(): Promise<Float32Array> {
    return this.packed.read('RaggedBatch.data', 'the batch');
  }

  /** Each map's elements as its own array. */
  async arrays(): Promise<Float32Array[]> {
    const all = await this.data();
    return this.offsets.map((o, i) => all.slice(o, o + this.channels * this.sizes[i][0] * this.sizes[i][1]));
  }

  dispose(): void {
    this.packed.dispose();
  }

  toString(): string {
    return `RaggedBatch(float32, ${this.count} maps x ${this.channels} channels, ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/** The checks of ragged() and packRagged(): one C, one device, no empty axis, a size a tensor may hold. */
function checkMaps(fn: string, maps: Tensor[]): { stores: Storage[]; total: number } {
  if (!Array.isArray(maps)) fail(`${fn}: maps must be an array of tensors [C, H, W], got ${describe(maps)}`);
  if (maps.length === 0) fail(`${fn}: maps must hold at least one tensor`);
  maps.forEach((m, i) => {
    if (!(m instanceof Tensor)) fail(`${fn}: maps[${i}] must be a Tensor, got ${describe(m)}`);
  });
  const first = maps[0];
  const stores = maps.map((m, i) => m.storage(fn, `maps[${i}]`));
  maps.forEach((m, i) => {
    if (m.rank !== 3) fail(`${fn}: maps[${i}] must have rank 3 [C, H, W], got shape [${m.shape.join(', ')}]`);
    if (m.shape[0] !== first.shape[0])
      fail(`${fn}: every map must have the same channels (axis 0): maps[0] has ${first.shape[0]}, maps[${i}] has ${m.shape[0]}`);
    if (m.shape[1] < 1 || m.shape[2] < 1 || m.shape[0] < 1)
      fail(`${fn}: maps[${i}] has an empty axis: shape [${m.shape.join(', ')}]`);
    if (m.device !== first.device)
      throw new SppnetError(`${fn}: every map must be on one device: maps[0] is on ${first.device}, maps[${i}] on ${m.device}`, 'SPPNET_DEVICE_MISMATCH');
  });
  const total = maps.reduce((a, m) => a + m.size, 0);
  if (total > MAX_ELEMENTS) fail(`${fn}: the maps hold ${total} elements together, more than the 2^31-1 a tensor may hold`);
  return { stores, total };
}

const layoutOf = (maps: Tensor[]) => maps.map((m) => [m.shape[1], m.shape[2]] as const);

/**
 * Packs maps [C, Hi, Wi] (same C, same device) into one allocation. The maps are copied, so they
 * may be disposed afterwards.
 */
export function ragged(maps: Tensor[]): RaggedBatch {
  const fn = 'sp.ragged';
  const { stores, total } = checkMaps(fn, maps);
  const packed = allocate([total], maps[0].device, fn);
  const dst = packed.storage(fn, 'the packed batch');
  let off = 0;
  try {
    stores.forEach((s, i) => {
      if (dst.device === 'cpu' && s.device === 'cpu') dst.array.set(s.array, off);
      else if (dst.device === 'cuda' && s.device === 'cuda') native.cudaCopy(dst.buffer, off, s.buffer, s.offset, maps[i].size);
      off += maps[i].size;
    });
  } catch (e) {
    packed.dispose();
    throw new CallSite().wrap(e, fn);
  }
  return new RaggedBatch(packed, maps[0].shape[0], layoutOf(maps));
}

/**
 * @internal ragged() whose host copy runs on a libuv thread instead of the event loop (a batch of
 * 32 images of 256x341 is 33 MB); on CUDA the same device-to-device copies as ragged(). The maps
 * must stay undisposed until it resolves. With `scratch`, a host batch is packed into
 * scratch.array (grown when too small) instead of a fresh allocation, so that a runner packing one
 * batch after another does not allocate tens of MB each time (and trigger full GCs for them): the
 * batch is then a view, valid until the scratch is used again.
 */
export async function packRagged(maps: Tensor[], fn: string, scratch?: { array?: Float32Array }): Promise<RaggedBatch> {
  const site = new CallSite();
  const { stores, total } = checkMaps(fn, maps);
  if (maps[0].device !== 'cpu') return ragged(maps);
  let packed: Tensor;
  if (scratch) {
    if (!scratch.array || scratch.array.length < total) scratch.array = new Float32Array(total);
    packed = new Tensor({ device: 'cpu', array: scratch.array.subarray(0, total) }, [total], false);
  } else packed = allocate([total], 'cpu', fn);
  const dst = packed.storage(fn, 'the packed batch') as Extract<Storage, { device: 'cpu' }>;
  const offsets = new Float64Array(maps.length);
  for (let i = 1; i < maps.length; i++) offsets[i] = offsets[i - 1] + maps[i - 1].size;
  try {
    await native.gatherFloats({ output: dst.array, inputs: stores.map((s) => (s as Extract<Storage, { device: 'cpu' }>).array), offsets });
  } catch (e) {
    packed.dispose();
    throw site.wrap(e, fn);
  }
  return new RaggedBatch(packed, maps[0].shape[0], layoutOf(maps));
}
