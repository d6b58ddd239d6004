import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { MIRROR_QUEUE } from '../../queues/mirror.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { apply, mutation, validPayload } from '../property/payloads.ts';
import { soakCount, waitForJobs } from './helpers.ts';

/**
 * Malformed mirror payloads enqueued around the producer, as a producer in another language could:
 * wrong types, missing and unknown fields, invalid values, a payload of several megabytes and values
 * that are not objects. The worker fails each at once naming the field, and goes on serving.
 */

const PAYLOADS = soakCount(40, 400);

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let worker: WorkerProcess;
let connection: Redis;
let queue: Queue;
const keyPrefix = `hostile-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  const env = fleetEnv({ redisUrl: redis.url, keyPrefix, mirrorRegistries: [`local=${mirror.host}`], insecureRegistries: [source.host, mirror.host] });
  worker = await startWorker(env, ['--concurrency', '4']);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
});

afterAll(async () => {
  await queue?.close();
  connection?.disconnect();
  await worker?.kill();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

test('malformed payloads fail, worker keeps serving', async () => {
  const broken = fc.sample(
    fc.tuple(validPayload, mutation).map(([payload, change]) => ({ payload: apply({ ...payload, mode: 'service', service: payload.service ?? 'web' }, change), change })),
    PAYLOADS,
  );
  const huge = { v: 1, source: `${source.host}/app:${'x'.repeat(4 * 1024 * 1024)}`, registry: 'local', cluster: 'prod', service: 'web' };
  const others: unknown[] = [null, 42, 'mirror nginx', [], { v: 1 }, huge];

  const brokenJobs = await Promise.all(broken.map(({ payload }) => queue.add(MIRROR_QUEUE, payload, { attempts: 3 })));
  const otherJobs = await Promise.all(others.map((payload) => queue.add(MIRROR_QUEUE, payload, { attempts: 3 })));
  const jobs = await waitForJobs(queue, [...brokenJobs, ...otherJobs].map((job) => job.id!), 60_000);

  for (const [index, job] of jobs.entries()) {
    expect(job.state, `job ${job.id}`).toBe('failed');
    expect(job.failedReason, `job ${job.id}`).toMatch(/^INVALID_INPUT: invalid mirror request: /);
    expect(job.attemptsMade, `job ${job.id} is not retried`).toBe(1);
    const change = broken[index]?.change;
    if (change && change.kind !== 'unknown') expect(job.failedReason, `job ${job.id}: ${change.kind} ${change.field}`).toContain(change.field);
  }
  expect(jobs.at(-1)!.failedReason.length, 'the error of the huge payload stays short').toBeLessThan(2_000);

  await pushRandomImage(source.url, 'hostile/app', 'v1', [10_000]);
  const producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
  try {
    const result = await producer.mirrorAndWait({ v: 1, source: `${source.host}/hostile/app:v1`, registry: 'local', cluster: 'prod', service: 'web' }, { timeoutMs: 60_000 });
    expect(result.action, 'a valid job after them is done').toBe('copied');
  } finally {
    await producer.close();
  }
  expect(worker.child.exitCode, 'the worker process is still running').toBeNull();
});
