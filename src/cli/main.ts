import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { readFile } from 'node:fs/promises';
import { Job, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../config/config.ts';
import { MirrorfleetError } from '../errors.ts';
import { redact } from '../log/redact.ts';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { decodeJobFailure } from '../../queues/job-errors.ts';
import { MIRROR_QUEUE, type MirrorProgress, type MirrorRequestInput, type MirrorResult } from '../../queues/mirror.ts';
import { startWorkers, WORKER_QUEUES } from '../../workers/run.ts';

/**
 * The `mirrorfleet` command. Exit codes: 0 success, 1 a job failed, 2 bad usage or input.
 */

const USAGE = `mirrorfleet: keep a copy of every image a cluster runs in a registry next to it

Usage:
  mirrorfleet worker [--queues mirror] [--concurrency N] [--metrics-port P]
      Run workers until SIGTERM. --concurrency: jobs at once (default from MIRRORFLEET_CONCURRENCY, 4).
      --metrics-port: port of /metrics, /healthz and /readyz (0 turns it off; default 9464).
  mirrorfleet mirror SOURCE --registry NAME|HOST[:PORT][/PREFIX] [--mode service|cluster]
                     [--cluster ID] [--service ID] [--platform os/arch[/variant]]... [--wait] [--json]
                     [--timeout SECONDS]
      Enqueue a mirror job. --wait: wait for the result (progress on a terminal).
      --json: print JSON. --timeout: seconds to wait with --wait (default 3600).
  mirrorfleet mirror --from-file FILE --registry ... [--mode ...] [--cluster ID]
      Enqueue one job per line of FILE. A line is either a JSON request object or
      "SOURCE [SERVICE]"; blank lines and lines starting with # are ignored.
  mirrorfleet job ID [--json]
      Show a job's state, progress, result or error.

Configuration: MIRRORFLEET_CONFIG (a JSON file) and MIRRORFLEET_* variables, such as
MIRRORFLEET_REDIS_URL (default redis://127.0.0.1:6379) and MIRRORFLEET_MIRROR_REGISTRIES
(NAME=HOST[:PORT][/PREFIX],...).
`;

class UsageError extends Error {}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'worker':
        return await runWorker(rest);
      case 'mirror':
        return await runMirror(rest);
      case 'job':
        return await showJob(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"; accepted: worker, mirror, job, help`);
    }
  } catch (error) {
    if (error instanceof UsageError || (error instanceof MirrorfleetError && (error.code === 'INVALID_INPUT' || error.code === 'INVALID_CONFIG' || error.code === 'INVALID_REFERENCE'))) {
      process.stderr.write(`mirrorfleet: ${redact(error.message)}\n`);
      if (error instanceof UsageError) process.stderr.write('run "mirrorfleet help" for usage\n');
      return 2;
    }
    if (error instanceof Error && 'code' in error && typeof (error as { code: unknown }).code === 'string' && (error as { code: string }).code.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`mirrorfleet: ${error.message}\nrun "mirrorfleet help" for usage\n`);
      return 2;
    }
    throw error;
  }
}

type OptionValues = Record<string, string | boolean | string[] | undefined>;

function parse(args: string[], options: ParseArgsOptionsConfig, allowPositionals: boolean): { values: OptionValues; positionals: string[] } {
  const result = parseArgs({ args, options, allowPositionals, strict: true });
  return { values: result.values as OptionValues, positionals: result.positionals };
}

function positiveInteger(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < min) throw new UsageError(`invalid --${name} "${value}": expected a whole number of at least ${min}`);
  return Number(value);
}

async function runWorker(args: string[]): Promise<number> {
  const { values } = parse(args, { queues: { type: 'string' }, concurrency: { type: 'string' }, 'metrics-port': { type: 'string' } }, false);
  const config = loadConfig();
  const queues = (values.queues as string | undefined)?.split(',').map((queue) => queue.trim()) ?? [...WORKER_QUEUES];
  for (const queue of queues) {
    if (!(WORKER_QUEUES as readonly string[]).includes(queue)) throw new UsageError(`unknown queue "${queue}" in --queues; accepted: ${WORKER_QUEUES.join(', ')}`);
  }
  const concurrency = positiveInteger('concurrency', values.concurrency as string | undefined, config.worker.concurrency);
  const metricsPort = positiveInteger('metrics-port', values['metrics-port'] as string | undefined, config.worker.metricsPort, 0);
  const lockDurationMs = process.env.MIRRORFLEET_JOB_LOCK_MS ? positiveInteger('MIRRORFLEET_JOB_LOCK_MS', process.env.MIRRORFLEET_JOB_LOCK_MS, 30_000, 1000) : undefined;

  const running = await startWorkers({ config, queues, concurrency, metricsPort, ...(lockDurationMs ? { lockDurationMs } : {}) });
  await new Promise<void>((resolve) => {
    const onSignal = () => {
      running.stop(config.worker.shutdownGraceSeconds * 1000).then(resolve, resolve);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  return 0;
}

function producerFor(config: Config): MirrorfleetProducer {
  const connection = new Redis(config.redis.url, { maxRetriesPerRequest: null });
  return new MirrorfleetProducer({ connection, prefix: config.redis.keyPrefix });
}

async function runMirror(args: string[]): Promise<number> {
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
  const { parseMirrorRequest } = await import('../../queues/mirror.ts');
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
    events = new QueueEvents(MIRROR_QUEUE, { connection: new Redis(config.redis.url, { maxRetriesPerRequest: null }), prefix: config.redis.keyPrefix });
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

async function showJob(args: string[]): Promise<number> {
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

/** A short human summary of a finished mirror job. */
export function describeResult(result: MirrorResult): string {
  const moved =
    result.action === 'skipped' || result.action === 'not-needed'
      ? 'nothing moved'
      : `${result.manifests.copied} manifests and ${result.blobs.copied} blobs copied, ${result.blobs.mounted} mounted, ${result.blobs.present} already there; ` +
        `${formatBytes(result.bytes.pulled)} pulled, ${formatBytes(result.bytes.pushed)} pushed`;
  return (
    `${result.action}: ${result.source}\n` +
    `  target  ${result.target}\n` +
    `  pinned  ${result.pinned}\n` +
    `  ${moved} in ${result.durationMs} ms\n`
  );
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
