import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../harness/processes.ts';
import { fleetEnv } from '../harness/workers.ts';
import { startPersistentRedis, type PersistentRedis } from '../reliability/persistent-redis.ts';
import { API_TOKENS, asAdmin, asEnqueuer, startApiProcess, type ApiProcess } from './helpers.ts';

/**
 * An API process without workers: a reconcile body larger than a job request's limit is accepted, and
 * while Redis is down its queues and event streams reconnect quietly, so the output stays JSON log
 * lines, with no raw error dump per reconnect attempt.
 */

let redis: PersistentRedis;
let api: ApiProcess;

beforeAll(async () => {
  redis = await startPersistentRedis();
  const env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix: `api-outage-${randomBytes(4).toString('hex')}`,
    mirrorRegistries: ['local=127.0.0.1:5999'],
    insecureRegistries: [],
    extra: { MIRRORFLEET_API_TOKENS: API_TOKENS },
  });
  api = await startApiProcess(env, await freePort());
});

afterAll(async () => {
  await api?.stop();
  await redis?.stop();
});

test('reconcile body may exceed 64 KiB', async () => {
  const images = Array.from({ length: 2_000 }, (_, index) => ({ reference: `registry.example/team/service-${index}:1.0.${index}`, service: `service-${index}` }));
  const body = JSON.stringify({ v: 1, kind: 'reconcile', cluster: 'big', images, dryRun: true });
  const post = (payload: string, path: string, token: Record<string, string>) =>
    fetch(`${api.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...token }, body: payload });

  const reconcile = await post(body, '/v1/queues/cleanup/jobs', asAdmin);
  const mirror = await post(JSON.stringify({ v: 1, source: 'registry.example/app:1', registry: 'local', cluster: 'big', service: 'x'.repeat(70_000) }), '/v1/queues/mirror/jobs', asEnqueuer);

  expect(body.length).toBeGreaterThan(128 * 1024);
  expect(reconcile.status, await reconcile.clone().text()).toBe(202);
  expect(mirror.status).toBe(400);
  expect(((await mirror.json()) as { error: { message: string } }).error.message).toContain('larger than 65536 bytes');
});

test('API output stays JSON during an outage', async () => {
  await redis.crash();
  // ioredis retries about once a second, so a few seconds show several reconnect attempts.
  await sleep(4_000);
  const readyz = await fetch(`${api.url}/readyz`);
  await redis.restart();

  expect(readyz.status).toBe(503);
  const rawLines = api
    .output()
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.startsWith('{'));
  expect(rawLines, 'lines that are not JSON log lines').toEqual([]);
});
