import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import { describeFailure } from './failure-log.ts';
import type { WorkerDependencies } from './types.ts';
import { isRetryable, MirrorfleetError } from '../src/errors.ts';
import { buildImage, type BuildContext } from '../src/build/build-image.ts';
import { selectBuilder } from '../src/build/select-builder.ts';
import { redact } from '../src/log/redact.ts';
import { encodeJobFailure } from '../queues/job-errors.ts';
import { BUILD_QUEUE, parseBuildPayload, type BuildProgress, type BuildResult } from '../queues/build.ts';

/**
 * The worker shell of the `build` queue: validates the payload again, runs the build job, streams the
 * builder's output to the job log, and writes one log line and the metrics for each outcome. Errors that
 * retrying cannot fix (bad input, a wrong Dockerfile, a missing key) end the job at once through
 * BullMQ's UnrecoverableError. Builds run at most `build.concurrency` at once per process.
 *
 * A process without an installed builder does not take build jobs at all, so that in a fleet where only
 * some machines can build, the others leave the jobs to them instead of failing them.
 */

export interface BuildWorkerOptions {
  /** Replaces parts of the build context, such as the builder; for tests. */
  context?: Partial<BuildContext>;
}

export function createBuildWorker(options: WorkerDependencies, extra: BuildWorkerOptions = {}): Worker {
  const { logger, metrics, config } = options;
  const context: BuildContext = { config, redis: options.redis, clients: options.clients, ...extra.context };
  let runnable = true;
  if (!context.builder) {
    try {
      context.builder = selectBuilder(config.build.builder);
    } catch (error) {
      runnable = false;
      logger.warn({ queue: BUILD_QUEUE, error: (error as Error).message }, 'not taking build jobs: no builder is installed');
    }
  }

  const processor = async (job: Job): Promise<BuildResult> => {
    const started = Date.now();
    const attempt = `${job.attemptsMade + 1}/${job.opts.attempts ?? 1}`;
    let payload;
    try {
      payload = parseBuildPayload(job.data);
    } catch (error) {
      logger.warn({ jobId: job.id, queue: BUILD_QUEUE, attempt, error: (error as Error).message }, 'build job rejected: invalid payload');
      metrics.jobs.inc({ queue: BUILD_QUEUE, outcome: 'failed' });
      throw new UnrecoverableError(encodeJobFailure(error));
    }

    // Log lines go out one after another, in order. A failed write to the job log does not fail the
    // build, and only the first failure of a job is logged.
    let logWrites: Promise<unknown> = Promise.resolve();
    let logFailed = false;
    const appendLog = (line: string) => {
      logWrites = logWrites
        .then(() => job.log(redact(line)))
        .catch((error: unknown) => {
          if (logFailed) return;
          logFailed = true;
          logger.warn({ jobId: job.id, queue: BUILD_QUEUE, error: error instanceof Error ? error.message : String(error) }, 'cannot write builder output to the job log');
        });
    };

    try {
      const result = await buildImage(payload, context, {
        jobId: job.id!,
        requestedAt: job.timestamp,
        onLine: appendLog,
        onStage: (stage) => {
          const progress: BuildProgress = { stage };
          job.updateProgress(progress as unknown as object).catch(() => undefined);
        },
      });
      await logWrites;
      const seconds = (Date.now() - started) / 1000;
      metrics.jobs.inc({ queue: BUILD_QUEUE, outcome: result.action });
      metrics.jobDuration.observe({ queue: BUILD_QUEUE, outcome: result.action }, seconds);
      logger.info(
        {
          jobId: job.id,
          queue: BUILD_QUEUE,
          git: payload.git.url,
          commit: payload.git.commit,
          target: result.target,
          digest: result.digest,
          action: result.action,
          cacheHit: result.cacheHit,
          attempt,
          durationMs: result.durationMs,
        },
        `build job ${result.action}`,
      );
      return result;
    } catch (error) {
      await logWrites;
      // The stopping process moved the job back to the wait list, so this attempt is no failure.
      if (options.isHandedBack?.(job)) throw new WaitingError();
      const permanent = error instanceof MirrorfleetError ? !isRetryable(error) : false;
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const outcome = permanent || lastAttempt ? 'failed' : 'retrying';
      const code = error instanceof MirrorfleetError ? error.code : 'INTERNAL';
      metrics.jobs.inc({ queue: BUILD_QUEUE, outcome });
      metrics.jobDuration.observe({ queue: BUILD_QUEUE, outcome }, (Date.now() - started) / 1000);
      const line = describeFailure(job, 'build job', code, outcome === 'failed');
      logger[line.level](
        {
          jobId: job.id,
          queue: BUILD_QUEUE,
          git: payload.git.url,
          commit: payload.git.commit,
          registry: payload.registry,
          ...line.fields,
          durationMs: Date.now() - started,
          code,
          error: error instanceof Error ? error.message : String(error),
        },
        line.msg,
      );
      if (permanent) throw new UnrecoverableError(encodeJobFailure(error));
      throw new Error(encodeJobFailure(error));
    }
  };

  return new Worker(BUILD_QUEUE, processor, {
    autorun: runnable,
    connection: options.connection,
    prefix: options.prefix,
    concurrency: Math.min(options.concurrency, config.build.concurrency),
    lockDuration: options.lockDurationMs ?? 30_000,
    stalledInterval: Math.max(1_000, Math.floor((options.lockDurationMs ?? 30_000) / 2)),
    maxStalledCount: 3,
  });
}
