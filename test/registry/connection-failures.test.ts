import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { execa } from 'execa';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LookupAddress } from 'node:dns';
import { HttpTransport } from '../../src/registry/http.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import type { RetryEvent } from '../../src/registry/retry.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { RegistryError } from '../../src/errors.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { installLoopbackGuard, type LoopbackGuard } from '../net/loopback-guard.ts';

/**
 * Connection failures that another attempt cannot cure, against real registries: a plain-HTTP registry
 * reached over HTTPS, an HTTPS registry reached over plain HTTP, and DNS failures from a stub resolver
 * (no name reaches the system resolver, which the loopback guard checks).
 */

const PROXY_VARIABLES = ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'];
const LOOPBACK = new NetworkPolicy(['127.0.0.0/8']);

let guard: LoopbackGuard;
let plainRegistry: TestRegistry;
let tlsRegistry: TestRegistry;
let savedEnvironment: Record<string, string | undefined>;
const transports: HttpTransport[] = [];

/** Creates a self-signed certificate for 127.0.0.1 with the openssl command. */
async function selfSignedCertificate(): Promise<{ certificate: string; key: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorfleet-tls-'));
  try {
    const keyPath = join(dir, 'key.pem');
    const certPath = join(dir, 'cert.pem');
    await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    return { certificate: await readFile(certPath, 'utf8'), key: await readFile(keyPath, 'utf8') };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Returns a resolver that fails every name with `code` and names the host, as getaddrinfo does. */
function failingResolver(code: 'ENOTFOUND' | 'EAI_AGAIN'): (hostname: string) => Promise<LookupAddress[]> {
  return async (hostname) => {
    throw Object.assign(new Error(`getaddrinfo ${code} ${hostname}`), { code, syscall: 'getaddrinfo', hostname });
  };
}

function clientFor(registry: string, options: { insecure: boolean; resolver?: (hostname: string) => Promise<LookupAddress[]>; retries: RetryEvent[] }): RegistryClient {
  const transport = new HttpTransport({ policy: LOOPBACK, ...(options.resolver ? { resolver: options.resolver } : {}) });
  transports.push(transport);
  return new RegistryClient({
    registry,
    insecure: options.insecure,
    transport,
    retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
    onRetry: (event) => options.retries.push(event),
  });
}

async function registryError(promise: Promise<unknown>): Promise<RegistryError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof RegistryError) return error;
    throw error;
  }
  throw new Error('expected the call to fail');
}

beforeAll(async () => {
  savedEnvironment = Object.fromEntries(PROXY_VARIABLES.map((name) => [name, process.env[name]]));
  for (const name of PROXY_VARIABLES) delete process.env[name];
  [plainRegistry, tlsRegistry] = await Promise.all([startRegistry(), selfSignedCertificate().then((tls) => startRegistry({ tls }))]);
  guard = installLoopbackGuard();
});

afterEach(async () => {
  await Promise.all(transports.splice(0).map((transport) => transport.close()));
  expect(guard.escapes, 'no connection left loopback').toEqual([]);
  expect(guard.lookups, 'no name reached the system resolver').toEqual([]);
});

afterAll(async () => {
  guard?.restore();
  await Promise.all([plainRegistry?.stop(), tlsRegistry?.stop()]);
  for (const [name, value] of Object.entries(savedEnvironment ?? {})) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

describe('TLS mismatch', () => {
  test('plain-HTTP registry reached over HTTPS', async () => {
    const retries: RetryEvent[] = [];
    const client = clientFor(plainRegistry.host, { insecure: false, retries });

    const error = await registryError(client.headManifest('app', 'v1'));

    expect(error.code).toBe('REGISTRY_TLS_MISMATCH');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain(plainRegistry.host);
    expect(error.message).toContain('add it to MIRRORFLEET_INSECURE_REGISTRIES');
    expect(retries, 'no second attempt').toEqual([]);
  });

  test('HTTPS registry reached over plain HTTP', async () => {
    const retries: RetryEvent[] = [];
    const client = clientFor(tlsRegistry.host, { insecure: true, retries });

    const error = await registryError(client.headManifest('app', 'v1'));

    expect(error.code).toBe('REGISTRY_TLS_MISMATCH');
    expect(error.retryable).toBe(false);
    expect(error.status).toBe(400);
    expect(error.message).toContain(`${tlsRegistry.host} serves HTTPS, so remove it from MIRRORFLEET_INSECURE_REGISTRIES`);
    expect(retries, 'no second attempt').toEqual([]);
  });
});

describe('DNS failure', () => {
  test('name that does not exist is not retried', async () => {
    const retries: RetryEvent[] = [];
    const client = clientFor('registry.invalid', { insecure: false, resolver: failingResolver('ENOTFOUND'), retries });

    const error = await registryError(client.headManifest('app', 'v1'));

    expect(error.code).toBe('REGISTRY_DNS_FAILED');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('cannot resolve registry.invalid');
    expect(error.message).toContain('ENOTFOUND');
    expect(retries, 'no second attempt').toEqual([]);
  });

  test('temporary failure is retried, then retryable', async () => {
    const retries: RetryEvent[] = [];
    const client = clientFor('registry.invalid', { insecure: false, resolver: failingResolver('EAI_AGAIN'), retries });

    const error = await registryError(client.headManifest('app', 'v1'));

    expect(error.code).toBe('REGISTRY_DNS_FAILED');
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('cannot resolve registry.invalid');
    expect(error.message).toContain('EAI_AGAIN');
    expect(retries.map((event) => event.reason)).toEqual(['EAI_AGAIN', 'EAI_AGAIN']);
  });
});
