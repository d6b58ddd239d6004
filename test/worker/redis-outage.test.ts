import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { watchRedisOutages } from '../../src/log/redis-outage.ts';
import { freePort, stopProcess, waitFor } from '../harness/processes.ts';
import { CLI, fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { startPersistentRedis, type PersistentRedis } from '../reliability/persistent-redis.ts';

/**
 * A worker process while Redis is down. /readyz returns 503 instead of waiting for the reconnect. The log
 * gets one line when the connection is lost and one when it is back, with no line per reconnect attempt
 * and nothing raw on stderr. SIGTERM without an active job exits without waiting for the grace period.
 */

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** Parses JSON log lines; a line that is not JSON (such as a raw error dump) fails the parse. */
function logLines(text: string): LogLine[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as LogLine);
}

let redis: PersistentRedis;
let configDir: string;
let configFile: string;
const keyPrefix = `outage-${randomBytes(4).toString('hex')}`;
const children: ChildProcess[] = [];
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  redis = await startPersistentRedis();
  configDir = await mkdtemp(join(tmpdir(), 'mirrorfleet-outage-'));
  configFile = join(configDir, 'config.json');
  // A grace period far longer than the test timeout: a stop that waited for it would fail the test.
  await writeFile(configFile, JSON.stringify({ worker: { shutdownGraceSeconds: 600 } }));
});

afterAll(async () => {
  await Promise.all(workers.map((worker) => worker.kill()));
  await Promise.all(children.map((child) => stopProcess(child)));
  await redis?.stop();
  if (configDir) await rm(configDir, { recursive: true, force: true });
});

describe('worker during a Redis crash', () => {
  let worker: WorkerProcess;
  let readyz: string;

  beforeAll(async () => {
    const metricsPort = await freePort();
    readyz = `http://127.0.0.1:${metricsPort}/readyz`;
    const env = fleetEnv({
      redisUrl: redis.url,
      keyPrefix,
      mirrorRegistries: ['local=127.0.0.1:5999'],
      insecureRegistries: [],
      extra: { MIRRORFLEET_METRICS_HOST: '127.0.0.1', MIRRORFLEET_CONFIG: configFile },
    });
    worker = await startWorker(env, ['--metrics-port', String(metricsPort)]);
    workers.push(worker);
  });

  test('readyz answers 503 while down', async () => {
    expect((await fetch(readyz)).status, 'ready before the crash').toBe(200);
    await redis.crash();

    // The abort only keeps a hanging /readyz from blocking the test until its own timeout.
    const response = await fetch(readyz, { signal: AbortSignal.timeout(15_000) });
    expect(response.status).toBe(503);
    expect(await response.text()).toMatch(/^not ready: redis/);

    await redis.restart();
    await waitFor('/readyz to answer 200 again', async () => (await fetch(readyz)).status === 200, 30_000);
  }, 60_000);

  test('outage logs one line each way', async () => {
    const before = worker.output().length;
    await redis.crash();
    // ioredis retries about once a second; a few seconds show whether every attempt is logged.
    await sleep(4_000);
    await redis.restart();
    await waitFor('the restored line', async () => worker.output().slice(before).includes('redis connection restored after'), 30_000);

    const lines = logLines(worker.output().slice(before));
    const lost = lines.filter((line) => line.msg === 'redis connection lost; reconnecting');
    expect(lost, 'one line when the connection is lost').toHaveLength(1);
    expect(lost[0]!.level, 'logged at warn').toBe(40);
    expect(lines.filter((line) => line.msg === 'worker error'), 'no worker error per attempt').toEqual([]);
    expect(lines.filter((line) => line.msg.startsWith('redis connection restored after')), 'one line when it is back').toHaveLength(1);
  }, 60_000);
});

describe('worker without Redis', () => {
  test('waits quietly and stops at once', async () => {
    const unusedPort = await freePort();
    const env = fleetEnv({
      redisUrl: `redis://127.0.0.1:${unusedPort}`,
      keyPrefix,
      mirrorRegistries: ['local=127.0.0.1:5999'],
      insecureRegistries: [],
      extra: { MIRRORFLEET_CONFIG: configFile },
    });
    const child = spawn(process.execPath, [CLI, 'worker'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));

    await waitFor('the first connection error', async () => stdout.includes('cannot connect to redis'), 30_000);
    // Several reconnect attempts of every connection, which used to log one line each.
    await sleep(4_000);
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const [code] = (await exited) as [number | null];

    expect(code).toBe(0);
    expect(stderr, 'nothing raw on stderr').toBe('');
    const lines = logLines(stdout);
    const messages = lines.map((line) => line.msg);
    expect(messages.filter((msg) => msg === 'cannot connect to redis; retrying until it answers'), stdout).toHaveLength(1);
    expect(messages, 'no start before Redis answers').not.toContain('workers started');
    expect(messages, 'no worker error per attempt').not.toContain('worker error');
    expect(messages, 'the stop did not wait for the grace period').not.toContain('grace period over; handing active jobs back to the queue');
    const stopping = messages.indexOf('stopping: no new jobs; waiting for active jobs');
    expect(stopping).toBeGreaterThanOrEqual(0);
    expect(messages.slice(stopping), 'no start-up line after stopping began').toEqual(['stopping: no new jobs; waiting for active jobs', 'stopped']);
  }, 120_000);
});

describe('outage log', () => {
  test('reminds while down', async () => {
    const output: LogLine[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') output.push(JSON.parse(line) as LogLine);
        done();
      },
    });
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const outages = watchRedisOutages(connection, pino({ level: 'info' }, destination), { reminderMs: 500 });
    try {
      await outages.whenReady();
      await redis.crash();
      await waitFor('two reminders', async () => output.filter((line) => line.msg.startsWith('redis still unreachable after')).length >= 2, 30_000);
      await redis.restart();
      await waitFor('the restored line', async () => output.some((line) => line.msg.startsWith('redis connection restored after')), 30_000);

      const reminder = output.find((line) => line.msg.startsWith('redis still unreachable after'))!;
      expect(reminder.level).toBe(40);
      expect(typeof reminder.downSeconds).toBe('number');
      expect(reminder.error, 'the reminder names the last error').toBeTruthy();
      expect(output.filter((line) => line.msg === 'redis connection lost; reconnecting')).toHaveLength(1);
      const restored = output.filter((line) => line.msg.startsWith('redis connection restored after'));
      expect(restored).toHaveLength(1);
      expect(restored[0]!.level).toBe(30);
      expect(outages.down).toBe(false);
    } finally {
      outages.stop();
      connection.disconnect();
    }
  }, 60_000);
});
