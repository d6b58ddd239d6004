import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { ReferenceStore } from '../../src/refcounts/store.ts';
import { storeKeys } from '../../src/refcounts/keys.ts';
import type { ImageName } from '../../src/refcounts/types.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';

// Each test gets a fresh key prefix, so the scripts are checked against the keys they wrote alone.
let server: TestRedis;
let redis: Redis;
let prefix: string;
let store: ReferenceStore;

const REGISTRY = 'mirror.test:5000';
const REPO = 'prod/shared/docker.io/library/nginx';
const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const CHILD_A = `sha256:${'a'.repeat(64)}`;
const CHILD_B = `sha256:${'b'.repeat(64)}`;
const TTL = 60_000;

const nginx = (tag: string, digest = D1): ImageName => ({ repository: REPO, tag, digest });
const web = { cluster: 'prod', service: 'web' };
const api = { cluster: 'prod', service: 'api' };

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
});

beforeEach(() => {
  prefix = `test-${randomBytes(4).toString('hex')}`;
  store = new ReferenceStore(redis, { prefix });
});

async function lease(repository = REPO, registry = REGISTRY): Promise<string> {
  const token = randomBytes(8).toString('hex');
  expect(await store.acquireLease(registry, repository, token, TTL)).toBe(true);
  return token;
}

async function use(image: ImageName, user: { cluster: string; service?: string }, options: { supersede?: 'previous'; edges?: Array<[string, string]>; requestedAt?: number } = {}) {
  const token = await lease(image.repository);
  const outcome = await store.recordUse(REGISTRY, { image, user, leaseToken: token, ...options });
  await store.releaseLease(REGISTRY, image.repository, token);
  return outcome;
}

const base = () => store.base(REGISTRY);

describe('lease scripts', () => {
  test('acquire adds a lease that expires after its time to live', async () => {
    const before = await store.serverTime();
    const token = await lease();

    const expiry = Number(await redis.zscore(storeKeys.leases(base(), REPO), token));
    expect(expiry).toBeGreaterThanOrEqual(before + TTL);
    expect(await redis.pttl(storeKeys.leases(base(), REPO))).toBeGreaterThan(TTL);
  });

  test('acquire refuses while a sweep holds a claim', async () => {
    expect(await store.claimRepository(REGISTRY, REPO, 'sweep', '0', TTL)).toBe('claimed');

    expect(await store.acquireLease(REGISTRY, REPO, 'job', TTL)).toBe(false);
    expect(await redis.exists(storeKeys.leases(base(), REPO))).toBe(0);
  });

  test('acquire drops expired leases', async () => {
    await redis.zadd(storeKeys.leases(base(), REPO), 1, 'dead-job');

    await lease();

    expect(await redis.zscore(storeKeys.leases(base(), REPO), 'dead-job')).toBeNull();
  });

  test('renew extends a live lease', async () => {
    const token = await lease();
    const first = Number(await redis.zscore(storeKeys.leases(base(), REPO), token));

    expect(await store.renewLease(REGISTRY, REPO, token, TTL * 2)).toBe(true);

    expect(Number(await redis.zscore(storeKeys.leases(base(), REPO), token))).toBeGreaterThan(first);
  });

  test('renew refuses an expired lease and removes it', async () => {
    await redis.zadd(storeKeys.leases(base(), REPO), 1, 'late-job');

    expect(await store.renewLease(REGISTRY, REPO, 'late-job', TTL)).toBe(false);
    expect(await redis.zscore(storeKeys.leases(base(), REPO), 'late-job')).toBeNull();
  });

  test('release removes only its own lease', async () => {
    const mine = await lease();
    const other = await lease();

    await store.releaseLease(REGISTRY, REPO, mine);

    expect(await redis.zrange(storeKeys.leases(base(), REPO), 0, -1)).toEqual([other]);
  });
});

describe('record use script', () => {
  test('records the use, tag, image and revision', async () => {
    const outcome = await use(nginx('1.27'), web);

    expect(outcome).toEqual({ recorded: true, released: [] });
    const key = `${REPO}:1.27@${D1}`;
    expect(await redis.zrange(storeKeys.uses(base(), key), 0, -1)).toEqual(['prod/web']);
    expect(await redis.smembers(storeKeys.user(base(), 'prod/web'))).toEqual([key]);
    expect(await redis.smembers(storeKeys.cluster(base(), 'prod'))).toEqual(['web']);
    expect(await redis.hgetall(storeKeys.tags(base(), REPO))).toEqual({ '1.27': D1 });
    expect(await redis.smembers(storeKeys.images(base(), REPO))).toEqual([key]);
    expect(await redis.smembers(storeKeys.repositories(base()))).toEqual([REPO]);
    expect(await redis.get(storeKeys.revision(base(), REPO))).toBe('1');
  });

  test('records index edges in both directions', async () => {
    await use(nginx('1.27'), web, { edges: [[D1, CHILD_A], [D1, CHILD_B]] });

    expect((await redis.smembers(storeKeys.children(base(), REPO, D1))).sort()).toEqual([CHILD_A, CHILD_B]);
    expect(await redis.smembers(storeKeys.parents(base(), REPO, CHILD_A))).toEqual([D1]);
    expect(await redis.smembers(storeKeys.parents(base(), REPO, CHILD_B))).toEqual([D1]);
  });

  test('records a use by digest without a tag record', async () => {
    await use({ repository: REPO, digest: D2 }, { cluster: 'prod' });

    expect(await redis.zrange(storeKeys.uses(base(), `${REPO}@${D2}`), 0, -1)).toEqual(['prod/']);
    expect(await redis.smembers(storeKeys.cluster(base(), 'prod'))).toEqual(['']);
    expect(await redis.exists(storeKeys.tags(base(), REPO))).toBe(0);
  });

  test('gives its lease back when asked', async () => {
    const mine = await lease();
    const other = await lease();

    const outcome = await store.recordUse(REGISTRY, { image: nginx('1.27'), user: web, leaseToken: mine, releaseLease: true, edges: [[D1, CHILD_A]] });

    expect(outcome).toEqual({ recorded: true, released: [] });
    expect(await redis.zrange(storeKeys.leases(base(), REPO), 0, -1)).toEqual([other]);
    expect(await redis.zrange(storeKeys.uses(base(), `${REPO}:1.27@${D1}`), 0, -1)).toEqual(['prod/web']);
    expect(await redis.smembers(storeKeys.children(base(), REPO, D1))).toEqual([CHILD_A]);
  });

  test('keeps its lease unless asked', async () => {
    const mine = await lease();

    await store.recordUse(REGISTRY, { image: nginx('1.27'), user: web, leaseToken: mine });

    expect(await redis.zrange(storeKeys.leases(base(), REPO), 0, -1)).toEqual([mine]);
  });

  test('refuses without a live lease and writes nothing', async () => {
    await redis.zadd(storeKeys.leases(base(), REPO), 1, 'expired');

    const outcome = await store.recordUse(REGISTRY, { image: nginx('1.27'), user: web, leaseToken: 'expired' });

    expect(outcome).toEqual({ recorded: false });
    expect(await redis.keys(`${base()}:uses:*`)).toEqual([]);
    expect(await redis.get(storeKeys.revision(base(), REPO))).toBeNull();
  });

  test('clears the unused mark of an image used again', async () => {
    await use(nginx('1.27'), web);
    await store.releaseUses(REGISTRY, { cluster: 'prod', service: 'web' }, { kind: 'released', dryRun: false });

    await use(nginx('1.27'), api);

    expect(await redis.zscore(storeKeys.unused(base()), `${REPO}:1.27@${D1}`)).toBeNull();
    expect(await redis.hget(storeKeys.unusedKind(base()), `${REPO}:1.27@${D1}`)).toBeNull();
  });

  test('supersede releases the previous image of the same repository only', async () => {
    await use(nginx('1.26', D2), web);
    const sidecar: ImageName = { repository: 'prod/shared/docker.io/library/envoy', tag: '1.30', digest: D2 };
    await use(sidecar, web);

    const outcome = await use(nginx('1.27'), web, { supersede: 'previous' });

    expect(outcome).toEqual({ recorded: true, released: [{ image: nginx('1.26', D2), usesLeft: 0 }] });
    expect(await store.imagesOf(REGISTRY, web)).toEqual([`prod/shared/docker.io/library/envoy:1.30@${D2}`, `${REPO}:1.27@${D1}`]);
    expect(await redis.hget(storeKeys.unusedKind(base()), `${REPO}:1.26@${D2}`)).toBe('previous');
    expect(await redis.zscore(storeKeys.unused(base()), `${REPO}:1.26@${D2}`)).not.toBeNull();
  });

  test('supersede leaves an image another service uses in use', async () => {
    await use(nginx('1.26', D2), web);
    await use(nginx('1.26', D2), api);

    const outcome = await use(nginx('1.27'), web, { supersede: 'previous' });

    expect(outcome).toEqual({ recorded: true, released: [{ image: nginx('1.26', D2), usesLeft: 1 }] });
    expect(await redis.zscore(storeKeys.unused(base()), `${REPO}:1.26@${D2}`)).toBeNull();
  });

  test('supersede of a moved tag releases the old digest', async () => {
    await use(nginx('latest', D1), web);

    const outcome = await use(nginx('latest', D2), web, { supersede: 'previous' });

    expect(outcome).toEqual({ recorded: true, released: [{ image: nginx('latest', D1), usesLeft: 0 }] });
    expect(await redis.hget(storeKeys.tags(base(), REPO), 'latest')).toBe(D2);
  });

  test('older request finishing last releases only itself', async () => {
    await use(nginx('1.27'), web, { supersede: 'previous', requestedAt: 2_000 });

    const late = await use(nginx('1.26', D2), web, { supersede: 'previous', requestedAt: 1_000 });

    expect(late).toEqual({ recorded: true, released: [{ image: nginx('1.26', D2), usesLeft: 0 }] });
    expect(await store.imagesOf(REGISTRY, web)).toEqual([`${REPO}:1.27@${D1}`]);
    expect(await redis.hget(storeKeys.unusedKind(base()), `${REPO}:1.26@${D2}`)).toBe('previous');
    expect(await redis.zscore(storeKeys.unused(base()), `${REPO}:1.27@${D1}`), 'the newer image stays in use').toBeNull();
  });

  test('older request for the same image keeps its use', async () => {
    await use(nginx('1.27'), web, { supersede: 'previous', requestedAt: 2_000 });

    const late = await use(nginx('1.27'), web, { supersede: 'previous', requestedAt: 1_000 });

    expect(late).toEqual({ recorded: true, released: [] });
    expect(await store.imagesOf(REGISTRY, web)).toEqual([`${REPO}:1.27@${D1}`]);
    expect(await redis.zscore(storeKeys.unused(base()), `${REPO}:1.27@${D1}`)).toBeNull();
  });

  test('newer request finishing last supersedes as before', async () => {
    await use(nginx('1.26', D2), web, { supersede: 'previous', requestedAt: 1_000 });

    const newer = await use(nginx('1.27'), web, { supersede: 'previous', requestedAt: 2_000 });

    expect(newer).toEqual({ recorded: true, released: [{ image: nginx('1.26', D2), usesLeft: 0 }] });
    expect(await store.imagesOf(REGISTRY, web)).toEqual([`${REPO}:1.27@${D1}`]);
  });
});

describe('release uses script', () => {
  test('drops one service and marks images left unused', async () => {
    await use(nginx('1.27'), web);
    await use(nginx('1.27'), api);
    await use(nginx('1.26', D2), web);

    const drops = await store.releaseUses(REGISTRY, { cluster: 'prod', service: 'web' }, { kind: 'released', dryRun: false });

    expect(drops.map((drop) => [drop.image.tag, drop.usesLeft]).sort()).toEqual([['1.26', 0], ['1.27', 1]]);
    expect(await store.usersOf(REGISTRY, nginx('1.27'))).toEqual(['prod/api']);
    expect(await redis.hget(storeKeys.unusedKind(base()), `${REPO}:1.26@${D2}`)).toBe('released');
    expect(await redis.zscore(storeKeys.unused(base()), `${REPO}:1.27@${D1}`)).toBeNull();
    expect(await store.servicesOf(REGISTRY, 'prod')).toEqual(['api']);
  });

  test('drops every service of a cluster with the whole-cluster use', async () => {
    await use(nginx('1.27'), web);
    await use(nginx('1.27'), api);
    await use(nginx('1.26', D2), { cluster: 'prod' });
    await use(nginx('1.27'), { cluster: 'staging', service: 'web' });

    const drops = await store.releaseUses(REGISTRY, { cluster: 'prod', service: '*' }, { kind: 'released', dryRun: false });

    expect(drops).toHaveLength(3);
    expect(await store.servicesOf(REGISTRY, 'prod')).toEqual([]);
    expect(await store.usersOf(REGISTRY, nginx('1.27'))).toEqual(['staging/web']);
    expect(await store.usersOf(REGISTRY, nginx('1.26', D2))).toEqual([]);
  });

  test('dry run reports the outcome and changes nothing', async () => {
    await use(nginx('1.27'), web);
    await use(nginx('1.27'), api);
    const before = await redis.keys(`${prefix}:*`);

    const drops = await store.releaseUses(REGISTRY, { cluster: 'prod', service: '*' }, { kind: 'released', dryRun: true });

    expect(drops.map((drop) => drop.usesLeft)).toEqual([0, 0]);
    expect(await store.usersOf(REGISTRY, nginx('1.27'))).toEqual(['prod/api', 'prod/web']);
    expect((await redis.keys(`${prefix}:*`)).sort()).toEqual(before.sort());
  });

  test('stays under the repository prefix', async () => {
    await use(nginx('1.27'), web);
    await use({ repository: 'other/app', tag: '1', digest: D2 }, web);

    const drops = await store.releaseUses(REGISTRY, { cluster: 'prod', service: 'web' }, { kind: 'released', dryRun: false, prefix: 'other' });

    expect(drops.map((drop) => drop.image.repository)).toEqual(['other/app']);
    expect(await store.imagesOf(REGISTRY, web)).toEqual([`${REPO}:1.27@${D1}`]);
  });

  test('releasing twice drops nothing the second time', async () => {
    await use(nginx('1.27'), web);
    await store.releaseUses(REGISTRY, { cluster: 'prod', service: 'web' }, { kind: 'released', dryRun: false });
    const since = await redis.zscore(storeKeys.unused(base()), `${REPO}:1.27@${D1}`);

    const again = await store.releaseUses(REGISTRY, { cluster: 'prod', service: 'web' }, { kind: 'released', dryRun: false });

    expect(again).toEqual([]);
    expect(await redis.zscore(storeKeys.unused(base()), `${REPO}:1.27@${D1}`)).toBe(since);
  });
});

describe('drop stale uses script', () => {
  test('drops unlisted uses recorded before the start and keeps the rest', async () => {
    await use(nginx('1.27'), web);
    await use(nginx('1.26', D2), api);
    // Uses recorded in the same millisecond as the start count as newer; the pauses keep them apart.
    await new Promise((resolve) => setTimeout(resolve, 5));
    const startedAt = await store.serverTime();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await use({ repository: REPO, tag: '1.28', digest: D2 }, { cluster: 'prod', service: 'new' });

    const drops = await store.dropStaleUses(REGISTRY, 'prod', startedAt, [{ user: web, image: nginx('1.27') }], { dryRun: false });

    expect(drops.map((drop) => `${drop.user.service} ${drop.image.tag} ${drop.usesLeft}`)).toEqual(['api 1.26 0']);
    expect(await store.usersOf(REGISTRY, nginx('1.27'))).toEqual(['prod/web']);
    expect(await store.usersOf(REGISTRY, { repository: REPO, tag: '1.28', digest: D2 })).toEqual(['prod/new']);
  });

  test('dry run changes nothing', async () => {
    await use(nginx('1.27'), web);
    const startedAt = (await store.serverTime()) + 1;

    const drops = await store.dropStaleUses(REGISTRY, 'prod', startedAt, [], { dryRun: true });

    expect(drops.map((drop) => drop.usesLeft)).toEqual([0]);
    expect(await store.usersOf(REGISTRY, nginx('1.27'))).toEqual(['prod/web']);
  });
});

describe('claim scripts', () => {
  test('claim succeeds without leases at the planned revision', async () => {
    await use(nginx('1.27'), web);

    expect(await store.claimRepository(REGISTRY, REPO, 'sweep', '1', TTL)).toBe('claimed');
    expect(await store.holdsClaim(REGISTRY, REPO, 'sweep')).toBe(true);
  });

  test('claim fails while a lease is live', async () => {
    await lease();

    expect(await store.claimRepository(REGISTRY, REPO, 'sweep', '0', TTL)).toBe('leased');
    expect(await redis.exists(storeKeys.claim(base(), REPO))).toBe(0);
  });

  test('claim ignores an expired lease', async () => {
    await redis.zadd(storeKeys.leases(base(), REPO), 1, 'dead-job');

    expect(await store.claimRepository(REGISTRY, REPO, 'sweep', '0', TTL)).toBe('claimed');
  });

  test('claim fails after a use was recorded since planning', async () => {
    await use(nginx('1.27'), web);

    expect(await store.claimRepository(REGISTRY, REPO, 'sweep', '0', TTL)).toBe('changed');
  });

  test('claim fails while another sweep holds it', async () => {
    await store.claimRepository(REGISTRY, REPO, 'first', '0', TTL);

    expect(await store.claimRepository(REGISTRY, REPO, 'second', '0', TTL)).toBe('busy');
  });

  test('renew and release act only for the holder', async () => {
    await store.claimRepository(REGISTRY, REPO, 'holder', '0', 5_000);

    expect(await store.renewClaim(REGISTRY, REPO, 'stranger', TTL)).toBe(false);
    expect(await store.renewClaim(REGISTRY, REPO, 'holder', TTL)).toBe(true);
    expect(await redis.pttl(storeKeys.claim(base(), REPO))).toBeGreaterThan(5_000);
    await store.releaseClaim(REGISTRY, REPO, 'stranger');
    expect(await store.holdsClaim(REGISTRY, REPO, 'holder')).toBe(true);
    await store.releaseClaim(REGISTRY, REPO, 'holder');
    expect(await redis.exists(storeKeys.claim(base(), REPO))).toBe(0);
  });
});

describe('forget script', () => {
  test('removes the records of a deleted index and its children', async () => {
    await use(nginx('1.27'), web, { edges: [[D1, CHILD_A], [D1, CHILD_B]] });
    await use(nginx('stable'), api);
    await store.releaseUses(REGISTRY, { cluster: 'prod', service: '*' }, { kind: 'released', dryRun: false });
    await store.claimRepository(REGISTRY, REPO, 'sweep', '2', TTL);

    expect(await store.forget(REGISTRY, REPO, 'sweep', [D1, CHILD_A, CHILD_B], [])).toBe(true);

    const left = (await redis.keys(`${base()}:*`)).sort();
    expect(left).toEqual([storeKeys.claim(base(), REPO), storeKeys.revision(base(), REPO)].sort());
  });

  test('keeps an image that is in use', async () => {
    await use(nginx('1.27'), web);
    await store.claimRepository(REGISTRY, REPO, 'sweep', '1', TTL);

    await store.forget(REGISTRY, REPO, 'sweep', [D1], []);

    expect(await store.usersOf(REGISTRY, nginx('1.27'))).toEqual(['prod/web']);
    expect(await redis.smembers(storeKeys.images(base(), REPO))).toEqual([`${REPO}:1.27@${D1}`]);
  });

  test('forgets a listed image key and its tag record only', async () => {
    await use(nginx('1.27'), web);
    await use(nginx('1.26', D2), web);
    await store.releaseUses(REGISTRY, { cluster: 'prod', service: 'web' }, { kind: 'released', dryRun: false });
    await store.claimRepository(REGISTRY, REPO, 'sweep', '2', TTL);

    await store.forget(REGISTRY, REPO, 'sweep', [], [`${REPO}:1.26@${D2}`]);

    expect(await redis.smembers(storeKeys.images(base(), REPO))).toEqual([`${REPO}:1.27@${D1}`]);
    expect(await redis.hgetall(storeKeys.tags(base(), REPO))).toEqual({ '1.27': D1 });
    expect(await redis.zrange(storeKeys.unused(base()), 0, -1)).toEqual([`${REPO}:1.27@${D1}`]);
  });

  test('changes nothing without the claim', async () => {
    await use(nginx('1.27'), web);
    await store.releaseUses(REGISTRY, { cluster: 'prod', service: 'web' }, { kind: 'released', dryRun: false });
    const before = (await redis.keys(`${prefix}:*`)).sort();

    expect(await store.forget(REGISTRY, REPO, 'not-claimed', [D1], [])).toBe(false);

    expect((await redis.keys(`${prefix}:*`)).sort()).toEqual(before);
  });
});

describe('key names', () => {
  test('carry the prefix and keep registries apart', async () => {
    const other = 'other.test:5000';
    await use(nginx('1.27'), web);
    const token = await lease(REPO, other);
    await store.recordUse(other, { image: nginx('1.27', D2), user: web, leaseToken: token });

    expect(await store.usersOf(REGISTRY, nginx('1.27'))).toEqual(['prod/web']);
    expect(await store.usersOf(other, nginx('1.27'))).toEqual([]);
    expect(await store.usersOf(other, nginx('1.27', D2))).toEqual(['prod/web']);
    const keys = await redis.keys('*');
    const ours = keys.filter((key) => key.startsWith(`${prefix}:`));
    expect(ours.length).toBeGreaterThan(0);
    expect(ours.every((key) => key.startsWith(`${prefix}:refs:${REGISTRY}:`) || key.startsWith(`${prefix}:refs:${other}:`))).toBe(true);
  });
});
