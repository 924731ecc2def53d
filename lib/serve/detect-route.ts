// POST /v1/detect: one image in, SPP-net detections out (a Detector from sp.trainDetector or
// sp.loadDetector). Bounded as the other routes: bytes (bodyLimit), pixels as the header states
// them (maxPixels, before decoding), pixels as the detector sees them at its scales (reserved in
// the service-wide maxQueuedPixels), time (the route's handlerTimeout), and detections run one at
// a time (maxConcurrentDetections), each on the conv executor's threads.
import { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { fail, overLimit } from '../core/errors';
import { Detector } from '../detect/detector';
import { ImageHeader, targetSize } from '../io/images';
import { concurrencyLimit } from './limit';

export interface DetectRouteContext {
  admit: object;
  maxPixels: number;
  maxConcurrent: number;
  callOf(req: FastifyRequest): string;
  readBodies(req: FastifyRequest): Promise<Buffer[]>;
  probe(call: string, bytes: Buffer): Promise<ImageHeader>;
  reservePixels(req: FastifyRequest, reply: FastifyReply, pixels: number): void;
}

export function registerDetect(app: FastifyInstance, det: Detector, ctx: DetectRouteContext): void {
  const slot = concurrencyLimit(ctx.maxConcurrent);
  app.post('/v1/detect', ctx.admit, async (req, reply) => {
    const call = ctx.callOf(req);
    const q = req.query as { minScore?: string; scales?: string; maxDetections?: string };
    const minScore = q.minScore === undefined ? 0.05 : Number(q.minScore);
    if (!(minScore >= 0 && minScore <= 1)) fail(`${call}: minScore must be a number in [0, 1], got ${JSON.stringify(q.minScore)}`);
    const maxDetections = q.maxDetections === undefined ? 100 : Number(q.maxDetections);
    if (!Number.isInteger(maxDetections) || maxDetections < 1 || maxDetections > 1000) fail(`${call}: maxDetections must be an integer in [1, 1000], got ${JSON.stringify(q.maxDetections)}`);
    const scales = q.scales ?? 'single';
    if (scales !== 'single' && scales !== 'multi') fail(`${call}: scales must be 'single' or 'multi', got ${JSON.stringify(q.scales)}`);
    const blobs = await ctx.readBodies(req);
    if (blobs.length !== 1) fail(`${call}: send one image as the body (Content-Type image/* or application/octet-stream) or as one multipart file, got ${blobs.length}`);
    const h = await ctx.probe(`${call}: the image`, blobs[0]);
    const source = h.width * h.height;
    if (source > ctx.maxPixels) throw overLimit(call, `the image (${h.width}x${h.height}) holds`, source, 'pixels', 'maxPixels', ctx.maxPixels);
    const sides = det.scalesOf(call, scales);
    const seen = source + sides.reduce((a, s) => { const [H, W] = targetSize(h, s); return a + H * W; }, 0);
    ctx.reservePixels(req, reply, seen);
    // Selective search's working memory grows with the pixels: detect's own limit (4 MP) holds here too.
    const r = await slot(() => det.detect(blobs[0], { scales, minScore, maxDetections, maxPixels: Math.min(ctx.maxPixels, 4_000_000) }));
    const round = (v: number) => Math.round(v * 10) / 10;
    return {
      size: [r.height, r.width],
      windows: r.windows,
      detections: r.detections.map((d) => ({ label: d.label, class: d.class, score: +d.score.toFixed(4), box: d.box.map(round) })),
      timing: Object.fromEntries(Object.entries(r.timing).map(([k, v]) => [`${k}Ms`, +(v * 1000).toFixed(2)])),
    };
  });
}
