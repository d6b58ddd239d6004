import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { addImage, countPerWindow, startSource, type ScriptedSource, type Served } from './source.ts';

// Three worker processes mirror images from a source that allows LIMIT requests per second (counted per
// one-second window of its own clock) and responds with 429 and `Retry-After: 1` above it. The fleet's
// configured rate is 1.6 times the limit. A 429 halves the shared rate to 0.8 times the limit, which
// keeps the fleet within it. A fleet that only pauses after a 429 returns to the configured rate and
// meets the limit again every second or two.
// The rate recovers slowly enough (0.05 per second) that it stays near its cut value for the test's
// 15 s or so; recovery has tests of its own in budget.test.ts.

const LIMIT = 5;
const IMAGES = 12;
const WORKERS = 3;

let redis: TestRedis;
let mirror: TestRegistry;
let source: ScriptedSource;
let connection: Redis;
let producer: MirrorfleetProducer;
const workers: WorkerProcess[] = [];
const keyPrefix = `test-${randomBytes(4).toString('hex')}`;
const served = new Map<string, Served>();

beforeAll(async () => {
  for (let index = 0; index < IMAGES; index += 1) addImage(served, `app/image-${index}`, 'v1');
  [redis, mirror, source] = await Promise.all([startRedis(), startRegistry(), startSource(served, { limit: LIMIT })]);
  const env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${mirror.host}`],
    insecureRegistries: [source.host, mirror.host],
    extra: { MIRRORFLEET_RATE_LIMITS: JSON.stringify({ [source.host]: { requestsPerSecond: 1.6 * LIMIT, burst: 2, rateRecoveryPerSecond: 0.05 } }) },
  });
  for (let index = 0; index < WORKERS; index += 1) workers.push(await startWorker(env, ['--concurrency', '4']));
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
}, 60_000);

afterAll(async () => {
  await producer?.close();
  connection?.disconnect();
  await Promise.all(workers.map((worker) => worker.kill()));
  await Promise.all([redis?.stop(), mirror?.stop(), source?.close()]);
});

describe('fleet against a rate-limited source', () => {
  test('stays within the limit after the first 429', async () => {
    const requests = Array.from({ length: IMAGES }, (_, index) => ({
      v: 1 as const,
      source: `${source.host}/app/image-${index}:v1`,
      registry: 'local',
      cluster: 'prod',
      service: `svc-${index}`,
    }));

    const results = await Promise.allSettled(requests.map((request) => producer.mirrorAndWait(request, { timeoutMs: 50_000 })));

    const failures = results.flatMap((result, index) => (result.status === 'rejected' ? [`image-${index}: ${String(result.reason)}`] : []));
    expect(failures).toEqual([]);
    expect(source.unexpected).toEqual([]);

    const first429 = source.requests.find((request) => request.status === 429);
    expect(first429, 'the configured rate is above the limit, so the source answers 429 at least once').toBeDefined();
    // The window of the first 429 also contains requests that the fleet sent before it received the 429.
    const firstWindow = Math.floor(first429!.at / 1000);
    const counts = countPerWindow(source.requests);
    const later = [...counts].filter(([window]) => window > firstWindow).map(([, count]) => count);
    expect(later.length).toBeGreaterThan(0);
    // The server's one-second windows are not aligned with the budget's refills, so one request of slack
    // per window is allowed; the count of 429s is what tells a fleet that backs off from one that does not
    // (about one a run with the shared cut, eight without it).
    expect(Math.max(...later)).toBeLessThanOrEqual(LIMIT + 1);
    expect(source.requests.filter((request) => request.status === 429).length, '429 answers in the whole run').toBeLessThanOrEqual(3);
  }, 60_000);
});
