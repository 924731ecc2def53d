// Dynamic ragged batching: concurrent requests are queued and merged into one ragged batch per
// model call, images of any sizes together. The knobs are those of Triton and TorchServe: maximum
// batch size, maximum queue delay, maximum queue length, a per-request timeout, cancellation
// through AbortSignal, and priorities.
import { describe, fail, isPositiveInt, SppnetError } from './errors';
import { Model } from './model';
import { ragged } from './ragged';
import { copyRows, Tensor } from './tensor';

export interface BatchingOptions {
  /** Images per model call (default 32). */
  maxBatchSize?: number;
  /** How long the first queued request may wait for others to join its batch, in ms (default 2). */
  maxQueueDelayMs?: number;
  /** Requests waiting at most; more are refused with SPPNET_QUEUE_FULL (default 1024). */
  maxQueueLength?: number;
  /** Default per-request timeout in ms, queueing included (default: none). */
  timeoutMs?: number;
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
  queued: number;
  running: number;
  requests: number;
  batches: number;
  rejected: { queueFull: number; timeout: number; aborted: number };
  /** Images per model call: count of calls by batch size. */
  batchSizes: Record<number, number>;
}

interface Pending {
  images: Tensor[];
  priority: number;
  seq: number;
  resolve: (t: Tensor) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
  onAbort?: () => void;
  signal?: AbortSignal;
  done: boolean;
}

export class BatchingRunner {
  readonly model: Model;
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
  private readonly counters: BatchingStats = { queued: 0, running: 0, requests: 0, batches: 0, rejected: { queueFull: 0, timeout: 0, aborted: 0 }, batchSizes: {} };

  constructor(model: Model, opts: BatchingOptions = {}) {
    const fn = 'sp.batching';
    if (!(model instanceof Model)) fail(`${fn}: model must be a Model, got ${describe(model)}`);
    if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
    const int = (name: keyof BatchingOptions, d: number) => {
      const v = opts[name] ?? d;
      if (!isPositiveInt(v)) fail(`${fn}: options.${name} must be a positive integer, got ${describe(opts[name])}`);
      return v;
    };
    this.model = model;
    this.maxBatch = int('maxBatchSize', 32);
    this.maxQueue = int('maxQueueLength', 1024);
    const d = opts.maxQueueDelayMs ?? 2;
    if (typeof d !== 'number' || !(d >= 0)) fail(`${fn}: options.maxQueueDelayMs must be a number >= 0, got ${describe(d)}`);
    this.delay = d;
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
      if (opts.signal?.aborted) {
        this.counters.rejected.aborted++;
        return reject(new SppnetError(`${fn}: aborted before it was queued`, 'SPPNET_ABORTED'));
      }
      if (this.queue.length >= this.maxQueue) {
        this.counters.rejected.queueFull++;
        return reject(new SppnetError(`${fn}: the queue is full (${this.maxQueue} requests waiting)`, 'SPPNET_QUEUE_FULL'));
      }
      const p: Pending = { images: list, priority: opts.priority ?? 0, seq: this.seq++, resolve, reject, done: false, signal: opts.signal };
      const timeout = opts.timeoutMs ?? this.timeout;
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
      // Keep the queue ordered: priority (high first), then arrival.
      let k = this.queue.length;
      while (k > 0 && this.queue[k - 1].priority < p.priority) k--;
      this.queue.splice(k, 0, p);
      this.schedule();
    });
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

  private schedule() {
    if (this.running > 0 || this.queue.length === 0) return;
    if (this.queuedImages() >= this.maxBatch || this.delay === 0 || this.closed) {
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
    // Take requests in queue order while they fit in one batch.
    const batch: Pending[] = [];
    let n = 0;
    for (const p of this.queue) {
      if (n + p.images.length > this.maxBatch) break;
      batch.push(p);
      n += p.images.length;
    }
    for (const p of batch) this.queue.splice(this.queue.indexOf(p), 1);
    this.running++;
    this.counters.batches++;
    this.counters.batchSizes[n] = (this.counters.batchSizes[n] ?? 0) + 1;
    try {
      const moved = await Promise.all(batch.flatMap((p) => p.images.map((t) => t.to(this.model.device))));
      const all = batch.flatMap((p) => p.images);
      const rb = ragged(moved);
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
      this.running--;
      if (this.queue.length) this.schedule();
      else this.idle.splice(0).forEach((f) => f());
    }
  }

  stats(): BatchingStats {
    return { ...this.counters, queued: this.queue.length, running: this.running, rejected: { ...this.counters.rejected }, batchSizes: { ...this.counters.batchSizes } };
  }

  /** Stops taking requests, runs those already queued, and resolves when all have settled. */
  async close(): Promise<void> {
    this.closed = true;
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
