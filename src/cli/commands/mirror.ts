import { readFile } from 'node:fs/promises';
import { QueueEvents } from 'bullmq';
import { createRedisConnection } from '../../redis/connection.ts';
import { loadConfig, type Config } from '../../config/config.ts';
import { MirrorfleetError } from '../../errors.ts';
import { redact } from '../../log/redact.ts';
import type { MirrorfleetProducer } from '../../../queues/producer.ts';
import { MIRROR_QUEUE, parseMirrorRequest, type MirrorProgress, type MirrorRequestInput } from '../../../queues/mirror.ts';
import { UsageError, describeResult, formatBytes, parse, positiveInteger, producerFor } from '../common.ts';

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
  const mode = (values.mode as string | undefined) ?? 'service';
  const template = {
    v: 1 as const,
    registry: values.registry as string,
    mode: mode as 'service' | 'cluster',
    cluster: (values.cluster as string | undefined) ?? 'default',
    ...(values.service ? { service: values.service as string } : {}),
    ...((values.platform as string[] | undefined)?.length ? { platforms: values.platform as string[] } : {}),
  };

  const config = loadConfig();
  const producer = producerFor(config);
  try {
    if (fromFile !== undefined) return await enqueueFile(producer, fromFile, template, Boolean(values.json));

    const job = await producer.mirror({ ...template, source: positionals[0]! });
    if (!values.wait) {
      const state = await job.getState();
      process.stdout.write(values.json ? `${JSON.stringify({ jobId: job.id, state })}\n` : `enqueued job ${job.id} (${state})\n`);
      return 0;
    }
    const timeoutMs = positiveInteger('timeout', values.timeout as string | undefined, 3600) * 1000;
    return await waitAndPrint(producer, config, job.id!, timeoutMs, Boolean(values.json));
  } finally {
    await producer.close();
  }
}

async function enqueueFile(producer: MirrorfleetProducer, path: string, template: Omit<MirrorRequestInput, 'source'>, json: boolean): Promise<number> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read --from-file ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const requests: MirrorRequestInput[] = [];
  const problems: string[] = [];
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    try {
      if (line.startsWith('{')) {
        requests.push({ ...template, ...(JSON.parse(line) as object) } as MirrorRequestInput);
      } else {
        const [source, service, extra] = line.split(/\s+/);
        if (extra !== undefined) throw new Error('expected "SOURCE [SERVICE]"');
        requests.push({ ...template, source: source!, ...(service ? { service } : {}) } as MirrorRequestInput);
      }
    } catch (error) {
      problems.push(`line ${index + 1}: ${(error as Error).message}`);
    }
  }
  // Validate everything before enqueueing anything, so a bad line does not leave half a file enqueued.
  for (const [position, request] of requests.entries()) {
    try {
      parseMirrorRequest(request);
    } catch (error) {
      problems.push(`request ${position + 1} (${String((request as { source?: unknown }).source)}): ${(error as Error).message}`);
    }
  }
  if (problems.length > 0) throw new UsageError(`nothing enqueued from ${path}:\n  ${problems.join('\n  ')}`);
  const jobs = await producer.mirrorBulk(requests);
  if (json) process.stdout.write(`${JSON.stringify({ enqueued: jobs.length, jobIds: jobs.map((job) => job.id) })}\n`);
  else process.stdout.write(`enqueued ${jobs.length} mirror jobs from ${path}\n`);
  return 0;
}

async function waitAndPrint(producer: MirrorfleetProducer, config: Config, jobId: string, timeoutMs: number, json: boolean): Promise<number> {
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
    const result = await producer.wait(jobId, { timeoutMs });
    if (showProgress) process.stderr.write('\r\x1b[K');
    process.stdout.write(json ? `${JSON.stringify(result)}\n` : describeResult(result));
    return 0;
  } catch (error) {
    if (showProgress) process.stderr.write('\r\x1b[K');
    const failure = error instanceof MirrorfleetError ? error : new MirrorfleetError('INTERNAL', String(error));
    if (json) process.stdout.write(`${JSON.stringify({ jobId, state: 'failed', error: { code: failure.code, message: redact(failure.message) } })}\n`);
    else process.stderr.write(`job ${jobId} failed: ${failure.code}: ${redact(failure.message)}\n`);
    return 1;
  } finally {
    await events?.close();
  }
}

