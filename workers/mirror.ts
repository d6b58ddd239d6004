import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import { describeFailure } from './failure-log.ts';
import type { WorkerDependencies } from './types.ts';
import { referenceForMessage } from '../src/image-ref/message-value.ts';
import { withRateLimitListener, type RateLimitWait } from '../src/ratelimit/waits.ts';
import { isRetryable, MirrorfleetError } from '../src/errors.ts';
import { mirrorImage, type MirrorContext } from '../src/mirror/mirror-image.ts';
import { encodeJobFailure } from '../queues/job-errors.ts';
import { MIRROR_QUEUE, parseMirrorRequest, type MirrorProgress, type MirrorResult } from '../queues/mirror.ts';

/**
 * The worker shell of the `mirror` queue: validates the payload again, runs the mirror job, and writes
 * one log line and the metrics for each outcome. Errors that retrying cannot fix (bad input, denied
 * access, schema 1) end the job at once through BullMQ's UnrecoverableError.
 */


const PROGRESS_INTERVAL_MS = 250;

export function createMirrorWorker(options: WorkerDependencies): Worker {
  const { logger, metrics } = options;
  const context: MirrorContext = { config: options.config, redis: options.redis, clients: options.clients, ...(options.locks ? { locks: options.locks } : {}) };

  const processor = async (job: Job): Promise<MirrorResult> => {
    const started = Date.now();
    const attempt = `${job.attemptsMade + 1}/${job.opts.attempts ?? 1}`;
    let request;
    try {
      request = parseMirrorRequest(job.data);
    } catch (error) {
      logger.warn({ jobId: job.id, queue: MIRROR_QUEUE, attempt, error: (error as Error).message }, 'mirror job rejected: invalid payload');
      metrics.jobs.inc({ queue: MIRROR_QUEUE, outcome: 'failed' });
      metrics.jobFailures.inc({ queue: MIRROR_QUEUE, code: 'INVALID_INPUT' });
      throw new UnrecoverableError(encodeJobFailure(error));
    }

    // A running job takes no more identical requests, because it may resolve the source tag before a
    // later request moved it. The key is removed before the first registry request for that reason.
    await job.removeDeduplicationKey();

    let lastProgress = 0;
    let latest: MirrorProgress = { stage: 'resolving', blobsDone: 0, blobsTotal: 0, bytesPulled: 0, bytesPushed: 0 };
    const report = (update: MirrorProgress) => {
      latest = update;
      job.updateProgress(update as unknown as object).catch(() => undefined);
    };
    // A request waiting for a registry's rate limit shows in the job's progress with its reason.
    const onRateLimitWait = (wait: RateLimitWait) => {
      const { waiting: _previous, ...rest } = latest;
      if (wait.phase === 'start') report({ ...rest, stage: 'waiting', waiting: { registry: wait.registry, reason: wait.reason, expectedMs: wait.waitMs } });
      else report({ ...rest, stage: 'copying' });
    };
    const timeLimit = startJobTimeLimit(options.config.limits.jobTimeoutSeconds, `mirror job ${job.id} (${request.source})`);
    try {
      const running = withRateLimitListener(onRateLimitWait, () =>
        mirrorImage(request, context, {
          jobId: job.id!,
          requestedAt: job.timestamp,
          signal: timeLimit.signal,
          onProgress: (progress) => {
            const now = Date.now();
            if (now - lastProgress < PROGRESS_INTERVAL_MS && progress.blobsDone < progress.blobsTotal) return;
            lastProgress = now;
            report({ stage: 'copying', ...progress });
          },
        }),
      );
      const result = await timeLimit.race(running);
      const seconds = (Date.now() - started) / 1000;
      metrics.jobs.inc({ queue: MIRROR_QUEUE, outcome: result.action });
      metrics.jobDuration.observe({ queue: MIRROR_QUEUE, outcome: result.action }, seconds);
      metrics.bytes.inc({ direction: 'pulled' }, result.bytes.pulled);
      metrics.bytes.inc({ direction: 'pushed' }, result.bytes.pushed);
      metrics.blobs.inc({ result: 'copied' }, result.blobs.copied);
      metrics.blobs.inc({ result: 'mounted' }, result.blobs.mounted);
      metrics.blobs.inc({ result: 'present' }, result.blobs.present);
      if (result.action === 'skipped') metrics.dedupeHits.inc({ kind: 'skipped_copy' });
      metrics.dedupeHits.inc({ kind: 'mounted_blob' }, result.blobs.mounted);
      metrics.dedupeHits.inc({ kind: 'present_blob' }, result.blobs.present);
      logger.info(
        {
          jobId: job.id,
          queue: MIRROR_QUEUE,
          source: result.source,
          target: result.target,
          digest: result.digest,
          action: result.action,
          attempt,
          durationMs: result.durationMs,
          bytesPulled: result.bytes.pulled,
          bytesPushed: result.bytes.pushed,
        },
        `mirror job ${result.action}`,
      );
      return result;
    } catch (caught) {
      // The stopping process moved the job back to the wait list and cut its transfers, so this attempt is no failure.
      if (options.isHandedBack?.(job)) throw new WaitingError();
      const error = explainRequestTimeLimit(caught, options.config.limits.requestTimeoutSeconds);
      const permanent = error instanceof MirrorfleetError ? !isRetryable(error) : false;
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const outcome = permanent || lastAttempt ? 'failed' : 'retrying';
      const code = error instanceof MirrorfleetError ? error.code : 'INTERNAL';
      metrics.jobs.inc({ queue: MIRROR_QUEUE, outcome });
      if (outcome === 'failed') metrics.jobFailures.inc({ queue: MIRROR_QUEUE, code });
      else metrics.jobRetries.inc({ queue: MIRROR_QUEUE, code });
      metrics.jobDuration.observe({ queue: MIRROR_QUEUE, outcome }, (Date.now() - started) / 1000);
      const line = describeFailure(job, 'mirror job', code, outcome === 'failed');
      logger[line.level](
        {
          jobId: job.id,
          queue: MIRROR_QUEUE,
          // Request values are shown with anything that looks like user:password@ replaced.
          source: referenceForMessage(request.source),
          registry: referenceForMessage(request.registry),
          ...line.fields,
          durationMs: Date.now() - started,
          code,
          error: error instanceof Error ? error.message : String(error),
        },
        line.msg,
      );
      if (permanent) throw new UnrecoverableError(encodeJobFailure(error));
      throw new Error(encodeJobFailure(error));
    } finally {
      timeLimit.clear();
    }
  };

  return new Worker(MIRROR_QUEUE, processor, {
    connection: options.connection,
    prefix: options.prefix,
    concurrency: options.concurrency,
    lockDuration: options.lockDurationMs ?? 30_000,
    stalledInterval: Math.max(1_000, Math.floor((options.lockDurationMs ?? 30_000) / 2)),
    maxStalledCount: 3,
  });
}

/** A running job's time limit: `signal` aborts when it expires, and `race` rejects at that moment. */
interface JobTimeLimit {
  signal: AbortSignal;
  race<T>(work: Promise<T>): Promise<T>;
  clear(): void;
}

/**
 * Starts the per-job time limit (`limits.jobTimeoutSeconds`). When it expires, the job fails with a
 * TIMEOUT error that is not retried, because the next attempt would meet the same limit.
 */
function startJobTimeLimit(seconds: number, jobDescription: string): JobTimeLimit {
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort(
      new MirrorfleetError(
        'TIMEOUT',
        `${jobDescription} did not finish within the job time limit of ${seconds} s (limits.jobTimeoutSeconds, MIRRORFLEET_JOB_TIMEOUT_SECONDS); ` +
          'raise the limit for large images or slow registries',
      ),
    );
  }, seconds * 1000);
  return {
    signal: controller.signal,
    race: async <T>(work: Promise<T>): Promise<T> => {
      // The work goes on after the limit until no blob is left in flight; its late failure must not crash the process.
      work.catch(() => undefined);
      const expired = new Promise<never>((_resolve, reject) => {
        if (controller.signal.aborted) reject(controller.signal.reason as Error);
        controller.signal.addEventListener('abort', () => reject(controller.signal.reason as Error), { once: true });
      });
      return Promise.race([work, expired]);
    },
    clear: () => clearTimeout(timer),
  };
}

const REQUEST_TIMEOUT_CODES: Record<string, string> = {
  UND_ERR_HEADERS_TIMEOUT: 'no response headers arrived',
  UND_ERR_BODY_TIMEOUT: 'the response body stalled',
};

/**
 * Names the per-request time limit in a failure that undici's headers or body timeout caused. Returns a
 * TIMEOUT error with the same retryability when `error`, or an error it wraps, is such a timeout, and
 * `error` unchanged otherwise.
 */
export function explainRequestTimeLimit(error: unknown, seconds: number): unknown {
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 5; depth += 1) {
    const symptom = REQUEST_TIMEOUT_CODES[(current as NodeJS.ErrnoException).code ?? ''];
    if (symptom !== undefined) {
      const message = error instanceof Error ? error.message : String(error);
      return new MirrorfleetError(
        'TIMEOUT',
        `${message}; ${symptom} within the request time limit of ${seconds} s (limits.requestTimeoutSeconds, MIRRORFLEET_REQUEST_TIMEOUT_SECONDS)`,
        { retryable: isRetryable(error) || !(error instanceof MirrorfleetError), cause: error },
      );
    }
    current = current.cause;
  }
  return error;
}
