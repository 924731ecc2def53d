// The HTTP service: POST an image, get the top classes. Requests go through the dynamic ragged
// batching runner, so concurrent images of any sizes share model calls.
import multipart from '@fastify/multipart';
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { backend, memory } from './backend';
import { BatchingOptions, BatchingRunner } from './batching';
import { SppnetError } from './errors';
import { readImage } from './images';
import { softmax } from './layers';
import { Model } from './model';
import { tensor } from './tensor';

export interface ServerOptions extends BatchingOptions {
  model: Model;
  labels?: string[];
  /** Default top-k (a request may ask ?topk=N). */
  topk?: number;
  /** Shorter side images are resized to (the paper's scale s); default: kept as sent. */
  shorterSide?: number;
  /** Largest request body in bytes (default 16 MiB). */
  bodyLimit?: number;
  /** Largest image in pixels (default 36 megapixels). */
  maxPixels?: number;
  /** Largest tensor side for /v1/logits (default 4096). */
  maxSide?: number;
  logger?: boolean;
}

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

class Histogram {
  counts: number[];
  sum = 0;
  n = 0;
  constructor(readonly buckets: number[]) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number) {
    this.sum += v;
    this.n += 1;
    this.buckets.forEach((b, i) => v <= b && this.counts[i]++);
  }
  render(name: string, labels = ''): string {
    const lb = (extra: string) => `{${[labels, extra].filter(Boolean).join(',')}}`;
    return [
      ...this.buckets.map((b, i) => `${name}_bucket${lb(`le="${b}"`)} ${this.counts[i]}`),
      `${name}_bucket${lb('le="+Inf"')} ${this.n}`,
      `${name}_sum${labels ? `{${labels}}` : ''} ${this.sum}`,
      `${name}_count${labels ? `{${labels}}` : ''} ${this.n}`,
    ].join('\n');
  }
}

function httpError(e: unknown): { status: number; body: { error: string; code: string } } {
  const err = e as SppnetError & { tooLarge?: boolean; statusCode?: number; code?: string };
  const code = err?.code ?? 'SPPNET_INTERNAL';
  const status =
    err.tooLarge ? 413
    : code === 'SPPNET_QUEUE_FULL' ? 503
    : code === 'SPPNET_TIMEOUT' ? 503
    : code === 'SPPNET_INVALID_ARGUMENT' ? 400
    : typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode
    : 500;
  return { status, body: { error: err?.message ?? String(e), code } };
}

/** Builds the service (not yet listening): `await app.listen({ port })`, `await close()`. */
export async function createServer(opts: ServerOptions): Promise<{ app: FastifyInstance; runner: BatchingRunner; close: () => Promise<void> }> {
  const { model } = opts;
  if (!(model instanceof Model)) throw new SppnetError('createServer: options.model must be a Model', 'SPPNET_INVALID_ARGUMENT');
  if (opts.labels && opts.labels.length !== model.classes)
    throw new SppnetError(`createServer: options.labels must list ${model.classes} labels, got ${opts.labels.length}`, 'SPPNET_INVALID_ARGUMENT');
  const runner = new BatchingRunner(model, opts);
  const app = Fastify({ logger: opts.logger ?? false, bodyLimit: opts.bodyLimit ?? 16 * 1024 * 1024, forceCloseConnections: 'idle' });
  const maxSide = opts.maxSide ?? 4096;
  const defaultTopk = opts.topk ?? 5;
  let shuttingDown = false;
  const requests = new Map<string, number>();
  const durations = new Histogram(DURATION_BUCKETS);
  const count = (route: string, status: number) => {
    const k = `route="${route}",code="${status}"`;
    requests.set(k, (requests.get(k) ?? 0) + 1);
  };

  // While shutting down, answers close their connection, so that keep-alive clients let go and
  // close() can finish once the requests in flight are answered.
  app.addHook('onSend', async (_req, reply) => {
    if (shuttingDown) reply.header('connection', 'close');
  });

  // Images come as raw bytes (any image/* or application/octet-stream body) or multipart.
  app.addContentTypeParser(['application/octet-stream', 'image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/tiff', 'image/avif'], { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  await app.register(multipart, { limits: { fileSize: opts.bodyLimit ?? 16 * 1024 * 1024, files: 16 } });

  const topOf = async (logits: import('./tensor').Tensor, k: number) => {
    const p = await softmax(logits);
    logits.dispose();
    const d = await p.data();
    p.dispose();
    const rows = [];
    for (let r = 0; r < d.length / model.classes; r++) {
      const row = Array.from(d.subarray(r * model.classes, (r + 1) * model.classes), (score, index) => ({ index, score }));
      row.sort((a, b) => b.score - a.score || a.index - b.index);
      rows.push(row.slice(0, Math.min(k, model.classes)).map((x) => (opts.labels ? { ...x, label: opts.labels[x.index] } : x)));
    }
    return rows;
  };

  const guard = (route: string, handler: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>) => async (req: FastifyRequest, reply: FastifyReply) => {
    const t0 = process.hrtime.bigint();
    try {
      if (shuttingDown) throw Object.assign(new SppnetError('the server is shutting down', 'SPPNET_UNAVAILABLE'), { statusCode: 503 });
      const body = await handler(req, reply);
      count(route, 200);
      return body;
    } catch (e) {
      const { status, body } = httpError(e);
      const st = (e as { code?: string }).code === 'SPPNET_UNAVAILABLE' ? 503 : status;
      count(route, st);
      if (st === 503) reply.header('retry-after', '1');
      return reply.code(st).send(body);
    } finally {
      durations.observe(Number(process.hrtime.bigint() - t0) / 1e9);
    }
  };

  app.post('/v1/classify', guard('classify', async (req) => {
    const q = req.query as { topk?: string };
    const k = q.topk === undefined ? defaultTopk : Number(q.topk);
    if (!Number.isInteger(k) || k < 1) throw new SppnetError(`topk must be a positive integer, got ${JSON.stringify(q.topk)}`, 'SPPNET_INVALID_ARGUMENT');
    const t0 = performance.now();
    const blobs: Buffer[] = [];
    if (req.isMultipart()) {
      for await (const part of req.files()) blobs.push(await part.toBuffer());
    } else if (Buffer.isBuffer(req.body)) blobs.push(req.body);
    if (blobs.length === 0)
      throw new SppnetError('send an image as the body (Content-Type image/* or application/octet-stream) or as multipart files', 'SPPNET_INVALID_ARGUMENT');
    const imgs = await Promise.all(blobs.map((b, i) => readImage(b, { shorterSide: opts.shorterSide, maxPixels: opts.maxPixels ?? 36_000_000, device: model.device }).catch((e: SppnetError) => {
      throw Object.assign(new SppnetError(`image ${i}: ${e.message.replace(/^sp\.readImage: /, '')}`, e.code), { tooLarge: (e as { tooLarge?: boolean }).tooLarge });
    })));
    const t1 = performance.now();
    try {
      const logits = await runner.run(imgs);
      const t2 = performance.now();
      const top = await topOf(logits, k);
      return {
        results: top.map((t, i) => ({ size: [imgs[i].shape[1], imgs[i].shape[2]], top: t })),
        timing: { decodeMs: +(t1 - t0).toFixed(2), inferenceMs: +(t2 - t1).toFixed(2), totalMs: +(performance.now() - t0).toFixed(2) },
      };
    } finally {
      imgs.forEach((t) => t.dispose());
    }
  }));

  // JSON tensors: { "data": [...], "shape": [3, H, W] } -> logits.
  app.post('/v1/logits', guard('logits', async (req) => {
    const b = req.body as { data?: unknown; shape?: unknown };
    if (!b || typeof b !== 'object' || !Array.isArray(b.data) || !Array.isArray(b.shape))
      throw new SppnetError('the body must be JSON {"data": [numbers], "shape": [C, H, W]}', 'SPPNET_INVALID_ARGUMENT');
    const shape = b.shape as number[];
    if (shape.length !== 3 || shape.some((d) => !Number.isInteger(d) || d < 1 || d > maxSide))
      throw new SppnetError(`shape must be [C, H, W] with sides 1..${maxSide}, got ${JSON.stringify(b.shape)}`, 'SPPNET_INVALID_ARGUMENT');
    const t = tensor(b.data as number[], shape, { device: model.device });
    try {
      const logits = await runner.run(t);
      const d = await logits.data();
      logits.dispose();
      return { logits: Array.from(d) };
    } finally {
      t.dispose();
    }
  }));

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => (shuttingDown ? reply.code(503).send({ status: 'shutting down' }) : { status: 'ready', device: backend().device }));
  app.get('/metrics', async (_req, reply) => {
    const st = runner.stats();
    const mem = memory();
    const lines = [
      '# HELP sppnet_requests_total Requests by route and status code.',
      '# TYPE sppnet_requests_total counter',
      ...[...requests].map(([k, v]) => `sppnet_requests_total{${k}} ${v}`),
      '# HELP sppnet_request_duration_seconds Request latency.',
      '# TYPE sppnet_request_duration_seconds histogram',
      durations.render('sppnet_request_duration_seconds'),
      '# HELP sppnet_queue_depth Requests waiting for a batch.',
      '# TYPE sppnet_queue_depth gauge',
      `sppnet_queue_depth ${st.queued}`,
      '# HELP sppnet_batches_total Model calls.',
      '# TYPE sppnet_batches_total counter',
      `sppnet_batches_total ${st.batches}`,
      '# HELP sppnet_batch_size Images per model call.',
      '# TYPE sppnet_batch_size histogram',
      (() => {
        const sizes = Object.entries(st.batchSizes).map(([s, c]) => [Number(s), c] as const);
        const buckets = [1, 2, 4, 8, 16, 32, 64, 128];
        const le = buckets.map((b) => `sppnet_batch_size_bucket{le="${b}"} ${sizes.filter(([s]) => s <= b).reduce((a, [, c]) => a + c, 0)}`);
        const n = sizes.reduce((a, [, c]) => a + c, 0), sum = sizes.reduce((a, [s, c]) => a + s * c, 0);
        return [...le, `sppnet_batch_size_bucket{le="+Inf"} ${n}`, `sppnet_batch_size_sum ${sum}`, `sppnet_batch_size_count ${n}`].join('\n');
      })(),
      '# HELP sppnet_rejected_total Requests refused by the batching queue.',
      '# TYPE sppnet_rejected_total counter',
      `sppnet_rejected_total{reason="queue_full"} ${st.rejected.queueFull}`,
      `sppnet_rejected_total{reason="timeout"} ${st.rejected.timeout}`,
      `sppnet_rejected_total{reason="aborted"} ${st.rejected.aborted}`,
      '# HELP sppnet_device_memory_bytes Device memory held by sppnet.',
      '# TYPE sppnet_device_memory_bytes gauge',
      `sppnet_device_memory_bytes ${mem.deviceBytes}`,
      '# HELP sppnet_live_tensor_bytes Bytes of live tensors by device.',
      '# TYPE sppnet_live_tensor_bytes gauge',
      `sppnet_live_tensor_bytes{device="cpu"} ${mem.bytes.cpu}`,
      `sppnet_live_tensor_bytes{device="cuda"} ${mem.bytes.cuda}`,
    ];
    return reply.type('text/plain; version=0.0.4').send(lines.join('\n') + '\n');
  });

  const close = async () => {
    shuttingDown = true;
    await app.close(); // stops accepting; waits for requests in flight
    await runner.close();
  };
  return { app, runner, close };
}
