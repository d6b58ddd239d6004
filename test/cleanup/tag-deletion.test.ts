import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../../src/config/config.ts';
import type { CleanupContext } from '../../src/cleanup/context.ts';
import { runRelease } from '../../src/cleanup/release.ts';
import { runSweep } from '../../src/cleanup/sweep.ts';
import { RegistryClients } from '../../src/mirror/clients.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { GenericProvider } from '../../src/providers/generic.ts';
import { ReferenceStore } from '../../src/refcounts/store.ts';
import type { ImageName } from '../../src/refcounts/types.ts';
import { HttpTransport } from '../../src/registry/http.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startScriptedServer, type ScriptedServer } from '../harness/scripted-server.ts';

/**
 * Deletion by tag, against a scripted registry that accepts only the DELETE requests each test expects
 * (distribution 2.8 cannot delete a tag alone, so no local registry shows this). The reference store is
 * filled the way mirror jobs fill it: an index under two tags, each used by one service.
 */

const REPO = 'prod/shared/docker.io/library/app';
const digest = (c: string) => `sha256:${c.repeat(64)}`;
const INDEX = digest('1');
const CHILDREN = [digest('a'), digest('b')];

let redis: TestRedis;
let connection: Redis;
let transport: HttpTransport;

beforeAll(async () => {
  redis = await startRedis();
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  transport = new HttpTransport({ policy: new NetworkPolicy(['127.0.0.0/8']) });
});

afterAll(async () => {
  await transport?.close();
  connection?.disconnect();
  await redis?.stop();
});

interface TagFleet {
  config: Config;
  store: ReferenceStore;
  context: CleanupContext;
  host: string;
}

function fleetFor(server: ScriptedServer, deletesTags: boolean): TagFleet {
  const prefix = `test-${randomBytes(4).toString('hex')}`;
  const config = loadConfig({
    MIRRORFLEET_REDIS_URL: redis.url,
    MIRRORFLEET_KEY_PREFIX: prefix,
    MIRRORFLEET_MIRROR_REGISTRIES: `tagged=${server.host}`,
    MIRRORFLEET_INSECURE_REGISTRIES: server.host,
  });
  config.mirrorRegistries = config.mirrorRegistries.map((registry) => ({ ...registry, retentionSeconds: 0, maxDeletePercent: 100 }));
  const clients = new RegistryClients(config, transport);
  const provider = new GenericProvider({ name: 'tagged', host: server.host, prefix: '', insecure: true, client: clients.get(server.host), deletesTags });
  const context: CleanupContext = { config, redis: connection, clients, jobId: 'test-job', providerFor: () => provider };
  return { config, store: new ReferenceStore(connection, { prefix }), context, host: server.host };
}

async function recordUse(fleet: TagFleet, image: ImageName, service: string): Promise<void> {
  const token = randomBytes(8).toString('hex');
  await fleet.store.acquireLease(fleet.host, REPO, token, 60_000);
  const edges = CHILDREN.map((child) => [INDEX, child] as [string, string]);
  await fleet.store.recordUse(fleet.host, { image, user: { cluster: 'prod', service }, leaseToken: token, edges });
  await fleet.store.releaseLease(fleet.host, REPO, token);
}

const release = (fleet: TagFleet, service: string) => runRelease({ v: 1, kind: 'release', cluster: 'prod', service, dryRun: false }, fleet.context);
const sweep = (fleet: TagFleet) => runSweep({ v: 1, kind: 'sweep', dryRun: false }, fleet.context);

describe('sweep by tag', () => {
  test('deletes each tag once unused and leaves the index and children', async () => {
    const server = await startScriptedServer();
    const fleet = fleetFor(server, true);
    await recordUse(fleet, { repository: REPO, tag: 'latest', digest: INDEX }, 'web');
    await recordUse(fleet, { repository: REPO, tag: 'alias', digest: INDEX }, 'api');

    server.expect({ method: 'DELETE', path: `/v2/${REPO}/manifests/latest`, reply: { status: 202 } });
    await release(fleet, 'web');
    const first = await sweep(fleet);

    expect(first.deleted.map((entry) => `${entry.method} ${entry.reference} ${entry.result}`)).toEqual(['tag latest deleted']);
    expect(first.kept.map((kept) => `${kept.tag} ${kept.reason}`)).toEqual(['alias in-use']);
    server.verify();

    server.expect({ method: 'DELETE', path: `/v2/${REPO}/manifests/alias`, reply: { status: 202 } });
    await release(fleet, 'api');
    const second = await sweep(fleet);

    expect(second.deleted.map((entry) => `${entry.method} ${entry.reference}`)).toEqual(['tag alias']);
    expect(second.kept).toEqual([]);
    expect(server.requests.map((request) => `${request.method} ${request.path}`)).toEqual([`DELETE /v2/${REPO}/manifests/latest`, `DELETE /v2/${REPO}/manifests/alias`]);
  });

  test('keeps the last tag of a digest that a use by digest needs', async () => {
    const server = await startScriptedServer();
    const fleet = fleetFor(server, true);
    await recordUse(fleet, { repository: REPO, tag: 'latest', digest: INDEX }, 'web');
    await recordUse(fleet, { repository: REPO, digest: INDEX }, 'pinned');

    await release(fleet, 'web');
    const result = await sweep(fleet);

    expect(result.deleted).toEqual([]);
    expect(result.kept.map((kept) => `${kept.tag ?? '-'} ${kept.reason}`).sort()).toEqual(['- in-use', 'latest last-tag']);
    expect(server.requests).toEqual([]);
  });

  test('counts a tag already gone as deleted', async () => {
    const server = await startScriptedServer();
    const fleet = fleetFor(server, true);
    await recordUse(fleet, { repository: REPO, tag: 'latest', digest: INDEX }, 'web');
    server.expect({
      method: 'DELETE',
      path: `/v2/${REPO}/manifests/latest`,
      reply: { status: 404, body: { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] } },
    });

    await release(fleet, 'web');
    const result = await sweep(fleet);
    const again = await sweep(fleet);

    expect(result.deleted.map((entry) => entry.result)).toEqual(['absent']);
    expect(again.deleted).toEqual([]);
    expect(await fleet.store.repositories(fleet.host)).toEqual([]);
  });
});

describe('GenericProvider.deleteImage', () => {
  test('deletes by digest unless the registry deletes tags', async () => {
    const server = await startScriptedServer();
    const clients = new RegistryClients(loadConfig({ MIRRORFLEET_INSECURE_REGISTRIES: server.host }), transport);
    const byDigest = new GenericProvider({ name: 'a', host: server.host, prefix: '', insecure: true, client: clients.get(server.host) });
    const byTag = new GenericProvider({ name: 'b', host: server.host, prefix: '', insecure: true, client: clients.get(server.host), deletesTags: true });
    server.expect(
      { method: 'DELETE', path: `/v2/${REPO}/manifests/${INDEX}`, reply: { status: 202 } },
      { method: 'DELETE', path: `/v2/${REPO}/manifests/latest`, reply: { status: 202 } },
    );

    expect(await byDigest.deleteImage(REPO, { tag: 'latest', digest: INDEX })).toBe('deleted');
    expect(await byTag.deleteImage(REPO, { tag: 'latest', digest: INDEX })).toBe('deleted');
    expect(byDigest.canDeleteTags).toBe(false);
    expect(byTag.canDeleteTags).toBe(true);
  });
});
