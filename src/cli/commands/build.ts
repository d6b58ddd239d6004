import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { QueueEvents } from 'bullmq';
import { createRedisConnection } from '../../redis/connection.ts';
import { loadConfig, type Config } from '../../config/config.ts';
import { MirrorfleetProducer } from '../../../queues/producer.ts';
import { BUILD_QUEUE, buildRequestSchema, type BuildProgress, type BuildRequestInput, type BuildResult } from '../../../queues/build.ts';
import { UsageError, checkMirrorRegistry, ensureRedisReachable, parse, parseTimeoutSeconds } from '../common.ts';
import { printOutcome, waitForOutcome } from '../wait.ts';
import { BUILD_FLAGS, checkRequest } from '../request-errors.ts';

/**
 * `mirrorfleet build`: enqueues one build job and optionally waits. Plain values come from the command
 * line (`--build-env NAME=VALUE`) or from this process's environment (`--build-env NAME`). Secret values
 * come only from the environment (`--secret-env NAME`), because the process list shows command lines.
 */
export async function runBuild(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      git: { type: 'string' },
      commit: { type: 'string' },
      root: { type: 'string' },
      dockerfile: { type: 'string' },
      'build-env': { type: 'string', multiple: true },
      'secret-env': { type: 'string', multiple: true },
      registry: { type: 'string' },
      cluster: { type: 'string' },
      service: { type: 'string' },
      platform: { type: 'string', multiple: true },
      force: { type: 'boolean' },
      wait: { type: 'boolean' },
      json: { type: 'boolean' },
      timeout: { type: 'string' },
    },
    false,
  );
  if (positionals.length > 0) throw new UsageError(`build takes no positional arguments, found "${positionals[0]}"`);
  for (const required of ['git', 'commit', 'registry', 'cluster', 'service'] as const) {
    if (!values[required]) throw new UsageError(`--${required} is required`);
  }

  const request: BuildRequestInput = {
    v: 1,
    git: {
      url: gitSource(values.git as string),
      commit: values.commit as string,
      ...(values.root ? { root: values.root as string } : {}),
      ...(values.dockerfile ? { dockerfile: values.dockerfile as string } : {}),
    },
    variables: [
      ...((values['build-env'] as string[] | undefined) ?? []).map(plainVariable),
      ...((values['secret-env'] as string[] | undefined) ?? []).map(secretVariable),
    ],
    registry: values.registry as string,
    cluster: values.cluster as string,
    service: values.service as string,
    ...((values.platform as string[] | undefined)?.length ? { platforms: values.platform as string[] } : {}),
    force: Boolean(values.force),
  };

  // Parsed before anything is enqueued, so that an invalid --timeout leaves no job behind.
  const timeoutSeconds = parseTimeoutSeconds(values.timeout as string | undefined);
  // Validated before connecting, so that invalid input is reported as such even when Redis is down.
  checkRequest(buildRequestSchema, request, BUILD_FLAGS);
  const config = loadConfig();
  checkMirrorRegistry(config, request.registry);
  await ensureRedisReachable(config);
  const producer = new MirrorfleetProducer({
    connection: createRedisConnection(config.redis, { maxRetriesPerRequest: null }),
    prefix: config.redis.keyPrefix,
    ...(config.secretKey === undefined ? {} : { secretKey: config.secretKey }),
  });
  try {
    const job = await producer.build(request);
    if (!values.wait) {
      const state = await job.getState();
      process.stdout.write(values.json ? `${JSON.stringify({ jobId: job.id, state })}\n` : `enqueued build job ${job.id} (${state})\n`);
      return 0;
    }
    return await waitAndPrint(producer, config, job.id!, timeoutSeconds, Boolean(values.json));
  } finally {
    await producer.close();
  }
}

/** Makes an existing local path absolute, because the worker resolves it from another folder. Anything else is a URL. */
function gitSource(value: string): string {
  return existsSync(value) ? resolve(value) : value;
}

function plainVariable(entry: string): { name: string; value: string } {
  const equals = entry.indexOf('=');
  if (equals >= 0) return { name: entry.slice(0, equals), value: entry.slice(equals + 1) };
  const value = process.env[entry];
  if (value === undefined) throw new UsageError(`--build-env ${entry}: the environment has no variable ${entry}; set it or write --build-env ${entry}=VALUE`);
  return { name: entry, value };
}

function secretVariable(name: string): { name: string; value: string; secret: true } {
  if (name.includes('=')) {
    throw new UsageError(`--secret-env takes a variable NAME only, not NAME=VALUE: the value comes from the environment, so that the process list never shows it`);
  }
  const value = process.env[name];
  if (value === undefined) throw new UsageError(`--secret-env ${name}: the environment has no variable ${name}`);
  return { name, value, secret: true };
}

async function waitAndPrint(producer: MirrorfleetProducer, config: Config, jobId: string, timeoutSeconds: number, json: boolean): Promise<number> {
  const showProgress = process.stderr.isTTY && !json;
  let events: QueueEvents | undefined;
  if (showProgress) {
    events = new QueueEvents(BUILD_QUEUE, { connection: createRedisConnection(config.redis, { maxRetriesPerRequest: null }), prefix: config.redis.keyPrefix });
    events.on('progress', ({ jobId: id, data }) => {
      if (id === jobId) process.stderr.write(`\r  ${(data as unknown as BuildProgress).stage}   `);
    });
  }
  try {
    const outcome = await waitForOutcome(producer.bullBuildQueue, jobId, timeoutSeconds * 1000, (timeoutMs) => producer.waitForBuild(jobId, { timeoutMs }));
    if (showProgress) process.stderr.write('\r\x1b[K');
    return printOutcome(outcome, { json, timeoutSeconds, label: 'build job', describe: describeBuild });
  } finally {
    await events?.close();
  }
}

/** Formats a finished build job for people, in three lines. */
export function describeBuild(result: BuildResult): string {
  let cache = '';
  if (result.cacheHit === true) cache = ', layers from the cache';
  if (result.cacheHit === false) cache = ', no layer from the cache';
  return `${result.action}: ${result.target}\n  pinned  ${result.pinned}\n  in ${result.durationMs} ms${cache}\n`;
}
