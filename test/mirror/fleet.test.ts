import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { MIRROR_QUEUE, type MirrorResult } from '../../queues/mirror.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { inspectRaw, skopeoCopy } from '../harness/skopeo.ts';
import { DIGESTS, FIXTURES, pushRandomImage, seedLayout } from '../harness/fixtures.ts';
import { fleetEnv, runCli, startWorker, type WorkerProcess } from '../harness/workers.ts';

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let connection: Redis;
let producer: MirrorfleetProducer;
let env: NodeJS.ProcessEnv;
const workers: WorkerProcess[] = [];
const keyPrefix = `test-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  await seedLayout(source.host, 'hello-world-manifest-list', 'library/hello-world', 'latest');
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'library/busybox', 'reused');
  env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${mirror.host}`, `prefixed=${mirror.host}/platform/mirror`],
    insecureRegistries: [source.host, mirror.host],
    extra: { MIRRORFLEET_JOB_LOCK_MS: '3000' },
  });
  workers.push(await startWorker(env, ['--concurrency', '8']), await startWorker(env, ['--concurrency', '8']));
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
});

afterAll(async () => {
  await producer?.close();
  connection?.disconnect();
  await Promise.all(workers.map((worker) => worker.kill()));
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

function request(service: string, overrides: Record<string, unknown> = {}) {
  return { v: 1 as const, source: `${source.host}/library/hello-world:latest`, registry: 'local', cluster: 'prod', service, ...overrides };
}

describe('mirror fleet', () => {
  test('service mode pulls each source blob once for 20 services', async () => {
    await source.clearLog();
    const services = Array.from({ length: 20 }, (_, i) => `svc-${i}`);

    const results = await Promise.all(services.map((service) => producer.mirrorAndWait(request(service), { timeoutMs: 120_000 })));

    const blobGets = (await source.requests()).filter((entry) => entry.method === 'GET' && entry.path.includes('/blobs/'));
    const perDigest = new Map<string, number>();
    for (const entry of blobGets) perDigest.set(entry.path, (perDigest.get(entry.path) ?? 0) + 1);
    expect(Math.max(...perDigest.values()), 'no blob is pulled twice').toBe(1);
    expect(perDigest.size, 'the 18 blobs of the 9 platforms are pulled').toBe(18);
    const sourceBytes = await inspectRaw(`${source.host}/library/hello-world:latest`);
    for (const [i, result] of results.entries()) {
      expect(result.digest).toBe(DIGESTS.helloWorldList);
      expect(result.target).toBe(`${mirror.host}/prod/services/svc-${i}/${source.host.replace(':', '_')}/library/hello-world:latest`);
      expect(result.pinned).toBe(`${mirror.host}/prod/services/svc-${i}/${source.host.replace(':', '_')}/library/hello-world@${DIGESTS.helloWorldList}`);
      expect((await inspectRaw(result.target)).equals(sourceBytes), `${result.target} reads back byte for byte`).toBe(true);
    }
    const mounted = results.reduce((sum, result) => sum + result.blobs.mounted + result.blobs.present, 0);
    expect(mounted, 'every blob after the first copy is mounted').toBe(19 * 18);
  });

  test('cluster mode makes one copy for 20 services', async () => {
    const services = Array.from({ length: 20 }, (_, i) => `shared-${i}`);

    const results = await Promise.all(
      services.map((service) => producer.mirrorAndWait(request(service, { mode: 'cluster', cluster: 'staging' }), { timeoutMs: 120_000 })),
    );

    const actions = results.map((result) => result.action);
    expect(actions.filter((action) => action === 'copied')).toHaveLength(1);
    expect(actions.filter((action) => action === 'skipped')).toHaveLength(19);
    expect(new Set(results.map((result) => result.target))).toEqual(new Set([`${mirror.host}/staging/shared/${source.host.replace(':', '_')}/library/hello-world:latest`]));
  });

  test('identical requests waiting together coalesce into one job', async () => {
    const queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
    await queue.pause();
    try {
      const first = await producer.mirror(request('coalesce'));
      const second = await producer.mirror(request('coalesce'));
      const other = await producer.mirror(request('coalesce', { platforms: ['linux/amd64'] }));
      expect(second.id).toBe(first.id);
      expect(other.id, 'a request with platforms is another request').not.toBe(first.id);
    } finally {
      await queue.resume();
      await queue.close();
    }
  });

  test('reused tag with new content is reported updated', async () => {
    const first = await producer.mirrorAndWait({ ...request('reuse'), source: `${source.host}/library/busybox:reused` }, { timeoutMs: 60_000 });
    await skopeoCopy(`oci:${FIXTURES}/busybox-1.38.0-uclibc-arm64v8`, `${source.host}/library/busybox:reused`);

    const second = await producer.mirrorAndWait({ ...request('reuse'), source: `${source.host}/library/busybox:reused` }, { timeoutMs: 60_000 });

    expect(first.action).toBe('copied');
    expect(first.digest).toBe(DIGESTS.busyboxAmd64);
    expect(second.action).toBe('updated');
    expect(second.digest).toBe(DIGESTS.busyboxArm64);
    expect((await inspectRaw(second.target)).equals(await inspectRaw(`${source.host}/library/busybox:reused`))).toBe(true);
  });

  test('repeat request is skipped without moving bytes', async () => {
    const result = await producer.mirrorAndWait(request('svc-0'), { timeoutMs: 60_000 });

    expect(result.action).toBe('skipped');
    expect(result.bytes).toEqual({ pulled: 0, pushed: 0 });
    expect(result.digest).toBe(DIGESTS.helloWorldList);
  });

  test('source inside the mirror location is not copied', async () => {
    const inside = `${mirror.host}/prod/services/svc-0/${source.host.replace(':', '_')}/library/hello-world:latest`;

    const result = await producer.mirrorAndWait({ ...request('inside'), source: inside }, { timeoutMs: 60_000 });

    expect(result.action).toBe('not-needed');
    expect(result.pinned).toBe(`${mirror.host}/prod/services/svc-0/${source.host.replace(':', '_')}/library/hello-world@${DIGESTS.helloWorldList}`);
  });

  test('undeclared registry fails at once without retries', async () => {
    const job = await producer.mirror(request('nowhere', { registry: 'evil.example:5000' }));

    await expect(producer.wait(job.id!, { timeoutMs: 30_000 })).rejects.toThrow(/not a declared mirror registry/);
    const queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
    const failed = await queue.getJob(job.id!);
    await queue.close();
    expect(failed?.attemptsMade).toBe(1);
    expect(failed?.failedReason).toMatch(/^INVALID_INPUT: registry "evil.example:5000"/);
  });

  test('invalid payload enqueued around the producer fails naming the field', async () => {
    const queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
    const job = await queue.add(MIRROR_QUEUE, { v: 1, source: 'Not/A/Valid:Ref:x', registry: 'local', cluster: 'prod', service: 'x' }, { attempts: 5 });
    await queue.close();

    await expect(producer.wait(job.id!, { timeoutMs: 30_000 })).rejects.toThrow(/source/);
    const failed = await new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix }).getJob(job.id!);
    expect(failed?.attemptsMade).toBe(1);
  });

  test('producer refuses a malformed request before enqueueing', async () => {
    await expect(producer.mirror(request('x', { mode: 'fleet' }))).rejects.toBeInstanceOf(InvalidInputError);
    await expect(producer.mirror(request('x', { mode: 'fleet' }))).rejects.toThrow(/mode \("fleet"\)/);
    await expect(producer.mirror({ ...request('x'), service: undefined })).rejects.toThrow(/service/);
  });

  test('mistyped producer option is rejected', () => {
    const options = { connection, keyPrefix } as unknown as ConstructorParameters<typeof MirrorfleetProducer>[0];

    expect(() => new MirrorfleetProducer(options)).toThrow('MirrorfleetProducer options: unknown option "keyPrefix" (the key prefix is `prefix`); accepted: connection, prefix, secretKey');
  });

  test('many waits print no warning', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on('warning', onWarning);
    const fresh = new MirrorfleetProducer({ connection, prefix: keyPrefix });
    try {
      const services = Array.from({ length: 15 }, (_, i) => `many-waits-${i}`);

      await Promise.all(services.map((service) => fresh.mirrorAndWait(request(service), { timeoutMs: 120_000 })));
      await new Promise((resolve) => setImmediate(resolve));

      expect(warnings.filter((warning) => warning.startsWith('MaxListenersExceededWarning'))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await fresh.close();
    }
  });

  test('producer close leaves no connection open', async () => {
    const name = `probe-${randomBytes(3).toString('hex')}`;
    const own = new Redis(redis.url, { maxRetriesPerRequest: null, connectionName: name });
    const probe = new MirrorfleetProducer({ connection: own, prefix: keyPrefix });
    await probe.mirrorAndWait(request('svc-0'), { timeoutMs: 60_000 });

    await probe.close();
    own.disconnect();

    const admin = new Redis(redis.url);
    const clients = ((await admin.call('CLIENT', 'LIST')) as string).split('\n').filter((line) => line.includes(`name=${name}`));
    admin.disconnect();
    expect(clients, 'connections of the closed producer').toEqual([]);
  });

  test('CLI prints the result as JSON with --json --wait', async () => {
    const run = await runCli(['mirror', `${source.host}/library/hello-world:latest`, '--registry', 'prefixed', '--cluster', 'cli', '--service', 'web', '--platform', 'linux/arm64', '--json', '--wait'], env);

    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as MirrorResult;
    expect(result.action).toBe('copied');
    expect(result.target).toBe(`${mirror.host}/platform/mirror/cli/services/web/${source.host.replace(':', '_')}/library/hello-world:latest`);
    expect(result.platforms).toEqual(['linux/arm64/v8']);
    expect(result.digestChanged).toBe(true);
    expect(result.sourceDigest).toBe(DIGESTS.helloWorldList);
    expect(result.pinned).toBe(`${mirror.host}/platform/mirror/cli/services/web/${source.host.replace(':', '_')}/library/hello-world@${result.digest}`);
    expect(Object.keys(result).sort()).toEqual(
      ['action', 'blobs', 'bytes', 'digest', 'digestChanged', 'durationMs', 'jobId', 'manifests', 'pinned', 'platforms', 'source', 'sourceDigest', 'target'].sort(),
    );
  });

  test('CLI exits 1 with the error of a failed job', async () => {
    const run = await runCli(['mirror', `${source.host}/library/no-such-image:1`, '--registry', 'local', '--cluster', 'cli', '--service', 'web', '--json', '--wait'], env);

    expect(run.code).toBe(1);
    const output = JSON.parse(run.stdout) as { state: string; error: { code: string; message: string } };
    expect(output.state).toBe('failed');
    expect(output.error.code).toBe('REGISTRY_NOT_FOUND');
    expect(output.error.message).toContain('no-such-image');
  });

  test('CLI job shows a finished job', async () => {
    const enqueued = await runCli(['mirror', `${source.host}/library/hello-world:latest`, '--registry', 'local', '--cluster', 'cli', '--service', 'lookup', '--json'], env);
    const { jobId } = JSON.parse(enqueued.stdout) as { jobId: string };
    await producer.wait(jobId, { timeoutMs: 60_000 });

    const shown = await runCli(['job', jobId, '--json'], env);
    const missing = await runCli(['job', 'no-such-job', '--json'], env);

    expect(shown.code, shown.stderr).toBe(0);
    const view = JSON.parse(shown.stdout) as { queue: string; state: string; result: MirrorResult };
    expect(view.queue).toBe('mirror');
    expect(view.state).toBe('completed');
    expect(view.result.digest).toBe(DIGESTS.helloWorldList);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no-such-job');
  });

  test('CLI exits 1 when Redis is unreachable', async () => {
    const run = await runCli(['mirror', 'busybox:1', '--registry', 'local', '--service', 'x'], { ...env, MIRRORFLEET_REDIS_URL: 'redis://127.0.0.1:1' });

    expect(run.code).toBe(1);
    expect(run.stderr).toContain('cannot reach Redis at redis://127.0.0.1:1');
  });

  test('CLI output through a pipe is whole', async () => {
    // The OpenAPI document is larger than a pipe's 64 KiB buffer.
    const run = await runCli(['api', '--print-openapi'], env);

    expect(run.code).toBe(0);
    expect(run.stdout.length).toBeGreaterThan(65_536);
    expect(() => JSON.parse(run.stdout)).not.toThrow();
  });

  test('CLI exits 2 on bad usage', async () => {
    const missingRegistry = await runCli(['mirror', 'nginx:1.27'], env);
    const badReference = await runCli(['mirror', 'UPPER/case', '--registry', 'local', '--service', 'x'], env);

    expect(missingRegistry.code).toBe(2);
    expect(missingRegistry.stderr).toContain('--registry');
    expect(badReference.code).toBe(2);
    expect(badReference.stderr).toContain('UPPER/case');
  });

  test('job killed mid-copy completes on another worker', async () => {
    await pushRandomImage(source.url, 'big/image', 'v1', [24e6, 24e6, 24e6, 24e6].map(Math.floor));
    const victim = await startWorker(env, ['--concurrency', '1']);
    // Only the victim may take the job: the shared workers are paused by stopping them.
    const survivors = workers.splice(0, workers.length);
    await Promise.all(survivors.map((worker) => worker.stop()));
    const job = await producer.mirror({ ...request('big'), source: `${source.host}/big/image:v1` });
    const queue = new Queue(MIRROR_QUEUE, { connection, prefix: keyPrefix });
    try {
      // Kill as soon as the first blob is done and the others are in flight.
      for (let i = 0; i < 600; i += 1) {
        const current = await queue.getJob(job.id!);
        const progress = current?.progress as { blobsDone?: number } | undefined;
        if (progress?.blobsDone && progress.blobsDone >= 1) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await victim.kill();
      expect(await (await queue.getJob(job.id!))!.getState(), 'the job did not finish before the kill').toBe('active');
      // distribution 2.8 returns 404 to a HEAD for an OCI manifest unless Accept names its type.
      const tagged = await fetch(`${mirror.url}/v2/prod/services/big/${source.host.replace(':', '_')}/big/image/manifests/v1`, {
        method: 'HEAD',
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' },
      });
      expect(tagged.status, 'nothing is tagged after the kill').toBe(404);

      workers.push(await startWorker(env));
      const result = await producer.wait(job.id!, { timeoutMs: 120_000 });

      expect(result.action).toBe('copied');
      expect((await inspectRaw(result.target)).equals(await inspectRaw(`${source.host}/big/image:v1`))).toBe(true);
    } finally {
      await queue.close();
    }
  });

  test('SIGTERM lets the worker finish and exit 0', async () => {
    const worker = await startWorker(env);
    const code = await worker.stop();
    expect(code).toBe(0);
    expect(worker.output()).toContain('"msg":"stopped"');
  });
});
