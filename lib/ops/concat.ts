// Concatenation along channels (torch.cat(xs, 1)) of maps of the same sizes, ragged included, and
// its gradient (the split back into the parts). Inception's branches meet here.
import { checkOpts, outputFor, sharesMemory, sameDevice, settle } from '../core/checks';
import { CallSite, fail } from '../core/errors';
import { callOp, OpSequence, sequenceOf } from '../core/sequence';
import { allocateLike, nativeLayout, Spatial, SpatialLayout, spatialLayout } from '../core/spatial';
import { nativeBuf, Storage } from '../core/tensor';
import { argsOf } from '../core/native';

export interface ConcatOptions {
  /** Where to write the result (exactly the layout concat gives). */
  out?: Spatial;
  /** @internal Record the native call into this sequence instead of making it (Model.run). */
  sequence?: OpSequence;
}

/** Layouts of the parts: all of one kind, device, map count and map sizes (checked). */
function partLayouts(fn: string, parts: unknown): SpatialLayout[] {
  if (!Array.isArray(parts) || parts.length === 0) fail(`${fn}: parts must be a non-empty array of Tensors or RaggedBatches`);
  const Ls = parts.map((p, i) => spatialLayout(fn, p, `parts[${i}]`));
  const L0 = Ls[0];
  Ls.forEach((L, i) => {
    if (L.kind !== L0.kind) fail(`${fn}: parts[${i}] is ${L.kind === 'ragged' ? 'a RaggedBatch' : `a ${L.kind} tensor`}, parts[0] ${L0.kind === 'ragged' ? 'a RaggedBatch' : `a ${L0.kind} tensor`}`);
    sameDevice(fn, `parts[${i}]`, L.device, 'parts[0]', L0.device);
    if (L.sizes.length !== L0.sizes.length) fail(`${fn}: parts[${i}] has ${L.sizes.length} maps, parts[0] ${L0.sizes.length}`);
    L.sizes.forEach(([h, w], m) => {
      const [h0, w0] = L0.sizes[m];
      if (h !== h0 || w !== w0) fail(`${fn}: parts[${i}] map ${m} is ${h}x${w} (HxW), parts[0]'s is ${h0}x${w0}: only channels may differ`);
    });
  });
  return Ls;
}

/**
 * One native copy per part between the parts and the whole (toWhole: concat; else split); a null
 * part (concatInto) is not copied, its channels (`widths`) skipped.
 */
async function copyAll(fn: string, site: CallSite, Ls: Array<SpatialLayout | null>, W: SpatialLayout, toWhole: boolean, owned: Spatial[], seq?: OpSequence,
  widths?: number[]): Promise<void> {
  let at = 0;
  const calls: Array<Promise<void>> = [];
  Ls.forEach((L, k) => {
    if (L) calls.push(callOp(seq, 'copyChannels', copyArgs(L.store, W.store, L.channels, L.sizes, L.offsets, W.channels, W.offsets, at, toWhole)));
    at += L ? L.channels : widths![k];
  });
  await settle(site, fn, owned, async () => void (await Promise.all(calls)));
}

/**
 * torch.cat(parts, 1): the maps of every part (same kind, device, count and sizes) stacked along
 * channels, parts[0]'s first. A RaggedBatch for RaggedBatches, else a tensor.
 */
export async function concat<T extends Spatial>(parts: T[], opts: ConcatOptions = {}): Promise<T> {
  const fn = 'sp.concat';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  const Ls = partLayouts(fn, parts);
  const channels = Ls.reduce((a, L) => a + L.channels, 0);
  const r = outputFor(fn, o.out, Ls[0].kind, Ls[0].device, channels, Ls[0].sizes);
  const W = spatialLayout(fn, r.out, 'options.out');
  if (Ls.some((L) => sharesMemory(L.store, L.total, W.store, W.total))) {
    if (r.owned) r.out.dispose();
    fail(`${fn}: options.out shares memory with a part`);
  }
  await copyAll(fn, site, Ls, W, true, r.owned ? [r.out] : [], sequenceOf(o));
  return r.out as T;
}

/**
 * @internal concat into `out` where some parts are there already (null: part k's `widths[k]`
 * channels were written in place, Model.run's branches that end in a conv): the others copied to
 * their channels.
 */
export async function concatInto(parts: Array<Spatial | null>, widths: number[], out: Spatial, opts: { sequence?: OpSequence }): Promise<void> {
  const fn = 'sp.concat';
  const site = new CallSite();
  const given = parts.filter((p): p is Spatial => p !== null);
  const Ls = given.length > 0 ? partLayouts(fn, given) : [];
  const W = spatialLayout(fn, out, 'options.out');
  if (widths.length !== parts.length || widths.reduce((a, b) => a + b, 0) !== W.channels) fail(`internal: ${fn} of ${widths.join(' + ')} channels into ${W.channels}`);
  let k = 0;
  const all = parts.map((p, i) => {
    if (p === null) return null;
    const L = Ls[k++];
    if (L.channels !== widths[i] || L.kind !== W.kind || L.sizes.some(([h, w], m) => h !== W.sizes[m][0] || w !== W.sizes[m][1]))
      fail(`internal: ${fn}: part ${i} does not fit its channels of the output`);
    return L;
  });
  await copyAll(fn, site, all, W, true, [], opts.sequence, widths);
}

/** The gradient of concat: gradOutput (concat's layout) split back into parts of `channels` each. */
export async function concatBackward<T extends Spatial>(gradOutput: T, channels: number[]): Promise<T[]> {
  const fn = 'sp.concatBackward';
  const site = new CallSite();
  const W = spatialLayout(fn, gradOutput, 'gradOutput');
  if (!Array.isArray(channels) || channels.length === 0 || !channels.every((c) => Number.isInteger(c) && c >= 1))
    fail(`${fn}: channels must be a non-empty array of positive integers`);
  const sum = channels.reduce((a, b) => a + b, 0);
  if (sum !== W.channels) fail(`${fn}: channels [${channels.join(', ')}] add up to ${sum}, gradOutput has ${W.channels}`);
  const parts = channels.map((c) => allocateLike(W.kind, W.device, c, W.sizes, fn));
  const Ls = parts.map((p, i) => spatialLayout(fn, p, `part ${i}`));
  await copyAll(fn, site, Ls, W, false, parts);
  return parts as T[];
}

/**
 * @internal Records into `seq` a copy of maps of `channels` channels and `sizes` from one storage
 * (the maps at `fromOffsets`, else one after another) to another (one after another): the whole
 * of a batch, as concat of one part does. A matrix [N, K] is N maps of K channels of 1x1.
 */
export function copyMaps(seq: OpSequence, from: Storage, to: Storage, channels: number, sizes: Array<readonly [number, number]>, fromOffsets?: number[]): void {
  void callOp(seq, 'copyChannels', copyArgs(from, to, channels, sizes, fromOffsets, channels, undefined, 0, true));
}

/** copyChannels' arguments: a part's maps (channels each) and channels [at, ...) of the whole's (wholeChannels each), same sizes. */
function copyArgs(part: Storage, whole: Storage, channels: number, sizes: Array<readonly [number, number]>, partOffsets: number[] | undefined,
  wholeChannels: number, wholeOffsets: number[] | undefined, at: number, toWhole: boolean) {
  return argsOf(
    nativeBuf('part', part), nativeBuf('whole', whole),
    nativeLayout('in', channels, sizes, partOffsets), nativeLayout('out', wholeChannels, sizes, wholeOffsets),
    { channelOffset: at, toWhole },
  );
}
