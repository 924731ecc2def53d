// sp.evaluateDetector: a detector run over a VOC-format split, scored as VOC2007 (11-point AP per
// class, mAP), with the time per image broken down by stage.
import { describe, fail } from '../core/errors';
import { DetectOptions, DetectTiming, Detector } from './detector';
import { Detection, vocEval, VocEvalResult } from './eval';
import { VocDataset } from './voc-data';

export interface DetectorEvaluation extends VocEvalResult {
  images: number;
  /** Candidate windows per image (mean). */
  windows: number;
  /** Median seconds per image, per stage (each stage's own median; total: the median of totals). */
  median: DetectTiming;
  /** Mean seconds per image, per stage. */
  mean: DetectTiming;
}

const STAGES: Array<keyof DetectTiming> = ['proposals', 'decode', 'conv', 'pooling', 'fc', 'nms', 'total'];

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** Runs det.detect on every image of `data` (options as detect's) and evaluates the detections against its ground truth. */
export async function evaluateDetector(det: Detector, data: VocDataset, opts: DetectOptions & { log?: (line: string) => void } = {}): Promise<DetectorEvaluation> {
  const fn = 'sp.evaluateDetector';
  if (!(det instanceof Detector)) fail(`${fn}: detector must be a Detector (sp.trainDetector, sp.loadDetector), got ${describe(det)}`);
  if (typeof data !== 'object' || data === null || !Array.isArray(data.images)) fail(`${fn}: data must be a dataset from sp.data.voc, got ${describe(data)}`);
  const { log, ...detectOpts } = opts;
  const dets: Detection[] = [];
  const times: DetectTiming[] = [];
  let windows = 0;
  for (const [i, im] of data.images.entries()) {
    const r = await det.detect(im.path, detectOpts);
    windows += r.windows;
    times.push(r.timing);
    // VOC's 1-based inclusive pixels.
    for (const d of r.detections) dets.push({ image: im.id, label: d.label, score: d.score, box: d.box.map((v) => v + 1) });
    if (log && ((i + 1) % 25 === 0 || i + 1 === data.images.length)) log(`${fn}: ${i + 1}/${data.images.length} images`);
  }
  const ev = vocEval(dets, data);
  const per = (f: (v: number[]) => number) => Object.fromEntries(STAGES.map((s) => [s, f(times.map((t) => t[s]))])) as unknown as DetectTiming;
  return { ...ev, images: data.images.length, windows: windows / Math.max(1, data.images.length), median: per(median), mean: per((v) => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length)) };
}
