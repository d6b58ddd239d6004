import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { MirrorfleetError } from '../../src/errors.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { seedLayout } from '../harness/fixtures.ts';
import { PROJECT_ROOT, fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { runCommand } from './run.ts';

/**
 * `mirrorfleet job` and the producer client against a real Redis, real distribution registries and a
 * real worker. The worker uses the default key prefix `mirrorfleet`, as the README's producer example
 * does. Jobs that must stay waiting go to a prefix that no worker serves.
 */

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let worker: WorkerProcess;
let env: NodeJS.ProcessEnv;
let idleEnv: NodeJS.ProcessEnv;
const idlePrefix = `test-idle-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  await seedLayout(source.host, 'hello-world-manifest-list', 'library/hello-world', 'latest');
  const common = { redisUrl: redis.url, mirrorRegistries: [`local=${mirror.host}/mirror`], insecureRegistries: [source.host, mirror.host] };
  env = fleetEnv({ ...common, keyPrefix: 'mirrorfleet' });
  idleEnv = fleetEnv({ ...common, keyPrefix: idlePrefix });
  worker = await startWorker(env, ['--queues', 'mirror', '--concurrency', '2']);
});

afterAll(async () => {
  await worker?.kill();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

const hello = () => `${source.host}/library/hello-world:latest`;

/** Enqueues a mirror job with the CLI and returns its id. */
async function enqueue(args: string[], environment: NodeJS.ProcessEnv): Promise<string> {
  const run = await runCommand(['mirror', ...args, '--json'], environment);
  expect(run.code, run.stderr).toBe(0);
  return (JSON.parse(run.stdout) as { jobId: string }).jobId;
}

describe('job ids shared by queues', () => {
  test('same id in two queues needs --queue', async () => {
    const prefix = `test-shared-${randomBytes(4).toString('hex')}`;
    const shared = fleetEnv({ redisUrl: redis.url, mirrorRegistries: [`local=${mirror.host}/mirror`], insecureRegistries: [source.host, mirror.host], keyPrefix: prefix });
    const mirrorJob = await enqueue([hello(), '--registry', 'local', '--cluster', 'ids', '--service', 'web'], shared);
    const sweep = await runCommand(['sweep', '--registry', 'local', '--dry-run', '--json'], shared);
    expect(sweep.code, sweep.stderr).toBe(0);
    const sweepJob = (JSON.parse(sweep.stdout) as { jobId: string }).jobId;
    expect(sweepJob, 'job ids are counted per queue').toBe(mirrorJob);

    const ambiguous = await runCommand(['job', mirrorJob], shared);
    const chosen = await runCommand(['job', mirrorJob, '--queue', 'cleanup'], shared);

    expect(ambiguous.code).toBe(2);
    expect(ambiguous.stderr).toContain(`job ${mirrorJob} exists in queues mirror, cleanup; pass --queue with one of them`);
    expect(chosen.code, chosen.stderr).toBe(0);
    expect(chosen.stdout).toMatch(/^  queue +cleanup$/m);
  });
});

describe('job command text view', () => {
  test('waiting job shows no progress', async () => {
    const jobId = await enqueue([hello(), '--registry', 'local', '--cluster', 'view', '--service', 'waiting'], idleEnv);

    const run = await runCommand(['job', jobId], idleEnv);

    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`job ${jobId}: waiting\n`);
    expect(run.stdout).toContain('  queue     mirror\n');
    expect(run.stdout).toMatch(/^ {2}attempts {2}0 of \d+$/m);
    expect(run.stdout).toContain(`  request   mirror ${hello()} to local for cluster view, service waiting\n`);
    expect(run.stdout).not.toContain('progress');
    expect(run.stdout, 'not JSON').not.toContain('{');
  });

  test('completed job shows the result', { timeout: 180_000 }, async () => {
    const mirrored = await runCommand(['mirror', hello(), '--registry', 'local', '--cluster', 'view', '--service', 'done', '--json', '--wait', '--timeout', '120'], env);
    expect(mirrored.code, mirrored.stderr).toBe(0);
    const { jobId, pinned } = JSON.parse(mirrored.stdout) as { jobId: string; pinned: string };

    const run = await runCommand(['job', jobId], env);

    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`job ${jobId}: completed\n`);
    expect(run.stdout).toMatch(/^ {2}attempts {2}1 of \d+$/m);
    expect(run.stdout).toContain(`  pinned  ${pinned}`);
    expect(run.stdout).toMatch(/^ {2}(copied|skipped): /m);
    expect(run.stdout).not.toContain('progress');
    expect(run.stdout).not.toContain('copying');
  });

  test('failed job shows the error', { timeout: 180_000 }, async () => {
    const failed = await runCommand(['mirror', `${source.host}/library/absent:1`, '--registry', 'local', '--cluster', 'view', '--service', 'failed', '--json', '--wait', '--timeout', '120'], env);
    expect(failed.code, failed.stdout).toBe(1);
    const { jobId, error } = JSON.parse(failed.stdout) as { jobId: string; error: { code: string } };

    const run = await runCommand(['job', jobId], env);

    expect(run.code).toBe(1);
    expect(run.stdout).toContain(`job ${jobId}: failed\n`);
    expect(run.stdout).toMatch(new RegExp(`^ {2}error {2}${error.code}: `, 'm'));
    expect(run.stdout).not.toContain('progress');
  });

  test('--json prints one object', async () => {
    const jobId = await enqueue([hello(), '--registry', 'local', '--cluster', 'view', '--service', 'json'], idleEnv);

    const run = await runCommand(['job', jobId, '--json'], idleEnv);

    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ jobId, queue: 'mirror', state: 'waiting' });
  });
});

describe('job command unknown id', () => {
  test('exits 1 and names the retention', async () => {
    const run = await runCommand(['job', '999'], env);

    expect(run.code).toBe(1);
    expect(run.stderr).toContain('mirrorfleet: job 999 does not exist in queues mirror, build, cleanup: it was never enqueued, or it finished and was removed');
    expect(run.stderr).toContain('mirror jobs are kept 1 day after completing and 7 days after failing, at most 10000 of each');
    expect(run.stderr).toContain('cleanup jobs are kept 7 days after completing and 30 days after failing');
    expect(run.stderr).not.toContain('--help');
    expect(run.stdout).toBe('');
  });

  test('producer names the same retention', async () => {
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const producer = new MirrorfleetProducer({ connection, prefix: idlePrefix });
    try {
      const error = await producer.wait('999', { timeoutMs: 1000 }).catch((caught: unknown) => caught);

      expect(error).toBeInstanceOf(MirrorfleetError);
      expect((error as MirrorfleetError).message).toBe(
        'job 999 does not exist in queue mirror: it was never enqueued, or it finished and was removed (mirror jobs are kept 1 day after completing and 7 days after failing, at most 10000 of each)',
      );
    } finally {
      await producer.close();
      connection.disconnect();
    }
  });
});

describe('producer wait timeout', () => {
  test('rejects with WAIT_TIMEOUT in ms', async () => {
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const producer = new MirrorfleetProducer({ connection, prefix: idlePrefix });
    try {
      const job = await producer.mirror({ v: 1, source: hello(), registry: 'local', cluster: 'wait', service: 'short' });

      const error = await producer.wait(job.id!, { timeoutMs: 200 }).catch((caught: unknown) => caught);

      expect(error).toBeInstanceOf(MirrorfleetError);
      expect((error as MirrorfleetError).code).toBe('WAIT_TIMEOUT');
      expect((error as MirrorfleetError).message).toContain(`job ${job.id} did not finish within 200 ms; it keeps running`);
      expect(await job.getState()).toBe('waiting');
    } finally {
      await producer.close();
      connection.disconnect();
    }
  });
});

describe('README producer example', () => {
  test('runs and exits', { timeout: 180_000 }, async () => {
    const readme = await readFile(join(PROJECT_ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### From another Node service'));
    const example = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
    expect(example, 'the README has the example').toBeDefined();
    // The example runs as written, but for the names a test must replace: the package, the Redis URL,
    // and an image the test's source registry holds.
    const script = `const url = ${JSON.stringify(redis.url)};\n${example!
      .replace("from 'mirrorfleet'", `from ${JSON.stringify(join(PROJECT_ROOT, 'queues', 'index.ts'))}`)
      .replace("'nginx:1.27'", JSON.stringify(hello()))
      .replace("service: 'web'", "service: 'readme'")}`;
    // Inside the project, so that `ioredis` resolves from its node_modules.
    const folder = await mkdtemp(join(PROJECT_ROOT, 'test', 'cli', '.readme-example-'));
    try {
      await writeFile(join(folder, 'example.ts'), script);
      const child = spawn(process.execPath, [join(folder, 'example.ts')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
      // A script that leaves a connection open never exits; it is killed after this long.
      const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      const [code] = (await once(child, 'exit')) as [number | null];
      clearTimeout(killer);

      expect(code, output).toBe(0);
      expect(output).toContain(`${mirror.host}/mirror/prod/services/readme/`);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });
});
