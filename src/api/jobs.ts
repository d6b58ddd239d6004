import { Job, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { decodeJobFailure } from '../../queues/job-errors.ts';
import { redact } from '../log/redact.ts';
import type { QueueRoute, QueueRouteContext } from './queue-routes.ts';
import { FINISHED_STATES, JOB_STATES, type EnqueuedJob, type JobState, type JobView } from './schemas.ts';

/**
 * The API's handle on the queues of its route table: one BullMQ Queue per route for adding and reading
 * jobs, and one QueueEvents per route whose `completed` and `failed` events wake long-poll waiters.
 */

export interface JobQueuesOptions {
  /** Connection for queue commands. */
  connection: Redis;
  /** Connections for the QueueEvents streams, one per queue; they block, so they cannot be shared. */
  createEventsConnection: () => Redis;
  prefix: string;
  routes: readonly QueueRoute[];
  /** Passed to each route's `toJob`. */
  context: QueueRouteContext;
  /**
   * Receives the errors of the queues and event streams. Without a listener BullMQ prints each one,
   * a stack trace per reconnect attempt while Redis is down.
   */
  onError: (error: Error) => void;
}

type Waiter = () => void;

export class JobQueues {
  private readonly queues = new Map<string, Queue>();
  private readonly events = new Map<string, QueueEvents>();
  /** Long-poll waiters by `queue:jobId`. */
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly context: QueueRouteContext;

  constructor(options: JobQueuesOptions) {
    this.context = options.context;
    for (const route of options.routes) {
      const queue = new Queue(route.queue, { connection: options.connection, prefix: options.prefix, defaultJobOptions: route.jobOptions });
      queue.on('error', options.onError);
      this.queues.set(route.queue, queue);

      const events = new QueueEvents(route.queue, { connection: options.createEventsConnection(), prefix: options.prefix });
      events.on('error', options.onError);
      const wake = ({ jobId }: { jobId: string }) => this.wake(route.queue, jobId);
      events.on('completed', wake);
      events.on('failed', wake);
      this.events.set(route.queue, events);
    }
  }

  /** Resolves once every event stream is read, so no finish event after this point is missed. */
  async ready(): Promise<void> {
    await Promise.all([...this.events.values()].map((events) => events.waitUntilReady()));
  }

  /** The BullMQ queues, for the dashboard. */
  get bullQueues(): Queue[] {
    return [...this.queues.values()];
  }

  /**
   * Adds the job that a validated request becomes. While a job with the same deduplication id waits or
   * runs, BullMQ returns that job instead, and `coalesced` is true.
   */
  async enqueue(route: QueueRoute, request: unknown): Promise<EnqueuedJob> {
    const queue = this.queueOf(route);
    const job = route.toJob(request, this.context);

    // NOTE: two identical requests that arrive together may both read "no job yet"; the second then
    // joins the first's job but is reported with coalesced false. The job itself is still shared.
    const existing = job.deduplicationId === undefined ? null : await queue.getDeduplicationJobId(job.deduplicationId);
    const added = await queue.add(job.name, job.data, job.deduplicationId === undefined ? {} : { deduplication: { id: job.deduplicationId } });
    const jobId = added.id!;
    const state = await queue.getJobState(jobId);
    return { jobId, queue: route.queue, state: toJobState(state), coalesced: existing !== null && existing === jobId };
  }

  /**
   * Reads the job `jobId` of `route`'s queue into the API's job view, or returns undefined when there is
   * none (never enqueued, or removed after it finished). The state is read before the job, so a result
   * or error that the view lacks cannot belong to the state it shows.
   */
  async read(route: QueueRoute, jobId: string): Promise<JobView | undefined> {
    const queue = this.queueOf(route);
    const state = toJobState(await queue.getJobState(jobId));
    const job = await Job.fromId(queue, jobId);
    if (job === undefined || job === null) return undefined;

    const view: JobView = {
      jobId: job.id!,
      queue: route.queue,
      state,
      finished: FINISHED_STATES.includes(state),
      attemptsMade: job.attemptsMade,
      attempts: job.opts.attempts ?? 1,
      progress: job.progress as JobView['progress'],
      request: job.data,
      createdAt: new Date(job.timestamp).toISOString(),
    };
    if (state === 'completed') view.result = job.returnvalue;
    if (job.failedReason) {
      const failure = decodeJobFailure(job.failedReason);
      view.error = { code: failure.code, message: redact(failure.message) };
    }
    if (job.processedOn) view.processedAt = new Date(job.processedOn).toISOString();
    if (job.finishedOn) view.finishedAt = new Date(job.finishedOn).toISOString();
    return view;
  }

  /**
   * Waits until the job finishes, `timeoutMs` passes, or `signal` aborts. Returns the job's view then, or
   * undefined when the job does not exist.
   */
  async waitForJob(route: QueueRoute, jobId: string, timeoutMs: number, signal: AbortSignal): Promise<JobView | undefined> {
    const queue = this.queueOf(route);
    const key = `${route.queue}:${jobId}`;
    const deadline = Date.now() + timeoutMs;
    let wake: Waiter = () => undefined;
    let woken = new Promise<void>((resolve) => (wake = resolve));
    const waiter: Waiter = () => wake();
    this.addWaiter(key, waiter);
    try {
      // The waiter is registered before each read, so a finish between the read and the wait still wakes it.
      for (;;) {
        const state = await queue.getJobState(jobId);
        if (state === 'unknown') return undefined;
        const remaining = deadline - Date.now();
        if (remaining <= 0 || signal.aborted || FINISHED_STATES.includes(toJobState(state))) return await this.read(route, jobId);

        await waitForAny(woken, remaining, signal);
        woken = new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      this.removeWaiter(key, waiter);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.events.values()].map((events) => events.close()));
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
  }

  private queueOf(route: QueueRoute): Queue {
    const queue = this.queues.get(route.queue);
    if (queue === undefined) throw new Error(`queue ${route.queue} is not in the API's route table`);
    return queue;
  }

  private wake(queue: string, jobId: string): void {
    for (const waiter of this.waiters.get(`${queue}:${jobId}`) ?? []) waiter();
  }

  private addWaiter(key: string, waiter: Waiter): void {
    const set = this.waiters.get(key) ?? new Set<Waiter>();
    set.add(waiter);
    this.waiters.set(key, set);
  }

  private removeWaiter(key: string, waiter: Waiter): void {
    const set = this.waiters.get(key);
    set?.delete(waiter);
    if (set?.size === 0) this.waiters.delete(key);
  }
}

function toJobState(state: string): JobState {
  return (JOB_STATES as readonly string[]).includes(state) ? (state as JobState) : 'unknown';
}

/** Resolves when `event` resolves, `timeoutMs` passes or `signal` aborts, whichever comes first. */
async function waitForAny(event: Promise<void>, timeoutMs: number, signal: AbortSignal): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    await Promise.race([
      event,
      new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      new Promise<void>((resolve) => {
        onAbort = resolve;
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}
