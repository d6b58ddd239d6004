import { Job } from 'bullmq';
import { loadConfig } from '../../config/config.ts';
import { decodeJobFailure } from '../../../queues/job-errors.ts';
import { MIRROR_QUEUE } from '../../../queues/mirror.ts';
import { UsageError, parse, producerFor } from '../common.ts';

/** `mirrorfleet job ID`: shows a job's state, progress, result or error. */
export async function showJob(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: 'boolean' } }, true);
  if (positionals.length !== 1) throw new UsageError('job takes exactly one job ID');
  const config = loadConfig();
  const producer = producerFor(config);
  try {
    const job = await Job.fromId(producer.bullQueue, positionals[0]!);
    if (!job) throw new UsageError(`job ${positionals[0]} does not exist in queue ${MIRROR_QUEUE} (finished jobs are kept for a day)`);
    const state = await job.getState();
    const view: Record<string, unknown> = { jobId: job.id, state, request: job.data, attemptsMade: job.attemptsMade, progress: job.progress };
    if (state === 'completed') view.result = job.returnvalue;
    if (job.failedReason) view.error = decodeJobFailure(job.failedReason).toJSON();
    process.stdout.write(values.json ? `${JSON.stringify(view)}\n` : `${JSON.stringify(view, null, 2)}\n`);
    return state === 'failed' ? 1 : 0;
  } finally {
    await producer.close();
  }
}

