import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { AuditLog } from '../../src/cleanup/audit.ts';
import { blobLocationsKey } from '../../src/dedupe/keys.ts';
import { ReferenceStore } from '../../src/refcounts/store.ts';
import { pushLayoutOverHttp } from '../harness/fixtures.ts';
import {
  BUSYBOX_AMD64,
  BUSYBOX_ARM64,
  HELLO_WORLD_ARM64,
  HELLO_WORLD_LIST,
  InProcessFleet,
  childrenOf,
  manifestStatus,
  startCleanupServices,
  targetRepository,
  testConfig,
  type CleanupServices,
} from './setup.ts';

let services: CleanupServices;
const fleets: InProcessFleet[] = [];

beforeAll(async () => {
  services = await startCleanupServices();
});

afterAll(async () => {
  await Promise.all(fleets.map((fleet) => fleet.close()));
  await services?.stop();
});

/** Returns a fleet with its own key prefix, and retention zero and no sweep limit unless given. */
async function fleetWith(registry: Record<string, number> = {}): Promise<InProcessFleet> {
  const config = await testConfig(services, { retentionSeconds: 0, previousImageRetentionSeconds: 0, maxDeletePercent: 100, ...registry });
  const fleet = new InProcessFleet(services, config);
  fleets.push(fleet);
  return fleet;
}

async function statuses(repository: string, references: string[]): Promise<number[]> {
  return Promise.all(references.map((reference) => manifestStatus(services.mirror, repository, reference)));
}

describe('sweep against distribution', () => {
  test('image shared by two services goes after both releases', async () => {
    const fleet = await fleetWith();
    const repository = targetRepository(services, 'hello-world', { cluster: 'shared-two' });
    await fleet.mirror('hello-world:latest', { cluster: 'shared-two', service: 'web' });
    await fleet.mirror('hello-world:latest', { cluster: 'shared-two', service: 'api' });
    const children = await childrenOf(services.mirror, repository, HELLO_WORLD_LIST);

    await fleet.release('shared-two', 'web');
    const first = await fleet.sweep();

    expect(first.deleted).toEqual([]);
    expect(first.kept.map((kept) => kept.reason)).toEqual(['in-use']);
    expect(await statuses(repository, ['latest', HELLO_WORLD_LIST, ...children])).toEqual(Array(children.length + 2).fill(200));

    await fleet.release('shared-two', 'api');
    const second = await fleet.sweep();

    expect(second.deleted.map((entry) => entry.digest)).toEqual([HELLO_WORLD_LIST, ...[...children].sort()]);
    expect(second.deleted.every((entry) => entry.method === 'digest' && entry.result === 'deleted')).toBe(true);
    expect(await statuses(repository, ['latest', HELLO_WORLD_LIST, ...children])).toEqual(Array(children.length + 2).fill(404));
  });

  test('index under two tags stays with its children while either tag is used', async () => {
    const fleet = await fleetWith();
    const repository = targetRepository(services, 'hello-world', { cluster: 'two-tags' });
    await fleet.mirror('hello-world:latest', { cluster: 'two-tags', service: 'web' });
    await fleet.mirror('hello-world:alias', { cluster: 'two-tags', service: 'api' });
    const children = await childrenOf(services.mirror, repository, HELLO_WORLD_LIST);

    await fleet.release('two-tags', 'web');
    const first = await fleet.sweep();

    expect(first.deleted).toEqual([]);
    expect(Object.fromEntries(first.kept.map((kept) => [kept.tag, kept.reason]))).toEqual({ latest: 'shared-digest', alias: 'in-use' });
    expect(await statuses(repository, ['latest', 'alias', ...children])).toEqual(Array(children.length + 2).fill(200));

    await fleet.release('two-tags', 'api');
    const second = await fleet.sweep();

    expect(second.deleted[0]).toEqual(expect.objectContaining({ digest: HELLO_WORLD_LIST, tags: ['alias', 'latest'] }));
    expect(await statuses(repository, ['latest', 'alias', HELLO_WORLD_LIST, ...children])).toEqual(Array(children.length + 3).fill(404));
  });

  test('tagged child stays while an index in use lists it', async () => {
    const fleet = await fleetWith();
    const repository = targetRepository(services, 'hello-world', { cluster: 'child' });
    await fleet.mirror('hello-world:latest', { cluster: 'child', service: 'web' });
    await fleet.mirror('hello-world:arm64', { cluster: 'child', service: 'arm' });

    await fleet.release('child', 'arm');
    const first = await fleet.sweep();

    expect(first.deleted).toEqual([]);
    expect(first.kept.find((kept) => kept.tag === 'arm64')?.reason).toBe('listed-by-kept-index');
    expect(await statuses(repository, ['arm64', HELLO_WORLD_ARM64])).toEqual([200, 200]);

    await fleet.release('child', 'web');
    await fleet.sweep();

    expect(await statuses(repository, ['arm64', 'latest', HELLO_WORLD_ARM64, HELLO_WORLD_LIST])).toEqual([404, 404, 404, 404]);
  });

  test('referrers stay with their subject and go after it', async () => {
    const fleet = await fleetWith();
    await pushLayoutOverHttp(services.source.url, 'library/signed', 'hello-world-manifest-list-cosign', 'latest');
    const repository = targetRepository(services, 'signed', { cluster: 'signed' });
    const mirrored = await fleet.mirror('signed:latest', { cluster: 'signed', service: 'web' });
    await fleet.mirror('signed:latest', { cluster: 'signed', service: 'api' });
    const referrers = mirrored.referrers ?? [];
    const signatureTag = `sha256-${HELLO_WORLD_LIST.slice('sha256:'.length)}.sig`;

    await fleet.release('signed', 'web');
    await fleet.sweep();

    expect(referrers).toHaveLength(11);
    expect(await statuses(repository, [signatureTag, ...referrers.map((referrer) => referrer.digest)])).toEqual(Array(12).fill(200));

    await fleet.release('signed', 'api');
    const result = await fleet.sweep();

    const order = result.deleted.map((entry) => entry.digest);
    for (const referrer of referrers) expect(order.indexOf(referrer.digest), referrer.digest).toBeGreaterThan(order.indexOf(referrer.subject));
    expect(await statuses(repository, [signatureTag, ...referrers.map((referrer) => referrer.digest)])).toEqual(Array(12).fill(404));
  });

  test('service mode drops the previous image after the grace period and keeps the sidecar', async () => {
    const fleet = await fleetWith({ previousImageRetentionSeconds: 3600 });
    const store = new ReferenceStore(fleet.connection, { prefix: fleet.config.redis.keyPrefix });
    const busybox = targetRepository(services, 'busybox', { cluster: 'svc', service: 'web' });
    const sidecar = targetRepository(services, 'sidecar', { cluster: 'svc', service: 'web' });
    await fleet.mirror('busybox:amd64', { mode: 'service', cluster: 'svc', service: 'web' });
    await fleet.mirror('sidecar:1', { mode: 'service', cluster: 'svc', service: 'web' });

    const replacedAt = await store.serverTime();
    await fleet.mirror('busybox:arm64', { mode: 'service', cluster: 'svc', service: 'web' });

    expect(fleet.scheduler.calls).toHaveLength(1);
    expect(fleet.scheduler.calls[0]?.registry).toBe('local');
    expect(fleet.scheduler.calls[0]?.dueAt).toBeGreaterThanOrEqual(replacedAt + 3_600_000);

    const early = await fleet.sweep({ now: async () => replacedAt + 3_590_000 });

    expect(early.deleted).toEqual([]);
    expect(early.kept.find((kept) => kept.tag === 'amd64')?.reason).toBe('retention');
    expect(await manifestStatus(services.mirror, busybox, BUSYBOX_AMD64)).toBe(200);

    const late = await fleet.sweep({ now: async () => replacedAt + 3_700_000 });

    expect(late.deleted.map((entry) => entry.image)).toEqual([`${services.mirror.host}/${busybox}:amd64@${BUSYBOX_AMD64}`]);
    expect(await statuses(busybox, ['amd64', BUSYBOX_AMD64, 'arm64'])).toEqual([404, 404, 200]);
    expect(await manifestStatus(services.mirror, sidecar, '1')).toBe(200);
  });

  test('dry run lists what would go and deletes nothing', async () => {
    const fleet = await fleetWith();
    const repository = targetRepository(services, 'busybox', { cluster: 'dry' });
    await fleet.mirror('busybox:amd64', { cluster: 'dry', service: 'web' });
    await fleet.release('dry', 'web');

    const dry = await fleet.sweep({ dryRun: true });

    expect(dry.dryRun).toBe(true);
    expect(dry.deleted).toEqual([expect.objectContaining({ digest: BUSYBOX_AMD64, result: 'planned', reason: expect.stringMatching(/its last use was released/) })]);
    expect(await manifestStatus(services.mirror, repository, BUSYBOX_AMD64)).toBe(200);
    expect(await new AuditLog(fleet.connection, { prefix: fleet.config.redis.keyPrefix, maxEntries: 1000 }).latest(10)).toEqual([]);
  });

  test('sweep stops at its share of the registry and says so', async () => {
    const fleet = await fleetWith({ maxDeletePercent: 50 });
    for (const service of ['a', 'b', 'c', 'd']) await fleet.mirror('busybox:amd64', { mode: 'service', cluster: 'valve', service });
    for (const service of ['a', 'b', 'c']) await fleet.release('valve', service);

    const first = await fleet.sweep();
    const second = await fleet.sweep();

    expect(first.deleted).toHaveLength(2);
    expect(first.limits).toEqual([expect.objectContaining({ known: 4, allowed: 2, removed: 2, reached: true, message: expect.stringMatching(/stopped at its limit: 2 of 4/) })]);
    expect(first.kept.filter((kept) => kept.reason === 'limit')).toHaveLength(1);
    expect(second.deleted).toHaveLength(1);
    expect(second.limits[0]).toEqual(expect.objectContaining({ known: 2, allowed: 1, removed: 1, reached: false }));
    expect(await manifestStatus(services.mirror, targetRepository(services, 'busybox', { cluster: 'valve', service: 'd' }), 'amd64')).toBe(200);
  });

  test('a sweep over what a crashed sweep left finishes the job', async () => {
    const fleet = await fleetWith();
    const repository = targetRepository(services, 'hello-world', { cluster: 'crash' });
    await fleet.mirror('hello-world:latest', { cluster: 'crash', service: 'web' });
    const children = await childrenOf(services.mirror, repository, HELLO_WORLD_LIST);
    await fleet.release('crash', 'web');
    // The crashed sweep deleted the index and one child, then died before forgetting them.
    for (const digest of [HELLO_WORLD_LIST, children[0]!]) {
      expect((await fetch(`${services.mirror.url}/v2/${repository}/manifests/${digest}`, { method: 'DELETE' })).status).toBe(202);
    }

    const result = await fleet.sweep();
    const again = await fleet.sweep();

    expect(result.deleted.filter((entry) => entry.result === 'absent').map((entry) => entry.digest).sort()).toEqual([HELLO_WORLD_LIST, children[0]!].sort());
    expect(result.deleted.filter((entry) => entry.result === 'deleted')).toHaveLength(children.length - 1);
    expect(await statuses(repository, children)).toEqual(Array(children.length).fill(404));
    expect(again.deleted).toEqual([]);
    expect(again.kept).toEqual([]);
    expect(await fleet.connection.keys(`${fleet.config.redis.keyPrefix}:refs:*:images:*`)).toEqual([]);
  });

  test('a lease held by a running job keeps the repository', async () => {
    const fleet = await fleetWith();
    const store = new ReferenceStore(fleet.connection, { prefix: fleet.config.redis.keyPrefix });
    const repository = targetRepository(services, 'busybox', { cluster: 'leased' });
    await fleet.mirror('busybox:amd64', { cluster: 'leased', service: 'web' });
    await fleet.release('leased', 'web');
    await store.acquireLease(services.mirror.host, repository, 'running-job', 60_000);

    const before = await store.serverTime();
    const held = await fleet.sweep();
    const retry = fleet.scheduler.calls.at(-1);
    await store.releaseLease(services.mirror.host, repository, 'running-job');
    const freed = await fleet.sweep();

    expect(held.deleted).toEqual([]);
    expect(held.kept.map((kept) => kept.reason)).toEqual(['lease']);
    expect(retry?.registry).toBe('local');
    expect(retry?.dueAt).toBeGreaterThanOrEqual(before + 60_000);
    expect(freed.deleted.map((entry) => entry.digest)).toEqual([BUSYBOX_AMD64]);
  });

  test('deletions go to the audit stream and clear blob locations', async () => {
    const fleet = await fleetWith();
    const repository = targetRepository(services, 'busybox', { cluster: 'audit' });
    await fleet.mirror('busybox:arm64', { cluster: 'audit', service: 'web' });
    const manifest = (await (await fetch(`${services.mirror.url}/v2/${repository}/manifests/arm64`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as {
      config: { digest: string };
      layers: Array<{ digest: string }>;
    };
    const blobs = [manifest.config.digest, ...manifest.layers.map((layer) => layer.digest)];
    const locationKeys = blobs.map((blob) => blobLocationsKey({ prefix: fleet.config.redis.keyPrefix }, services.mirror.host, blob));
    for (const key of locationKeys) expect(await fleet.connection.smembers(key)).toContain(repository);

    await fleet.release('audit', 'web');
    const result = await fleet.sweep();

    const [entry] = await new AuditLog(fleet.connection, { prefix: fleet.config.redis.keyPrefix, maxEntries: 1000 }).latest(10);
    expect(entry).toEqual(
      expect.objectContaining({
        what: `${services.mirror.host}/${repository}@${BUSYBOX_ARM64}`,
        method: 'digest',
        result: 'deleted',
        why: expect.stringMatching(/^unused since .* because its last use was released; retention 0 s$/),
        job: result.jobId,
        images: `${services.mirror.host}/${repository}:arm64@${BUSYBOX_ARM64}`,
      }),
    );
    expect(Date.parse(entry!.when!)).not.toBeNaN();
    for (const key of locationKeys) expect(await fleet.connection.smembers(key)).not.toContain(repository);
  });

  test('release racing a mirror of the same image never deletes what the mirror returns', async () => {
    const fleet = await fleetWith();
    for (let round = 0; round < 15; round += 1) {
      const cluster = `race-${round}`;
      const repository = targetRepository(services, 'busybox', { cluster });
      await fleet.mirror('busybox:amd64', { cluster, service: 'old' });

      // Sweeps run back to back for as long as the mirror runs, so some land between its look at the
      // target and the recording of its use.
      let mirrored: Awaited<ReturnType<InProcessFleet['mirror']>> | undefined;
      const mirroring = fleet.mirror('busybox:amd64', { cluster, service: 'new' }).then((result) => (mirrored = result));
      const sweeping = (async () => {
        await fleet.release(cluster, 'old');
        while (mirrored === undefined) await fleet.sweep();
      })();
      await Promise.all([mirroring, sweeping]);
      await fleet.sweep();

      expect(mirrored!.pinned).toBe(`${services.mirror.host}/${repository}@${BUSYBOX_AMD64}`);
      expect(await manifestStatus(services.mirror, repository, BUSYBOX_AMD64), `round ${round}`).toBe(200);
    }
  });
});
