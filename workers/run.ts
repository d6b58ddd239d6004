import type { Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { createRedisConnection } from '../src/redis/connection.ts';
import type { Server } from 'node:http';
import { ENV, type Config } from '../src/config/config.ts';
import { DEFAULTS } from '../src/config/schema.ts';
import { InvalidInputError, MirrorfleetError } from '../src/errors.ts';
import type { Resolver } from '../src/net/connector.ts';
import { checkPort } from '../src/util/listen.ts';
import { createLogger, type Logger } from '../src/log/logger.ts';
import { DEFAULT_LOCK_OPTIONS, type LockOptions } from '../src/dedupe/lock.ts';
import { LockReleaseListener } from '../src/dedupe/wakeups.ts';
import { isConnectionError, watchRedisOutages } from '../src/log/redis-outage.ts';
import { Metrics } from '../src/metrics/metrics.ts';
import { startHealthServer } from '../src/metrics/server.ts';
import { startQueueSampler } from '../src/metrics/queue-sampler.ts';
import { RegistryClients } from '../src/mirror/clients.ts';
import { createRegistryGates } from '../src/ratelimit/registry-gates.ts';
import { NetworkPolicy } from '../src/net/policy.ts';
import { HttpTransport } from '../src/registry/http.ts';
import type { RetryPolicy } from '../src/registry/retry.ts';
import { MIRROR_QUEUE } from '../queues/mirror.ts';
import { createMirrorWorker } from './mirror.ts';
import { BUILD_QUEUE } from '../queues/build.ts';
import { createBuildWorker } from './build.ts';
import { CLEANUP_QUEUE } from '../queues/cleanup.ts';
import { createCleanupWorker } from './cleanup.ts';
import type { WorkerDependencies } from './types.ts';

/**
 * A worker process: one BullMQ worker per queue, a metrics and health server, and a graceful shutdown
 * on SIGTERM or SIGINT: stop taking jobs, let active jobs finish within the grace period, then hand
 * the jobs still running back to the queue and cut their transfers. Every step after the grace period
 * is bounded, so the process exits (with 0) even when Redis does not respond. With Redis down and no
 * active job, it does not wait for the grace period at all.
 */

/** One factory per queue a worker process can serve; a new queue adds its line here. */
const WORKER_FACTORIES: Record<string, (dependencies: WorkerDependencies) => Worker> = {
  [MIRROR_QUEUE]: createMirrorWorker,
  [BUILD_QUEUE]: (dependencies) => createBuildWorker(dependencies),
  [CLEANUP_QUEUE]: createCleanupWorker,
};

export const WORKER_QUEUES: readonly string[] = Object.keys(WORKER_FACTORIES);

export interface WorkerProcessOptions {
  config: Config;
  queues: string[];
  concurrency: number;
  metricsPort: number;
  /**
   * Setting the metrics port came from, such as `--metrics-port`, for the error when the port cannot
   * be used. Without it, the setting is inferred from `config` and the environment.
   */
  metricsPortSource?: string;
  /** Job lock duration; a job of a killed worker is taken up by another after about this long. */
  lockDurationMs?: number;
  /** Replaces DNS resolution of registry host names; tests pass a stub so that no query leaves the machine. */
  resolver?: Resolver;
  /** Overrides the registry clients' retry policy, such as shorter waits in tests. */
  retry?: Partial<RetryPolicy>;
  logger?: Logger;
}

export interface RunningWorkers {
  workers: Worker[];
  metricsServer: Server | undefined;
  stop(graceMs: number): Promise<void>;
}

// Bound of each shutdown step after the grace period, because with Redis unreachable a command can wait forever.
const SHUTDOWN_STEP_MS = 5_000;
// Bound of a shutdown step that needs Redis while the connection is down: it cannot finish, so waiting longer only delays the exit.
const SHUTDOWN_STEP_REDIS_DOWN_MS = 1_000;

/**
 * Starts one BullMQ worker per queue in `options.queues`, the metrics server and the queue sampler.
 * The metrics port is bound first, so that a port in use stops the process before it connects to
 * Redis or takes a job.
 * @throws InvalidInputError for an unknown queue or an invalid metrics port, before anything opens.
 * @throws PortUnavailableError when the metrics port is in use; nothing is left open then.
 */
export async function startWorkers(options: WorkerProcessOptions): Promise<RunningWorkers> {
  const { config } = options;
  const logger = options.logger ?? createLogger(config.logLevel);
  for (const queue of options.queues) {
    if (!WORKER_FACTORIES[queue]) throw new InvalidInputError(`unknown queue "${queue}"; accepted: ${WORKER_QUEUES.join(', ')}`);
  }
  const metricsHost = config.worker.metricsHost ?? '0.0.0.0';
  const portSource = options.metricsPortSource ?? metricsPortSource(options);
  checkPort({ server: 'metrics server', port: options.metricsPort, host: metricsHost, source: portSource, minimum: 0, zeroMeans: 'turns it off', advice: '' });
  if (options.queues.includes(MIRROR_QUEUE) && config.mirrorRegistries.length === 0) {
    logger.warn(
      { queues: options.queues },
      'no mirror registry is declared, so every mirror job will be rejected; declare one with MIRRORFLEET_MIRROR_REGISTRIES=NAME=HOST[:PORT][/PREFIX] or mirrorRegistries in the configuration file',
    );
  }

  const metrics = new Metrics();
  let connection: Redis | undefined;
  const metricsServer =
    options.metricsPort > 0
      ? await startHealthServer({
          metrics,
          port: options.metricsPort,
          host: metricsHost,
          portSetting: {
            source: portSource,
            advice: `two workers on one host need different ports: pass --metrics-port 0 to turn the metrics server off, or --metrics-port with a free port (or set ${ENV.metricsPort})`,
          },
          // The health server returns 503 when this takes longer than its readiness timeout; a PING
          // on a connection with maxRetriesPerRequest null waits for the reconnect.
          ready: async () => {
            if (connection === undefined) throw new Error('not connected yet');
            if (connection.status !== 'ready') throw new Error(`connection ${connection.status}`);
            return (await connection.ping()) === 'PONG';
          },
        })
      : undefined;

  try {
    connection = createRedisConnection(config.redis, { maxRetriesPerRequest: null });
  } catch (error) {
    metricsServer?.close();
    throw error;
  }
  const redis = connection;
  const outages = watchRedisOutages(redis, logger);
  // Every BullMQ worker and queue repeats the connection errors of Redis; the outage log reports those once.
  const reportError = (fields: Record<string, unknown>, error: Error, message: string) => {
    if (isConnectionError(error)) {
      outages.noteError(error);
      logger.debug({ ...fields, error: error.message }, message);
      return;
    }
    logger.error({ ...fields, error: error.message }, message);
  };
  const handedBack = new Set<string>();
  // Lock waiters of this process wake up when a lock is released anywhere in the fleet.
  const lockReleases = LockReleaseListener.start(redis, config.redis.keyPrefix);
  const lockOptions: LockOptions = { ...DEFAULT_LOCK_OPTIONS, wakeups: lockReleases };
  let transport: HttpTransport | undefined;
  let gates: ReturnType<typeof createRegistryGates>;
  const workers: Worker[] = [];
  try {
    const requestTimeoutMs = config.limits.requestTimeoutSeconds * 1000;
    transport = new HttpTransport({
      policy: new NetworkPolicy(config.allowNetworks),
      headersTimeoutMs: requestTimeoutMs,
      bodyTimeoutMs: requestTimeoutMs,
      ...(options.resolver ? { resolver: options.resolver } : {}),
    });
    transport.observe(({ registry, method, status }) => metrics.registryRequests.inc({ registry, method, status: String(status) }));
    // Request budgets per registry host, shared by the fleet through Redis (rateLimits in the configuration).
    gates = createRegistryGates({ config, redis, metrics });
    const clients = new RegistryClients(config, transport, options.retry, gates, (event) => metrics.recordRegistryRetry(event));
    for (const queue of options.queues) {
      const worker = WORKER_FACTORIES[queue]!({
        config,
        redis,
        clients,
        connection: redis,
        prefix: config.redis.keyPrefix,
        concurrency: options.concurrency,
        logger,
        metrics,
        locks: lockOptions,
        ...(options.lockDurationMs ? { lockDurationMs: options.lockDurationMs } : {}),
        isHandedBack: (job) => handedBack.has(jobKey(job)),
        onQueueError: (name, error) => reportError({ queue: name }, error, 'queue error'),
      });
      worker.on('error', (error) => reportError({ queue }, error, 'worker error'));
      workers.push(worker);
    }
  } catch (error) {
    await Promise.all(workers.map((worker) => bounded(worker.close(true))));
    gates?.close();
    lockReleases.close();
    await bounded(transport?.destroy());
    metricsServer?.close();
    redis.disconnect();
    throw error;
  }

  // Every known queue, not only the ones this process serves: whichever process holds the lease reports the whole fleet.
  const sampler = startQueueSampler({
    connection: redis,
    prefix: config.redis.keyPrefix,
    queues: WORKER_QUEUES,
    metrics,
    onError: (error) => reportError({ queues: WORKER_QUEUES }, error instanceof Error ? error : new Error(String(error)), 'queue metrics sample failed'),
  });
  const active = trackActiveJobs(workers);
  let stopping: Promise<void> | undefined;
  // While Redis is unreachable the outage log reports it, and "workers started" is logged once Redis responds.
  void outages.whenReady().then(() => {
    if (stopping) return;
    logger.info({ queues: options.queues, concurrency: options.concurrency, metricsPort: options.metricsPort }, 'workers started');
  });

  const httpTransport = transport;
  // A step that needs Redis cannot finish while the connection is down, so it gets a shorter bound then.
  const redisStep = (work: Promise<unknown>) => settlesWithin(work, redis.status === 'ready' ? SHUTDOWN_STEP_MS : SHUTDOWN_STEP_REDIS_DOWN_MS);
  const stop = (graceMs: number) => {
    stopping ??= (async () => {
      logger.info({ graceMs, activeJobs: active.size }, 'stopping: no new jobs; waiting for active jobs');
      const closing = Promise.all(workers.map((worker) => worker.close()));
      // Closing a worker also waits for Redis. While Redis is down and no job runs, there is nothing
      // to wait for, so the grace period ends early and the close gets one bounded step.
      const waited = await waitForWorkers(closing, () => active.size === 0 && redis.status !== 'ready', graceMs);
      const finished = waited !== 'grace over';
      if (waited === 'idle') await redisStep(closing);
      if (!finished) {
        // Each job still running goes back to the wait list without spending an attempt, so another
        // worker takes it up at once. Its transfers are cut next, so it pushes no manifest afterwards.
        logger.warn(
          { graceMs, jobs: [...active.values()].map((job) => ({ jobId: job.id, queue: job.queueName })) },
          'grace period over; handing active jobs back to the queue',
        );
        await bounded(handBack(active, handedBack, logger));
        const reason = new MirrorfleetError(
          'TIMEOUT',
          `the worker is stopping and its shutdown grace period of ${Math.round(graceMs / 1000)} s (worker.shutdownGraceSeconds) is over; the job goes back to the queue`,
          { retryable: true },
        );
        await bounded(httpTransport.destroy(reason));
        // The cut jobs unwind and release their Redis locks before the connection closes.
        await bounded(closing);
      }
      await redisStep(sampler.stop());
      metricsServer?.close();
      gates?.close();
      lockReleases.close();
      if (finished) await bounded(httpTransport.close());
      outages.stop();
      redis.disconnect();
      logger.info('stopped');
    })();
    return stopping;
  };
  return { workers, metricsServer, stop };
}

/** Names the setting the metrics port came from, for a caller that passed none. */
function metricsPortSource(options: WorkerProcessOptions): string {
  if (options.metricsPort !== options.config.worker.metricsPort) return '--metrics-port';
  if (process.env[ENV.metricsPort] !== undefined) return ENV.metricsPort;
  return `worker.metricsPort in the configuration file, or its default ${DEFAULTS.metricsPort}`;
}

/** Returns the key of `job` in the map of active jobs: queue name and job id. */
function jobKey(job: Job): string {
  return `${job.queueName}:${job.id}`;
}

/**
 * Keeps the jobs each worker is running, by queue and job id, from 'active' until 'completed' or 'failed'.
 * A job handed back at shutdown stays in it, because BullMQ emits neither event for it.
 */
function trackActiveJobs(workers: Worker[]): Map<string, Job> {
  const active = new Map<string, Job>();
  for (const worker of workers) {
    worker.on('active', (job) => active.set(jobKey(job), job));
    worker.on('completed', (job) => active.delete(jobKey(job)));
    worker.on('failed', (job) => {
      if (job) active.delete(jobKey(job));
    });
  }
  return active;
}

/**
 * Waits until the workers have closed ('closed'), `isIdle` returns true ('idle'), or `graceMs` has
 * passed ('grace over'), whichever comes first.
 */
async function waitForWorkers(closing: Promise<unknown>, isIdle: () => boolean, graceMs: number): Promise<'closed' | 'idle' | 'grace over'> {
  let graceTimer: NodeJS.Timeout | undefined;
  let pollTimer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      closing.then(() => 'closed' as const, () => 'closed' as const),
      // Polled, because the job map and the connection state have no common change event; 100 ms is short next to any grace period.
      new Promise<'idle'>((resolve) => {
        const check = () => (isIdle() ? resolve('idle') : (pollTimer = setTimeout(check, 100)));
        check();
      }),
      new Promise<'grace over'>((resolve) => (graceTimer = setTimeout(() => resolve('grace over'), graceMs))),
    ]);
  } finally {
    clearTimeout(graceTimer);
    clearTimeout(pollTimer);
  }
}

/**
 * Moves every job still running back to its queue's wait list with the lock token this process holds,
 * and adds each moved job to `handedBack`, so that its worker shell does not report its cut attempt as a failure.
 */
async function handBack(active: Map<string, Job>, handedBack: Set<string>, logger: Logger): Promise<void> {
  await Promise.all(
    [...active.values()].map(async (job) => {
      try {
        await job.moveToWait(job.token);
        handedBack.add(jobKey(job));
        logger.info({ jobId: job.id, queue: job.queueName }, 'job handed back to the queue');
      } catch (error) {
        logger.warn(
          { jobId: job.id, queue: job.queueName, error: (error as Error).message },
          'cannot hand the job back; it returns to the queue when its lock expires',
        );
      }
    }),
  );
}

/** Returns true when `work` settles within `ms` milliseconds, false when the time runs out first. */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([work.then(() => true, () => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for `work` at most SHUTDOWN_STEP_MS; its failure is ignored, because stopping goes on regardless. */
async function bounded(work: Promise<unknown> | undefined): Promise<void> {
  await settlesWithin(work ?? Promise.resolve(), SHUTDOWN_STEP_MS);
}
