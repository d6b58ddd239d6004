import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ReferenceStore } from '../../src/refcounts/store.ts';
import { InvalidInputError } from '../../src/errors.ts';
import type { CleanupResult } from '../../queues/cleanup.ts';
import {
  BUSYBOX_AMD64,
  BUSYBOX_ARM64,
  HELLO_WORLD_LIST,
  InProcessFleet,
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

async function fleetWith(): Promise<{ fleet: InProcessFleet; store: ReferenceStore }> {
  const config = await testConfig(services, { retentionSeconds: 0, previousImageRetentionSeconds: 0, maxDeletePercent: 100 });
  const fleet = new InProcessFleet(services, config);
  fleets.push(fleet);
  return { fleet, store: new ReferenceStore(fleet.connection, { prefix: config.redis.keyPrefix }) };
}

describe('reconcile', () => {
  test('rebuilds uses after a lost Redis', async () => {
    const { fleet, store } = await fleetWith();
    const busybox = await fleet.mirror('busybox:amd64', { cluster: 'lost', service: 'web' });
    const hello = await fleet.mirror('hello-world:latest', { cluster: 'lost', service: 'api' });
    const keys = await fleet.connection.keys(`${fleet.config.redis.keyPrefix}:*`);
    await fleet.connection.del(...keys);
    const missing = `${services.mirror.host}/${targetRepository(services, 'busybox', { cluster: 'lost' })}:gone`;

    const result = await fleet.cleanup({
      v: 1,
      kind: 'reconcile',
      cluster: 'lost',
      images: [
        { reference: busybox.pinned, service: 'web' },
        { reference: busybox.pinned, service: 'web' },
        { reference: hello.target, service: 'api' },
        { reference: 'docker.io/library/nginx:1.27' },
        { reference: missing },
      ],
    });

    const helloRepository = targetRepository(services, 'hello-world', { cluster: 'lost' });
    expect(result.recorded.map((entry) => `${entry.user} ${entry.image}`)).toEqual([
      `lost/web ${busybox.pinned}`,
      `lost/api ${services.mirror.host}/${helloRepository}:latest@${HELLO_WORLD_LIST}`,
    ]);
    expect(result.ignored).toEqual(['docker.io/library/nginx:1.27']);
    expect(result.missing).toEqual([missing]);
    expect(await store.usersOf(services.mirror.host, { repository: targetRepository(services, 'busybox', { cluster: 'lost' }), digest: BUSYBOX_AMD64 })).toEqual(['lost/web']);
    expect(await store.hasChildren(services.mirror.host, helloRepository, HELLO_WORLD_LIST)).toBe(true);

    const sweep = await fleet.sweep();

    expect(sweep.deleted).toEqual([]);
    expect(sweep.kept.map((kept) => kept.reason)).toEqual(['in-use', 'in-use']);
  });

  test('drops the uses the cluster no longer runs', async () => {
    const { fleet, store } = await fleetWith();
    const repository = targetRepository(services, 'busybox', { cluster: 'drift' });
    const running = await fleet.mirror('busybox:amd64', { cluster: 'drift', service: 'web' });
    await fleet.mirror('busybox:arm64', { cluster: 'drift', service: 'old' });

    const result = await fleet.cleanup({ v: 1, kind: 'reconcile', cluster: 'drift', images: [{ reference: running.target, service: 'web' }] });

    expect(result.released).toEqual([expect.objectContaining({ tag: 'arm64', user: 'drift/old', usesLeft: 0 })]);
    expect(result.kept).toEqual([expect.objectContaining({ tag: 'arm64', reason: 'retention' })]);
    expect(fleet.scheduler.calls.map((call) => call.registry)).toEqual(['local']);
    expect(await store.servicesOf(services.mirror.host, 'drift')).toEqual(['web']);

    await fleet.sweep();

    expect(await manifestStatus(services.mirror, repository, BUSYBOX_ARM64)).toBe(404);
    expect(await manifestStatus(services.mirror, repository, BUSYBOX_AMD64)).toBe(200);
  });

  test('running twice drops nothing the second time', async () => {
    const { fleet, store } = await fleetWith();
    const running = await fleet.mirror('busybox:amd64', { cluster: 'twice', service: 'web' });
    await fleet.mirror('busybox:arm64', { cluster: 'twice', service: 'old' });
    const request = { v: 1 as const, kind: 'reconcile' as const, cluster: 'twice', images: [{ reference: running.target, service: 'web' }] };

    const first = await fleet.cleanup(request);
    const second = await fleet.cleanup(request);

    expect(first.released).toHaveLength(1);
    expect(second.released).toEqual([]);
    expect(second.recorded).toEqual(first.recorded);
    expect(await store.imagesOf(services.mirror.host, { cluster: 'twice', service: 'web' })).toHaveLength(1);
  });

  test('dry run records and drops nothing', async () => {
    const { fleet, store } = await fleetWith();
    await fleet.mirror('busybox:arm64', { cluster: 'dry', service: 'old' });
    const before = (await fleet.connection.keys(`${fleet.config.redis.keyPrefix}:refs:*`)).sort();

    const result = await fleet.cleanup({ v: 1, kind: 'reconcile', cluster: 'dry', dryRun: true, images: [], allowEmpty: true });

    expect(result.released).toEqual([expect.objectContaining({ user: 'dry/old', usesLeft: 0 })]);
    expect(await store.servicesOf(services.mirror.host, 'dry')).toEqual(['old']);
    expect((await fleet.connection.keys(`${fleet.config.redis.keyPrefix}:refs:*`)).sort()).toEqual(before);
    expect(fleet.scheduler.calls).toEqual([]);
  });

  test('empty list rejected without allowEmpty', async () => {
    const { fleet, store } = await fleetWith();
    await fleet.mirror('busybox:arm64', { cluster: 'empty', service: 'web' });

    const rejected = fleet.cleanup({ v: 1, kind: 'reconcile', cluster: 'empty', images: [] });

    await expect(rejected).rejects.toThrow(InvalidInputError);
    await expect(fleet.cleanup({ v: 1, kind: 'reconcile', cluster: 'empty', images: [] })).rejects.toThrow(
      'images ([]): images is empty, which would release every use of cluster empty; send allowEmpty: true if the cluster really runs no image',
    );
    expect(await store.servicesOf(services.mirror.host, 'empty')).toEqual(['web']);
  });

  test('empty list with allowEmpty releases every use', async () => {
    const { fleet, store } = await fleetWith();
    await fleet.mirror('busybox:arm64', { cluster: 'none', service: 'web' });

    const result = await fleet.cleanup({ v: 1, kind: 'reconcile', cluster: 'none', images: [], allowEmpty: true });

    expect(result.released).toEqual([expect.objectContaining({ user: 'none/web', usesLeft: 0 })]);
    expect(await store.servicesOf(services.mirror.host, 'none')).toEqual([]);
  });

  test('dry run reports what the real run does', async () => {
    const { fleet } = await fleetWith();
    // Mirrored for the whole cluster; the pod list now names the image for service shop.
    const running = await fleet.mirror('busybox:amd64', { cluster: 'moved' });
    const request = { v: 1 as const, kind: 'reconcile' as const, cluster: 'moved', images: [{ reference: running.target, service: 'shop' }] };
    const outcome = (result: CleanupResult) => ({
      released: result.released.map((entry) => `${entry.image} by ${entry.user}, ${entry.usesLeft} left`),
      kept: result.kept.map((entry) => `${entry.image}: ${entry.reason}: ${entry.detail}`),
      recorded: result.recorded,
    });

    const dry = await fleet.cleanup({ ...request, dryRun: true });
    const real = await fleet.cleanup(request);

    expect(dry.released).toEqual([expect.objectContaining({ tag: 'amd64', user: 'moved/', usesLeft: 1 })]);
    expect(dry.kept).toEqual([expect.objectContaining({ tag: 'amd64', reason: 'in-use' })]);
    expect(outcome(dry)).toEqual(outcome(real));
  });
});
