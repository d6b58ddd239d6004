import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { RegistryError } from '../../src/errors.ts';
import { createLogger } from '../../src/log/logger.ts';
import { redact } from '../../src/log/redact.ts';
import { challengeScopes, parseChallenge, type Credentials } from '../../src/registry/auth.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { copyImage } from '../../src/registry/copy.ts';
import { OCI_MANIFEST } from '../../src/registry/media-types.ts';
import { seedLayout } from '../harness/fixtures.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { startScriptedServer } from '../harness/scripted-server.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { startTokenServer, type TokenServer } from '../harness/token-server.ts';
import { BASIC_HTPASSWD, BASIC_USER, FAST_RETRY, inspectRawWithCredentials, loopbackTransport, sha256Of } from './helpers.ts';

const OWNER: Credentials = { username: 'owner', password: 'owner-pw-0d4f7b19e2' };
const PUSHER: Credentials = { username: 'pusher', password: 'pusher-pw-8a3c6e21f5' };
const READER: Credentials = { username: 'reader', password: 'reader-pw-51b9d0c7a4' };

let plain: TestRegistry;
let basic: TestRegistry;
let tokenA: TestRegistry;
let tokenB: TestRegistry;
let tokens: TokenServer;
const transport = loopbackTransport();

beforeAll(async () => {
  tokens = await startTokenServer({
    users: { owner: OWNER.password, pusher: PUSHER.password, reader: READER.password },
    grants: [
      { user: 'owner', repository: '*', actions: ['pull', 'push'] },
      { user: 'pusher', repository: 'mirror/*', actions: ['pull', 'push'] },
      { user: 'reader', repository: '*', actions: ['pull'] },
    ],
  });
  [plain, basic, tokenA, tokenB] = await Promise.all([
    startRegistry(),
    startRegistry({ htpasswd: BASIC_HTPASSWD }),
    startRegistry({ token: tokens.registryAuth('registry-a') }),
    startRegistry({ token: tokens.registryAuth('registry-b') }),
  ]);
  await seedLayout(plain.host, 'busybox-1.38.0-uclibc-amd64', 'lib/busybox', 'amd64');
  await seedLayout(plain.host, 'hello-world-arm64-docker-v2', 'lib/hello-world', 'arm64');
});

afterAll(async () => {
  await transport.close();
  await Promise.all([plain?.stop(), basic?.stop(), tokenA?.stop(), tokenB?.stop(), tokens?.stop()]);
});

function client(registry: { host: string }, credentials?: Credentials): RegistryClient {
  return new RegistryClient({ registry: registry.host, insecure: true, transport, retry: FAST_RETRY, ...(credentials ? { credentials } : {}) });
}

function copyFromPlain(repository: string, tag: string, to: RegistryClient, targetRepository: string, mountFrom?: string) {
  return copyImage(
    { client: client(plain), repository, tag },
    { client: to, repository: targetRepository, tag },
    mountFrom ? { mountSources: () => [mountFrom] } : {},
  );
}

describe('parseChallenge', () => {
  test('reads Bearer realm, service and several scopes', () => {
    const challenge = parseChallenge(
      'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:app:pull,push repository:base:pull",error="insufficient_scope"',
    );

    expect(challenge).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:app:pull,push repository:base:pull', error: 'insufficient_scope' },
    });
    expect(challengeScopes(challenge!)).toEqual(['repository:app:pull,push', 'repository:base:pull']);
  });

  test('reads Basic with a quoted realm holding a comma and an escaped quote', () => {
    expect(parseChallenge('Basic realm="mirror, \\"test\\"", charset=UTF-8')).toEqual({ scheme: 'basic', params: { realm: 'mirror, "test"', charset: 'UTF-8' } });
  });

  test('prefers Bearer among several challenges', () => {
    expect(parseChallenge('Basic realm="a", Bearer realm="https://auth.example/token",service=reg')?.scheme).toBe('bearer');
    expect(parseChallenge(['Negotiate', 'Basic realm="b"', 'Bearer realm="https://auth.example/token"'])?.params.realm).toBe('https://auth.example/token');
  });

  test('ignores other schemes', () => {
    expect(parseChallenge('Negotiate')).toBeUndefined();
    expect(parseChallenge('Digest realm="x", nonce="y"')).toBeUndefined();
    expect(parseChallenge(undefined)).toBeUndefined();
  });
});

describe('basic auth', () => {
  test('credentials sent after the first challenge', async () => {
    await basic.clearLog();

    const result = await copyFromPlain('lib/hello-world', 'arm64', client(basic, BASIC_USER), 'mirror/hello-world');

    expect(result.blobs.copied).toBe(2);
    const statuses = (await basic.requests()).map((entry) => entry.status);
    expect(statuses.filter((status) => status === 401), 'only the first request is challenged').toHaveLength(1);
    expect(statuses[0]).toBe(401);
    expect((await inspectRawWithCredentials(`${basic.host}/mirror/hello-world:arm64`, BASIC_USER)).equals(await inspectRaw(`${plain.host}/lib/hello-world:arm64`))).toBe(true);
  });

  test('a wrong password is denied after one challenge', async () => {
    await basic.clearLog();

    const failure = client(basic, { username: BASIC_USER.username, password: 'not-the-password-41c' }).headManifest('mirror/hello-world', 'arm64');

    await expect(failure).rejects.toBeInstanceOf(RegistryError);
    await expect(failure).rejects.toMatchObject({ code: 'REGISTRY_DENIED', retryable: false, status: 401 });
    expect((await basic.requests()).map((entry) => entry.status), 'one anonymous request and one with the credentials').toEqual([401, 401]);
  });

  test('without credentials the registry denies access', async () => {
    const failure = client(basic).headManifest('mirror/hello-world', 'arm64');

    await expect(failure).rejects.toThrow(
      `${basic.host} answered 401 while checking manifest mirror/hello-world:arm64; check the credentials for ${basic.host} and what they may access`,
    );
  });
});

describe('token auth', () => {
  test('caches a token per scope set until it expires', async () => {
    const registry = client(tokenA, OWNER);
    const requested = () => tokens.requests.length;
    const before = requested();

    await registry.headManifest('cache/app', 'absent');
    await registry.headManifest('cache/app', 'absent');
    await registry.headBlob('cache/app', `sha256:${'a'.repeat(64)}`);
    expect(requested() - before, 'one token for every pull of cache/app').toBe(1);

    await registry.startUpload('cache/app');
    expect(requested() - before, 'a second token for pull and push').toBe(2);
    expect(tokens.requests.slice(before).map((request) => request.scopes)).toEqual([['repository:cache/app:pull'], ['repository:cache/app:pull,push']]);

    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + 301_000);
      await registry.headManifest('cache/app', 'absent');
    } finally {
      vi.useRealTimers();
    }
    expect(requested() - before, 'the expired pull token is fetched again').toBe(3);
  });

  test('a token the registry rejects is fetched again once', async () => {
    const server = await startScriptedServer();
    const challenge = { 'www-authenticate': `Bearer realm="${server.url}/token",service="scripted",scope="repository:app:pull"` };
    const tokenPath = '/token?service=scripted&scope=repository%3Aapp%3Apull';
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'c'.repeat(64)}`, size: 2 }, layers: [] }));
    const answerFor = (accepted: string) => (request: { headers: { authorization?: string } }) =>
      request.headers.authorization === `Bearer ${accepted}`
        ? { status: 200, headers: { 'content-type': OCI_MANIFEST }, body: manifest }
        : { status: 401, headers: challenge };
    server.expect(
      // First read: no challenge known yet, then the first token.
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 401, headers: challenge } },
      { method: 'GET', path: tokenPath, reply: { status: 200, body: { token: 'scripted-token-1', expires_in: 300 } } },
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: answerFor('scripted-token-1') },
      // Second read: the cached token is rejected (revoked), a new one works.
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 401, headers: challenge } },
      { method: 'GET', path: tokenPath, reply: { status: 200, body: { token: 'scripted-token-2', expires_in: 300 } } },
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: answerFor('scripted-token-2') },
      // Third read: the new token is rejected as well, so the client gives up instead of looping.
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 401, headers: challenge } },
      { method: 'GET', path: tokenPath, reply: { status: 200, body: { token: 'scripted-token-3', expires_in: 300 } } },
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 401, headers: challenge } },
    );
    const registry = client(server);

    expect((await registry.getManifest('app', '1.0'))?.digest).toBe(sha256Of(manifest));
    expect((await registry.getManifest('app', '1.0'))?.digest).toBe(sha256Of(manifest));
    await expect(registry.getManifest('app', '1.0')).rejects.toMatchObject({ code: 'REGISTRY_DENIED', retryable: false });
  });

  test('scopes name only own-registry repositories', async () => {
    await copyFromPlain('lib/busybox', 'amd64', client(tokenA, OWNER), 'team/app');
    const before = tokens.requests.length;
    await tokenB.clearLog();

    await copyImage(
      { client: client(tokenA, OWNER), repository: 'team/app', tag: 'amd64' },
      { client: client(tokenB, OWNER), repository: 'mirror/team-app', tag: 'amd64' },
      { mountSources: () => ['mirror/base'] },
    );

    const requests = tokens.requests.slice(before);
    const scopesOf = (service: string) => requests.filter((request) => request.service === service).flatMap((request) => request.scopes);
    expect(scopesOf('registry-a').length).toBeGreaterThan(0);
    expect(scopesOf('registry-a').every((scope) => scope.startsWith('repository:team/app:'))).toBe(true);
    expect(scopesOf('registry-b').length).toBeGreaterThan(0);
    expect(scopesOf('registry-b').every((scope) => scope.startsWith('repository:mirror/')), scopesOf('registry-b').join(' ')).toBe(true);
    const mounts = (await tokenB.requests()).filter((entry) => entry.path.includes('from='));
    expect(mounts.length).toBeGreaterThan(0);
    expect(mounts.every((entry) => entry.path.includes('from=mirror%2Fbase')), 'every mount names a repository of the target registry').toBe(true);
  });

  test('mount refused with 401 falls back to upload', async () => {
    await copyFromPlain('lib/busybox', 'amd64', client(tokenA, OWNER), 'secret/base');
    await tokenA.clearLog();

    const result = await copyFromPlain('lib/busybox', 'amd64', client(tokenA, PUSHER), 'mirror/busybox', 'secret/base');

    expect(result.blobs.mounted).toBe(0);
    expect(result.blobs.copied).toBe(2);
    const posts = (await tokenA.requests()).filter((entry) => entry.method === 'POST');
    expect(posts.filter((entry) => entry.path.includes('mount=')).map((entry) => entry.status)).toContain(401);
    expect(posts.filter((entry) => !entry.path.includes('mount=')).map((entry) => entry.status)).toEqual([202, 202]);
    expect((await inspectRawWithCredentials(`${tokenA.host}/mirror/busybox:amd64`, PUSHER)).equals(await inspectRaw(`${plain.host}/lib/busybox:amd64`))).toBe(true);
  });

  test('last-scope-only token service: copy succeeds', async () => {
    await copyFromPlain('lib/busybox', 'amd64', client(tokenA, OWNER), 'mirror/last-scope-base');
    const before = tokens.requests.length;
    tokens.lastScopeOnly = true;
    try {
      const result = await copyFromPlain('lib/busybox', 'amd64', client(tokenA, PUSHER), 'mirror/last-scope', 'mirror/last-scope-base');

      expect(result.blobs.mounted).toBe(0);
      expect(result.blobs.copied).toBe(2);
    } finally {
      tokens.lastScopeOnly = false;
    }
    const mountTokens = tokens.requests.slice(before).filter((request) => request.scopes.length === 2);
    expect(mountTokens.length).toBeGreaterThan(0);
    expect(mountTokens.every((request) => request.access.length === 1 && request.access[0]!.name === 'mirror/last-scope-base')).toBe(true);
    expect((await inspectRawWithCredentials(`${tokenA.host}/mirror/last-scope:amd64`, PUSHER)).equals(await inspectRaw(`${plain.host}/lib/busybox:amd64`))).toBe(true);
  });

  test('tokens registered for redaction on arrival', async () => {
    const before = tokens.issued.length;

    await client(tokenA, READER).headManifest('team/app', 'amd64');

    const received = tokens.issued.slice(before);
    expect(received).toHaveLength(1);
    expect(redact(`token ${received[0]}`)).toBe('token <redacted>');
  });
});

describe('mount fallback', () => {
  test('mount refused with 403 falls back to upload', async () => {
    const server = await startScriptedServer();
    const manifest = await client(plain).getManifest('lib/hello-world', 'arm64');
    const parsed = JSON.parse(manifest!.bytes.toString('utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
    const digests = [parsed.config.digest, ...parsed.layers.map((layer) => layer.digest)];
    const denied = { status: 403, body: { errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] } };
    let session = 0;
    server.expect(
      // A 404 for the target tag is trusted without a GET: a wrong "absent" only pushes the same bytes again.
      { method: 'HEAD', path: '/v2/mirror/app/manifests/arm64', reply: { status: 404 } },
      ...digests.flatMap((digest) => [
        // Checked before the mount, and again under the blob's lock, where another copy may have finished it.
        { method: 'HEAD', path: `/v2/mirror/app/blobs/${digest}`, reply: { status: 404 }, times: 2 },
        // A refused mount is not tried again.
        { method: 'POST', path: `/v2/mirror/app/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=mirror%2Fbase`, reply: denied },
      ]),
      { method: 'POST', path: '/v2/mirror/app/blobs/uploads/', reply: () => ({ status: 202, headers: { location: `/v2/mirror/app/blobs/uploads/${(session += 1)}` } }), times: digests.length },
      { method: 'PUT', path: /^\/v2\/mirror\/app\/blobs\/uploads\/\d+\?digest=sha256%3A[0-9a-f]{64}$/, reply: { status: 201 }, times: digests.length },
      { method: 'PUT', path: '/v2/mirror/app/manifests/arm64', reply: { status: 201 } },
    );

    const result = await copyFromPlain('lib/hello-world', 'arm64', client(server), 'mirror/app', 'mirror/base');

    expect(result.blobs.mounted).toBe(0);
    expect(result.blobs.copied).toBe(digests.length);
  });
});

describe('secrets', () => {
  const CASES = [
    {
      registry: 'basic-auth',
      target: () => client(basic, { username: BASIC_USER.username, password: 'wrong-basic-pw-7e0a93' }),
      password: 'wrong-basic-pw-7e0a93',
      username: BASIC_USER.username,
    },
    { registry: 'bearer-token', target: () => client(tokenA, READER), password: READER.password, username: READER.username },
  ];

  test.each(CASES)('failing $registry copy leaks no secret', async ({ target, password, username }) => {
    const issuedBefore = tokens.issued.length;

    const error = await copyFromPlain('lib/busybox', 'amd64', target(), 'mirror/denied').then(
      () => undefined,
      (caught: unknown) => caught,
    );

    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).code).toBe('REGISTRY_DENIED');
    const secrets = [password, Buffer.from(`${username}:${password}`).toString('base64'), ...tokens.issued.slice(issuedBefore)];
    const lines: string[] = [];
    createLogger('info', { write: (line: string) => lines.push(line) }).error({ err: error }, 'copy failed');
    const views = {
      message: (error as Error).message,
      fields: JSON.stringify(Object.entries(error as object)),
      json: JSON.stringify(error),
      inspected: inspect(error, { depth: 10, showHidden: true }),
      log: lines.join(''),
    };
    for (const [view, text] of Object.entries(views)) {
      for (const secret of secrets) expect(text.includes(secret), `${view} contains a secret`).toBe(false);
    }
  });
});
