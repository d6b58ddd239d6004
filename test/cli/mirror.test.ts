import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { MIRROR_QUEUE, type MirrorResult } from '../../queues/mirror.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { DIGESTS, seedLayout } from '../harness/fixtures.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { runCommand } from './run.ts';

/**
 * The `mirror`, `release`, `sweep` and `worker` commands against a real Redis, real distribution
 * registries and a real worker process. Jobs that must stay waiting go to a key prefix that no worker
 * serves.
 */

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let connection: Redis;
let worker: WorkerProcess;
/** Served by the worker. */
let env: NodeJS.ProcessEnv;
/** Served by no worker: jobs stay waiting. */
let idleEnv: NodeJS.ProcessEnv;
const idlePrefix = `test-idle-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  await seedLayout(source.host, 'hello-world-manifest-list', 'library/hello-world', 'latest');
  const common = {
    redisUrl: redis.url,
    // One mirror registry on the test registry's host, and two that share another host.
    mirrorRegistries: [`only=${mirror.host}/only/mirror`, 'team-a=shared.example/a', 'team-b=shared.example/b'],
    insecureRegistries: [source.host, mirror.host],
  };
  env = fleetEnv({ ...common, keyPrefix: `test-${randomBytes(4).toString('hex')}` });
  idleEnv = fleetEnv({ ...common, keyPrefix: idlePrefix });
  worker = await startWorker(env, ['--queues', 'mirror,cleanup', '--concurrency', '4']);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  connection?.disconnect();
  await worker?.kill();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

/** Counts the jobs of a queue under the prefix that no worker serves. */
async function idleJobCount(): Promise<number> {
  const queue = new Queue(MIRROR_QUEUE, { connection, prefix: idlePrefix });
  try {
    const counts = await queue.getJobCounts();
    return Object.values(counts).reduce((sum, count) => sum + count, 0);
  } finally {
    await queue.close();
  }
}

async function idleJob(jobId: string) {
  const queue = new Queue(MIRROR_QUEUE, { connection, prefix: idlePrefix });
  try {
    const job = await queue.getJob(jobId);
    return { data: job?.data as Record<string, unknown> | undefined, state: await job?.getState() };
  } finally {
    await queue.close();
  }
}

const hello = () => `${source.host}/library/hello-world:latest`;

describe('mirror --wait timeout', () => {
  test('reports a waiting job and exits 3', async () => {
    const run = await runCommand(['mirror', hello(), '--registry', 'only', '--cluster', 'timeout', '--service', 'text', '--wait', '--timeout', '1'], idleEnv);

    expect(run.code, run.stderr).toBe(3);
    const jobId = /^job (\S+) did not finish within 1 s and is still waiting; the job keeps going, follow it with: mirrorfleet job \1 --queue mirror$/m.exec(run.stderr)?.[1];
    expect(jobId, run.stderr).toBeDefined();
    expect(run.stderr).not.toContain('failed');
    expect((await idleJob(jobId!)).state).toBe('waiting');
  });

  test('prints the state as JSON with --json', async () => {
    const run = await runCommand(['mirror', hello(), '--registry', 'only', '--cluster', 'timeout', '--service', 'json', '--json', '--wait', '--timeout', '1'], idleEnv);

    expect(run.code, run.stderr).toBe(3);
    const output = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(Object.keys(output).sort()).toEqual(['jobId', 'state', 'timedOut']);
    expect(output.state).toBe('waiting');
    expect(output.timedOut).toBe(true);
    expect((await idleJob(output.jobId as string)).state).toBe('waiting');
  });

  test('cleanup wait also exits 3', async () => {
    const run = await runCommand(['sweep', '--registry', 'only', '--json', '--wait', '--timeout', '1'], idleEnv);

    expect(run.code, run.stderr).toBe(3);
    expect(JSON.parse(run.stdout)).toEqual({ jobId: expect.any(String), state: 'waiting', timedOut: true });
  });
});

describe('mirror input checks', () => {
  test('undeclared registry exits 2 before enqueueing', async () => {
    const before = await idleJobCount();

    const run = await runCommand(['mirror', hello(), '--registry', 'nowhere.example:5000', '--service', 'web'], idleEnv);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain(
      `registry "nowhere.example:5000" is not a declared mirror registry; declared: only (${mirror.host}/only/mirror), team-a (shared.example/a), team-b (shared.example/b)`,
    );
    expect(await idleJobCount()).toBe(before);
  });

  test('no declared registry warns and enqueues', async () => {
    const before = await idleJobCount();

    const run = await runCommand(['mirror', hello(), '--registry', 'anything', '--cluster', 'unchecked', '--service', 'web', '--json'], { ...idleEnv, MIRRORFLEET_MIRROR_REGISTRIES: '' });

    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('warning: --registry "anything" is not checked, because this configuration declares no mirror registry');
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(await idleJobCount()).toBe(before + 1);
  });

  test('unknown platform exits 2 with a hint', async () => {
    const before = await idleJobCount();

    const run = await runCommand(['mirror', hello(), '--registry', 'only', '--service', 'web', '--platform', 'linux/aarch64'], idleEnv);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('invalid --platform "linux/aarch64": unknown architecture "aarch64" (did you mean linux/arm64?); accepted: 386, amd64,');
    expect(run.stderr).not.toContain('platforms.0');
    expect(run.stderr).toContain('run "mirrorfleet mirror --help" for usage');
    expect(await idleJobCount()).toBe(before);
  });

  test('bare host of two registries exits 2 listing them', async () => {
    const run = await runCommand(['mirror', hello(), '--registry', 'shared.example', '--service', 'web'], idleEnv);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('registry "shared.example" matches 2 declared mirror registries on that host: team-a (shared.example/a), team-b (shared.example/b)');
  });

  test('bare host selects its only registry', async () => {
    const run = await runCommand(['mirror', hello(), '--registry', mirror.host, '--cluster', 'host', '--service', 'web', '--json', '--wait', '--timeout', '120'], env);

    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as MirrorResult;
    expect(result.target).toBe(`${mirror.host}/only/mirror/host/services/web/${source.host.replace(':', '_')}/library/hello-world:latest`);
    expect(result.digest).toBe(DIGESTS.helloWorldList);
  });

  test('--referrers sets the request field', async () => {
    const run = await runCommand(['mirror', hello(), '--registry', 'only', '--cluster', 'referrers', '--service', 'web', '--referrers', 'signatures', '--json'], idleEnv);

    expect(run.code, run.stderr).toBe(0);
    const { jobId } = JSON.parse(run.stdout) as { jobId: string };
    expect((await idleJob(jobId)).data?.referrers).toBe('signatures');
  });

  test('--referrers rejects an unknown selection', async () => {
    const run = await runCommand(['mirror', hello(), '--registry', 'only', '--service', 'web', '--referrers', 'none'], idleEnv);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('invalid --referrers "none": referrers must be one of "off", "signatures", "all"');
  });
});

describe('mirror --from-file', () => {
  test('stdin lines are waited for one by one', { timeout: 180_000 }, async () => {
    const input = [
      '# images of cluster file',
      `${hello()} web`,
      `${source.host}/library/no-such-image:1 api`,
      '',
      JSON.stringify({ source: hello(), service: 'json', mode: 'cluster' }),
    ].join('\n');

    const run = await runCommand(['mirror', '--from-file', '-', '--registry', 'only', '--cluster', 'file', '--wait', '--timeout', '120'], env, { input });

    expect(run.code, run.stderr).toBe(1);
    const lines = run.stdout.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(new RegExp(`^line 2: copied ${hello()} as ${mirror.host}/only/mirror/file/services/web/\\S+@${DIGESTS.helloWorldList} \\(job \\S+\\)$`));
    expect(lines[1]).toMatch(/^line 3: job \S+ failed: REGISTRY_NOT_FOUND: .*no-such-image/);
    expect(lines[2]).toMatch(new RegExp(`^line 5: (copied|skipped) ${hello()} as ${mirror.host}/only/mirror/file/shared/`));
    expect(lines[3]).toBe('2 completed, 1 failed, 0 still waiting or running');
  });

  test('--json --wait prints one object per file', { timeout: 180_000 }, async () => {
    const input = `${hello()} web\n${source.host}/library/no-such-image:1 api\n`;

    const run = await runCommand(['mirror', '--from-file', '-', '--registry', 'only', '--cluster', 'file-json', '--json', '--wait', '--timeout', '120'], env, { input });

    expect(run.code, run.stderr).toBe(1);
    const output = JSON.parse(run.stdout) as { completed: number; failed: number; running: number; jobs: Array<Record<string, unknown>> };
    expect([output.completed, output.failed, output.running]).toEqual([1, 1, 0]);
    expect(output.jobs.map((job) => [job.line, job.state])).toEqual([
      [1, 'completed'],
      [2, 'failed'],
    ]);
    expect((output.jobs[0]!.result as MirrorResult).digest).toBe(DIGESTS.helloWorldList);
    expect((output.jobs[1]!.error as { code: string }).code).toBe('REGISTRY_NOT_FOUND');
  });

  test('--wait timeout exits 3 naming the lines', async () => {
    const input = `${hello()} first\n${hello()} second\n`;

    const run = await runCommand(['mirror', '--from-file', '-', '--registry', 'only', '--cluster', 'file-idle', '--wait', '--timeout', '1'], idleEnv, { input });

    expect(run.code, run.stderr).toBe(3);
    const lines = run.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^line 1: job \S+ did not finish within 1 s and is still waiting/);
    expect(lines[1]).toMatch(/^line 2: job \S+ did not finish within 1 s and is still waiting/);
    expect(lines[2]).toBe('0 completed, 0 failed, 2 still waiting or running');
  });

  test('text output lists the job ids', async () => {
    const input = `${hello()} one\n\n${hello()} two\n`;

    const run = await runCommand(['mirror', '--from-file', '-', '--registry', 'only', '--cluster', 'file-ids'], idleEnv, { input });

    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines[0]).toBe('enqueued 2 mirror jobs from standard input');
    const ids = lines.slice(1).map((line) => new RegExp(`^  line (\\d+): job (\\S+) ${hello()}$`).exec(line));
    expect(ids.map((match) => match?.[1])).toEqual(['1', '3']);
    for (const match of ids) expect((await idleJob(match![2]!)).state).toBe('waiting');
  });

  test('problems are numbered by line', async () => {
    const longSource = `${'a'.repeat(300)}:Bad`;
    const input = [
      `${hello()} web`,
      'UPPER/case web',
      `${hello()} web extra`,
      `${longSource} web`,
      '{"source": broken',
      JSON.stringify({ source: hello(), service: 'web', platforms: ['linux/x86_64'] }),
      JSON.stringify({ source: hello(), service: 'web', registry: 'elsewhere' }),
    ].join('\n');
    const before = await idleJobCount();

    const run = await runCommand(['mirror', '--from-file', '-', '--registry', 'only', '--cluster', 'file-bad'], idleEnv, { input });

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('nothing enqueued, 6 lines invalid:');
    expect(run.stderr).toMatch(/^ {2}line 2: source \("UPPER\/case"\)/m);
    expect(run.stderr).toContain('  line 3: expected "SOURCE [SERVICE]", found 3 words');
    expect(run.stderr).toMatch(/^ {2}line 4: source /m);
    expect(run.stderr).toMatch(/^ {2}line 5: invalid JSON: /m);
    expect(run.stderr).toContain('  line 6: platforms.0 ("linux/x86_64"): unknown architecture "x86_64" (did you mean linux/amd64?)');
    expect(run.stderr).toContain('  line 7: registry "elsewhere" is not a declared mirror registry');
    expect(run.stderr).not.toMatch(/request \d/);
    expect(run.stderr, 'the long source is cut').not.toContain('a'.repeat(80));
    expect(run.stderr).toContain(`"${'a'.repeat(79)}…"`);
    expect(await idleJobCount()).toBe(before);
  });
});

describe('worker and release', () => {
  test('worker rejects --concurrency above 256', async () => {
    const run = await runCommand(['worker', '--concurrency', '300'], env, { killAfterMs: 20_000 });

    expect(run.code, 'the worker exits at once').toBe(2);
    expect(run.stderr).toContain('invalid --concurrency "300": expected a whole number from 1 to 256');
  });

  test('worker accepts --concurrency 256', async () => {
    const started = await startWorker(env, ['--queues', 'mirror', '--concurrency', '256']);

    expect(await started.stop()).toBe(0);
  });

  test('release without uses says so', { timeout: 120_000 }, async () => {
    const run = await runCommand(['release', '--cluster', 'nobody', '--service', 'ghost', '--wait', '--timeout', '60'], env);

    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('release: no uses recorded for service ghost in cluster nobody; nothing released\n');
  });

  test('release with uses lists them', { timeout: 180_000 }, async () => {
    const mirrored = await runCommand(['mirror', hello(), '--registry', 'only', '--cluster', 'used', '--service', 'web', '--wait', '--timeout', '120'], env);
    expect(mirrored.code, mirrored.stderr).toBe(0);

    const run = await runCommand(['release', '--cluster', 'used', '--service', 'web', '--wait', '--timeout', '60'], env);

    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^release: 0 deleted, 1 kept, 1 use released in \d+ ms$/m);
    expect(run.stdout).toContain('by used/web, 0 uses left');
  });
});
