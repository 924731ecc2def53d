// POST /v1/detect: one image in, SPP-net detections out (a Detector from sp.trainDetector or
// sp.loadDetector). Bounded as the other routes: bytes (bodyLimit), pixels as the header states
// them (maxPixels, before decoding), pixels as the detector sees them at its scales (reserved in
// the service-wide maxQueuedPixels, from admission until the detection has stopped), time
// (timeoutMs from arrival: then 503), and detections run one at a time (maxConcurrentDetections),
// each on the conv executor's threads. Once the response is done (answered, timed out, or the
// client gone) the request's detection stops: it leaves the line if it is waiting its turn, or
// stops at its next stage (Detector.detect's signal).
import { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { fail, overLimit, SppnetError, throwIfAborted } from '../core/errors';
import { Detector } from '../detect/detector';
import { ImageHeader, targetSize } from '../io/images';
import { concurrencyLimit } from './limit';

export interface DetectRouteContext {
  admit: object;
  maxPixels: number;
  maxConcurrent: number;
  /** The request's signal: aborts when its client goes, or at timeoutMs from arrival with SPPNET_TIMEOUT (deadline.ts). */
  waitSignal(req: FastifyRequest, reply: FastifyReply): AbortSignal;
  /** Rethrows, counting the deadline's SPPNET_TIMEOUT as a timeout (deadline.ts). */
  countLate(e: unknown): never;
  /** The service's refusal counters: detections whose client went away. */
  refused: { aborted: number };
  /** Aborts when the request's client goes away (listening since the request arrived). */
  goneOf(req: FastifyRequest): AbortSignal | undefined;
  callOf(req: FastifyRequest): string;
  readBodies(req: FastifyRequest): Promise<Buffer[]>;
  probe(call: string, bytes: Buffer, signal: AbortSignal): Promise<ImageHeader>;
  /** Holds pixels of the service-wide budget until the returned function is called; throws (503) when it is spent. */
  holdPixels(req: FastifyRequest, pixels: number): () => void;
}

type Slot = ReturnType<typeof concurrencyLimit>;

export function registerDetect(app: FastifyInstance, det: Detector, ctx: DetectRouteContext): void {
  const slot = concurrencyLimit(ctx.maxConcurrent);
  // The route keeps its own time (waitSignal's deadline), not fastify's handlerTimeout: that is
  // cleared once Node 20 has read the body, so over a real connection it never fires.
  app.post('/v1/detect', { ...ctx.admit, handlerTimeout: undefined }, async (req, reply) => {
    const call = ctx.callOf(req);
    // The request's work ends with its response: its signal aborts when the client goes (counted
    // as aborted) or at its time (503 at once, counted as a timeout by countLate).
    const signal = ctx.waitSignal(req, reply);
    const gone = ctx.goneOf(req);
    if (gone?.aborted) ctx.refused.aborted++;
    else gone?.addEventListener('abort', () => ctx.refused.aborted++, { once: true });
    const late = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason instanceof SppnetError ? signal.reason : new SppnetError(`${call}: the client went away`, 'SPPNET_ABORTED')), { once: true }));
    late.catch(() => {});
    return Promise.race([answer(req, call, det, ctx, slot, signal), late]).catch(ctx.countLate);
  });
}

async function answer(req: FastifyRequest, call: string, det: Detector, ctx: DetectRouteContext, slot: Slot, signal: AbortSignal) {
  const q = req.query as { minScore?: string; scales?: string; maxDetections?: string };
  const minScore = q.minScore === undefined ? 0.05 : Number(q.minScore);
  if (!(minScore >= 0 && minScore <= 1)) fail(`${call}: minScore must be a number in [0, 1], got ${JSON.stringify(q.minScore)}`);
  const maxDetections = q.maxDetections === undefined ? 100 : Number(q.maxDetections);
  if (!Number.isInteger(maxDetections) || maxDetections < 1 || maxDetections > 1000) fail(`${call}: maxDetections must be an integer in [1, 1000], got ${JSON.stringify(q.maxDetections)}`);
  const scales = q.scales ?? 'single';
  if (scales !== 'single' && scales !== 'multi') fail(`${call}: scales must be 'single' or 'multi', got ${JSON.stringify(q.scales)}`);
  const blobs = await ctx.readBodies(req);
  if (blobs.length !== 1) fail(`${call}: send one image as the body (Content-Type image/* or application/octet-stream) or as one multipart file, got ${blobs.length}`);
  throwIfAborted(call, signal, 'probing the image');
  const h = await ctx.probe(`${call}: the image`, blobs[0], signal);
  throwIfAborted(call, signal, 'holding its pixels');
  const source = h.width * h.height;
  if (source > ctx.maxPixels) throw overLimit(call, `the image (${h.width}x${h.height}) holds`, source, 'pixels', 'maxPixels', ctx.maxPixels);
  const sides = det.scalesOf(call, scales);
  const seen = source + sides.reduce((a, s) => { const [H, W] = targetSize(h, s); return a + H * W; }, 0);
  const release = ctx.holdPixels(req, seen);
  // Selective search's working memory grows with the pixels: detect's own limit (4 MP) holds here too.
  const detect = () => det.detect(blobs[0], { scales, minScore, maxDetections, maxPixels: Math.min(ctx.maxPixels, 4_000_000), signal });
  const work = slot(detect, signal, call).finally(release); // the pixels are held until the work has stopped
  work.catch(() => {}); // past its time the race has moved on; the work still stops and releases
  const r = await work;
  const round = (v: number) => Math.round(v * 10) / 10;
  return {
    size: [r.height, r.width],
    windows: r.windows,
    detections: r.detections.map((d) => ({ label: d.label, class: d.class, score: +d.score.toFixed(4), box: d.box.map(round) })),
    timing: Object.fromEntries(Object.entries(r.timing).map(([k, v]) => [`${k}Ms`, +(v * 1000).toFixed(2)])),
  };
}
