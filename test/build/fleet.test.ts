import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { BUILD_QUEUE, type BuildRequestInput, type BuildResult } from '../../queues/build.ts';
import { seedLayout } from '../harness/fixtures.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, runCli, startWorker, type WorkerProcess } from '../harness/workers.ts';

/** The build queue end to end: a `mirrorfleet worker` process, the producer client and the CLI. */

const SECRET_KEY = Buffer.alloc(32, 11).toString('base64');
const SECRET_VALUE = `fleet-${randomBytes(12).toString('hex')}`;

let redis: TestRedis;
let registry: TestRegistry;
let worker: WorkerProcess;
let connection: Redis;
let producer: MirrorfleetProducer;
let queue: Queue;
let env: NodeJS.ProcessEnv;
let directory: string;
let repository: string;
let commitId: string;
const keyPrefix = `test-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, registry] = await Promise.all([startRedis(), startRegistry()]);
  await seedLayout(registry.host, 'busybox-1.38.0-uclibc-amd64', 'library/busybox', '1.38');

  directory = await mkdtemp(join(tmpdir(), 'mirrorfleet-build-fleet-'));
  repository = join(directory, 'shop');
  commitId = await commitDockerfile(
    repository,
    `FROM ${registry.host}/library/busybox:1.38\nRUN --mount=type=secret,id=API_TOKEN test -s /run/secrets/API_TOKEN\nARG GREETING=hello\nRUN echo "$GREETING" > /greeting\n`,
  );

  env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${registry.host}`],
    insecureRegistries: [registry.host],
    extra: { MIRRORFLEET_SECRET_KEY: SECRET_KEY, MIRRORFLEET_BUILDER: 'buildah' },
  });
  worker = await startWorker(env, ['--queues', 'build']);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  producer = new MirrorfleetProducer({ connection, prefix: keyPrefix, secretKey: SECRET_KEY });
  queue = new Queue(BUILD_QUEUE, { connection, prefix: keyPrefix });
});

afterAll(async () => {
  await queue?.close();
  await producer?.close();
  connection?.disconnect();
  await worker?.kill();
  await Promise.all([redis?.stop(), registry?.stop()]);
  if (directory) await rm(directory, { recursive: true, force: true });
});

async function commitDockerfile(path: string, content: string): Promise<string> {
  await mkdir(path, { recursive: true });
  const git = (args: string[]) => execa('git', ['-C', path, ...args]);
  await git(['init', '--quiet']);
  await git(['config', 'user.email', 'test@example.invalid']);
  await git(['config', 'user.name', 'test']);
  await writeFile(join(path, 'Dockerfile'), content);
  await git(['add', '-A']);
  await git(['commit', '--quiet', '-m', 'dockerfile']);
  return (await git(['rev-parse', 'HEAD'])).stdout;
}

function request(overrides: Partial<BuildRequestInput> = {}): BuildRequestInput {
  return {
    v: 1,
    git: { url: repository, commit: commitId },
    variables: [
      { name: 'GREETING', value: 'hi' },
      { name: 'API_TOKEN', value: SECRET_VALUE, secret: true },
    ],
    registry: 'local',
    cluster: 'prod',
    service: 'api',
    ...overrides,
  };
}

const cliArgs = ['build', '--git', '', '--commit', '', '--build-env', 'GREETING=hi', '--secret-env', 'API_TOKEN', '--cluster', 'prod', '--service', 'web', '--registry', 'local', '--json', '--wait'];

describe('build fleet', () => {
  test('CLI builds then skips', async () => {
    const args = [...cliArgs];
    args[2] = repository;
    args[4] = commitId;
    const cliEnv = { ...env, API_TOKEN: SECRET_VALUE };

    const first = await runCli(args, cliEnv);
    const second = await runCli(args, cliEnv);

    expect(first.code, first.stderr).toBe(0);
    const built = JSON.parse(first.stdout) as BuildResult;
    expect(built.action).toBe('built');
    expect(Object.keys(built).sort()).toEqual(['action', 'cacheHit', 'digest', 'durationMs', 'jobId', 'pinned', 'tag', 'target']);
    expect(second.code, second.stderr).toBe(0);
    const skipped = JSON.parse(second.stdout) as BuildResult;
    expect(skipped.action).toBe('skipped');
    expect(skipped.digest).toBe(built.digest);
    expect(Object.keys(skipped)).not.toContain('cacheHit');

    const { logs } = await queue.getJobLogs(built.jobId);
    expect(logs.some((line) => line.startsWith('STEP 1/4: FROM'))).toBe(true);
    expect(logs.join('\n')).not.toContain(SECRET_VALUE);
    const stored = await queue.getJob(built.jobId);
    expect(JSON.stringify(stored?.data)).not.toContain(SECRET_VALUE);
  });

  test('unknown key fails without retries', async () => {
    const stranger = new MirrorfleetProducer({ connection, prefix: keyPrefix, secretKey: Buffer.alloc(32, 12).toString('base64') });
    try {
      const job = await stranger.build(request({ service: 'stranger' }));

      await expect(stranger.waitForBuild(job.id!, { timeoutMs: 30_000 })).rejects.toThrow(/cannot decrypt build variable (API_TOKEN|GREETING): it was encrypted with key id/);
      const failed = await queue.getJob(job.id!);
      expect(failed?.attemptsMade).toBe(1);
      expect(failed?.failedReason).toMatch(/^INVALID_CONFIG: /);
    } finally {
      await stranger.close();
    }
  });

  test('wrong Dockerfile fails once', async () => {
    const broken = await commitDockerfile(join(directory, 'broken'), `FROM ${registry.host}/library/busybox:1.38\nFROBNICATE\n`);
    const job = await producer.build(request({ git: { url: join(directory, 'broken'), commit: broken } }));

    await expect(producer.waitForBuild(job.id!, { timeoutMs: 60_000 })).rejects.toThrow(/Unknown instruction/);
    const failed = await queue.getJob(job.id!);
    expect(failed?.attemptsMade).toBe(1);
    expect(failed?.failedReason).toMatch(/^INVALID_INPUT: the build failed because of the Dockerfile/);
  });

  test('waiting identical requests share a job', async () => {
    await queue.pause();
    try {
      const first = await producer.build(request({ service: 'twin' }));
      const second = await producer.build(request({ service: 'twin' }));
      const other = await producer.build(request({ service: 'twin', force: true }));

      expect(second.id).toBe(first.id);
      expect(other.id).not.toBe(first.id);
    } finally {
      await queue.resume();
    }
  });

  test('worker without a builder leaves build jobs', async () => {
    const otherPrefix = `${keyPrefix}-nobuilder`;
    const builderless = await startWorker({ ...env, MIRRORFLEET_KEY_PREFIX: otherPrefix, PATH: join(directory, 'empty-path'), MIRRORFLEET_BUILDER: 'auto' }, ['--queues', 'build']);
    const otherProducer = new MirrorfleetProducer({ connection, prefix: otherPrefix, secretKey: SECRET_KEY });
    try {
      const job = await otherProducer.build(request({ service: 'waiting' }));
      // Long enough for a worker to take a waiting job many times over; a taken job would be active or failed.
      await new Promise((resolve) => setTimeout(resolve, 1_500));

      expect(await job.getState()).toBe('waiting');
      expect(builderless.output()).toContain('not taking build jobs: no builder is installed');
      expect(await builderless.stop()).toBe(0);
    } finally {
      await otherProducer.close();
      await builderless.kill();
    }
  });

  test('CLI rejects secret on command line', async () => {
    const args = [...cliArgs];
    args[2] = repository;
    args[4] = commitId;
    args[8] = 'API_TOKEN=visible';

    const run = await runCli(args, env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--secret-env takes a variable NAME only');
  });

  test('CLI requires the git source', async () => {
    const run = await runCli(['build', '--commit', commitId, '--cluster', 'prod', '--service', 'web', '--registry', 'local'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--git is required');
  });
});
