import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { request } from 'undici';
import type { MirrorRequestInput, MirrorResult } from '../../queues/mirror.ts';
import { hostComponent } from '../../src/providers/generic.ts';
import { stopProcess } from '../../test/harness/processes.ts';
import type { TestRegistry } from '../../test/harness/registry.ts';
import type { BenchContext } from '../context.ts';
import { drain, type Fleet } from '../fleet.ts';
import { mountImage, type BenchImage } from '../images.ts';

/**
 * Scenario 4: N jobs for images the mirror registry already has, enqueued in one round trip, timed until
 * the queue is drained, with one worker process and with two (concurrency 50 each). Next to it, in the
 * same run and on the same Redis, the rate of a BullMQ worker process whose jobs do nothing.
 */

export const THROUGHPUT = '4 already-mirrored throughput';
const NOOP_QUEUE = 'bench-noop';
const WARM_UP_JOBS = 200;
const BUILT_IN_BUDGET_JOBS = 500;

/** N service targets that already hold the small image, in a mirror registry of their own. */
export interface MirroredTargets {
  mirror: TestRegistry;
  /** Key prefix under which the targets were mirrored; its blob location records are in Redis. */
  keyPrefix: string;
  image: BenchImage;
  requests: MirrorRequestInput[];
  /** `host/repository` of the target of `requests[i]`. */
  repositoryOf(i: number): string;
}

/**
 * Returns the shared set of already-mirrored targets. A job mirrors the first one. The others get
 * cross-repository mounts and a manifest PUT, because that is quicker than N jobs and leaves the same
 * content under the same names.
 */
export function mirroredTargets(context: BenchContext): Promise<MirroredTargets> {
  return context.fixture('mirrored-targets', async () => {
    const image = await context.image('tiny', [{ seed: 'tiny-0', size: 1024 }]);
    const mirror = await context.startMirror();
    const fleet = await context.startFleet(mirror, { workers: 1 });
    try {
      const reference = context.reference(image);
      const requests = Array.from({ length: context.settings.throughputJobs }, (_, i) => fleet.request(reference, `svc-${i}`));
      const repositoryOf = (i: number) => `bench/services/svc-${i}/${hostComponent(context.source.host)}/${image.repository}`;

      const first = await fleet.mirrorAndWait(requests[0]!);
      if (first.target !== `${mirror.host}/${repositoryOf(0)}:${image.tag}`) {
        throw new Error(`mirrorfleet named the target ${first.target}, not ${mirror.host}/${repositoryOf(0)}:${image.tag} as the benchmark assumes`);
      }
      let next = 1;
      const mountNext = async () => {
        while (next < requests.length) {
          const i = next;
          next += 1;
          await mountImage(mirror.url, repositoryOf(0), repositoryOf(i), image.tag, image);
        }
      };
      await Promise.all(Array.from({ length: 16 }, mountNext));
      return { mirror, keyPrefix: fleet.keyPrefix, image, requests, repositoryOf: (i: number) => `${mirror.host}/${repositoryOf(i)}` };
    } finally {
      await context.release(fleet);
    }
  });
}

export async function alreadyMirroredThroughput(context: BenchContext): Promise<void> {
  const { settings, table } = context;
  const targets = await mirroredTargets(context);
  const jobs = targets.requests.length;
  const noop = await startNoopWorker(context);
  const fleet = await context.startFleet(targets.mirror, { workers: 1, keyPrefix: targets.keyPrefix });
  try {
    await fleet.mirrorBulkAndDrain(targets.requests.slice(0, WARM_UP_JOBS));
    await noop.run(Math.min(WARM_UP_JOBS, jobs));

    await bareHeads(targets, targets.requests.slice(0, WARM_UP_JOBS).length, settings.concurrency);
    for (let run = 0; run < settings.runs; run += 1) {
      const noopRate = jobs / (await noop.run(jobs));
      table.add(THROUGHPUT, `no-op BullMQ jobs, 1 process`, 'jobs/s', noopRate);

      const headRate = jobs / (await bareHeads(targets, jobs, settings.concurrency));
      table.add(THROUGHPUT, `bare HEAD of each target tag, ${settings.concurrency} at once`, 'HEADs/s', headRate);
      table.add(THROUGHPUT, 'bare HEADs / no-op', 'ratio', headRate / noopRate);

      const oneRate = jobs / (await timeBatch(fleet, targets.requests));
      table.add(THROUGHPUT, 'mirrorfleet, 1 worker process', 'jobs/s', oneRate);
      table.add(THROUGHPUT, 'mirrorfleet 1 process / no-op', 'ratio', oneRate / noopRate);
      table.add(THROUGHPUT, 'mirrorfleet 1 process / bare HEADs', 'ratio', oneRate / headRate);

      const second = await fleet.addWorker();
      await fleet.mirrorBulkAndDrain(targets.requests.slice(0, WARM_UP_JOBS));
      const twoRate = jobs / (await timeBatch(fleet, targets.requests));
      await fleet.stopWorker(second);
      table.add(THROUGHPUT, 'mirrorfleet, 2 worker processes', 'jobs/s', twoRate);
      table.add(THROUGHPUT, 'mirrorfleet 2 processes / no-op', 'ratio', twoRate / noopRate);
    }
  } finally {
    await context.release(fleet);
    await noop.stop();
  }

  // Once, and on fewer jobs, because the built-in budget makes this slow: the rate with the workers'
  // built-in request budget for a self-hosted registry.
  if (settings.liftRateLimits) {
    const builtIn = await context.startFleet(targets.mirror, { workers: 1, keyPrefix: targets.keyPrefix, liftRateLimits: false });
    try {
      const requests = targets.requests.slice(0, Math.min(jobs, BUILT_IN_BUDGET_JOBS));
      table.add(THROUGHPUT, 'mirrorfleet, 1 worker process, built-in request budget', 'jobs/s', requests.length / (await timeBatch(builtIn, requests)));
    } finally {
      await context.release(builtIn);
    }
  }
  context.note(THROUGHPUT, `${jobs} jobs per batch, worker concurrency ${settings.concurrency}, worker log level info (one line per job)`);
  context.note(
    THROUGHPUT,
    'bare HEADs: the HEAD of each job\'s target tag that a job for an image in place needs at least, sent from the benchmark process ' +
      'with no client logic; its rate is the mirror registry\'s own limit on this machine',
  );

  const oneProcess = table.summary(THROUGHPUT, 'mirrorfleet 1 process / no-op')!;
  const twoProcesses = table.summary(THROUGHPUT, 'mirrorfleet 2 processes / no-op')!;
  const noopRate = table.summary(THROUGHPUT, 'no-op BullMQ jobs, 1 process')!;
  const headsRatio = table.summary(THROUGHPUT, 'bare HEADs / no-op')!;
  table.check(
    THROUGHPUT,
    'at least 0.15 of the no-op BullMQ rate',
    `1 process ${oneProcess.median.toFixed(3)}, 2 processes ${twoProcesses.median.toFixed(3)} of ${Math.round(noopRate.median)} jobs/s; ` +
      `bare HEADs alone ${headsRatio.median.toFixed(3)}`,
    oneProcess.median >= 0.15,
  );
}

/** Runs one batch of `requests` and checks that every job found its target in place; returns seconds. */
async function timeBatch(fleet: Fleet, requests: MirrorRequestInput[]): Promise<number> {
  const started = performance.now();
  await fleet.mirrorBulkAndDrain(requests);
  const seconds = (performance.now() - started) / 1000;
  const results: MirrorResult[] = await fleet.recentResults(requests.length);
  const notSkipped = results.filter((result) => result.action !== 'skipped');
  if (results.length !== requests.length || notSkipped.length > 0) {
    throw new Error(`${notSkipped.length} of ${results.length} throughput jobs did not find their target in place (first: ${notSkipped[0]?.action})`);
  }
  return seconds;
}

const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/**
 * Sends a HEAD for the target tag of each of the first `count` targets, `concurrency` at once, and
 * returns the seconds they took: the requests a warm job cannot avoid, with nothing around them.
 */
async function bareHeads(targets: MirroredTargets, count: number, concurrency: number): Promise<number> {
  const repositoryPrefix = `${targets.mirror.host}/`;
  const urls = targets.requests.slice(0, count).map((_request, i) => {
    const repository = targets.repositoryOf(i).slice(repositoryPrefix.length);
    return `${targets.mirror.url}/v2/${repository}/manifests/${targets.image.tag}`;
  });
  let next = 0;
  const send = async () => {
    while (next < urls.length) {
      const url = urls[next]!;
      next += 1;
      const response = await request(url, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
      await response.body.dump();
      if (response.statusCode !== 200) throw new Error(`bare HEAD of ${url} returned status ${response.statusCode}, expected 200`);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, send));
  return (performance.now() - started) / 1000;
}

interface NoopWorker {
  /** Enqueues `count` no-op jobs and returns the seconds until the queue is drained. */
  run(count: number): Promise<number>;
  stop(): Promise<void>;
}

async function startNoopWorker(context: BenchContext): Promise<NoopWorker> {
  const prefix = `bench-noop-${randomBytes(4).toString('hex')}`;
  const script = join(dirname(fileURLToPath(import.meta.url)), '..', 'noop-worker.ts');
  const child = spawn(process.execPath, [script, context.redis.url, prefix, NOOP_QUEUE, String(context.settings.concurrency)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [ready] = (await Promise.race([once(child.stdout!, 'data'), once(child, 'exit').then(() => [Buffer.from('exited')])])) as [Buffer];
  if (!ready.toString().includes('ready')) throw new Error(`the no-op worker did not start: ${ready.toString()}`);

  const connection = new Redis(context.redis.url, { maxRetriesPerRequest: null });
  const queue = new Queue(NOOP_QUEUE, { connection, prefix });
  // The same payload shape as a mirror job, so both move the same bytes through Redis.
  const data = { v: 1, source: `${context.source.host}/bench/tiny:v1`, registry: 'bench', mode: 'service', cluster: 'bench', service: 'svc-0' };
  return {
    run: async (count) => {
      const started = performance.now();
      await queue.addBulk(Array.from({ length: count }, () => ({ name: NOOP_QUEUE, data })));
      await drain(queue, 600_000);
      return (performance.now() - started) / 1000;
    },
    stop: async () => {
      await queue.close();
      connection.disconnect();
      await stopProcess(child);
    },
  };
}
