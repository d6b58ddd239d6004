import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { isIP } from 'node:net';
import type { LookupAddress } from 'node:dns';
import { HttpTransport } from '../../src/registry/http.ts';
import { RegistryClient, sha256 } from '../../src/registry/client.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { AddressRejectedError } from '../../src/errors.ts';
import { installLoopbackGuard, type LoopbackGuard } from './loopback-guard.ts';
import { reply, startScriptedServer, type ScriptedServer } from './scripted-server.ts';

const PROXY_VARIABLES = ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'];
const BLOB = Buffer.from('layer bytes');
const DIGEST = sha256(BLOB);
const BLOB_PATH = `/v2/library/app/blobs/${DIGEST}`;
const UPLOADS_PATH = '/v2/library/app/blobs/uploads/';

// The stub resolver: names used as redirect and upload targets, and the addresses they resolve to.
const ADDRESSES: Record<string, string[]> = {
  'storage.test': ['127.0.0.1'],
  'metadata.test': ['169.254.169.254'],
  'internal.test': ['10.1.2.3'],
};

let guard: LoopbackGuard;
let server: ScriptedServer;
let transport: HttpTransport;
let client: RegistryClient;
let savedEnvironment: Record<string, string | undefined>;

async function resolve(hostname: string): Promise<LookupAddress[]> {
  const addresses = ADDRESSES[hostname];
  if (!addresses) throw Object.assign(new Error(`stub resolver has no entry for ${hostname}`), { code: 'ENOTFOUND' });
  return addresses.map((address) => ({ address, family: isIP(address) }));
}

/**
 * Returns the AddressRejectedError that caused `error`, looking through `cause`.
 * TODO: expect the AddressRejectedError itself once RegistryClient stops retrying it: its retry loop
 * treats every error that is not a RegistryError as a network error and wraps it in a retryable one.
 */
function addressRejection(error: unknown): AddressRejectedError | undefined {
  for (let current: unknown = error; current instanceof Error; current = current.cause) {
    if (current instanceof AddressRejectedError) return current;
  }
  return undefined;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to fail');
}

beforeAll(async () => {
  savedEnvironment = Object.fromEntries(PROXY_VARIABLES.map((name) => [name, process.env[name]]));
  for (const name of PROXY_VARIABLES) delete process.env[name];
  guard = installLoopbackGuard();
  server = await startScriptedServer();
  transport = new HttpTransport({ policy: new NetworkPolicy(['127.0.0.0/8']), resolver: resolve });
  client = new RegistryClient({
    registry: `127.0.0.1:${server.port}`,
    insecure: true,
    transport,
    retry: { baseDelayMs: 1, maxDelayMs: 1 },
  });
});

beforeEach(() => {
  guard.clear();
});

afterEach(() => {
  expect(guard.escapes, 'no connection left loopback').toEqual([]);
  expect(guard.lookups, 'no name reached the system resolver').toEqual([]);
  expect(server.unexpected, 'the registry got only scripted requests').toEqual([]);
});

afterAll(async () => {
  await transport?.close();
  await server?.close();
  guard?.restore();
  for (const [name, value] of Object.entries(savedEnvironment ?? {})) if (value !== undefined) process.env[name] = value;
});

describe('RegistryClient.getBlob redirects', () => {
  test('follows a redirect to an allowed address', async () => {
    server.script({
      [`GET ${BLOB_PATH}`]: reply('', 307, { location: `http://storage.test:${server.port}/bucket/blob` }),
      'GET /bucket/blob': reply(BLOB.toString()),
    });

    const blob = await client.getBlob('library/app', DIGEST);

    expect(Buffer.concat(await blob.stream.toArray()).equals(BLOB)).toBe(true);
    expect(server.requests).toEqual([`GET ${BLOB_PATH}`, 'GET /bucket/blob']);
  });

  test.each([
    ['a name resolving to the metadata address', 'metadata.test', '169.254.169.254'],
    ['a name resolving to a private address', 'internal.test', '10.1.2.3'],
    ['the metadata address', '169.254.169.254', '169.254.169.254'],
  ])('rejects a 302 to %s', async (_case, host, address) => {
    // A broken policy would reach this server through the loopback guard and ask for /bucket/blob.
    server.script({ [`GET ${BLOB_PATH}`]: reply('', 302, { location: `http://${host}:${server.port}/bucket/blob` }) });

    const error = await rejection(client.getBlob('library/app', DIGEST));

    const rejected = addressRejection(error);
    expect(rejected, `an AddressRejectedError in ${String(error)}`).toBeInstanceOf(AddressRejectedError);
    expect(rejected?.message).toContain(`cannot connect to ${host}:${server.port}`);
    expect(rejected?.message).toContain(`${address} is a`);
    expect(server.requests).toEqual([`GET ${BLOB_PATH}`]);
    expect(guard.dials.every((dialled) => dialled === '127.0.0.1')).toBe(true);
  });
});

describe('RegistryClient upload Location', () => {
  test('uploads to an allowed Location', async () => {
    const session = `/upload/session-1?_state=abc&digest=${encodeURIComponent(DIGEST)}`;
    server.script({
      [`POST ${UPLOADS_PATH}`]: reply('', 202, { location: `http://storage.test:${server.port}/upload/session-1?_state=abc` }),
      [`PUT ${session}`]: reply('', 201),
    });

    const start = await client.startUpload('library/app');
    if (start.mounted) throw new Error('expected an upload session');
    await client.uploadMonolithic('library/app', start.location, DIGEST, BLOB, BLOB.length);

    expect(server.requests).toEqual([`POST ${UPLOADS_PATH}`, `PUT ${session}`]);
  });

  test.each([
    ['the metadata address', '169.254.169.254', '169.254.169.254'],
    ['a name resolving to the metadata address', 'metadata.test', '169.254.169.254'],
    ['a name resolving to a private address', 'internal.test', '10.1.2.3'],
  ])('rejects a Location at %s', async (_case, host, address) => {
    server.script({
      [`POST ${UPLOADS_PATH}`]: reply('', 202, { location: `http://${host}:${server.port}/upload/session-1` }),
    });

    const start = await client.startUpload('library/app');
    if (start.mounted) throw new Error('expected an upload session');
    const error = await rejection(client.uploadMonolithic('library/app', start.location, DIGEST, BLOB, BLOB.length));

    const rejected = addressRejection(error);
    expect(rejected, `an AddressRejectedError in ${String(error)}`).toBeInstanceOf(AddressRejectedError);
    expect(rejected?.message).toContain(`cannot connect to ${host}:${server.port}`);
    expect(rejected?.message).toContain(`${address} is a`);
    expect(server.requests).toEqual([`POST ${UPLOADS_PATH}`]);
    expect(guard.dials.every((dialled) => dialled === '127.0.0.1')).toBe(true);
  });
});
