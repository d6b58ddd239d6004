import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DigestMismatchError, RegistryError, UnsupportedManifestError } from '../../src/errors.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import type { HttpTransport } from '../../src/registry/http.ts';
import { copyImage } from '../../src/registry/copy.ts';
import { transferBlob } from '../../src/registry/blob-transfer.ts';
import {
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  DOCKER_SCHEMA1_SIGNED,
  OCI_INDEX,
  OCI_MANIFEST,
} from '../../src/registry/media-types.ts';
import { DIGESTS, seedLayout } from '../harness/fixtures.ts';
import type { TestRegistry } from '../harness/registry.ts';
import { startScriptedServer, type ScriptedRequest, type ScriptedServer } from '../harness/scripted-server.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { FAST_RETRY, sha256Of, startRegistryPair, type RegistryPair } from './helpers.ts';

let pair: RegistryPair;
let source: TestRegistry;
let target: TestRegistry;
let transport: HttpTransport;
let sourceClient: RegistryClient;
let targetClient: RegistryClient;

beforeAll(async () => {
  pair = await startRegistryPair();
  ({ source, target, transport, sourceClient, targetClient } = pair);
});

afterAll(() => pair?.stop());

function scriptedClient(server: ScriptedServer, credentials?: { username: string; password: string }): RegistryClient {
  return new RegistryClient({ registry: server.host, insecure: true, transport, retry: FAST_RETRY, ...(credentials ? { credentials } : {}) });
}

interface Blob {
  bytes: Buffer;
  digest: string;
  size: number;
}

function blobOf(content: string | object): Blob {
  const bytes = Buffer.from(typeof content === 'string' ? content : JSON.stringify(content));
  return { bytes, digest: sha256Of(bytes), size: bytes.length };
}

function descriptor(mediaType: string, blob: Blob, extra: object = {}) {
  return { mediaType, digest: blob.digest, size: blob.size, ...extra };
}

function expectManifest(server: ScriptedServer, repository: string, reference: string, manifest: Blob, contentType: string): void {
  server.expect({ method: 'GET', path: `/v2/${repository}/manifests/${reference}`, reply: { status: 200, headers: { 'content-type': contentType }, body: manifest.bytes } });
}

function expectBlob(server: ScriptedServer, repository: string, blob: Blob): void {
  server.expect({ method: 'GET', path: `/v2/${repository}/blobs/${blob.digest}`, reply: { status: 200, body: blob.bytes } });
}

/** Builds a small single-platform image: config, one layer and the manifest, of Docker or OCI media types. */
function singleImage(kind: 'docker' | 'oci', platform: { os: string; architecture: string }, layerText: string, extraLayers: object[] = []) {
  const config = blobOf({ ...platform, rootfs: { type: 'layers', diff_ids: [] }, created: layerText });
  const layer = blobOf(layerText);
  const types =
    kind === 'docker'
      ? { manifest: DOCKER_MANIFEST, config: 'application/vnd.docker.container.image.v1+json', layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip' }
      : { manifest: OCI_MANIFEST, config: 'application/vnd.oci.image.config.v1+json', layer: 'application/vnd.oci.image.layer.v1.tar+gzip' };
  const manifest = blobOf({
    schemaVersion: 2,
    mediaType: types.manifest,
    config: descriptor(types.config, config),
    layers: [...extraLayers, descriptor(types.layer, layer)],
  });
  return { config, layer, manifest, mediaType: types.manifest, platform };
}

type SingleImage = ReturnType<typeof singleImage>;

function indexOf(kind: 'docker' | 'oci', images: SingleImage[]): { manifest: Blob; mediaType: string } {
  const mediaType = kind === 'docker' ? DOCKER_MANIFEST_LIST : OCI_INDEX;
  const manifest = blobOf({ schemaVersion: 2, mediaType, manifests: images.map((image) => descriptor(image.mediaType, image.manifest, { platform: image.platform })) });
  return { manifest, mediaType };
}

/** Scripts the GETs that copying `image` from `repository` makes: the manifest by digest, its config and its layer. */
function expectImageRead(server: ScriptedServer, repository: string, image: SingleImage): void {
  expectManifest(server, repository, image.manifest.digest, image.manifest, image.mediaType);
  expectBlob(server, repository, image.config);
  expectBlob(server, repository, image.layer);
}

const FOREIGN_LAYER = {
  mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  digest: `sha256:${'f'.repeat(64)}`,
  size: 1_234_567,
  urls: [`https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:${'f'.repeat(64)}`],
};

describe('upload Location', () => {
  const blob = blobOf('upload location test blob');
  const digestParameter = `digest=${encodeURIComponent(blob.digest)}`;

  test.each([
    { form: 'absolute with _state', location: (url: string) => `${url}/v2/app/blobs/uploads/u1?_state=a%2Fb%3D`, put: `/v2/app/blobs/uploads/u1?_state=a%2Fb%3D&${digestParameter}` },
    { form: 'absolute path without query', location: () => '/v2/app/blobs/uploads/u2', put: `/v2/app/blobs/uploads/u2?${digestParameter}` },
    { form: 'relative with query', location: () => 'u3?_state=xyz', put: `/v2/app/blobs/uploads/u3?_state=xyz&${digestParameter}` },
    { form: 'signed query kept byte for byte', location: () => '/upload/u4?uuid=4&sig=a%2Bb%2F%3D', put: `/upload/u4?uuid=4&sig=a%2Bb%2F%3D&${digestParameter}` },
  ])('$form is resolved and gets digest with the right separator', async ({ location, put }) => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'POST', path: '/v2/app/blobs/uploads/', reply: { status: 202, headers: { location: location(server.url) } } },
      { method: 'PUT', path: put, reply: { status: 201, headers: { 'docker-content-digest': blob.digest } } },
    );
    const registry = scriptedClient(server);

    const start = await registry.startUpload('app');
    if (start.mounted) throw new Error('expected an upload session');
    await registry.uploadMonolithic('app', start.location, blob.digest, blob.bytes, blob.size);

    expect(server.requests.at(-1)?.body.equals(blob.bytes)).toBe(true);
  });

  test('redirect to another host: resolved there', async () => {
    const registryServer = await startScriptedServer();
    const storage = await startScriptedServer();
    const credentials = { username: 'uploader', password: 'redirect-pw-5d0c2a' };
    const withoutAuthorization = (request: ScriptedRequest) => request.headers.authorization === undefined;
    registryServer.expect(
      { method: 'POST', path: '/v2/app/blobs/uploads/', reply: { status: 401, headers: { 'www-authenticate': 'Basic realm="scripted"' } } },
      {
        method: 'POST',
        path: '/v2/app/blobs/uploads/',
        reply: (request) =>
          request.headers.authorization?.startsWith('Basic ') ? { status: 307, headers: { location: `${storage.url}/uploads/start` } } : { status: 400 },
      },
    );
    storage.expect(
      {
        method: 'POST',
        path: '/uploads/start',
        reply: (request) => (withoutAuthorization(request) ? { status: 202, headers: { location: 'session/7?_state=s7' } } : { status: 400, body: 'credentials leaked' }),
      },
      {
        method: 'PUT',
        path: `/uploads/session/7?_state=s7&${digestParameter}`,
        reply: (request) => (withoutAuthorization(request) ? { status: 201 } : { status: 400, body: 'credentials leaked' }),
      },
    );
    const registry = scriptedClient(registryServer, credentials);

    const start = await registry.startUpload('app');
    if (start.mounted) throw new Error('expected an upload session');
    expect(start.location.href).toBe(`${storage.url}/uploads/session/7?_state=s7`);
    await registry.uploadMonolithic('app', start.location, blob.digest, blob.bytes, blob.size);
  });

  test('each PATCH Location used next', async () => {
    const server = await startScriptedServer();
    const bytes = Buffer.from('0123456789ab');
    const digest = sha256Of(bytes);
    server.expect(
      { method: 'POST', path: '/v2/app/blobs/uploads/', reply: { status: 202, headers: { location: '/v2/app/blobs/uploads/s?step=1' } } },
      { method: 'PATCH', path: '/v2/app/blobs/uploads/s?step=1', reply: { status: 202, headers: { location: '/v2/app/blobs/uploads/s?step=2', range: '0-5' } } },
      { method: 'PATCH', path: '/v2/app/blobs/uploads/s?step=2', reply: { status: 202, headers: { location: 's?step=3', range: '0-11' } } },
      { method: 'PUT', path: `/v2/app/blobs/uploads/s?step=3&digest=${encodeURIComponent(digest)}`, reply: { status: 201 } },
    );
    const registry = scriptedClient(server);

    const start = await registry.startUpload('app');
    if (start.mounted) throw new Error('expected an upload session');
    const second = await registry.uploadChunk('app', start.location, bytes.subarray(0, 6), 0, 6);
    const third = await registry.uploadChunk('app', second, bytes.subarray(6), 6, 6);
    await registry.finishUpload('app', third, digest);

    const patches = server.requests.filter((request) => request.method === 'PATCH');
    expect(patches.map((request) => request.headers['content-range'])).toEqual(['0-5', '6-11']);
    expect(Buffer.concat(patches.map((request) => request.body)).equals(bytes)).toBe(true);
  });
});

describe('Docker-Content-Digest', () => {
  const manifest = singleImage('oci', { os: 'linux', architecture: 'amd64' }, 'digest header test').manifest;

  test('missing header: the digest comes from the bytes', async () => {
    const server = await startScriptedServer();
    expectManifest(server, 'app', '1.0', manifest, OCI_MANIFEST);

    const read = await scriptedClient(server).getManifest('app', '1.0');

    expect(read?.digest).toBe(manifest.digest);
    expect(read?.bytes.equals(manifest.bytes)).toBe(true);
  });

  test('a header that disagrees with the bytes is an error', async () => {
    const server = await startScriptedServer();
    const wrong = `sha256:${'0'.repeat(64)}`;
    server.expect({ method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 200, headers: { 'content-type': OCI_MANIFEST, 'docker-content-digest': wrong }, body: manifest.bytes } });

    const failure = scriptedClient(server).getManifest('app', '1.0');

    await expect(failure).rejects.toBeInstanceOf(DigestMismatchError);
    await expect(failure).rejects.toThrow(`declared Docker-Content-Digest ${wrong} but the bytes hash to ${manifest.digest}`);
  });

  test('a matching header is accepted', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 200, headers: { 'content-type': OCI_MANIFEST, 'docker-content-digest': manifest.digest }, body: manifest.bytes } });

    expect((await scriptedClient(server).getManifest('app', '1.0'))?.digest).toBe(manifest.digest);
  });

  test('a pushed manifest stored under another digest is an error', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'PUT', path: '/v2/app/manifests/1.0', reply: { status: 201, headers: { 'docker-content-digest': `sha256:${'1'.repeat(64)}` } } });

    await expect(scriptedClient(server).putManifest('app', '1.0', { bytes: manifest.bytes, mediaType: OCI_MANIFEST })).rejects.toBeInstanceOf(DigestMismatchError);
  });
});

describe('blob verification', () => {
  test.each([
    { upload: 'monolithic', monolithicMaxBytes: 1_000_000 },
    { upload: 'chunked', monolithicMaxBytes: 0 },
  ])('altered bytes are never committed ($upload)', async ({ upload, monolithicMaxBytes }) => {
    const server = await startScriptedServer();
    const claimed = Buffer.alloc(300_000, 7);
    const digest = sha256Of(claimed);
    server.expect({ method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 200, body: Buffer.alloc(300_000, 8) } });

    const failure = transferBlob(
      { source: scriptedClient(server), sourceRepository: 'app', target: targetClient, targetRepository: `verified/${upload}` },
      digest,
      claimed.length,
      { monolithicMaxBytes, chunkBytes: 100_000 },
    );

    await expect(failure).rejects.toBeInstanceOf(DigestMismatchError);
    await expect(failure).rejects.toThrow(`blob ${digest} arrived with digest ${sha256Of(Buffer.alloc(300_000, 8))}`);
    expect(await targetClient.headBlob(`verified/${upload}`, digest)).toBeUndefined();
  });
});

describe('blob transfer abort', () => {
  test('abort before the upload reads rejects cleanly', async () => {
    const server = await startScriptedServer();
    const content = Buffer.alloc(50_000, 3);
    const digest = sha256Of(content);
    const controller = new AbortController();
    const reason = new Error('lock lost in the test');
    // The signal aborts while the download opens, before the upload has read a byte of it.
    server.expect({
      method: 'GET',
      path: `/v2/app/blobs/${digest}`,
      reply: () => {
        controller.abort(reason);
        return { status: 200, body: content };
      },
    });

    const transfer = transferBlob(
      { source: scriptedClient(server), sourceRepository: 'app', target: targetClient, targetRepository: 'aborted/early' },
      digest,
      content.length,
      { monolithicMaxBytes: 1024 * 1024, chunkBytes: 1024 * 1024, signal: controller.signal },
    );

    await expect(transfer).rejects.toBe(reason);
    expect(await targetClient.headBlob('aborted/early', digest), 'nothing was stored').toBeUndefined();
  });
});

describe('manifest HEAD and Accept', () => {
  const image = singleImage('docker', { os: 'linux', architecture: 'amd64' }, 'head test');

  test.each([404, 405, 406])('HEAD %i confirmed with a GET', async (status) => {
    const server = await startScriptedServer();
    server.expect({ method: 'HEAD', path: '/v2/app/manifests/1.0', reply: { status } });
    expectManifest(server, 'app', '1.0', image.manifest, DOCKER_MANIFEST);

    const head = await scriptedClient(server).headManifest('app', '1.0');

    expect(head).toEqual({ digest: image.manifest.digest, mediaType: DOCKER_MANIFEST, size: image.manifest.size });
  });

  test('HEAD and GET both 404: the manifest is absent', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'HEAD', path: '/v2/app/manifests/1.0', reply: { status: 404 } },
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 404, body: { errors: [{ code: 'MANIFEST_UNKNOWN' }] } } },
    );

    expect(await scriptedClient(server).headManifest('app', '1.0')).toBeUndefined();
  });

  test('HEAD 404 trusted without confirmation', async () => {
    const server = await startScriptedServer();
    // The scripted server fails the test on the GET that a confirmation would send.
    server.expect({ method: 'HEAD', path: '/v2/app/manifests/1.0', reply: { status: 404 } });

    expect(await scriptedClient(server).headManifest('app', '1.0', { confirmMissing: false })).toBeUndefined();
  });

  test.each([405, 406])('HEAD %i confirmed even without 404 confirmation', async (status) => {
    const server = await startScriptedServer();
    server.expect({ method: 'HEAD', path: '/v2/app/manifests/1.0', reply: { status } });
    expectManifest(server, 'app', '1.0', image.manifest, DOCKER_MANIFEST);

    const head = await scriptedClient(server).headManifest('app', '1.0', { confirmMissing: false });

    expect(head).toEqual({ digest: image.manifest.digest, mediaType: DOCKER_MANIFEST, size: image.manifest.size });
  });

  // Older registries return a schema 1 manifest when they find no schema 2 type in Accept.
  const schema1 = blobOf({ schemaVersion: 1, name: 'app', tag: '1.0', fsLayers: [], history: [] });
  const negotiate = (types: string[]) =>
    types.includes(DOCKER_MANIFEST)
      ? { status: 200, headers: { 'content-type': DOCKER_MANIFEST }, body: image.manifest.bytes }
      : { status: 200, headers: { 'content-type': DOCKER_SCHEMA1_SIGNED }, body: schema1.bytes };
  const acceptLines = (request: ScriptedRequest) => request.rawHeaders.filter((_, i) => i % 2 === 1 && request.rawHeaders[i - 1]!.toLowerCase() === 'accept');

  test('Accept reaches a server that reads only the first header line', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'GET', path: '/v2/app/manifests/1.0', reply: (request) => negotiate((acceptLines(request)[0] ?? '').split(',').map((type) => type.trim())) });

    const read = await scriptedClient(server).getManifest('app', '1.0');

    expect(read?.mediaType).toBe(DOCKER_MANIFEST);
  });

  test('Accept reaches a server that compares whole header lines', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'GET', path: '/v2/app/manifests/1.0', reply: (request) => negotiate(acceptLines(request)) });

    const read = await scriptedClient(server).getManifest('app', '1.0');

    expect(read?.mediaType).toBe(DOCKER_MANIFEST);
  });

  test('a distribution registry reads the Accept lines too', async () => {
    await seedLayout(source.host, 'hello-world-arm64-docker-v2', 'accept/hello-world', 'arm64');

    const read = await sourceClient.getManifest('accept/hello-world', 'arm64');

    expect(read?.mediaType).toBe(DOCKER_MANIFEST);
    expect(read?.digest).toBe(DIGESTS.helloWorldArm64);
  });
});

describe('source that ignores Accept', () => {
  const child = singleImage('oci', { os: 'linux', architecture: 'arm64' }, 'oci index child layer');
  const index = indexOf('oci', [child]);
  const untypedIndex = blobOf({ schemaVersion: 2, manifests: [descriptor(OCI_MANIFEST, child.manifest, { platform: child.platform })] });

  test.each([
    { answer: 'an OCI index Content-Type', manifest: index.manifest, contentType: OCI_INDEX },
    { answer: 'application/json and a mediaType field', manifest: index.manifest, contentType: 'application/json' },
    { answer: 'text/plain and no mediaType field', manifest: untypedIndex, contentType: 'text/plain' },
  ])('an OCI index sent with $answer is typed from the answer', async ({ manifest, contentType }) => {
    const server = await startScriptedServer();
    expectManifest(server, 'app', '1.0', manifest, contentType);

    const read = await scriptedClient(server).getManifest('app', '1.0', { accept: [DOCKER_MANIFEST_LIST, DOCKER_MANIFEST] });

    expect(read?.mediaType).toBe(OCI_INDEX);
    expect(read?.bytes.equals(manifest.bytes)).toBe(true);
  });

  test('the OCI index is copied unchanged', async () => {
    const server = await startScriptedServer();
    expectManifest(server, 'app', '1.0', index.manifest, OCI_INDEX);
    expectImageRead(server, 'app', child);

    const result = await copyImage({ client: scriptedClient(server), repository: 'app', tag: '1.0' }, { client: targetClient, repository: 'accept/oci-index', tag: '1.0' });

    expect(result.mediaType).toBe(OCI_INDEX);
    expect(result.targetDigest).toBe(index.manifest.digest);
    expect((await inspectRaw(`${target.host}/accept/oci-index:1.0`)).equals(index.manifest.bytes)).toBe(true);
  });
});

describe('final PUT after another pusher committed the blob', () => {
  const blob = blobOf('blob another worker pushed first');
  const putPath = `/v2/app/blobs/uploads/u?digest=${encodeURIComponent(blob.digest)}`;
  const unknownUpload = { status: 404, body: { errors: [{ code: 'BLOB_UPLOAD_UNKNOWN', message: 'blob upload unknown to registry' }] } };

  test('a HEAD showing the blob with the right digest counts as success', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'PUT', path: putPath, reply: unknownUpload },
      { method: 'HEAD', path: `/v2/app/blobs/${blob.digest}`, reply: { status: 200, headers: { 'content-length': String(blob.size), 'docker-content-digest': blob.digest } } },
    );

    await scriptedClient(server).uploadMonolithic('app', new URL(`${server.url}/v2/app/blobs/uploads/u`), blob.digest, blob.bytes, blob.size);
  });

  test.each([
    { head: 'another digest', reply: { status: 200, headers: { 'content-length': String(blob.size), 'docker-content-digest': `sha256:${'2'.repeat(64)}` } } },
    { head: 'no blob', reply: { status: 404 } },
  ])('a HEAD showing $head keeps the failure', async ({ reply }) => {
    const server = await startScriptedServer();
    server.expect({ method: 'PUT', path: putPath, reply: unknownUpload }, { method: 'HEAD', path: `/v2/app/blobs/${blob.digest}`, reply });

    const failure = scriptedClient(server).uploadMonolithic('app', new URL(`${server.url}/v2/app/blobs/uploads/u`), blob.digest, blob.bytes, blob.size);

    await expect(failure).rejects.toBeInstanceOf(RegistryError);
    await expect(failure).rejects.toThrow('BLOB_UPLOAD_UNKNOWN');
  });
});

describe('Docker schema 1', () => {
  test('is refused before any blob moves', async () => {
    const sourceServer = await startScriptedServer();
    // The target expects no request at all: any request to it fails the test.
    const targetServer = await startScriptedServer();
    const schema1 = blobOf({
      schemaVersion: 1,
      name: 'legacy/app',
      tag: 'old',
      architecture: 'amd64',
      fsLayers: [{ blobSum: `sha256:${'3'.repeat(64)}` }],
      history: [{ v1Compatibility: '{}' }],
      signatures: [{ header: { alg: 'ES256' }, signature: 'c2lnbmF0dXJl', protected: 'cHJvdGVjdGVk' }],
    });
    expectManifest(sourceServer, 'legacy/app', 'old', schema1, DOCKER_SCHEMA1_SIGNED);

    const failure = copyImage({ client: scriptedClient(sourceServer), repository: 'legacy/app', tag: 'old' }, { client: scriptedClient(targetServer), repository: 'mirror/app', tag: 'old' });

    await expect(failure).rejects.toBeInstanceOf(UnsupportedManifestError);
    await expect(failure).rejects.toThrow(`cannot copy ${sourceServer.host}/legacy/app:old: old is a Docker schema 1 manifest`);
    await expect(failure).rejects.toThrow('re-push the image with a current Docker or buildah (schema 2 or OCI) and mirror that');
  });
});

describe('foreign layers', () => {
  const linux = singleImage('docker', { os: 'linux', architecture: 'amd64' }, 'linux layer');
  const windows = singleImage('docker', { os: 'windows', architecture: 'amd64' }, 'windows layer on top of the foreign base', [FOREIGN_LAYER]);
  const list = indexOf('docker', [linux, windows]);

  test('kept by default: manifest pushed unchanged', async () => {
    // distribution 2.8.2 accepts this OCI layer type with URLs without holding its blob (measured); it
    // refuses the Docker foreign type, which the next test uses.
    const foreignOci = { ...FOREIGN_LAYER, mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd' };
    const windowsOci = singleImage('oci', { os: 'windows', architecture: 'amd64' }, 'oci windows layer', [foreignOci]);
    const linuxOci = singleImage('oci', { os: 'linux', architecture: 'amd64' }, 'oci linux layer');
    const index = indexOf('oci', [linuxOci, windowsOci]);
    const server = await startScriptedServer();
    expectManifest(server, 'app', '1.0', index.manifest, OCI_INDEX);
    expectImageRead(server, 'app', linuxOci);
    expectImageRead(server, 'app', windowsOci);

    const result = await copyImage({ client: scriptedClient(server), repository: 'app', tag: '1.0' }, { client: targetClient, repository: 'foreign/kept', tag: '1.0' });

    expect(result.digestChanged).toBe(false);
    expect(result.targetDigest).toBe(index.manifest.digest);
    expect(result.skippedPlatforms).toEqual([]);
    expect((await inspectRaw(`${target.host}/foreign/kept@${windowsOci.manifest.digest}`)).equals(windowsOci.manifest.bytes)).toBe(true);
    const blobs = (await target.requests()).filter((entry) => entry.path.includes(FOREIGN_LAYER.digest));
    expect(blobs, 'the foreign blob is never requested from the target').toEqual([]);
  });

  test('rejected by target: error names platform and option', async () => {
    const windowsOnly = indexOf('docker', [windows]);
    const server = await startScriptedServer();
    expectManifest(server, 'app', '1.0', windowsOnly.manifest, DOCKER_MANIFEST_LIST);
    expectImageRead(server, 'app', windows);

    const failure = copyImage({ client: scriptedClient(server), repository: 'app', tag: '1.0' }, { client: targetClient, repository: 'foreign/refused', tag: '1.0' });

    await expect(failure).rejects.toBeInstanceOf(UnsupportedManifestError);
    await expect(failure).rejects.toThrow(`${target.host} rejected the manifest of platform windows/amd64 (${windows.manifest.digest}), which has foreign layers`);
    await expect(failure).rejects.toThrow("set the copy option foreignLayers to 'skip-platform'");
    await expect(failure).rejects.toMatchObject({ retryable: false });
  });

  test("'skip-platform' writes a filtered index", async () => {
    const server = await startScriptedServer();
    expectManifest(server, 'app', '1.0', list.manifest, DOCKER_MANIFEST_LIST);
    expectManifest(server, 'app', windows.manifest.digest, windows.manifest, DOCKER_MANIFEST);
    expectImageRead(server, 'app', linux);

    const result = await copyImage(
      { client: scriptedClient(server), repository: 'app', tag: '1.0' },
      { client: targetClient, repository: 'foreign/skipped', tag: '1.0' },
      { foreignLayers: 'skip-platform' },
    );

    const pushed = await inspectRaw(`${target.host}/foreign/skipped:1.0`);
    expect(result.digestChanged).toBe(true);
    expect(result.targetDigest).toBe(sha256Of(pushed));
    expect(result.skippedPlatforms).toEqual(['windows/amd64']);
    expect(result.platforms).toEqual(['linux/amd64']);
    const index = JSON.parse(pushed.toString('utf8')) as { manifests: Array<{ digest: string }> };
    expect(index.manifests.map((entry) => entry.digest)).toEqual([linux.manifest.digest]);
  });

  test("'fail' rejects before any blob moves", async () => {
    const server = await startScriptedServer();
    expectManifest(server, 'app', '1.0', list.manifest, DOCKER_MANIFEST_LIST);
    expectManifest(server, 'app', linux.manifest.digest, linux.manifest, DOCKER_MANIFEST);
    expectManifest(server, 'app', windows.manifest.digest, windows.manifest, DOCKER_MANIFEST);
    await target.clearLog();

    const failure = copyImage(
      { client: scriptedClient(server), repository: 'app', tag: '1.0' },
      { client: targetClient, repository: 'foreign/failed', tag: '1.0' },
      { foreignLayers: 'fail' },
    );

    await expect(failure).rejects.toBeInstanceOf(UnsupportedManifestError);
    await expect(failure).rejects.toThrow(`platform windows/amd64 (${windows.manifest.digest}): it has foreign layers, served from URLs such as ${FOREIGN_LAYER.urls[0]}`);
    await expect(failure).rejects.toThrow("the copy option foreignLayers is 'fail'");
    expect(await target.requests(), 'the target sees no request').toEqual([]);
  });
});

describe('tag listing', () => {
  test('follows relative and absolute Link headers to the end', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'GET', path: '/v2/app/tags/list?n=2', reply: { status: 200, headers: { link: '</v2/app/tags/list?n=2&last=b>; rel="next"' }, body: { name: 'app', tags: ['a', 'b'] } } },
      { method: 'GET', path: '/v2/app/tags/list?n=2&last=b', reply: { status: 200, headers: { link: `<${server.url}/v2/app/tags/list?n=2&last=d>; rel=next` }, body: { name: 'app', tags: ['c', 'd'] } } },
      { method: 'GET', path: '/v2/app/tags/list?n=2&last=d', reply: { status: 200, body: { name: 'app', tags: ['e'] } } },
    );

    expect(await scriptedClient(server).listTags('app', { pageSize: 2 })).toEqual(['a', 'b', 'c', 'd', 'e']);
  });

  test('page cap stops with an error', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'GET', path: '/v2/app/tags/list', reply: { status: 200, headers: { link: '</v2/app/tags/list?last=a>; rel="next"' }, body: { name: 'app', tags: ['a'] } } },
      { method: 'GET', path: '/v2/app/tags/list?last=a', reply: { status: 200, headers: { link: '</v2/app/tags/list?last=b>; rel="next"' }, body: { name: 'app', tags: ['b'] } } },
    );

    const failure = scriptedClient(server).listTags('app', { maxPages: 2 });

    await expect(failure).rejects.toMatchObject({ code: 'REGISTRY_PROTOCOL', retryable: false });
    await expect(failure).rejects.toThrow('has more than 2 tag pages; raise maxPages to read them all');
  });

  test('Link loop stops with an error', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'GET', path: '/v2/app/tags/list', reply: { status: 200, headers: { link: '</v2/app/tags/list?last=a>; rel="next"' }, body: { name: 'app', tags: ['a'] } } },
      { method: 'GET', path: '/v2/app/tags/list?last=a', reply: { status: 200, headers: { link: '</v2/app/tags/list>; rel="next"' }, body: { name: 'app', tags: ['b'] } } },
    );

    await expect(scriptedClient(server).listTags('app')).rejects.toThrow('linked tag page 2 back to /v2/app/tags/list, a page already read');
  });

  test('reads the single page of a distribution registry', async () => {
    await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'tags/busybox', 'one');
    await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'tags/busybox', 'two');

    expect((await sourceClient.listTags('tags/busybox'))?.sort()).toEqual(['one', 'two']);
  });
});

describe('tag that moved', () => {
  test('copies requested digest, reports the move', async () => {
    await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'moved/app', '1.2');
    await seedLayout(source.host, 'busybox-1.38.0-uclibc-arm64v8', 'moved/app', '1.2');

    const result = await copyImage(
      { client: sourceClient, repository: 'moved/app', tag: '1.2', digest: DIGESTS.busyboxAmd64 },
      { client: targetClient, repository: 'moved/app', tag: '1.2' },
    );

    expect(result.sourceDigest).toBe(DIGESTS.busyboxAmd64);
    expect(result.tagMoved).toBe(true);
    expect(result.sourceTagDigest).toBe(DIGESTS.busyboxArm64);
    expect(sha256Of(await inspectRaw(`${target.host}/moved/app:1.2`))).toBe(DIGESTS.busyboxAmd64);
  });

  test('unmoved tag not reported as moved', async () => {
    await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'steady/app', '1.2');

    const result = await copyImage(
      { client: sourceClient, repository: 'steady/app', tag: '1.2', digest: DIGESTS.busyboxAmd64 },
      { client: targetClient, repository: 'steady/app', tag: '1.2' },
    );

    expect(result.tagMoved).toBe(false);
    expect(result.sourceTagDigest).toBe(DIGESTS.busyboxAmd64);
  });
});
