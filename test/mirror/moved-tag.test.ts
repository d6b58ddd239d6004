import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { MirrorfleetProducer } from '../../queues/producer.ts';
import type { MirrorRequestInput } from '../../queues/mirror.ts';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { waitFor } from '../harness/processes.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { connectProducer, type ProducerClients } from '../harness/producer.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';

/**
 * A request made after the source tag moved gets the new digest, even while an identical job that
 * resolved the old digest is still running: a running mirror job takes no more requests.
 */

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let sourceProxy: FaultProxy;
let clients: ProducerClients;
let producer: MirrorfleetProducer;
let queue: Queue;
let worker: WorkerProcess;
const keyPrefix = `moved-tag-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  sourceProxy = await startFaultProxy(source.url);
  const env = fleetEnv({ redisUrl: redis.url, keyPrefix, mirrorRegistries: [`local=${mirror.host}`], insecureRegistries: [sourceProxy.host, mirror.host] });
  worker = await startWorker(env, ['--queues', 'mirror']);
  clients = connectProducer(redis.url, keyPrefix);
  ({ producer, queue } = clients);
});

afterAll(async () => {
  await clients?.close();
  await worker?.kill();
  await sourceProxy?.stop();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

test('request after a tag move gets a new job', async () => {
  const before = await pushRandomImage(source.url, 'moving/app', 'v1', [1_000_000]);
  // About 640 KB/s per blob download: the first job stays running for more than a second.
  sourceProxy.inject({ name: 'throttle', method: 'GET', path: /\/blobs\//, action: { kind: 'throttle-body', bytes: 64 * 1024, pauseMs: 100 } });
  const request: MirrorRequestInput = { v: 1, source: `${sourceProxy.host}/moving/app:v1`, registry: 'local', mode: 'service', cluster: 'c1', service: 'web' };

  const first = await producer.mirror(request);
  const layerRequested = () => sourceProxy.requests.some((entry) => entry.method === 'GET' && entry.fault === 'throttle' && entry.status === 200);
  await waitFor('the first job to download its layer', async () => layerRequested() && (await queue.getJobState(first.id!)) === 'active', 30_000);
  const after = await pushRandomImage(source.url, 'moving/app', 'v1', [2_000]);
  const second = await producer.mirror(request);

  expect(second.id, 'the running job takes no more requests').not.toBe(first.id);
  const [old, moved] = await Promise.all([producer.wait(first.id!, { timeoutMs: 60_000 }), producer.wait(second.id!, { timeoutMs: 60_000 })]);
  expect(old.digest).toBe(before);
  expect(moved.digest).toBe(after);
  expect(moved.action).toBe('updated');
}, 120_000);

test('waiting identical requests share a job', async () => {
  await pushRandomImage(source.url, 'waiting/app', 'v1', [2_000]);
  await queue.pause();
  try {
    const request: MirrorRequestInput = { v: 1, source: `${sourceProxy.host}/waiting/app:v1`, registry: 'local', mode: 'service', cluster: 'c1', service: 'api' };

    const first = await producer.mirror(request);
    const second = await producer.mirror(request);

    expect(second.id).toBe(first.id);
  } finally {
    await queue.resume();
  }
});
