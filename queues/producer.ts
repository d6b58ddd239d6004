import { Job, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { MirrorfleetError, TimeoutErrorLike, decodeJobFailure } from './job-errors.ts';
import { MIRROR_JOB_OPTIONS, MIRROR_QUEUE, mirrorDedupeId, normaliseMirrorRequest, parseMirrorRequest, type MirrorRequestInput, type MirrorResult } from './mirror.ts';

/**
 * The typed client other Node services import to enqueue mirror jobs and wait for them.
 *
 *   const fleet = new MirrorfleetProducer({ connection: new Redis(url, { maxRetriesPerRequest: null }) });
 *   const result = await fleet.mirrorAndWait({ v: 1, source: 'nginx:1.27', registry: 'local', cluster: 'prod', service: 'web' }, { timeoutMs: 600_000 });
 *   deploy(result.pinned);
 */

export interface ProducerOptions {
  /** An ioredis connection; BullMQ needs `maxRetriesPerRequest: null` on it. */
  connection: Redis;
  /** Key prefix shared with the workers. Default `mirrorfleet`. */
  prefix?: string;
}

export class MirrorfleetProducer {
  private readonly queue: Queue;
  private readonly connection: Redis;
  private readonly prefix: string;
  private events: QueueEvents | undefined;

  constructor(options: ProducerOptions) {
    this.connection = options.connection;
    this.prefix = options.prefix ?? 'mirrorfleet';
    this.queue = new Queue(MIRROR_QUEUE, { connection: options.connection, prefix: this.prefix, defaultJobOptions: MIRROR_JOB_OPTIONS });
  }

  /**
   * Enqueues a mirror job and returns it. While an identical request is waiting or running, its job is
   * returned instead of a new one. Throws InvalidInputError naming each invalid field.
   */
  async mirror(request: MirrorRequestInput): Promise<Job> {
    const normal = normaliseMirrorRequest(parseMirrorRequest(request));
    const dedupeId = mirrorDedupeId(normal);
    const job = await this.queue.add(MIRROR_QUEUE, normal, { deduplication: { id: dedupeId } });
    // For a duplicate, BullMQ returns a job object carrying the id of the job already waiting or running.
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
   * (a MirrorfleetError with the worker's code) or a TIMEOUT error after `timeoutMs`.
   */
  async mirrorAndWait(request: MirrorRequestInput, options: { timeoutMs: number }): Promise<MirrorResult> {
    const job = await this.mirror(request);
    return this.wait(job.id!, options);
  }

  /** Waits for the job `jobId` to finish. */
  async wait(jobId: string, options: { timeoutMs: number }): Promise<MirrorResult> {
    const events = await this.queueEvents();
    const job = await Job.fromId(this.queue, jobId);
    if (!job) throw new MirrorfleetError('INVALID_INPUT', `job ${jobId} does not exist in queue ${MIRROR_QUEUE} (finished jobs are kept for a day)`);
    try {
      const result = (await job.waitUntilFinished(events, options.timeoutMs)) as MirrorResult;
      return result;
    } catch (error) {
      throw toJobError(jobId, error, options.timeoutMs);
    }
  }

  /** The underlying BullMQ queue, for inspection. */
  get bullQueue(): Queue {
    return this.queue;
  }

  async close(): Promise<void> {
    await this.events?.close();
    await this.queue.close();
  }

  private async queueEvents(): Promise<QueueEvents> {
    if (!this.events) {
      this.events = new QueueEvents(MIRROR_QUEUE, { connection: this.connection.duplicate(), prefix: this.prefix });
      await this.events.waitUntilReady();
    }
    return this.events;
  }
}

function toJobError(jobId: string, error: unknown, timeoutMs: number): MirrorfleetError {
  const message = error instanceof Error ? error.message : String(error);
  if (TimeoutErrorLike.test(message)) {
    return new MirrorfleetError('TIMEOUT', `job ${jobId} did not finish within ${Math.round(timeoutMs / 1000)} s; it keeps running, wait for it again or look at it with: mirrorfleet job ${jobId}`, {
      retryable: true,
    });
  }
  return decodeJobFailure(message);
}
