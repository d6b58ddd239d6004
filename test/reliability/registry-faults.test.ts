import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { MIRROR_QUEUE, type MirrorResult } from '../../queues/mirror.ts';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { freePort } from '../harness/processes.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { enqueueMirror, findBrokenTags, listTags, waitForJobs } from './helpers.ts';

/**
 * Faults of real registries, injected by a proxy in front of each: the source rate-limits, fails in
 * bursts, breaks connections mid-blob or serves wrong bytes, and the target refuses uploads. Every job is
 * enqueued with one attempt, so a success shows that the registry client absorbed the fault itself.
 * Blobs above 1 MiB are uploaded in chunks here, so that both upload paths meet the faults.
 */

const MIB = 1024 * 1024;

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let sourceProxy: FaultProxy;
let metricsPort: number;
let mirrorProxy: FaultProxy;
let worker: WorkerProcess;
let connection: Redis;
let queue: Queue;
let producer: MirrorfleetProducer;
let configDir: string;
const keyPrefix = `faults-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  [sourceProxy, mirrorProxy] = await Promise.all([startFaultProxy(source.url), startFaultProxy(mirror.url)]);
  configDir = await mkdtemp(join(tmpdir(), 'mirrorfleet-faults-'));
  const configFile = join(configDir, 'config.json');
  metricsPort = await freePort();
  await writeFile(configFile, JSON.stringify({ copy: { monolithicMaxBytes: MIB, chunkBytes: MIB } }));
  const env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`direct=${mirror.host}`, `guarded=${mirrorProxy.host}`],
    insecureRegistries: [source.host, sourceProxy.host, mirror.host, mirrorProxy.host],
    extra: { MIRRORFLEET_CONFIG: configFile, MIRRORFLEET_METRICS_PORT: String(metricsPort), MIRRORFLEET_METRICS_HOST: '127.0.0.1' },
  });
  worker = await startWorker(env, ['--concurrency', '2']);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
  producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
});

afterAll(async () => {
  await producer?.close();
  await queue?.close();
  connection?.disconnect();
  await worker?.kill();
  await Promise.all([sourceProxy?.stop(), mirrorProxy?.stop()]);
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
  if (configDir) await rm(configDir, { recursive: true, force: true });
});

afterEach(() => {
  sourceProxy.reset();
  mirrorProxy.reset();
});

function request(repository: string, service: string, registry = 'direct') {
  return { v: 1 as const, source: `${sourceProxy.host}/${repository}:v1`, registry, cluster: 'faults', service };
}

/** Target repository of `repository` mirrored for `service`, as the mirror registry names it. */
function targetRepository(repository: string, service: string): string {
  return `faults/services/${service}/${sourceProxy.host.replace(':', '_')}/${repository}`;
}

/** Runs one single-attempt job and returns its result, or throws the job's failure. */
async function mirrorOnce(input: ReturnType<typeof request>): Promise<MirrorResult> {
  const id = await enqueueMirror(queue, input, 1);
  return producer.wait(id, { timeoutMs: 90_000 });
}

/** Runs one single-attempt job that must fail, and returns its `CODE: message`. */
async function failOnce(input: ReturnType<typeof request>): Promise<string> {
  const id = await enqueueMirror(queue, input, 1);
  const [job] = await waitForJobs(queue, [id], 90_000);
  expect(job!.state, `job ${id} should fail`).toBe('failed');
  return job!.failedReason;
}

/** Layer digests of an image in the source registry, read without mirrorfleet. */
async function layerDigests(repository: string): Promise<string[]> {
  const manifest = (await inspectJson(`${source.host}/${repository}:v1`)) as { layers: { digest: string }[] };
  return manifest.layers.map((layer) => layer.digest);
}

async function inspectJson(reference: string): Promise<unknown> {
  return JSON.parse((await inspectRaw(reference)).toString('utf8'));
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function status(url: string, method = 'HEAD'): Promise<number> {
  return (await fetch(url, { method })).status;
}

async function expectSameImage(result: MirrorResult, repository: string): Promise<void> {
  const copied = await inspectRaw(result.target);
  const original = await inspectRaw(`${source.host}/${repository}:v1`);
  expect(copied.equals(original), `${result.target} reads back byte for byte`).toBe(true);
  const { broken } = await findBrokenTags(mirror.url);
  expect(broken, 'every tag in the mirror registry has all its blobs').toEqual([]);
}

describe('source faults', () => {
  test('429 retried after Retry-After', async () => {
    const repository = 'faults/rate';
    const digest = await pushRandomImage(source.url, repository, 'v1', [300_000, 200_000]);
    const manifestPath = new RegExp(`/v2/${escape(repository)}/manifests/v1$`);
    sourceProxy.inject({
      name: 'manifest-429',
      path: manifestPath,
      times: 2,
      action: { kind: 'respond', status: 429, headers: { 'retry-after': '1' }, body: '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}' },
    });
    sourceProxy.inject({
      name: 'blob-429',
      method: 'GET',
      path: new RegExp(`/v2/${escape(repository)}/blobs/sha256:`),
      times: 1,
      action: { kind: 'respond', status: 429, headers: { 'retry-after': '1' } },
    });

    const result = await mirrorOnce(request(repository, 'rate'));

    expect(result.digest).toBe(digest);
    expect(sourceProxy.fired('manifest-429')).toBe(2);
    expect(sourceProxy.fired('blob-429')).toBe(1);
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const retries = new RegExp(`mirrorfleet_registry_retries_total\\{registry="${escape(sourceProxy.host)}",reason="429"\\} (\\d+)`).exec(metrics);
    expect(Number(retries?.[1]), 'the worker counts the retries after 429 in its metrics').toBeGreaterThanOrEqual(3);
    await expectSameImage(result, repository);
    // Retry-After: 1 requests a wait of one second; the client's own first backoff is at most 250 ms.
    const manifestRequests = sourceProxy.requests.filter((entry) => manifestPath.test(entry.path));
    for (const [index, entry] of manifestRequests.entries()) {
      if (entry.fault !== 'manifest-429') continue;
      const next = manifestRequests[index + 1];
      expect(next, 'a request follows each 429').toBeDefined();
      expect(next!.startMs - entry.endMs, 'the next request waits for Retry-After').toBeGreaterThanOrEqual(950);
    }
  });

  test('503 burst retried within budget', async () => {
    const repository = 'faults/burst';
    const digest = await pushRandomImage(source.url, repository, 'v1', [400_000, 2 * MIB]);
    const unavailable = { kind: 'respond' as const, status: 503, body: '{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}' };
    sourceProxy.inject({ name: 'manifest-503', path: new RegExp(`/v2/${escape(repository)}/manifests/`), times: 3, action: unavailable });
    sourceProxy.inject({ name: 'blob-503', method: 'GET', path: new RegExp(`/v2/${escape(repository)}/blobs/`), times: 3, action: unavailable });

    const result = await mirrorOnce(request(repository, 'burst'));

    expect(result.digest).toBe(digest);
    expect(sourceProxy.fired('manifest-503')).toBe(3);
    expect(sourceProxy.fired('blob-503')).toBe(3);
    await expectSameImage(result, repository);
  });

  test('mid-blob reset resumes download', async () => {
    const repository = 'faults/reset';
    const digest = await pushRandomImage(source.url, repository, 'v1', [3 * MIB, 700_000]);
    const [large, small] = await layerDigests(repository);
    sourceProxy.inject({ name: 'reset-large', method: 'GET', path: new RegExp(`/blobs/${large}$`), times: 1, action: { kind: 'reset-mid-body', afterBytes: MIB + 123 } });
    sourceProxy.inject({ name: 'reset-small', method: 'GET', path: new RegExp(`/blobs/${small}$`), times: 1, action: { kind: 'reset-mid-body', afterBytes: 300_000 } });

    const result = await mirrorOnce(request(repository, 'reset'));

    expect(result.digest).toBe(digest);
    expect(sourceProxy.fired('reset-large')).toBe(1);
    expect(sourceProxy.fired('reset-small')).toBe(1);
    const largeGets = sourceProxy.requests.filter((entry) => entry.method === 'GET' && entry.path.endsWith(large!));
    expect(largeGets.length, 'the large blob is asked for again after the reset').toBeGreaterThanOrEqual(2);
    expect(largeGets[1]!.range, 'the second request asks only for the rest').toMatch(/^bytes=[1-9]\d*-$/);
    await expectSameImage(result, repository);
  });

  for (const [label, size] of [
    ['chunked', 3 * MIB],
    ['monolithic', 400_000],
  ] as const) {
    test(`corrupt blob never pushed (${label} upload)`, async () => {
      const repository = `faults/corrupt-${label}`;
      await pushRandomImage(source.url, repository, 'v1', [size]);
      const [layer] = await layerDigests(repository);
      sourceProxy.inject({ name: 'corrupt', method: 'GET', path: new RegExp(`/blobs/${layer}$`), action: { kind: 'corrupt-body' } });
      const original = Buffer.from(await (await fetch(`${source.url}/v2/${repository}/blobs/${layer}`)).arrayBuffer());
      original[Math.floor(original.length / 2)] = original[Math.floor(original.length / 2)]! ^ 0xff;
      const corruptDigest = `sha256:${createHash('sha256').update(original).digest('hex')}`;
      await mirror.clearLog();

      const reason = await failOnce(request(repository, `corrupt-${label}`));

      expect(sourceProxy.fired('corrupt')).toBeGreaterThanOrEqual(1);
      expect(reason.startsWith('DIGEST_MISMATCH: '), reason).toBe(true);
      expect(reason).toContain(layer);
      const target = `${mirror.url}/v2/${targetRepository(repository, `corrupt-${label}`)}`;
      expect(await status(`${target}/blobs/${layer}`), 'the target has no blob under the expected digest').toBe(404);
      expect(await status(`${target}/blobs/${corruptDigest}`), 'the target has no blob of the wrong bytes').toBe(404);
      expect(await listTags(mirror.url, targetRepository(repository, `corrupt-${label}`)), 'nothing is tagged').toEqual([]);
      if (label === 'chunked') {
        const hex = layer!.slice('sha256:'.length);
        const commits = (await mirror.requests()).filter((entry) => entry.method === 'PUT' && entry.path.includes(hex));
        expect(commits, 'no upload of the blob is committed').toEqual([]);
      }
    });
  }
});

describe('target faults', () => {
  const storageFull = '{"errors":[{"code":"UNKNOWN","message":"storage full"}]}';

  test('blob upload 507 fails untagged', async () => {
    const repository = 'faults/full-put';
    await pushRandomImage(source.url, repository, 'v1', [200_000, 2 * MIB]);
    mirrorProxy.inject({ name: 'full', method: 'PUT', path: /\/blobs\/uploads\//, action: { kind: 'respond', status: 507, body: storageFull } });
    mirrorProxy.inject({ name: 'full-patch', method: 'PATCH', path: /\/blobs\/uploads\//, action: { kind: 'respond', status: 507, body: storageFull } });

    const reason = await failOnce(request(repository, 'full-put', 'guarded'));

    expect(mirrorProxy.fired('full') + mirrorProxy.fired('full-patch')).toBeGreaterThanOrEqual(1);
    expect(reason).toMatch(/^REGISTRY_UNAVAILABLE: /);
    expect(reason).toContain('507');
    expect(reason).toContain('storage full');
    expect(reason).toContain(mirrorProxy.host);
    const manifestPuts = mirrorProxy.requests.filter((entry) => entry.method === 'PUT' && entry.path.includes('/manifests/'));
    expect(manifestPuts, 'no manifest is pushed').toEqual([]);
    expect(await listTags(mirror.url, targetRepository(repository, 'full-put')), 'nothing is tagged').toEqual([]);
  });

  test('upload start 500 fails untagged', async () => {
    const repository = 'faults/full-post';
    await pushRandomImage(source.url, repository, 'v1', [200_000]);
    mirrorProxy.inject({ name: 'full', method: 'POST', path: /\/blobs\/uploads\/$/, action: { kind: 'respond', status: 500, body: storageFull } });

    const reason = await failOnce(request(repository, 'full-post', 'guarded'));

    expect(mirrorProxy.fired('full')).toBeGreaterThanOrEqual(1);
    expect(reason).toMatch(/^REGISTRY_UNAVAILABLE: /);
    expect(reason).toContain('500');
    expect(reason).toContain('storage full');
    const manifestPuts = mirrorProxy.requests.filter((entry) => entry.method === 'PUT' && entry.path.includes('/manifests/'));
    expect(manifestPuts, 'no manifest is pushed').toEqual([]);
    expect(await listTags(mirror.url, targetRepository(repository, 'full-post')), 'nothing is tagged').toEqual([]);
  });
});
