import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Metrics } from './metrics.ts';

/**
 * Samples queue depth and the age of the oldest waiting job into `mirrorfleet_queue_jobs` and
 * `mirrorfleet_queue_oldest_waiting_job_age_seconds`. Only the process that holds the sampler lease in Redis
 * reports them. The others clear both gauges, so that summing over the fleet does not multiply the backlog.
 * Worker processes and API processes both run a sampler over the queues they serve, all with the lease key
 * `<prefix>:metrics-sampler`; the holder keeps it while it lives, so one process at a time reports.
 */

export const QUEUE_SAMPLE_INTERVAL_MS = 15_000;

/** Job states whose counts are sampled. */
export const SAMPLED_STATES = ['waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized'] as const;

/**
 * Takes the lease or renews it when this process holds it.
 * KEYS[1]: lease key. ARGV[1]: this process's token. ARGV[2]: lease time in milliseconds.
 * Returns 1 when this process holds the lease afterwards, 0 when another process does.
 */
const ACQUIRE_OR_RENEW_LEASE = `
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`;

/**
 * Deletes the lease when this process holds it, so another process can take over at once.
 * KEYS[1]: lease key. ARGV[1]: this process's token. Returns 1 when deleted, 0 otherwise.
 */
const RELEASE_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

export interface QueueSamplerOptions {
  /** Connection for lease commands and queue reads. */
  connection: Redis;
  /** Key prefix of the queues. */
  prefix: string;
  queues: readonly string[];
  metrics: Metrics;
  /** Time between samples; the lease lasts twice as long. Default 15 s. */
  intervalMs?: number;
  /**
   * Called with each failed sample and each error event of the queue handles (such as a lost
   * connection); sampling goes on at the next interval.
   */
  onError?: (error: unknown) => void;
}

export interface QueueSampler {
  /** Samples now; returns true when this process held the lease and set the gauges. */
  sample(): Promise<boolean>;
  /** Stops sampling, releases the lease if held, and closes the queue handles. Later calls return the same promise. */
  stop(): Promise<void>;
}

/** Starts sampling at once and then every `intervalMs`. */
export function startQueueSampler(options: QueueSamplerOptions): QueueSampler {
  const { connection, prefix, metrics } = options;
  const intervalMs = options.intervalMs ?? QUEUE_SAMPLE_INTERVAL_MS;
  const leaseKey = `${prefix}:metrics-sampler`;
  const token = `${process.pid}-${Math.random().toString(36).slice(2)}`;
  const queues = options.queues.map((name) => new Queue(name, { connection, prefix }));

  const sample = async (): Promise<boolean> => {
    const held = (await connection.eval(ACQUIRE_OR_RENEW_LEASE, 1, leaseKey, token, String(intervalMs * 2))) === 1;
    if (!held) {
      metrics.queueJobs.reset();
      metrics.queueOldestWaitingAge.reset();
      return false;
    }

    const now = Date.now();
    for (const queue of queues) {
      const counts = await queue.getJobCounts(...SAMPLED_STATES);
      for (const [state, count] of Object.entries(counts)) metrics.queueJobs.set({ queue: queue.name, state }, count);

      // With ascending order the first waiting job is the one enqueued first, the next a worker takes.
      const [oldest] = await queue.getJobs(['waiting'], 0, 0, true);
      const ageSeconds = oldest ? Math.max(0, (now - oldest.timestamp) / 1000) : 0;
      metrics.queueOldestWaitingAge.set({ queue: queue.name }, ageSeconds);
    }
    return true;
  };

  const report = (error: unknown) => options.onError?.(error);
  // Without a listener, BullMQ writes every error event of a queue to stderr.
  for (const queue of queues) queue.on('error', report);
  void sample().catch(report);
  const timer = setInterval(() => void sample().catch(report), intervalMs);
  timer.unref();

  let stopping: Promise<void> | undefined;
  return {
    sample,
    stop: () => {
      stopping ??= (async () => {
        clearInterval(timer);
        await connection.eval(RELEASE_LEASE, 1, leaseKey, token).catch(report);
        await Promise.all(queues.map((queue) => queue.close()));
      })();
      return stopping;
    },
  };
}
