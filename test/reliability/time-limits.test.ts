import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MIRROR_QUEUE } from '../../queues/mirror.ts';
import { manifestLockKey } from '../../src/dedupe/keys.ts';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { waitFor } from '../harness/processes.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { enqueueMirror, listTags, waitForJobs } from './helpers.ts';

/**
 * A slow source registry, slowed by a proxy, against the two time limits. Each limit gets its own
 * worker and key prefix, so that the other limit stays at its default.
 */

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let sourceProxy: FaultProxy;
let connection: Redis;
const fleets: { worker: WorkerProcess; queue: Queue; prefix: string }[] = [];

async function startFleet(limits: Record<string, string>) {
  const prefix = `limits-${randomBytes(4).toString('hex')}`;
  const env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix: prefix,
    mirrorRegistries: [`local=${mirror.host}`],
    insecureRegistries: [source.host, sourceProxy.host, mirror.host],
    extra: limits,
  });
  const fleet = { worker: await startWorker(env, ['--concurrency', '1']), queue: new Queue(MIRROR_QUEUE, { connection, prefix }), prefix };
  fleets.push(fleet);
  return fleet;
}

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  sourceProxy = await startFaultProxy(source.url);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  for (const fleet of fleets) {
    await fleet.queue.close();
    await fleet.worker.kill();
  }
  connection?.disconnect();
  await sourceProxy?.stop();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

afterEach(() => {
  sourceProxy.reset();
});

function targetRepository(repository: string, service: string): string {
  return `slow/services/${service}/${sourceProxy.host.replace(':', '_')}/${repository}`;
}

describe('time limits', () => {
  test('request limit ends stalled job', async () => {
    const fleet = await startFleet({ MIRRORFLEET_REQUEST_TIMEOUT_SECONDS: '1' });
    const repository = 'slow/headers';
    await pushRandomImage(source.url, repository, 'v1', [100_000]);
    sourceProxy.inject({ name: 'slow-manifest', path: /\/slow\/headers\/manifests\//, action: { kind: 'delay', ms: 3_000 } });

    const id = await enqueueMirror(fleet.queue, { v: 1, source: `${sourceProxy.host}/${repository}:v1`, registry: 'local', cluster: 'slow', service: 'headers' });
    const [job] = await waitForJobs(fleet.queue, [id], 60_000);

    expect(job!.state).toBe('failed');
    expect(job!.failedReason).toMatch(/^TIMEOUT: /);
    expect(job!.failedReason).toContain('request time limit of 1 s');
    expect(job!.failedReason).toContain('MIRRORFLEET_REQUEST_TIMEOUT_SECONDS');
    expect(job!.failedReason).toContain(`checking manifest ${repository}:v1`);
    expect(sourceProxy.fired('slow-manifest'), 'the client tried more than once').toBeGreaterThan(1);
  });

  test('job limit ends copy untagged', async () => {
    const fleet = await startFleet({ MIRRORFLEET_JOB_TIMEOUT_SECONDS: '2' });
    const repository = 'slow/body';
    await pushRandomImage(source.url, repository, 'v1', [1024 * 1024]);
    // 16 pieces of 64 KiB, 250 ms apart: the layer needs about 4 s, twice the job limit.
    sourceProxy.inject({ name: 'slow-blob', method: 'GET', path: /\/slow\/body\/blobs\//, action: { kind: 'throttle-body', bytes: 64 * 1024, pauseMs: 250 } });

    const id = await enqueueMirror(fleet.queue, { v: 1, source: `${sourceProxy.host}/${repository}:v1`, registry: 'local', cluster: 'slow', service: 'body' });
    const [job] = await waitForJobs(fleet.queue, [id], 60_000);

    expect(job!.state).toBe('failed');
    expect(job!.failedReason).toMatch(/^TIMEOUT: /);
    expect(job!.failedReason).toContain('job time limit of 2 s');
    expect(job!.failedReason).toContain('MIRRORFLEET_JOB_TIMEOUT_SECONDS');
    expect(sourceProxy.fired('slow-blob')).toBeGreaterThanOrEqual(1);

    // The copy goes on in the background until its layer arrives; it holds the tag lock until it stops.
    const tagLock = manifestLockKey({ prefix: fleet.prefix }, mirror.host, targetRepository(repository, 'body'), 'v1');
    await waitFor(`release of ${tagLock}`, async () => (await connection.exists(tagLock)) === 0, 30_000);
    expect(await listTags(mirror.url, targetRepository(repository, 'body')), 'nothing is tagged after the time limit').toEqual([]);
    expect(fleet.worker.child.exitCode, 'the worker process keeps running').toBeNull();
  });
});
