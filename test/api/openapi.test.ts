import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { BUILD_QUEUE } from '../../queues/build.ts';
import { CLEANUP_QUEUE } from '../../queues/cleanup.ts';
import { MIRROR_QUEUE } from '../../queues/mirror.ts';
import { QUEUE_ROUTES, type QueueRoute } from '../../src/api/queue-routes.ts';
import { startApi, type RunningApi } from '../../src/api/server.ts';
import { openApiText } from '../../src/cli/commands/api.ts';
import { loadConfig, type Config } from '../../src/config/config.ts';
import { createLogger } from '../../src/log/logger.ts';
import { startWorkers, type RunningWorkers } from '../../workers/run.ts';
import { seedLayout } from '../harness/fixtures.ts';
import { freePort } from '../harness/processes.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { fleetEnv, PROJECT_ROOT } from '../harness/workers.ts';
import { API_TOKENS, asAdmin, asEnqueuer, schemaFromDocument } from './helpers.ts';

/**
 * The OpenAPI document: it is current in the repository, it follows the OpenAPI 3.1 structure, and every
 * operation responds with each status it documents, with a body that matches the documented schema.
 */

const documentText = readFileSync(join(PROJECT_ROOT, 'docs', 'openapi.json'), 'utf8');
const document = JSON.parse(documentText) as OpenApiDocument;

// The parts of OpenAPI 3.1.0 (https://spec.openapis.org/oas/v3.1.0) that this document uses, strictly:
// an unknown key fails, as does a missing required one.
const jsonSchema = z.union([z.boolean(), z.record(z.string(), z.unknown())]);
const mediaType = z.strictObject({ schema: jsonSchema, example: z.unknown().optional() });
const mediaTypeName = z.string().regex(/^[a-z]+\/[a-z0-9.+-]+$/);
const header = z.strictObject({ description: z.string().optional(), required: z.boolean().optional(), schema: jsonSchema });
const response = z.strictObject({
  description: z.string().min(1),
  headers: z.record(z.string(), header).optional(),
  content: z.record(mediaTypeName, mediaType).optional(),
});
const parameter = z
  .strictObject({
    name: z.string().min(1),
    in: z.enum(['query', 'header', 'path', 'cookie']),
    description: z.string().optional(),
    required: z.boolean().optional(),
    schema: jsonSchema,
  })
  .refine((value) => value.in !== 'path' || value.required === true, { message: 'a path parameter must be required' });
const operation = z.strictObject({
  operationId: z.string().regex(/^[A-Za-z][A-Za-z0-9]*$/),
  summary: z.string().min(1),
  description: z.string().optional(),
  tags: z.array(z.string()).min(1),
  security: z.array(z.record(z.string(), z.array(z.string()))),
  parameters: z.array(parameter).optional(),
  requestBody: z.strictObject({ required: z.boolean().optional(), content: z.record(mediaTypeName, mediaType) }).optional(),
  responses: z.record(z.string().regex(/^([1-5][0-9][0-9]|[1-5]XX|default)$/), response).refine((value) => Object.keys(value).length > 0),
});
const pathItem = z.strictObject({
  get: operation.optional(),
  put: operation.optional(),
  post: operation.optional(),
  delete: operation.optional(),
  patch: operation.optional(),
});
const openApiSchema = z.strictObject({
  openapi: z.string().regex(/^3\.1\.\d+$/),
  info: z.strictObject({ title: z.string().min(1), version: z.string().min(1), description: z.string().optional() }),
  tags: z.array(z.strictObject({ name: z.string(), description: z.string().optional() })),
  paths: z.record(z.string().regex(/^\//), pathItem),
  components: z.strictObject({
    schemas: z.record(z.string().regex(/^[A-Za-z0-9._-]+$/), jsonSchema),
    securitySchemes: z.record(
      z.string(),
      z.strictObject({ type: z.enum(['http', 'apiKey', 'oauth2', 'openIdConnect', 'mutualTLS']), scheme: z.string().optional(), description: z.string().optional() }),
    ),
  }),
});

type OpenApiDocument = z.output<typeof openApiSchema>;
type Operation = z.output<typeof operation>;

function operations(): { method: string; path: string; operation: Operation }[] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, value]) => ({ method: method.toUpperCase(), path, operation: value as Operation })),
  );
}

describe('OpenAPI document', () => {
  it('is current in docs/openapi.json', () => {
    expect(documentText, 'regenerate with: node bin/mirrorfleet.js api --print-openapi > docs/openapi.json').toBe(openApiText());
  });

  it('follows the OpenAPI 3.1 structure', () => {
    const result = openApiSchema.safeParse(document);

    expect(result.error?.issues ?? []).toEqual([]);
  });

  it('has unique operation ids and declared tags', () => {
    const ids = operations().map((entry) => entry.operation.operationId);
    const tags = new Set(document.tags.map((tag) => tag.name));

    expect(new Set(ids).size).toBe(ids.length);
    for (const entry of operations()) for (const tag of entry.operation.tags) expect(tags, entry.operation.operationId).toContain(tag);
  });

  it('declares every path parameter', () => {
    for (const { path, operation: entry } of operations()) {
      const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => match[1]).sort();
      const declared = (entry.parameters ?? []).filter((value) => value.in === 'path').map((value) => value.name).sort();
      expect(declared, entry.operationId).toEqual(inPath);
    }
  });

  it('names only declared security schemes', () => {
    for (const { operation: entry } of operations()) {
      for (const requirement of entry.security) {
        for (const scheme of Object.keys(requirement)) expect(Object.keys(document.components.securitySchemes), entry.operationId).toContain(scheme);
      }
    }
  });

  it('resolves every reference', () => {
    const references = [...documentText.matchAll(/"\$ref": "([^"]+)"/g)].map((match) => match[1]!);

    expect(references.length).toBeGreaterThan(0);
    for (const reference of references) {
      expect(reference).toMatch(/^#\/components\/schemas\//);
      expect(Object.keys(document.components.schemas), reference).toContain(reference.split('/').at(-1));
    }
  });

  it('shows examples that the queues accept', () => {
    for (const route of QUEUE_ROUTES) {
      const body = document.paths[`/v1/queues/${route.queue}/jobs`]!.post!.requestBody!.content['application/json']!;

      expect(route.requestSchema.safeParse(body.example).error?.issues ?? [], route.queue).toEqual([]);
      expect(schemaFromDocument(document, body.schema).safeParse(body.example).success, route.queue).toBe(true);
    }
  });

  it('has component schemas that compile', () => {
    for (const [name, schema] of Object.entries(document.components.schemas)) {
      expect(() => schemaFromDocument(document, schema), name).not.toThrow();
    }
  });
});

let redis: TestRedis;
let source: TestRegistry;
let mirror: TestRegistry;
let config: Config;
let api: RunningApi;
let workers: RunningWorkers;
let connection: Redis;
let redisProxy: { port: number; cut(): Promise<void> };
let unreadyApi: RunningApi;
/** Per queue: a finished job, and a job that stays unfinished. */
const finishedJobs: Record<string, string> = {};
const pendingJobs: Record<string, string> = {};

/**
 * Per queue, a valid request that needs no network beyond the test's loopback services: a mirror of a
 * local image, a build that the test fails by hand (no build worker runs), a dry-run sweep.
 */
function testRequest(queue: string): Record<string, unknown> {
  switch (queue) {
    case MIRROR_QUEUE:
      return { v: 1, source: `${source.host}/library/busybox:1.38`, registry: 'local', cluster: 'prod', service: 'openapi' };
    case BUILD_QUEUE:
      return { v: 1, git: { url: '/srv/git/shop', commit: 'a'.repeat(40) }, registry: 'local', cluster: 'prod', service: 'shop' };
    case CLEANUP_QUEUE:
      return { v: 1, kind: 'sweep', registry: 'local', dryRun: true };
    default:
      throw new Error(`no test request for queue ${queue}; add one here`);
  }
}

/** Forwards TCP connections to Redis until `cut`, which drops them and stops listening. */
async function startProxy(target: URL): Promise<{ port: number; cut(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  let closed: Promise<unknown> | undefined;
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    cut: async () => {
      closed ??= new Promise((resolve) => server.close(resolve));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

async function post(route: QueueRoute, body: unknown): Promise<string> {
  const response = await fetch(`${api.url}/v1/queues/${route.queue}/jobs`, {
    method: 'POST',
    headers: { ...tokenFor(route), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(response.status, await response.clone().text()).toBe(202);
  return ((await response.json()) as { jobId: string }).jobId;
}

function tokenFor(route: QueueRoute): Record<string, string> {
  return route.scope === 'admin' ? asAdmin : asEnqueuer;
}

function otherToken(route: QueueRoute): Record<string, string> {
  return route.scope === 'admin' ? asEnqueuer : asAdmin;
}

beforeAll(async () => {
  [redis, source, mirror] = await Promise.all([startRedis(), startRegistry(), startRegistry()]);
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'library/busybox', '1.38');
  const keyPrefix = `openapi-${randomBytes(4).toString('hex')}`;
  config = loadConfig(
    fleetEnv({
      redisUrl: redis.url,
      keyPrefix,
      mirrorRegistries: [`local=${mirror.host}`],
      insecureRegistries: [source.host, mirror.host],
      extra: { MIRRORFLEET_API_TOKENS: API_TOKENS },
    }),
  );
  const logger = createLogger('silent');
  // No build worker: builds need a builder, so the build job below is failed by hand.
  [api, workers] = await Promise.all([
    startApi({ config, logger, host: '127.0.0.1', port: 0 }),
    startWorkers({ config, queues: [MIRROR_QUEUE, CLEANUP_QUEUE], concurrency: 2, metricsPort: 0, logger }),
  ]);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });

  for (const route of QUEUE_ROUTES) {
    const jobId = await post(route, testRequest(route.queue));
    if (route.queue === BUILD_QUEUE) {
      // Manual processing, as BullMQ documents it: take the job and fail it for good.
      const manual = new Worker(BUILD_QUEUE, null, { connection, prefix: keyPrefix });
      const job = await manual.getNextJob('openapi-test');
      expect(job?.id).toBe(jobId);
      await job!.moveToFailed(new UnrecoverableError('BUILD_FAILED: the test failed this build by hand'), 'openapi-test', false);
      await manual.close();
    }
    const waited = await fetch(`${api.url}/v1/queues/${route.queue}/jobs/${jobId}/wait?timeoutSeconds=30`, { headers: tokenFor(route) });
    expect(waited.status, `${route.queue}: ${await waited.clone().text()}`).toBe(200);
    finishedJobs[route.queue] = jobId;

    // A job that stays unfinished: delayed by an hour, so no worker takes it.
    const queue = new Queue(route.queue, { connection, prefix: keyPrefix, defaultJobOptions: route.jobOptions });
    const queued = route.toJob(route.requestSchema.parse(testRequest(route.queue)), { config });
    pendingJobs[route.queue] = (await queue.add(queued.name, queued.data, { delay: 3_600_000 })).id!;
    await queue.close();
  }

  redisProxy = await startProxy(new URL(redis.url));
  const proxiedUrl = new URL(redis.url);
  proxiedUrl.hostname = '127.0.0.1';
  proxiedUrl.port = String(redisProxy.port);
  unreadyApi = await startApi({ config: { ...config, redis: { ...config.redis, url: proxiedUrl.toString() } }, logger, host: '127.0.0.1', port: await freePort() });
});

afterAll(async () => {
  await Promise.all([api?.close(), unreadyApi?.close(), workers?.stop(5_000)]);
  await redisProxy?.cut();
  connection?.disconnect();
  await Promise.all([redis?.stop(), source?.stop(), mirror?.stop()]);
});

interface Call {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** Base URL when it is not the main API's. */
  base?: () => string;
}

/** Returns, keyed `operationId status`, the request that makes each documented operation respond with that status. */
function cases(): Record<string, () => Call | Promise<Call>> {
  const table: Record<string, () => Call | Promise<Call>> = {
    'getHealth 200': () => ({ method: 'GET', path: '/healthz' }),
    'getReadiness 200': () => ({ method: 'GET', path: '/readyz' }),
    'getReadiness 503': async () => {
      await redisProxy.cut();
      return { method: 'GET', path: '/readyz', base: () => unreadyApi.url };
    },
    'getMetrics 200': () => ({ method: 'GET', path: '/metrics' }),
    'getOpenApiDocument 200': () => ({ method: 'GET', path: '/openapi.json' }),
    'getDashboard 200': () => ({ method: 'GET', path: '/admin/queues', headers: asAdmin }),
    'getDashboard 401': () => ({ method: 'GET', path: '/admin/queues' }),
    'getDashboard 403': () => ({ method: 'GET', path: '/admin/queues', headers: asEnqueuer }),
  };
  for (const route of QUEUE_ROUTES) {
    const base = `/v1/queues/${route.queue}/jobs`;
    const allowed = tokenFor(route);
    const denied = otherToken(route);
    const json = { 'content-type': 'application/json' };
    const body = JSON.stringify(testRequest(route.queue));
    const finished = () => finishedJobs[route.queue]!;
    const enqueue = `enqueue${route.title}Job`;
    const get = `get${route.title}Job`;
    const wait = `waitFor${route.title}Job`;
    Object.assign(table, {
      [`${enqueue} 202`]: () => ({ method: 'POST', path: base, headers: { ...allowed, ...json }, body }),
      [`${enqueue} 400`]: () => ({ method: 'POST', path: base, headers: { ...allowed, ...json }, body: JSON.stringify({ ...testRequest(route.queue), unknown: 1 }) }),
      [`${enqueue} 401`]: () => ({ method: 'POST', path: base, headers: json, body }),
      [`${enqueue} 403`]: () => ({ method: 'POST', path: base, headers: { ...denied, ...json }, body }),
      [`${enqueue} 415`]: () => ({ method: 'POST', path: base, headers: { ...allowed, 'content-type': 'application/xml' }, body: '<job/>' }),
      [`${get} 200`]: () => ({ method: 'GET', path: `${base}/${finished()}`, headers: allowed }),
      [`${get} 400`]: () => ({ method: 'GET', path: `${base}/-bad`, headers: allowed }),
      [`${get} 401`]: () => ({ method: 'GET', path: `${base}/${finished()}` }),
      [`${get} 403`]: () => ({ method: 'GET', path: `${base}/${finished()}`, headers: denied }),
      [`${get} 404`]: () => ({ method: 'GET', path: `${base}/999999`, headers: allowed }),
      [`${wait} 200`]: () => ({ method: 'GET', path: `${base}/${finished()}/wait`, headers: allowed }),
      [`${wait} 202`]: () => ({ method: 'GET', path: `${base}/${pendingJobs[route.queue]}/wait?timeoutSeconds=0`, headers: allowed }),
      [`${wait} 400`]: () => ({ method: 'GET', path: `${base}/${finished()}/wait?timeoutSeconds=51`, headers: allowed }),
      [`${wait} 401`]: () => ({ method: 'GET', path: `${base}/${finished()}/wait` }),
      [`${wait} 403`]: () => ({ method: 'GET', path: `${base}/${finished()}/wait`, headers: denied }),
      [`${wait} 404`]: () => ({ method: 'GET', path: `${base}/999999/wait?timeoutSeconds=1`, headers: allowed }),
    });
  }
  return table;
}

describe('served API', () => {
  it('serves the document it keeps', async () => {
    const served = await (await fetch(`${api.url}/openapi.json`)).json();

    expect(served).toEqual(document);
  });

  it('serves exactly the documented routes', () => {
    const documented = operations().map((entry) => `${entry.method} ${entry.path.replace(/\{(\w+)\}/g, ':$1')}`).sort();
    // bull-board serves its assets and its own API below the documented dashboard page.
    const served = api.servedRoutes
      .filter((route) => !route.url.startsWith('/admin/queues/') || route.url === '/admin/queues/')
      .map((route) => `${route.method} ${route.url.replace(/\/$/, '')}`);

    expect([...new Set(served)].sort()).toEqual(documented);
  });

  it('responds with every documented status', async () => {
    const table = cases();
    const documented = operations().flatMap((entry) => Object.keys(entry.operation.responses).map((status) => ({ ...entry, status })));
    expect(Object.keys(table).sort(), 'every documented status has a case, and every case is documented').toEqual(
      documented.map((entry) => `${entry.operation.operationId} ${entry.status}`).sort(),
    );

    // The 503 case cuts a Redis connection, so it runs last.
    const ordered = [...documented].sort((a, b) => Number(a.status === '503') - Number(b.status === '503'));
    for (const { method, operation: entry, status } of ordered) {
      const name = `${entry.operationId} ${status}`;
      const call = await table[name]!();
      expect(call.method, name).toBe(method);
      const response = await fetch(`${call.base?.() ?? api.url}${call.path}`, {
        method: call.method,
        headers: call.headers ?? {},
        ...(call.body === undefined ? {} : { body: call.body }),
      });
      const text = await response.text();

      expect(response.status, `${name}: ${text.slice(0, 300)}`).toBe(Number(status));
      const documentedResponse = entry.responses[status]!;
      for (const headerName of Object.keys(documentedResponse.headers ?? {})) {
        expect(response.headers.get(headerName), `${name} header ${headerName}`).toBeTruthy();
      }
      const [mediaTypeName, media] = Object.entries(documentedResponse.content ?? {})[0] ?? [];
      if (mediaTypeName === undefined) continue;
      expect(response.headers.get('content-type'), name).toMatch(new RegExp(`^${mediaTypeName.replace('+', '\\+')}`));
      if (mediaTypeName === 'application/json') {
        const parsed = schemaFromDocument(document, media!.schema).safeParse(JSON.parse(text));
        expect(parsed.error?.issues ?? [], `${name} body matches its schema`).toEqual([]);
      }
    }
  });
});
