import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { HttpTransport, type HttpRequest, type HttpResponse } from '../../src/registry/http.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { copyImage, copyReferrers, type CopyImageOptions } from '../../src/registry/copy.ts';
import { fallbackTag, TagListCache, type CopiedReferrer } from '../../src/registry/referrers.ts';
import { OCI_INDEX, OCI_MANIFEST } from '../../src/registry/media-types.ts';
import { withLock } from '../../src/dedupe/lock.ts';
import { loadConfig } from '../../src/config/config.ts';
import { RegistryClients } from '../../src/mirror/clients.ts';
import { mirrorImage } from '../../src/mirror/mirror-image.ts';
import { parseMirrorRequest } from '../../queues/mirror.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { DIGESTS, pushLayoutOverHttp } from '../harness/fixtures.ts';
import { soakCount } from '../reliability/helpers.ts';
import { sha256Of } from './helpers.ts';

/**
 * Referrers copied with an image between two distribution 2.8 registries, which have no referrers API.
 * The hello-world list brings cosign's `.sig` and `.att` tags. The synthetic regclient repository brings
 * OCI 1.1 referrers: manifests with `subject`, listed under fallback tags `sha256-<hex>`. skopeo reads
 * what arrived, and the registries' access logs count the requests of a second copy.
 */

let source: TestRegistry;
let target: TestRegistry;
let redis: TestRedis;
let connection: Redis;
let proxy: FaultProxy;
let transport: HttpTransport;
let sourceClient: RegistryClient;
let targetClient: RegistryClient;

const SIGNED = 'signed/hello-world';
const REGCLIENT = 'regclient/testrepo';
const LIST_HEX = DIGESTS.helloWorldList.slice('sha256:'.length);
// Child manifests of the hello-world list that cosign signed one by one; the list itself makes the tenth.
const SIGNED_CHILDREN = 9;

/** Digests in the synthetic regclient repository (PROVENANCE.md, item 10). */
const RC = {
  v1: 'sha256:7ceb9b6bcc274697d0c38be6214b50cec79d601bc61708747d3f6cb772f6c6fa',
  v1Arm64: 'sha256:7e87ffc91b9ceafa85be2777b16b1be10e4664fd4f3acc86e4295b97da5163ba',
  v1Attestation: 'sha256:d910434391624641a9398ec921067e2dbd9a76aac69f120257906f811f0eecb8',
  v2: 'sha256:dfae8f425735a5e3a72e40d6609e03079995511d48157c74d54801ff4430491e',
  v2Sbom: 'sha256:0484e93c23cddf24a8400547119558312023295af241d4cd1eaf1b27145c5026',
  v2Signature: 'sha256:741132f956e196c3858dab17e50ea977056f2f1ce1ad2900f11f4c8ff2d4203b',
  v2FallbackIndex: 'sha256:955b8a891713a806107edb6dd09410233a9e7926584b1d6fd8b7b5342296188b',
  child: 'sha256:8e54c6754f08d22f85c7552bb1951b228b8194d29b14a1639dbe50868da0273e',
  loop: 'sha256:d69399e05204fac05b0184eef72e984538cdc9c5854a6484e8852e4357c543cb',
  mirror: 'sha256:0514ce64171e869a0b065fa1ce1b533e82808c9228d5b97ea6e3ef2e026d9aed',
} as const;

beforeAll(async () => {
  [source, target, redis] = await Promise.all([startRegistry(), startRegistry(), startRedis()]);
  proxy = await startFaultProxy(target.url);
  await pushLayoutOverHttp(source.url, SIGNED, 'hello-world-manifest-list-cosign', 'list');
  await pushLayoutOverHttp(source.url, REGCLIENT, 'synthetic/regclient-testrepo');
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  transport = new HttpTransport({ policy: new NetworkPolicy(['127.0.0.0/8']) });
  sourceClient = new RegistryClient({ registry: source.host, insecure: true, transport });
  targetClient = new RegistryClient({ registry: target.host, insecure: true, transport });
});

afterAll(async () => {
  connection?.disconnect();
  await transport?.close();
  await Promise.all([source?.stop(), target?.stop(), redis?.stop(), proxy?.stop()]);
});

function copyTag(repository: string, tag: string, targetRepository: string, options: CopyImageOptions = {}, client = targetClient) {
  return copyImage({ client: sourceClient, repository, tag }, { client, repository: targetRepository, tag }, options);
}

/** Tags of a repository as skopeo lists them. */
async function skopeoTags(reference: string): Promise<string[]> {
  const { stdout } = await execa('skopeo', ['list-tags', '--tls-verify=false', `docker://${reference}`]);
  return (JSON.parse(stdout) as { Tags: string[] }).Tags;
}

function digestsOf(referrers: CopiedReferrer[]): string[] {
  return referrers.map((referrer) => referrer.digest).sort();
}

describe('cosign tags', () => {
  test('travel with the hello-world list, digests equal', async () => {
    const result = await copyTag(SIGNED, 'list', 'cosign/all', { referrers: 'all' });

    const sourceTags = (await skopeoTags(`${source.host}/${SIGNED}`)).filter((tag) => tag.startsWith('sha256-'));
    const targetTags = (await skopeoTags(`${target.host}/cosign/all`)).filter((tag) => tag.startsWith('sha256-'));
    expect(sourceTags).toHaveLength(SIGNED_CHILDREN + 2);
    expect(targetTags.sort()).toEqual(sourceTags.sort());
    for (const tag of sourceTags) {
      const sourceBytes = await inspectRaw(`${source.host}/${SIGNED}:${tag}`);
      expect((await inspectRaw(`${target.host}/cosign/all:${tag}`)).equals(sourceBytes), `${tag} reads back byte for byte`).toBe(true);
    }
    expect(result.referrers).toHaveLength(SIGNED_CHILDREN + 2);
    expect(result.referrers.every((referrer) => referrer.copied)).toBe(true);
    expect(result.failedReferrers).toEqual([]);
  });

  test('are reported by artifact type, digest, subject and tag', async () => {
    const result = await copyTag(SIGNED, 'list', 'cosign/report', { referrers: 'all' });

    const listReferrers = result.referrers.filter((referrer) => referrer.subject === DIGESTS.helloWorldList);
    expect(listReferrers).toEqual([
      {
        artifactType: 'application/vnd.dsse.envelope.v1+json',
        digest: 'sha256:165760e771f0d295a89c06ad50659133315b485ac68647119775b37578eaf629',
        subject: DIGESTS.helloWorldList,
        tag: `sha256-${LIST_HEX}.att`,
        copied: true,
      },
      {
        artifactType: 'application/vnd.dev.cosign.simplesigning.v1+json',
        digest: 'sha256:1e4c6e59fe9ed668252140571494bb844e424bb48c2eceefed73434eb9a84dc3',
        subject: DIGESTS.helloWorldList,
        tag: `sha256-${LIST_HEX}.sig`,
        copied: true,
      },
    ]);
  });

  test('signatures selection leaves the attestation behind', async () => {
    const result = await copyTag(SIGNED, 'list', 'cosign/signatures', { referrers: 'signatures' });

    const targetTags = (await skopeoTags(`${target.host}/cosign/signatures`)).filter((tag) => tag.startsWith('sha256-'));
    expect(targetTags).toHaveLength(SIGNED_CHILDREN + 1);
    expect(targetTags.every((tag) => tag.endsWith('.sig'))).toBe(true);
    expect(result.referrers.every((referrer) => referrer.artifactType === 'application/vnd.dev.cosign.simplesigning.v1+json')).toBe(true);
  });

  test('off copies the image alone', async () => {
    const result = await copyTag(SIGNED, 'list', 'cosign/off');

    expect(await skopeoTags(`${target.host}/cosign/off`)).toEqual(['list']);
    expect(result.referrers).toEqual([]);
  });

  test('warm repeat lists source tags once and reads nothing again', async () => {
    await copyTag(SIGNED, 'list', 'cosign/warm', { referrers: 'all' });
    await source.clearLog();
    await target.clearLog();

    const repeat = await copyReferrers(
      { client: sourceClient, repository: SIGNED, tag: 'list' },
      { client: targetClient, repository: 'cosign/warm', tag: 'list', digest: DIGESTS.helloWorldList },
      { referrers: 'all' },
    );

    const sourceRequests = await source.requests();
    const listings = sourceRequests.filter((entry) => entry.path.includes('/tags/list') || entry.path.includes('/referrers/'));
    expect(listings.map((entry) => `${entry.method} ${entry.path}`)).toEqual([`GET /v2/${SIGNED}/tags/list`]);
    const reads = sourceRequests.filter((entry) => entry.method === 'GET' && !entry.path.includes('/tags/list'));
    expect(reads, 'no manifest or blob is read at the source').toEqual([]);
    // One HEAD per cosign tag, to see whether it still names the digest the target has.
    expect(sourceRequests.filter((entry) => entry.method === 'HEAD')).toHaveLength(SIGNED_CHILDREN + 2);
    const writes = (await target.requests()).filter((entry) => entry.method !== 'GET' && entry.method !== 'HEAD');
    expect(writes, 'nothing is written to the target').toEqual([]);
    expect(repeat.referrers).toHaveLength(SIGNED_CHILDREN + 2);
    expect(repeat.referrers.some((referrer) => referrer.copied)).toBe(false);
    expect(repeat.bytes).toEqual({ pulled: 0, pushed: 0 });
  });

  test('rejected attestation is reported and the image copied', async () => {
    proxy.reset();
    proxy.inject({
      name: 'reject-attestation',
      method: 'PUT',
      path: new RegExp(`/manifests/sha256-${LIST_HEX}\\.att$`),
      action: { kind: 'respond', status: 400, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"MANIFEST_INVALID","message":"artifact type not accepted"}]}' },
    });
    const proxied = new RegistryClient({ registry: proxy.host, insecure: true, transport });

    const result = await copyTag(SIGNED, 'list', 'cosign/rejected', { referrers: 'all' }, proxied);

    expect(proxy.fired('reject-attestation')).toBe(1);
    expect(result.failedReferrers).toHaveLength(1);
    expect(result.failedReferrers[0]?.tag).toBe(`sha256-${LIST_HEX}.att`);
    expect(result.failedReferrers[0]?.reason).toContain('MANIFEST_INVALID');
    expect(result.referrers).toHaveLength(SIGNED_CHILDREN + 1);
    expect((await inspectRaw(`${target.host}/cosign/rejected:list`)).equals(await inspectRaw(`${source.host}/${SIGNED}:list`))).toBe(true);
  });

  test('rejected attestation fails the copy when configured', async () => {
    proxy.reset();
    proxy.inject({
      name: 'reject-attestation',
      method: 'PUT',
      path: new RegExp(`/manifests/sha256-${LIST_HEX}\\.att$`),
      action: { kind: 'respond', status: 400, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"MANIFEST_INVALID","message":"artifact type not accepted"}]}' },
    });
    const proxied = new RegistryClient({ registry: proxy.host, insecure: true, transport });

    const copy = copyTag(SIGNED, 'list', 'cosign/strict', { referrers: 'all', referrerFailures: 'fail' }, proxied);

    await expect(copy).rejects.toThrow(`sha256-${LIST_HEX}.att`);
    await expect(copy).rejects.toThrow(/referrerFailures/);
  });
});

describe('referrers with subject on a registry without the API', () => {
  test('fallback indexes arrive with the source digests', async () => {
    const result = await copyTag(REGCLIENT, 'v2', 'rc/v2', { referrers: 'all' });

    expect(digestsOf(result.referrers.filter((referrer) => referrer.subject === RC.v2))).toEqual([RC.v2Sbom, RC.v2Signature].sort());
    // Each of the three platform manifests of v2 has one referrer of its own.
    expect(result.referrers).toHaveLength(5);
    expect(result.fallbackIndexes).toHaveLength(4);
    for (const index of result.fallbackIndexes) {
      const sourceBytes = await inspectRaw(`${source.host}/${REGCLIENT}:${index.tag}`);
      const targetBytes = await inspectRaw(`${target.host}/rc/v2:${index.tag}`);
      expect(targetBytes.equals(sourceBytes), `${index.tag} reads back byte for byte`).toBe(true);
      expect(index.digest).toBe(sha256Of(targetBytes));
    }
    expect(result.fallbackIndexes.find((index) => index.subject === RC.v2)?.digest).toBe(RC.v2FallbackIndex);
    expect((await inspectRaw(`${target.host}/rc/v2@${RC.v2Sbom}`)).equals(await inspectRaw(`${source.host}/${REGCLIENT}@${RC.v2Sbom}`))).toBe(true);
  });

  test('fallback index at the target lists every referrer', async () => {
    await copyTag(REGCLIENT, 'v2', 'rc/listed', { referrers: 'all' });

    const index = JSON.parse((await inspectRaw(`${target.host}/rc/listed:${fallbackTag(RC.v2)}`)).toString('utf8')) as {
      manifests: Array<{ digest: string; artifactType: string }>;
    };
    expect(index.manifests.map((entry) => [entry.digest, entry.artifactType])).toEqual([
      [RC.v2Sbom, 'application/example.sbom'],
      [RC.v2Signature, 'application/example.signature'],
    ]);
  });

  test('referrer that is also a child is linked once', async () => {
    const result = await copyTag(REGCLIENT, 'v1', 'rc/v1', { referrers: 'all' });

    expect(result.referrers.map(({ subject, digest }) => ({ subject, digest }))).toEqual([{ subject: RC.v1Arm64, digest: RC.v1Attestation }]);
    const tag = fallbackTag(RC.v1Arm64);
    expect((await inspectRaw(`${target.host}/rc/v1:${tag}`)).equals(await inspectRaw(`${source.host}/${REGCLIENT}:${tag}`))).toBe(true);
  });

  test('referrer index listing its own subject ends', async () => {
    const result = await copyTag(REGCLIENT, 'child', 'rc/loop', { referrers: 'all' });

    expect(result.referrers).toEqual([{ artifactType: 'application/example.loop', digest: RC.loop, subject: RC.child, copied: true }]);
    expect(await inspectRaw(`${target.host}/rc/loop@${RC.loop}`)).toEqual(await inspectRaw(`${source.host}/${REGCLIENT}@${RC.loop}`));
  });

  test('fallback tag naming a manifest is not a referrers list', async () => {
    const result = await copyTag(REGCLIENT, 'mirror', 'rc/mirror', { referrers: 'all' });

    expect(result.referrers).toEqual([]);
    expect(result.failedReferrers).toEqual([]);
    expect(await skopeoTags(`${target.host}/rc/mirror`)).toEqual(['mirror']);
  });

  test('merge keeps what the target index listed', async () => {
    await copyTag(REGCLIENT, 'v2', 'rc/merge');
    const note = await pushNote(target.url, 'rc/merge', { mediaType: OCI_INDEX, digest: RC.v2, size: 934 }, 'kept');
    await putJson(target.url, 'rc/merge', fallbackTag(RC.v2), OCI_INDEX, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [note] });

    const result = await copyTag(REGCLIENT, 'v2', 'rc/merge', { referrers: 'all' });

    const index = JSON.parse((await inspectRaw(`${target.host}/rc/merge:${fallbackTag(RC.v2)}`)).toString('utf8')) as { manifests: Array<{ digest: string }> };
    expect(index.manifests.map((entry) => entry.digest)).toEqual([note.digest, RC.v2Sbom, RC.v2Signature]);
    expect(result.fallbackIndexes.find((entry) => entry.subject === RC.v2)?.digest).not.toBe(RC.v2FallbackIndex);
  });

  test('warm repeat reads no referrer at the source again', async () => {
    await copyTag(REGCLIENT, 'v2', 'rc/warm', { referrers: 'all' });
    await source.clearLog();
    await target.clearLog();

    const repeat = await copyReferrers(
      { client: sourceClient, repository: REGCLIENT, tag: 'v2' },
      { client: targetClient, repository: 'rc/warm', tag: 'v2', digest: RC.v2 },
      { referrers: 'all' },
    );

    const sourceRequests = await source.requests();
    expect(sourceRequests.filter((entry) => entry.method === 'GET').map((entry) => entry.path)).toEqual([`/v2/${REGCLIENT}/tags/list`]);
    // One HEAD per fallback tag (the index and three platform manifests), to compare it with the target's.
    expect(sourceRequests.filter((entry) => entry.method === 'HEAD')).toHaveLength(4);
    expect((await target.requests()).filter((entry) => entry.method !== 'GET' && entry.method !== 'HEAD')).toEqual([]);
    expect(repeat.referrers).toHaveLength(5);
    expect(repeat.referrers.some((referrer) => referrer.copied)).toBe(false);
  });
});

describe('fallback tag merges', () => {
  test('concurrent merges under the lock lose no referrer', async () => {
    const copies = soakCount(5, 20);
    const subject = await pushSubject(target.url, 'merge/concurrent');
    const sources = await Promise.all(
      Array.from({ length: copies }, async (_, i) => {
        const repository = `merge/source-${i}`;
        await pushSubject(source.url, repository);
        const note = await pushNote(source.url, repository, subject, `note ${i}`);
        await putJson(source.url, repository, fallbackTag(subject.digest), OCI_INDEX, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [note] });
        return { repository, note };
      }),
    );
    // Delays reads of the fallback tag until every copy has read it, so that copies without the lock
    // would all merge into the same empty index and keep only one referrer.
    const barrier = new ReadBarrier(`/manifests/${fallbackTag(subject.digest)}`, copies);
    const prefix = `test-${randomBytes(4).toString('hex')}`;

    await Promise.all(
      sources.map(({ repository }) =>
        copyReferrers(
          { client: new RegistryClient({ registry: source.host, insecure: true, transport }), repository },
          { client: new RegistryClient({ registry: target.host, insecure: true, transport: barrier }), repository: 'merge/concurrent', digest: subject.digest },
          { referrers: 'all', fallbackTagLock: (key, work) => withLock(connection, `${prefix}:lock:referrers:${key}`, work) },
        ),
      ),
    );

    const index = JSON.parse((await inspectRaw(`${target.host}/merge/concurrent:${fallbackTag(subject.digest)}`)).toString('utf8')) as {
      manifests: Array<{ digest: string }>;
    };
    expect(index.manifests.map((entry) => entry.digest).sort()).toEqual(sources.map(({ note }) => note.digest).sort());
    await barrier.close();
  });
});

describe('mirror job', () => {
  test('second mirror moves no referrer and reads nothing', async () => {
    const config = loadConfig({
      MIRRORFLEET_REDIS_URL: redis.url,
      MIRRORFLEET_KEY_PREFIX: `test-${randomBytes(4).toString('hex')}`,
      MIRRORFLEET_MIRROR_REGISTRIES: `local=${target.host}/jobs`,
      MIRRORFLEET_INSECURE_REGISTRIES: `${source.host},${target.host}`,
      MIRRORFLEET_ALLOW_NETWORKS: '127.0.0.0/8',
    });
    const clients = new RegistryClients(config, transport);
    const context = { config, redis: connection, clients, sweeps: { scheduleSweep: async () => {} } };
    const request = parseMirrorRequest({ v: 1, source: `${source.host}/${SIGNED}:list`, registry: 'local', mode: 'cluster', cluster: 'prod' });

    const first = await mirrorImage(request, context, { jobId: 'referrers-1' });
    await source.clearLog();
    await target.clearLog();
    const second = await mirrorImage(request, context, { jobId: 'referrers-2' });

    expect(first.action).toBe('copied');
    expect(first.referrers).toHaveLength(SIGNED_CHILDREN + 2);
    expect(second.action).toBe('skipped');
    expect(second.referrers?.map((referrer) => referrer.digest)).toEqual(first.referrers?.map((referrer) => referrer.digest));
    expect(second.referrers?.some((referrer) => referrer.copied)).toBe(false);
    expect(second.bytes).toEqual({ pulled: 0, pushed: 0 });
    const sourceRequests = await source.requests();
    // The first job's tag list is younger than DEFAULT_TAG_LIST_MAX_AGE_MS, so the second job reads none.
    expect(sourceRequests.filter((entry) => entry.method === 'GET').map((entry) => entry.path)).toEqual([]);
    // The job's HEAD of the source tag, and one per cosign tag.
    expect(sourceRequests.filter((entry) => entry.method === 'HEAD')).toHaveLength(1 + SIGNED_CHILDREN + 2);
    expect((await target.requests()).filter((entry) => entry.method !== 'GET' && entry.method !== 'HEAD')).toEqual([]);
  });

  test('mirror after the listing age lists source tags again', async () => {
    const config = loadConfig({
      MIRRORFLEET_REDIS_URL: redis.url,
      MIRRORFLEET_KEY_PREFIX: `test-${randomBytes(4).toString('hex')}`,
      MIRRORFLEET_MIRROR_REGISTRIES: `local=${target.host}/jobs-aged`,
      MIRRORFLEET_INSECURE_REGISTRIES: `${source.host},${target.host}`,
      MIRRORFLEET_ALLOW_NETWORKS: '127.0.0.0/8',
    });
    let now = 0;
    const referrerTagLists = new TagListCache({ maxAgeMs: 10_000, maxEntries: 10, clock: () => now });
    const clients = new RegistryClients(config, transport);
    const context = { config, redis: connection, clients, sweeps: { scheduleSweep: async () => {} }, referrerTagLists };
    const request = parseMirrorRequest({ v: 1, source: `${source.host}/${SIGNED}:list`, registry: 'local', mode: 'cluster', cluster: 'prod' });

    await mirrorImage(request, context, { jobId: 'aged-1' });
    now += 10_000;
    await source.clearLog();
    const second = await mirrorImage(request, context, { jobId: 'aged-2' });

    expect(second.action).toBe('skipped');
    expect(second.referrers).toHaveLength(SIGNED_CHILDREN + 2);
    const gets = (await source.requests()).filter((entry) => entry.method === 'GET').map((entry) => entry.path);
    expect(gets).toEqual([`/v2/${SIGNED}/tags/list`]);
  });

  test('job option off overrides the registry default', async () => {
    const config = loadConfig({
      MIRRORFLEET_REDIS_URL: redis.url,
      MIRRORFLEET_KEY_PREFIX: `test-${randomBytes(4).toString('hex')}`,
      MIRRORFLEET_MIRROR_REGISTRIES: `local=${target.host}/jobs-off`,
      MIRRORFLEET_INSECURE_REGISTRIES: `${source.host},${target.host}`,
      MIRRORFLEET_ALLOW_NETWORKS: '127.0.0.0/8',
    });
    const clients = new RegistryClients(config, transport);
    const context = { config, redis: connection, clients, sweeps: { scheduleSweep: async () => {} } };
    const request = parseMirrorRequest({ v: 1, source: `${source.host}/${SIGNED}:list`, registry: 'local', mode: 'cluster', cluster: 'prod', referrers: 'off' });

    const result = await mirrorImage(request, context, { jobId: 'referrers-off' });

    expect(result.referrers).toBeUndefined();
    const repository = result.target.slice(target.host.length + 1, result.target.lastIndexOf(':'));
    expect(await skopeoTags(`${target.host}/${repository}`)).toEqual(['list']);
  });
});

// ---- Helpers that write to a registry directly, independent of mirrorfleet's client ----

const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256Of('{}'), size: 2 };

async function pushBlob(registryUrl: string, repository: string, bytes: Buffer): Promise<{ digest: string; size: number }> {
  const digest = sha256Of(bytes);
  const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  const location = new URL(start.headers.get('location')!, registryUrl);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
  if (put.status !== 201) throw new Error(`blob upload to ${repository} answered ${put.status}`);
  return { digest, size: bytes.length };
}

async function putJson(registryUrl: string, repository: string, reference: string, mediaType: string, body: unknown) {
  const bytes = Buffer.from(JSON.stringify(body));
  const put = await fetch(`${registryUrl}/v2/${repository}/manifests/${reference}`, { method: 'PUT', headers: { 'content-type': mediaType }, body: bytes });
  if (put.status !== 201) throw new Error(`manifest push to ${repository}:${reference} answered ${put.status}: ${await put.text()}`);
  return { mediaType, digest: sha256Of(bytes), size: bytes.length };
}

/** Pushes a one-layer artifact that serves as a subject, the same bytes in every repository. */
async function pushSubject(registryUrl: string, repository: string) {
  await pushBlob(registryUrl, repository, Buffer.from('{}'));
  const layer = await pushBlob(registryUrl, repository, Buffer.from('subject'));
  return putJson(registryUrl, repository, 'subject', OCI_MANIFEST, {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: 'application/example.subject',
    config: EMPTY_CONFIG,
    layers: [{ mediaType: 'text/plain', ...layer }],
  });
}

/** Pushes a referrer of `subject` with `text` as its one layer, by digest, and returns its fallback index entry. */
async function pushNote(registryUrl: string, repository: string, subject: { mediaType: string; digest: string; size: number }, text: string) {
  await pushBlob(registryUrl, repository, Buffer.from('{}'));
  const layer = await pushBlob(registryUrl, repository, Buffer.from(text));
  const body = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: 'application/example.note',
    config: EMPTY_CONFIG,
    layers: [{ mediaType: 'text/plain', ...layer }],
    subject,
  };
  const digest = sha256Of(JSON.stringify(body));
  const descriptor = await putJson(registryUrl, repository, digest, OCI_MANIFEST, body);
  return { ...descriptor, artifactType: 'application/example.note' };
}

/**
 * A transport that delays each GET whose path ends with `suffix` until `parties` of them wait, or a
 * quarter second has passed, whichever comes first. Everything else goes straight through.
 */
class ReadBarrier extends HttpTransport {
  private readonly suffix: string;
  private readonly parties: number;
  private waiting: Array<() => void> = [];

  constructor(suffix: string, parties: number) {
    super({ policy: new NetworkPolicy(['127.0.0.0/8']) });
    this.suffix = suffix;
    this.parties = parties;
  }

  override async send(request: HttpRequest): Promise<HttpResponse> {
    if (request.method === 'GET' && request.url.pathname.endsWith(this.suffix)) await this.hold();
    return super.send(request);
  }

  private hold(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      if (this.waiting.length >= this.parties) {
        for (const release of this.waiting.splice(0)) release();
        return;
      }
      setTimeout(() => {
        this.waiting = this.waiting.filter((waiter) => waiter !== resolve);
        resolve();
      }, 250);
    });
  }
}
