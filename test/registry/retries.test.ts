import { afterAll, describe, expect, test } from 'vitest';
import { AddressRejectedError, RegistryError } from '../../src/errors.ts';
import { RegistryClient, type RetryEvent, type RetryPolicy } from '../../src/registry/client.ts';
import { HttpTransport } from '../../src/registry/http.ts';
import { OCI_MANIFEST } from '../../src/registry/media-types.ts';
import { backoffDelay, DEFAULT_RETRY_POLICY, parseRetryAfter, resolveRetryPolicy } from '../../src/registry/retry.ts';
import { startScriptedServer, type ScriptedReply, type ScriptedServer } from '../harness/scripted-server.ts';
import { FAST_RETRY, loopbackTransport, sha256Of } from './helpers.ts';

const transport = loopbackTransport();
afterAll(() => transport.close());

const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'a'.repeat(64)}`, size: 2 }, layers: [] }));
const MANIFEST_DIGEST = sha256Of(MANIFEST);
const BLOB = Buffer.from('blob bytes for the retry tests');
const BLOB_DIGEST = sha256Of(BLOB);

function client(server: ScriptedServer, retry: Partial<RetryPolicy> = {}, onRetry?: (event: RetryEvent) => void): RegistryClient {
  return new RegistryClient({ registry: server.host, insecure: true, transport, retry: { ...FAST_RETRY, ...retry }, ...(onRetry ? { onRetry } : {}) });
}

async function text(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** One client call per HTTP verb, with the request it makes and the response that completes it. */
const VERBS: Array<{ name: string; method: string; path: string; success: ScriptedReply; run: (c: RegistryClient, server: ScriptedServer) => Promise<unknown>; expected: unknown }> = [
  {
    name: 'GET manifest',
    method: 'GET',
    path: '/v2/app/manifests/1.0',
    success: { status: 200, headers: { 'content-type': OCI_MANIFEST }, body: MANIFEST },
    run: async (c) => (await c.getManifest('app', '1.0'))?.digest,
    expected: MANIFEST_DIGEST,
  },
  {
    name: 'HEAD manifest',
    method: 'HEAD',
    path: '/v2/app/manifests/1.0',
    success: { status: 200, headers: { 'docker-content-digest': MANIFEST_DIGEST, 'content-type': OCI_MANIFEST, 'content-length': String(MANIFEST.length) } },
    run: async (c) => (await c.headManifest('app', '1.0'))?.digest,
    expected: MANIFEST_DIGEST,
  },
  {
    name: 'PUT manifest',
    method: 'PUT',
    path: '/v2/app/manifests/1.0',
    success: { status: 201, headers: { 'docker-content-digest': MANIFEST_DIGEST } },
    run: (c) => c.putManifest('app', '1.0', { bytes: MANIFEST, mediaType: OCI_MANIFEST }),
    expected: MANIFEST_DIGEST,
  },
  {
    name: 'DELETE manifest',
    method: 'DELETE',
    path: `/v2/app/manifests/${MANIFEST_DIGEST}`,
    success: { status: 202 },
    run: (c) => c.deleteManifest('app', MANIFEST_DIGEST),
    expected: true,
  },
  {
    name: 'HEAD blob',
    method: 'HEAD',
    path: `/v2/app/blobs/${BLOB_DIGEST}`,
    success: { status: 200, headers: { 'content-length': String(BLOB.length) } },
    run: (c) => c.headBlob('app', BLOB_DIGEST),
    expected: BLOB.length,
  },
  {
    name: 'GET blob',
    method: 'GET',
    path: `/v2/app/blobs/${BLOB_DIGEST}`,
    success: { status: 200, body: BLOB },
    run: async (c) => text((await c.getBlob('app', BLOB_DIGEST)).stream),
    expected: BLOB.toString('utf8'),
  },
  {
    name: 'POST upload',
    method: 'POST',
    path: '/v2/app/blobs/uploads/',
    success: { status: 202, headers: { location: '/v2/app/blobs/uploads/session-1' } },
    run: async (c) => {
      const start = await c.startUpload('app');
      return start.mounted ? 'mounted' : start.location.pathname;
    },
    expected: '/v2/app/blobs/uploads/session-1',
  },
  {
    name: 'PUT blob',
    method: 'PUT',
    path: `/v2/app/blobs/uploads/session-1?digest=${encodeURIComponent(BLOB_DIGEST)}`,
    success: { status: 201, headers: { 'docker-content-digest': BLOB_DIGEST } },
    run: (c, server) => c.uploadMonolithic('app', new URL(`${server.url}/v2/app/blobs/uploads/session-1`), BLOB_DIGEST, BLOB, BLOB.length),
    expected: undefined,
  },
  {
    name: 'GET tag list',
    method: 'GET',
    path: '/v2/app/tags/list',
    success: { status: 200, body: { name: 'app', tags: ['1.0'] } },
    run: (c) => c.listTags('app'),
    expected: ['1.0'],
  },
];

const FAILURES: Array<{ name: string; reply: ScriptedReply }> = [
  { name: '429 with a text body', reply: { status: 429, headers: { 'content-type': 'text/plain' }, body: 'Too Many Requests' } },
  { name: '429 with a JSON body', reply: { status: 429, body: { errors: [{ code: 'TOOMANYREQUESTS', message: 'pull rate limit' }] } } },
  { name: '503', reply: { status: 503, body: 'upstream unavailable' } },
  { name: 'a connection reset', reply: { reset: true } },
];

const CASES = VERBS.flatMap((verb) => FAILURES.map((failure) => ({ ...verb, failure: failure.name, reply: failure.reply })));

describe('retries', () => {
  test.each(CASES)('$name is retried after $failure', async ({ method, path, success, run, expected, reply }) => {
    const server = await startScriptedServer();
    server.expect({ method, path, reply }, { method, path, reply: success });

    await expect(run(client(server), server)).resolves.toEqual(expected);
  });

  test('PATCH after 503 resends missing bytes', async () => {
    const server = await startScriptedServer();
    const chunk = Buffer.from('0123456789');
    server.expect(
      { method: 'PATCH', path: '/v2/app/blobs/uploads/s?n=1', reply: { status: 503 } },
      { method: 'GET', path: '/v2/app/blobs/uploads/s?n=1', reply: { status: 204, headers: { range: '0-13', location: '/v2/app/blobs/uploads/s?n=2' } } },
      {
        method: 'PATCH',
        path: '/v2/app/blobs/uploads/s?n=2',
        reply: (request) =>
          request.body.toString() === '456789' && request.headers['content-range'] === '14-19'
            ? { status: 202, headers: { location: '/v2/app/blobs/uploads/s?n=3' } }
            : { status: 400, body: `unexpected chunk ${request.headers['content-range']} "${request.body.toString()}"` },
      },
    );

    const next = await client(server).uploadChunk('app', new URL(`${server.url}/v2/app/blobs/uploads/s?n=1`), chunk, 10, 10);

    expect(next.href).toBe(`${server.url}/v2/app/blobs/uploads/s?n=3`);
  });

  test('PATCH with lost session requests new upload', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'PATCH', path: '/v2/app/blobs/uploads/s', reply: { reset: true } },
      { method: 'GET', path: '/v2/app/blobs/uploads/s', reply: { status: 404, body: { errors: [{ code: 'BLOB_UPLOAD_UNKNOWN' }] } } },
    );

    const failure = client(server).uploadChunk('app', new URL(`${server.url}/v2/app/blobs/uploads/s`), Buffer.from('abc'), 0, 3);

    await expect(failure).rejects.toBeInstanceOf(RegistryError);
    await expect(failure).rejects.toMatchObject({ retryable: true, code: 'REGISTRY_UNAVAILABLE' });
    await expect(failure).rejects.toThrow('the upload must start again');
  });

  test('token service 503 is retried', async () => {
    const server = await startScriptedServer();
    const challenge = `Bearer realm="${server.url}/token",service="scripted"`;
    server.expect(
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 401, headers: { 'www-authenticate': challenge } } },
      { method: 'GET', path: '/token?service=scripted&scope=repository%3Aapp%3Apull', reply: { status: 503 } },
      { method: 'GET', path: '/token?service=scripted&scope=repository%3Aapp%3Apull', reply: { status: 200, body: { token: 'token-after-503' } } },
      {
        method: 'GET',
        path: '/v2/app/manifests/1.0',
        reply: (request): ScriptedReply =>
          request.headers.authorization === 'Bearer token-after-503'
            ? { status: 200, headers: { 'content-type': OCI_MANIFEST }, body: MANIFEST }
            : { status: 401, headers: { 'www-authenticate': challenge } },
      },
    );

    const manifest = await client(server).getManifest('app', '1.0');

    expect(manifest?.digest).toBe(MANIFEST_DIGEST);
  });
});

describe('retry budget', () => {
  test('spent attempts: error names registry, operation, response', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'GET', path: '/v2/library/nginx/manifests/1.27', reply: { status: 429, body: { errors: [{ code: 'TOOMANYREQUESTS', message: 'pull rate limit' }] } }, times: 3 });

    const failure = client(server, { maxAttempts: 3 }).getManifest('library/nginx', '1.27');

    await expect(failure).rejects.toBeInstanceOf(RegistryError);
    await expect(failure).rejects.toThrow(
      `rate-limited by ${server.host} while reading manifest library/nginx:1.27; 3 attempts over 0 s; last answer: 429 TOOMANYREQUESTS (pull rate limit)`,
    );
    await expect(failure).rejects.toMatchObject({ code: 'REGISTRY_RATE_LIMITED', retryable: true, registry: server.host, operation: 'reading manifest library/nginx:1.27', status: 429 });
  });

  test('gives up when a wait passes maxTotalMs', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 503, headers: { 'retry-after': '2' } } });

    const failure = client(server, { maxTotalMs: 500, maxRetryAfterMs: 60_000 }).getManifest('app', '1.0');

    await expect(failure).rejects.toThrow(`${server.host} answered 503 while reading manifest app:1.0; 1 attempt over 0 s`);
    await expect(failure).rejects.toMatchObject({ code: 'REGISTRY_UNAVAILABLE', retryable: true });
  });

  test('resets until budget spent: retryable error', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'PUT', path: '/v2/app/manifests/1.0', reply: { reset: true }, times: 2 });

    const failure = client(server, { maxAttempts: 2 }).putManifest('app', '1.0', { bytes: MANIFEST, mediaType: OCI_MANIFEST });

    await expect(failure).rejects.toThrow(new RegExp(`^cannot reach ${server.host} while pushing manifest app:1.0: .+; 2 attempts over 0 s$`));
    await expect(failure).rejects.toMatchObject({ code: 'REGISTRY_UNAVAILABLE', retryable: true });
  });

  test('Retry-After in seconds sets the wait', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'HEAD', path: `/v2/app/blobs/${BLOB_DIGEST}`, reply: { status: 429, headers: { 'retry-after': '1' } } },
      { method: 'HEAD', path: `/v2/app/blobs/${BLOB_DIGEST}`, reply: { status: 200, headers: { 'content-length': '3' } } },
    );
    const events: RetryEvent[] = [];

    await client(server, { maxRetryAfterMs: 60_000 }, (event) => events.push(event)).headBlob('app', BLOB_DIGEST);

    expect(events).toEqual([{ registry: server.host, operation: `checking blob ${BLOB_DIGEST} in app`, attempt: 1, waitMs: 1000, reason: '429' }]);
  });

  test('Retry-After HTTP date sets the wait', async () => {
    const server = await startScriptedServer();
    const retryAt = new Date(Date.now() + 2000).toUTCString();
    server.expect(
      { method: 'HEAD', path: `/v2/app/blobs/${BLOB_DIGEST}`, reply: { status: 503, headers: { 'retry-after': retryAt } } },
      { method: 'HEAD', path: `/v2/app/blobs/${BLOB_DIGEST}`, reply: { status: 200, headers: { 'content-length': '3' } } },
    );
    const events: RetryEvent[] = [];

    await client(server, { maxRetryAfterMs: 60_000 }, (event) => events.push(event)).headBlob('app', BLOB_DIGEST);

    expect(events).toHaveLength(1);
    // The date has whole seconds, so the wait is between 1 and 2 seconds, less the time the response took.
    // The computed backoff would be at most 5 ms.
    expect(events[0]!.waitMs).toBeGreaterThan(500);
    expect(events[0]!.waitMs).toBeLessThanOrEqual(2000);
  });

  test('long Retry-After cut to maxRetryAfterMs', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'GET', path: '/v2/app/tags/list', reply: { status: 429, headers: { 'retry-after': '3600' } } },
      { method: 'GET', path: '/v2/app/tags/list', reply: { status: 200, body: { name: 'app', tags: [] } } },
    );
    const events: RetryEvent[] = [];

    await client(server, { maxRetryAfterMs: 5 }, (event) => events.push(event)).listTags('app');

    expect(events.map((event) => event.waitMs)).toEqual([5]);
  });

  test('backoff doubles its ceiling up to maxDelayMs', () => {
    const policy = { ...DEFAULT_RETRY_POLICY, baseDelayMs: 100, maxDelayMs: 1000 };

    expect([1, 2, 3, 4, 5, 6].map((attempt) => backoffDelay(policy, attempt, () => 1))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(policy, 3, () => 0.5)).toBe(200);
    expect(backoffDelay(policy, 3, () => 0)).toBe(0);
  });

  test('parseRetryAfter reads seconds and HTTP dates', () => {
    const now = Date.parse('Wed, 21 Oct 2026 07:28:00 GMT');

    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('Wed, 21 Oct 2026 07:28:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 21 Oct 2026 07:27:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
  });

  test('retry policy rejects invalid values', () => {
    expect(() => resolveRetryPolicy({ maxAttempts: 0 })).toThrow('invalid retry.maxAttempts: 0; expected an integer of at least 1');
    expect(() => resolveRetryPolicy({ maxTotalMs: -1 })).toThrow('invalid retry.maxTotalMs: -1; expected an integer of at least 0');
  });
});

describe('error sorting', () => {
  const PERMANENT = [
    { status: 400, code: 'REGISTRY_PROTOCOL', body: { errors: [{ code: 'MANIFEST_INVALID', message: 'manifest invalid' }] } },
    { status: 401, code: 'REGISTRY_DENIED', body: { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] } },
    { status: 403, code: 'REGISTRY_DENIED', body: { errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] } },
    { status: 404, code: 'REGISTRY_NOT_FOUND', body: { errors: [{ code: 'NAME_UNKNOWN', message: 'repository name not known to registry' }] } },
    { status: 405, code: 'REGISTRY_PROTOCOL', body: { errors: [{ code: 'UNSUPPORTED', message: 'The operation is unsupported.' }] } },
    { status: 501, code: 'REGISTRY_PROTOCOL', body: 'not implemented' },
    // distribution 2.8.2 responds like this to a manifest with a foreign layer URL.
    { status: 500, code: 'REGISTRY_PROTOCOL', body: { errors: [{ code: 'UNKNOWN', message: 'unknown error' }, { code: 'MANIFEST_BLOB_UNKNOWN', message: 'blob unknown to registry' }] } },
  ];

  test.each(PERMANENT)('$status on a manifest PUT is permanent: $code', async ({ status, code, body }) => {
    const server = await startScriptedServer();
    server.expect({ method: 'PUT', path: '/v2/app/manifests/1.0', reply: { status, body } });

    const failure = client(server).putManifest('app', '1.0', { bytes: MANIFEST, mediaType: OCI_MANIFEST });

    await expect(failure).rejects.toBeInstanceOf(RegistryError);
    await expect(failure).rejects.toMatchObject({ code, status, retryable: false });
    await expect(failure).rejects.toThrow(`${server.host} answered ${status}`);
  });

  test.each([429, 500, 502, 503, 504])('%i on the last attempt is retryable', async (status) => {
    const server = await startScriptedServer();
    server.expect({ method: 'PUT', path: '/v2/app/manifests/1.0', reply: { status } });

    const failure = client(server, { maxAttempts: 1 }).putManifest('app', '1.0', { bytes: MANIFEST, mediaType: OCI_MANIFEST });

    await expect(failure).rejects.toMatchObject({ code: status === 429 ? 'REGISTRY_RATE_LIMITED' : 'REGISTRY_UNAVAILABLE', status, retryable: true });
  });

  test('denied access tells what to check', async () => {
    const server = await startScriptedServer();
    server.expect({ method: 'POST', path: '/v2/app/blobs/uploads/', reply: { status: 403, body: { errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] } } });

    const failure = client(server).startUpload('app');

    await expect(failure).rejects.toThrow(
      `${server.host} answered 403 DENIED (requested access to the resource is denied) while starting an upload to app; check the credentials for ${server.host} and what they may access`,
    );
  });

  test('expected misses are values', async () => {
    const server = await startScriptedServer();
    server.expect(
      { method: 'GET', path: '/v2/app/manifests/gone', reply: { status: 404, body: { errors: [{ code: 'MANIFEST_UNKNOWN' }] } } },
      { method: 'HEAD', path: `/v2/app/blobs/${BLOB_DIGEST}`, reply: { status: 404 } },
      { method: 'DELETE', path: `/v2/app/manifests/${MANIFEST_DIGEST}`, reply: { status: 404 } },
      { method: 'GET', path: '/v2/absent/tags/list', reply: { status: 404, body: { errors: [{ code: 'NAME_UNKNOWN' }] } } },
    );
    const registry = client(server);

    expect(await registry.getManifest('app', 'gone')).toBeUndefined();
    expect(await registry.headBlob('app', BLOB_DIGEST)).toBeUndefined();
    expect(await registry.deleteManifest('app', MANIFEST_DIGEST)).toBe(false);
    expect(await registry.listTags('absent')).toBeUndefined();
  });

  test('address rejected by policy: no retry', async () => {
    const server = await startScriptedServer();
    const strict = new HttpTransport();
    const events: RetryEvent[] = [];
    const registry = new RegistryClient({ registry: server.host, insecure: true, transport: strict, retry: FAST_RETRY, onRetry: (event) => events.push(event) });

    try {
      await expect(registry.getManifest('app', '1.0')).rejects.toBeInstanceOf(AddressRejectedError);
      expect(events).toEqual([]);
      expect(server.requests).toEqual([]);
    } finally {
      await strict.close();
    }
  });
});
