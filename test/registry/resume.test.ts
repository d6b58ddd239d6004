import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RegistryClient } from '../../src/registry/client.ts';
import { copyImage } from '../../src/registry/copy.ts';
import { openResumableBlob } from '../../src/registry/blob-reader.ts';
import { transferBlob } from '../../src/registry/blob-transfer.ts';
import { seedLayout } from '../harness/fixtures.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { startScriptedServer } from '../harness/scripted-server.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { startBreakingProxy, type BreakingProxy } from './breaking-proxy.ts';
import { FAST_RETRY, expectBreakingBlob, loopbackTransport, sha256Of } from './helpers.ts';

// The arm64 busybox fixture: a layer of 829,613 bytes, a config of 499 bytes and a manifest of 610
// bytes, 830,722 bytes in all.
const LAYER = 'sha256:4666378de536f031129e8887bf9cf6dc2598adfe708bb4d62b5b3d5db6a6125e';
const IMAGE_BYTES = 830_722;

let source: TestRegistry;
let target: TestRegistry;
let sourceProxy: BreakingProxy;
let targetProxy: BreakingProxy;
const transport = loopbackTransport();

beforeAll(async () => {
  [source, target] = await Promise.all([startRegistry(), startRegistry()]);
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-arm64v8', 'library/busybox', 'arm64');
  [sourceProxy, targetProxy] = await Promise.all([startBreakingProxy(Number(source.host.split(':')[1])), startBreakingProxy(Number(target.host.split(':')[1]))]);
});

afterAll(async () => {
  await transport.close();
  await Promise.all([sourceProxy?.stop(), targetProxy?.stop()]);
  await Promise.all([source?.stop(), target?.stop()]);
});

function client(host: string): RegistryClient {
  return new RegistryClient({ registry: host, insecure: true, transport, retry: FAST_RETRY });
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('broken download', () => {
  test('resumes from the break with Range', async () => {
    sourceProxy.breakOnce({ method: 'GET', path: new RegExp(`/blobs/${LAYER}$`), afterResponseBytes: 300_000 });

    const result = await copyImage(
      { client: client(sourceProxy.host), repository: 'library/busybox', tag: 'arm64' },
      { client: client(target.host), repository: 'resumed/download', tag: 'arm64' },
    );

    const reads = sourceProxy.requests.filter((request) => request.path.endsWith(LAYER));
    expect(reads.map((request) => ({ status: request.status, broken: request.broken }))).toEqual([
      { status: 200, broken: true },
      { status: 206, broken: false },
    ]);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(reads[1]!.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(300_000);
    expect(result.bytes.pulled, 'no byte is counted twice').toBe(IMAGE_BYTES);
    expect(result.blobs.copied).toBe(2);
    expect((await inspectRaw(`${target.host}/resumed/download:arm64`)).equals(await inspectRaw(`${source.host}/library/busybox:arm64`))).toBe(true);
  });

  test('ignored Range: skips delivered bytes', async () => {
    const server = await startScriptedServer();
    const blob = Buffer.from('0123456789abcdefghij');
    const digest = sha256Of(blob);
    server.expect(
      { method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 200, body: blob, breakAfterBytes: 7 } },
      { method: 'GET', path: `/v2/app/blobs/${digest}`, reply: (request) => (request.headers.range === 'bytes=7-' ? { status: 200, body: blob } : { status: 400 }) },
    );

    const stream = await openResumableBlob(client(server.host), 'app', digest, 3);

    expect((await collect(stream)).toString()).toBe(blob.toString());
  });

  test('gives up after the last resume', async () => {
    const server = await startScriptedServer();
    const digest = expectBreakingBlob(server, Buffer.from('a blob whose connection always breaks'), 1, 2);

    const stream = await openResumableBlob(client(server.host), 'app', digest, 2);

    await expect(collect(stream)).rejects.toMatchObject({ code: expect.stringMatching(/^(UND_ERR_SOCKET|ECONNRESET)$/) });
  });
});

describe('broken chunked upload', () => {
  test('PATCH broken mid-body: blob arrives whole', async () => {
    targetProxy.breakOnce({ method: 'PATCH', path: /\/blobs\/uploads\//, skip: 1, afterRequestBytes: 50_000 });

    const result = await copyImage(
      { client: client(source.host), repository: 'library/busybox', tag: 'arm64' },
      { client: client(targetProxy.host), repository: 'resumed/upload', tag: 'arm64' },
      { monolithicMaxBytes: 64 * 1024, chunkBytes: 300_000 },
    );

    // The config blob is uploaded at the same time, so requests are matched by upload session, not by order.
    const session = (path: string) => /\/blobs\/uploads\/([^?]+)/.exec(path)?.[1];
    const uploads = targetProxy.requests.filter((request) => session(request.path) !== undefined);
    const broken = uploads.filter((request) => request.broken);
    expect(broken.map((request) => request.method)).toEqual(['PATCH']);
    const brokenSession = session(broken[0]!.path);
    const statusChecks = uploads.filter((request) => request.method === 'GET' && session(request.path) === brokenSession);
    // distribution 2.8.2 drops the session of a PATCH that broke mid-body, so the status check gets a
    // 404 and the blob is uploaded again from a new session. A registry that kept the bytes would have
    // responded 204 with a Range, as the next test scripts.
    expect(statusChecks.map((request) => request.status), 'the client requests the upload status').toEqual([404]);
    const commit = uploads.find((request) => request.method === 'PUT' && request.path.includes(`digest=${encodeURIComponent(LAYER)}`));
    expect(commit?.status).toBe(201);
    expect(session(commit!.path), 'the layer is committed from a new session').not.toBe(brokenSession);
    expect(result.blobs.copied).toBe(2);
    expect((await inspectRaw(`${target.host}/resumed/upload:arm64`)).equals(await inspectRaw(`${source.host}/library/busybox:arm64`))).toBe(true);
  });

  test('resumes from the offset the registry reports', async () => {
    const sourceServer = await startScriptedServer();
    const targetServer = await startScriptedServer();
    const blob = Buffer.from('0123456789ab');
    const digest = sha256Of(blob);
    sourceServer.expect(
      { method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 200, body: blob } },
      // The chunk of the broken PATCH is read from the source again from its first byte, so that the
      // bytes the registry stored are hashed again in order.
      {
        method: 'GET',
        path: `/v2/app/blobs/${digest}`,
        reply: (request: { headers: Record<string, unknown> }) =>
          request.headers.range === 'bytes=4-'
            ? { status: 206, headers: { 'content-range': 'bytes 4-11/12' }, body: blob.subarray(4) }
            : { status: 416, body: `expected bytes=4-, got ${String(request.headers.range)}` },
      },
    );
    const patch = (path: string, range: string, next: string) => ({
      method: 'PATCH',
      path,
      reply: (request: { headers: Record<string, unknown>; body: Buffer }) =>
        request.headers['content-range'] === range ? { status: 202, headers: { location: next } } : { status: 416, body: `expected ${range}, got ${String(request.headers['content-range'])}` },
    });
    targetServer.expect(
      { method: 'POST', path: '/v2/mirror/blobs/uploads/', reply: { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=1' } } },
      patch('/v2/mirror/blobs/uploads/s?n=1', '0-3', '/v2/mirror/blobs/uploads/s?n=2'),
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=2', reply: { reset: true } },
      { method: 'GET', path: '/v2/mirror/blobs/uploads/s?n=2', reply: { status: 204, headers: { range: '0-5', location: '/v2/mirror/blobs/uploads/s?n=3' } } },
      patch('/v2/mirror/blobs/uploads/s?n=3', '6-7', '/v2/mirror/blobs/uploads/s?n=4'),
      patch('/v2/mirror/blobs/uploads/s?n=4', '8-11', '/v2/mirror/blobs/uploads/s?n=5'),
      { method: 'PUT', path: `/v2/mirror/blobs/uploads/s?n=5&digest=${encodeURIComponent(digest)}`, reply: { status: 201 } },
    );

    await transferBlob(
      { source: client(sourceServer.host), sourceRepository: 'app', target: client(targetServer.host), targetRepository: 'mirror' },
      digest,
      blob.length,
      { monolithicMaxBytes: 0, chunkBytes: 4 },
    );

    const sent = targetServer.requests.filter((request) => request.method === 'PATCH' && request.body.length > 0);
    expect(sent.map((request) => request.body.toString())).toEqual(['0123', '67', '89ab']);
  });

  test('chunk read again is verified', async () => {
    const sourceServer = await startScriptedServer();
    const targetServer = await startScriptedServer();
    const blob = Buffer.from('0123456789ab');
    const digest = sha256Of(blob);
    // The second read changes byte 5, which the target stored already, so it is hashed but not sent.
    const altered = Buffer.from('01234Z6789ab');
    sourceServer.expect(
      { method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 200, body: blob } },
      { method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 206, headers: { 'content-range': 'bytes 4-11/12' }, body: altered.subarray(4) } },
    );
    targetServer.expect(
      { method: 'POST', path: '/v2/mirror/blobs/uploads/', reply: { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=1' } } },
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=1', reply: { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=2' } } },
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=2', reply: { reset: true } },
      { method: 'GET', path: '/v2/mirror/blobs/uploads/s?n=2', reply: { status: 204, headers: { range: '0-5', location: '/v2/mirror/blobs/uploads/s?n=3' } } },
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=3', reply: { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=4' } } },
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=4', reply: { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=5' } } },
    );

    const transfer = transferBlob(
      { source: client(sourceServer.host), sourceRepository: 'app', target: client(targetServer.host), targetRepository: 'mirror' },
      digest,
      blob.length,
      { monolithicMaxBytes: 0, chunkBytes: 4 },
    );

    await expect(transfer).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(targetServer.requests.filter((request) => request.method === 'PUT'), 'the upload is not committed').toEqual([]);
  });

  test('PATCH answered 401 is sent again with a new token', async () => {
    const sourceServer = await startScriptedServer();
    const targetServer = await startScriptedServer();
    const blob = Buffer.from('0123456789ab');
    const digest = sha256Of(blob);
    const challenge = { 'www-authenticate': `Bearer realm="${targetServer.url}/token",service="scripted"` };
    const token = (name: string) => ({ method: 'GET', path: /^\/token\?/, reply: { status: 200, body: { token: name } } });
    const withToken = (name: string, reply: { status: number; headers?: Record<string, string> }) => (request: { headers: Record<string, unknown> }) =>
      request.headers.authorization === `Bearer ${name}` ? reply : { status: 401, headers: challenge };
    sourceServer.expect(
      { method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 200, body: blob } },
      // The bytes of the rejected PATCH are read from the source again.
      { method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 206, headers: { 'content-range': 'bytes 4-11/12' }, body: blob.subarray(4) } },
    );
    targetServer.expect(
      { method: 'POST', path: '/v2/mirror/blobs/uploads/', reply: { status: 401, headers: challenge } },
      token('first'),
      { method: 'POST', path: '/v2/mirror/blobs/uploads/', reply: withToken('first', { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=1' } }) },
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=1', reply: withToken('first', { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=2' } }) },
      // The first token expires during the upload.
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=2', reply: { status: 401, headers: challenge } },
      token('second'),
      { method: 'GET', path: '/v2/mirror/blobs/uploads/s?n=2', reply: withToken('second', { status: 204, headers: { range: '0-3' } }) },
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=2', reply: withToken('second', { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=3' } }) },
      { method: 'PATCH', path: '/v2/mirror/blobs/uploads/s?n=3', reply: withToken('second', { status: 202, headers: { location: '/v2/mirror/blobs/uploads/s?n=4' } }) },
      { method: 'PUT', path: `/v2/mirror/blobs/uploads/s?n=4&digest=${encodeURIComponent(digest)}`, reply: withToken('second', { status: 201 }) },
    );
    const target = new RegistryClient({ registry: targetServer.host, insecure: true, transport, retry: FAST_RETRY, credentials: { username: 'user', password: 'secret' } });

    await transferBlob(
      { source: client(sourceServer.host), sourceRepository: 'app', target, targetRepository: 'mirror' },
      digest,
      blob.length,
      { monolithicMaxBytes: 0, chunkBytes: 4 },
    );

    const patches = targetServer.requests.filter((request) => request.method === 'PATCH');
    expect(patches.map((request) => [request.path.slice(request.path.indexOf('?')), request.headers.authorization, request.body.toString()])).toEqual([
      ['?n=1', 'Bearer first', '0123'],
      ['?n=2', 'Bearer first', '4567'],
      ['?n=2', 'Bearer second', '4567'],
      ['?n=3', 'Bearer second', '89ab'],
    ]);
  });
});
