import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort, spawn, stopProcess, waitFor } from './processes.ts';

export interface TestRedis {
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts a redis-server of its own on a free loopback port, with no persistence and `noeviction`.
 * When MIRRORFLEET_TEST_REDIS_URL is set, that server is used instead and nothing is started; tests
 * then keep apart through a fresh key prefix each.
 */
export async function startRedis(): Promise<TestRedis> {
  const external = process.env.MIRRORFLEET_TEST_REDIS_URL;
  if (external) return { url: external, stop: async () => {} };

  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'mirrorfleet-redis-'));
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory-policy', 'noeviction'],
    { stdio: 'ignore' },
  );
  const url = `redis://127.0.0.1:${port}`;
  await waitFor(`redis-server on port ${port}`, async () => {
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    // Refused connections are expected until the server listens; connect() rejects with them too.
    client.on('error', () => undefined);
    try {
      await client.connect();
      return (await client.ping()) === 'PONG';
    } finally {
      client.disconnect();
    }
  });
  return {
    url,
    stop: async () => {
      await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
