import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig } from '../../src/config/config.ts';
import { ReferenceStore } from '../../src/refcounts/store.ts';
import { SWEEP_SCHEDULER_ID } from '../../src/cleanup/schedule.ts';
import { createLogger } from '../../src/log/logger.ts';
import { startWorkers } from '../../workers/run.ts';
import { CLEANUP_QUEUE, type CleanupResult } from '../../queues/cleanup.ts';
import { MirrorfleetProducer } from '../../queues/producer.ts';
import { freePort, spawn, stopProcess, waitFor } from '../harness/processes.ts';
import { fleetEnv, runCli, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { BUSYBOX_AMD64, HELLO_WORLD_LIST, manifestStatus, startCleanupServices, targetRepository, type CleanupServices } from './setup.ts';

/**
 * Cleanup through the whole fleet: a worker process takes mirror and cleanup jobs, the CLI enqueues
 * release, sweep and reconcile jobs and waits for them, and sweeps scheduled by releases and by newer
 * images run on their own. Retention is zero, so those sweeps run as soon as they are enqueued.
 */

let services: CleanupServices;
let directory: string;
let env: NodeJS.ProcessEnv;
let worker: WorkerProcess;
let producer: MirrorfleetProducer;
const keyPrefix = `test-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  services = await startCleanupServices();
  directory = await mkdtemp(join(tmpdir(), 'mirrorfleet-cleanup-fleet-'));
  const configPath = join(directory, 'config.json');
  await writeFile(
    configPath,
    JSON.stringify({
      mirrorRegistries: [{ name: 'local', provider: 'generic', host: services.mirror.host, retentionSeconds: 0, previousImageRetentionSeconds: 0, maxDeletePercent: 100 }],
    }),
  );
  env = fleetEnv({
    redisUrl: services.redis.url,
    keyPrefix,
    mirrorRegistries: [],
    insecureRegistries: [services.source.host, services.mirror.host],
    extra: { MIRRORFLEET_CONFIG: configPath, MIRRORFLEET_SWEEP_INTERVAL_SECONDS: '3600' },
  });
  // The registries come from the file: an empty MIRRORFLEET_MIRROR_REGISTRIES would replace them.
  delete env.MIRRORFLEET_MIRROR_REGISTRIES;
  worker = await startWorker(env, ['--queues', 'mirror,cleanup', '--concurrency', '4']);
  producer = new MirrorfleetProducer({ connection: services.connection, prefix: keyPrefix });
});

afterAll(async () => {
  await producer?.close();
  await worker?.kill();
  await services?.stop();
  if (directory) await rm(directory, { recursive: true, force: true });
});

function mirror(source: string, cluster: string, service: string, mode: 'service' | 'cluster') {
  return producer.mirrorAndWait({ v: 1, source: `${services.source.host}/library/${source}`, registry: 'local', mode, cluster, service }, { timeoutMs: 120_000 });
}

async function waitForStatus(repository: string, reference: string, status: number): Promise<void> {
  await waitFor(`${repository}@${reference} answering ${status}`, async () => (await manifestStatus(services.mirror, repository, reference)) === status, 30_000);
}

describe('cleanup fleet', () => {
  test('shared image goes once both services are released through the CLI', { timeout: 180_000 }, async () => {
    const repository = targetRepository(services, 'hello-world', { cluster: 'cli' });
    await mirror('hello-world:latest', 'cli', 'web', 'cluster');
    await mirror('hello-world:latest', 'cli', 'api', 'cluster');

    const first = await runCli(['release', '--cluster', 'cli', '--service', 'web', '--json', '--wait', '--timeout', '60'], env);

    expect(first.code, first.stderr).toBe(0);
    const released = JSON.parse(first.stdout) as CleanupResult;
    expect(released.kind).toBe('release');
    expect(released.deleted).toEqual([]);
    expect(released.kept).toEqual([expect.objectContaining({ tag: 'latest', reason: 'in-use' })]);

    const second = await runCli(['release', '--cluster', 'cli', '--service', 'api', '--json', '--wait', '--timeout', '60'], env);

    expect(second.code, second.stderr).toBe(0);
    expect((JSON.parse(second.stdout) as CleanupResult).released).toEqual([expect.objectContaining({ user: 'cli/api', usesLeft: 0 })]);
    await waitForStatus(repository, HELLO_WORLD_LIST, 404);
    await waitFor('the deletion in the worker log', async () => worker.output().includes('"msg":"image deleted"'));
  });

  test('newer image in service mode takes the previous one and spares the sidecar', async () => {
    const busybox = targetRepository(services, 'busybox', { cluster: 'svc', service: 'web' });
    const sidecar = targetRepository(services, 'sidecar', { cluster: 'svc', service: 'web' });
    await mirror('busybox:amd64', 'svc', 'web', 'service');
    await mirror('sidecar:1', 'svc', 'web', 'service');

    await mirror('busybox:arm64', 'svc', 'web', 'service');

    await waitForStatus(busybox, BUSYBOX_AMD64, 404);
    expect(await manifestStatus(services.mirror, busybox, 'arm64')).toBe(200);
    expect(await manifestStatus(services.mirror, sidecar, '1')).toBe(200);
  });

  test('sweep dry run and reconcile answer through the CLI', { timeout: 180_000 }, async () => {
    const repository = targetRepository(services, 'busybox', { cluster: 'rec' });
    const kept = await mirror('busybox:amd64', 'rec', 'web', 'cluster');
    const imagesFile = join(directory, 'images.txt');
    await writeFile(imagesFile, `# what cluster rec runs\n${kept.pinned} web\n`);

    const dry = await runCli(['sweep', '--dry-run', '--json', '--wait', '--timeout', '60'], env);
    const reconcile = await runCli(['reconcile', '--cluster', 'rec', '--from-file', imagesFile, '--json', '--wait', '--timeout', '60'], env);
    const sweep = await producer.cleanupAndWait({ v: 1, kind: 'sweep', registry: 'local' }, { timeoutMs: 60_000 });

    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout)).toEqual(expect.objectContaining({ kind: 'sweep', dryRun: true }));
    expect(reconcile.code, reconcile.stderr).toBe(0);
    const reconciled = JSON.parse(reconcile.stdout) as CleanupResult;
    expect(reconciled.recorded.map((entry) => `${entry.user} ${entry.image}`)).toEqual([`rec/web ${kept.pinned}`]);
    // The use by tag gives way to the use by digest that the list names; the digest stays in use.
    expect(reconciled.released).toEqual([expect.objectContaining({ tag: 'amd64', user: 'rec/web', usesLeft: 0 })]);
    expect(sweep.kept.filter((entry) => entry.repository === repository).map((entry) => entry.reason).sort()).toEqual(['in-use', 'shared-digest']);
    expect(await manifestStatus(services.mirror, repository, BUSYBOX_AMD64)).toBe(200);
  });

  test('reconcile of an empty file keeps the uses', { timeout: 180_000 }, async () => {
    await mirror('hello-world:latest', 'stage', 'web', 'cluster');
    const emptyFile = join(directory, 'empty.txt');
    await writeFile(emptyFile, '');
    const store = new ReferenceStore(services.connection, { prefix: keyPrefix });

    const run = await runCli(['reconcile', '--cluster', 'stage', '--from-file', emptyFile, '--wait', '--timeout', '60'], env);

    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toContain('invalid image list: the input is empty');
    expect(await store.servicesOf(services.mirror.host, 'stage')).toEqual(['web']);
  });

  test('CLI exits 2 naming what is wrong', { timeout: 240_000 }, async () => {
    const neither = await runCli(['release', '--cluster', 'cli'], env);
    const percent = await runCli(['sweep', '--max-delete-percent', '150'], env);
    const registry = await runCli(['sweep', '--registry', 'nowhere', '--wait', '--timeout', '150'], env);

    expect(neither.code).toBe(2);
    expect(neither.stderr).toContain('give --service ID for one service, or --all-services');
    expect(percent.code).toBe(2);
    expect(percent.stderr).toContain('invalid --max-delete-percent "150"');
    expect(registry.code).toBe(2);
    expect(registry.stderr).toContain('registry "nowhere" is not a declared mirror registry');
  });

  test('worker sets up the repeatable sweep', async () => {
    const queue = new Queue(CLEANUP_QUEUE, { connection: services.connection, prefix: keyPrefix });
    try {
      const scheduler = await queue.getJobScheduler(SWEEP_SCHEDULER_ID);
      expect(scheduler?.every).toBe(3_600_000);
    } finally {
      await queue.close();
    }
  });
});

describe('cleanup worker start', () => {
  test('refuses cleanup on a Redis that evicts keys while mirror runs', async () => {
    // A Redis of its own, because the policy is set for the whole server.
    const port = await freePort();
    const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'allkeys-lru'], { stdio: 'ignore' });
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    try {
      const url = `redis://127.0.0.1:${port}`;
      await waitFor('redis-server with allkeys-lru', async () => {
        const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
        client.on('error', () => undefined);
        try {
          await client.connect();
          return (await client.ping()) === 'PONG';
        } finally {
          client.disconnect();
        }
      });
      const config = loadConfig({ MIRRORFLEET_REDIS_URL: url, MIRRORFLEET_KEY_PREFIX: keyPrefix });
      const running = await startWorkers({ config, queues: ['mirror', 'cleanup'], concurrency: 1, metricsPort: 0, logger: createLogger('info', destination) });
      try {
        await waitFor('the cleanup refusal in the log', async () => lines.some((line) => line.includes('cleanup worker not started')));
        const refusal = JSON.parse(lines.find((line) => line.includes('cleanup worker not started'))!) as { msg: string; maxmemoryPolicy: string };
        expect(refusal.maxmemoryPolicy).toBe('allkeys-lru');
        expect(refusal.msg).toContain('set maxmemory-policy noeviction');
        const [mirrorWorker, cleanupWorker] = running.workers;
        expect(mirrorWorker?.isRunning()).toBe(true);
        expect(cleanupWorker?.isRunning()).toBe(false);
      } finally {
        await running.stop(5_000);
      }
    } finally {
      await stopProcess(server);
    }
  });
});
