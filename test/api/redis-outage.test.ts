import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../harness/processes.ts';
import { fleetEnv } from '../harness/workers.ts';
import { startPersistentRedis, type PersistentRedis } from '../reliability/persistent-redis.ts';
import { API_TOKENS, startApiProcess, type ApiProcess } from './helpers.ts';

/**
 * The API process while Redis is down: its queues and event streams reconnect quietly, so the output
 * stays JSON log lines, with no raw error dump per reconnect attempt.
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
