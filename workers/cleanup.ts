import { referenceForMessage } from '../src/image-ref/message-value.ts';
import { Queue, UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import { describeFailure } from './failure-log.ts';
import type { WorkerDependencies } from './types.ts';
import { isRetryable, MirrorfleetError } from '../src/errors.ts';
import type { AuditEntry } from '../src/cleanup/audit.ts';
import type { CleanupContext } from '../src/cleanup/context.ts';
import { runReconcile } from '../src/cleanup/reconcile.ts';
import { checkEvictionPolicy } from '../src/cleanup/redis-policy.ts';
import { runRelease } from '../src/cleanup/release.ts';
import { QueueSweepScheduler, syncSweepSchedule } from '../src/cleanup/schedule.ts';
import { runSweep } from '../src/cleanup/sweep.ts';
import { encodeJobFailure } from '../queues/job-errors.ts';
import { CLEANUP_QUEUE, parseCleanupRequest, type CleanupRequest, type CleanupResult } from '../queues/cleanup.ts';

/**
 * The worker shell of the `cleanup` queue: release, sweep and reconcile jobs. It logs every deletion and
 * one line per job outcome, and updates the job metrics.
 *
 * Before it takes any job it checks that Redis never evicts keys (maxmemory-policy noeviction): an
 * evicted reference count makes an image in use look unused. Otherwise it logs why and takes no cleanup
 * job, while the process's other workers run on. It also creates, updates or removes the repeatable
 * sweep according to `cleanup.sweepIntervalSeconds`.
 */

export function createCleanupWorker(options: WorkerDependencies): Worker {
  const { logger, metrics } = options;
  const queue = new Queue(CLEANUP_QUEUE, { connection: options.connection, prefix: options.prefix });
  // Without a listener, BullMQ writes every error event of a queue to stderr.
  queue.on('error', (error) => options.onQueueError?.(CLEANUP_QUEUE, error));
  const scheduler = new QueueSweepScheduler(queue);

  const processor = async (job: Job): Promise<CleanupResult> => {
    const started = Date.now();
    const attempt = `${job.attemptsMade + 1}/${job.opts.attempts ?? 1}`;
    let request: CleanupRequest;
    try {
      request = parseCleanupRequest(job.data);
    } catch (error) {
      logger.warn({ jobId: job.id, queue: CLEANUP_QUEUE, attempt, error: (error as Error).message }, 'cleanup job rejected: invalid payload');
      metrics.jobs.inc({ queue: CLEANUP_QUEUE, outcome: 'failed' });
      metrics.jobFailures.inc({ queue: CLEANUP_QUEUE, code: 'INVALID_INPUT' });
      throw new UnrecoverableError(encodeJobFailure(error));
    }

    const context: CleanupContext = {
      config: options.config,
      redis: options.redis,
      clients: options.clients,
      jobId: job.id!,
      scheduler,
      onDeletion: (entry: AuditEntry) => {
        // NOTE: mirrorfleet_deleted_bytes_total stays at zero: a sweep does not add up the sizes it frees.
        if (entry.result === 'deleted') metrics.imagesDeleted.inc({ registry: metrics.registryLabel(entry.registry) });
        logger.info(
          {
            jobId: job.id,
            queue: CLEANUP_QUEUE,
            registry: entry.registry,
            repository: entry.repository,
            reference: entry.reference,
            method: entry.method,
            result: entry.result,
            images: entry.images,
            reason: entry.reason,
          },
          'image deleted',
        );
      },
    };

    const summary = { jobId: job.id, queue: CLEANUP_QUEUE, kind: request.kind, registry: request.registry === undefined ? 'every' : referenceForMessage(request.registry), dryRun: request.dryRun, attempt };
    try {
      const result = await run(request, context);
      const outcome = request.dryRun ? `${request.kind}-dry-run` : request.kind;
      metrics.jobs.inc({ queue: CLEANUP_QUEUE, outcome });
      metrics.jobDuration.observe({ queue: CLEANUP_QUEUE, outcome }, (Date.now() - started) / 1000);
      for (const limit of result.limits) {
        if (limit.reached) logger.warn({ ...summary, limit }, limit.message ?? 'sweep stopped at its limit');
      }
      logger.info(
        {
          ...summary,
          deleted: result.deleted.length,
          kept: result.kept.length,
          released: result.released.length,
          recorded: result.recorded.length,
          missing: result.missing.length,
          durationMs: result.durationMs,
        },
        `cleanup job ${request.kind} done`,
      );
      return result;
    } catch (error) {
      // The stopping process moved the job back to the wait list, so this attempt is no failure.
      if (options.isHandedBack?.(job)) throw new WaitingError();
      const permanent = error instanceof MirrorfleetError ? !isRetryable(error) : false;
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const outcome = permanent || lastAttempt ? 'failed' : 'retrying';
      const code = error instanceof MirrorfleetError ? error.code : 'INTERNAL';
      metrics.jobs.inc({ queue: CLEANUP_QUEUE, outcome });
      metrics.jobDuration.observe({ queue: CLEANUP_QUEUE, outcome }, (Date.now() - started) / 1000);
      if (outcome === 'failed') metrics.jobFailures.inc({ queue: CLEANUP_QUEUE, code });
      else metrics.jobRetries.inc({ queue: CLEANUP_QUEUE, code });
      const { attempt: _attempt, ...jobFields } = summary;
      const line = describeFailure(job, 'cleanup job', code, outcome === 'failed');
      logger[line.level](
        {
          ...jobFields,
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

  const worker = new Worker(CLEANUP_QUEUE, processor, {
    connection: options.connection,
    prefix: options.prefix,
    concurrency: options.concurrency,
    lockDuration: options.lockDurationMs ?? 30_000,
    stalledInterval: Math.max(1_000, Math.floor((options.lockDurationMs ?? 30_000) / 2)),
    maxStalledCount: 3,
    autorun: false,
  });
  worker.on('closed', () => void queue.close().catch(() => undefined));

  void startWhenSafe(worker, queue, options).catch((error: unknown) => {
    // A check cut short by the shutdown is no start-up failure.
    if (worker.closing) return;
    logger.error({ queue: CLEANUP_QUEUE, error: error instanceof Error ? error.message : String(error) }, 'cleanup worker not started');
  });
  return worker;
}

/**
 * Runs `worker` once Redis is known not to evict keys, after syncing the repeatable sweep. It logs and
 * starts nothing once the worker is closing.
 */
async function startWhenSafe(worker: Worker, queue: Queue, options: WorkerDependencies): Promise<void> {
  const check = await checkEvictionPolicy(options.redis);
  if (worker.closing) return;
  if (!check.safe) {
    options.logger.error({ queue: CLEANUP_QUEUE, maxmemoryPolicy: check.policy ?? 'unknown' }, `cleanup worker not started: ${check.message}`);
    return;
  }
  const schedule = await syncSweepSchedule(queue, options.config.cleanup.sweepIntervalSeconds);
  if (worker.closing) return;
  options.logger.info({ queue: CLEANUP_QUEUE, sweepSchedule: schedule, sweepIntervalSeconds: options.config.cleanup.sweepIntervalSeconds }, 'cleanup worker running');
  // run() resolves when the worker closes; a failure while running is reported by the 'error' event.
  void worker.run().catch(() => undefined);
}

function run(request: CleanupRequest, context: CleanupContext): Promise<CleanupResult> {
  switch (request.kind) {
    case 'release':
      return runRelease(request, context);
    case 'sweep':
      return runSweep(request, context);
    case 'reconcile':
      return runReconcile(request, context);
  }
}
