import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import type { MirrorRequestInput } from '../../queues/mirror.ts';
import { DIGESTS, seedLayout } from '../harness/fixtures.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';

/**
 * The `platforms` of a mirror result for a single-platform image (no index): read from the image
 * config after a copy, and not read at all when the job skips an image already in place. A platform
 * filter on such an image is checked against the platform its config names. Copies of one image
 * running at once in a worker read its platform, and its source manifest, once.
 */

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let connection: Redis;
let producer: MirrorfleetProducer;
let worker: WorkerProcess;
const keyPrefix = `platforms-${randomBytes(4).toString('hex')}`;

/** Returns `os/architecture[/variant]` from the image config as skopeo reads it, independently of mirrorfleet. */
async function platformBySkopeo(reference: string): Promise<string> {
  const result = await execa('skopeo', ['inspect', '--config', '--raw', '--tls-verify=false', `docker://${reference}`]);
  const config = JSON.parse(result.stdout) as { os: string; architecture: string; variant?: string };
  return [config.os, config.architecture, ...(config.variant ? [config.variant] : [])].join('/');
}

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-arm64v8', 'library/busybox', 'arm64');
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'library/busybox', 'amd64');
  const env = fleetEnv({ redisUrl: redis.url, keyPrefix, mirrorRegistries: [`local=${mirror.host}`], insecureRegistries: [source.host, mirror.host] });
  worker = await startWorker(env, ['--queues', 'mirror']);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
});

afterAll(async () => {
  await producer?.close();
  connection?.disconnect();
  await worker?.kill();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

test('single-platform image reports its platform', async () => {
  // Cluster mode: a second service's job has the same target, so it finds the image in place.
  const request: MirrorRequestInput = { v: 1, source: `${source.host}/library/busybox:arm64`, registry: 'local', mode: 'cluster', cluster: 'c1', service: 'web' };
  const expected = await platformBySkopeo(`${source.host}/library/busybox:arm64`);

  const copied = await producer.mirrorAndWait(request, { timeoutMs: 120_000 });

  expect(copied.action).toBe('copied');
  expect(expected).toBe('linux/arm64/v8');
  expect(copied.platforms).toEqual([expected]);

  await mirror.clearLog();
  const repeated = await producer.mirrorAndWait({ ...request, service: 'api' }, { timeoutMs: 120_000 });

  expect(repeated.action).toBe('skipped');
  const logged = await mirror.requests();
  expect(logged.some((entry) => entry.method === 'HEAD' && entry.path.includes('/manifests/')), 'the access log shows the warm check').toBe(true);
  const reads = logged.filter((entry) => entry.method === 'GET' && (entry.path.includes('/blobs/') || entry.path.includes('/manifests/')));
  expect(reads, 'the skipped job reads no manifest or blob at the mirror registry').toEqual([]);
});

test('platform filter checks a single image', async () => {
  const base: MirrorRequestInput = { v: 1, source: `${source.host}/library/busybox:arm64`, registry: 'local', cluster: 'c2', service: 'filtered' };

  const wrong = producer.mirrorAndWait({ ...base, platforms: ['linux/amd64'] }, { timeoutMs: 120_000 });
  await expect(wrong).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  await expect(wrong).rejects.toThrow(/no platform of .*busybox:arm64 matches linux\/amd64; it is a single image for linux\/arm64\/v8/);
  const catalog = (await (await fetch(`${mirror.url}/v2/_catalog`)).json()) as { repositories: string[] };
  expect(catalog.repositories.filter((name) => name.includes('c2/')), 'nothing was pushed for the rejected filter').toEqual([]);

  const matching = await producer.mirrorAndWait({ ...base, platforms: ['linux/arm64'] }, { timeoutMs: 120_000 });
  expect(matching.action).toBe('copied');
  expect(matching.platforms).toEqual(['linux/arm64/v8']);
  expect(matching.digestChanged).toBe(false);
});

test('copies at once share manifest reads', async () => {
  const services = Array.from({ length: 8 }, (_, index) => `svc${index}`);
  const base: MirrorRequestInput = { v: 1, source: `${source.host}/library/busybox:amd64`, registry: 'local', mode: 'service', cluster: 'c3', service: 'placeholder' };
  await Promise.all([mirror.clearLog(), source.clearLog()]);

  const results = await Promise.all(services.map((service) => producer.mirrorAndWait({ ...base, service }, { timeoutMs: 120_000 })));

  expect(results.map((result) => result.action)).toEqual(services.map(() => 'copied'));
  expect(results.map((result) => result.platforms)).toEqual(services.map(() => ['linux/amd64']));
  const reads = (await mirror.requests()).filter((entry) => entry.method === 'GET' && /\/(blobs|manifests)\/sha256:/.test(entry.path));
  expect(reads.filter((entry) => entry.path.includes('/manifests/')), 'one manifest GET').toHaveLength(1);
  expect(reads.filter((entry) => entry.path.includes('/blobs/')), 'one config blob GET').toHaveLength(1);
  const sourceReads = (await source.requests()).filter((entry) => entry.method === 'GET' && entry.path.includes('/manifests/'));
  expect(sourceReads, 'one manifest GET at the source, by digest').toEqual([{ method: 'GET', path: `/v2/library/busybox/manifests/${DIGESTS.busyboxAmd64}`, status: 200 }]);
});
