// Activation memory of a model: the buffers its layers write, pooled between runs within a budget
// and released when idle, and the views each layer's output takes of them.
import { Device } from '../core/backend';
import { describe, fail } from '../core/errors';
import { activations } from '../core/memory';
import { native } from '../core/native';
import { OpSequence, recordingOps } from '../core/sequence';
import { RaggedBatch } from '../core/ragged';
import { mapElements, SpatialLayout, Spatial } from '../core/spatial';
import { allocateReleasable, freeReleasable, Storage, Tensor } from '../core/tensor';

/** What a model's activation pool may keep (sp.loadModel / sp.buildModel options). */
export interface ActivationOptions {
  /**
   * Bytes of activation buffers the model may hold (default SPPNET_ACTIVATION_BUDGET, else 1 GiB);
   * Infinity for no limit, 0 to keep none between runs.
   */
  activationBudget?: number;
  /**
   * Milliseconds without a run after which the model frees the buffers it keeps (default
   * SPPNET_ACTIVATION_IDLE_MS, else 10000); Infinity to keep them, 0 to free them after every run.
   */
  activationIdleMs?: number;
}

export const DEFAULT_ACTIVATION_BUDGET = 2 ** 30;
export const DEFAULT_ACTIVATION_IDLE_MS = 10000;

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Budget and idle time from the options, else the environment, else the defaults; checked. */
export function activationSettings(fn: string, o: ActivationOptions): { budget: number; idleMs: number } {
  const setting = (name: keyof ActivationOptions, env: string, dflt: number, bytes: boolean): number => {
    const v = o[name];
    if (v !== undefined) {
      if (typeof v !== 'number' || !(v >= 0) || (Number.isFinite(v) && !Number.isInteger(v)))
        fail(`${fn}: options.${name} must be a non-negative integer or Infinity, got ${describe(v)}`);
      return v;
    }
    const raw = process.env[env];
    if (raw === undefined || raw.trim() === '') return dflt;
    const m = /^\s*(\d+(?:\.\d+)?|infinity)\s*(?:([kmgt])i?b?|b)?\s*$/i.exec(raw);
    const n = m ? (m[1].toLowerCase() === 'infinity' ? Infinity : Math.floor(Number(m[1]) * UNITS[(m[2] ?? '').toLowerCase()])) : NaN;
    if (!(n >= 0) || (!bytes && m?.[2] !== undefined))
      fail(`${fn}: ${env} must be ${bytes ? 'a byte count (e.g. 1073741824, 512M or 2G) or Infinity' : 'a number of milliseconds or Infinity'}, got ${JSON.stringify(raw)}`);
    return n;
  };
  return {
    budget: setting('activationBudget', 'SPPNET_ACTIVATION_BUDGET', DEFAULT_ACTIVATION_BUDGET, true),
    idleMs: setting('activationIdleMs', 'SPPNET_ACTIVATION_IDLE_MS', DEFAULT_ACTIVATION_IDLE_MS, false),
  };
}

// A model dropped without dispose() takes its pool's bytes out of the total when collected.
const poolCollected = new FinalizationRegistry<{ bytes: number }>((held) => {
  activations.bytes -= held.bytes;
});

/**
 * Activation buffers kept between runs, so that steady-state inference allocates nothing but its
 * result. Buffers are bucketed by size (rounded up to 1/8 of a power of two, at most 12.5% slack)
 * and a layer's output is a view of the first elements of one.
 *
 * The pool holds at most `budget` bytes (buffers in use and kept together) except while a run
 * needs more at once: then it allocates what it needs, first freeing kept buffers it does not,
 * and frees each buffer it is given back while it holds more than the budget. It frees what it
 * keeps after `idleMs` without a run (an unref'd timer), and at release().
 */
export class ActivationPool {
  private kept = new Map<number, Tensor[]>();
  private keptBytes = 0;
  private runs = 0;
  /** Set by release() while runs are in flight: the buffers they give back are freed, until none is left. */
  private draining = false;
  /** Buffers were freed since the last release(): on CUDA the device's pool still holds their memory. */
  private dropped = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private readonly held = { bytes: 0 };
  /** Called before the pool releases what it keeps, or when a buffer would take it over budget: whoever holds pooled buffers for later (compiled runs) gives them back. */
  reclaim: (() => void) | undefined;

  constructor(private readonly device: Device, readonly budget: number, readonly idleMs: number) {
    poolCollected.register(this, this.held, this);
  }

  /** Whether buffers given back now are freed (released while runs were in flight, or disposed): nothing should keep them for later. */
  get freeing(): boolean {
    return this.draining || this.closed;
  }

  /** Bytes held: buffers in use and kept. */
  get bytes(): number {
    return this.held.bytes;
  }

  static bucket(n: number): number {
    if (n <= 1024) return 1024;
    const step = 2 ** (Math.floor(Math.log2(n)) - 3);
    return Math.ceil(n / step) * step;
  }

  private count(bytes: number): void {
    this.held.bytes += bytes;
    activations.bytes += bytes;
  }

  private drop(t: Tensor): void {
    freeReleasable(t); // its host memory goes back to the system now, not at the next GC
    this.count(-4 * t.size);
    this.dropped = true;
  }

  /** A run starts: nothing is idle. */
  begin(): void {
    this.runs += 1;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** A run ended: once none is left, what the pool keeps is freed after idleMs. */
  end(): void {
    this.runs -= 1;
    if (this.runs === 0) this.draining = false;
    // held: what is kept, and what compiled runs hold (no run is in flight now).
    if (this.runs > 0 || this.closed || (this.held.bytes === 0 && !this.dropped) || this.idleMs === Infinity) return;
    if (this.idleMs === 0) return this.release();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.runs === 0) this.release();
    }, this.idleMs);
    this.timer.unref?.();
  }

  take(n: number, fn: string): Tensor {
    const b = ActivationPool.bucket(n);
    let t = this.kept.get(b)?.pop();
    if (t) {
      this.keptBytes -= 4 * b;
    } else {
      if (this.held.bytes + 4 * b > this.budget) this.reclaim?.();
      this.evict(this.held.bytes + 4 * b - this.budget);
      t = allocateReleasable([b], this.device, fn);
      this.count(4 * b);
    }
    return t;
  }

  give(t: Tensor): void {
    if (this.closed || this.draining || this.held.bytes > this.budget) return this.drop(t);
    const list = this.kept.get(t.size) ?? [];
    list.push(t);
    this.kept.set(t.size, list);
    this.keptBytes += 4 * t.size;
  }

  /** Frees every kept buffer (not those in use). */
  trim(): void {
    this.evict(Infinity);
  }

  /** Frees kept buffers, largest first, until `bytes` are freed or none is left. */
  private evict(bytes: number): void {
    if (bytes <= 0 || this.keptBytes === 0) return;
    for (const size of [...this.kept.keys()].sort((x, y) => y - x)) {
      const list = this.kept.get(size)!;
      while (list.length > 0 && bytes > 0) {
        const t = list.pop()!;
        this.keptBytes -= 4 * size;
        bytes -= 4 * size;
        this.drop(t);
      }
      if (list.length === 0) this.kept.delete(size);
      if (bytes <= 0) break;
    }
  }

  /**
   * Frees every kept buffer now, and those the runs in flight use as they give them back. On
   * CUDA the device's memory pool then gives what nothing uses back to the driver.
   */
  release(): void {
    this.reclaim?.();
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.draining = this.runs > 0;
    this.evict(Infinity);
    this.kept.clear();
    if (this.dropped && this.device === 'cuda') native.trimDeviceMemory();
    // On the CPU the buffers themselves are unmapped already; the C library's heap keeps what the
    // runs' smaller allocations (and image decoding) left free, and the addon's cache the results
    // disposed (Tensor.dispose()): hand those back too, off the loop.
    if (this.device === 'cpu' && (this.dropped || native.memoryStats().hostCacheBytes > 0)) native.trimHostMemory().catch(() => {});
    this.dropped = false;
  }

  /** A view of the first elements of `buf` as the output of a layer. */
  static view(buf: Tensor, kind: SpatialLayout['kind'] | 'matrix', channels: number, sizes: Array<readonly [number, number]>, rows = 0): Spatial {
    const s = buf.storage('Model.run', 'an activation buffer');
    const n = kind === 'matrix' ? rows * channels : mapElements(channels, sizes);
    const store = storageRange(s, 0, n);
    if (kind === 'ragged') return new RaggedBatch(new Tensor(store, [n], false, buf), channels, sizes);
    const shape = kind === 'matrix' ? [rows, channels] : kind === 'dense' ? [sizes.length, channels, ...sizes[0]] : [channels, ...sizes[0]];
    return new Tensor(store, shape, false, buf);
  }

  /** Frees everything now; buffers still in use are freed when given back. */
  dispose(): void {
    this.release();
    this.closed = true;
    poolCollected.unregister(this);
  }
}

/** Elements [off, off + n) of a storage, as a storage of their own (a view: same memory). */
function storageRange(s: Storage, off: number, n: number): Storage {
  return s.device === 'cpu' ? { device: 'cpu', array: s.array.subarray(off, off + n) } : { device: 'cuda', buffer: s.buffer, offset: s.offset + off };
}

/** One step of a run's use of activation buffers: a take of `take` elements, or the give of take number `give` (takes count from 0). */
export type BufferEvent = { take: number } | { give: number };

/** Where planArena puts each take of a trace (elements from the arena's start), and the arena's size. */
export interface ArenaPlan {
  offsets: number[];
  total: number;
}

/** Slices start on multiples of this many elements (4 KiB from the arena's start). */
const ARENA_ALIGN = 1024;

/**
 * Lays the buffers of a traced run out in one arena: take i lives from its take to its give (to
 * the end if never given), and two buffers alive at once never overlap. Largest first, each at the
 * lowest offset clear of the buffers already placed whose lives overlap its own. A later take may
 * reuse the memory of a buffer given back before it: the ops of a run run in the order they were
 * recorded, so whatever read the old buffer has run by then.
 */
export function planArena(trace: readonly BufferEvent[]): ArenaPlan {
  const start: number[] = [], end: number[] = [], size: number[] = [];
  trace.forEach((e, t) => {
    if ('take' in e) {
      start.push(t);
      end.push(trace.length);
      size.push(Math.max(1, Math.ceil(e.take / ARENA_ALIGN)) * ARENA_ALIGN);
    } else {
      end[e.give] = t;
    }
  });
  const offsets = new Array<number>(size.length).fill(0);
  const placed: number[] = [];
  let total = 0;
  for (const i of size.map((_, k) => k).sort((a, b) => size[b] - size[a] || start[a] - start[b])) {
    const clash = placed.filter((j) => start[i] < end[j] && start[j] < end[i]).sort((a, b) => offsets[a] - offsets[b]);
    let off = 0;
    for (const j of clash) {
      if (off + size[i] <= offsets[j]) break;
      off = Math.max(off, offsets[j] + size[j]);
    }
    offsets[i] = off;
    placed.push(i);
    total = Math.max(total, off + size[i]);
  }
  return { offsets, total };
}

/**
 * The activation buffers of one model run. With a sequence (the default; SPPNET_SEQUENCE=0 turns
 * it off), the run's ops are recorded and run afterwards as one native call (lib/core/sequence.ts),
 * so a buffer the run gives back may only serve its own later layers (which run after the layers
 * that used it), never another run, whose ops could run first: such buffers wait here, and go back
 * to the pool at release(), once the sequence has run (or will never run).
 */
export class RunBuffers {
  readonly sequence: OpSequence | undefined;
  private readonly free = new Map<number, Tensor[]>();
  private readonly after: Array<() => void> = [];
  private adopt: ((buffers: Tensor[], ok: boolean) => boolean) | undefined;
  /** The take number of each buffer out now. */
  private readonly ids = new Map<Tensor, number>();
  private takes = 0;
  /** This run's events, when traced (traceTo). */
  private events: BufferEvent[] | undefined;
  private traced: ((events: BufferEvent[]) => void) | undefined;
  /** The arena the takes come from while they follow its trace (useArena). */
  private arena: { buf: Tensor; trace: readonly BufferEvent[]; plan: ArenaPlan; at: number; slices: Set<Tensor> } | undefined;

  constructor(private readonly pool: ActivationPool, record = recordingOps()) {
    this.sequence = record ? new OpSequence() : undefined;
  }

  /**
   * Records this run's takes and gives; done(events) at a release() after the run succeeded.
   * Needs a sequence, and must come before the run's first take (else it does nothing).
   */
  traceTo(done: (events: BufferEvent[]) => void): void {
    if (!this.sequence || this.takes > 0) return;
    this.events = [];
    this.traced = done;
  }

  /**
   * Takes come from one buffer laid out by planArena(trace) for as long as this run's takes and
   * gives follow `trace` (the same layers on inputs of the same sizes do); from the first step
   * that does not, from the pool as usual (the slices out stay valid: until then the run kept to
   * the lives they were placed by). Needs a sequence (a buffer given back serves only later ops),
   * and must come before the run's first take (take numbers are the trace's); else it does nothing.
   */
  useArena(trace: readonly BufferEvent[], fn: string): void {
    if (!this.sequence || this.takes > 0 || this.arena) return;
    const plan = planArena(trace);
    this.arena = { buf: this.pool.take(plan.total, fn), trace, plan, at: 0, slices: new Set() };
  }

  /** Bytes of this run's arena (0: none). */
  get arenaBytes(): number {
    return this.arena ? 4 * this.arena.buf.size : 0;
  }

  private step(e: BufferEvent): boolean {
    this.events?.push(e);
    const a = this.arena;
    if (!a || a.at < 0) return false;
    const want = a.trace[a.at];
    const same = want !== undefined && ('take' in e ? 'take' in want && want.take === e.take : 'give' in want && want.give === e.give);
    a.at = same ? a.at + 1 : -1; // -1: diverged, no more slices
    return same;
  }

  take(n: number, fn: string): Tensor {
    const id = this.takes++;
    let t: Tensor;
    if (this.step({ take: n })) {
      const a = this.arena!, off = a.plan.offsets[id], s = a.buf.storage(fn, 'an activation buffer');
      const store = storageRange(s, off, n);
      t = new Tensor(store, [n], false, a.buf);
      a.slices.add(t);
    } else {
      t = this.free.get(ActivationPool.bucket(n))?.pop() ?? this.pool.take(n, fn);
    }
    this.ids.set(t, id);
    return t;
  }

  give(t: Tensor): void {
    const id = this.ids.get(t);
    this.ids.delete(t);
    if (id !== undefined) this.step({ give: id });
    if (this.arena?.slices.delete(t)) return; // a view of the arena: nothing to free
    if (!this.sequence) return this.pool.give(t);
    const list = this.free.get(t.size) ?? [];
    list.push(t);
    this.free.set(t.size, list);
  }

  /** Calls f at release() (what the recorded ops read must stay alive until they have run). */
  defer(f: () => void): void {
    this.after.push(f);
  }

  /** Runs the recorded ops, if any. */
  finish(): Promise<void> {
    return this.sequence ? this.sequence.run() : Promise.resolve();
  }

  /**
   * At release(), `keep` is offered the buffers (ok: the run succeeded); they go to it instead of
   * the pool if it takes them (returns true; never after a failed run). Called at every release,
   * so that what was made for them (a compiled plan) can be let go when they are not taken.
   */
  adoptBuffers(keep: (buffers: Tensor[], ok: boolean) => boolean): void {
    this.adopt = keep;
  }

  /** After finish() settled (ok: it succeeded), or instead of it (the run failed while recording): the buffers go back to the pool. */
  release(ok = false): void {
    const buffers = Array.from(this.free.values()).flat();
    this.free.clear();
    if (this.arena) buffers.push(this.arena.buf);
    this.arena = undefined;
    if (ok && this.events && this.traced) this.traced(this.events);
    this.events = undefined;
    const kept = this.adopt ? this.adopt(buffers, ok) && ok : false;
    if (!kept) for (const t of buffers) this.pool.give(t);
    for (const f of this.after.splice(0)) f();
  }
}

