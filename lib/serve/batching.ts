// Dynamic ragged batching: concurrent requests are queued and merged into one ragged batch per
// model call, images of any sizes together. The knobs are those of Triton and TorchServe: maximum
// batch size, maximum queue delay, maximum queue length, a per-request timeout, cancellation
// through AbortSignal, and priorities; and a pixel budget per model call, which bounds the
// activation memory a batch takes.
import { EventEmitter } from 'events';
import { describe, fail, nonNegativeOption, overLimit, positiveIntOption, SppnetError } from '../core/errors';
import { Model } from '../nn/model';
import { packRagged } from '../core/ragged';
import { copyRows, Tensor } from '../core/tensor';

export interface BatchingOptions {
  /** Images per model call (default 32). */
  maxBatchSize?: number;
  /** How long the first queued request may wait for others to join its batch, in ms (default 2). */
  maxQueueDelayMs?: number;
  /** Requests waiting at most; more are refused with SPPNET_QUEUE_FULL (default 1024). */
  maxQueueLength?: number;
  /** Default per-request timeout in ms, queueing included (default: none). */
  timeoutMs?: number;
  /**
   * Pixels (H x W summed over the images) per model call (default 4,000,000). The model's
   * activation memory grows with them (ZF-5: about 250 bytes a pixel on the CPU, so ~1 GB): a batch
   * closes before it would pass this, and a request holding more alone is refused
   * (SPPNET_TOO_LARGE).
   */
  maxBatchPixels?: number;
  /**
   * Once the runner has been idle this long, it asks the model to give back its activation
   * buffers (model.releaseBuffers(), where the model has it); default 10,000 ms; 0: never.
   */
  releaseBuffersAfterMs?: number;
}

export interface RequestOptions {
  /** Cancels the request while it waits (SPPNET_ABORTED); a request already running completes. */
  signal?: AbortSignal;
  /** Higher runs first; equal priorities run in arrival order (default 0). */
  priority?: number;
  /** Overrides the runner's timeout for this request. */
  timeoutMs?: number;
}

export interface BatchingStats {
  /** Requests waiting, and their images and pixels. */
  queued: number;
  queuedImages: number;
  queuedPixels: number;
  running: number;
  requests: number;
  batches: number;
  rejected: { queueFull: number; timeout: number; aborted: number };
  /** Images per model call: count of calls by batch size. */
  batchSizes: Record<number, number>;
  /**
   * The fastest a recent model call (of the last 8) ran, in ms per pixel, or null before the third:
   * what the runner's wait estimates use (small calls, with their fixed costs, are slower per pixel).
   */
  msPerPixel: number | null;
}

/** What the runner emits as 'batch' after each model call. */
export interface BatchEvent {
  images: number;
  pixels: number;
  /** Packing and the model call, in seconds. */
  seconds: number;
  ok: boolean;
}

interface Pending {
  images: Tensor[];
  pixels: number;
  priority: number;
  seq: number;
  resolve: (t: Tensor) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
  onAbort?: () => void;
  signal?: AbortSignal;
  done: boolean;
}

const pixelsOf = (images: Tensor[]) => images.reduce((a, t) => a + t.shape[1] * t.shape[2], 0);

/** Emits 'batch' (a BatchEvent) after each model call. */
export class BatchingRunner extends EventEmitter {
  readonly model: Model;
  /** The options in force (defaults filled in). */
  readonly maxBatchPixels: number;
  private readonly maxBatch: number;
  private readonly delay: number;
  private readonly maxQueue: number;
  private readonly timeout: number | undefined;
  private queue: Pending[] = [];
  private seq = 0;
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private idle: Array<() => void> = [];
  private readonly releaseAfter: number;
  private releaseTimer: NodeJS.Timeout | undefined;
  private runningPixels = 0;
  /** The host buffer batches are packed into, reused from one batch to the next (one runs at a time). */
  private readonly scratch: { array?: Float32Array } = {};
  /** ms per pixel of the last model calls (at most 8), newest last. */
  private recent: number[] = [];
  private readonly counters = { requests: 0, batches: 0, rejected: { queueFull: 0, timeout: 0, aborted: 0 }, batchSizes: {} as Record<number, number> };

  constructor(model: Model, opts: BatchingOptions = {}) {
    super();
    const fn = 'sp.batching';
    if (!(model instanceof Model)) fail(`${fn}: model must be a Model, got ${describe(model)}`);
    if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
    this.model = model;
    this.maxBatch = positiveIntOption(fn, opts, 'maxBatchSize', 32);
    this.maxQueue = positiveIntOption(fn, opts, 'maxQueueLength', 1024);
    this.maxBatchPixels = positiveIntOption(fn, opts, 'maxBatchPixels', 4_000_000);
    this.releaseAfter = nonNegativeOption(fn, opts, 'releaseBuffersAfterMs', 10_000);
    this.delay = nonNegativeOption(fn, opts, 'maxQueueDelayMs', 2);
    if (opts.timeoutMs !== undefined && !(typeof opts.timeoutMs === 'number' && opts.timeoutMs > 0))
      fail(`${fn}: options.timeoutMs must be a number > 0, got ${describe(opts.timeoutMs)}`);
    this.timeout = opts.timeoutMs;
  }

  /**
   * Logits [n, classes] for one image [C, H, W] or a few; resolves when the batch it joined has run.
   * The caller owns the result (dispose it).
   */
  run(images: Tensor | Tensor[], opts: RequestOptions = {}): Promise<Tensor> {
    const fn = 'BatchingRunner.run';
    return new Promise<Tensor>((resolve, reject) => {
      if (this.closed) return reject(new SppnetError(`${fn}: the runner is closed`, 'SPPNET_DISPOSED'));
      const list = Array.isArray(images) ? images : [images];
      if (list.length === 0) return reject(new SppnetError(`${fn}: no images`, 'SPPNET_INVALID_ARGUMENT'));
      for (const [i, t] of list.entries()) {
        if (!(t instanceof Tensor) || t.rank !== 3)
          return reject(new SppnetError(`${fn}: images[${i}] must be a Tensor [C, H, W], got ${t instanceof Tensor ? String(t) : describe(t)}`, 'SPPNET_INVALID_ARGUMENT'));
      }
      if (list.length > this.maxBatch)
        return reject(new SppnetError(`${fn}: ${list.length} images in one request, more than maxBatchSize ${this.maxBatch}`, 'SPPNET_INVALID_ARGUMENT'));
      const pixels = pixelsOf(list);
      const tooLarge = this.checkPixels(fn, pixels);
      if (tooLarge) return reject(tooLarge);
      if (opts.signal?.aborted) {
        this.counters.rejected.aborted++;
        return reject(new SppnetError(`${fn}: aborted before it was queued`, 'SPPNET_ABORTED'));
      }
      if (this.queue.length >= this.maxQueue) {
        this.counters.rejected.queueFull++;
        return reject(new SppnetError(`${fn}: the queue is full (${this.maxQueue} requests waiting)`, 'SPPNET_QUEUE_FULL'));
      }
      const timeout = opts.timeoutMs ?? this.timeout;
      // Work that cannot finish in time is refused now rather than failed later.
      const wait = this.estimatedWaitMs(pixels);
      if (timeout !== undefined && wait !== null && wait > timeout) {
        this.counters.rejected.queueFull++;
        return reject(new SppnetError(`${fn}: the queue holds about ${Math.round(wait)} ms of work, more than this request's timeout of ${Math.round(timeout)} ms`, 'SPPNET_QUEUE_FULL'));
      }
      const p: Pending = { images: list, pixels, priority: opts.priority ?? 0, seq: this.seq++, resolve, reject, done: false, signal: opts.signal };
      if (timeout !== undefined) {
        p.timer = setTimeout(() => {
          this.counters.rejected.timeout++;
          this.finish(p, new SppnetError(`${fn}: timed out after ${timeout} ms`, 'SPPNET_TIMEOUT'));
        }, timeout);
      }
      if (opts.signal) {
        p.onAbort = () => {
          if (this.queue.includes(p)) {
            this.counters.rejected.aborted++;
            this.finish(p, new SppnetError(`${fn}: aborted while queued`, 'SPPNET_ABORTED'));
          }
        };
        opts.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.counters.requests++;
      if (this.releaseTimer) clearTimeout(this.releaseTimer);
      this.releaseTimer = undefined;
      // Keep the queue ordered: priority (high first), then arrival.
      let k = this.queue.length;
      while (k > 0 && this.queue[k - 1].priority < p.priority) k--;
      this.queue.splice(k, 0, p);
      this.schedule();
    });
  }

  /** A refusal when `pixels` (one request's) can never fit a batch, else null. */
  checkPixels(fn: string, pixels: number): SppnetError | null {
    return pixels > this.maxBatchPixels ? overLimit(fn, "the request's images have", pixels, 'pixels', 'maxBatchPixels', this.maxBatchPixels) : null;
  }

  /**
   * How long a request of `pixels` would take to be answered if it came now (ms): the pixels queued
   * and running, and its own, at the best recent speed (so that a refusal is never a guess on the
   * pessimistic side); null before the third model call.
   */
  estimatedWaitMs(pixels = 0): number | null {
    const rate = this.bestMsPerPixel();
    return rate === null ? null : rate * (this.queuedPixels() + this.runningPixels + pixels);
  }

  /** Null until 3 calls have run: the first ones (a warm-up, often one image) say little. */
  private bestMsPerPixel(): number | null {
    return this.recent.length >= 3 ? Math.min(...this.recent) : null;
  }

  /** Settles a request once; drops it from the queue. */
  private finish(p: Pending, err: Error | null, result?: Tensor) {
    if (p.done) {
      result?.dispose();
      return;
    }
    p.done = true;
    if (p.timer) clearTimeout(p.timer);
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    const i = this.queue.indexOf(p);
    if (i >= 0) this.queue.splice(i, 1);
    if (err) p.reject(err);
    else p.resolve(result as Tensor);
  }

  private queuedImages(): number {
    return this.queue.reduce((a, p) => a + p.images.length, 0);
  }

  private queuedPixels(): number {
    return this.queue.reduce((a, p) => a + p.pixels, 0);
  }

  private schedule() {
    if (this.running > 0 || this.queue.length === 0) return;
    if (this.queuedImages() >= this.maxBatch || this.queuedPixels() >= this.maxBatchPixels || this.delay === 0 || this.closed) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      void this.dispatch();
    } else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.dispatch();
      }, this.delay);
    }
  }

  private async dispatch() {
    if (this.running > 0 || this.queue.length === 0) return;
    // Take requests in queue order while they fit in one batch (images and pixels).
    const batch: Pending[] = [];
    let n = 0, px = 0;
    for (const p of this.queue) {
      if (n + p.images.length > this.maxBatch || px + p.pixels > this.maxBatchPixels) break;
      batch.push(p);
      n += p.images.length;
      px += p.pixels;
    }
    for (const p of batch) this.queue.splice(this.queue.indexOf(p), 1);
    this.running++;
    this.runningPixels = px;
    this.counters.batches++;
    this.counters.batchSizes[n] = (this.counters.batchSizes[n] ?? 0) + 1;
    const t0 = performance.now();
    let ok = false;
    try {
      const moved = await Promise.all(batch.flatMap((p) => p.images.map((t) => t.to(this.model.device))));
      const all = batch.flatMap((p) => p.images);
      // Packed on a libuv thread: tens of MB copied on the event loop would stall every request.
      const rb = await packRagged(moved, 'BatchingRunner.run', this.scratch);
      moved.forEach((t, i) => t !== all[i] && t.dispose());
      let logits: Tensor;
      try {
        logits = await this.model.run(rb);
      } finally {
        rb.dispose();
      }
      let row = 0;
      for (const p of batch) {
        const mine = copyRows(logits, row, p.images.length, 'BatchingRunner.run');
        row += p.images.length;
        this.finish(p, null, mine);
      }
      logits.dispose();
      ok = true;
    } catch (e) {
      // One bad image fails its batch: retry each request alone, so only the bad one fails.
      if (batch.length > 1) {
        for (const p of batch) {
          try {
            this.finish(p, null, await this.model.run(p.images));
          } catch (e2) {
            this.finish(p, e2 as Error);
          }
        }
      } else if (batch.length === 1) this.finish(batch[0], e as Error);
    } finally {
      const seconds = (performance.now() - t0) / 1e3;
      if (ok && px > 0) {
        this.recent.push((seconds * 1e3) / px);
        if (this.recent.length > 8) this.recent.shift();
      }
      this.running--;
      this.runningPixels = 0;
      this.emit('batch', { images: n, pixels: px, seconds, ok } satisfies BatchEvent);
      if (this.queue.length) this.schedule();
      else {
        this.idle.splice(0).forEach((f) => f());
        this.scheduleRelease();
      }
    }
  }

  /** After releaseBuffersAfterMs without work, the packing buffer and the model's activation buffers (where the model can) go back. */
  private scheduleRelease() {
    const release = (this.model as { releaseBuffers?: () => void }).releaseBuffers ?? (() => {});
    if (this.releaseAfter === 0 || this.closed) return;
    if (this.releaseTimer) clearTimeout(this.releaseTimer);
    this.releaseTimer = setTimeout(() => {
      this.releaseTimer = undefined;
      if (this.queue.length === 0 && this.running === 0) {
        this.scratch.array = undefined;
        release.call(this.model);
      }
    }, this.releaseAfter);
    this.releaseTimer.unref();
  }

  stats(): BatchingStats {
    return {
      ...this.counters,
      queued: this.queue.length,
      queuedImages: this.queuedImages(),
      queuedPixels: this.queuedPixels(),
      running: this.running,
      rejected: { ...this.counters.rejected },
      batchSizes: { ...this.counters.batchSizes },
      msPerPixel: this.bestMsPerPixel(),
    };
  }

  /** Stops taking requests, runs those already queued, and resolves when all have settled. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.releaseTimer) clearTimeout(this.releaseTimer);
    this.releaseTimer = undefined;
    this.scratch.array = undefined;
    if (this.queue.length === 0 && this.running === 0) return;
    await new Promise<void>((r) => {
      this.idle.push(r);
      this.schedule();
    });
  }
}

/** A runner that merges concurrent requests to `model` into ragged batches. */
export function batching(model: Model, opts?: BatchingOptions): BatchingRunner {
  return new BatchingRunner(model, opts);
}
