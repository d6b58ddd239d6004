import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { WorkerDependencies } from './types.ts';
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
  const context: MirrorContext = { config: options.config, redis: options.redis, clients: options.clients };

  const processor = async (job: Job): Promise<MirrorResult> => {
    const started = Date.now();
    const attempt = `${job.attemptsMade + 1}/${job.opts.attempts ?? 1}`;
    let request;
    try {
      request = parseMirrorRequest(job.data);
    } catch (error) {
      logger.warn({ jobId: job.id, queue: MIRROR_QUEUE, attempt, error: (error as Error).message }, 'mirror job rejected: invalid payload');
      metrics.jobs.inc({ queue: MIRROR_QUEUE, outcome: 'failed' });
      throw new UnrecoverableError(encodeJobFailure(error));
    }

    let lastProgress = 0;
    try {
      const result = await mirrorImage(request, context, {
        jobId: job.id!,
        onProgress: (progress) => {
          const now = Date.now();
          if (now - lastProgress < PROGRESS_INTERVAL_MS && progress.blobsDone < progress.blobsTotal) return;
          lastProgress = now;
          const update: MirrorProgress = { stage: 'copying', ...progress };
          job.updateProgress(update as unknown as object).catch(() => undefined);
        },
      });
      const seconds = (Date.now() - started) / 1000;
      metrics.jobs.inc({ queue: MIRROR_QUEUE, outcome: result.action });
      metrics.jobDuration.observe({ queue: MIRROR_QUEUE, outcome: result.action }, seconds);
      metrics.bytes.inc({ direction: 'pulled' }, result.bytes.pulled);
      metrics.bytes.inc({ direction: 'pushed' }, result.bytes.pushed);
      metrics.blobs.inc({ result: 'copied' }, result.blobs.copied);
      metrics.blobs.inc({ result: 'mounted' }, result.blobs.mounted);
      metrics.blobs.inc({ result: 'present' }, result.blobs.present);
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
    } catch (error) {
      const permanent = error instanceof MirrorfleetError ? !isRetryable(error) : false;
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const outcome = permanent || lastAttempt ? 'failed' : 'retrying';
      metrics.jobs.inc({ queue: MIRROR_QUEUE, outcome });
      metrics.jobDuration.observe({ queue: MIRROR_QUEUE, outcome }, (Date.now() - started) / 1000);
      logger.warn(
        {
          jobId: job.id,
          queue: MIRROR_QUEUE,
          source: request.source,
          registry: request.registry,
          attempt,
          durationMs: Date.now() - started,
          code: error instanceof MirrorfleetError ? error.code : 'INTERNAL',
          error: error instanceof Error ? error.message : String(error),
        },
        outcome === 'failed' ? 'mirror job failed' : 'mirror job attempt failed; it will be retried',
      );
      if (permanent) throw new UnrecoverableError(encodeJobFailure(error));
      throw new Error(encodeJobFailure(error));
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
