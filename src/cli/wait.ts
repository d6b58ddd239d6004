import { Job, type Queue } from 'bullmq';
import { MirrorfleetError } from '../errors.ts';
import { redact } from '../log/redact.ts';
import { decodeJobFailure } from '../../queues/job-errors.ts';
import { EXIT } from './common.ts';

/** Waiting for a job with `--wait`, and printing how the wait ended. */

/** Outcome of waiting for a job. `running` means that the wait timed out, and `state` is the job's state at that moment. */
export type WaitOutcome<T> =
  | { status: 'completed'; jobId: string; result: T }
  | { status: 'failed'; jobId: string; error: MirrorfleetError }
  | { status: 'running'; jobId: string; state: string; queue: string };

/**
 * Waits up to `timeoutMs` for job `jobId` of `queue` with `wait` (one of the producer's wait methods).
 * When the wait times out, or `timeoutMs` is 0, reads the job's state instead, so a job that is still
 * waiting or running is reported as such and not as failed.
 */
export async function waitForOutcome<T>(queue: Queue, jobId: string, timeoutMs: number, wait: (timeoutMs: number) => Promise<T>): Promise<WaitOutcome<T>> {
  if (timeoutMs > 0) {
    try {
      return { status: 'completed', jobId, result: await wait(timeoutMs) };
    } catch (error) {
      const failure = error instanceof MirrorfleetError ? error : new MirrorfleetError('INTERNAL', String(error));
      // WAIT_TIMEOUT: the wait ended and the job keeps going, so its state is read below. Any other code,
      // TIMEOUT included (an attempt that ran past the job's time limit), is the job's own failure.
      if (failure.code !== 'WAIT_TIMEOUT') return { status: 'failed', jobId, error: failure };
    }
  }
  const job = await Job.fromId(queue, jobId);
  if (!job) return { status: 'failed', jobId, error: new MirrorfleetError('INTERNAL', `job ${jobId} no longer exists in queue ${queue.name}`) };
  const state = await job.getState();
  if (state === 'completed') return { status: 'completed', jobId, result: job.returnvalue as T };
  if (state === 'failed') return { status: 'failed', jobId, error: decodeJobFailure(job.failedReason ?? 'INTERNAL: the job failed without a reason') };
  return { status: 'running', jobId, state, queue: queue.name };
}

/** Returns the JSON form of an outcome that is not a result: `{ jobId, state, error }` or `{ jobId, state, timedOut: true }`. */
export function outcomeJson(outcome: Exclude<WaitOutcome<unknown>, { status: 'completed' }>): Record<string, unknown> {
  if (outcome.status === 'failed') return { jobId: outcome.jobId, state: 'failed', error: { code: outcome.error.code, message: redact(outcome.error.message) } };
  return { jobId: outcome.jobId, state: outcome.state, timedOut: true };
}

/** Returns the exit code of an outcome. */
export function exitCodeOf(outcome: WaitOutcome<unknown>): number {
  if (outcome.status === 'completed') return EXIT.success;
  return outcome.status === 'failed' ? EXIT.failed : EXIT.stillRunning;
}

/**
 * Prints an outcome: the result (JSON with `json`, else `describe`), or on stderr the failure or the
 * state of a job that is still going. Returns the exit code.
 */
export function printOutcome<T>(outcome: WaitOutcome<T>, options: { json: boolean; timeoutSeconds: number; label: string; describe: (result: T) => string }): number {
  if (outcome.status === 'completed') {
    process.stdout.write(options.json ? `${JSON.stringify(outcome.result)}\n` : options.describe(outcome.result));
  } else if (options.json) {
    process.stdout.write(`${JSON.stringify(outcomeJson(outcome))}\n`);
  } else if (outcome.status === 'failed') {
    process.stderr.write(`${options.label} ${outcome.jobId} failed: ${outcome.error.code}: ${redact(outcome.error.message)}\n`);
  } else {
    process.stderr.write(`${options.label} ${outcome.jobId} ${describeStillRunning(outcome.state, options.timeoutSeconds, outcome.jobId, outcome.queue)}\n`);
  }
  return exitCodeOf(outcome);
}

/** Formats the rest of "job ID …" for a job that did not finish in time: its state, and how to follow it. */
export function describeStillRunning(state: string, timeoutSeconds: number, jobId: string, queue: string): string {
  // Job ids are counted per queue, so the id alone may also name a job of another queue.
  return `did not finish within ${timeoutSeconds} s and is still ${state}; the job keeps going, follow it with: mirrorfleet job ${jobId} --queue ${queue}`;
}
