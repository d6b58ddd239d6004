import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { LookupAddress } from 'node:dns';
import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/config.ts';
import { decodeJobFailure } from '../../queues/job-errors.ts';
import { MIRROR_QUEUE } from '../../queues/mirror.ts';
import { startWorkers, type RunningWorkers } from '../../workers/run.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, runCli, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { installLoopbackGuard, type LoopbackGuard } from '../net/loopback-guard.ts';
import { enqueueMirror, waitForJobs } from '../reliability/helpers.ts';

/**
 * Mirror jobs that fail on DNS or on a TLS mismatch: each gets its own error code, the failure is
 * retried by BullMQ exactly when its stored `retryable` flag is true, and `mirrorfleet job` shows that
 * flag. DNS answers come from a stub resolver inside the worker, so no query leaves the machine.
 */

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let connection: Redis;
let queue: Queue;
let guard: LoopbackGuard;
const running: RunningWorkers[] = [];
const processes: WorkerProcess[] = [];
const keyPrefix = `failure-codes-${randomBytes(4).toString('hex')}`;

/** Returns a resolver that fails every name with `code` and names the host, as getaddrinfo does. */
function failingResolver(code: 'ENOTFOUND' | 'EAI_AGAIN'): (hostname: string) => Promise<LookupAddress[]> {
  return async (hostname) => {
    throw Object.assign(new Error(`getaddrinfo ${code} ${hostname}`), { code, syscall: 'getaddrinfo', hostname });
  };
}

/** Log lines of the workers started in this process. */
const logged: Array<{ level: number; msg: string; [field: string]: unknown }> = [];

/** Starts mirror workers in this process, with DNS answered by `resolver`. */
async function startInProcess(resolver: (hostname: string) => Promise<LookupAddress[]>): Promise<void> {
  const config = loadConfig({
    MIRRORFLEET_REDIS_URL: redis.url,
    MIRRORFLEET_KEY_PREFIX: keyPrefix,
    MIRRORFLEET_MIRROR_REGISTRIES: `local=${mirror.host}`,
    MIRRORFLEET_INSECURE_REGISTRIES: mirror.host,
    MIRRORFLEET_ALLOW_NETWORKS: '127.0.0.0/8',
  });
  const workers = await startWorkers({
    config,
    queues: ['mirror'],
    concurrency: 1,
    metricsPort: 0,
    resolver,
    retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
    logger: pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line) as (typeof logged)[number]) }),
  });
  running.push(workers);
}

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
  guard = installLoopbackGuard();
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((workers) => workers.stop(1_000)));
  await Promise.all(processes.splice(0).map((worker) => worker.kill()));
  expect(guard.escapes, 'no connection left loopback').toEqual([]);
  expect(guard.lookups, 'no name reached the system resolver').toEqual([]);
});

afterAll(async () => {
  guard?.restore();
  await queue?.close();
  connection?.disconnect();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

describe('DNS failure', () => {
  test('unknown name fails at once', async () => {
    await startInProcess(failingResolver('ENOTFOUND'));

    const jobId = await enqueueMirror(queue, { v: 1, source: 'registry.invalid/app:v1', registry: 'local', cluster: 'c1', service: 'dns' }, 3);
    const [settled] = await waitForJobs(queue, [jobId], 60_000);

    expect(settled!.state).toBe('failed');
    expect(settled!.attemptsMade, 'BullMQ did not retry it').toBe(1);
    const failure = decodeJobFailure(settled!.failedReason);
    expect(failure.code).toBe('REGISTRY_DNS_FAILED');
    expect(failure.retryable).toBe(false);
    expect(failure.message).toContain('cannot resolve registry.invalid');
  });

  test('temporary failure is retried and says so', async () => {
    await startInProcess(failingResolver('EAI_AGAIN'));

    const jobId = await enqueueMirror(queue, { v: 1, source: 'registry.invalid/app:v1', registry: 'local', cluster: 'c1', service: 'dns-again' }, 2);
    const [settled] = await waitForJobs(queue, [jobId], 60_000);

    expect(settled!.state).toBe('failed');
    expect(settled!.attemptsMade, 'BullMQ retried it').toBe(2);
    const failure = decodeJobFailure(settled!.failedReason);
    expect(failure.code).toBe('REGISTRY_DNS_FAILED');
    expect(failure.retryable).toBe(true);
    expect(failure.message).toContain('EAI_AGAIN');
    const failures = logged.filter((line) => line.jobId === jobId && line.msg.includes('failed'));
    expect(failures.map((line) => line.msg)).toEqual([
      // MIRROR_JOB_OPTIONS: exponential backoff of 2 s with jitter 0.5.
      'mirror job attempt 1/2 failed: REGISTRY_DNS_FAILED; retrying in 1 s to 2 s',
      'mirror job failed; not retried: REGISTRY_DNS_FAILED',
    ]);
    expect(failures.map((line) => line.level)).toEqual([40, 50]);
    expect(failures[0]).toMatchObject({ attempt: '1/2', retryDelayMinMs: 1_000, retryDelayMaxMs: 2_000 });

    const shown = await runCli(['job', jobId, '--queue', 'mirror', '--json'], fleetEnv({ redisUrl: redis.url, keyPrefix, mirrorRegistries: [], insecureRegistries: [] }));
    const view = JSON.parse(shown.stdout) as { error: { code: string; retryable: boolean } };
    expect(view.error).toMatchObject({ code: 'REGISTRY_DNS_FAILED', retryable: true });
  });
});

describe('TLS mismatch', () => {
  test('plain-HTTP source not listed as insecure fails at once', async () => {
    await pushRandomImage(source.url, 'tls/app', 'v1', [1_000]);
    // The source registry is left out of MIRRORFLEET_INSECURE_REGISTRIES, so the worker speaks HTTPS to it.
    const env = fleetEnv({ redisUrl: redis.url, keyPrefix, mirrorRegistries: [`local=${mirror.host}`], insecureRegistries: [mirror.host] });
    processes.push(await startWorker(env, ['--queues', 'mirror']));

    const jobId = await enqueueMirror(queue, { v: 1, source: `${source.host}/tls/app:v1`, registry: 'local', cluster: 'c1', service: 'tls' }, 3);
    const [settled] = await waitForJobs(queue, [jobId], 60_000);

    expect(settled!.state).toBe('failed');
    expect(settled!.attemptsMade, 'BullMQ did not retry it').toBe(1);
    const failure = decodeJobFailure(settled!.failedReason);
    expect(failure.code).toBe('REGISTRY_TLS_MISMATCH');
    expect(failure.retryable).toBe(false);
    expect(failure.message).toContain(`if ${source.host} serves plain HTTP, add it to MIRRORFLEET_INSECURE_REGISTRIES`);
    const job = await Job.fromId(queue, jobId);
    expect(job?.failedReason.endsWith(' [retryable]')).toBe(false);

    const worker = processes[processes.length - 1]!;
    const lines = worker
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { level: number; msg: string; jobId?: string });
    const failures = lines.filter((line) => line.jobId === jobId && line.msg.includes('failed'));
    expect(failures.map((line) => line.msg), 'the log calls the failure final').toEqual(['mirror job failed; not retried: REGISTRY_TLS_MISMATCH']);
    expect(failures[0]!.level, 'logged at error').toBe(50);
  });
});
