import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { MirrorResult } from '../../queues/mirror.ts';
import type { JobView } from '../../src/api/schemas.ts';
import { DIGESTS, FIXTURES, seedLayout } from '../harness/fixtures.ts';
import { freePort } from '../harness/processes.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { fleetEnv, startWorker, type WorkerProcess } from '../harness/workers.ts';
import { scrape, valueOf, type Samples } from '../metrics/prometheus-text.ts';
import { API_TOKENS, asAdmin, asEnqueuer, startApiProcess, type ApiProcess } from './helpers.ts';

/**
 * The API and a worker as separate processes against real Redis and registries: a producer enqueues
 * over HTTP, waits over HTTP and reads the result, and the worker's /metrics counts what moved.
 */

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let worker: WorkerProcess;
let api: ApiProcess;
let workerMetricsUrl: string;
const keyPrefix = `api-${randomBytes(4).toString('hex')}`;

const BUSYBOX = 'busybox-1.38.0-uclibc-amd64';

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  await seedLayout(source.host, BUSYBOX, 'library/busybox', '1.38');
  const env = fleetEnv({
    redisUrl: redis.url,
    keyPrefix,
    mirrorRegistries: [`local=${mirror.host}`],
    insecureRegistries: [source.host, mirror.host],
    extra: { MIRRORFLEET_API_TOKENS: API_TOKENS, MIRRORFLEET_METRICS_HOST: '127.0.0.1' },
  });
  const [metricsPort, apiPort] = [await freePort(), await freePort()];
  workerMetricsUrl = `http://127.0.0.1:${metricsPort}`;
  [worker, api] = await Promise.all([startWorker(env, ['--metrics-port', String(metricsPort), '--concurrency', '2']), startApiProcess(env, apiPort)]);
});

afterAll(async () => {
  await Promise.all([worker?.stop(), api?.stop()]);
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

async function call(method: string, path: string, headers: Record<string, string> = {}, body?: unknown): Promise<Answer> {
  const response = await fetch(`${api.url}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await response.text();
  const json = response.headers.get('content-type')?.includes('application/json') && text !== '' ? JSON.parse(text) : text;
  return { status: response.status, headers: response.headers, body: json };
}

function mirrorRequest(service: string, overrides: Record<string, unknown> = {}) {
  return { v: 1, source: `${source.host}/library/busybox:1.38`, registry: 'local', cluster: 'prod', service, ...overrides };
}

async function enqueue(request: unknown): Promise<string> {
  const answer = await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, request);
  expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  return answer.body.jobId as string;
}

/** Long-polls until the job finishes. */
async function waitForJob(jobId: string): Promise<JobView> {
  for (let poll = 0; poll < 6; poll += 1) {
    const answer = await call('GET', `/v1/queues/mirror/jobs/${jobId}/wait?timeoutSeconds=20`, asEnqueuer);
    if (answer.status === 200) return answer.body as JobView;
    expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  }
  throw new Error(`job ${jobId} did not finish within 2 minutes`);
}

function delta(before: Samples, after: Samples, name: string, labels: Record<string, string>): number {
  return valueOf(after, name, labels) - valueOf(before, name, labels);
}

/** Bytes of the fixture image: its manifest, config and layer, as the source registry serves them. */
async function fixtureBytes(): Promise<number> {
  const folder = join(FIXTURES, BUSYBOX, 'blobs', 'sha256');
  let total = 0;
  for (const name of await readdir(folder)) total += (await stat(join(folder, name))).size;
  return total;
}

describe('producer API with a worker', () => {
  test('mirror over HTTP moves the worker counters', async () => {
    const before = await scrape(`${workerMetricsUrl}/metrics`);

    const answer = await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, mirrorRequest('web'));
    expect(answer.status).toBe(202);
    expect(answer.body.coalesced).toBe(false);
    expect(answer.headers.get('location')).toBe(`/v1/queues/mirror/jobs/${answer.body.jobId}`);
    const job = await waitForJob(answer.body.jobId);

    expect(job.state).toBe('completed');
    const result = job.result as MirrorResult;
    const bytes = await fixtureBytes();
    expect(result.action).toBe('copied');
    expect(result.digest).toBe(DIGESTS.busyboxAmd64);
    expect(result.target).toBe(`${mirror.host}/prod/services/web/${source.host.replace(':', '_')}/library/busybox:1.38`);
    expect(result.blobs).toEqual({ copied: 2, mounted: 0, present: 0 });
    expect(result.bytes).toEqual({ pulled: bytes, pushed: bytes });
    expect((await inspectRaw(result.target)).equals(await inspectRaw(`${source.host}/library/busybox:1.38`))).toBe(true);

    const after = await scrape(`${workerMetricsUrl}/metrics`);
    expect(delta(before, after, 'mirrorfleet_jobs_total', { queue: 'mirror', outcome: 'copied' })).toBe(1);
    expect(delta(before, after, 'mirrorfleet_bytes_total', { direction: 'pulled' })).toBe(bytes);
    expect(delta(before, after, 'mirrorfleet_bytes_total', { direction: 'pushed' })).toBe(bytes);
    expect(delta(before, after, 'mirrorfleet_blobs_total', { result: 'copied' })).toBe(2);
    expect(delta(before, after, 'mirrorfleet_blobs_total', { result: 'mounted' })).toBe(0);
    expect(delta(before, after, 'mirrorfleet_job_duration_seconds_count', { queue: 'mirror', outcome: 'copied' })).toBe(1);
  });

  test('second service mounts blobs and counts dedupe hits', async () => {
    const before = await scrape(`${workerMetricsUrl}/metrics`);

    const job = await waitForJob(await enqueue(mirrorRequest('worker')));

    const result = job.result as MirrorResult;
    expect(result.action).toBe('copied');
    expect(result.blobs).toEqual({ copied: 0, mounted: 2, present: 0 });
    const after = await scrape(`${workerMetricsUrl}/metrics`);
    expect(delta(before, after, 'mirrorfleet_blobs_total', { result: 'mounted' })).toBe(2);
    expect(delta(before, after, 'mirrorfleet_blobs_total', { result: 'copied' })).toBe(0);
    expect(delta(before, after, 'mirrorfleet_dedupe_hits_total', { kind: 'mounted_blob' })).toBe(2);
    expect(delta(before, after, 'mirrorfleet_bytes_total', { direction: 'pulled' })).toBe(result.bytes.pulled);
    expect(result.bytes.pulled, 'only the manifest is read from the source').toBeLessThan(1024);
  });

  test('repeat request is a skipped copy', async () => {
    const before = await scrape(`${workerMetricsUrl}/metrics`);

    const job = await waitForJob(await enqueue(mirrorRequest('web')));

    expect((job.result as MirrorResult).action).toBe('skipped');
    const after = await scrape(`${workerMetricsUrl}/metrics`);
    expect(delta(before, after, 'mirrorfleet_jobs_total', { queue: 'mirror', outcome: 'skipped' })).toBe(1);
    expect(delta(before, after, 'mirrorfleet_dedupe_hits_total', { kind: 'skipped_copy' })).toBe(1);
    expect(delta(before, after, 'mirrorfleet_bytes_total', { direction: 'pushed' })).toBe(0);
  });

  test('identical requests coalesce while the queue is paused', async () => {
    expect((await call('PUT', '/admin/queues/api/queues/mirror/pause', asAdmin)).status).toBe(200);
    let first: Answer;
    let second: Answer;
    try {
      first = await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, mirrorRequest('paused'));
      second = await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, mirrorRequest('paused'));
    } finally {
      expect((await call('PUT', '/admin/queues/api/queues/mirror/resume', asAdmin)).status).toBe(200);
    }

    expect(first.body.coalesced).toBe(false);
    expect(second.body.coalesced).toBe(true);
    expect(second.body.jobId).toBe(first.body.jobId);
    expect((await waitForJob(first.body.jobId)).state).toBe('completed');
    const apiMetrics = await scrape(`${api.url}/metrics`);
    expect(valueOf(apiMetrics, 'mirrorfleet_dedupe_hits_total', { kind: 'coalesced_job' })).toBe(1);
  });

  test('missing or unknown token gets 401 without job details', async () => {
    const jobId = await enqueue(mirrorRequest('secret-service'));
    const attempts: [string, string, Record<string, string>][] = [
      ['POST', '/v1/queues/mirror/jobs', {}],
      ['POST', '/v1/queues/mirror/jobs', { authorization: 'Bearer wrong-token-0123456789abcdef' }],
      ['GET', `/v1/queues/mirror/jobs/${jobId}`, {}],
      ['GET', `/v1/queues/mirror/jobs/${jobId}/wait?timeoutSeconds=0`, { authorization: `Basic ${Buffer.from(`x:${asEnqueuer.authorization.slice(7)}`).toString('base64')}` }],
    ];
    for (const [method, path, headers] of attempts) {
      const answer = await call(method, path, headers, method === 'POST' ? mirrorRequest('x') : undefined);

      expect(answer.status, `${method} ${path}`).toBe(401);
      expect(answer.headers.get('www-authenticate')).toMatch(/^Bearer realm="mirrorfleet"/);
      expect(Object.keys(answer.body.error).sort()).toEqual(['code', 'message']);
      expect(JSON.stringify(answer.body)).not.toContain('secret-service');
    }
  });

  test('admin routes refuse an enqueue token with 403', async () => {
    const document = (await call('GET', '/openapi.json')).body as { paths: Record<string, Record<string, { security: Record<string, string[]>[] }>> };
    const adminOperations = Object.entries(document.paths).flatMap(([path, item]) =>
      Object.entries(item)
        .filter(([, operation]) => operation.security.some((requirement) => Object.values(requirement).some((scopes) => scopes.includes('admin'))))
        .map(([method, operation]) => ({ method: method.toUpperCase(), path, operation })),
    );
    expect(adminOperations.map(({ method, path }) => `${method} ${path}`)).toEqual(expect.arrayContaining(['GET /admin/queues', 'POST /v1/queues/cleanup/jobs']));
    const sweep = await call('POST', '/v1/queues/cleanup/jobs', asEnqueuer, { v: 1, kind: 'sweep', registry: 'local' });
    expect(sweep.status, 'a sweep').toBe(403);
    expect(sweep.body).toEqual({ error: { code: 'FORBIDDEN', message: 'this token lacks the "admin" scope' } });

    for (const { method, path } of adminOperations) {
      // A body that would be valid does not matter: the scope is checked before the body is read.
      const answer = await call(method, path.replace('{jobId}', '1'), asEnqueuer, method === 'POST' ? {} : undefined);
      expect(answer.status, `${method} ${path}`).toBe(403);
      expect(answer.body.error.code).toBe('FORBIDDEN');
    }
    const dashboardApi = await call('PUT', '/admin/queues/api/queues/mirror/pause', asEnqueuer);
    expect(dashboardApi.status, 'the dashboard API under /admin/queues').toBe(403);
  });

  test('dashboard retries a failed job', async () => {
    const before = await scrape(`${workerMetricsUrl}/metrics`);
    const jobId = await enqueue(mirrorRequest('retried', { source: `${source.host}/library/busybox:missing` }));
    const failed = await waitForJob(jobId);
    expect(failed.state).toBe('failed');
    expect(failed.error?.code).toBe('REGISTRY_NOT_FOUND');
    expect(failed.error?.message).toContain('library/busybox:missing');

    const retry = await call('PUT', `/admin/queues/api/queues/mirror/${jobId}/retry`, asAdmin);
    expect(retry.status).toBe(204);
    const again = await waitForJob(jobId);

    expect(again.state).toBe('failed');
    expect(Date.parse(again.processedAt!), 'the job ran again').toBeGreaterThan(Date.parse(failed.processedAt!));
    const after = await scrape(`${workerMetricsUrl}/metrics`);
    expect(delta(before, after, 'mirrorfleet_jobs_total', { queue: 'mirror', outcome: 'failed' })).toBe(2);
    expect(delta(before, after, 'mirrorfleet_job_failures_total', { queue: 'mirror', code: 'REGISTRY_NOT_FOUND' })).toBe(2);
  });

  test('invalid bodies get 400 naming the field', async () => {
    const unknown = await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, { ...mirrorRequest('web'), sourec: 'typo' });
    const invalid = await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, mirrorRequest('web', { source: 'Not/Valid:x:y' }));
    const oversized = await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, mirrorRequest('web', { cluster: 'x'.repeat(70_000) }));

    expect(unknown.status).toBe(400);
    expect(unknown.body.error.problems).toEqual([{ field: 'sourec', message: expect.stringMatching(/^unknown field; accepted fields: v, source, registry/) }]);
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.problems.map((problem: { field: string }) => problem.field)).toEqual(['source']);
    expect(oversized.status).toBe(400);
    expect(oversized.body.error.message).toMatch(/request body is larger than 65536 bytes/);
  });

  test('prototype key gets 400 naming it', async () => {
    const response = await fetch(`${api.url}/v1/queues/mirror/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...asEnqueuer },
      body: `{"__proto__": {"polluted": true}, "v": 1, "source": "${source.host}/library/busybox:1.38", "registry": "local", "cluster": "prod", "service": "web"}`,
    });
    const body = (await response.json()) as { error: { message: string } };

    expect(response.status).toBe(400);
    expect(body.error.message).toContain('or contains a __proto__ or constructor key');
  });

  /** Returns the number of jobs in the mirror and the cleanup queue, counting every state. */
  async function producerQueueCounts(): Promise<number[]> {
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queues = ['mirror', 'cleanup'].map((name) => new Queue(name, { connection, prefix: keyPrefix }));
    try {
      return await Promise.all(queues.map(async (queue) => Object.values(await queue.getJobCounts()).reduce((sum, count) => sum + count, 0)));
    } finally {
      await Promise.all(queues.map((queue) => queue.close()));
      connection.disconnect();
    }
  }

  test('undeclared registry gets 400 before any job', async () => {
    const countsBefore = await producerQueueCounts();
    const mirrorAnswer = await call('POST', '/v1/queues/mirror/jobs', asEnqueuer, mirrorRequest('web', { registry: 'undeclared' }));
    const sweepAnswer = await call('POST', '/v1/queues/cleanup/jobs', asAdmin, { v: 1, kind: 'sweep', registry: 'elsewhere.example' });

    expect(mirrorAnswer.status).toBe(400);
    expect(mirrorAnswer.body.error.code).toBe('INVALID_INPUT');
    expect(mirrorAnswer.body.error.message).toContain('registry "undeclared" is not a declared mirror registry; declared: local');
    expect(mirrorAnswer.body.error.problems.map((problem: { field: string }) => problem.field)).toEqual(['registry']);
    expect(sweepAnswer.status).toBe(400);
    expect(sweepAnswer.body.error.message).toContain('registry "elsewhere.example" is not a declared mirror registry');
    expect(await producerQueueCounts(), 'no job was added').toEqual(countsBefore);
  });

  test('health and readiness answer on the API and the worker', async () => {
    for (const base of [api.url, workerMetricsUrl]) {
      expect((await fetch(`${base}/healthz`)).status, `${base}/healthz`).toBe(200);
      expect((await fetch(`${base}/readyz`)).status, `${base}/readyz`).toBe(200);
    }
  });

  test('SIGTERM stops the API with exit 0', async () => {
    const code = await api.stop();

    expect(code).toBe(0);
    expect(api.output()).toContain('"msg":"api stopped"');
    expect(api.output(), 'tokens never reach the log').not.toContain(asEnqueuer.authorization.slice(7));
  });
});
