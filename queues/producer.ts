import { Job, Queue, QueueEvents, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { MirrorfleetError, TimeoutErrorLike, decodeJobFailure } from './job-errors.ts';
import { MIRROR_JOB_OPTIONS, MIRROR_QUEUE, mirrorDedupeId, normaliseMirrorRequest, parseMirrorRequest, type MirrorRequestInput, type MirrorResult } from './mirror.ts';
import { BUILD_JOB_OPTIONS, BUILD_QUEUE, buildDedupeId, encryptBuildRequest, normaliseBuildRequest, parseBuildPayload, parseBuildRequest, type BuildRequestInput, type BuildResult } from './build.ts';
import { parseSecretKey, type SecretKey } from '../src/build/secret-key.ts';
import { CLEANUP_JOB_OPTIONS, CLEANUP_QUEUE, cleanupDedupeId, parseCleanupRequest, type CleanupRequestInput, type CleanupResult } from './cleanup.ts';

/**
 * The typed client other Node services import to enqueue mirror and build jobs and wait for them.
 *
 *   const connection = new Redis(url, { maxRetriesPerRequest: null });
 *   const fleet = new MirrorfleetProducer({ connection });
 *   const result = await fleet.mirrorAndWait({ v: 1, source: 'nginx:1.27', registry: 'local', cluster: 'prod', service: 'web' }, { timeoutMs: 600_000 });
 *   deploy(result.pinned);
 *   await fleet.close();
 *   connection.disconnect();
 *
 * The caller owns the connection it passes: `close()` closes what the producer opened (its queues, its
 * queue events and their duplicated connections) and leaves that connection open, so it can be shared
 * with other clients. A process that passes one and only calls `close()` keeps running until it closes
 * the connection too.
 */

export interface ProducerOptions {
  /**
   * An ioredis connection; BullMQ needs `maxRetriesPerRequest: null` on it. It stays open after `close()`:
   * the caller closes it.
   */
  connection: Redis;
  /** Key prefix shared with the workers. Default `mirrorfleet`. */
  prefix?: string;
  /**
   * The workers' `MIRRORFLEET_SECRET_KEY` (base64 of 32 bytes). Build variable values are encrypted
   * with it before they reach Redis; needed only for build requests with variables.
   */
  secretKey?: string;
}

const PRODUCER_OPTIONS = ['connection', 'prefix', 'secretKey'] as const;

/**
 * Rejects option names the producer does not know, so that a mistyped one (such as `keyPrefix` for
 * `prefix`) fails at once instead of sending jobs under another key prefix than the workers read.
 */
function rejectUnknownOptions(options: ProducerOptions): void {
  const unknown = Object.keys(options).filter((name) => !(PRODUCER_OPTIONS as readonly string[]).includes(name));
  if (unknown.length === 0) return;
  const hint = unknown.includes('keyPrefix') ? ' (the key prefix is `prefix`)' : '';
  throw new MirrorfleetError(
    'INVALID_INPUT',
    `MirrorfleetProducer options: unknown option ${unknown.map((name) => `"${name}"`).join(', ')}${hint}; accepted: ${PRODUCER_OPTIONS.join(', ')}`,
  );
}

/**
 * Lifts Node's limit of 10 listeners per event on a queue or queue events object. Each wait for a job
 * adds a listener until the job finishes, and a producer that waits for many jobs at once is the
 * intended use, so the warning that the limit prints would only be noise.
 */
function forManyWaits<T extends Queue | QueueEvents>(emitter: T): T {
  emitter.setMaxListeners(0);
  return emitter;
}

export class MirrorfleetProducer {
  private readonly queue: Queue;
  private readonly connection: Redis;
  private readonly prefix: string;
  private events: QueueEvents | undefined;
  private readonly ownConnections: Redis[] = [];
  private readonly secretKey: SecretKey | undefined;
  private buildQueue: Queue | undefined;
  private buildEvents: QueueEvents | undefined;
  private cleanupQueue: Queue | undefined;
  private cleanupEvents: QueueEvents | undefined;

  constructor(options: ProducerOptions) {
    rejectUnknownOptions(options);
    this.secretKey = options.secretKey === undefined ? undefined : parseSecretKey(options.secretKey);
    this.connection = options.connection;
    this.prefix = options.prefix ?? 'mirrorfleet';
    this.queue = forManyWaits(new Queue(MIRROR_QUEUE, { connection: options.connection, prefix: this.prefix, defaultJobOptions: MIRROR_JOB_OPTIONS }));
  }

  /**
   * Enqueues a mirror job and returns it. While an identical request is waiting, its job is returned
   * instead of a new one. A job that has started takes no more requests, because it may have resolved
   * the source tag already. Throws InvalidInputError naming each invalid field.
   */
  async mirror(request: MirrorRequestInput): Promise<Job> {
    const normal = normaliseMirrorRequest(parseMirrorRequest(request));
    const dedupeId = mirrorDedupeId(normal);
    const job = await this.queue.add(MIRROR_QUEUE, normal, { deduplication: { id: dedupeId } });
    // For a duplicate, BullMQ returns a job object carrying the id of the job already waiting.
    return job;
  }

  /** Enqueues many requests in one round trip (no coalescing between them beyond BullMQ's deduplication). */
  async mirrorBulk(requests: MirrorRequestInput[]): Promise<Job[]> {
    const jobs = requests.map((request) => {
      const normal = normaliseMirrorRequest(parseMirrorRequest(request));
      return { name: MIRROR_QUEUE, data: normal, opts: { deduplication: { id: mirrorDedupeId(normal) } } };
    });
    return this.queue.addBulk(jobs);
  }

  /**
   * Enqueues a mirror job and resolves with its result, or rejects with the job's error
   * (a MirrorfleetError with the worker's code) or a WAIT_TIMEOUT error after `timeoutMs`, when the job
   * keeps going. A job that ran past its own time limit rejects with TIMEOUT instead.
   */
  async mirrorAndWait(request: MirrorRequestInput, options: { timeoutMs: number }): Promise<MirrorResult> {
    const job = await this.mirror(request);
    return this.wait(job.id!, options);
  }

  /**
   * Waits for the job `jobId` to finish, as `mirrorAndWait` does. Throws INVALID_INPUT when the job does
   * not exist (never enqueued, or finished and removed after the retention `describeRetention` gives).
   */
  async wait(jobId: string, options: { timeoutMs: number }): Promise<MirrorResult> {
    const events = await this.queueEvents();
    const job = await Job.fromId(this.queue, jobId);
    if (!job) throw missingJobError(jobId, MIRROR_QUEUE);
    try {
      const result = await untilFinished<MirrorResult>(this.queue, job, events, options.timeoutMs);
      return result;
    } catch (error) {
      throw toJobError(jobId, error, options.timeoutMs);
    }
  }

  /**
   * Enqueues a build job and returns it, with every variable value encrypted. While an identical request
   * is waiting or running, its job is returned instead of a new one. Throws InvalidInputError naming
   * each invalid field, or when the request has variables and the producer has no secret key.
   */
  async build(request: BuildRequestInput): Promise<Job> {
    const normal = normaliseBuildRequest(parseBuildRequest(request));
    const payload = parseBuildPayload(encryptBuildRequest(normal, this.secretKey));
    return this.buildJobs().add(BUILD_QUEUE, payload, { deduplication: { id: buildDedupeId(normal, this.secretKey) } });
  }

  /** Enqueues a build job and resolves with its result, or rejects as `mirrorAndWait` does. */
  async buildAndWait(request: BuildRequestInput, options: { timeoutMs: number }): Promise<BuildResult> {
    const job = await this.build(request);
    return this.waitForBuild(job.id!, options);
  }

  /** Waits for the build job `jobId` to finish. */
  async waitForBuild(jobId: string, options: { timeoutMs: number }): Promise<BuildResult> {
    const queue = this.buildJobs();
    this.buildEvents ??= forManyWaits(new QueueEvents(BUILD_QUEUE, { connection: this.dedicatedConnection(), prefix: this.prefix }));
    await this.buildEvents.waitUntilReady();
    const job = await Job.fromId(queue, jobId);
    if (!job) throw missingJobError(jobId, BUILD_QUEUE);
    try {
      return await untilFinished<BuildResult>(queue, job, this.buildEvents, options.timeoutMs);
    } catch (error) {
      throw toJobError(jobId, error, options.timeoutMs);
    }
  }

  /** The BullMQ queue of build jobs, for inspection. */
  get bullBuildQueue(): Queue {
    return this.buildJobs();
  }

  /**
   * Enqueues a cleanup job (`release`, `sweep` or `reconcile`) and returns it. While an identical request
   * is waiting or running, its job is returned instead of a new one. Throws InvalidInputError naming each
   * invalid field.
   */
  async cleanup(request: CleanupRequestInput): Promise<Job> {
    const parsed = parseCleanupRequest(request);
    return this.cleanupJobs().add(parsed.kind, parsed, { deduplication: { id: cleanupDedupeId(parsed) } });
  }

  /** Enqueues a cleanup job and resolves with its result, or rejects as `mirrorAndWait` does. */
  async cleanupAndWait(request: CleanupRequestInput, options: { timeoutMs: number }): Promise<CleanupResult> {
    const job = await this.cleanup(request);
    return this.waitForCleanup(job.id!, options);
  }

  /** Waits for the cleanup job `jobId` to finish. */
  async waitForCleanup(jobId: string, options: { timeoutMs: number }): Promise<CleanupResult> {
    const queue = this.cleanupJobs();
    this.cleanupEvents ??= forManyWaits(new QueueEvents(CLEANUP_QUEUE, { connection: this.dedicatedConnection(), prefix: this.prefix }));
    await this.cleanupEvents.waitUntilReady();
    const job = await Job.fromId(queue, jobId);
    if (!job) throw missingJobError(jobId, CLEANUP_QUEUE);
    try {
      return await untilFinished<CleanupResult>(queue, job, this.cleanupEvents, options.timeoutMs);
    } catch (error) {
      throw toJobError(jobId, error, options.timeoutMs);
    }
  }

  /** The BullMQ queue of cleanup jobs, for inspection. */
  get bullCleanupQueue(): Queue {
    return this.cleanupJobs();
  }

  private cleanupJobs(): Queue {
    this.cleanupQueue ??= forManyWaits(new Queue(CLEANUP_QUEUE, { connection: this.connection, prefix: this.prefix, defaultJobOptions: CLEANUP_JOB_OPTIONS }));
    return this.cleanupQueue;
  }

  private buildJobs(): Queue {
    this.buildQueue ??= forManyWaits(new Queue(BUILD_QUEUE, { connection: this.connection, prefix: this.prefix, defaultJobOptions: BUILD_JOB_OPTIONS }));
    return this.buildQueue;
  }

  /** The underlying BullMQ queue, for inspection. */
  get bullQueue(): Queue {
    return this.queue;
  }

  /** A connection of its own for a QueueEvents, which blocks on reads; closed by `close`. */
  private dedicatedConnection(): Redis {
    const connection = this.connection.duplicate();
    this.ownConnections.push(connection);
    return connection;
  }

  /**
   * Closes the queues and queue events this producer opened, and the connections it duplicated for them.
   * The connection passed in `options.connection` stays open, because BullMQ and this class never close a
   * connection they were given. The caller closes it with `connection.disconnect()` or `quit()`.
   */
  async close(): Promise<void> {
    await this.events?.close();
    await this.queue.close();
    await this.buildEvents?.close();
    await this.buildQueue?.close();
    await this.cleanupEvents?.close();
    await this.cleanupQueue?.close();
    // BullMQ leaves a connection it was given open, so the ones made here are closed here.
    for (const connection of this.ownConnections) connection.disconnect();
  }

  private async queueEvents(): Promise<QueueEvents> {
    if (!this.events) {
      this.events = forManyWaits(new QueueEvents(MIRROR_QUEUE, { connection: this.dedicatedConnection(), prefix: this.prefix }));
      await this.events.waitUntilReady();
    }
    return this.events;
  }
}

/**
 * Waits for `job` to finish through queue events, and also checks its state every second. QueueEvents
 * reads only events that arrive after its first read, so a job that finishes while it is starting up would
 * otherwise be waited for until the timeout.
 */
async function untilFinished<T>(queue: Queue, job: Job, events: QueueEvents, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const polled = new Promise<T>((resolve, reject) => {
    const check = async () => {
      const state = await job.getState();
      if (state === 'completed' || state === 'failed') {
        const finished = await Job.fromId(queue, job.id!);
        if (state === 'completed') resolve(finished?.returnvalue as T);
        else reject(new Error(finished?.failedReason ?? 'INTERNAL: the job failed without a reason'));
        return;
      }
      timer = setTimeout(() => void check().catch(reject), 1000);
    };
    timer = setTimeout(() => void check().catch(reject), 1000);
  });
  try {
    return await Promise.race([job.waitUntilFinished(events, timeoutMs) as Promise<T>, polled]);
  } finally {
    clearTimeout(timer);
  }
}

function toJobError(jobId: string, error: unknown, timeoutMs: number): MirrorfleetError {
  const message = error instanceof Error ? error.message : String(error);
  if (TimeoutErrorLike.test(message)) {
    return new MirrorfleetError('WAIT_TIMEOUT', `job ${jobId} did not finish within ${formatWaitTime(timeoutMs)}; it keeps running, wait for it again or look at it with: mirrorfleet job ${jobId}`, {
      retryable: true,
    });
  }
  return decodeJobFailure(message);
}

/** Formats a wait time: milliseconds below one second ("200 ms"), else seconds ("90 s", "1.5 s"). */
export function formatWaitTime(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const seconds = ms / 1000;
  return `${Number.isInteger(seconds) ? seconds : seconds.toFixed(1)} s`;
}

/** Default job options of each queue, which set how long BullMQ keeps finished jobs. */
const JOB_OPTIONS: Record<string, JobsOptions> = { [MIRROR_QUEUE]: MIRROR_JOB_OPTIONS, [BUILD_QUEUE]: BUILD_JOB_OPTIONS, [CLEANUP_QUEUE]: CLEANUP_JOB_OPTIONS };

/**
 * Describes how long finished jobs of `queue` stay in Redis, from its job options (`removeOnComplete`,
 * `removeOnFail`): "mirror jobs are kept 1 day after completing and 7 days after failing, at most 10000 of each".
 */
export function describeRetention(queue: string): string {
  const options = JOB_OPTIONS[queue];
  const completed = keptFor(options?.removeOnComplete);
  const failed = keptFor(options?.removeOnFail);
  const counts = [options?.removeOnComplete, options?.removeOnFail].map((keep) => (typeof keep === 'object' ? keep.count : undefined));
  const limit = counts[0] !== undefined && counts[0] === counts[1] ? `, at most ${counts[0]} of each` : '';
  return `${queue} jobs are kept ${completed} after completing and ${failed} after failing${limit}`;
}

function keptFor(keep: JobsOptions['removeOnComplete']): string {
  if (keep === true) return 'no time';
  // A count alone (a number, or an object without `age`) keeps jobs until newer ones push them out.
  if (typeof keep === 'object' && 'age' in keep && keep.age !== undefined) {
    const days = keep.age / 86_400;
    if (Number.isInteger(days)) return `${days} ${days === 1 ? 'day' : 'days'}`;
    return `${Math.round(keep.age / 3600)} h`;
  }
  return 'until removed by hand';
}

/** Creates the error for a job id that none of `queues` has: never enqueued, or finished and removed since. */
export function missingJobError(jobId: string, ...queues: string[]): MirrorfleetError {
  const where = queues.length === 1 ? `queue ${queues[0]}` : `queues ${queues.join(', ')}`;
  return new MirrorfleetError(
    'INVALID_INPUT',
    `job ${jobId} does not exist in ${where}: it was never enqueued, or it finished and was removed (${queues.map(describeRetention).join('; ')})`,
  );
}
