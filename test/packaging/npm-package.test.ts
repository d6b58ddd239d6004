/**
 * The npm package as another Node service gets it. `npm pack` runs on a copy of the project, which
 * runs the prepack build, and the tarball is installed into a fresh project outside the repository.
 * Node strips no types under node_modules, so this file is the only one that runs the compiled dist/
 * instead of the TypeScript sources.
 *
 * The install resolves the dependencies from the npm cache that `npm ci` filled. With a cache that
 * lacks their metadata, `--prefer-offline` fetches it from the npm registry, so a first run on a new
 * machine needs the network and takes longer.
 */

import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normaliseMirrorRequest, parseMirrorRequest, type MirrorRequestInput } from '../../queues/mirror.ts';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { PROJECT_ROOT } from './helpers.ts';

/** Top-level entries of the repository that the copy for `npm pack` leaves out: none of them is built or shipped. */
const NOT_COPIED = new Set(['.git', '.tmp', '.tools', 'dist', 'node_modules', 'test']);

const REQUEST: MirrorRequestInput = { v: 1, source: 'nginx:1.27', registry: 'local', cluster: 'prod', service: 'web' };

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program and resolves with its exit code and output, also when the exit code is not zero.
 * Variables that an outer `npm test` exports (npm_*) and the MIRRORFLEET_* configuration are left out,
 * so that neither reaches the npm or mirrorfleet process started here.
 */
function run(file: string, args: string[], options: { cwd: string; env?: Record<string, string> }): Promise<RunResult> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !/^npm_/i.test(name) && !name.startsWith('MIRRORFLEET_')) env[name] = value;
  }
  // The installed bin starts with `#!/usr/bin/env node`, so this test's Node must come first on PATH.
  env.PATH = `${dirname(process.execPath)}:${env.PATH ?? ''}`;
  Object.assign(env, { npm_config_update_notifier: 'false' }, options.env);

  return new Promise((resolve) => {
    execFile(file, args, { cwd: options.cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) resolve({ code: 0, stdout, stderr });
      else if (typeof error.code === 'number') resolve({ code: error.code, stdout, stderr });
      // A program that did not start (ENOENT, EACCES) or was killed has no exit code, so the reason goes to stderr.
      else resolve({ code: 1, stdout, stderr: `${stderr}${error.message}\n` });
    });
  });
}

/** Runs a program and returns its standard output; throws with the output when it exits non-zero. */
async function runOrThrow(file: string, args: string[], options: { cwd: string; env?: Record<string, string> }): Promise<string> {
  const result = await run(file, args, options);
  if (result.code !== 0) {
    throw new Error(`${file} ${args.join(' ')} in ${options.cwd} exited with ${result.code}\n${result.stderr}\n${result.stdout}`);
  }
  return result.stdout;
}

let redis: TestRedis;
/** Copy of the project that `npm pack` runs in, so that its build never writes the repository's own dist/. */
let packFolder: string;
/** Folder outside the repository with the tarball and the consumer project. */
let work: string;
/** The project that installed the tarball, as another Node service would. */
let consumer: string;
let packedPaths: string[];
let keyPrefix: string;

beforeAll(async () => {
  redis = await startRedis();
  keyPrefix = `npm-package-${process.pid}-${Date.now()}`;

  // The copy sits inside the repository so that it resolves dependencies from the repository's
  // node_modules by walking up, as the project itself does. With a symlinked node_modules instead,
  // tsc fails the declaration emit with TS2883, because it can name a type of the transitive
  // dependency google-auth-library only by its path through the symlink.
  await mkdir(join(PROJECT_ROOT, '.tmp'), { recursive: true });
  packFolder = await mkdtemp(join(PROJECT_ROOT, '.tmp', 'npm-pack-'));
  for (const entry of await readdir(PROJECT_ROOT)) {
    if (!NOT_COPIED.has(entry)) await cp(join(PROJECT_ROOT, entry), join(packFolder, entry), { recursive: true });
  }

  work = await mkdtemp(join(tmpdir(), 'mirrorfleet-npm-package-'));
  const packOutput = await runOrThrow('npm', ['pack', '--json', '--pack-destination', work], { cwd: packFolder });
  const [report] = JSON.parse(packOutput) as { filename: string; files: { path: string }[] }[];
  packedPaths = report!.files.map((file) => file.path);

  consumer = join(work, 'consumer');
  await mkdir(consumer);
  await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const manifest = JSON.parse(await readFile(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  await runOrThrow('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(work, report!.filename), `ioredis@${manifest.dependencies.ioredis}`], {
    cwd: consumer,
  });
}, 240_000);

afterAll(async () => {
  if (packFolder !== undefined) await rm(packFolder, { recursive: true, force: true });
  if (work !== undefined) await rm(work, { recursive: true, force: true });
  await redis?.stop();
});

describe('npm package', () => {
  it('ships compiled JavaScript only', () => {
    for (const path of ['package.json', 'README.md', 'LICENSE', 'bin/mirrorfleet.js', 'dist/queues/index.js', 'dist/queues/index.d.ts', 'dist/src/cli/main.js', 'dist/workers/run.js']) {
      expect(packedPaths).toContain(path);
    }
    const sources = packedPaths.filter((path) => path.endsWith('.ts') && !path.endsWith('.d.ts'));
    expect(sources).toEqual([]);
    const outsideShippedFolders = packedPaths.filter((path) => !/^(bin|dist)\//.test(path) && !['package.json', 'README.md', 'LICENSE'].includes(path));
    expect(outsideShippedFolders).toEqual([]);
  });

  it('enqueues a mirror job from an .mjs consumer', async () => {
    const script = `
import { Redis } from 'ioredis';
import { MIRROR_QUEUE, MirrorfleetProducer } from 'mirrorfleet';

const connection = new Redis(process.env.REDIS_URL, { maxRetriesPerRequest: null });
const fleet = new MirrorfleetProducer({ connection, prefix: process.env.KEY_PREFIX });
try {
  const job = await fleet.mirror(JSON.parse(process.env.REQUEST));
  const stored = await fleet.bullQueue.getJob(job.id);
  console.log(JSON.stringify({ queue: MIRROR_QUEUE, jobId: job.id, data: stored?.data }));
} finally {
  await fleet.close();
  connection.disconnect();
}
`;
    await writeFile(join(consumer, 'enqueue.mjs'), script);
    const output = await runOrThrow(process.execPath, ['enqueue.mjs'], {
      cwd: consumer,
      env: { REDIS_URL: redis.url, KEY_PREFIX: keyPrefix, REQUEST: JSON.stringify(REQUEST) },
    });
    const enqueued = JSON.parse(output) as { queue: string; jobId: string; data: unknown };
    const expected = normaliseMirrorRequest(parseMirrorRequest(REQUEST));
    expect(enqueued.queue).toBe('mirror');
    expect(enqueued.data).toEqual(expected);

    // Read back with the repository's own BullMQ, independently of the installed package.
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queue = new Queue('mirror', { connection, prefix: keyPrefix });
    try {
      const job = await Job.fromId(queue, enqueued.jobId);
      expect(job?.data).toEqual(expected);
      expect(await job?.getState()).toBe('waiting');
    } finally {
      await queue.close();
      connection.disconnect();
    }
  });

  it('rejects an invalid request with InvalidInputError', async () => {
    const script = `
import { InvalidInputError, MirrorfleetError, parseMirrorRequest } from 'mirrorfleet';

try {
  parseMirrorRequest({ v: 1, source: 'nginx:1.27', registry: 'local', cluster: 'Prod', service: 'web' });
  console.log(JSON.stringify({ rejected: false }));
} catch (error) {
  console.log(JSON.stringify({ rejected: true, invalidInput: error instanceof InvalidInputError, mirrorfleetError: error instanceof MirrorfleetError, code: error.code, message: error.message }));
}
`;
    await writeFile(join(consumer, 'validate.mjs'), script);
    const outcome = JSON.parse(await runOrThrow(process.execPath, ['validate.mjs'], { cwd: consumer })) as Record<string, unknown>;
    expect(outcome.rejected).toBe(true);
    expect(outcome.invalidInput).toBe(true);
    expect(outcome.mirrorfleetError).toBe(true);
    expect(outcome.code).toBe('INVALID_INPUT');
    expect(outcome.message).toMatch(/cluster/);
  });

  it('exports no internal module', async () => {
    const result = await run(process.execPath, ['--input-type=module', '-e', "await import('mirrorfleet/queues/producer.js')"], { cwd: consumer });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('ERR_PACKAGE_PATH_NOT_EXPORTED');
  });

  it('type-checks a TypeScript consumer', async () => {
    const source = `
import { Redis } from 'ioredis';
import { MirrorfleetError, MirrorfleetProducer, parseMirrorRequest, type MirrorRequestInput, type MirrorResult } from 'mirrorfleet';

const request: MirrorRequestInput = { v: 1, source: 'nginx:1.27', registry: 'local', cluster: 'prod', service: 'web' };
const fleet = new MirrorfleetProducer({ connection: new Redis({ lazyConnect: true, maxRetriesPerRequest: null }) });
export async function deploy(): Promise<string> {
  const result: MirrorResult = await fleet.mirrorAndWait(parseMirrorRequest(request), { timeoutMs: 1000 });
  return result.pinned;
}
export const code: string = new MirrorfleetError('TIMEOUT', 'timed out').code;
// @ts-expect-error v must be 1, which the declarations only enforce when they resolved
export const wrongVersion: MirrorRequestInput = { v: 2, source: 'nginx:1.27', registry: 'local', cluster: 'prod' };
`;
    await writeFile(join(consumer, 'consumer.ts'), source);
    const tsconfig = {
      compilerOptions: {
        target: 'es2024',
        lib: ['es2024'],
        module: 'nodenext',
        moduleResolution: 'nodenext',
        strict: true,
        noEmit: true,
        // Library checking stays on so that errors inside the package's own declarations show.
        skipLibCheck: false,
        types: ['node'],
        typeRoots: [join(PROJECT_ROOT, 'node_modules', '@types')],
      },
      files: ['consumer.ts'],
    };
    await writeFile(join(consumer, 'tsconfig.json'), JSON.stringify(tsconfig));

    const result = await run(process.execPath, [join(PROJECT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: consumer });
    // The declarations of ioredis 6.1 import the untyped `redis-errors` package, so tsc reports errors
    // in node_modules/ioredis for every consumer that checks libraries. Only errors here and in this
    // package count.
    const ours = result.stdout.split('\n').filter((line) => line.startsWith('consumer.ts') || line.startsWith('node_modules/mirrorfleet/'));
    expect(ours).toEqual([]);
  });

  it('runs the installed bin with --help', async () => {
    const result = await run(join(consumer, 'node_modules', '.bin', 'mirrorfleet'), ['--help'], { cwd: consumer });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Usage:');
    expect(result.stdout).toContain('mirrorfleet job ID');
  });

  it('shows a job with the installed bin', async () => {
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
    let jobId: string;
    try {
      jobId = (await producer.mirror({ ...REQUEST, service: 'api' })).id!;
    } finally {
      await producer.close();
      connection.disconnect();
    }

    const result = await run(join(consumer, 'node_modules', '.bin', 'mirrorfleet'), ['job', jobId, '--queue', 'mirror', '--json'], {
      cwd: consumer,
      env: { MIRRORFLEET_REDIS_URL: redis.url, MIRRORFLEET_KEY_PREFIX: keyPrefix },
    });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const view = JSON.parse(result.stdout) as { jobId: string; queue: string; state: string; request: unknown };
    expect(view.jobId).toBe(jobId);
    expect(view.queue).toBe('mirror');
    expect(view.state).toBe('waiting');
    expect(view.request).toEqual(normaliseMirrorRequest(parseMirrorRequest({ ...REQUEST, service: 'api' })));
  });
});
