// A request's time before the batching runner (whose own timeout covers the rest): fastify's
// handlerTimeout is cleared once Node 20 has read the body (the request emits 'close' then), so over
// a real connection it never fires, and a request waiting for decodes would be answered only after
// the decodes ahead of it.
import { FastifyReply, FastifyRequest } from 'fastify';
import { SppnetError } from '../core/errors';

export interface DeadlineContext {
  timeoutMs: number;
  refused: { timeout: number };
  callOf(req: FastifyRequest): string;
  /** Aborts when the request's client goes away. */
  goneOf(req: FastifyRequest): AbortSignal | undefined;
}

export function requestDeadlines(ctx: DeadlineContext) {
  /**
   * The request's signal for its waits: aborts when its client goes, or at timeoutMs from its
   * arrival with SPPNET_TIMEOUT (a wait for a decode slot then ends at once with that error).
   */
  const waitSignal = (req: FastifyRequest, reply: FastifyReply): AbortSignal => {
    const late = new AbortController();
    const timer = setTimeout(() => late.abort(new SppnetError(`${ctx.callOf(req)}: timed out after ${ctx.timeoutMs} ms (timeoutMs)`, 'SPPNET_TIMEOUT')), Math.max(1, ctx.timeoutMs - reply.elapsedTime));
    reply.raw.once('close', () => clearTimeout(timer));
    const g = ctx.goneOf(req);
    return g ? AbortSignal.any([g, late.signal]) : late.signal;
  };
  /** Rethrows e, counting it as a timeout where it is the deadline's (before the runner, which counts its own). */
  const countLate = (e: unknown): never => {
    if (e instanceof SppnetError && e.code === 'SPPNET_TIMEOUT') ctx.refused.timeout++;
    throw e;
  };
  return { waitSignal, countLate };
}
