import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { MIRROR_QUEUE } from '../../queues/mirror.ts';
import { DEFAULT_LOCK_OPTIONS } from '../../src/dedupe/lock.ts';
import { startFaultProxy, type FaultProxy, type ProxiedRequest } from '../harness/fault-proxy.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { waitFor } from '../harness/processes.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { findBrokenTags, soakCount, waitForJobs } from './helpers.ts';
import { startPersistentRedis, type PersistentRedis } from './persistent-redis.ts';

/**
 * Redis crashes (SIGKILL) while mirror jobs copy blobs, and comes back from its append-only file on the
 * same port. The worker processes are not restarted. The soak variant stays down longer than a blob
 * lock lives, so that every lock held at the crash has expired when Redis returns.
 */

const IMAGES = 4;
const JOBS_BEFORE = soakCount(24, 60);
const JOBS_AFTER = soakCount(8, 20);
const OUTAGE_MS = soakCount(3_000, DEFAULT_LOCK_OPTIONS.ttlMs + 5_000);

let redis: PersistentRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let sourceProxy: FaultProxy;
let mirrorProxy: FaultProxy;
let connection: Redis;
let producer: MirrorfleetProducer;
let queue: Queue;
const workers: WorkerProcess[] = [];
const keyPrefix = `restart-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startPersistentRedis(), startRegistry(), startRegistry()]);
  [sourceProxy, mirrorProxy] = await Promise.all([startFaultProxy(source.url), startFaultProxy(mirror.url)]);
  const env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${mirrorProxy.host}`],
    insecureRegistries: [sourceProxy.host, mirrorProxy.host],
  });
  for (let i = 0; i < 2; i += 1) workers.push(await startWorker(env, ['--concurrency', '4']));
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  connection.on('error', () => undefined);
  producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
  queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
  // Connection errors are expected while Redis is down; without listeners they would be printed.
  queue.on('error', () => undefined);
  producer.bullQueue.on('error', () => undefined);
});

afterAll(async () => {
  await producer?.close();
  await queue?.close();
  connection?.disconnect();
  await Promise.all(workers.map((worker) => worker.kill()));
  await Promise.all([sourceProxy?.stop(), mirrorProxy?.stop()]);
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

function requestFor(index: number) {
  return { v: 1 as const, source: `${sourceProxy.host}/restart/app-${index % IMAGES}:v1`, registry: 'local', cluster: 'restart', service: `svc-${index}` };
}

async function scanKeys(pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await connection.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

interface UploadSession {
  digest: string;
  /** Upload URL path, which includes the target repository. */
  path: string;
  startMs: number;
  endMs: number;
  committed: boolean;
}

/**
 * Blob upload sessions seen by the proxy in front of the target: from the POST that opened a session to
 * the PUT that carried its digest. A session without a final PUT names no digest and is left out.
 */
function uploadSessions(requests: readonly ProxiedRequest[]): UploadSession[] {
  const sessions: UploadSession[] = [];
  for (const start of requests.filter((entry) => entry.method === 'POST' && entry.status === 202 && entry.location)) {
    const uuid = /\/blobs\/uploads\/([^/?]+)/.exec(start.location!)?.[1];
    if (!uuid) continue;
    const finish = requests.find((entry) => entry.method === 'PUT' && entry.path.includes(`/blobs/uploads/${uuid}`) && entry.path.includes('digest='));
    if (!finish) continue;
    const digest = decodeURIComponent(/[?&]digest=([^&]+)/.exec(finish.path)![1]!);
    sessions.push({ digest, path: start.location!, startMs: start.startMs, endMs: finish.endMs, committed: finish.status === 201 });
  }
  return sessions;
}

test('jobs, workers and locks survive a Redis crash', async () => {
  for (let i = 0; i < IMAGES; i += 1) await pushRandomImage(source.url, `restart/app-${i}`, 'v1', [1_500_000, 300_000, 20_000]);
  // About 1.6 MB/s per blob download, so that transfers are in flight when Redis goes down.
  sourceProxy.inject({ name: 'throttle', method: 'GET', path: /\/blobs\//, action: { kind: 'throttle-body', bytes: 64 * 1024, pauseMs: 40 } });

  const before = await producer.mirrorBulk(Array.from({ length: JOBS_BEFORE }, (_, i) => requestFor(i)));
  await waitFor('a blob lock held during a transfer', async () => (await scanKeys(`${keyPrefix}:lock:blob:*`)).length > 0, 30_000);
  const locksAtCrash = await scanKeys(`${keyPrefix}:lock:*`);
  const pids = workers.map((worker) => worker.child.pid);

  await redis.crash();
  await sleep(OUTAGE_MS);
  await redis.restart();

  const expiries = await Promise.all(locksAtCrash.map(async (key) => [key, await connection.pttl(key)] as const));
  const after = await producer.mirrorBulk(Array.from({ length: JOBS_AFTER }, (_, i) => requestFor(JOBS_BEFORE + i)));
  const ids = [...before, ...after].map((job) => job.id!);
  const jobs = await waitForJobs(queue, ids, soakCount(120_000, 600_000));

  expect(locksAtCrash.length).toBeGreaterThan(0);
  for (const [key, ttl] of expiries) expect(ttl, `${key} still expires after the restart`).not.toBe(-1);
  expect(jobs.filter((job) => job.state !== 'completed').map((job) => `${job.id}: ${job.failedReason}`), 'every job completes').toEqual([]);
  expect(workers.map((worker) => worker.child.pid), 'no worker was restarted').toEqual(pids);
  for (const worker of workers) {
    expect(worker.child.exitCode, `the worker process is still running; its last output:\n${worker.output().slice(-3000)}`).toBeNull();
    expect(worker.output(), 'the worker noticed the outage').toContain('redis connection lost; reconnecting');
    expect(worker.output(), 'the worker noticed the return').toContain('redis connection restored after');
  }
  expect(await scanKeys(`${keyPrefix}:lock:*`), 'every lock is released or expired').toEqual([]);

  const sessions = uploadSessions(mirrorProxy.requests);
  const byDigest = Map.groupBy(sessions, (session) => session.digest);
  for (const [digest, uploads] of byDigest) {
    // A blob committed during the outage may be copied once more into another repository afterwards,
    // because the record of where it lives could not reach Redis; what must never happen is overlap.
    expect(uploads.filter((upload) => upload.committed).length, `${digest} is committed to the target`).toBeGreaterThanOrEqual(1);
    const sorted = uploads.toSorted((a, b) => a.startMs - b.startMs);
    for (let i = 1; i < sorted.length; i += 1) {
      const [earlier, later] = [sorted[i - 1]!, sorted[i]!];
      expect(later.startMs, `two uploads of ${digest} ran at the same time: ${JSON.stringify([earlier, later])}`).toBeGreaterThanOrEqual(earlier.endMs);
    }
  }
  expect(byDigest.size, 'every blob of every image was uploaded').toBe(IMAGES * 4);
  const { broken } = await findBrokenTags(mirror.url);
  expect(broken).toEqual([]);
}, soakCount(240_000, 900_000));
