import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RegistryGates } from '../../src/ratelimit/registry-gates.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { transferBlob } from '../../src/registry/blob-transfer.ts';
import type { RequestGate } from '../../src/registry/retry.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { startScriptedServer, type ScriptedRequest, type ScriptedServer } from '../harness/scripted-server.ts';
import { FAST_RETRY, loopbackTransport, patterned, pushBlob } from './helpers.ts';

const CHUNK = 2 * 1024 * 1024;
const BLOB_SIZE = 4 * CHUNK;
// The target stores part of the second chunk before its PATCH fails, so the rest is read from the source again.
const STORED_AFTER_FAILURE = CHUNK + 900_001;

let source: TestRegistry;
let redisServer: TestRedis;
let redis: Redis;
const transport = loopbackTransport();

beforeAll(async () => {
  [source, redisServer] = await Promise.all([startRegistry(), startRedis()]);
  redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  redis?.disconnect();
  await transport.close();
  await Promise.all([source?.stop(), redisServer?.stop()]);
});

function sourceClient(gate?: RequestGate): RegistryClient {
  return new RegistryClient({ registry: source.host, insecure: true, transport, retry: FAST_RETRY, ...(gate ? { gate } : {}) });
}

/** Copies the blob `digest` from the source registry to the scripted `target` in PATCH chunks. */
async function transferChunked(target: ScriptedServer, digest: string, size: number, gate?: RequestGate): Promise<void> {
  await transferBlob(
    {
      source: sourceClient(gate),
      sourceRepository: 'app',
      target: new RegistryClient({ registry: target.host, insecure: true, transport, retry: FAST_RETRY }),
      targetRepository: 'mirror',
    },
    digest,
    size,
    { monolithicMaxBytes: 0, chunkBytes: CHUNK },
  );
}

/** Scripts a target that stores part of the second PATCH and then replies 503 to it. */
function scriptTarget(server: ScriptedServer, digest: string): void {
  const session = '/v2/mirror/blobs/uploads/s';
  const patch = (n: number, range: string) => ({
    method: 'PATCH',
    path: `${session}?n=${n}`,
    reply: (request: ScriptedRequest) =>
      request.headers['content-range'] === range ? { status: 202, headers: { location: `${session}?n=${n + 1}` } } : { status: 416, body: `expected ${range}, got ${String(request.headers['content-range'])}` },
  });
  server.expect(
    { method: 'POST', path: '/v2/mirror/blobs/uploads/', reply: { status: 202, headers: { location: `${session}?n=1` } } },
    patch(1, `0-${CHUNK - 1}`),
    { method: 'PATCH', path: `${session}?n=2`, reply: { status: 503 } },
    { method: 'GET', path: `${session}?n=2`, reply: { status: 204, headers: { range: `0-${STORED_AFTER_FAILURE - 1}`, location: `${session}?n=3` } } },
    patch(3, `${STORED_AFTER_FAILURE}-${2 * CHUNK - 1}`),
    patch(4, `${2 * CHUNK}-${3 * CHUNK - 1}`),
    patch(5, `${3 * CHUNK}-${4 * CHUNK - 1}`),
    { method: 'PUT', path: `${session}?n=6&digest=${encodeURIComponent(digest)}`, reply: { status: 201 } },
  );
}

/** Returns the bytes the target stored: each PATCH body placed at the offset its Content-Range names. */
function storedBytes(server: ScriptedServer): Buffer {
  const stored = Buffer.alloc(BLOB_SIZE);
  for (const request of server.requests) {
    if (request.method !== 'PATCH' || request.headers['content-range'] === undefined) continue;
    const start = Number(/^(\d+)-/.exec(String(request.headers['content-range']))?.[1]);
    request.body.copy(stored, start);
  }
  return stored;
}

describe('chunked upload resumed from the source', () => {
  test('resumed PATCH sends the lost bytes', async () => {
    const blob = patterned(BLOB_SIZE, 'resume');
    const digest = await pushBlob(sourceClient(), 'app', blob);
    const target = await startScriptedServer();
    scriptTarget(target, digest);

    await transferChunked(target, digest, blob.length);

    const resumed = target.requests.find((request) => request.path.endsWith('?n=3'));
    expect(resumed?.body.equals(blob.subarray(STORED_AFTER_FAILURE, 2 * CHUNK))).toBe(true);
    expect(storedBytes(target).equals(blob)).toBe(true);
  });

  // A resumed PATCH reads its chunk again with a new source GET. With one place in the source's
  // blob-read window, that GET gets the place only if the first source GET was closed before it.
  test('resume under a source window of one', async () => {
    const blob = patterned(BLOB_SIZE, 'gated');
    const digest = await pushBlob(sourceClient(), 'app', blob);
    const target = await startScriptedServer();
    scriptTarget(target, digest);
    const gates = new RegistryGates({
      redis,
      keyPrefix: `chunk-resume-${randomBytes(4).toString('hex')}`,
      rateLimits: { enabled: true, maxWaitSeconds: 60, hosts: [{ host: source.host, requestsPerSecond: 1000, burst: 1000, maxConcurrent: 1, pullQuotaFloor: 0 }] },
      gate: { pollMs: 10, maxWaitMs: 2_000 },
    });
    const gate: RequestGate = gates.gateFor(source.host);

    try {
      await transferChunked(target, digest, blob.length, gate);
    } finally {
      gates.close();
    }

    expect(storedBytes(target).equals(blob)).toBe(true);
  });
});
