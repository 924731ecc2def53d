// The HTTP service: POST an image, get the top classes. Requests go through the dynamic ragged
// batching runner, so concurrent images of any sizes share model calls.
//
// Every resource a request can take is bounded, and refused early: bytes (bodyLimit, multipart
// included), images (maxFiles), pixels as the headers state them (maxPixels, before any decoding),
// pixels as the model sees them (resized to shorterSide; the runner's maxBatchPixels), pixels held
// by the service (maxQueuedPixels), requests in flight (maxQueueLength), time (timeoutMs: the
// runner's timeout, which cancels queued work as a client that goes away does, and one deadline
// per request from its arrival for its waits and its detection, deadline.ts; fastify's
// handlerTimeout is set too, but on Node 20 it is cleared once the body has been read, so over a
// real connection it never fires) and memory (maxRssBytes, through @fastify/under-pressure). Over a per-request limit: 413
// naming the limit; over a service-wide one: 503 with Retry-After, at once. /metrics is
// prom-client's text format from a registry of this server's own, counting every response in an
// onResponse hook (fastify's own 404, 413, 415 and 400 answers included).
import multipart from '@fastify/multipart';
import underPressure from '@fastify/under-pressure';
import Fastify, { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import os from 'os';
import v8 from 'v8';
import { Registry } from 'prom-client';
import { backend } from '../core/backend';
import { BatchingOptions, BatchingRunner } from './batching';
import { serverMetrics } from './metrics';
import { describe, fail, formatAmount, isPositiveInt, nonNegativeOption, overLimit, positiveIntOption, SppnetError } from '../core/errors';
import { checkTriple, decodeImage, IMAGENET_MEAN, IMAGENET_STD, ImageHeader, probeImage, targetSize } from '../io/images';
import { softmax } from '../ops/elementwise';
import { Model } from '../nn/model';
import { freeReleasable, Tensor, tensor } from '../core/tensor';
import { topK } from '../core/topk';
import { Detector } from '../detect/detector';
import { registerDetect } from './detect-route';
import { concurrencyLimit } from './limit';
import { requestDeadlines } from './deadline';

export interface ServerOptions extends BatchingOptions {
  model: Model;
  /** A detector: POST /v1/detect (its image's pixels at the detector's scales count against maxQueuedPixels). */
  detector?: Detector;
  /** Detections run at once (default 1); the rest wait, within maxQueueLength and timeoutMs. */
  maxConcurrentDetections?: number;
  labels?: string[];
  /** Default top-k (a request may ask ?topk=N). */
  topk?: number;
  /**
   * Shorter side every image is resized to, aspect ratio kept (the paper's scale s; default 256,
   * its full-image view). null: keep images as sent (they then meet the runner's maxBatchPixels
   * as they are).
   */
  shorterSide?: number | null;
  /**
   * Per-channel normalisation of the decoded images (after scaling to [0, 1]), as the model was
   * trained: default ImageNet's. `sppnet serve` takes them from weights saved by `sppnet train`.
   */
  mean?: number[];
  std?: number[];
  /** Bytes of one request body, all multipart parts together (default 16 MiB). */
  bodyLimit?: number;
  /** Images in one multipart request (default 16). */
  maxFiles?: number;
  /** Pixels of all the images of one request together, as their headers state them, checked before decoding (default 36,000,000). */
  maxPixels?: number;
  /** Pixels (as the model sees them) of the requests admitted and not yet answered, all together (default 4 x maxBatchPixels). */
  maxQueuedPixels?: number;
  /** Bytes of a JSON body on /v1/logits (parsed on the event loop; default 4 MiB). */
  maxJsonBytes?: number;
  /** Largest tensor side for /v1/logits (default 4096). */
  maxSide?: number;
  /**
   * Requests admitted and not yet answered (reading, decoding, queued or running); more get 503 at
   * once, before their bodies are read (default 256).
   */
  maxQueueLength?: number;
  /** Time a request may take from arrival to answer, in ms (default 30,000); then 503, and its queued work is cancelled. */
  timeoutMs?: number;
  /** Resident memory (bytes) above which new requests get 503 (default 75% of the memory this process may use). */
  maxRssBytes?: number;
  /** Mean event-loop delay (ms, over 250 ms samples) above which new requests get 503 (default 0: never, as @fastify/under-pressure's). */
  maxEventLoopDelayMs?: number;
  /**
   * Images decoded at once, all requests together (default: the cores, at most the libuv pool's
   * threads less 2). Decoding runs on libuv's pool, which also packs batches and hands layers to
   * the CPU executor: unbounded, a burst of decodes would queue ahead of the next batch.
   */
  maxConcurrentDecodes?: number;
  /** Seconds a 503 tells the client to wait (Retry-After; default 1). */
  retryAfterS?: number;
  /**
   * V8's old-generation growing percent for this whole process, as node's `--heap-growing-percent`
   * (default: leave V8's choice; `sppnet serve` sets 300). The service's main thread allocates
   * little, so V8 keeps its heap tight (growing factor 1.1) and under load runs about 4 full
   * collections a second, each pausing the event loop 5-15 ms on a busy machine; 300 (factor 4)
   * makes them about 3 times rarer for a few more MB of heap. 0 restores V8's heuristic.
   */
  heapGrowingPercent?: number;
  logger?: boolean;
}

/** The heapGrowingPercent `sppnet serve` (and bench/load.js, which runs its server as serve does) passes. */
export const SERVE_HEAP_GROWING_PERCENT = 300;

/** Route labels of the metrics: the route's pattern, or 'unmatched' (never the raw URL). */
const routeOf = (req: FastifyRequest) => req.routeOptions?.url ?? 'unmatched';
const callOf = (req: FastifyRequest) => `${req.method} ${req.routeOptions?.url ?? req.url}`;

const RETRY_CODES = new Set(['SPPNET_QUEUE_FULL', 'SPPNET_TIMEOUT', 'SPPNET_ABORTED', 'SPPNET_OUT_OF_MEMORY', 'SPPNET_UNAVAILABLE', 'FST_ERR_HANDLER_TIMEOUT', 'FST_UNDER_PRESSURE']);

/** The memory this process may use: the cgroup's limit where one is set, else the machine's. */
function memoryLimit(): number {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.() ?? 0;
  return constrained > 0 && constrained < os.totalmem() ? constrained : os.totalmem();
}

/** Builds the service (not yet listening): `await app.listen({ port })`, `await close()`. */
export async function createServer(opts: ServerOptions): Promise<{ app: FastifyInstance; runner: BatchingRunner; registry: Registry; close: () => Promise<void> }> {
  const fn = 'createServer';
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const { model } = opts;
  if (!(model instanceof Model)) fail(`${fn}: options.model must be a Model, got ${describe(model)}`);
  if (opts.labels && opts.labels.length !== model.classes) fail(`${fn}: options.labels must list ${model.classes} labels, got ${opts.labels.length}`);
  if (opts.shorterSide !== undefined && opts.shorterSide !== null && !isPositiveInt(opts.shorterSide))
    fail(`${fn}: options.shorterSide must be a positive integer or null (keep images as sent), got ${describe(opts.shorterSide)}`);
  const shorterSide = opts.shorterSide === null ? undefined : opts.shorterSide ?? 256;
  const mean = checkTriple(fn, 'mean', opts.mean, IMAGENET_MEAN, false);
  const std = checkTriple(fn, 'std', opts.std, IMAGENET_STD, true);
  const bodyLimit = positiveIntOption(fn, opts, 'bodyLimit', 16 * 2 ** 20);
  const maxFiles = positiveIntOption(fn, opts, 'maxFiles', 16);
  const maxPixels = positiveIntOption(fn, opts, 'maxPixels', 36_000_000);
  const maxJsonBytes = positiveIntOption(fn, opts, 'maxJsonBytes', 4 * 2 ** 20);
  const maxSide = positiveIntOption(fn, opts, 'maxSide', 4096);
  const maxInFlight = positiveIntOption(fn, opts, 'maxQueueLength', 256);
  const timeoutMs = positiveIntOption(fn, opts, 'timeoutMs', 30_000);
  const maxRssBytes = positiveIntOption(fn, opts, 'maxRssBytes', Math.floor(0.75 * memoryLimit()));
  const maxEventLoopDelayMs = nonNegativeOption(fn, opts, 'maxEventLoopDelayMs', 0);
  const retryAfterS = positiveIntOption(fn, opts, 'retryAfterS', 1);
  const uvThreads = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  const maxDecodes = positiveIntOption(fn, opts, 'maxConcurrentDecodes', Math.max(1, Math.min(os.availableParallelism(), uvThreads - 2)));
  const defaultTopk = positiveIntOption(fn, opts, 'topk', 5);
  if (opts.heapGrowingPercent !== undefined) {
    const pct = opts.heapGrowingPercent;
    if (!Number.isInteger(pct) || pct < 0 || pct > 1000) fail(`${fn}: options.heapGrowingPercent must be an integer from 0 to 1000, got ${describe(pct)}`);
    v8.setFlagsFromString(`--heap-growing-percent=${pct}`);
  }
  const runner = new BatchingRunner(model, { ...opts, maxQueueLength: maxInFlight });
  const maxQueuedPixels = positiveIntOption(fn, opts, 'maxQueuedPixels', 4 * runner.maxBatchPixels);

  const app = Fastify({ logger: opts.logger ?? false, bodyLimit, forceCloseConnections: 'idle', requestTimeout: timeoutMs });
  let shuttingDown = false;
  let inFlight = 0;
  let queuedPixels = 0;

  // ---- metrics: one registry per server (several servers may share a process or a thread)
  const refused = { queue_full: 0, queued_pixels: 0, memory: 0, event_loop: 0, too_large: 0, timeout: 0, aborted: 0 };
  const { registry, requests, durations, detach } = serverMetrics({ runner, refused, maxInFlight, maxQueuedPixels, inFlight: () => inFlight, queuedPixels: () => queuedPixels });

  app.addHook('onResponse', async (req, reply) => {
    const route = routeOf(req);
    requests.inc({ route, code: String(reply.statusCode) });
    durations.observe({ route }, reply.elapsedTime / 1e3);
  });

  // ---- errors: one shape ({ error, code }), one mapping to status codes
  const statusOf = (code: string, statusCode: unknown): number =>
    code === 'SPPNET_INVALID_ARGUMENT' ? 400
    : code === 'SPPNET_TOO_LARGE' ? 413
    : RETRY_CODES.has(code) ? 503
    : typeof statusCode === 'number' && statusCode >= 400 && statusCode < 600 ? statusCode
    : 500;
  app.setErrorHandler((e: FastifyError | SppnetError, req, reply) => {
    const code = e.code ?? 'SPPNET_INTERNAL';
    const status = statusOf(code, (e as FastifyError).statusCode);
    let message = e.message;
    // fastify's and @fastify/multipart's own refusals, restated with the limit they enforce.
    if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      const limit = req.routeOptions?.bodyLimit ?? bodyLimit;
      message = `the body is larger than ${req.routeOptions?.url === '/v1/logits' ? 'maxJsonBytes' : 'bodyLimit'} ${limit} bytes (${formatAmount(limit, 'bytes')})`;
    } else if (code === 'FST_REQ_FILE_TOO_LARGE') message = `a file is larger than bodyLimit ${bodyLimit} bytes (${formatAmount(bodyLimit, 'bytes')})`;
    else if (code === 'FST_FILES_LIMIT' || code === 'FST_PARTS_LIMIT') message = `more than maxFiles ${maxFiles} files`;
    else if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') message = `Content-Type ${JSON.stringify(req.headers['content-type'] ?? '')} is not accepted: send an image (image/* or application/octet-stream), multipart/form-data, or JSON on /v1/logits`;
    if (!(e instanceof SppnetError)) message = `${callOf(req)}: ${message}`;
    if (status === 413) {
      refused.too_large++;
      reply.header('connection', 'close'); // the rest of the body is not read
    }
    if (status === 503) reply.header('retry-after', String(retryAfterS));
    if (status >= 500 && status !== 503) req.log.error(e);
    return reply.code(status).send({ error: message, code });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `${req.method} ${req.url}: no such route (POST /v1/classify, POST /v1/logits, POST /v1/detect with a detector, GET /healthz, /readyz, /metrics)`, code: 'FST_ERR_NOT_FOUND' }));

  // ---- admission: service-wide limits answer 503 at once, before a body is read
  await app.register(underPressure, {
    maxRssBytes,
    maxEventLoopDelay: maxEventLoopDelayMs,
    sampleInterval: 250,
    retryAfter: retryAfterS,
    // Only the inference routes are shed; health, readiness and metrics answer under pressure.
    pressureHandler: async (req: FastifyRequest, _reply: FastifyReply, type: string, value: number | undefined) => {
      if (!(req.routeOptions.config as { admit?: boolean }).admit) return;
      if (type === 'eventLoopDelay') refused.event_loop++;
      else refused.memory++;
      if (type === 'rssBytes')
        throw new SppnetError(`${callOf(req)}: the service holds ${value} bytes of memory (${formatAmount(value ?? 0, 'bytes')}), more than maxRssBytes ${maxRssBytes} (${formatAmount(maxRssBytes, 'bytes')}); retry later`, 'SPPNET_OUT_OF_MEMORY');
      const late = Number.isFinite(value) ? `${Math.round(value ?? 0)} ms late` : 'blocked for a whole 250 ms sample';
      throw new SppnetError(`${callOf(req)}: the event loop is ${late}, more than maxEventLoopDelayMs ${maxEventLoopDelayMs}; retry later`, 'SPPNET_QUEUE_FULL');
    },
  });
  // Cancels a request's queued work when its client goes away. (Not fastify's request.signal: on
  // Node 20 it aborts as soon as the body has been read, when IncomingMessage emits 'close'.)
  const gone = new WeakMap<FastifyRequest, AbortSignal>();
  app.addHook('onRequest', async (req, reply) => {
    if (!(req.routeOptions.config as { admit?: boolean }).admit) return;
    if (shuttingDown) throw new SppnetError(`${callOf(req)}: the server is shutting down`, 'SPPNET_UNAVAILABLE');
    if (inFlight >= maxInFlight) {
      refused.queue_full++;
      throw new SppnetError(`${callOf(req)}: ${inFlight} requests are in flight, maxQueueLength ${maxInFlight}; retry later`, 'SPPNET_QUEUE_FULL');
    }
    inFlight++;
    const ac = new AbortController();
    gone.set(req, ac.signal);
    // 'close' comes once, whether the response was sent or the client went away.
    reply.raw.once('close', () => {
      inFlight--;
      if (!reply.raw.writableFinished) ac.abort();
    });
  });

  /** Holds `pixels` of the service-wide budget until release() (once; later calls do nothing); 503 when it is spent. */
  const holdPixels = (req: FastifyRequest, pixels: number): (() => void) => {
    if (queuedPixels + pixels > maxQueuedPixels) {
      refused.queued_pixels++;
      throw new SppnetError(`${callOf(req)}: the service holds ${queuedPixels} pixels of admitted images; ${pixels} more would pass maxQueuedPixels ${maxQueuedPixels} (${formatAmount(maxQueuedPixels, 'pixels')}); retry later`, 'SPPNET_QUEUE_FULL');
    }
    queuedPixels += pixels;
    let held = true;
    return () => {
      if (held) queuedPixels -= pixels;
      held = false;
    };
  };
  /** holdPixels until the response is done. */
  const reservePixels = (req: FastifyRequest, reply: FastifyReply, pixels: number) => {
    reply.raw.once('close', holdPixels(req, pixels));
  };

  /** At most maxDecodes images are probed or decoded at once; the others wait their turn here. */
  const decodeSlot = concurrencyLimit(maxDecodes);
  const { waitSignal, countLate } = requestDeadlines({ timeoutMs, refused, callOf, goneOf: (req) => gone.get(req) });

  /** Runs images through the batching runner within what is left of the request's time; its refusals name the route. */
  const infer = (req: FastifyRequest, reply: FastifyReply, images: Tensor[]) =>
    runner.run(images, { signal: gone.get(req), timeoutMs: Math.max(1, timeoutMs - reply.elapsedTime) }).catch((e: unknown) => {
      if (e instanceof SppnetError) throw new SppnetError(`${callOf(req)}: ${e.message.replace(/^BatchingRunner\.run: /, '')}`, e.code);
      throw e;
    });

  // While shutting down, answers close their connection, so that keep-alive clients let go and
  // close() can finish once the requests in flight are answered.
  app.addHook('onSend', async (_req, reply) => {
    if (shuttingDown) reply.header('connection', 'close');
  });

  // Images come as raw bytes (any image/* or application/octet-stream body) or multipart.
  app.addContentTypeParser(['application/octet-stream', 'image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/tiff', 'image/avif'], { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  await app.register(multipart, { limits: { fileSize: bodyLimit, files: maxFiles, parts: maxFiles + 16, fields: 16, fieldSize: 64 * 1024, headerPairs: 200 } });

  /** The request's image bodies: the raw body, or every multipart file, all bytes counted against bodyLimit. */
  const readBodies = async (req: FastifyRequest): Promise<Buffer[]> => {
    const call = callOf(req);
    const tooLarge = (bytes: number) => overLimit(call, 'the body has', bytes, 'bytes', 'bodyLimit', bodyLimit);
    if (!req.isMultipart()) return Buffer.isBuffer(req.body) ? [req.body] : [];
    const declared = Number(req.headers['content-length']);
    if (declared > bodyLimit) throw tooLarge(declared);
    const blobs: Buffer[] = [];
    let total = 0;
    try {
      for await (const part of req.files()) {
        const chunks: Buffer[] = [];
        for await (const chunk of part.file as AsyncIterable<Buffer>) {
          total += chunk.length;
          if (total > bodyLimit) throw tooLarge(total);
          chunks.push(chunk);
        }
        blobs.push(Buffer.concat(chunks));
      }
    } catch (e) {
      // @fastify/multipart's limits carry their status; what busboy throws is a malformed body.
      if (e instanceof SppnetError || typeof (e as FastifyError).statusCode === 'number') throw e;
      throw new SppnetError(`${call}: the multipart body is malformed: ${(e as Error).message}`, 'SPPNET_INVALID_ARGUMENT');
    }
    return blobs;
  };

  const topOf = async (logits: Tensor, k: number) => {
    const p = await softmax(logits);
    logits.dispose();
    const d = await p.data();
    p.dispose();
    const rows = [];
    for (let r = 0; r < d.length / model.classes; r++) rows.push(topK(d, k, opts.labels, r * model.classes, model.classes));
    return rows;
  };

  const admit = { config: { admit: true }, handlerTimeout: timeoutMs };

  app.post('/v1/classify', admit, async (req, reply) => {
    const call = callOf(req);
    const q = req.query as { topk?: string };
    const k = q.topk === undefined ? defaultTopk : Number(q.topk);
    if (!isPositiveInt(k)) fail(`${call}: topk must be a positive integer, got ${JSON.stringify(q.topk)}`);
    const t0 = performance.now();
    const blobs = await readBodies(req);
    if (blobs.length === 0) fail(`${call}: send an image as the body (Content-Type image/* or application/octet-stream) or as multipart files`);
    // Headers first: the pixel budgets are checked before a single pixel is decoded.
    const wait = waitSignal(req, reply);
    const headers: ImageHeader[] = await Promise.all(blobs.map((b, i) => decodeSlot(() => probeImage(`${call}: image ${i}`, b), wait, call))).catch(countLate);
    const sizes = headers.map((h) => `${h.width}x${h.height}`).join(' + ');
    const source = headers.reduce((a, h) => a + h.width * h.height, 0);
    if (source > maxPixels) throw overLimit(call, `the images (${sizes}) hold`, source, 'pixels', 'maxPixels', maxPixels);
    const input = headers.reduce((a, h) => { const [H, W] = targetSize(h, shorterSide); return a + H * W; }, 0);
    const over = runner.checkPixels(call, input);
    if (over) throw over;
    reservePixels(req, reply, input);
    const settled = await Promise.allSettled(blobs.map((b, i) => decodeSlot(() => decodeImage(`${call}: image ${i}`, b, headers[i], { shorterSide, mean, std, device: model.device, releasable: true }), wait, call)));
    const imgs = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    let inBatch = false; // handed to the runner and not answered: a packing op may still read them
    try {
      const bad = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (bad) countLate(bad.reason);
      const t1 = performance.now();
      inBatch = true;
      const logits = await infer(req, reply, imgs);
      inBatch = false;
      const t2 = performance.now();
      const top = await topOf(logits, k);
      return {
        results: top.map((t, i) => ({ size: [imgs[i].shape[1], imgs[i].shape[2]], top: t })),
        timing: { decodeMs: +(t1 - t0).toFixed(2), inferenceMs: +(t2 - t1).toFixed(2), totalMs: +(performance.now() - t0).toFixed(2) },
      };
    } finally {
      // Their memory goes back now where nothing can still read it (answered, or never queued);
      // a request that timed out or went away may still be in a batch that is being packed: its
      // images are only disposed, and the GC frees them once that op lets go of them.
      imgs.forEach((t) => (inBatch ? t.dispose() : freeReleasable(t)));
    }
  });

  // JSON tensors: { "data": [...], "shape": [3, H, W] } -> logits.
  app.post('/v1/logits', { ...admit, bodyLimit: Math.min(bodyLimit, maxJsonBytes) }, async (req, reply) => {
    const call = callOf(req);
    const b = req.body as { data?: unknown; shape?: unknown };
    if (!b || typeof b !== 'object' || !Array.isArray(b.data) || !Array.isArray(b.shape))
      fail(`${call}: the body must be JSON {"data": [numbers], "shape": [C, H, W]}`);
    const shape = b.shape as number[];
    if (shape.length !== 3 || shape.some((d) => !Number.isInteger(d) || d < 1 || d > maxSide))
      fail(`${call}: shape must be [C, H, W] with sides 1..${maxSide} (maxSide), got ${JSON.stringify(b.shape)}`);
    const over = runner.checkPixels(call, shape[1] * shape[2]);
    if (over) throw over;
    reservePixels(req, reply, shape[1] * shape[2]);
    const t = tensor(b.data as number[], shape, { device: model.device });
    try {
      const logits = await infer(req, reply, [t]);
      const d = await logits.data();
      logits.dispose();
      return { logits: Array.from(d) };
    } finally {
      t.dispose();
    }
  });

  if (opts.detector !== undefined) {
    if (!(opts.detector instanceof Detector)) fail(`${fn}: options.detector must be a Detector, got ${describe(opts.detector)}`);
    const maxConcurrent = positiveIntOption(fn, opts, 'maxConcurrentDetections', 1);
    registerDetect(app, opts.detector, { admit, maxPixels, maxConcurrent, waitSignal, countLate, refused, goneOf: (req) => gone.get(req), callOf, readBodies, holdPixels, probe: (call, b, signal) => decodeSlot(() => probeImage(call, b), signal, call) });
  }

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    if (shuttingDown) return reply.code(503).send({ status: 'shutting down' });
    if (app.isUnderPressure()) return reply.code(503).header('retry-after', String(retryAfterS)).send({ status: 'under pressure', ...app.memoryUsage() });
    return { status: 'ready', device: backend().device };
  });
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));

  const close = async () => {
    shuttingDown = true;
    await app.close(); // stops accepting; waits for requests in flight
    await runner.close();
    detach();
  };
  return { app, runner, registry, close };
}
