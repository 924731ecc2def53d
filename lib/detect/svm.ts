// Linear SVMs as R-CNN (and SPP-net, as an option) train its per-class classifiers: liblinear's
// L2-regularised L1-loss (hinge) SVC solved in the dual by coordinate descent (Hsieh et al. 2008,
// liblinear -s 3), with a bias feature of constant value `biasFeature` (R-CNN: -B 10) and the
// positives' cost weighted (R-CNN: -w1 2, C = 0.001, features scaled to a mean norm of 20).
import { SppnetError } from '../core/errors';
import { prng } from '../core/random';
import { tensor, Tensor } from '../core/tensor';
import { Detector } from './detector';

export interface SvmOptions {
  /** The cost C (default 0.001) and the positives' weight on it (default 2). */
  C?: number;
  positiveWeight?: number;
  /** The bias feature's value (default 10). */
  biasFeature?: number;
  /** Stop when the projected gradients' spread is under eps (default 0.1), or after maxEpochs passes (default 1000). */
  eps?: number;
  maxEpochs?: number;
  seed?: number;
  /**
   * Hard-negative mining, as R-CNN trains its SVMs (default 1 pass; 0: the cached negatives only):
   * each pass scores every window of every training image (its proposals) with the SVMs so far,
   * adds the windows under IoU 0.3 with the class's objects that score above -1 (inside the margin)
   * as negatives, drops those that scored under -1.2, and trains again.
   */
  hardNegativePasses?: number;
}

/** The windows of one training image for mining: pooled rows [n, pooled features] and each window's largest IoU per class. */
export interface MiningImage {
  rows: Tensor;
  classIou: Float32Array[];
}

/**
 * Trains w, b minimising |w|²/2 + |b|²/2 + sum_i C_i max(0, 1 - y_i (w x_i + b B)) for rows
 * X [n, d] (read through row(i)) and labels y_i in {-1, +1}; returns w [d] and the bias b * B.
 */
export function trainSvm(n: number, d: number, row: (i: number) => Float32Array, y: Int8Array, opts: SvmOptions = {}): { weight: Float32Array; bias: number; epochs: number } {
  const C = opts.C ?? 0.001, wp = opts.positiveWeight ?? 2, B = opts.biasFeature ?? 10, eps = opts.eps ?? 0.1, maxEpochs = opts.maxEpochs ?? 1000;
  if (y.length !== n) throw new SppnetError(`trainSvm: ${y.length} labels for ${n} rows`, 'SPPNET_INTERNAL');
  const w = new Float64Array(d);
  let wb = 0;
  const alpha = new Float64Array(n), Q = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const x = row(i);
    let q = B * B;
    for (let j = 0; j < d; j++) q += x[j] * x[j];
    Q[i] = q;
  }
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const r = prng(opts.seed ?? 0);
  let epoch = 0;
  for (; epoch < maxEpochs; epoch++) {
    for (let i = n - 1; i > 0; i--) {
      const k = Math.floor(r() * (i + 1));
      [order[i], order[k]] = [order[k], order[i]];
    }
    let maxPG = -Infinity, minPG = Infinity;
    for (const i of order) {
      const x = row(i), yi = y[i], U = yi > 0 ? C * wp : C;
      let dot = wb * B;
      for (let j = 0; j < d; j++) dot += w[j] * x[j];
      const G = yi * dot - 1;
      const PG = alpha[i] === 0 ? Math.min(G, 0) : alpha[i] === U ? Math.max(G, 0) : G;
      maxPG = Math.max(maxPG, PG);
      minPG = Math.min(minPG, PG);
      if (PG === 0 || Q[i] === 0) continue;
      const old = alpha[i];
      alpha[i] = Math.min(Math.max(old - G / Q[i], 0), U);
      const step = (alpha[i] - old) * yi;
      if (step === 0) continue;
      for (let j = 0; j < d; j++) w[j] += step * x[j];
      wb += step * B;
    }
    if (maxPG - minPG < eps) break;
  }
  return { weight: Float32Array.from(w), bias: wb * B, epochs: epoch + 1 };
}

/** The head's layer whose output the SVMs take: the fc layer before the classifier. */
export function svmLayer(spec: { layers: ReadonlyArray<{ type: string; name?: string }> }): string | undefined {
  const fcs = spec.layers.filter((l) => l.type === 'fc');
  return fcs.length >= 2 ? fcs[fcs.length - 2].name : undefined;
}

/**
 * Stage 5 of sp.trainDetector: the features of `layer` for every cached window (pooled rows through
 * the head up to it), one SVM per class, folded with the feature scale into weight [C, F] and bias
 * [C]; then o.hardNegativePasses passes of hard-negative mining over `images` windows.
 */
export async function trainSvms(
  det: Detector, rows: Float32Array[], classIou: Float32Array[], o: SvmOptions, seed: number,
  images: { count: number; windows: (i: number) => Promise<MiningImage | null> },
): Promise<{ layer: string; features: number; summary: string }> {
  const m = det.model;
  const layer = svmLayer(m.spec);
  if (!layer) throw new SppnetError(`sp.trainDetector: options.svm needs an fc layer before the classifier (${m.spec.name} has none)`, 'SPPNET_INVALID_ARGUMENT');
  const passes = o.hardNegativePasses ?? 1;
  const D = m.pooledFeatures;
  let F = 0;
  // The layer's features of pooled rows (host copies, one per row).
  const featuresOf = async (rowsT: Tensor): Promise<Float32Array[]> => {
    const f = await m.head(rowsT, { until: layer });
    F = f.shape[1];
    const host = await f.data().finally(() => f.dispose());
    return Array.from({ length: f.shape[0] }, (_, i) => host.subarray(i * F, (i + 1) * F));
  };
  const feats: Float32Array[] = [];
  for (let at = 0; at < rows.length; at += 512) {
    const part = rows.slice(at, at + 512);
    const x = new Float32Array(part.length * D);
    part.forEach((r, i) => x.set(r, i * D));
    const xt = tensor(x, [part.length, D], { device: m.device });
    feats.push(...(await featuresOf(xt).finally(() => xt.dispose())));
  }
  // Features scaled to a mean norm of 20 (R-CNN's), the scale fixed by the cached windows.
  const norm = feats.reduce((a, f) => a + Math.hypot(...f), 0) / Math.max(1, feats.length);
  const scale = norm > 0 ? 20 / norm : 1;
  for (const f of feats) for (let j = 0; j < f.length; j++) f[j] *= scale;
  const C = det.config.classes.length;
  // Per class: positives (cached windows at IoU >= 0.7) and negatives (IoU < 0.3), as feature rows.
  const pos: Float32Array[][] = [], neg: Float32Array[][] = [];
  const mined: Array<Set<string>> = Array.from({ length: C }, () => new Set());
  for (let c = 0; c < C; c++) {
    pos.push(feats.filter((_, i) => classIou[i][c] >= 0.7));
    neg.push(feats.filter((_, i) => classIou[i][c] < 0.3));
  }
  const W = new Float32Array(C * F), B = new Float32Array(C);
  const epochs = new Int32Array(C);
  const train = (c: number) => {
    const all = [...pos[c], ...neg[c]];
    const y = Int8Array.from(all, (_, i) => (i < pos[c].length ? 1 : -1));
    const r = trainSvm(all.length, F, (k) => all[k], y, { ...o, seed: seed + c });
    W.set(r.weight, c * F); // on scaled features
    B[c] = r.bias;
    epochs[c] = r.epochs;
  };
  for (let c = 0; c < C; c++) train(c);
  // Class c's SVM so far on a scaled feature row.
  const score = (c: number, x: Float32Array) => {
    let s = B[c];
    for (let j = 0; j < F; j++) s += W[c * F + j] * x[j];
    return s;
  };
  const added = new Int32Array(C), dropped = new Int32Array(C);
  for (let pass = 0; pass < passes; pass++) {
    for (let i = 0; i < images.count; i++) {
      const im = await images.windows(i);
      if (!im) continue;
      const f = await featuresOf(im.rows).finally(() => im.rows.dispose());
      f.forEach((x, k) => {
        for (let j = 0; j < F; j++) x[j] *= scale;
        for (let c = 0; c < C; c++) {
          if (im.classIou[k][c] >= 0.3) continue;
          const s = score(c, x);
          const key = `${i}:${k}`;
          if (s > -1 && !mined[c].has(key)) {
            mined[c].add(key);
            neg[c].push(x);
            added[c]++;
          }
        }
      });
    }
    for (let c = 0; c < C; c++) {
      // Easy negatives (scored under -1.2 by the SVM so far) leave the set, then the SVM is trained again.
      const before = neg[c].length;
      neg[c] = neg[c].filter((x) => score(c, x) >= -1.2);
      dropped[c] += before - neg[c].length;
      train(c);
    }
  }
  for (let j = 0; j < W.length; j++) W[j] *= scale;
  const parts = det.config.classes.map((name, c) => `${name} ${pos[c].length}+/${neg[c].length}-${passes ? ` (${added[c]} mined, ${dropped[c]} easy dropped)` : ''} in ${epochs[c]} epochs`);
  det.setSvm({ weight: tensor(W, [C, F], { device: m.device }), bias: tensor(B, [C], { device: m.device }) }, layer);
  return { layer, features: F, summary: parts.join(', ') };
}
