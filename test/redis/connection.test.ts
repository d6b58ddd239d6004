import { randomBytes } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.ts';
import { redact } from '../../src/log/redact.ts';
import { createRedisConnection } from '../../src/redis/connection.ts';
import { startCluster, startSentinelGroup, type RedisServers } from './servers.ts';

const MASTER_NAME = 'fleetmaster';
const PASSWORD = 'sentinel-primary-secret-5';

/** Adds one job through a Queue and returns what a Worker on the same connection returned for it. */
async function roundTrip(connection: Redis, prefix: string): Promise<unknown> {
  const queue = new Queue('round-trip', { connection, prefix });
  const worker = new Worker('round-trip', async (job) => ({ doubled: (job.data as { value: number }).value * 2 }), { connection, prefix });
  try {
    const completed = new Promise<unknown>((resolve, reject) => {
      worker.on('completed', (_job, result) => resolve(result));
      worker.on('failed', (_job, error) => reject(error));
    });
    await queue.add('double', { value: 21 });
    return await completed;
  } finally {
    await worker.close();
    await queue.close();
  }
}

describe('Sentinel', () => {
  let servers: RedisServers;
  let connection: Redis;

  beforeAll(async () => {
    servers = await startSentinelGroup(MASTER_NAME, PASSWORD);
    const [, sentinelPort] = servers.ports;
    const url = `redis+sentinel://:${PASSWORD}@127.0.0.1:${sentinelPort}/${MASTER_NAME}`;
    connection = createRedisConnection({ url, keyPrefix: 'fleet' }, { maxRetriesPerRequest: null });
  }, 30_000);

  afterAll(async () => {
    connection?.disconnect();
    await servers?.stop();
  });

  /** Reads `key` on the primary with a client of its own, which bypasses the Sentinel. */
  async function readOnPrimary(key: string): Promise<string | null> {
    const direct = new Redis({ host: '127.0.0.1', port: servers.ports[0], password: PASSWORD });
    try {
      return await direct.get(key);
    } finally {
      direct.disconnect();
    }
  }

  it('reaches the primary', async () => {
    const key = `probe-${randomBytes(4).toString('hex')}`;
    await connection.set(key, 'through-sentinel');

    expect(await readOnPrimary(key)).toBe('through-sentinel');
  });

  it('registers the password for redaction', () => {
    expect(redact(`AUTH ${PASSWORD}`)).toBe('AUTH <redacted>');
  });

  it('runs a BullMQ job on the primary', async () => {
    const prefix = `test-${randomBytes(4).toString('hex')}`;

    expect(await roundTrip(connection, prefix)).toEqual({ doubled: 42 });
    // BullMQ keeps the last job id of a queue in PREFIX:QUEUE:id.
    expect(await readOnPrimary(`${prefix}:round-trip:id`)).toBe('1');
  });
});

describe('Cluster', () => {
  let servers: RedisServers;
  let url: string;
  let connection: Redis;

  beforeAll(async () => {
    servers = await startCluster();
    url = `redis+cluster://${servers.ports.map((port) => `127.0.0.1:${port}`).join(',')}`;
    connection = createRedisConnection({ url, keyPrefix: '{fleet}' }, { maxRetriesPerRequest: null });
  }, 40_000);

  afterAll(async () => {
    connection?.disconnect();
    await servers?.stop();
  });

  it('creates a cluster client', () => {
    expect(connection).toBeInstanceOf(Cluster);
  });

  it('runs a BullMQ job with a hash-tagged prefix', async () => {
    expect(await roundTrip(connection, `{test-${randomBytes(4).toString('hex')}}`)).toEqual({ doubled: 42 });
  });

  it('rejects an untagged key prefix', () => {
    expect(() => createRedisConnection({ url, keyPrefix: 'fleet' })).toThrow(ConfigError);
    expect(() => createRedisConnection({ url, keyPrefix: 'fleet' })).toThrow(
      'redis.keyPrefix: invalid value "fleet" for a Redis Cluster URL; expected a prefix with a hash tag in braces, such as "{mirrorfleet}"',
    );
  });

  it('rejects an empty hash tag', () => {
    expect(() => createRedisConnection({ url, keyPrefix: '{}fleet' })).toThrow(ConfigError);
  });
});
