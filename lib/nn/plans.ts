// Compiled runs (issue 16: one native call per network run, and no layer code per run). The
// second time a model sees an input signature (run or features; the input's kind, channels and
// every map's size; the settings that change what the layers compute), it records that run with
// its input first copied into an activation buffer and its output written to one, compiles the
// recorded ops into a native plan (native.compileSequence: the ops' arguments read and their
// tasks made once) and keeps the plan with every activation buffer the run used. A later run of
// that signature records three steps (copy the input in, the plan, copy the output out into a
// new tensor) and runs them as one native call. Measured: bench/RESULTS.md, "Compiled runs".
// SPPNET_PLAN_TIMES=1: plans recorded then time each of their steps on every run (Model.planTimes,
// for bench/torchvision_layers.js: each layer's time inside a whole run).
//
// The run of the first sighting goes the same way (input copied in, output copied out) without
// compiling, and its use of activation buffers (each take and give, in order) is traced; the
// recording then takes its buffers as views of one arena laid out from that trace (planArena in
// memory.ts: buffers alive at once never overlap, any others may), so a plan holds about the peak
// of its live activations instead of a buffer per size class. SPPNET_ARENA=0 turns that off.
//
// A plan owns its buffers (still counted in the pool's bytes) until it is dropped: when the
// weights change, the pool releases (idle, releaseBuffers, dispose) or needs room under its
// budget, or more than MAX_PLANS are kept; a plan in use by a run gives its buffers back when
// that run ends. SPPNET_PLANS=0 turns plans off (every run goes through the layers).
import { mathKey, tensorCoreResult } from '../core/math';
import { native, NativePlan } from '../core/native';
import { OpSequence } from '../core/sequence';
import { allocateLike, mapElements, Spatial, SpatialLayout, spatialLayout } from '../core/spatial';
import { allocate, Tensor } from '../core/tensor';
import { copyMaps } from '../ops/concat';
import { ActivationPool, BufferEvent, RunBuffers } from './memory';

/** Compiled runs a model keeps (each holds the activation buffers of its run). */
export const MAX_PLANS = 4;
/** Signatures remembered to spot the second sighting. */
const MAX_SEEN = 64;
/** Runs of a signature before it is recorded again, after a recording was dropped. */
const REFUSED_WAIT = 8;

/** Where a run's output lives, as copyMaps reads it: maps of `channels` channels of `sizes` (a matrix: N maps of 1x1). */
interface OutShape {
  kind: SpatialLayout['kind'] | 'matrix';
  channels: number;
  sizes: Array<readonly [number, number]>;
}

class Plan {
  busy = false;
  dropped = false;
  buffers: Tensor[] = [];
  constructor(readonly native: NativePlan, readonly input: Spatial, readonly output: Spatial, readonly out: OutShape) {}
}

function outShape(fn: string, y: Spatial): OutShape {
  if (y instanceof Tensor && y.rank === 2) return { kind: 'matrix', channels: y.shape[1], sizes: new Array(y.shape[0]).fill([1, 1]) };
  const L = spatialLayout(fn, y);
  return { kind: L.kind, channels: L.channels, sizes: L.sizes };
}

function storeOf(fn: string, y: Spatial) {
  return y instanceof Tensor ? y.storage(fn, 'an activation buffer') : spatialLayout(fn, y).store;
}

export class PlanCache {
  private plans = new Map<string, Plan>(); // least recently used first
  private seen = new Map<string, number>();
  private traces = new Map<string, BufferEvent[]>(); // a first sighting's buffer use, for the recording's arena
  private recording = new Set<string>(); // signatures whose plan a run in flight records
  private generation = 0;

  constructor(private readonly pool: ActivationPool) {
    pool.reclaim = () => this.clear();
  }

  /**
   * The signature of a run, or undefined where plans are off: SPPNET_PLANS=0, or a pool that may
   * keep nothing between runs (activationBudget 0, activationIdleMs 0).
   */
  private key(tag: string, L: SpatialLayout): string | undefined {
    if (process.env.SPPNET_PLANS === '0' || this.pool.budget === 0 || this.pool.idleMs === 0) return undefined;
    const sizes = L.sizes.map(([h, w]) => `${h}x${w}`).join(',');
    return `${tag}|${L.kind}|${L.device}|${L.channels}|${sizes}|${process.env.SPPNET_FUSE !== '0'}|${mathKey()}|${tensorCoreResult() ? 1 : 0}`;
  }

  /**
   * Runs `layers` on the input of layout L through the plan of this signature (`tag`: which layers),
   * recording it on the second sighting; or returns undefined: run the layers as usual.
   */
  async run(fn: string, tag: string, L: SpatialLayout, run: RunBuffers, layers: (x: Spatial) => Promise<{ out: Spatial; done(): void }>): Promise<Spatial | undefined> {
    const seq = run.sequence;
    const key = this.key(tag, L);
    if (!seq || key === undefined) return undefined;
    const plan = this.plans.get(key);
    if (plan) {
      if (plan.busy) return undefined; // another run uses its buffers: this one takes the layer path
      this.plans.delete(key);
      this.plans.set(key, plan);
      return this.replay(fn, plan, L, seq, run);
    }
    const n = (this.seen.get(key) ?? 0) + 1;
    this.seen.delete(key);
    this.seen.set(key, n);
    if (this.seen.size > MAX_SEEN) this.seen.delete(this.seen.keys().next().value as string);
    const arena = process.env.SPPNET_ARENA !== '0';
    if (n === 1 && arena) {
      // The first sighting: the run as a recording would make it (the input copied in, the
      // output copied out: a little more than the layers alone), its buffer use traced, so that
      // the recording lays its buffers out in one arena (planArena).
      run.traceTo((events) => {
        this.traces.delete(key);
        this.traces.set(key, events);
        if (this.traces.size > MAX_SEEN) this.traces.delete(this.traces.keys().next().value as string);
      });
      return this.record(fn, key, L, seq, run, layers, undefined);
    }
    if (n < 2 || this.recording.has(key)) return undefined;
    this.recording.add(key);
    run.defer(() => this.recording.delete(key));
    return this.record(fn, key, L, seq, run, layers, { trace: arena ? this.traces.get(key) : undefined });
  }

  private replay(fn: string, plan: Plan, L: SpatialLayout, seq: OpSequence, run: RunBuffers): Spatial {
    plan.busy = true;
    run.defer(() => this.finished(plan));
    copyMaps(seq, L.store, storeOf(fn, plan.input), L.channels, L.sizes, L.offsets);
    seq.addPlan(plan.native);
    const out = this.fresh(fn, plan.out, L.device);
    try {
      copyMaps(seq, storeOf(fn, plan.output), storeOf(fn, out), plan.out.channels, plan.out.sizes);
    } catch (e) {
      out.dispose();
      throw e;
    }
    return out;
  }

  /**
   * Runs the layers on a pooled copy of the input into a pooled output, then copies that out; with
   * `compile`, the ops become the signature's plan, their buffers views of an arena laid out from
   * `compile.trace` where there is one.
   */
  private async record(fn: string, key: string, L: SpatialLayout, seq: OpSequence, run: RunBuffers,
    layers: (x: Spatial) => Promise<{ out: Spatial; done(): void }>, compile: { trace?: BufferEvent[] } | undefined): Promise<Spatial> {
    // Read before the arena is taken: a take over the budget drops the plans (a new generation),
    // and then this recording must not be kept either.
    const generation = this.generation;
    if (compile?.trace) run.useArena(compile.trace, fn);
    const inBuf = run.take(mapElements(L.channels, L.sizes), fn);
    const input = ActivationPool.view(inBuf, L.kind, L.channels, L.sizes);
    copyMaps(seq, L.store, storeOf(fn, input), L.channels, L.sizes, L.offsets);
    const from = seq.length;
    const r = await layers(input).catch((e) => {
      run.give(inBuf);
      throw e;
    });
    let out: Spatial | undefined;
    try {
      const shape = outShape(fn, r.out);
      // Layers that record no op (dropout alone): nothing to compile; the copy in is the result.
      const plan = compile !== undefined && seq.length > from ? new Plan(seq.compileFrom(from, process.env.SPPNET_PLAN_TIMES === '1'), input, r.out, shape) : undefined;
      if (plan) {
        seq.addPlan(plan.native);
        // Every buffer this run took is back in its free list at release(): the plan keeps them
        // all, once the run succeeded and nothing dropped the plans meanwhile. Otherwise the plan
        // goes at once (release() comes after the run, or instead of it): what its tasks hold
        // (its host blocks, counted in flight) must not wait for the GC to collect its handle.
        const arena = run.arenaBytes > 0;
        run.adoptBuffers((buffers, ok) => {
          if (!ok || generation !== this.generation || this.pool.freeing) {
            // Dropped while recorded (the weights changed, the pool released, or a run needed
            // room under the budget): try again only after REFUSED_WAIT more runs of the
            // signature, so that a model whose runs do not fit its budget does not pay for a
            // recording each time.
            if (ok) this.seen.set(key, 1 - REFUSED_WAIT);
            native.releasePlan(plan.native);
            return false;
          }
          plan.buffers = buffers;
          this.add(key, plan);
          // The buffers the pool keeps came from the runs before this one (first sighting,
          // recording); with an arena, runs of this signature need none of them.
          if (arena) this.pool.trim();
          return true;
        });
      }
      out = this.fresh(fn, shape, L.device);
      copyMaps(seq, storeOf(fn, r.out), storeOf(fn, out), shape.channels, shape.sizes);
      return out;
    } catch (e) {
      out?.dispose();
      throw e;
    } finally {
      r.done();
      run.give(inBuf);
    }
  }

  private fresh(fn: string, s: OutShape, device: SpatialLayout['device']): Spatial {
    return s.kind === 'matrix' ? allocate([s.sizes.length, s.channels], device, fn) : allocateLike(s.kind, device, s.channels, s.sizes, fn);
  }

  private add(key: string, plan: Plan): void {
    const old = this.plans.get(key);
    if (old) this.drop(old);
    this.plans.delete(key);
    this.plans.set(key, plan);
    while (this.plans.size > MAX_PLANS) {
      const [k, p] = this.plans.entries().next().value as [string, Plan];
      this.plans.delete(k);
      this.drop(p);
    }
  }

  /** Plans kept now. */
  get size(): number {
    return this.plans.size;
  }

  /**
   * For each plan kept (least recently used first) that was compiled timed (SPPNET_PLAN_TIMES=1 when
   * it was recorded): its signature, its runs, and each step's mean ms a run, in the order the layers
   * recorded their ops (one op a layer, or a fused pair; none for an in-place concat).
   */
  times(): Array<{ signature: string; runs: number; stepMs: number[] }> {
    const out: Array<{ signature: string; runs: number; stepMs: number[] }> = [];
    for (const [signature, p] of this.plans) {
      const t = native.planTimes(p.native);
      if (!t) continue;
      const runs = t[0];
      out.push({ signature, runs, stepMs: Array.from(t.subarray(1), (ms) => (runs > 0 ? ms / runs : 0)) });
    }
    return out;
  }

  /** Drops every plan (their buffers go back to the pool, those in use when their run ends), and any plan being recorded. */
  clear(): void {
    this.generation += 1;
    for (const p of this.plans.values()) this.drop(p);
    this.plans.clear();
  }

  private drop(p: Plan): void {
    p.dropped = true;
    if (!p.busy) this.giveBack(p);
  }

  private finished(p: Plan): void {
    p.busy = false;
    if (p.dropped) this.giveBack(p);
  }

  private giveBack(p: Plan): void {
    native.releasePlan(p.native); // no run uses it: what its tasks hold goes now, not at a GC
    const bufs = p.buffers;
    p.buffers = [];
    for (const b of bufs) this.pool.give(b);
  }
}
