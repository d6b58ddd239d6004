import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MIRROR_QUEUE, type MirrorResult } from '../../queues/mirror.ts';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { waitFor } from '../harness/processes.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { enqueueMirror, findBrokenTags, waitForJobs } from '../reliability/helpers.ts';

/**
 * SIGTERM in the middle of a large copy, with a shutdown grace period (worker.shutdownGraceSeconds)
 * shorter than the copy: the worker hands the job back and exits 0. The job is not failed, no failure is
 * logged for it, and nothing is tagged. A second worker then copies the image.
 */

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let sourceProxy: FaultProxy;
let connection: Redis;
let queue: Queue;
let configDir: string;
let env: NodeJS.ProcessEnv;
const workers: WorkerProcess[] = [];
const keyPrefix = `shutdown-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  sourceProxy = await startFaultProxy(source.url);
  configDir = await mkdtemp(join(tmpdir(), 'mirrorfleet-shutdown-'));
  const configFile = join(configDir, 'config.json');
  await writeFile(configFile, JSON.stringify({ worker: { shutdownGraceSeconds: 1 } }));
  env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${mirror.host}`],
    insecureRegistries: [sourceProxy.host, mirror.host],
    extra: { MIRRORFLEET_CONFIG: configFile },
  });
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
});

afterAll(async () => {
  await queue?.close();
  connection?.disconnect();
  await Promise.all(workers.map((worker) => worker.kill()));
  await sourceProxy?.stop();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
  if (configDir) await rm(configDir, { recursive: true, force: true });
});

test('SIGTERM mid-copy hands the job back', async () => {
  await pushRandomImage(source.url, 'shutdown/app', 'v1', [8_000_000]);
  // About 640 KB/s per blob download: the 8 MB layer takes about 12 s, far longer than the 1 s grace.
  sourceProxy.inject({ name: 'throttle', method: 'GET', path: /\/blobs\//, action: { kind: 'throttle-body', bytes: 64 * 1024, pauseMs: 100 } });
  const first = await startWorker(env, ['--queues', 'mirror']);
  workers.push(first);

  const jobId = await enqueueMirror(queue, { v: 1, source: `${sourceProxy.host}/shutdown/app:v1`, registry: 'local', cluster: 'c1', service: 's1' }, 3);
  const layerRequested = () => sourceProxy.requests.some((request) => request.method === 'GET' && request.fault === 'throttle' && request.status === 200);
  await waitFor('the layer download to start', async () => layerRequested() && (await queue.getJobState(jobId)) === 'active', 30_000);

  const exited = first.stop();
  const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running after 60 s'), 60_000))]);

  expect(code, first.output()).toBe(0);
  const lines = first
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { msg: string; jobId?: string; queue?: string; jobs?: unknown });
  const handedBack = lines.filter((line) => line.msg === 'job handed back to the queue');
  expect(handedBack).toHaveLength(1);
  expect(handedBack[0]).toMatchObject({ jobId, queue: MIRROR_QUEUE });
  const graceOver = lines.find((line) => line.msg === 'grace period over; handing active jobs back to the queue');
  expect(graceOver?.jobs, 'the grace line names the job as the hand-back line does').toEqual([{ jobId, queue: MIRROR_QUEUE }]);
  const afterHandBack = lines.slice(lines.indexOf(handedBack[0]!) + 1).filter((line) => line.jobId === jobId);
  expect(afterHandBack, 'no failure is logged for the handed-back job').toEqual([]);
  const job = await Job.fromId(queue, jobId);
  expect(await queue.getJobState(jobId), 'the job waits for another worker').toBe('waiting');
  expect(job?.failedReason ?? '', 'no failure was recorded').toBe('');
  expect(job?.attemptsMade, 'no attempt was spent').toBe(0);
  const { tags } = await findBrokenTags(mirror.url);
  expect(tags, 'nothing was tagged in the mirror registry').toBe(0);

  sourceProxy.reset();
  const second = await startWorker(env, ['--queues', 'mirror']);
  workers.push(second);
  const [settled] = await waitForJobs(queue, [jobId], 60_000);

  expect(settled!.state, settled!.failedReason).toBe('completed');
  expect((settled!.returnvalue as MirrorResult).action).toBe('copied');
  const after = await findBrokenTags(mirror.url);
  expect(after.tags).toBe(1);
  expect(after.broken).toEqual([]);
}, 180_000);
