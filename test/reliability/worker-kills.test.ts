import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Job, type Queue } from 'bullmq';
import type { MirrorfleetProducer } from '../../queues/producer.ts';
import type { MirrorResult } from '../../queues/mirror.ts';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { waitFor } from '../harness/processes.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { connectProducer, type ProducerClients } from '../harness/producer.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { findBrokenTags, soakCount, waitForJobs } from './helpers.ts';

/**
 * Workers killed with SIGKILL at random moments while a batch of mirror jobs runs, and new workers
 * started in their place. Afterwards every job has an outcome, and no tag in the mirror registry points
 * at a manifest whose children or blobs are missing.
 */

const JOBS = soakCount(50, 200);
const KILLS = soakCount(4, 20);
const IMAGES = 10;
const WORKERS = 3;
const CONCURRENCY = 3;
// distribution 2.8 returns 404 to a request for an OCI manifest that does not accept OCI types.
const MANIFEST_TYPES = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let sourceProxy: FaultProxy;
let clients: ProducerClients;
let producer: MirrorfleetProducer;
let queue: Queue;
let env: NodeJS.ProcessEnv;
const workers: WorkerProcess[] = [];
const keyPrefix = `kills-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  sourceProxy = await startFaultProxy(source.url);
  env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${mirror.host}`],
    insecureRegistries: [sourceProxy.host, mirror.host],
    // A killed worker's jobs go back to the queue after about 2 s instead of 30 s.
    extra: { MIRRORFLEET_JOB_LOCK_MS: '2000' },
  });
  clients = connectProducer(redis.url, keyPrefix);
  ({ producer, queue } = clients);
});

afterAll(async () => {
  await clients?.close();
  await Promise.all(workers.map((worker) => worker.kill()));
  await sourceProxy?.stop();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

/** A small deterministic generator (mulberry32), so that a failing run can be repeated from its seed. */
function randomGenerator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test(`SIGKILLed workers leave no broken tag (${JOBS} jobs, ${KILLS} kills)`, async () => {
  const seed = Number(process.env.MIRRORFLEET_TEST_SEED ?? Date.now() % 1_000_000);
  const random = randomGenerator(seed);
  for (let i = 0; i < IMAGES; i += 1) {
    await pushRandomImage(source.url, `kills/app-${i}`, 'v1', [600_000 + Math.floor(random() * 600_000), 200_000, 50_000]);
  }
  // About 1.6 MB/s per blob download, so that copies last long enough to be killed halfway.
  sourceProxy.inject({ name: 'throttle', method: 'GET', path: /\/blobs\//, action: { kind: 'throttle-body', bytes: 64 * 1024, pauseMs: 40 } });
  for (let i = 0; i < WORKERS; i += 1) workers.push(await startWorker(env, ['--concurrency', String(CONCURRENCY)]));

  const requests = Array.from({ length: JOBS }, (_, i) => ({
    v: 1 as const,
    source: `${sourceProxy.host}/kills/app-${i % IMAGES}:v1`,
    registry: 'local',
    // Every fifth job shares a cluster-mode target with others, so that kills also hit tag locks.
    ...(i % 5 === 0 ? { mode: 'cluster' as const, cluster: 'shared', service: `svc-${i}` } : { cluster: 'kills', service: `svc-${i}` }),
  }));
  // The jobs arrive in one batch per kill, so that every kill meets jobs in flight however fast they run.
  const ids: string[] = [];
  for (let round = 0; round <= KILLS; round += 1) {
    const batch = requests.slice(Math.floor((round * JOBS) / (KILLS + 1)), Math.floor(((round + 1) * JOBS) / (KILLS + 1)));
    ids.push(...(await producer.mirrorBulk(batch)).map((job) => job.id!));
    if (round === KILLS) break;
    await new Promise((resolve) => setTimeout(resolve, random() * 150));
    // More active jobs than two workers can hold: at the first kill every worker has one, so the victim
    // dies mid-job. Later, jobs of killed workers count as active until they are taken back.
    await waitFor('jobs on every worker', async () => ((await queue.getJobCounts('active')).active ?? 0) > 2 * CONCURRENCY, 5_000).catch(() => undefined);
    const victim = workers.splice(Math.floor(random() * workers.length), 1)[0]!;
    await victim.kill();
    workers.push(await startWorker(env, ['--concurrency', String(CONCURRENCY)]));
  }

  const jobs = await waitForJobs(queue, ids, soakCount(120_000, 900_000));

  const withoutReason = jobs.filter((job) => job.state === 'failed' && job.failedReason.trim() === '');
  expect(withoutReason, `seed ${seed}: every failed job has a reason`).toEqual([]);
  const interrupted = (await Promise.all(ids.map((id) => Job.fromId(queue, id)))).filter((job) => (job?.stalledCounter ?? 0) > 0);
  expect(interrupted.length, `seed ${seed}: some job was taken over from a killed worker`).toBeGreaterThanOrEqual(1);
  for (const job of jobs.filter((settled) => settled.state === 'completed')) {
    const result = job.returnvalue as MirrorResult;
    const [repository, digest] = result.pinned.slice(mirror.host.length + 1).split('@');
    const head = await fetch(`${mirror.url}/v2/${repository}/manifests/${digest}`, { method: 'HEAD', headers: { accept: MANIFEST_TYPES } });
    expect(head.status, `seed ${seed}: ${result.pinned} of completed job ${job.id} exists`).toBe(200);
  }
  const { tags, broken } = await findBrokenTags(mirror.url);
  expect(tags, 'tags were written').toBeGreaterThan(0);
  expect(broken, `seed ${seed}: tags whose manifest is missing something`).toEqual([]);
}, soakCount(240_000, 1_200_000));
