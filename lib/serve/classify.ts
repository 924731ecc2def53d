// Classifying image files with a model: decoding, the paper's multi-scale testing (every image at
// several scales, softmax scores averaged), top-k with labels.
import { describe, fail, isPositiveInt } from '../core/errors';
import { ImageOptions, readImages } from '../io/images';
import { softmax } from '../ops/elementwise';
import { Model, Prediction } from '../nn/model';
import { ragged } from '../core/ragged';
import { topK } from '../core/topk';

export interface ClassifyOptions extends Omit<ImageOptions, 'shorterSide' | 'device'> {
  /** Shorter-side scales, or 'natural' for the image as it is; scores are averaged over them (the paper's multi-scale testing). Default [224]. */
  scales?: Array<number | 'natural'>;
  topk?: number;
  labels?: string[];
  /** Images per ragged batch (bounds memory). Default 16. */
  batchSize?: number;
}

export interface Classification {
  source: string;
  /** [H, W] of the decoded image at each scale. */
  sizes: Array<[number, number]>;
  top: Prediction[];
}

/** Classifies images (paths or bytes), averaging softmax scores over the scales. */
export async function classify(model: Model, sources: Array<string | Uint8Array>, opts: ClassifyOptions = {}): Promise<Classification[]> {
  const fn = 'sp.classify';
  if (!(model instanceof Model)) fail(`${fn}: model must be a Model, got ${describe(model)}`);
  if (!Array.isArray(sources) || sources.length === 0) fail(`${fn}: sources must be a non-empty array of paths or byte arrays`);
  const scales = opts.scales ?? [224];
  if (!Array.isArray(scales) || scales.length === 0 || !scales.every((s) => s === 'natural' || isPositiveInt(s)))
    fail(`${fn}: options.scales must be positive integers or 'natural', got ${describe(opts.scales)}`);
  const topk = opts.topk ?? 5;
  if (!isPositiveInt(topk)) fail(`${fn}: options.topk must be a positive integer, got ${describe(opts.topk)}`);
  if (opts.labels !== undefined && (!Array.isArray(opts.labels) || opts.labels.length !== model.classes))
    fail(`${fn}: options.labels must list ${model.classes} labels (one per class), got ${Array.isArray(opts.labels) ? opts.labels.length : describe(opts.labels)}`);
  const bs = opts.batchSize ?? 16;
  if (!isPositiveInt(bs)) fail(`${fn}: options.batchSize must be a positive integer, got ${describe(opts.batchSize)}`);
  const K = model.classes;
  const scores = new Float64Array(sources.length * K);
  const sizes: Array<Array<[number, number]>> = sources.map(() => []);
  for (let b0 = 0; b0 < sources.length; b0 += bs) {
    const chunk = sources.slice(b0, b0 + bs);
    for (const s of scales) {
      const imgs = await readImages(chunk, { mean: opts.mean, std: opts.std, shorterSide: s === 'natural' ? undefined : s, device: model.device });
      imgs.forEach((t, i) => sizes[b0 + i].push([t.shape[1], t.shape[2]]));
      const batch = ragged(imgs);
      imgs.forEach((t) => t.dispose());
      try {
        const logits = await model.run(batch);
        const p = await softmax(logits);
        logits.dispose();
        const d = await p.data();
        p.dispose();
        for (let i = 0; i < d.length; i++) scores[b0 * K + i] += d[i] / scales.length;
      } finally {
        batch.dispose();
      }
    }
  }
  return sources.map((src, i) => {
    const top = topK(scores, topk, opts.labels, i * K, K);
    return { source: typeof src === 'string' ? src : `<${src.length} bytes>`, sizes: sizes[i], top };
  });
}
