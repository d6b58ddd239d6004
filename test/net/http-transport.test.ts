import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { connect as connectTcp } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { isIP } from 'node:net';
import type { LookupAddress } from 'node:dns';
import { HttpTransport, type HttpResponse } from '../../src/registry/http.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import type { Resolver } from '../../src/net/connector.ts';
import { AddressRejectedError, ConfigError } from '../../src/errors.ts';
import { installLoopbackGuard, type LoopbackGuard } from './loopback-guard.ts';
import { reply, startScriptedServer, type ScriptedServer } from './scripted-server.ts';

const PROXY_VARIABLES = ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'];
const LOOPBACK = new NetworkPolicy(['127.0.0.0/8']);

let guard: LoopbackGuard;
let server: ScriptedServer;
let savedEnvironment: Record<string, string | undefined>;
const transports: HttpTransport[] = [];

/** A resolver that returns addresses from a table and records every name it resolves. */
function stubResolver(table: Record<string, string[] | (() => string[])>): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const resolve = async (hostname: string): Promise<LookupAddress[]> => {
    calls.push(hostname);
    const entry = table[hostname];
    if (entry === undefined) throw Object.assign(new Error(`stub resolver has no entry for ${hostname}`), { code: 'ENOTFOUND' });
    const addresses = typeof entry === 'function' ? entry() : entry;
    return addresses.map((address) => ({ address, family: isIP(address) }));
  };
  return Object.assign(resolve, { calls });
}

function transport(options: ConstructorParameters<typeof HttpTransport>[0]): HttpTransport {
  const created = new HttpTransport(options);
  transports.push(created);
  return created;
}

function get(client: HttpTransport, url: string): Promise<HttpResponse> {
  return client.send({ method: 'GET', url: new URL(url), registry: 'test' });
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the request to fail');
}

beforeAll(async () => {
  savedEnvironment = Object.fromEntries(PROXY_VARIABLES.map((name) => [name, process.env[name]]));
  for (const name of PROXY_VARIABLES) delete process.env[name];
  guard = installLoopbackGuard();
  server = await startScriptedServer();
});

beforeEach(() => {
  server.script({ 'GET /v2/': reply('{}') });
  guard.clear();
});

afterEach(async () => {
  await Promise.all(transports.splice(0).map((created) => created.close()));
  for (const name of PROXY_VARIABLES) delete process.env[name];
  expect(guard.escapes, 'no connection left loopback').toEqual([]);
  expect(guard.lookups, 'no name reached the system resolver').toEqual([]);
  expect(server.unexpected, 'the server got only scripted requests').toEqual([]);
});

afterAll(async () => {
  await server?.close();
  guard?.restore();
  for (const [name, value] of Object.entries(savedEnvironment ?? {})) if (value !== undefined) process.env[name] = value;
});

describe('HttpTransport with a local server', () => {
  test('rejects 127.0.0.1 by default', async () => {
    const client = transport({ resolver: stubResolver({}) });

    const error = await rejection(get(client, `${server.origin}/v2/`));

    expect(error).toBeInstanceOf(AddressRejectedError);
    expect((error as AddressRejectedError).retryable).toBe(false);
    expect((error as AddressRejectedError).code).toBe('ADDRESS_REJECTED');
    expect((error as Error).message).toContain(`cannot connect to 127.0.0.1:${server.port}`);
    expect((error as Error).message).toContain('loopback');
    expect((error as Error).message).toContain('add 127.0.0.0/8 or a narrower network');
    expect((error as Error).message).toContain('MIRRORFLEET_ALLOW_NETWORKS');
    expect(server.connections).toBe(0);
  });

  test('reaches 127.0.0.1 when 127.0.0.0/8 is allowed', async () => {
    const client = transport({ policy: LOOPBACK, resolver: stubResolver({}) });

    const response = await get(client, `${server.origin}/v2/`);

    expect(response.statusCode).toBe(200);
    expect(await response.body.text()).toBe('{}');
    expect(server.requests).toEqual(['GET /v2/']);
  });

  test.each([
    ['0.0.0.0', LOOPBACK],
    ['[::ffff:127.0.0.1]', new NetworkPolicy([])],
    ['[::ffff:169.254.169.254]', new NetworkPolicy(['0.0.0.0/0', '::/0'])],
    ['[fe80::1]', new NetworkPolicy(['0.0.0.0/0', '::/0'])],
    ['169.254.169.254', new NetworkPolicy(['0.0.0.0/0', '::/0'])],
  ])('rejects IP-literal host %s before connecting', async (host, policy) => {
    const client = transport({ policy, resolver: stubResolver({}) });

    const error = await rejection(get(client, `http://${host}:${server.port}/v2/`));

    expect(error).toBeInstanceOf(AddressRejectedError);
    expect(guard.dials).toEqual([]);
    expect(server.connections).toBe(0);
  });
});

describe('HttpTransport with host names', () => {
  test('rejects a name that resolves to the metadata address', async () => {
    const resolver = stubResolver({ 'metadata.test': ['169.254.169.254'] });
    const client = transport({ policy: new NetworkPolicy(['0.0.0.0/0', '::/0']), resolver });

    const error = await rejection(get(client, `http://metadata.test:${server.port}/latest/meta-data/`));

    expect(error).toBeInstanceOf(AddressRejectedError);
    expect((error as Error).message).toContain(`cannot connect to metadata.test:${server.port}`);
    expect((error as Error).message).toContain('resolved to 169.254.169.254');
    expect((error as Error).message).toContain('always rejected');
    expect(resolver.calls).toEqual(['metadata.test']);
    expect(guard.dials).toEqual([]);
    expect(server.connections).toBe(0);
  });

  test.each([
    [['127.0.0.1', '10.0.0.7'], '10.0.0.7'],
    [['10.0.0.7', '127.0.0.1'], '10.0.0.7'],
    [['127.0.0.1', '169.254.169.254'], '169.254.169.254'],
    [['127.0.0.1', '::ffff:192.168.0.1'], '::ffff:192.168.0.1'],
  ])('rejects a name resolving to %j', async (addresses, rejected) => {
    const client = transport({ policy: LOOPBACK, resolver: stubResolver({ 'mixed.test': addresses }) });

    const error = await rejection(get(client, `http://mixed.test:${server.port}/v2/`));

    expect(error).toBeInstanceOf(AddressRejectedError);
    expect((error as Error).message).toContain(`resolved to ${addresses.join(', ')}, and ${rejected} `);
    expect(guard.dials).toEqual([]);
    expect(server.connections).toBe(0);
  });

  test('connects to the checked address without resolving again', async () => {
    // Every answer after the first points at the metadata address, as a rebinding DNS server would.
    const answers = [['127.0.0.1']];
    const resolver = stubResolver({ 'registry.test': () => answers.shift() ?? ['169.254.169.254'] });
    const client = transport({ policy: LOOPBACK, resolver });

    const response = await get(client, `http://registry.test:${server.port}/v2/`);

    expect(response.statusCode).toBe(200);
    await response.body.dump();
    expect(resolver.calls).toEqual(['registry.test']);
    expect(guard.dials).toEqual(['127.0.0.1']);
    expect(server.requests).toEqual(['GET /v2/']);
  });

  test('tries the next checked address when one refuses the connection', async () => {
    // Nothing listens on 127.0.0.2 at the server's port, so that address refuses the connection.
    const client = transport({ policy: LOOPBACK, resolver: stubResolver({ 'registry.test': ['127.0.0.2', '127.0.0.1'] }) });

    const response = await get(client, `http://registry.test:${server.port}/v2/`);

    expect(response.statusCode).toBe(200);
    await response.body.dump();
    expect(guard.dials).toEqual(['127.0.0.2', '127.0.0.1']);
  });

  test('passes a resolver failure through unchanged', async () => {
    const client = transport({ policy: LOOPBACK, resolver: stubResolver({}) });

    const error = await rejection(get(client, `http://unknown.test:${server.port}/v2/`));

    expect(error).not.toBeInstanceOf(AddressRejectedError);
    expect((error as NodeJS.ErrnoException).code).toBe('ENOTFOUND');
    expect(server.connections).toBe(0);
  });
});

describe('HttpTransport over TLS', () => {
  let directory: string;
  let tlsServer: ScriptedServer;
  let ca: string;

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), 'mirrorfleet-net-'));
    const key = join(directory, 'key.pem');
    const cert = join(directory, 'cert.pem');
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=registry.test', '-addext', 'subjectAltName=DNS:registry.test', '-keyout', key, '-out', cert,
    ]);
    ca = await readFile(cert, 'utf8');
    tlsServer = await startScriptedServer({ key: await readFile(key, 'utf8'), cert: ca });
    tlsServer.script({ 'GET /v2/': reply('{}') });
  });

  afterAll(async () => {
    await tlsServer?.close();
    if (directory) await rm(directory, { recursive: true, force: true });
  });

  test('verifies the certificate for the name, not the address', async () => {
    const resolver = stubResolver({ 'registry.test': ['127.0.0.1'], 'other.test': ['127.0.0.1'] });
    const client = transport({ policy: LOOPBACK, resolver, ca });

    const response = await get(client, `https://registry.test:${tlsServer.port}/v2/`);
    const mismatch = await rejection(get(client, `https://other.test:${tlsServer.port}/v2/`));

    expect(response.statusCode).toBe(200);
    await response.body.dump();
    expect(guard.dials).toEqual(['127.0.0.1', '127.0.0.1']);
    expect((mismatch as NodeJS.ErrnoException).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(tlsServer.requests).toEqual(['GET /v2/']);
  });
});

describe('HttpTransport through a proxy', () => {
  let proxy: Server;
  let proxyPort: number;
  let proxyConnections = 0;
  const tunnels: string[] = [];

  beforeAll(async () => {
    // A CONNECT proxy that sends every tunnel to the scripted server, whatever host was requested.
    proxy = createServer((_request, response) => response.writeHead(405).end());
    proxy.on('connection', () => {
      proxyConnections += 1;
    });
    proxy.on('connect', (request, socket, head) => {
      tunnels.push(request.url ?? '');
      const upstream = connectTcp(server.port, '127.0.0.1', () => {
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(socket);
        socket.pipe(upstream);
      });
      upstream.on('error', () => socket.destroy());
      socket.on('error', () => upstream.destroy());
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    const address = proxy.address();
    proxyPort = typeof address === 'object' && address !== null ? address.port : 0;
  });

  beforeEach(() => {
    proxyConnections = 0;
    tunnels.length = 0;
  });

  afterAll(async () => {
    proxy?.closeAllConnections();
    proxy?.close();
  });

  test('rejects a proxy at a loopback address by default', async () => {
    process.env.HTTP_PROXY = `http://127.0.0.1:${proxyPort}`;
    const resolver = stubResolver({ 'registry.test': ['127.0.0.1'] });
    const client = transport({ resolver });

    const error = await rejection(get(client, 'http://registry.test/v2/'));

    expect(error).toBeInstanceOf(AddressRejectedError);
    expect((error as Error).message).toContain(`cannot connect to the proxy 127.0.0.1:${proxyPort}`);
    expect(proxyConnections).toBe(0);
    expect(resolver.calls, 'the target host is left to the proxy').toEqual([]);
  });

  test('checks a proxy name by its resolved addresses', async () => {
    process.env.HTTPS_PROXY = `http://proxy.test:${proxyPort}`;
    const client = transport({ policy: LOOPBACK, resolver: stubResolver({ 'proxy.test': ['169.254.169.254'] }) });

    const error = await rejection(get(client, 'https://registry.test/v2/'));

    expect(error).toBeInstanceOf(AddressRejectedError);
    expect((error as Error).message).toContain(`cannot connect to the proxy proxy.test:${proxyPort}`);
    expect(guard.dials).toEqual([]);
    expect(proxyConnections).toBe(0);
  });

  test('tunnels a plain-HTTP request through an allowed proxy', async () => {
    process.env.HTTP_PROXY = `http://127.0.0.1:${proxyPort}`;
    const resolver = stubResolver({});
    const client = transport({ policy: LOOPBACK, resolver });

    const response = await get(client, 'http://registry.test:5000/v2/');

    expect(response.statusCode).toBe(200);
    await response.body.dump();
    expect(tunnels).toEqual(['registry.test:5000']);
    expect(resolver.calls, 'the target host is left to the proxy').toEqual([]);
    expect(server.requests).toEqual(['GET /v2/']);
  });

  test.each(['socks5://user:secret@127.0.0.1:1080', 'socks://127.0.0.1:1080'])('rejects SOCKS proxy %s', (url) => {
    process.env.https_proxy = url;

    const create = () => new HttpTransport({ policy: LOOPBACK });

    expect(create).toThrow(ConfigError);
    expect(create).toThrow(/https_proxy names a SOCKS proxy/);
    expect(create).not.toThrow(/secret/);
  });
});
