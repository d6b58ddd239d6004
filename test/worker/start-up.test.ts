import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config/config.ts';
import { InvalidInputError, PortUnavailableError } from '../../src/errors.ts';
import { startApi } from '../../src/api/server.ts';
import { startWorkers } from '../../workers/run.ts';
import { freePort, waitFor } from '../harness/processes.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startPersistentRedis } from '../reliability/persistent-redis.ts';
import { fleetEnv, runCli, startWorker } from '../harness/workers.ts';

/**
 * Start-up of worker and API processes: a port that is in use or invalid ends the start with one
 * clear error and leaves no Redis connection open, and a worker without a mirror registry warns.
 */

let redis: TestRedis;
let observer: Redis;
let busy: Server;
let busyPort: number;
const keyPrefix = `start-up-${randomBytes(4).toString('hex')}`;

/** Configuration of a process that talks to the test's Redis and listens on loopback only. */
function testConfig(extra: Record<string, string> = {}): Config {
  return loadConfig({
    MIRRORFLEET_REDIS_URL: redis.url,
    MIRRORFLEET_KEY_PREFIX: keyPrefix,
    MIRRORFLEET_MIRROR_REGISTRIES: 'local=127.0.0.1:5999',
    MIRRORFLEET_METRICS_HOST: '127.0.0.1',
    MIRRORFLEET_API_HOST: '127.0.0.1',
    MIRRORFLEET_API_TOKENS: 'start-up-token-0123456789abcdef:enqueue',
    MIRRORFLEET_LOG_LEVEL: 'error',
    ...extra,
  });
}

/** Returns the number of Redis connections other than the observer's own. */
async function otherClients(): Promise<number> {
  const own = await observer.client('ID');
  const lines = ((await observer.client('LIST')) as string).split('\n').filter((line) => line.startsWith('id='));
  return lines.filter((line) => !line.startsWith(`id=${own} `)).length;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the start to fail');
}

beforeAll(async () => {
  redis = await startRedis();
  observer = new Redis(redis.url, { maxRetriesPerRequest: null });
  busyPort = await freePort();
  busy = createServer();
  busy.listen(busyPort, '127.0.0.1');
  await once(busy, 'listening');
});

afterEach(async () => {
  // Every start below must leave nothing connected; a connection left behind would keep a process alive.
  await waitFor('no Redis connection left', async () => (await otherClients()) === 0, 10_000);
});

afterAll(async () => {
  busy?.close();
  observer?.disconnect();
  await redis?.stop();
});

describe('worker metrics port', () => {
  test('port in use rejects the start', async () => {
    const error = await rejection(startWorkers({ config: testConfig(), queues: ['mirror'], concurrency: 1, metricsPort: busyPort }));

    expect(error).toBeInstanceOf(PortUnavailableError);
    const message = (error as Error).message;
    expect(message).toContain(`port ${busyPort} on 127.0.0.1`);
    expect(message).toContain('(from --metrics-port)');
    expect(message).toContain('pass --metrics-port 0 to turn the metrics server off');
    expect(await otherClients(), 'no Redis connection was opened').toBe(0);
  });

  test('invalid port rejects the start', async () => {
    const error = await rejection(startWorkers({ config: testConfig(), queues: ['mirror'], concurrency: 1, metricsPort: 70_000 }));

    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toBe('invalid metrics server port 70000 (from --metrics-port): expected an integer from 0 to 65535 (0 turns it off)');
    expect(await otherClients(), 'no Redis connection was opened').toBe(0);
  });

  test('command prints one line and exits 1', async () => {
    const env = fleetEnv({
      redisUrl: redis.url,
      keyPrefix,
      mirrorRegistries: ['local=127.0.0.1:5999'],
      insecureRegistries: [],
      extra: { MIRRORFLEET_METRICS_PORT: String(busyPort), MIRRORFLEET_METRICS_HOST: '127.0.0.1' },
    });

    const result = await runCli(['worker', '--queues', 'mirror'], env);

    expect(result.code).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toContain(`port ${busyPort} on 127.0.0.1 (from MIRRORFLEET_METRICS_PORT) is already in use`);
    expect(lines[0]).toContain('--metrics-port 0');
  });
});

describe('API port', () => {
  test('port in use rejects the start and closes Redis', async () => {
    const error = await rejection(startApi({ config: testConfig(), logger: pino({ level: 'silent' }), port: busyPort, host: '127.0.0.1' }));

    expect(error).toBeInstanceOf(PortUnavailableError);
    const message = (error as Error).message;
    expect(message).toContain(`cannot start the API: port ${busyPort} on 127.0.0.1 (from --port) is already in use`);
    expect(message).toContain('pass --port with a free port');
  });

  test('invalid port rejects the start before Redis', async () => {
    const error = await rejection(startApi({ config: testConfig(), logger: pino({ level: 'silent' }), port: 70_000, host: '127.0.0.1' }));

    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toContain('invalid API port 70000 (from --port)');
    expect(await otherClients(), 'no Redis connection was opened').toBe(0);
  });
});

describe('mirror registries', () => {
  const warning = 'no mirror registry is declared, so every mirror job will be rejected';

  test('worker without one warns once at start', async () => {
    const env = fleetEnv({ redisUrl: redis.url, keyPrefix, mirrorRegistries: [], insecureRegistries: [] });
    const worker = await startWorker(env, ['--queues', 'mirror']);
    try {
      const lines = worker.output().split('\n').filter((line) => line.includes(warning));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain('MIRRORFLEET_MIRROR_REGISTRIES=NAME=HOST[:PORT][/PREFIX]');
    } finally {
      expect(await worker.stop()).toBe(0);
    }
  });

  test('worker with one does not warn', async () => {
    const env = fleetEnv({ redisUrl: redis.url, keyPrefix, mirrorRegistries: ['local=127.0.0.1:5999'], insecureRegistries: [] });
    const worker = await startWorker(env, ['--queues', 'mirror']);
    try {
      expect(worker.output()).not.toContain(warning);
    } finally {
      expect(await worker.stop()).toBe(0);
    }
  });
});

describe('Redis credentials', () => {
  test('wrong password ends the start with one line', async () => {
    const guarded = await startPersistentRedis({ password: 'right-password-4f1c' });
    try {
      const wrongUrl = guarded.url.replace('right-password-4f1c', 'wrong-password-9d2e');
      const env = fleetEnv({ redisUrl: wrongUrl, keyPrefix, mirrorRegistries: ['local=127.0.0.1:5999'], insecureRegistries: [] });

      const worker = await runCli(['worker', '--queues', 'mirror', '--metrics-port', '0'], env);
      const api = await runCli(['api', '--port', '0', '--host', '127.0.0.1'], { ...env, MIRRORFLEET_API_TOKENS: 'start-up-token-0123456789abcdef:enqueue' });

      for (const result of [worker, api]) {
        expect(result.code).toBe(2);
        const lines = result.stderr.trim().split('\n');
        expect(lines, result.stderr).toHaveLength(1);
        expect(lines[0]).toContain('Redis rejected the credentials');
        expect(lines[0]).toContain('WRONGPASS');
        expect(result.stderr + result.stdout, 'the password is not shown').not.toContain('wrong-password-9d2e');
      }
    } finally {
      await guarded.stop();
    }
  });
});
