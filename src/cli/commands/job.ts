import { Job, Queue } from 'bullmq';
import { createRedisConnection } from '../../redis/connection.ts';
import { loadConfig } from '../../config/config.ts';
import { redact } from '../../log/redact.ts';
import { decodeJobFailure } from '../../../queues/job-errors.ts';
import { missingJobError } from '../../../queues/producer.ts';
import { BUILD_QUEUE, type BuildProgress, type BuildRequest, type BuildResult } from '../../../queues/build.ts';
import { CLEANUP_QUEUE, type CleanupRequest, type CleanupResult } from '../../../queues/cleanup.ts';
import { MIRROR_QUEUE, type MirrorProgress, type MirrorRequest, type MirrorResult } from '../../../queues/mirror.ts';
import { EXIT, UsageError, cutText, describeResult, ensureRedisReachable, formatBytes, parse } from '../common.ts';
import { describeBuild } from './build.ts';
import { describeCleanup } from './sweep.ts';

const QUEUES = [MIRROR_QUEUE, BUILD_QUEUE, CLEANUP_QUEUE];

/**
 * `mirrorfleet job ID [--queue NAME]`: shows a job's state, progress, result or error, looking in every
 * queue unless --queue names one. A job that no queue has is not a usage error: the command prints why it may be
 * gone and exits 1.
 */
export async function showJob(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: 'boolean' }, queue: { type: 'string' } }, true);
  if (positionals.length !== 1) throw new UsageError('job takes exactly one job ID');
  const requested = values.queue as string | undefined;
  if (requested !== undefined && !QUEUES.includes(requested)) throw new UsageError(`unknown --queue "${cutText(requested)}"; accepted: ${QUEUES.join(', ')}`);
  const jobId = positionals[0]!;

  const config = loadConfig();
  await ensureRedisReachable(config);
  const connection = createRedisConnection(config.redis, { maxRetriesPerRequest: null });
  const queues = (requested ? [requested] : QUEUES).map((name) => new Queue(name, { connection, prefix: config.redis.keyPrefix }));
  try {
    // Job ids are counted per queue, so without --queue one id can name jobs in several queues.
    const found = (await Promise.all(queues.map(async (queue) => ((await Job.fromId(queue, jobId)) ? queue.name : undefined)))).filter((name) => name !== undefined);
    if (found.length > 1) throw new UsageError(`job ${cutText(jobId)} exists in queues ${found.join(', ')}; pass --queue with one of them`);
    for (const queue of queues) {
      const job = await Job.fromId(queue, jobId);
      if (!job) continue;
      const state = await job.getState();
      if (values.json) {
        const view: Record<string, unknown> = { jobId: job.id, queue: queue.name, state, request: job.data, attemptsMade: job.attemptsMade, progress: job.progress };
        if (state === 'completed') view.result = job.returnvalue;
        if (job.failedReason) view.error = decodeJobFailure(job.failedReason).toJSON();
        process.stdout.write(`${JSON.stringify(view)}\n`);
      } else {
        process.stdout.write(formatJob(job, queue.name, state));
      }
      return state === 'failed' ? EXIT.failed : EXIT.success;
    }
    process.stderr.write(`mirrorfleet: ${missingJobError(cutText(jobId), ...queues.map((queue) => queue.name)).message}\n`);
    return EXIT.failed;
  } finally {
    await Promise.all(queues.map((queue) => queue.close()));
    connection.disconnect();
  }
}

/**
 * Formats a job for people: a heading with its state, queue and attempts, then what was requested, and
 * then the result of a completed job, the error of a failed one, or the progress of any other. A finished
 * job's progress is left out, because it is the last update before the end, such as "copying".
 */
export function formatJob(job: Job, queue: string, state: string): string {
  const attempts = job.opts.attempts ?? 1;
  const lines = [`job ${job.id}: ${state}`, `  queue     ${queue}`, `  attempts  ${job.attemptsMade} of ${attempts}`, `  request   ${describeRequest(queue, job.data)}`];
  if (state === 'completed') return `${lines.join('\n')}\n${indent(describeFinished(queue, job))}`;
  if (state === 'failed' || job.failedReason) {
    const error = decodeJobFailure(job.failedReason ?? 'INTERNAL: the job failed without a reason');
    // A job waiting for a retry also has the reason of its last failed attempt.
    lines.push(`  ${state === 'failed' ? 'error' : 'last error'}  ${error.code}: ${redact(error.message)}`);
  }
  const progress = describeProgress(job.progress);
  if (state !== 'failed' && progress !== undefined) lines.push(`  progress  ${progress}`);
  return `${lines.join('\n')}\n`;
}

function describeRequest(queue: string, data: unknown): string {
  if (queue === MIRROR_QUEUE) {
    const request = data as MirrorRequest;
    const user = request.mode === 'cluster' ? `cluster ${request.cluster}` : `cluster ${request.cluster}, service ${request.service ?? '?'}`;
    return `mirror ${cutText(request.source)} to ${request.registry} for ${user}`;
  }
  if (queue === BUILD_QUEUE) {
    const request = data as BuildRequest;
    return `build ${cutText(request.git.url)} at ${request.git.commit} for cluster ${request.cluster}, service ${request.service}`;
  }
  const request = data as CleanupRequest;
  return `${request.kind}${request.dryRun ? ' (dry run)' : ''}${request.registry === undefined ? ' on every mirror registry' : ` on ${request.registry}`}`;
}

function describeFinished(queue: string, job: Job): string {
  if (queue === MIRROR_QUEUE) return describeResult(job.returnvalue as MirrorResult);
  if (queue === BUILD_QUEUE) return describeBuild(job.returnvalue as BuildResult);
  return describeCleanup(job.returnvalue as CleanupResult, job.data as CleanupRequest);
}

/**
 * Formats the last progress update of a job still waiting or running. BullMQ sets `progress` to the number
 * 0 until the worker reports, so anything but an object means there is none yet.
 */
function describeProgress(progress: unknown): string | undefined {
  if (typeof progress !== 'object' || progress === null) return undefined;
  const stage = (progress as { stage?: unknown }).stage;
  if (typeof stage !== 'string') return undefined;
  const mirror = progress as Partial<MirrorProgress>;
  if (typeof mirror.blobsTotal !== 'number') return (progress as BuildProgress).stage;
  let text = `${stage}, blobs ${mirror.blobsDone ?? 0}/${mirror.blobsTotal}, ${formatBytes(mirror.bytesPulled ?? 0)} pulled, ${formatBytes(mirror.bytesPushed ?? 0)} pushed`;
  if (mirror.waiting) text += ` (waiting for ${mirror.waiting.registry}: ${mirror.waiting.reason})`;
  return text;
}

function indent(text: string): string {
  return text.replace(/^(?=.)/gm, '  ');
}
