import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { CLEANUP_JOB_OPTIONS, CLEANUP_QUEUE, type SweepRequest } from '../../queues/cleanup.ts';

/**
 * When sweeps run. Two ways, both on the `cleanup` queue:
 * - a delayed sweep of one mirror registry at the time an image becomes deletable, enqueued by the job
 *   that left the image unused (a mirror that replaced a service's previous image, a release, a reconcile)
 *   and by every sweep for the next image that waits for its retention time;
 * - optionally, a repeatable sweep of every mirror registry (a BullMQ job scheduler), as a backstop.
 */

export interface SweepScheduler {
  /** Makes sure a sweep of the mirror registry `registry` (its name) runs at `dueAt` (ms) or soon after. */
  scheduleSweep(registry: string, dueAt: number): Promise<void>;
}

/** Id of the repeatable sweep's job scheduler. */
export const SWEEP_SCHEDULER_ID = 'sweep-every-registry';

/**
 * Enqueues delayed sweep jobs. Sweeps due close together share one job, because BullMQ adds nothing for
 * an id it already has. The job id names the registry and the due time, rounded up to a second within a
 * minute from now and to a minute after that.
 */
export class QueueSweepScheduler implements SweepScheduler {
  private readonly queue: Queue;

  constructor(queue: Queue) {
    this.queue = queue;
  }

  async scheduleSweep(registry: string, dueAt: number): Promise<void> {
    const now = Date.now();
    const granularity = dueAt - now < 60_000 ? 1000 : 60_000;
    const bucket = Math.ceil(dueAt / granularity) * granularity;
    const data: SweepRequest = { v: 1, kind: 'sweep', registry, dryRun: false };
    await this.queue.add('sweep', data, {
      ...CLEANUP_JOB_OPTIONS,
      jobId: `sweep-${registry}-at-${bucket}`,
      delay: Math.max(0, bucket - now),
    });
  }
}

// One scheduler per connection: a mirror job should not build a queue client of its own every time.
const schedulers = new WeakMap<Redis, QueueSweepScheduler>();

/** Returns the scheduler that enqueues on `connection` under `prefix`, created once per connection. */
export function sweepSchedulerFor(connection: Redis, prefix: string): SweepScheduler {
  let scheduler = schedulers.get(connection);
  if (!scheduler) {
    const queue = new Queue(CLEANUP_QUEUE, { connection, prefix });
    // Without a listener BullMQ prints every connection error of the queue as a stack trace. The owner of
    // `connection` reports those, and a failed scheduleSweep call rejects with its own error.
    queue.on('error', () => undefined);
    scheduler = new QueueSweepScheduler(queue);
    schedulers.set(connection, scheduler);
  }
  return scheduler;
}

/**
 * Creates, updates or removes the repeatable sweep of every mirror registry. `intervalSeconds` 0 removes
 * it, so turning the setting off takes effect when a worker starts. Every worker process runs this at
 * start, so all of them should carry the same setting.
 */
export async function syncSweepSchedule(queue: Queue, intervalSeconds: number): Promise<'scheduled' | 'off'> {
  if (intervalSeconds <= 0) {
    await queue.removeJobScheduler(SWEEP_SCHEDULER_ID);
    return 'off';
  }
  const data: SweepRequest = { v: 1, kind: 'sweep', dryRun: false };
  await queue.upsertJobScheduler(SWEEP_SCHEDULER_ID, { every: intervalSeconds * 1000 }, { name: 'sweep', data, opts: { attempts: 1 } });
  return 'scheduled';
}
