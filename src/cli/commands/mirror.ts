import { QueueEvents } from 'bullmq';
import { createRedisConnection } from '../../redis/connection.ts';
import { loadConfig, type Config } from '../../config/config.ts';
import type { MirrorfleetProducer } from '../../../queues/producer.ts';
import { MIRROR_QUEUE, mirrorRequestSchema, type MirrorProgress, type MirrorRequestInput } from '../../../queues/mirror.ts';
import { MIRROR_FLAGS, checkRequest } from '../request-errors.ts';
import { UsageError, checkMirrorRegistry, describeResult, formatBytes, parse, parseTimeoutSeconds, connectProducer } from '../common.ts';
import { printOutcome, waitForOutcome } from '../wait.ts';
import { enqueueFile, readFileRequests, type FileOptions } from './mirror-file.ts';

/** `mirrorfleet mirror`: enqueues one mirror job, or one per line of a file, and optionally waits. */
export async function runMirror(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      registry: { type: 'string' },
      mode: { type: 'string' },
      cluster: { type: 'string' },
      service: { type: 'string' },
      platform: { type: 'string', multiple: true },
      referrers: { type: 'string' },
      wait: { type: 'boolean' },
      json: { type: 'boolean' },
      timeout: { type: 'string' },
      'from-file': { type: 'string' },
    },
    true,
  );
  const fromFile = values['from-file'] as string | undefined;
  if (!values.registry) throw new UsageError('--registry is required: a mirror registry name or HOST[:PORT][/PREFIX]');
  if (fromFile === undefined && positionals.length !== 1) throw new UsageError('mirror takes exactly one SOURCE image reference (or --from-file FILE)');
  if (fromFile !== undefined && positionals.length > 0) throw new UsageError('mirror takes either one SOURCE or --from-file FILE, not both');
  // Parsed before anything is enqueued, so that an invalid --timeout leaves no job behind.
  const timeoutSeconds = parseTimeoutSeconds(values.timeout as string | undefined);
  const template: Omit<MirrorRequestInput, 'source'> = {
    v: 1,
    registry: values.registry as string,
    mode: ((values.mode as string | undefined) ?? 'service') as 'service' | 'cluster',
    cluster: (values.cluster as string | undefined) ?? 'default',
    ...(values.service ? { service: values.service as string } : {}),
    ...((values.platform as string[] | undefined)?.length ? { platforms: values.platform as string[] } : {}),
    // The schema checks the value and names the accepted ones.
    ...(values.referrers === undefined ? {} : { referrers: values.referrers as MirrorRequestInput['referrers'] }),
  };

  const config = loadConfig();
  checkMirrorRegistry(config, template.registry);
  if (fromFile !== undefined) return mirrorFile(config, { path: fromFile, template, json: Boolean(values.json), wait: Boolean(values.wait), timeoutSeconds });

  const request: MirrorRequestInput = { ...template, source: positionals[0]! };
  // Validated before connecting, so that invalid input is reported as such even when Redis is down.
  checkRequest(mirrorRequestSchema, request, MIRROR_FLAGS);
  const producer = await connectProducer(config);
  try {
    const job = await producer.mirror(request);
    if (!values.wait) {
      const state = await job.getState();
      process.stdout.write(values.json ? `${JSON.stringify({ jobId: job.id, state })}\n` : `enqueued job ${job.id} (${state})\n`);
      return 0;
    }
    return await waitAndPrint(producer, config, job.id!, timeoutSeconds, Boolean(values.json));
  } finally {
    await producer.close();
  }
}

/** Checks every line of the file, and only then connects and enqueues. */
async function mirrorFile(config: Config, options: FileOptions): Promise<number> {
  const requests = await readFileRequests(options, config);
  const producer = await connectProducer(config);
  try {
    return await enqueueFile(producer, requests, options);
  } finally {
    await producer.close();
  }
}

async function waitAndPrint(producer: MirrorfleetProducer, config: Config, jobId: string, timeoutSeconds: number, json: boolean): Promise<number> {
  const showProgress = process.stderr.isTTY && !json;
  let events: QueueEvents | undefined;
  if (showProgress) {
    events = new QueueEvents(MIRROR_QUEUE, { connection: createRedisConnection(config.redis, { maxRetriesPerRequest: null }), prefix: config.redis.keyPrefix });
    events.on('progress', ({ jobId: id, data }) => {
      if (id !== jobId) return;
      const progress = data as unknown as MirrorProgress;
      process.stderr.write(`\r  blobs ${progress.blobsDone}/${progress.blobsTotal}, ${formatBytes(progress.bytesPushed)} pushed   `);
    });
  }
  try {
    const outcome = await waitForOutcome(producer.bullQueue, jobId, timeoutSeconds * 1000, (timeoutMs) => producer.wait(jobId, { timeoutMs }));
    if (showProgress) process.stderr.write('\r\x1b[K');
    return printOutcome(outcome, { json, timeoutSeconds, label: 'job', describe: describeResult });
  } finally {
    await events?.close();
  }
}
