import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RegistryError } from '../../src/errors.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { copyReferrers } from '../../src/registry/copy.ts';
import { fallbackTag, mergeFallbackIndex } from '../../src/registry/referrers.ts';
import { OCI_INDEX, OCI_MANIFEST } from '../../src/registry/media-types.ts';
import { UnsupportedManifestError } from '../../src/errors.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { startScriptedServer } from '../harness/scripted-server.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { FIXTURES, pushLayoutOverHttp } from '../harness/fixtures.ts';
import { loopbackTransport, sha256Of } from './helpers.ts';

/**
 * The OCI 1.1 referrers API, which distribution 2.8 lacks, played by a scripted server that fails the
 * test on any request not declared in advance. Cases: listing referrers, a target that indexes a pushed
 * referrer itself (`OCI-Subject`), and a source that lists referrers through the API.
 */

const transport = loopbackTransport();
let registry: TestRegistry;

const REGCLIENT = 'regclient/testrepo';
const RC_BLOBS = join(FIXTURES, 'synthetic', 'regclient-testrepo', 'blobs', 'sha256');
// The linux/amd64 manifest of the regclient v2 index, and its one referrer, of artifact type application/example.arms.
const SUBJECT = 'sha256:ee378b79279b57eb5ac1f3b892c9ad2a9be9d9ccabe1a29a9cbaed8cad182358';
const ARMS = 'sha256:30bc58e881e9e21ce6b77b7b3f69dac5e9371c9ea5a445234c22234826563023';
const ARMS_BLOBS = ['sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', 'sha256:ba8916eda90c32a3d2ae88b881bff496dcb02637801567def81586e0298e57a2'];

beforeAll(async () => {
  registry = await startRegistry();
  await pushLayoutOverHttp(registry.url, REGCLIENT, 'synthetic/regclient-testrepo');
});

afterAll(async () => {
  await transport.close();
  await registry?.stop();
});

function fixtureBytes(digest: string): Promise<Buffer> {
  return readFile(join(RC_BLOBS, digest.slice('sha256:'.length)));
}

function indexBody(manifests: unknown[]): string {
  return JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests });
}

describe('listReferrers', () => {
  test('returns undefined without the API', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'GET', path: `/v2/app/referrers/${SUBJECT}`, reply: { status: 404, body: '404 page not found\n' } });
    const client = new RegistryClient({ registry: server.host, insecure: true, transport });

    expect(await client.listReferrers('app', SUBJECT)).toBeUndefined();
  });

  test('follows pages and filters by artifact type', async () => {
    const server = await startScriptedServer();
    const entry = (digest: string, artifactType: string) => ({ mediaType: OCI_MANIFEST, digest: sha256Of(digest), size: 10, artifactType });
    server.expect(
      {
        method: 'GET',
        path: `/v2/app/referrers/${SUBJECT}?artifactType=application%2Fexample.sig`,
        reply: (request) => {
          expect(request.headers.accept).toBe(OCI_INDEX);
          return {
            status: 200,
            headers: { 'content-type': OCI_INDEX, link: `</v2/app/referrers/${SUBJECT}?artifactType=application%2Fexample.sig&last=b>; rel="next"` },
            body: indexBody([entry('a', 'application/example.sig'), entry('b', 'application/example.sbom')]),
          };
        },
      },
      {
        method: 'GET',
        path: `/v2/app/referrers/${SUBJECT}?artifactType=application%2Fexample.sig&last=b`,
        reply: { status: 200, headers: { 'content-type': OCI_INDEX }, body: indexBody([entry('c', 'application/example.sig')]) },
      },
    );
    const client = new RegistryClient({ registry: server.host, insecure: true, transport });

    const referrers = await client.listReferrers('app', SUBJECT, 'application/example.sig');

    expect(referrers?.map((referrer) => referrer.digest)).toEqual([sha256Of('a'), sha256Of('c')]);
  });

  test('trusts a filter the registry applied', async () => {
    const server = await startScriptedServer();
    const listed = { mediaType: OCI_MANIFEST, digest: sha256Of('x'), size: 10, artifactType: 'application/example.other' };
    server.expect({
      method: 'GET',
      path: `/v2/app/referrers/${SUBJECT}?artifactType=application%2Fexample.sig`,
      reply: { status: 200, headers: { 'content-type': OCI_INDEX, 'oci-filters-applied': 'artifactType' }, body: indexBody([listed]) },
    });
    const client = new RegistryClient({ registry: server.host, insecure: true, transport });

    expect(await client.listReferrers('app', SUBJECT, 'application/example.sig')).toEqual([listed]);
  });

  test('rejects a page that is not an index', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'GET', path: `/v2/app/referrers/${SUBJECT}`, reply: { status: 200, body: '{"referrers":[]}' } });
    const client = new RegistryClient({ registry: server.host, insecure: true, transport });

    const listing = client.listReferrers('app', SUBJECT);

    await expect(listing).rejects.toBeInstanceOf(RegistryError);
    await expect(listing).rejects.toThrow(/not an OCI index/);
  });
});

describe('target with the referrers API', () => {
  test('indexes a pushed referrer, so no fallback tag is written', async () => {
    const server = await startScriptedServer();
    const subjectBytes = await fixtureBytes(SUBJECT);
    const armsBytes = await fixtureBytes(ARMS);
    let pushed: Buffer | undefined;
    server.expect(
      { method: 'GET', path: `/v2/app/manifests/${SUBJECT}`, reply: { status: 200, headers: { 'content-type': OCI_MANIFEST }, body: subjectBytes } },
      { method: 'GET', path: `/v2/app/manifests/${fallbackTag(SUBJECT)}`, reply: { status: 404 } },
      { method: 'HEAD', path: `/v2/app/manifests/${ARMS}`, reply: { status: 404 } },
      { method: 'GET', path: `/v2/app/manifests/${ARMS}`, reply: { status: 404 } },
      ...ARMS_BLOBS.map((digest) => ({ method: 'HEAD', path: `/v2/app/blobs/${digest}`, reply: { status: 200, headers: { 'content-length': '8', 'docker-content-digest': digest } } })),
      {
        method: 'PUT',
        path: `/v2/app/manifests/${ARMS}`,
        reply: (request) => {
          pushed = request.body;
          return { status: 201, headers: { 'docker-content-digest': ARMS, 'oci-subject': SUBJECT } };
        },
      },
    );
    const target = new RegistryClient({ registry: server.host, insecure: true, transport });
    const source = new RegistryClient({ registry: registry.host, insecure: true, transport });

    const result = await copyReferrers({ client: source, repository: REGCLIENT }, { client: target, repository: 'app', digest: SUBJECT }, { referrers: 'all' });

    expect(pushed?.equals(armsBytes), 'the referrer is pushed byte for byte').toBe(true);
    expect(result.referrers).toEqual([{ artifactType: 'application/example.arms', digest: ARMS, subject: SUBJECT, copied: true }]);
    expect(result.fallbackIndexes).toEqual([]);
  });

  test('lists a referrer it had, so no fallback tag is written', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'GET', path: `/v2/app/manifests/${SUBJECT}`, reply: { status: 200, headers: { 'content-type': OCI_MANIFEST }, body: await fixtureBytes(SUBJECT) } },
      { method: 'GET', path: `/v2/app/manifests/${fallbackTag(SUBJECT)}`, reply: { status: 404 } },
      { method: 'HEAD', path: `/v2/app/manifests/${ARMS}`, reply: { status: 200, headers: { 'docker-content-digest': ARMS, 'content-type': OCI_MANIFEST } } },
      {
        method: 'GET',
        path: `/v2/app/referrers/${SUBJECT}`,
        reply: { status: 200, headers: { 'content-type': OCI_INDEX }, body: indexBody([{ mediaType: OCI_MANIFEST, digest: ARMS, size: 100, artifactType: 'application/example.arms' }]) },
      },
    );
    const target = new RegistryClient({ registry: server.host, insecure: true, transport });
    const source = new RegistryClient({ registry: registry.host, insecure: true, transport });

    const result = await copyReferrers({ client: source, repository: REGCLIENT }, { client: target, repository: 'app', digest: SUBJECT }, { referrers: 'all' });

    expect(result.referrers).toEqual([{ artifactType: 'application/example.arms', digest: ARMS, subject: SUBJECT, copied: false }]);
  });
});

describe('source with the referrers API', () => {
  test('copies listed referrers and lists them once per manifest again', async () => {
    const server = await startScriptedServer();
    const empty = Buffer.from('{}');
    const note = Buffer.from('a note about the subject');
    const subjectLayer = Buffer.from('subject');
    const subjectBytes = manifestBytes({ artifactType: 'application/example.subject', layer: subjectLayer });
    const subject = { mediaType: OCI_MANIFEST, digest: sha256Of(subjectBytes), size: subjectBytes.length };
    const noteBytes = manifestBytes({ artifactType: 'application/example.note', layer: note, subject });
    const noteEntry = { mediaType: OCI_MANIFEST, digest: sha256Of(noteBytes), size: noteBytes.length, artifactType: 'application/example.note' };
    // The target has the subject already, as after the copy of the image itself.
    for (const blob of [empty, subjectLayer]) await pushBlob(registry.url, 'api/target', blob);
    await putManifest(registry.url, 'api/target', subject.digest, subjectBytes);

    const listing = (digest: string, entries: unknown[]) => ({
      method: 'GET',
      path: `/v2/app/referrers/${digest}`,
      reply: { status: 200, headers: { 'content-type': OCI_INDEX }, body: indexBody(entries) },
    });
    const tagList = { method: 'GET', path: '/v2/app/tags/list', reply: { status: 200, body: { name: 'app', tags: ['subject'] } } };
    server.expect(
      listing(subject.digest, [noteEntry]),
      tagList,
      { method: 'GET', path: `/v2/app/manifests/${noteEntry.digest}`, reply: { status: 200, headers: { 'content-type': OCI_MANIFEST }, body: noteBytes } },
      { method: 'GET', path: `/v2/app/blobs/${sha256Of(note)}`, reply: { status: 200, body: note } },
      listing(noteEntry.digest, []),
    );
    const source = new RegistryClient({ registry: server.host, insecure: true, transport });
    const target = new RegistryClient({ registry: registry.host, insecure: true, transport });
    const copy = () => copyReferrers({ client: source, repository: 'app' }, { client: target, repository: 'api/target', digest: subject.digest }, { referrers: 'all' });

    const first = await copy();

    expect(first.referrers).toEqual([{ artifactType: 'application/example.note', digest: noteEntry.digest, subject: subject.digest, copied: true }]);
    expect((await inspectRaw(`${registry.host}/api/target@${noteEntry.digest}`)).equals(noteBytes)).toBe(true);
    const index = JSON.parse((await inspectRaw(`${registry.host}/api/target:${fallbackTag(subject.digest)}`)).toString('utf8')) as { manifests: unknown[] };
    expect(index.manifests, 'the target, without the API, lists it under the fallback tag').toEqual([noteEntry]);

    // A second copy lists the referrers of both manifests and the tags once, and reads nothing else.
    server.expect(listing(subject.digest, [noteEntry]), tagList, listing(noteEntry.digest, []));
    await registry.clearLog();
    const second = await copy();

    expect(second.referrers).toEqual([{ ...first.referrers[0], copied: false }]);
    expect(server.requests).toHaveLength(5 + 3);
    expect((await registry.requests()).filter((entry) => entry.method !== 'GET' && entry.method !== 'HEAD')).toEqual([]);
  });
});

describe('mergeFallbackIndex', () => {
  const entry = (name: string) => ({ mediaType: OCI_MANIFEST, digest: sha256Of(name), size: 1, artifactType: 'application/example' });
  const index = (body: Record<string, unknown>) => {
    const bytes = Buffer.from(JSON.stringify(body));
    return { bytes, mediaType: OCI_INDEX, digest: sha256Of(bytes) };
  };

  test('appends missing entries after the listed ones', () => {
    const current = index({ schemaVersion: 2, mediaType: OCI_INDEX, annotations: { kept: 'yes' }, manifests: [entry('a')] });

    const merged = mergeFallbackIndex(current, [entry('b'), entry('a')]);

    const body = JSON.parse(merged!.bytes.toString('utf8')) as { manifests: Array<{ digest: string }>; annotations: unknown };
    expect(body.manifests.map((listed) => listed.digest)).toEqual([sha256Of('a'), sha256Of('b')]);
    expect(body.annotations).toEqual({ kept: 'yes' });
    expect(merged!.digest).toBe(sha256Of(merged!.bytes));
  });

  test('returns undefined when every entry is listed', () => {
    const current = index({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [entry('a'), entry('b')] });

    expect(mergeFallbackIndex(current, [entry('b')])).toBeUndefined();
  });

  test('keeps the source bytes for a new tag listing the same entries', () => {
    const source = index({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [entry('a'), entry('b')] });

    expect(mergeFallbackIndex(undefined, [entry('a'), entry('b')], source)).toBe(source);
    expect(mergeFallbackIndex(undefined, [entry('a')], source)?.digest).not.toBe(source.digest);
  });

  test('rejects a tag that names a manifest', () => {
    const manifest = { bytes: Buffer.from('{}'), mediaType: OCI_MANIFEST, digest: sha256Of('{}') };

    expect(() => mergeFallbackIndex(manifest, [entry('a')])).toThrow(UnsupportedManifestError);
  });
});

/** Returns the bytes of a one-layer artifact manifest with an empty config. */
function manifestBytes(options: { artifactType: string; layer: Buffer; subject?: { mediaType: string; digest: string; size: number } }): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: options.artifactType,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256Of('{}'), size: 2 },
      layers: [{ mediaType: 'text/plain', digest: sha256Of(options.layer), size: options.layer.length }],
      ...(options.subject ? { subject: options.subject } : {}),
    }),
  );
}

async function pushBlob(registryUrl: string, repository: string, bytes: Buffer): Promise<void> {
  const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  const location = new URL(start.headers.get('location')!, registryUrl);
  location.searchParams.set('digest', sha256Of(bytes));
  const put = await fetch(location, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
  if (put.status !== 201) throw new Error(`blob upload to ${repository} answered ${put.status}`);
}

async function putManifest(registryUrl: string, repository: string, reference: string, bytes: Buffer): Promise<void> {
  const put = await fetch(`${registryUrl}/v2/${repository}/manifests/${reference}`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: bytes });
  if (put.status !== 201) throw new Error(`manifest push to ${repository}:${reference} answered ${put.status}: ${await put.text()}`);
}
