import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { MIRROR_QUEUE } from '../../queues/mirror.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { addImage, startSource, type ScriptedSource, type Served } from './source.ts';

// Three worker processes, one job each at a time, mirror images from a source that reports a Docker
// Hub style pull quota. Every manifest GET spends a pull, and pulls pause below the floor of 3. The
// test then raises the quota, and the next quota probe (a HEAD, every 30 s by default) lets pulls resume.

const FLOOR = 3;
const IMAGES = 6;
const WORKERS = 3;

let redis: TestRedis;
let mirror: TestRegistry;
let source: ScriptedSource;
let connection: Redis;
let producer: MirrorfleetProducer;
let queue: Queue;
const workers: WorkerProcess[] = [];
const keyPrefix = `test-${randomBytes(4).toString('hex')}`;
const served = new Map<string, Served>();
// Three pulls are left above the floor: the first wave of three jobs spends them.
const quota = { remaining: FLOOR + 2 };

beforeAll(async () => {
  for (let index = 0; index < IMAGES; index += 1) addImage(served, `app/image-${index}`, 'v1');
  [redis, mirror, source] = await Promise.all([startRedis(), startRegistry(), startSource(served, { quota })]);
  const env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${mirror.host}`],
    insecureRegistries: [source.host, mirror.host],
    extra: { MIRRORFLEET_RATE_LIMITS: JSON.stringify({ [source.host]: { pullQuotaFloor: FLOOR } }) },
  });
  workers.push(...(await Promise.all(Array.from({ length: WORKERS }, () => startWorker(env, ['--concurrency', '1'])))));
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
  queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
}, 60_000);

afterAll(async () => {
  await queue?.close();
  await producer?.close();
  connection?.disconnect();
  await Promise.all(workers.map((worker) => worker.kill()));
  await Promise.all([redis?.stop(), mirror?.stop(), source?.close()]);
});

/** Manifest GETs for which the source returned the image, each spending a pull. */
function pulls() {
  return source.requests.filter((request) => request.method === 'GET' && request.status === 200 && request.path.includes('/manifests/'));
}

describe('fleet against a pull quota', () => {
  test('pauses pulls below the floor and resumes', async () => {
    const finished: boolean[] = Array.from({ length: IMAGES }, () => false);
    const running = Array.from({ length: IMAGES }, (_, index) =>
      producer
        .mirrorAndWait({ v: 1, source: `${source.host}/app/image-${index}:v1`, registry: 'local', cluster: 'prod', service: `svc-${index}` }, { timeoutMs: 55_000 })
        .finally(() => (finished[index] = true)),
    );

    // Wait until the source has reported a quota below the floor, then 3 s more.
    const deadline = Date.now() + 20_000;
    while (!source.requests.some((request) => request.quotaRemaining !== undefined && request.quotaRemaining < FLOOR) && Date.now() < deadline) await sleep(100);
    const lowAt = source.requests.find((request) => request.quotaRemaining !== undefined && request.quotaRemaining < FLOOR)?.at;
    expect(lowAt, 'the first jobs spent the pulls above the floor').toBeDefined();
    await sleep(3_000);

    const active = await queue.getActive();
    const reasons = active.map((job) => (job.progress as { waiting?: { reason?: string } } | undefined)?.waiting?.reason);
    const pullsWhilePaused = pulls().filter((request) => request.at > lowAt! + 1_000);
    const unfinished = finished.filter((done) => !done).length;
    quota.remaining = 100;
    const results = await Promise.allSettled(running);

    // Pulls that the gate let go before the low reading reached Redis may arrive within 1 s of it.
    expect(pullsWhilePaused).toEqual([]);
    expect(unfinished, 'some jobs waited for the quota').toBeGreaterThan(0);
    expect(reasons, "the waiting jobs' progress names the quota").toContain('quota');
    const failures = results.flatMap((result, index) => (result.status === 'rejected' ? [`image-${index}: ${String(result.reason)}`] : []));
    expect(failures).toEqual([]);
    expect(pulls().filter((request) => request.at > lowAt! + 3_000).length, 'pulls resumed after the quota recovered').toBeGreaterThan(0);
    expect(source.unexpected).toEqual([]);
  }, 60_000);
});
