// Non-maximum suppression, torchvision.ops.nms and batched_nms exactly (include/sppnet/nms.h says
// how: the order of tied scores, the float IoU test, degenerate boxes and NaN scores).
import { Device } from '../core/backend';
import { checkOpts, numberOption, sameDevice, settle } from '../core/checks';
import { CallSite, describe, fail } from '../core/errors';
import { native } from '../core/native';
import { nativeBuf, Storage, Tensor } from '../core/tensor';

export interface NmsOptions {
  /** Suppress a box whose IoU with a kept, higher-scoring box is > iou (strictly); in [0, 1]. */
  iou: number;
}

/** A 1-D tensor of n values on `device`, where boxes are; its storage. */
function perBox(fn: string, name: string, t: unknown, n: number, device: Device): Storage {
  if (!(t instanceof Tensor)) fail(`${fn}: ${name} must be a Tensor [${n}] (one value per box), got ${describe(t)}`);
  const s = t.storage(fn, name);
  if (t.rank !== 1) fail(`${fn}: ${name} must have rank 1 [${n}], got shape [${t.shape.join(', ')}]`);
  if (t.shape[0] !== n) fail(`${fn}: ${name} has ${t.shape[0]} values, but boxes has ${n} boxes (axis 0)`);
  sameDevice(fn, name, s.device, 'boxes', device);
  return s;
}

async function run(fn: string, boxes: unknown, scores: unknown, classes: unknown, opts: unknown, batched: boolean): Promise<Int32Array> {
  const site = new CallSite();
  if (!(boxes instanceof Tensor)) fail(`${fn}: boxes must be a Tensor [N, 4] (x1, y1, x2, y2), got ${describe(boxes)}`);
  const b = boxes.storage(fn, 'boxes');
  if (boxes.rank !== 2 || boxes.shape[1] !== 4) fail(`${fn}: boxes must have shape [N, 4] (x1, y1, x2, y2), got [${boxes.shape.join(', ')}]`);
  const n = boxes.shape[0];
  const s = perBox(fn, 'scores', scores, n, b.device);
  const c = batched ? perBox(fn, 'classes', classes, n, b.device) : undefined;
  const o = checkOpts(fn, opts);
  const iou = numberOption(fn, o, 'iou', undefined, (v) => v >= 0 && v <= 1, 'a number in [0, 1]');
  const keep = new Int32Array(n), kept = new Int32Array(1);
  if (n === 0) return keep;
  await settle(site, fn, [], () =>
    native.nms({ n, iou, keep, kept, ...nativeBuf('boxes', b), ...nativeBuf('scores', s), ...(c ? nativeBuf('classes', c) : {}) }),
  );
  return keep.slice(0, kept[0]);
}

/**
 * torchvision.ops.nms(boxes, scores, iou): the indices of the boxes kept, by decreasing score.
 * boxes [N, 4] as (x1, y1, x2, y2), scores [N], both on one device; an Int32Array on the host.
 */
export function nms(boxes: Tensor, scores: Tensor, opts: NmsOptions): Promise<Int32Array> {
  return run('sp.nms', boxes, scores, undefined, opts, false);
}

/**
 * torchvision.ops.batched_nms(boxes, scores, classes, iou): nms within each class (classes [N]:
 * integer class ids as float32, on the boxes' device), the kept indices by decreasing score.
 */
export function batchedNms(boxes: Tensor, scores: Tensor, classes: Tensor, opts: NmsOptions): Promise<Int32Array> {
  return run('sp.batchedNms', boxes, scores, classes, opts, true);
}
