import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { ReferenceStore } from '../../src/refcounts/store.ts';
import type { ImageName } from '../../src/refcounts/types.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';

let server: TestRedis;
let redis: Redis;

const REGISTRY = 'mirror.test:5000';
const REPO = 'prod/shared/docker.io/library/app';
const digest = (c: string) => `sha256:${c.repeat(64)}`;

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
});

async function use(store: ReferenceStore, image: ImageName, service: string, edges: Array<[string, string]> = []): Promise<void> {
  const token = randomBytes(8).toString('hex');
  await store.acquireLease(REGISTRY, image.repository, token, 60_000);
  await store.recordUse(REGISTRY, { image, user: { cluster: 'prod', service }, leaseToken: token, edges });
  await store.releaseLease(REGISTRY, image.repository, token);
}

describe('ReferenceStore.readRepository', () => {
  test('pairs every image with its own users and release time', async () => {
    const store = new ReferenceStore(redis, { prefix: `test-${randomBytes(4).toString('hex')}` });
    // Keys in an order that differs from their sorted order.
    const names = ['zeta', 'alpha', 'mid', 'beta'];
    for (const [index, tag] of names.entries()) await use(store, { repository: REPO, tag, digest: digest(String(index + 1)) }, `svc-${tag}`);
    await store.releaseUses(REGISTRY, { cluster: 'prod', service: 'svc-mid' }, { kind: 'released', dryRun: false });

    const state = await store.readRepository(REGISTRY, REPO);

    expect(state.images.map((record) => [record.image.tag, record.users.map(({ user }) => user)])).toEqual([
      ['alpha', ['prod/svc-alpha']],
      ['beta', ['prod/svc-beta']],
      ['mid', []],
      ['zeta', ['prod/svc-zeta']],
    ]);
    expect(state.images.find((record) => record.image.tag === 'mid')?.kind).toBe('released');
    expect(state.images.filter((record) => record.unusedSince !== undefined).map((record) => record.image.tag)).toEqual(['mid']);
    expect(state.revision).toBe('4');
  });

  test('follows index records to nested children and other parents', async () => {
    const store = new ReferenceStore(redis, { prefix: `test-${randomBytes(4).toString('hex')}` });
    await use(store, { repository: REPO, tag: 'latest', digest: digest('1') }, 'web', [
      [digest('1'), digest('2')],
      [digest('2'), digest('3')],
    ]);
    await use(store, { repository: REPO, tag: 'other', digest: digest('4') }, 'api', [[digest('4'), digest('3')]]);

    const state = await store.readRepository(REGISTRY, REPO);

    expect(state.children.get(digest('1'))).toEqual([digest('2')]);
    expect(state.children.get(digest('2'))).toEqual([digest('3')]);
    expect(state.parents.get(digest('3'))).toEqual([digest('2'), digest('4')]);
    expect(state.tags).toEqual(new Map([['latest', digest('1')], ['other', digest('4')]]));
  });

  test('counts live leases only', async () => {
    const store = new ReferenceStore(redis, { prefix: `test-${randomBytes(4).toString('hex')}` });
    await store.acquireLease(REGISTRY, REPO, 'live', 60_000);
    await redis.zadd(`${store.base(REGISTRY)}:leases:${REPO}`, 1, 'expired');

    expect((await store.readRepository(REGISTRY, REPO)).leases).toBe(1);
  });
});
