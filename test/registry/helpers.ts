import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { HttpTransport } from '../../src/registry/http.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import type { Credentials } from '../../src/registry/auth.ts';
import type { RetryPolicy } from '../../src/registry/retry.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';

/** Creates a transport whose network policy allows loopback, where every test server listens. */
export function loopbackTransport(): HttpTransport {
  return new HttpTransport({ policy: new NetworkPolicy(['127.0.0.0/8']) });
}

/** Retry settings that keep failing tests fast: waits of at most a few milliseconds. */
export const FAST_RETRY: RetryPolicy = { maxAttempts: 4, baseDelayMs: 1, maxDelayMs: 5, maxTotalMs: 10_000, maxRetryAfterMs: 5 };

/**
 * Test users of the basic-auth registry, with bcrypt hashes for its htpasswd file (distribution reads
 * only bcrypt). Each hash was made once with `perl -e 'print crypt(PASSWORD, "$2b$05$SALT")'`.
 */
export const BASIC_USER: Credentials = { username: 'pusher', password: 'basic-pw-6c1e93f0a7d2' };
export const BASIC_HTPASSWD = 'pusher:$2b$05$mirrorfleettestsalt00ujg5aSTW3qaY3xwJLSUyVnq5ZbHe5rtC\n';

/** Returns the manifest bytes of `reference` as skopeo reads them, logging in with `credentials`. */
export async function inspectRawWithCredentials(reference: string, credentials?: Credentials): Promise<Buffer> {
  const login = credentials ? ['--creds', `${credentials.username}:${credentials.password}`] : [];
  const result = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', ...login, `docker://${reference}`], {
    encoding: 'buffer',
    stripFinalNewline: false,
  });
  return Buffer.from(result.stdout);
}

export function sha256Of(bytes: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** A source and a target registry, each with a client that retries fast, on one loopback transport. */
export interface RegistryPair {
  source: TestRegistry;
  target: TestRegistry;
  sourceClient: RegistryClient;
  targetClient: RegistryClient;
  transport: HttpTransport;
  stop(): Promise<void>;
}

export async function startRegistryPair(): Promise<RegistryPair> {
  const [source, target] = await Promise.all([startRegistry(), startRegistry()]);
  const transport = loopbackTransport();
  return {
    source,
    target,
    transport,
    sourceClient: new RegistryClient({ registry: source.host, insecure: true, transport, retry: FAST_RETRY }),
    targetClient: new RegistryClient({ registry: target.host, insecure: true, transport, retry: FAST_RETRY }),
    stop: async () => {
      await transport.close();
      await Promise.all([source.stop(), target.stop()]);
    },
  };
}
