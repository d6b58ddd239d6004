import { createHash, randomBytes } from 'node:crypto';
import { setImmediate, setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { Metrics } from '../../src/metrics/metrics.ts';
import { budgetKeys, type HostLimits } from '../../src/ratelimit/budget.ts';
import type { GateEvents } from '../../src/ratelimit/gate.ts';
import { gateMetrics } from '../../src/ratelimit/metrics.ts';
import { REPORT_SCRIPT } from '../../src/ratelimit/scripts.ts';
import { RegistryGates } from '../../src/ratelimit/registry-gates.ts';
import { withRateLimitListener, type RateLimitWait } from '../../src/ratelimit/waits.ts';
import { RegistryClient, type RetryPolicy } from '../../src/registry/client.ts';
import { OCI_MANIFEST } from '../../src/registry/media-types.ts';
import { requestKind, type RequestGate, type RequestKind } from '../../src/registry/retry.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startScriptedServer, type ScriptedReply, type ScriptedServer } from '../harness/scripted-server.ts';
import { FAST_RETRY, loopbackTransport, sha256Of } from '../registry/helpers.ts';

// The registry client with request gates in front of scripted registries. Each "process" is a
// RegistryGates of its own on the same Redis and key prefix, as two worker processes would have.

const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'a'.repeat(64)}`, size: 2 }, layers: [] }));
const MANIFEST_DIGEST = sha256Of(MANIFEST);
const MANIFEST_REPLY: ScriptedReply = { status: 200, headers: { 'content-type': OCI_MANIFEST }, body: MANIFEST };
const BLOB = Buffer.from('blob bytes for the gate tests');
const BLOB_DIGEST = sha256Of(BLOB);
const TIMINGS = { quotaProbeIntervalMs: 50 };
const GENEROUS: Partial<HostLimits> = { requestsPerSecond: 1000, burst: 1000, maxConcurrent: 8, pullQuotaFloor: 0 };

const transport = loopbackTransport();
let server: TestRedis;
let redis: Redis;
let prefix: string;

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
  await transport.close();
});

beforeEach(() => {
  prefix = `test-${randomBytes(4).toString('hex')}`;
});

/** Creates the gates of one worker process, with `limits` for the scripted registry. */
function processGates(
  registry: ScriptedServer,
  limits: Partial<HostLimits>,
  options: { events?: GateEvents; maxWaitMs?: number; connection?: Redis } = {},
): RegistryGates {
  return new RegistryGates({
    redis: options.connection ?? redis,
    keyPrefix: prefix,
    rateLimits: { enabled: true, maxWaitSeconds: 60, hosts: [{ host: registry.host, ...GENEROUS, ...limits }] },
    timings: TIMINGS,
    gate: { pollMs: 10, ...(options.maxWaitMs ? { maxWaitMs: options.maxWaitMs } : {}) },
    ...(options.events ? { events: options.events } : {}),
  });
}

function client(registry: ScriptedServer, gate: RequestGate, retry: Partial<RetryPolicy> = {}): RegistryClient {
  return new RegistryClient({ registry: registry.host, insecure: true, transport, retry: { ...FAST_RETRY, ...retry }, gate });
}

async function text(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function inFlight(registry: ScriptedServer, kind: RequestKind): Promise<number> {
  await setImmediate();
  return redis.zcard(budgetKeys(prefix, registry.host).inFlight(kind));
}

async function notBefore(registry: ScriptedServer): Promise<number> {
  return Number(await redis.hget(budgetKeys(prefix, registry.host).state, 'notBefore'));
}

async function gaugeValue(metrics: Metrics, name: string): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  return (await metric?.get())?.values[0]?.value;
}

describe('shared concurrency', () => {
  test('two processes stay within the limit', async () => {
    const registry = await startScriptedServer();
    let running = 0;
    let maxRunning = 0;
    registry.expect({
      method: 'GET',
      path: `/v2/app/blobs/${BLOB_DIGEST}`,
      times: 12,
      reply: async () => {
        running += 1;
        maxRunning = Math.max(maxRunning, running);
        await sleep(20);
        running -= 1;
        return { status: 200, body: BLOB };
      },
    });
    // Each process's own window starts at 2 as well, so without the shared limit 4 would run at once.
    const processes = [processGates(registry, { maxConcurrent: 2 }), processGates(registry, { maxConcurrent: 2 })];
    const clients = processes.map((gates) => client(registry, gates.gateFor(registry.host)));

    const reads = clients.flatMap((registryClient) => Array.from({ length: 6 }, async () => text((await registryClient.getBlob('app', BLOB_DIGEST)).stream)));
    const bodies = await Promise.all(reads);

    expect(bodies).toEqual(Array.from({ length: 12 }, () => BLOB.toString('utf8')));
    expect(maxRunning).toBeLessThanOrEqual(2);
    expect(await inFlight(registry, 'blob-read')).toBe(0);
  });

  test('blob read holds its place until its body closes', async () => {
    const registry = await startScriptedServer();
    registry.expect({ method: 'GET', path: `/v2/app/blobs/${BLOB_DIGEST}`, reply: { status: 200, body: BLOB } });
    const registryClient = client(registry, processGates(registry, {}).gateFor(registry.host));

    const blob = await registryClient.getBlob('app', BLOB_DIGEST);
    const whileOpen = await inFlight(registry, 'blob-read');
    await text(blob.stream);
    const afterRead = await inFlight(registry, 'blob-read');

    expect(whileOpen).toBe(1);
    expect(afterRead).toBe(0);
  });
});

describe('not before', () => {
  test('429 Retry-After holds back the other process', async () => {
    const registry = await startScriptedServer();
    const arrivals: number[] = [];
    registry.expect(
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 429, headers: { 'retry-after': '1' }, body: { errors: [{ code: 'TOOMANYREQUESTS' }] } } },
      {
        method: 'GET',
        path: '/v2/app/manifests/1.0',
        reply: () => {
          arrivals.push(Date.now());
          return MANIFEST_REPLY;
        },
      },
    );
    const first = client(registry, processGates(registry, {}).gateFor(registry.host), { maxAttempts: 1 });
    const second = client(registry, processGates(registry, {}).gateFor(registry.host));
    const waits: RateLimitWait[] = [];

    await expect(first.getManifest('app', '1.0')).rejects.toMatchObject({ code: 'REGISTRY_RATE_LIMITED' });
    const pauseEnd = await notBefore(registry);
    const manifest = await withRateLimitListener((wait) => waits.push(wait), () => second.getManifest('app', '1.0'));

    expect(manifest?.digest).toBe(MANIFEST_DIGEST);
    expect(registry.requests).toHaveLength(2);
    // The second process sent nothing before the time the 429 set, on the clock Redis and this test share.
    expect(pauseEnd).toBeGreaterThan(0);
    expect(arrivals[0]).toBeGreaterThanOrEqual(pauseEnd);
    expect(waits).toContainEqual(expect.objectContaining({ reason: 'not-before', phase: 'start', kind: 'manifest-read' }));
    expect(waits).toContainEqual(expect.objectContaining({ reason: 'not-before', phase: 'end' }));
  });

  test('own retry waits for the shared pause', async () => {
    const registry = await startScriptedServer();
    const arrivals: number[] = [];
    registry.expect(
      { method: 'HEAD', path: `/v2/app/blobs/${BLOB_DIGEST}`, reply: { status: 429, headers: { 'retry-after': '1' } } },
      {
        method: 'HEAD',
        path: `/v2/app/blobs/${BLOB_DIGEST}`,
        reply: () => {
          arrivals.push(Date.now());
          return { status: 200, headers: { 'content-length': String(BLOB.length) } };
        },
      },
    );
    // FAST_RETRY cuts Retry-After to 5 ms, so only the gate makes the retry wait for the full second.
    const metrics = new Metrics({ defaultMetrics: false });
    const registryClient = client(registry, processGates(registry, {}, { events: gateMetrics(metrics) }).gateFor(registry.host), { maxAttempts: 2 });
    const waits: RateLimitWait[] = [];

    const size = await withRateLimitListener((wait) => waits.push(wait), () => registryClient.headBlob('app', BLOB_DIGEST));
    const pauseEnd = await notBefore(registry);
    const counted = (await metrics.registry.getSingleMetric('mirrorfleet_registry_budget_waits_total')!.get()).values;

    expect(size).toBe(BLOB.length);
    expect(pauseEnd).toBeGreaterThan(0);
    expect(arrivals[0]).toBeGreaterThanOrEqual(pauseEnd);
    expect(waits).toContainEqual(expect.objectContaining({ reason: 'not-before', phase: 'start', kind: 'blob-read' }));
    expect(counted).toEqual([expect.objectContaining({ labels: { registry: registry.host, reason: 'not-before' }, value: 1 })]);
  });

  test('wait past the limit fails without a request', async () => {
    const registry = await startScriptedServer();
    registry.expect({ method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 429, headers: { 'retry-after': '30' } } });
    const first = client(registry, processGates(registry, {}).gateFor(registry.host), { maxAttempts: 1 });
    const second = client(registry, processGates(registry, {}, { maxWaitMs: 1_000 }).gateFor(registry.host));
    await first.getManifest('app', '1.0').catch(() => undefined);

    const failure = second.getManifest('app', '1.0');

    await expect(failure).rejects.toMatchObject({ code: 'REGISTRY_RATE_LIMITED', retryable: true, registry: registry.host });
    await expect(failure).rejects.toThrow(
      `gave up waiting for the request budget of ${registry.host} while reading manifest app:1.0: the registry asked every client to pause (429 or Retry-After), ` +
        'and the wait would pass the limit of 1 s (rateLimits.maxWaitSeconds); the job can be retried later',
    );
    expect(registry.requests).toHaveLength(1);
  });
});

describe('adaptive concurrency', () => {
  test("429 at one process cuts the other's window", async () => {
    const registry = await startScriptedServer();
    registry.expect(
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: MANIFEST_REPLY },
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 429, headers: { 'retry-after': '0' } } },
      { method: 'GET', path: '/v2/app/manifests/1.0', reply: MANIFEST_REPLY, times: 2 },
    );
    const [firstGates, secondGates] = [processGates(registry, {}), processGates(registry, {})];
    const first = client(registry, firstGates.gateFor(registry.host));
    const second = client(registry, secondGates.gateFor(registry.host));

    await second.getManifest('app', '1.0');
    const before = secondGates.gateFor(registry.host).windowLimit('manifest-read');
    await first.getManifest('app', '1.0');
    await second.getManifest('app', '1.0');

    expect(before).toBe(4);
    expect(firstGates.gateFor(registry.host).windowLimit('manifest-read')).toBe(2);
    expect(secondGates.gateFor(registry.host).windowLimit('manifest-read')).toBe(2);
    expect(secondGates.gateFor(registry.host).windowLimit('blob-read')).toBe(4);
  });

  test('window is a metric per host and kind', async () => {
    const registry = await startScriptedServer();
    registry.expect({ method: 'GET', path: '/v2/app/manifests/1.0', reply: { status: 503, headers: { 'retry-after': '0' } } }, { method: 'GET', path: '/v2/app/manifests/1.0', reply: MANIFEST_REPLY });
    const metrics = new Metrics({ defaultMetrics: false });
    const registryClient = client(registry, processGates(registry, {}, { events: gateMetrics(metrics) }).gateFor(registry.host));

    await registryClient.getManifest('app', '1.0');
    const windows = (await metrics.registry.getSingleMetric('mirrorfleet_registry_concurrency_window')!.get()).values;

    expect(windows).toContainEqual(expect.objectContaining({ labels: { registry: registry.host, kind: 'manifest-read' }, value: 2 }));
    expect(windows).toContainEqual(expect.objectContaining({ labels: { registry: registry.host, kind: 'blob-read' }, value: 4 }));
  });
});

describe('pull quota floor', () => {
  const quotaHead = (remaining: number): ScriptedReply => ({
    status: 200,
    headers: {
      'docker-content-digest': MANIFEST_DIGEST,
      'content-type': OCI_MANIFEST,
      'content-length': String(MANIFEST.length),
      'ratelimit-limit': '100;w=21600',
      'ratelimit-remaining': `${remaining};w=21600`,
    },
  });

  test('pulls pause below the floor and resume after recovery', async () => {
    const registry = await startScriptedServer();
    const path = '/v2/library/app/manifests/1.0';
    registry.expect(
      { method: 'HEAD', path, reply: quotaHead(2) },
      { method: 'HEAD', path, reply: quotaHead(2) },
      { method: 'HEAD', path, reply: quotaHead(80) },
      { method: 'GET', path, reply: { ...MANIFEST_REPLY, headers: { 'content-type': OCI_MANIFEST, 'ratelimit-remaining': '79;w=21600' } } },
    );
    const metrics = new Metrics({ defaultMetrics: false });
    const metricEvents = gateMetrics(metrics);
    const paused: boolean[] = [];
    const events: GateEvents = { ...metricEvents, onQuota: (event) => (paused.push(event.paused), metricEvents.onQuota!(event)) };
    const registryClient = client(registry, processGates(registry, { pullQuotaFloor: 5 }, { events }).gateFor(registry.host));
    const waits: RateLimitWait[] = [];

    await registryClient.headManifest('library/app', '1.0');
    const pausedAfterHead = await gaugeValue(metrics, 'mirrorfleet_registry_pulls_paused');
    const manifest = await withRateLimitListener((wait) => waits.push(wait), () => registryClient.getManifest('library/app', '1.0'));

    expect(manifest?.digest).toBe(MANIFEST_DIGEST);
    // HEADs spend no pull: the first reads the quota, two more are probes, and the GET comes after recovery.
    expect(registry.requests.map((request) => request.method)).toEqual(['HEAD', 'HEAD', 'HEAD', 'GET']);
    expect(paused).toEqual([true, true, false, false]);
    expect(pausedAfterHead).toBe(1);
    expect(await gaugeValue(metrics, 'mirrorfleet_registry_pulls_paused')).toBe(0);
    expect(await gaugeValue(metrics, 'mirrorfleet_registry_pull_quota_remaining')).toBe(79);
    expect(waits).toContainEqual(expect.objectContaining({ reason: 'quota', phase: 'start', registry: registry.host }));
    expect(waits.at(-1)).toMatchObject({ phase: 'end' });
  });

  test('paused pull resumes on recovery read by another process', async () => {
    const registry = await startScriptedServer();
    const path = '/v2/library/app/manifests/1.0';
    registry.expect(
      { method: 'HEAD', path, reply: quotaHead(2) },
      { method: 'HEAD', path, reply: quotaHead(2) },
      { method: 'HEAD', path, reply: quotaHead(80) },
      { method: 'GET', path, reply: MANIFEST_REPLY },
    );
    // The next probe is a minute away, beyond the 10 s that a request may wait: only a recheck of the
    // quota that the other process read lets the GET through.
    const gates = () =>
      new RegistryGates({
        redis,
        keyPrefix: prefix,
        rateLimits: { enabled: true, maxWaitSeconds: 60, hosts: [{ host: registry.host, ...GENEROUS, pullQuotaFloor: 5 }] },
        timings: { quotaProbeIntervalMs: 60_000 },
        gate: { pollMs: 10, maxWaitMs: 10_000 },
      });
    const [paused, other] = [client(registry, gates().gateFor(registry.host)), client(registry, gates().gateFor(registry.host))];

    await paused.headManifest('library/app', '1.0');
    const pull = paused.getManifest('library/app', '1.0');
    while (registry.requests.length < 2) await sleep(10);
    await other.headManifest('library/app', '1.0');
    const manifest = await pull;

    expect(manifest?.digest).toBe(MANIFEST_DIGEST);
    expect(registry.requests.map((request) => request.method)).toEqual(['HEAD', 'HEAD', 'HEAD', 'GET']);
  });

  test('uncounted image pulls during pause', async () => {
    const registry = await startScriptedServer();
    const path = '/v2/library/app/manifests/1.0';
    // Docker Hub sends no RateLimit headers for an image whose pulls it does not count.
    const uncounted: ScriptedReply = { status: 200, headers: { 'docker-content-digest': MANIFEST_DIGEST, 'content-type': OCI_MANIFEST, 'content-length': String(MANIFEST.length) } };
    registry.expect({ method: 'HEAD', path, reply: quotaHead(0) }, { method: 'HEAD', path, reply: uncounted }, { method: 'GET', path, reply: MANIFEST_REPLY });
    const registryClient = client(registry, processGates(registry, { pullQuotaFloor: 5 }).gateFor(registry.host));

    await registryClient.headManifest('library/app', '1.0');
    const manifest = await registryClient.getManifest('library/app', '1.0');

    expect(manifest?.digest).toBe(MANIFEST_DIGEST);
    expect(registry.requests.map((request) => request.method)).toEqual(['HEAD', 'HEAD', 'GET']);
  });

  test('HEADs go ahead while pulls pause', async () => {
    const registry = await startScriptedServer();
    const path = '/v2/library/app/manifests/1.0';
    registry.expect({ method: 'HEAD', path, reply: quotaHead(0), times: 3 });
    const registryClient = client(registry, processGates(registry, { pullQuotaFloor: 5 }).gateFor(registry.host));
    const waits: RateLimitWait[] = [];

    const heads = await withRateLimitListener(
      (wait) => waits.push(wait),
      async () => [await registryClient.headManifest('library/app', '1.0'), await registryClient.headManifest('library/app', '1.0'), await registryClient.headManifest('library/app', '1.0')],
    );

    expect(heads.map((head) => head?.digest)).toEqual([MANIFEST_DIGEST, MANIFEST_DIGEST, MANIFEST_DIGEST]);
    expect(waits).toEqual([]);
  });
});

describe('outcome reports', () => {
  const REPORT_SHA = createHash('sha1').update(REPORT_SCRIPT).digest('hex');
  const HEAD_REPLY: ScriptedReply = { status: 200, headers: { 'docker-content-digest': MANIFEST_DIGEST, 'content-type': OCI_MANIFEST, 'content-length': String(MANIFEST.length) } };

  /** Opens a Redis connection that counts the calls of the budget's report script sent through it. */
  function countingConnection(): { connection: Redis; reports: () => number } {
    const connection = new Redis(server.url, { maxRetriesPerRequest: null });
    let reports = 0;
    const evalsha = connection.evalsha.bind(connection) as (...args: unknown[]) => Promise<unknown>;
    (connection as unknown as { evalsha: (...args: unknown[]) => Promise<unknown> }).evalsha = (...args) => {
      if (args[0] === REPORT_SHA) reports += 1;
      return evalsha(...args);
    };
    return { connection, reports: () => reports };
  }

  test('healthy response at full rate sends no report', async () => {
    const registry = await startScriptedServer();
    registry.expect({ method: 'HEAD', path: '/v2/app/manifests/1.0', reply: HEAD_REPLY, times: 2 });
    const { connection, reports } = countingConnection();
    const registryClient = client(registry, processGates(registry, {}, { connection }).gateFor(registry.host));

    await registryClient.headManifest('app', '1.0');
    await registryClient.headManifest('app', '1.0');
    connection.disconnect();

    expect(reports()).toBe(0);
    expect(await inFlight(registry, 'manifest-read')).toBe(0);
  });

  test('healthy response raises a cut rate', async () => {
    const registry = await startScriptedServer();
    registry.expect(
      { method: 'HEAD', path: '/v2/app/manifests/1.0', reply: { status: 429, headers: { 'retry-after': '0' } } },
      { method: 'HEAD', path: '/v2/app/manifests/1.0', reply: HEAD_REPLY },
    );
    const { connection, reports } = countingConnection();
    const registryClient = client(registry, processGates(registry, {}, { connection }).gateFor(registry.host));
    const state = budgetKeys(prefix, registry.host).state;

    const head = await registryClient.headManifest('app', '1.0');
    const rateAfterRetry = Number(await redis.hget(state, 'rate'));
    connection.disconnect();

    expect(head?.digest).toBe(MANIFEST_DIGEST);
    // The 429 and the healthy response after it are both reported, because the 429 cut the rate.
    expect(reports()).toBe(2);
    // GENEROUS allows 1000 requests per second; the 429 halved that, and the healthy response raised it again.
    expect(rateAfterRetry).toBeGreaterThan(500);
    expect(rateAfterRetry).toBeLessThan(1000);
  });
});

describe('request kinds', () => {
  const origin = 'https://registry.test';
  test.each([
    ['GET', '/v2/app/manifests/1.0', 'manifest-read'],
    ['HEAD', '/v2/app/manifests/1.0', 'manifest-read'],
    ['GET', '/v2/app/tags/list', 'manifest-read'],
    ['GET', `/v2/app/blobs/${BLOB_DIGEST}`, 'blob-read'],
    ['HEAD', `/v2/app/blobs/${BLOB_DIGEST}`, 'blob-read'],
    ['POST', '/v2/app/blobs/uploads/', 'upload'],
    ['PATCH', '/v2/app/blobs/uploads/session', 'upload'],
    ['GET', '/v2/app/blobs/uploads/session', 'upload'],
    ['PUT', '/v2/app/manifests/1.0', 'upload'],
    ['DELETE', `/v2/app/manifests/${MANIFEST_DIGEST}`, 'upload'],
  ])('%s %s is %s', (method, path, kind) => {
    expect(requestKind(method, new URL(path, origin))).toBe(kind);
  });
});
