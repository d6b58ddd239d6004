import { MirrorfleetError, type ErrorCode } from '../src/errors.ts';

export { MirrorfleetError };

/**
 * A failed BullMQ job keeps only a message (`failedReason`). Workers write it as `CODE: message`, so
 * producers in any language get the stable error code back, followed by ` [retryable]` when BullMQ
 * retries the job after this failure while attempts remain.
 */

const RETRYABLE_MARK = ' [retryable]';

/**
 * Returns true when the worker shells hand `error` to BullMQ as an ordinary error, which BullMQ retries
 * while attempts remain: every error except a MirrorfleetError with `retryable: false`, which they
 * wrap in UnrecoverableError. Unsorted errors (code INTERNAL) are retried, because their cause is unknown.
 */
export function isRetriedByQueue(error: unknown): boolean {
  return !(error instanceof MirrorfleetError) || error.retryable;
}

/** Encodes `error` as a `failedReason`; see the file comment for the format. */
export function encodeJobFailure(error: unknown): string {
  const mark = isRetriedByQueue(error) ? RETRYABLE_MARK : '';
  if (error instanceof MirrorfleetError) return `${error.code}: ${error.message}${mark}`;
  return `INTERNAL: ${error instanceof Error ? error.message : String(error)}${mark}`;
}

/** Turns a `failedReason` back into an error with its code and retryability. */
export function decodeJobFailure(reason: string): MirrorfleetError {
  const retryable = reason.endsWith(RETRYABLE_MARK);
  const text = retryable ? reason.slice(0, -RETRYABLE_MARK.length) : reason;
  const match = /^([A-Z_]+): ([\s\S]*)$/.exec(text);
  if (match) return new MirrorfleetError(match[1] as ErrorCode, match[2]!, { retryable });
  return new MirrorfleetError('INTERNAL', text, { retryable });
}

/** BullMQ's waitUntilFinished rejects with this message when its time-to-live runs out. */
export const TimeoutErrorLike = /timed out before finishing/i;
