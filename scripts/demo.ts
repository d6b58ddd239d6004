/**
 * `npm run demo`: mirrorfleet on real images, on this machine only (loopback).
 *
 * Starts Redis (unless MIRRORFLEET_REDIS_URL names one), a source registry seeded with the 9-platform
 * hello-world image from test/fixtures, an empty mirror registry and two worker processes; mirrors the
 * image for two services and for a cluster; asks again to show the skip; prints the pinned references;
 * then stops everything it started.
 */
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { MirrorfleetProducer } from '../queues/producer.ts';
import type { MirrorRequestInput, MirrorResult } from '../queues/mirror.ts';
import { formatBytes } from '../src/cli/main.ts';
import { startRedis, type TestRedis } from '../test/harness/redis.ts';
import { startRegistry, type TestRegistry } from '../test/harness/registry.ts';
import { seedLayout } from '../test/harness/fixtures.ts';
import { inspectDigest } from '../test/harness/skopeo.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../test/harness/workers.ts';

const step = (text: string) => process.stdout.write(`\n== ${text}\n`);
const line = (text: string) => process.stdout.write(`   ${text}\n`);

async function main(): Promise<void> {
  const started: Array<{ stop(): Promise<unknown> }> = [];
  const workers: WorkerProcess[] = [];
  let producer: MirrorfleetProducer | undefined;
  let connection: Redis | undefined;
  try {
    step('Starting services on loopback');
    const redis: TestRedis = process.env.MIRRORFLEET_REDIS_URL ? { url: process.env.MIRRORFLEET_REDIS_URL, stop: async () => {} } : await startRedis();
    started.push(redis);
    const source: TestRegistry = await startRegistry();
    started.push(source);
    const mirror: TestRegistry = await startRegistry();
    started.push(mirror);
    line(`redis            ${redis.url}`);
    line(`source registry  ${source.url}  (stands in for Docker Hub)`);
    line(`mirror registry  ${mirror.url}  (the registry next to your cluster)`);

    step('Seeding the source registry with hello-world (Docker manifest list, 9 platforms)');
    await seedLayout(source.host, 'hello-world-manifest-list', 'library/hello-world', 'latest');
    const image = `${source.host}/library/hello-world:latest`;
    line(`${image}  ${await inspectDigest(image)}`);

    step('Starting two worker processes');
    const keyPrefix = `demo-${randomBytes(3).toString('hex')}`;
    const env = fleetEnv({ redisUrl: redis.url, keyPrefix, mirrorRegistries: [`local=${mirror.host}`], insecureRegistries: [source.host, mirror.host] });
    workers.push(await startWorker(env), await startWorker(env));
    line(`workers pid ${workers.map((worker) => worker.child.pid).join(' and ')}, mirror registry "local" = ${mirror.host}`);

    connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    producer = new MirrorfleetProducer({ connection, prefix: keyPrefix });
    const ask = (request: Omit<MirrorRequestInput, 'v' | 'source' | 'registry'>) =>
      producer!.mirrorAndWait({ v: 1, source: image, registry: 'local', ...request }, { timeoutMs: 120_000 });

    step('Mirroring for services "web" and "api" (service mode) and cluster "demo" (cluster mode), all at once');
    const first = await Promise.all([
      ask({ cluster: 'demo', service: 'web' }),
      ask({ cluster: 'demo', service: 'api' }),
      ask({ cluster: 'demo', mode: 'cluster', service: 'batch' }),
    ]);
    for (const result of first) report(result);

    step('Asking again: nothing changed at the source, so nothing moves');
    report(await ask({ cluster: 'demo', service: 'web' }));

    step('What to deploy (pinned by digest)');
    for (const result of first) line(result.pinned);
    process.stdout.write('\nDone. Run the tests with: npm test\n');
  } finally {
    await producer?.close();
    connection?.disconnect();
    await Promise.all(workers.map((worker) => worker.stop()));
    for (const service of started.reverse()) await service.stop();
  }
}

function report(result: MirrorResult): void {
  const moved =
    result.action === 'skipped'
      ? 'already there, nothing moved'
      : `${result.manifests.copied} manifests, ${result.blobs.copied} blobs copied, ${result.blobs.mounted} mounted from another repository, ` +
        `${formatBytes(result.bytes.pulled)} pulled`;
  line(`${result.action.padEnd(8)} ${result.target}`);
  line(`         ${moved} (${result.durationMs} ms)`);
}

main().catch((error: unknown) => {
  process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
