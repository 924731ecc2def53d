// Model.trainStep's gradient buffers, kept between steps (as PyTorch's .grad): the convs' and fc
// layers' gradients are written into them (each backward writes every element), instead of fresh
// tensors whose zeroing cost each step its time (ZF-5 at batch 4: 292 MB a step).
import { Device } from '../core/backend';
import { allocate, Tensor } from '../core/tensor';
import { KeptGrads } from './backprop';

export class GradBuffers {
  private byName = new Map<string, Tensor>();
  private all = new Set<Tensor>();
  private busy = false;
  private releasePending = false;

  constructor(private readonly device: Device) {}

  /** The buffers for one step, or undefined while another step has them (that one takes fresh tensors). */
  take(): KeptGrads | undefined {
    if (this.busy) return undefined;
    this.busy = true;
    return {
      into: (name, shape) => {
        let t = this.byName.get(name);
        if (!t || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
          if (t) this.all.delete(t), t.dispose();
          t = allocate(shape, this.device, 'Model.trainStep', true);
          this.byName.set(name, t);
          this.all.add(t);
        }
        return t;
      },
      owns: (t) => this.owns(t),
    };
  }

  /** The step that took them is over. */
  give(): void {
    this.busy = false;
  }

  /** Whether t is one of the buffers (not to be freed with a step's other tensors). */
  owns(t: Tensor): boolean {
    return this.all.has(t);
  }

  /** Frees them now, or (`inflight`: a call may be using them) once release() is called with none. */
  release(inflight = false): void {
    if (inflight) {
      this.releasePending = true;
      return;
    }
    this.releasePending = false;
    for (const t of this.byName.values()) t.dispose();
    this.byName.clear();
    this.all.clear();
  }

  /** A release asked for while calls were in flight: done now that none is. */
  settle(): void {
    if (this.releasePending) this.release();
  }
}
