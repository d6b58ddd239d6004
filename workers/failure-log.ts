import type { Job } from 'bullmq';

/**
 * The log line of a failed job attempt, shared by the worker shells. A final failure (an error that is
 * not retryable, or no attempt left) is logged at error level as final. A retryable one is logged at
 * warn with the attempt and, for BullMQ's built-in `fixed` and `exponential` backoff, the next delay.
 */

/** Level, fields and message of the log line of a failed attempt. */
export interface FailureLine {
  level: 'error' | 'warn';
  /** Fields for the log line besides the job's own. */
  fields: Record<string, unknown>;
  msg: string;
}

/** Builds the log line of a failed attempt of `job` of `kind` ("mirror job") with error code `code`. */
export function describeFailure(job: Job, kind: string, code: string, final: boolean): FailureLine {
  const attemptsMade = job.attemptsMade + 1;
  const attempts = job.opts.attempts ?? 1;
  if (final) {
    return { level: 'error', fields: { attemptsMade, attempts }, msg: `${kind} failed; not retried: ${code}` };
  }
  const delay = nextBackoff(job, attemptsMade);
  const attempt = `${attemptsMade}/${attempts}`;
  if (delay === undefined) {
    return { level: 'warn', fields: { attempt }, msg: `${kind} attempt ${attempt} failed: ${code}; it will be retried` };
  }
  const wait = delay.minMs === delay.maxMs ? formatDelay(delay.maxMs) : `${formatDelay(delay.minMs)} to ${formatDelay(delay.maxMs)}`;
  return {
    level: 'warn',
    fields: { attempt, retryDelayMinMs: delay.minMs, retryDelayMaxMs: delay.maxMs },
    msg: `${kind} attempt ${attempt} failed: ${code}; retrying in ${wait}`,
  };
}

/**
 * Returns the range of delays that BullMQ 6 picks from before the attempt after `attemptsMade`
 * attempts (its built-in `fixed` and `exponential` strategies, with `jitter` lowering the minimum), or
 * undefined for a custom strategy.
 */
function nextBackoff(job: Job, attemptsMade: number): { minMs: number; maxMs: number } | undefined {
  const backoff = job.opts.backoff;
  if (backoff === undefined) return { minMs: 0, maxMs: 0 };
  if (typeof backoff === 'number') return { minMs: backoff, maxMs: backoff };
  const delay = backoff.delay ?? 0;
  let maxMs: number;
  if (backoff.type === 'fixed') maxMs = delay;
  else if (backoff.type === 'exponential') maxMs = Math.round(2 ** (attemptsMade - 1) * delay);
  else return undefined;
  const jitter = backoff.jitter ?? 0;
  return { minMs: Math.floor(maxMs * (1 - jitter)), maxMs };
}

function formatDelay(ms: number): string {
  if (ms < 1_000) return `${ms} ms`;
  return `${Math.round(ms / 100) / 10} s`;
}
