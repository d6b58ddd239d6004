import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { freePort, spawn, stopProcess, waitFor } from '../harness/processes.ts';

/**
 * A redis-server that can crash and come back. It persists to an append-only file with an fsync after
 * every write (`appendfsync always`), so a SIGKILL loses no acknowledged write. Its port and data folder
 * stay fixed, so a restart serves the same data at the same URL.
 */
export interface PersistentRedis {
  url: string;
  port: number;
  /** Kills the server with SIGKILL, as a crash would. */
  crash(): Promise<void>;
  /** Starts the server again on the same port with the same data folder. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface PersistentRedisOptions {
  /** Sets `requirepass`; the URL then carries the password. */
  password?: string;
  /** Persistence on (default) or off; off exists to show that the restart test depends on it. */
  appendOnly?: boolean;
}

export async function startPersistentRedis(options: PersistentRedisOptions = {}): Promise<PersistentRedis> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'mirrorfleet-redis-aof-'));
  const auth = options.password === undefined ? '' : `:${encodeURIComponent(options.password)}@`;
  const url = `redis://${auth}127.0.0.1:${port}`;
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--save', '',
    '--appendonly', options.appendOnly === false ? 'no' : 'yes',
    '--appendfsync', 'always',
    '--maxmemory-policy', 'noeviction',
    ...(options.password === undefined ? [] : ['--requirepass', options.password]),
  ];
  let child: ChildProcess | undefined;

  const start = async () => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    await waitFor(`redis-server on port ${port}`, async () => {
      const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on('error', () => undefined);
      try {
        await client.connect();
        // While the append-only file loads, commands fail with LOADING, which PING alone does not show.
        return (await client.ping()) === 'PONG' && (await client.info('persistence')).includes('loading:0');
      } finally {
        client.disconnect();
      }
    });
  };
  await start();

  return {
    url,
    port,
    crash: async () => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    },
    restart: start,
    stop: async () => {
      if (child) await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
