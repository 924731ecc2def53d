// What a model's calls take, checked: images (a ragged batch, an array of [C, H, W] maps, or a
// dense batch) for run(), features() and trainStep(); pooled rows for head() and trainHeadStep().
import { Device } from '../core/backend';
import { describe, fail, SppnetError } from '../core/errors';
import { RaggedBatch, ragged } from '../core/ragged';
import { spatialLayout, SpatialLayout } from '../core/spatial';
import { Tensor } from '../core/tensor';
import { ModelSpec } from './spec';

/** What the checks need to know of the model. */
export interface InputsOf {
  readonly spec: ModelSpec;
  readonly device: Device;
  readonly minSize: readonly [number, number];
  readonly pooledFeatures: number;
}

/** Checks the images and packs an array of maps into a batch on the model's device (`owned`: the caller frees it). */
export async function modelInput(fn: string, images: RaggedBatch | Tensor | Tensor[], m: InputsOf): Promise<{ x: RaggedBatch | Tensor; owned?: RaggedBatch; L: SpatialLayout }> {
  let owned: RaggedBatch | undefined;
  let x: RaggedBatch | Tensor;
  if (Array.isArray(images)) {
    images.forEach((t, i) => {
      if (!(t instanceof Tensor)) fail(`${fn}: images[${i}] must be a Tensor [C, H, W], got ${describe(t)}`);
      t.storage(fn, `images[${i}]`);
      if (t.rank !== 3) fail(`${fn}: images[${i}] must have rank 3 [C, H, W], got shape [${t.shape.join(', ')}]`);
      if (t.shape[0] !== m.spec.inChannels) fail(`${fn}: images[${i}] has ${t.shape[0]} channels (axis 0), ${m.spec.name} takes ${m.spec.inChannels}`);
    });
    if (images.length === 0) fail(`${fn}: images is empty`);
    const moved = await Promise.all(images.map((t, i) => t.moveTo(m.device, fn, `images[${i}]`)));
    owned = ragged(moved);
    moved.forEach((mv, i) => mv !== images[i] && mv.dispose());
    x = owned;
  } else {
    x = images;
  }
  try {
    const L = spatialLayout(fn, x, 'images');
    if (L.channels !== m.spec.inChannels) fail(`${fn}: images have ${L.channels} channels, ${m.spec.name} takes ${m.spec.inChannels}`);
    if (L.device !== m.device)
      throw new SppnetError(`${fn}: images are on ${L.device}, the model on ${m.device} (use await t.to('${m.device}'))`, 'SPPNET_DEVICE_MISMATCH');
    L.sizes.forEach(([h, w], i) => {
      if (h < m.minSize[0] || w < m.minSize[1])
        fail(`${fn}: image ${i} is ${h}x${w} (HxW), smaller than ${m.spec.name}'s minimum ${m.minSize[0]}x${m.minSize[1]}`);
    });
    return { x, owned, L };
  } catch (e) {
    owned?.dispose();
    throw e;
  }
}

/** Checks pooled rows [N >= 1, pooledFeatures] on the model's device; N. */
export function checkRows(fn: string, rows: unknown, m: InputsOf): number {
  if (!(rows instanceof Tensor)) fail(`${fn}: rows must be a Tensor [N, ${m.pooledFeatures}] (pooled features), got ${describe(rows)}`);
  const s = rows.storage(fn, 'rows');
  if (rows.rank !== 2 || rows.shape[1] !== m.pooledFeatures || rows.shape[0] < 1)
    fail(`${fn}: rows must have shape [N >= 1, ${m.pooledFeatures}] (what ${m.spec.name}'s spp layer gives), got [${rows.shape.join(', ')}]`);
  if (s.device !== m.device) throw new SppnetError(`${fn}: rows are on ${s.device}, the model on ${m.device} (use await t.to('${m.device}'))`, 'SPPNET_DEVICE_MISMATCH');
  return rows.shape[0];
}

/** Model.head's options.until: the end (exclusive) in spec.layers of the head layers to run. */
export function headEnd(fn: string, spec: ModelSpec, sppIndex: number, opts: unknown): number {
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const until = (opts as { until?: unknown }).until;
  if (until === undefined) return spec.layers.length;
  const i = spec.layers.findIndex((l) => 'name' in l && l.name === until);
  if (i <= sppIndex) {
    const names = spec.layers.slice(sppIndex + 1).flatMap((l) => ('name' in l ? [l.name] : []));
    fail(`${fn}: options.until must name a layer after the spp layer (${names.join(', ')}), got ${describe(until)}`);
  }
  return i + 1;
}

/** trainStep's and trainHeadStep's options: lr (default the optimizer's) and seed (default its step count). */
export function stepOptions(fn: string, opts: { lr?: number; seed?: number }, opt: { options: { lr: number }; steps: number }): { lr: number; seed: number } {
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const lr = opts.lr ?? opt.options.lr;
  if (typeof lr !== 'number' || !(lr > 0) || !Number.isFinite(lr)) fail(`${fn}: options.lr must be a positive number, got ${describe(opts.lr)}`);
  const seed = opts.seed ?? opt.steps;
  if (!Number.isInteger(seed)) fail(`${fn}: options.seed must be an integer, got ${describe(opts.seed)}`);
  return { lr, seed };
}
