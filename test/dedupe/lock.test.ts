import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { LockLostError, RELEASE_SCRIPT, RENEW_SCRIPT, withLock, withLockUnless } from '../../src/dedupe/lock.ts';
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

describe('withLockUnless', () => {
  test('stops waiting when the check returns true', async () => {
    const name = key();
    await client.set(name, 'another-worker', 'PX', 60_000);
    let checks = 0;
    let ran = false;

    const outcome = await withLockUnless(
      client,
      name,
      async () => {
        ran = true;
      },
      async () => {
        checks += 1;
        return checks === 3;
      },
      { ttlMs: 10_000, waitMs: 60_000 },
    );

    expect(outcome).toEqual({ ran: false });
    expect(ran, 'the work did not run').toBe(false);
    expect(checks).toBe(3);
    expect(await client.get(name), "the holder's lock is left alone").toBe('another-worker');
  });

  test('runs the work when the lock is free', async () => {
    const name = key();
    let checks = 0;

    const outcome = await withLockUnless(
      client,
      name,
      async () => 'done',
      async () => {
        checks += 1;
        return true;
      },
    );

    expect(outcome).toEqual({ ran: true, value: 'done' });
    expect(checks, 'the check runs only while the lock is busy').toBe(0);
    expect(await client.get(name), 'the lock is released').toBeNull();
  });

  test('takes the lock after the holder when the check stays false', async () => {
    const name = key();
    const order: string[] = [];

    await Promise.all([
      withLock(client, name, async () => {
        order.push('first start');
        await sleep(100);
        order.push('first end');
      }),
      sleep(10).then(() =>
        withLockUnless(
          client,
          name,
          async () => {
            order.push('second');
          },
          async () => false,
        ),
      ),
    ]);

    expect(order).toEqual(['first start', 'first end', 'second']);
  });
});

describe('withLock while Redis takes no writes', () => {
  test('holder aborts before lock expiry', async () => {
    const name = key();
    const holder = new Redis(redis.url);
    try {
      const remainingAtAbort = await withLock(
        holder,
        name,
        async (signal) => {
          // Renewals are writes, so they wait while writes are paused, as they would while Redis is down.
          await client.call('CLIENT', 'PAUSE', '10000', 'WRITE');
          await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
          // Reads are still served, so this is the lock's remaining lifetime when the holder aborted.
          const remaining = await client.pttl(name);
          await client.call('CLIENT', 'UNPAUSE');
          return remaining;
        },
        { ttlMs: 3000, waitMs: 1000 },
      );
      expect(remainingAtAbort, 'the lock is still valid when the holder aborts').toBeGreaterThan(0);
    } finally {
      await client.call('CLIENT', 'UNPAUSE');
      holder.disconnect();
    }
  });

  test('delayed grant renews before work', async () => {
    const name = key();
    const holder = new Redis(redis.url);
    try {
      // The SET waits on the server for most of the lock's lifetime, as a command queued through an outage would.
      await client.call('CLIENT', 'PAUSE', '2500', 'WRITE');
      const outcome = await withLock(
        holder,
        name,
        async (signal) => {
          const abortedAtStart = signal.aborted;
          await sleep(300);
          return { abortedAtStart, abortedLater: signal.aborted, remaining: await client.pttl(name) };
        },
        { ttlMs: 3000, waitMs: 10_000 },
      );
      expect(outcome).toMatchObject({ abortedAtStart: false, abortedLater: false });
      expect(outcome.remaining, 'the lock was renewed for a whole lifetime').toBeGreaterThan(750);
    } finally {
      await client.call('CLIENT', 'UNPAUSE');
      holder.disconnect();
    }
  });
});
