import { Job, Queue } from 'bullmq';
import { createRedisConnection } from '../../redis/connection.ts';
import { loadConfig } from '../../config/config.ts';
import { decodeJobFailure } from '../../../queues/job-errors.ts';
import { BUILD_QUEUE } from '../../../queues/build.ts';
import { CLEANUP_QUEUE } from '../../../queues/cleanup.ts';
import { MIRROR_QUEUE } from '../../../queues/mirror.ts';
import { UsageError, ensureRedisReachable, parse } from '../common.ts';

const QUEUES = [MIRROR_QUEUE, BUILD_QUEUE, CLEANUP_QUEUE];

/** `mirrorfleet job ID [--queue NAME]`: shows a job's state, progress, result or error, looking in every queue unless told which. */
export async function showJob(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: 'boolean' }, queue: { type: 'string' } }, true);
  if (positionals.length !== 1) throw new UsageError('job takes exactly one job ID');
  const requested = values.queue as string | undefined;
  if (requested !== undefined && !QUEUES.includes(requested)) throw new UsageError(`unknown --queue "${requested}"; accepted: ${QUEUES.join(', ')}`);
  const jobId = positionals[0]!;

  const config = loadConfig();
  await ensureRedisReachable(config);
  const connection = createRedisConnection(config.redis, { maxRetriesPerRequest: null });
  const queues = (requested ? [requested] : QUEUES).map((name) => new Queue(name, { connection, prefix: config.redis.keyPrefix }));
  try {
    for (const queue of queues) {
      const job = await Job.fromId(queue, jobId);
      if (!job) continue;
      const state = await job.getState();
      const view: Record<string, unknown> = { jobId: job.id, queue: queue.name, state, request: job.data, attemptsMade: job.attemptsMade, progress: job.progress };
      if (state === 'completed') view.result = job.returnvalue;
      if (job.failedReason) view.error = decodeJobFailure(job.failedReason).toJSON();
      process.stdout.write(values.json ? `${JSON.stringify(view)}\n` : `${JSON.stringify(view, null, 2)}\n`);
      return state === 'failed' ? 1 : 0;
    }
    throw new UsageError(`job ${jobId} does not exist in queue ${queues.map((queue) => queue.name).join(', ')} (finished jobs are kept for a limited time)`);
  } finally {
    await Promise.all(queues.map((queue) => queue.close()));
    connection.disconnect();
  }
}
