import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { HttpTransport } from '../../src/registry/http.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import type { Credentials } from '../../src/registry/auth.ts';
import type { RetryPolicy } from '../../src/registry/retry.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import type { ScriptedServer } from '../harness/scripted-server.ts';

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

/**
 * Scripts `server` to serve `blob` at `/v2/app/blobs/DIGEST` over connections that break: the first
 * after `firstBytes` bytes, then each of `resumes` Range requests after one byte. Returns the digest.
 */
export function expectBreakingBlob(server: ScriptedServer, blob: Buffer, firstBytes: number, resumes: number): string {
  const digest = sha256Of(blob);
  server.expect({ method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 200, body: blob, breakAfterBytes: firstBytes } });
  server.expect({
    method: 'GET',
    path: `/v2/app/blobs/${digest}`,
    reply: (request) => {
      const start = Number(/^bytes=(\d+)-$/.exec(request.headers.range ?? '')?.[1]);
      return { status: 206, headers: { 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}` }, body: blob.subarray(start), breakAfterBytes: 1 };
    },
    times: resumes,
  });
  return digest;
}

/** Returns `size` bytes that differ from one 32-byte block to the next, so an offset error changes the digest. */
export function patterned(size: number, seed: string): Buffer {
  const bytes = Buffer.alloc(size);
  for (let offset = 0, block = 0; offset < size; offset += 32, block += 1) {
    createHash('sha256').update(`${seed} ${block}`).digest().copy(bytes, offset);
  }
  return bytes;
}

/** Uploads `bytes` as a blob of `repository` in one PUT and returns its digest. */
export async function pushBlob(registry: RegistryClient, repository: string, bytes: Buffer): Promise<string> {
  const digest = sha256Of(bytes);
  const session = await registry.startUpload(repository);
  if (session.mounted) throw new Error('unexpected mount');
  await registry.uploadMonolithic(repository, session.location, digest, bytes, bytes.length);
  return digest;
}
