// Op sequences: a model run's native calls recorded instead of made, then made as one native call
// (native.runSequence) that runs them back to back on one thread. One hand-over to the CPU executor
// (or the CUDA executor) and back for the whole network instead of one per layer: on the CPU that
// hand-over costs about as much as a small layer. Only ops whose results nothing reads on the
// host until the sequence has run may be recorded (those listed here).
import { Native, native, NativePlan } from './native';

/** The native entry points a sequence may hold. */
export type SequencedOp = 'conv2d' | 'maxPool2d' | 'lrn' | 'lrnMaxPool2d' | 'sppForward' | 'linear' | 'elementwise' | 'copyChannels' | 'sgdStep' | 'adamStep';
type Args<K extends SequencedOp> = Parameters<Native[K]>[0];

export class OpSequence {
  private steps: unknown[] = [];

  /** Records a call (its arguments checked and packed by the op, as for a direct call). */
  add<K extends SequencedOp>(op: K, args: Args<K>): Promise<void> {
    this.steps.push(native[op], args);
    return Promise.resolve();
  }

  /** Calls recorded and not yet run. */
  get length(): number {
    return this.steps.length / 2;
  }

  /** Records a compiled plan's steps (they run where it stands in the sequence). */
  addPlan(plan: NativePlan): void {
    this.steps.push(plan, undefined);
  }

  /**
   * The calls recorded from call `from` on, taken out of the sequence and compiled into a plan
   * (native.compileSequence): the same ops on the same buffers, runnable again without recording.
   * `timed`: each run of the plan times each step (native.planTimes).
   */
  compileFrom(from: number, timed = false): NativePlan {
    const steps = this.steps.splice(2 * from);
    return native.compileSequence(steps, timed);
  }

  /**
   * Runs what was recorded, in order, in one native call; settles when the last step is done (or
   * one failed). A step the native side refuses when it reads the arguments (a buffer disposed
   * since it was recorded) rejects the promise too, rather than throwing here.
   */
  run(): Promise<void> {
    const steps = this.steps;
    this.steps = [];
    if (!steps.length) return Promise.resolve();
    try {
      return native.runSequence(steps);
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

/** Whether runs record their ops into sequences: unless SPPNET_SEQUENCE=0 (one native call per op, the same results bit for bit). */
export function recordingOps(): boolean {
  return process.env.SPPNET_SEQUENCE !== '0';
}

/** A sequence to record a run's ops into, or none under SPPNET_SEQUENCE=0. */
export function newSequence(): OpSequence | undefined {
  return recordingOps() ? new OpSequence() : undefined;
}

/** native[op](args) now, or recorded into `seq` when one is given. */
export function callOp<K extends SequencedOp>(seq: OpSequence | undefined, op: K, args: Args<K>): Promise<void> {
  return seq ? seq.add(op, args) : (native[op] as (a: Args<K>) => Promise<void>)(args);
}

/** @internal An op's options.sequence, if it is one (anything else: none). */
export function sequenceOf(o: Record<string, unknown>): OpSequence | undefined {
  return o.sequence instanceof OpSequence ? o.sequence : undefined;
}
