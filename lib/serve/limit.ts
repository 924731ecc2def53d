import { SppnetError } from '../core/errors';

// At most `max` pieces of work at once; the others wait their turn, first come first served. A
// waiting piece whose signal aborts leaves the line at once and never runs: rejected with the
// signal's reason where that is an SppnetError (a deadline's SPPNET_TIMEOUT), else SPPNET_ABORTED naming `fn`.
export function concurrencyLimit(max: number): <T>(work: () => Promise<T>, signal?: AbortSignal, fn?: string) => Promise<T> {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async <T>(work: () => Promise<T>, signal?: AbortSignal, fn = 'concurrencyLimit'): Promise<T> => {
    const aborted = () => (signal?.reason instanceof SppnetError ? signal.reason : new SppnetError(`${fn}: aborted while waiting for its turn`, 'SPPNET_ABORTED'));
    if (signal?.aborted) throw aborted();
    if (running >= max) {
      await new Promise<void>((resolve, reject) => {
        const turn = () => {
          signal?.removeEventListener('abort', leave);
          resolve();
        };
        const leave = () => {
          const i = waiting.indexOf(turn);
          if (i >= 0) waiting.splice(i, 1);
          reject(aborted());
        };
        waiting.push(turn);
        signal?.addEventListener('abort', leave, { once: true });
      });
    } else {
      running++;
    }
    try {
      if (signal?.aborted) throw aborted(); // aborted as its turn came
      return await work();
    } finally {
      const next = waiting.shift();
      if (next) next(); // the slot passes on
      else running--;
    }
  };
}
