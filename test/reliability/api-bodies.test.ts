import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { QUEUE_ROUTES, type QueueRoute } from '../../src/api/queue-routes.ts';
import { startApi, type RunningApi } from '../../src/api/server.ts';
import { bodyLimitOf } from '../../src/api/operations.ts';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/log/logger.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { fleetEnv } from '../harness/workers.ts';
import { API_TOKENS, asAdmin, asEnqueuer } from '../api/helpers.ts';
import { soakCount } from './helpers.ts';

/**
 * Generated hostile bodies thrown at every enqueue route of a running API: text that is not JSON, JSON
 * that is not an object, fields of the wrong type, unknown fields, bodies over the size limit and the
 * wrong content type. Each gets 400 (415 for the content type) naming the field at fault, never a 5xx,
 * and afterwards the API still responds to /healthz and enqueues a valid request.
 */

const BODIES = soakCount(60, 600);

let redis: TestRedis;
let api: RunningApi;
let log = '';

beforeAll(async () => {
  redis = await startRedis();
  const config = loadConfig(
    fleetEnv({
      redisUrl: redis.url,
      keyPrefix: `bodies-${randomBytes(4).toString('hex')}`,
      mirrorRegistries: ['local=127.0.0.1:5999'],
      insecureRegistries: ['127.0.0.1:5999'],
      extra: { MIRRORFLEET_API_TOKENS: API_TOKENS, MIRRORFLEET_SECRET_KEY: Buffer.alloc(32, 7).toString('base64') },
    }),
  );
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      log += chunk.toString('utf8');
      done();
    },
  });
  api = await startApi({ config, logger: createLogger('debug', destination), host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await api?.close();
  await redis?.stop();
});

interface Answer {
  status: number;
  body: { error?: { code: string; message: string; problems?: { field: string; message: string }[] } };
}

function tokenFor(route: QueueRoute): Record<string, string> {
  return route.scope === 'admin' ? asAdmin : asEnqueuer;
}

async function post(route: QueueRoute, body: string, contentType = 'application/json'): Promise<Answer> {
  const response = await fetch(`${api.url}/v1/queues/${route.queue}/jobs`, {
    method: 'POST',
    headers: { ...tokenFor(route), 'content-type': contentType },
    body,
  });
  const text = await response.text();
  return { status: response.status, body: response.headers.get('content-type')?.includes('application/json') ? JSON.parse(text) : { error: { code: 'TEXT', message: text } } };
}

function fieldsOf(answer: Answer): string[] {
  return (answer.body.error?.problems ?? []).map((problem) => problem.field);
}

/** Describes a response for an assertion message: the status and the body. */
function show(answer: Answer): string {
  return `${answer.status} ${JSON.stringify(answer.body).slice(0, 500)}`;
}

/** Returns the JSON type of a value, with arrays and null distinguished from objects. */
function jsonType(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'array' : typeof value;
}

/** Text that JSON.parse rejects: random text, and valid JSON cut short or with a stray character. */
const notJson = fc
  .oneof(
    fc.string({ maxLength: 200 }),
    fc.jsonValue({ maxDepth: 3 }).chain((value) => {
      const text = JSON.stringify(value);
      return fc.nat({ max: Math.max(0, text.length - 1) }).map((cut) => text.slice(0, cut));
    }),
    fc.jsonValue({ maxDepth: 3 }).map((value) => `${JSON.stringify(value)},}`),
  )
  .filter((text) => {
    try {
      JSON.parse(text);
      return false;
    } catch {
      return true;
    }
  });

/** JSON documents that are valid but not an object. */
const notObject = fc.jsonValue({ maxDepth: 3 }).filter((value) => jsonType(value) !== 'object');

type Body = Record<string, unknown>;

/** Valid bodies besides each route's example, so that nested fields and every cleanup kind are fuzzed too. */
const MORE_BODIES: Record<string, Body[]> = {
  mirror: [{ v: 1, source: 'registry.example/app:1', registry: 'local', mode: 'cluster', cluster: 'prod', service: 'web', platforms: ['linux/amd64'] }],
  build: [
    {
      v: 1,
      git: { url: '/srv/git/shop', commit: '0123456789abcdef0123456789abcdef01234567' },
      registry: 'local',
      cluster: 'prod',
      service: 'shop',
      platforms: ['linux/amd64'],
      force: true,
      variables: [{ name: 'API_TOKEN', value: 'token', secret: true }],
    },
  ],
  cleanup: [
    { v: 1, kind: 'release', cluster: 'prod', service: 'web' },
    { v: 1, kind: 'reconcile', cluster: 'prod', images: [{ reference: 'registry.example/app:1', service: 'web' }] },
  ],
};

function validBodies(route: QueueRoute): Body[] {
  return [route.example as Body, ...(MORE_BODIES[route.queue] ?? [])];
}

/** Paths of every value inside `value`, array items by index, parents before their children. */
function pathsOf(value: unknown, prefix: string[] = []): string[][] {
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([key, child]) => [[...prefix, key], ...pathsOf(child, [...prefix, key])]);
}

function valueAt(body: Body, path: readonly string[]): unknown {
  return path.reduce<unknown>((current, key) => (current as Record<string, unknown>)[key], body);
}

/**
 * Returns a copy of `body` with `value` at `path`. defineProperty makes a key such as "__proto__" an own
 * property, as JSON.parse makes it, where an assignment would set the prototype.
 */
function withValue(body: Body, path: readonly string[], value: unknown): Body {
  const copy = structuredClone(body);
  const parent = valueAt(copy, path.slice(0, -1)) as object;
  Object.defineProperty(parent, path.at(-1)!, { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

/** Generates a valid body with one field, at any depth, replaced by a value of another JSON type. */
function wrongType(route: QueueRoute): fc.Arbitrary<{ field: string; body: Body }> {
  const cases = validBodies(route).flatMap((body) => pathsOf(body).map((path) => ({ body, path })));
  return fc.constantFrom(...cases).chain(({ body, path }) =>
    fc
      .jsonValue({ maxDepth: 2 })
      .filter((value) => value !== null && jsonType(value) !== jsonType(valueAt(body, path)))
      .map((value) => ({ field: path.join('.'), body: withValue(body, path, value) })),
  );
}

/** Generates a valid body with one key added that no schema accepts, at the top or inside any object. */
function unknownField(route: QueueRoute): fc.Arbitrary<{ field: string; body: Body }> {
  const objects = validBodies(route).flatMap((body) =>
    [[], ...pathsOf(body)].filter((path) => jsonType(valueAt(body, path)) === 'object').map((path) => ({ body, path })),
  );
  const key = fc.oneof(fc.constantFrom('sourec', 'Registry', 'kinds', 'secrets', 'toString', 'x y'), fc.string({ minLength: 1, maxLength: 20 }).map((text) => `zz${text}`));
  return fc.tuple(fc.constantFrom(...objects), key, fc.jsonValue({ maxDepth: 2 })).map(([{ body, path }, name, value]) => ({
    field: [...path, name].join('.'),
    body: withValue(body, [...path, name], value),
  }));
}

/** True when a key "__proto__", or a key "constructor" whose object has "prototype", is anywhere in `value`. */
function hasPrototypeKey(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  for (const [key, child] of Object.entries(value)) {
    if (key === '__proto__') return true;
    if (key === 'constructor' && typeof child === 'object' && child !== null && Object.hasOwn(child, 'prototype')) return true;
    if (hasPrototypeKey(child)) return true;
  }
  return false;
}

/** Sends a health check and each valid request, which the API must still accept. */
async function expectServing(route: QueueRoute): Promise<void> {
  const health = await fetch(`${api.url}/healthz`);
  expect(health.status, '/healthz').toBe(200);
  for (const body of validBodies(route)) {
    const valid = await post(route, JSON.stringify(body));
    expect(valid.status, `valid ${route.queue} request ${JSON.stringify(body)}: ${show(valid)}`).toBe(202);
  }
}

for (const route of QUEUE_ROUTES) {
  test(`${route.queue} route rejects hostile bodies`, async () => {
    for (const text of fc.sample(notJson, BODIES)) {
      const answer = await post(route, text);
      expect(answer.status, `body ${JSON.stringify(text)}: ${show(answer)}`).toBe(400);
      expect(fieldsOf(answer), `body ${JSON.stringify(text)}`).toEqual(['body']);
    }

    for (const value of fc.sample(notObject, BODIES)) {
      const answer = await post(route, JSON.stringify(value));
      expect(answer.status, `body ${JSON.stringify(value)}: ${show(answer)}`).toBe(400);
      expect(answer.body.error?.code).toBe('INVALID_INPUT');
    }

    for (const { field, body } of fc.sample(wrongType(route), BODIES)) {
      const answer = await post(route, JSON.stringify(body));
      expect(answer.status, `${field}=${JSON.stringify(body[field])}: ${show(answer)}`).toBe(400);
      // See the unknown fields below for why a prototype key is named as the body.
      const expected = hasPrototypeKey(body) ? 'body' : field;
      const named = fieldsOf(answer).filter((name) => name === expected || name.startsWith(`${expected}.`));
      expect(named, `${field}=${JSON.stringify(body[field])}: ${show(answer)}`).not.toEqual([]);
    }

    for (const { field, body } of fc.sample(unknownField(route), BODIES)) {
      const answer = await post(route, JSON.stringify(body));
      expect(answer.status, `unknown ${field}: ${show(answer)}`).toBe(400);
      // fastify's JSON parser rejects a "__proto__" key, or "constructor" holding "prototype", anywhere in the
      // body before validation runs, so such a body is named as a whole.
      const expected = hasPrototypeKey(body) ? 'body' : field;
      expect(fieldsOf(answer), `unknown ${field}: ${show(answer)}`).toContain(expected);
    }

    await expectServing(route);
  });

  test(`${route.queue} route rejects huge and mistyped bodies`, async () => {
    const example = route.example as Record<string, unknown>;
    const firstString = Object.keys(example).find((field) => typeof example[field] === 'string')!;
    // Job requests are limited to 64 KiB; a queue whose requests list many items has its own limit.
    const limit = bodyLimitOf(route);
    const huge = [
      JSON.stringify({ ...example, [firstString]: 'x'.repeat(limit) }),
      JSON.stringify({ ...example, padding: 'y'.repeat(limit + 1024 * 1024) }),
      '['.repeat(limit + 1),
    ];
    for (const body of huge) {
      const answer = await post(route, body);
      expect(answer.status, `${body.length} bytes: ${show(answer)}`).toBe(400);
      expect(fieldsOf(answer)).toEqual(['body']);
      expect(answer.body.error?.message).toContain(`larger than ${limit} bytes`);
    }

    const polluting = await post(route, JSON.stringify(route.example).replace('{', '{"__proto__":{"polluted":true},'));
    expect(polluting.status, `__proto__ key: ${show(polluting)}`).toBe(400);
    expect((({}) as Record<string, unknown>).polluted, 'Object.prototype of the API process').toBeUndefined();

    const nested = await post(route, '['.repeat(5_000) + ']'.repeat(5_000));
    expect(nested.status, `deeply nested array: ${show(nested)}`).toBe(400);

    for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
      const answer = await post(route, JSON.stringify(route.example), contentType);
      expect(answer.status, `${contentType}: ${show(answer)}`).toBe(415);
      expect(answer.body.error?.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    }

    await expectServing(route);
  });
}

test('no request ended in a server error', () => {
  expect(log).toContain('"msg":"api started"');
  expect(log).not.toContain('api request failed');
  expect(log).not.toMatch(/"level":50/);
});
