import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RELEASE_SCRIPT, withLock } from '../../src/dedupe/lock.ts';
import { LockReleaseListener } from '../../src/dedupe/wakeups.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';

/**
 * Lock waiters wake when the lock is released: the release script publishes the key, and the listener
 * ends the pauses of that key only. Pauses here last longer than the test timeout, so a test
 * passes only when the release ends them.
 */

// Longer than the test timeout (60 s), so a pause that no release ends fails the test.
const LONG_PAUSE_MS = 300_000;
let redis: TestRedis;
let client: Redis;
let listener: LockReleaseListener;
const prefix = `wakeups-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  redis = await startRedis();
  client = new Redis(redis.url);
  listener = LockReleaseListener.start(client, prefix);
  // The listener subscribes without waiting; the tests start once Redis counts its subscription.
  while ((await client.pubsub('NUMSUB', listener.channel))[1] !== 1) await new Promise((resolve) => setTimeout(resolve, 10));
});

afterAll(async () => {
  listener?.close();
  client?.disconnect();
  await redis?.stop();
});

const key = () => `${prefix}:lock:${randomBytes(4).toString('hex')}`;

test('release wakes its waiters only', async () => {
  const released = key();
  const other = key();
  await client.set(released, 'owner', 'PX', LONG_PAUSE_MS);
  await client.set(other, 'owner', 'PX', LONG_PAUSE_MS);
  let otherWoken = false;
  const otherPause = listener.pause(other, LONG_PAUSE_MS).then(() => (otherWoken = true));

  const pauses = [listener.pause(released, LONG_PAUSE_MS), listener.pause(released, LONG_PAUSE_MS)];
  expect(await client.eval(RELEASE_SCRIPT, 1, released, 'owner', listener.channel)).toBe(1);
  await Promise.all(pauses);

  expect(otherWoken).toBe(false);
  expect(await client.eval(RELEASE_SCRIPT, 1, other, 'owner', listener.channel)).toBe(1);
  await otherPause;
});

test('release by a stranger publishes nothing', async () => {
  const name = key();
  await client.set(name, 'owner', 'PX', LONG_PAUSE_MS);
  let woken = false;
  const pause = listener.pause(name, LONG_PAUSE_MS).then(() => (woken = true));

  expect(await client.eval(RELEASE_SCRIPT, 1, name, 'stranger', listener.channel)).toBe(0);
  // A message published after the stranger's release arrives after anything that release published.
  const marker = listener.pause('marker', LONG_PAUSE_MS);
  await client.publish(listener.channel, 'marker');
  await marker;

  expect(woken).toBe(false);
  await client.eval(RELEASE_SCRIPT, 1, name, 'owner', listener.channel);
  await pause;
});

test('waiter takes released lock at once', async () => {
  const name = key();
  const options = { ttlMs: 10_000, waitMs: LONG_PAUSE_MS, wakeups: { channel: listener.channel, pause: (lockKey: string) => listener.pause(lockKey, LONG_PAUSE_MS) } };
  const order: string[] = [];
  let releaseHolder!: () => void;
  const holderMayRelease = new Promise<void>((resolve) => (releaseHolder = resolve));

  const holder = withLock(client, name, async () => {
    order.push('holder');
    await holderMayRelease;
  }, options);
  while ((await client.get(name)) === null) await new Promise((resolve) => setTimeout(resolve, 5));
  const waiter = withLock(client, name, async () => order.push('waiter'), options, () => releaseHolder());

  await Promise.all([holder, waiter]);
  expect(order).toEqual(['holder', 'waiter']);
});
