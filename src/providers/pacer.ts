import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Returns a function that starts the calls given to it at least `intervalMs` apart, in the order they
 * arrive, so that one process stays under a cloud API's rate quota. Calls may overlap once started.
 */
export function createPacer(intervalMs: number): <T>(call: () => Promise<T>) => Promise<T> {
  let nextStart = 0;
  return async (call) => {
    const now = Date.now();
    const start = Math.max(now, nextStart);
    nextStart = start + intervalMs;
    if (start > now) await sleep(start - now);
    return call();
  };
}
