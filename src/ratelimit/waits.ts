import { AsyncLocalStorage } from 'node:async_hooks';
import type { RequestKind } from '../registry/retry.ts';

/**
 * Waits of registry requests for the request budget. Each wait goes to the worker's metrics, and to
 * the job whose request waits, so that the job's progress can show why it stands still. A job registers its listener with `withRateLimitListener`, and every request made
 * inside that call, however deep, reports to it.
 */

/**
 * Why a request waits:
 * - `window`: this process's adaptive concurrency window for the kind is full;
 * - `not-before`: a 429 or `Retry-After` paused every request to the registry;
 * - `quota`: pulls pause because the registry's `RateLimit-Remaining` is below the floor;
 * - `concurrency`: the fleet has the most requests of the kind in flight that the registry allows;
 * - `rate`: the fleet spent its requests per second.
 */
export type WaitReason = 'window' | 'not-before' | 'quota' | 'concurrency' | 'rate';

export interface RateLimitWait {
  registry: string;
  kind: RequestKind;
  reason: WaitReason;
  /**
   * `start` when a request begins to wait for this reason, `end` when that wait is over (the request
   * goes ahead, waits for another reason, or gives up).
   */
  phase: 'start' | 'end';
  /** At `start`, the expected wait in ms (0 when unknown); at `end`, the time waited in ms. */
  waitMs: number;
}

export type RateLimitListener = (wait: RateLimitWait) => void;

const listeners = new AsyncLocalStorage<RateLimitListener>();

/** Runs `work` so that every rate-limit wait of a registry request made inside it is reported to `listener`. */
export function withRateLimitListener<T>(listener: RateLimitListener, work: () => Promise<T>): Promise<T> {
  return listeners.run(listener, work);
}

/** Returns the listener of the job that the current request belongs to, if it registered one. */
export function currentRateLimitListener(): RateLimitListener | undefined {
  return listeners.getStore();
}
