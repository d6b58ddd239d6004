import { MirrorfleetError, type ErrorCode } from '../src/errors.ts';

export { MirrorfleetError };

/**
 * A failed BullMQ job keeps only a message (`failedReason`). Workers write it as `CODE: message`, so
 * producers in any language get the stable error code back.
 */
export function encodeJobFailure(error: unknown): string {
  if (error instanceof MirrorfleetError) return `${error.code}: ${error.message}`;
  return `INTERNAL: ${error instanceof Error ? error.message : String(error)}`;
}

/** Turns a `failedReason` back into an error with its code. */
export function decodeJobFailure(reason: string): MirrorfleetError {
  const match = /^([A-Z_]+): ([\s\S]*)$/.exec(reason);
  if (match) return new MirrorfleetError(match[1] as ErrorCode, match[2]!);
  return new MirrorfleetError('INTERNAL', reason);
}

/** BullMQ's waitUntilFinished rejects with this message when its time-to-live runs out. */
export const TimeoutErrorLike = /timed out before finishing/i;
