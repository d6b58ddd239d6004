import type { Worker } from 'bullmq';
import { createRedisConnection } from '../src/redis/connection.ts';
import type { Server } from 'node:http';
import type { Config } from '../src/config/config.ts';
import { createLogger, type Logger } from '../src/log/logger.ts';
import { Metrics } from '../src/metrics/metrics.ts';
import { startHealthServer } from '../src/metrics/server.ts';
import { startQueueSampler } from '../src/metrics/queue-sampler.ts';
import { RegistryClients } from '../src/mirror/clients.ts';
import { createRegistryGates } from '../src/ratelimit/registry-gates.ts';
import { NetworkPolicy } from '../src/net/policy.ts';
import { HttpTransport } from '../src/registry/http.ts';
import { MIRROR_QUEUE } from '../queues/mirror.ts';
import { createMirrorWorker } from './mirror.ts';
import { BUILD_QUEUE } from '../queues/build.ts';
import { createBuildWorker } from './build.ts';
import { CLEANUP_QUEUE } from '../queues/cleanup.ts';
import { createCleanupWorker } from './cleanup.ts';
import type { WorkerDependencies } from './types.ts';

/**
 * A worker process: one BullMQ worker per queue, a metrics and health server, and a graceful shutdown
 * on SIGTERM or SIGINT (stop taking jobs, let active jobs finish within the grace period, exit 0).
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
  /** Job lock duration; a job of a killed worker is taken up by another after about this long. */
  lockDurationMs?: number;
  logger?: Logger;
}

export interface RunningWorkers {
  workers: Worker[];
  metricsServer: Server | undefined;
  stop(graceMs: number): Promise<void>;
}

export async function startWorkers(options: WorkerProcessOptions): Promise<RunningWorkers> {
  const { config } = options;
  const logger = options.logger ?? createLogger(config.logLevel);
  const metrics = new Metrics();
  const connection = createRedisConnection(config.redis, { maxRetriesPerRequest: null });
  connection.on('error', (error: Error) => logger.warn({ error: error.message }, 'redis connection error; reconnecting'));

  const requestTimeoutMs = config.limits.requestTimeoutSeconds * 1000;
  const transport = new HttpTransport({
    policy: new NetworkPolicy(config.allowNetworks),
    headersTimeoutMs: requestTimeoutMs,
    bodyTimeoutMs: requestTimeoutMs,
  });
  transport.observe(({ registry, method, status }) => metrics.registryRequests.inc({ registry, method, status: String(status) }));
  // Request budgets per registry host, shared by the fleet through Redis (rateLimits in the configuration).
  const gates = createRegistryGates({ config, redis: connection, metrics });
  const clients = new RegistryClients(config, transport, undefined, gates, (event) => metrics.recordRegistryRetry(event));
  const prefix = config.redis.keyPrefix;

  const workers: Worker[] = [];
  for (const queue of options.queues) {
    const factory = WORKER_FACTORIES[queue];
    if (!factory) throw new Error(`unknown queue "${queue}"; accepted: ${WORKER_QUEUES.join(', ')}`);
    const worker = factory({
      config,
      redis: connection,
      clients,
      connection,
      prefix,
      concurrency: options.concurrency,
      logger,
      metrics,
      ...(options.lockDurationMs ? { lockDurationMs: options.lockDurationMs } : {}),
    });
    worker.on('error', (error) => logger.error({ queue, error: error.message }, 'worker error'));
    workers.push(worker);
  }

  const metricsServer =
    options.metricsPort > 0
      ? await startHealthServer({ metrics, port: options.metricsPort, host: config.worker.metricsHost, ready: async () => (await connection.ping()) === 'PONG' })
      : undefined;

  // Every known queue, not only the ones this process serves: whichever process holds the lease reports the whole fleet.
  const sampler = startQueueSampler({ connection, prefix, queues: WORKER_QUEUES, metrics });
  logger.info({ queues: options.queues, concurrency: options.concurrency, metricsPort: options.metricsPort }, 'workers started');

  let stopping: Promise<void> | undefined;
  const stop = (graceMs: number) => {
    stopping ??= (async () => {
      logger.info({ graceMs }, 'stopping: no new jobs; waiting for active jobs');
      const closing = Promise.all(workers.map((worker) => worker.close()));
      const timedOut = await Promise.race([closing.then(() => false), new Promise<boolean>((resolve) => setTimeout(() => resolve(true), graceMs).unref())]);
      // Each remaining step is bounded, because with Redis unreachable a command can wait forever.
      const bounded = (work: Promise<unknown>) => Promise.race([work.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
      if (timedOut) {
        // Jobs still active go back to the queue through stalled-job recovery on another worker: their
        // transfers are cut below, and their job locks expire.
        logger.warn({ graceMs }, 'grace period over; handing active jobs back');
        await bounded(Promise.all(workers.map((worker) => worker.close(true))));
      }
      await bounded(sampler.stop());
      metricsServer?.close();
      gates?.close();
      // After the grace period, requests still running are cut instead of awaited.
      await bounded(timedOut ? transport.destroy() : transport.close());
      connection.disconnect();
      logger.info('stopped');
    })();
    return stopping;
  };
  return { workers, metricsServer, stop };
}
