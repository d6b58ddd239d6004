import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { LockLostError, RELEASE_SCRIPT, RENEW_SCRIPT, withLock } from '../../src/dedupe/lock.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';

let redis: TestRedis;
let client: Redis;

beforeAll(async () => {
  redis = await startRedis();
  client = new Redis(redis.url);
});

afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});

const key = () => `test-lock-${randomBytes(4).toString('hex')}`;

describe('lock scripts', () => {
  test('renew extends only for the owner', async () => {
    const name = key();
    await client.set(name, 'owner', 'PX', 1000);

    expect(await client.eval(RENEW_SCRIPT, 1, name, 'owner', '60000')).toBe(1);
    expect(await client.pttl(name)).toBeGreaterThan(1000);
    expect(await client.eval(RENEW_SCRIPT, 1, name, 'stranger', '60000')).toBe(0);
  });

  test('release deletes only for the owner', async () => {
    const name = key();
    await client.set(name, 'owner', 'PX', 60_000);

    expect(await client.eval(RELEASE_SCRIPT, 1, name, 'stranger')).toBe(0);
    expect(await client.get(name)).toBe('owner');
    expect(await client.eval(RELEASE_SCRIPT, 1, name, 'owner')).toBe(1);
    expect(await client.get(name)).toBeNull();
  });
});

describe('withLock', () => {
  test('second holder waits for the first', async () => {
    const name = key();
    const order: string[] = [];

    await Promise.all([
      withLock(client, name, async () => {
        order.push('first start');
        await sleep(100);
        order.push('first end');
      }),
      sleep(10).then(() => withLock(client, name, async () => order.push('second'))),
    ]);

    expect(order).toEqual(['first start', 'first end', 'second']);
    expect(await client.get(name), 'the lock is released').toBeNull();
  });

  test('signal aborts when another owner takes over', async () => {
    const name = key();

    const outcome = await withLock(
      client,
      name,
      async (signal) => {
        // Simulate the lock expiring and another worker taking it.
        await client.set(name, 'another-worker', 'PX', 60_000);
        for (let i = 0; i < 100 && !signal.aborted; i += 1) await sleep(20);
        return signal.reason as unknown;
      },
      { ttlMs: 150, waitMs: 1000 },
    );

    expect(outcome).toBeInstanceOf(LockLostError);
    expect(await client.get(name), "the other owner's lock is left alone").toBe('another-worker');
  });
});
