import fc from 'fast-check';

/**
 * Generators of mirror job payloads: valid ones, and mutations that each break one field (a wrong type,
 * an invalid value, a missing field, an unknown key, a huge string). Shared by the schema properties and
 * by the worker test that enqueues hostile payloads.
 */

export const FIELDS = ['v', 'source', 'registry', 'mode', 'cluster', 'service', 'platforms'] as const;
export type Field = (typeof FIELDS)[number];
export type Payload = Record<string, unknown>;

const id = fc.stringMatching(/^[a-z0-9]{1,10}(?:[._-][a-z0-9]{1,10}){0,3}$/);
// No "." in components, because a first component with one would be read as a registry host.
const component = fc.stringMatching(/^[a-z0-9]{1,8}(?:[_-][a-z0-9]{1,8}){0,2}$/);
const source = fc
  .tuple(
    fc.constantFrom('', 'registry.example/', '127.0.0.1:5000/', 'ghcr.io/'),
    fc.array(component, { minLength: 1, maxLength: 3 }),
    fc.option(fc.stringMatching(/^\w[\w.-]{0,20}$/)),
  )
  .map(([host, parts, tag]) => `${host}${parts.join('/')}${tag === null ? '' : `:${tag}`}`);
const platform = fc.constantFrom('linux/amd64', 'linux/arm64', 'linux/arm64/v8', 'linux/arm/v7', 'windows/amd64', 'linux/s390x');

export const validPayload: fc.Arbitrary<Payload> = fc
  .record(
    {
      v: fc.constant(1),
      source,
      registry: fc.constantFrom('local', 'registry.example:5000/mirror'),
      mode: fc.constantFrom('service', 'cluster'),
      cluster: id,
      service: id,
      platforms: fc.uniqueArray(platform, { maxLength: 4 }),
    },
    { requiredKeys: ['v', 'source', 'registry', 'cluster', 'service'] },
  )
  .map((payload) => ({ ...payload }));

/** Values of a JSON payload, of every type. */
const jsonValue = fc.jsonValue({ maxDepth: 3 });

/** A value of the wrong type, or an invalid value of the right type, for each field. */
const invalidValue: Record<Field, fc.Arbitrary<unknown>> = {
  v: jsonValue.filter((value) => value !== 1),
  source: fc.oneof(
    jsonValue.filter((value) => typeof value !== 'string'),
    fc.constantFrom('', 'UPPER/case', 'https://registry.example/app', 'app:tag;rm -rf /', 'app@sha256:short', 'app:$(id)', '../../etc/passwd', 'a b'),
    fc.string({ minLength: 1_025, maxLength: 5_000 }),
  ),
  registry: fc.oneof(jsonValue.filter((value) => typeof value !== 'string'), fc.constant(''), fc.string({ minLength: 513, maxLength: 5_000 })),
  mode: jsonValue.filter((value) => value !== 'service' && value !== 'cluster'),
  cluster: fc.oneof(
    jsonValue.filter((value) => typeof value !== 'string'),
    fc.constantFrom('', 'Prod', 'prod eu', 'prod--eu', '-prod', 'prod/eu', 'a'.repeat(64), 'prod;reboot'),
  ),
  service: fc.oneof(jsonValue.filter((value) => typeof value !== 'string' && value !== null), fc.constantFrom('', 'Web', 'web app', '_web', 'web$(id)')),
  platforms: fc.oneof(
    jsonValue.filter((value) => !Array.isArray(value)),
    fc.array(fc.oneof(jsonValue.filter((value) => typeof value !== 'string'), fc.constantFrom('linux', 'linux/', '/amd64', 'linux/amd64/v8/extra', 'LINUX/AMD64 ')), {
      minLength: 1,
      maxLength: 3,
    }),
    fc.array(platform, { minLength: 65, maxLength: 70 }),
  ),
};

export type Mutation = { kind: 'invalid'; field: Field; value: unknown } | { kind: 'missing'; field: Field } | { kind: 'unknown'; key: string; value: unknown };

const REQUIRED: Field[] = ['v', 'source', 'registry', 'cluster'];

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constantFrom(...FIELDS).chain((field) => invalidValue[field].map((value): Mutation => ({ kind: 'invalid', field, value }))),
  fc.constantFrom(...REQUIRED).map((field): Mutation => ({ kind: 'missing', field })),
  fc
    .tuple(fc.string({ minLength: 1, maxLength: 30 }).filter((key) => !(FIELDS as readonly string[]).includes(key)), jsonValue)
    .map(([key, value]): Mutation => ({ kind: 'unknown', key, value })),
);

export function apply(payload: Payload, change: Mutation): Payload {
  const changed: Payload = { ...payload };
  if (change.kind === 'missing') delete changed[change.field];
  // defineProperty, so that a key such as "__proto__" becomes an own property as JSON.parse makes it.
  else if (change.kind === 'invalid') Object.defineProperty(changed, change.field, { value: change.value, enumerable: true, writable: true, configurable: true });
  else Object.defineProperty(changed, change.key, { value: change.value, enumerable: true, writable: true, configurable: true });
  return changed;
}
