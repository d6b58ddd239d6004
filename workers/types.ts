import type { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../src/config/config.ts';
import type { LockOptions } from '../src/dedupe/lock.ts';
import type { Logger } from '../src/log/logger.ts';
import type { Metrics } from '../src/metrics/metrics.ts';
import type { RegistryClients } from '../src/mirror/clients.ts';

/** What a worker process hands to the factory of each queue's worker. */
export interface WorkerDependencies {
  config: Config;
  /** Connection for the job's own Redis commands (locks, records). */
  redis: Redis;
  /** Connection for BullMQ; it needs `maxRetriesPerRequest: null`. */
  connection: Redis;
  /** Key prefix of queues and records. */
  prefix: string;
  /** Registry clients shared by every job of the process. */
  clients: RegistryClients;
  concurrency: number;
  logger: Logger;
  metrics: Metrics;
  /** Fleet-wide lock settings of the jobs (blob and tag locks); the defaults when absent. */
  locks?: LockOptions;
  /** How long a job's lock lasts without renewal; a killed worker's job is taken up again after it. */
  lockDurationMs?: number;
  /**
   * Returns true for a job that the stopping process moved back to the wait list. Its attempt then
   * ends without a failure: the shell logs nothing for it and hands BullMQ a WaitingError.
   */
  isHandedBack?: (job: Job) => boolean;
  /** Receives the error events of the queue handles a worker shell creates, such as a lost connection. */
  onQueueError?: (queue: string, error: Error) => void;
}
