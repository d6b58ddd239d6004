/**
 * The zod schema of the configuration file, and the field schemas that the environment variable
 * parsers reuse. Every schema sets its error message to what it accepts, as a noun phrase such as
 * `an integer from 1 to 256`, so that `problemsFromIssues` can print `expected <message>`.
 *
 * The file is JSON. YAML is not supported yet because no YAML parser is a dependency of the project.
 */

import { z } from 'zod';
import { isCidr, isRedisUrl, isRepositoryPrefix, normaliseHost, MIRROR_REGISTRY_NAME } from './formats.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Providers of mirror registries. ECR, Artifact Registry and Scaleway will join as options of the union. */
export const MIRROR_REGISTRY_PROVIDERS = ['generic'] as const;

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;
const DAY_SECONDS = 86_400;

export const DEFAULTS = {
  redisUrl: 'redis://127.0.0.1:6379',
  keyPrefix: 'mirrorfleet',
  retentionSeconds: 7 * DAY_SECONDS,
  monolithicMaxBytes: 16 * MIB,
  chunkBytes: 16 * MIB,
  blobConcurrency: 4,
  workerConcurrency: 4,
  metricsPort: 9464,
  shutdownGraceSeconds: 30,
  logLevel: 'info',
} as const;

/**
 * Integer bounds. They catch typos and unit mistakes, such as a retention written in milliseconds or a
 * size in KiB, and are not tuned values.
 */
export const LIMITS = {
  retentionSeconds: { min: 0, max: 3650 * DAY_SECONDS },
  monolithicMaxBytes: { min: 0, max: GIB },
  chunkBytes: { min: MIB, max: GIB },
  blobConcurrency: { min: 1, max: 64 },
  workerConcurrency: { min: 1, max: 256 },
  metricsPort: { min: 0, max: 65_535 },
  shutdownGraceSeconds: { min: 0, max: 3600 },
} as const;

export const HOST_EXPECTED =
  'a registry host as HOST or HOST:PORT without scheme or path, such as registry.example, 127.0.0.1:5000 or [::1]:5000';
export const PREFIX_EXPECTED =
  "lowercase repository path components separated by '/', such as mirror or team/mirror, without a leading or trailing '/'";
export const MIRROR_REGISTRY_NAME_EXPECTED = `a name matching ${MIRROR_REGISTRY_NAME.source.slice(1, -1)}`;
export const CIDR_EXPECTED = 'an IPv4 or IPv6 CIDR block such as 10.0.0.0/8 or fd00::/8';

function integer(range: { min: number; max: number }, unit: string) {
  const expected = `an integer from ${range.min} to ${range.max} (${unit})`;
  return z.int({ error: expected }).min(range.min, { error: expected }).max(range.max, { error: expected });
}

function nonEmptyString(expected: string) {
  return z.string({ error: expected }).min(1, { error: expected });
}

/** A string checked, and possibly rewritten, by `normalise`, which returns `undefined` when it rejects. */
function formattedString(expected: string, normalise: (text: string) => string | undefined) {
  return z.string({ error: expected }).transform((text, context) => {
    const normalised = normalise(text);
    if (normalised === undefined) {
      context.addIssue({ code: 'custom', message: expected, input: text });
      return z.NEVER;
    }
    return normalised;
  });
}

/** Builds a strict object schema. An unknown key is an error that lists the known keys, which catches misspelt keys. */
function strictObject<Shape extends z.core.$ZodLooseShape>(shape: Shape) {
  const keys = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys' ? `one of the keys ${keys}` : `an object with the keys ${keys}`,
  });
}

/** Field schemas, shared by the file schema and the environment variable parsers. */
export const fields = {
  redisUrl: formattedString('a URL starting with redis:// or rediss://, such as redis://127.0.0.1:6379', (text) =>
    isRedisUrl(text) ? text : undefined,
  ),
  // Curly braces allow a Redis Cluster hash tag such as {mirrorfleet}, which keeps the queue keys in one slot.
  keyPrefix: z
    .string({ error: '1 to 64 characters from A-Z, a-z, 0-9 and _ . : { } -' })
    .regex(/^[A-Za-z0-9_.:{}-]{1,64}$/, { error: '1 to 64 characters from A-Z, a-z, 0-9 and _ . : { } -' }),
  mirrorRegistryName: z
    .string({ error: MIRROR_REGISTRY_NAME_EXPECTED })
    .regex(MIRROR_REGISTRY_NAME, { error: MIRROR_REGISTRY_NAME_EXPECTED }),
  host: formattedString(HOST_EXPECTED, normaliseHost),
  prefix: formattedString(`'' or ${PREFIX_EXPECTED}`, (text) =>
    text === '' || isRepositoryPrefix(text) ? text : undefined,
  ),
  retentionSeconds: integer(LIMITS.retentionSeconds, 'seconds'),
  cidr: formattedString(CIDR_EXPECTED, (text) => (isCidr(text) ? text : undefined)),
  username: nonEmptyString('a non-empty string'),
  password: nonEmptyString('a non-empty string'),
  dockerConfigPath: nonEmptyString('a non-empty path to a docker config.json file'),
  monolithicMaxBytes: integer(LIMITS.monolithicMaxBytes, 'bytes'),
  chunkBytes: integer(LIMITS.chunkBytes, 'bytes'),
  blobConcurrency: integer(LIMITS.blobConcurrency, 'blobs copied at once per image'),
  workerConcurrency: integer(LIMITS.workerConcurrency, 'jobs at once per worker process'),
  metricsPort: integer(LIMITS.metricsPort, '0 turns the metrics endpoint off'),
  shutdownGraceSeconds: integer(LIMITS.shutdownGraceSeconds, 'seconds'),
  logLevel: z.enum(LOG_LEVELS, { error: `one of ${LOG_LEVELS.join(', ')}` }),
};

const genericMirrorRegistrySchema = strictObject({
  name: fields.mirrorRegistryName,
  provider: z.literal('generic'),
  host: fields.host,
  prefix: fields.prefix.default(''),
  retentionSeconds: fields.retentionSeconds.default(DEFAULTS.retentionSeconds),
});

// A discriminated union on `provider`, so that each provider gets its own keys when it is added.
const mirrorRegistrySchema = z.discriminatedUnion('provider', [genericMirrorRegistrySchema], {
  error: `one of the providers ${MIRROR_REGISTRY_PROVIDERS.map((provider) => JSON.stringify(provider)).join(', ')}`,
});

const mirrorRegistriesSchema = z
  .array(mirrorRegistrySchema, { error: 'an array of mirror registries' })
  .superRefine((registries, context) => {
    // Names and locations must be unique, or a job could not name its mirror registry unambiguously.
    const firstByName = new Map<string, number>();
    const firstByLocation = new Map<string, number>();
    registries.forEach((registry, index) => {
      const sameName = firstByName.get(registry.name);
      if (sameName === undefined) firstByName.set(registry.name, index);
      else {
        context.addIssue({
          code: 'custom',
          path: [index, 'name'],
          input: registry.name,
          message: `a name not already used by mirrorRegistries.${sameName}`,
        });
      }

      const location = `${registry.host}/${registry.prefix}`;
      const sameLocation = firstByLocation.get(location);
      if (sameLocation === undefined) firstByLocation.set(location, index);
      else {
        context.addIssue({
          code: 'custom',
          path: [index, 'host'],
          input: registry.host,
          message: `a host and prefix not already used by mirrorRegistries.${sameLocation}`,
        });
      }
    });
  });

const registryAccessSchema = strictObject({
  host: fields.host,
  insecure: z.boolean({ error: 'true or false' }).default(false),
  username: fields.username.optional(),
  password: fields.password.optional(),
}).superRefine((entry, context) => {
  if (entry.username !== undefined && entry.password === undefined) {
    context.addIssue({ code: 'custom', path: ['password'], input: undefined, message: 'a password with the username' });
  }
  if (entry.password !== undefined && entry.username === undefined) {
    context.addIssue({ code: 'custom', path: ['username'], input: undefined, message: 'a username with the password' });
  }
});

const registriesSchema = z
  .array(registryAccessSchema, { error: 'an array of registry access settings' })
  .superRefine((entries, context) => {
    const firstByHost = new Map<string, number>();
    entries.forEach((entry, index) => {
      const sameHost = firstByHost.get(entry.host);
      if (sameHost === undefined) firstByHost.set(entry.host, index);
      else {
        context.addIssue({
          code: 'custom',
          path: [index, 'host'],
          input: entry.host,
          message: `a host not already configured by registries.${sameHost}`,
        });
      }
    });
  });

/** Credentials for one registry host, as in `MIRRORFLEET_REGISTRY_CREDENTIALS`. Both keys are required. */
export const credentialsSchema = strictObject({
  username: fields.username,
  password: fields.password,
});

/**
 * Schema of the configuration file. Every key is optional and has a default, and unknown keys are errors.
 *
 * ```json
 * {
 *   "redis": { "url": "redis://127.0.0.1:6379", "keyPrefix": "mirrorfleet" },
 *   "mirrorRegistries": [
 *     { "name": "local", "provider": "generic", "host": "127.0.0.1:5001", "prefix": "mirror", "retentionSeconds": 604800 }
 *   ],
 *   "registries": [{ "host": "127.0.0.1:5001", "insecure": true, "username": "pusher", "password": "..." }],
 *   "allowNetworks": ["10.0.0.0/8", "fd00::/8"],
 *   "dockerConfigPath": "/home/app/.docker/config.json",
 *   "copy": { "monolithicMaxBytes": 16777216, "chunkBytes": 16777216, "blobConcurrency": 4 },
 *   "worker": { "concurrency": 4, "metricsPort": 9464, "shutdownGraceSeconds": 30 },
 *   "logLevel": "info"
 * }
 * ```
 */
export const configFileSchema = strictObject({
  redis: strictObject({
    url: fields.redisUrl.default(DEFAULTS.redisUrl),
    keyPrefix: fields.keyPrefix.default(DEFAULTS.keyPrefix),
  }).prefault({}),
  mirrorRegistries: mirrorRegistriesSchema.default([]),
  registries: registriesSchema.default([]),
  allowNetworks: z.array(fields.cidr, { error: `an array of ${CIDR_EXPECTED}` }).default([]),
  dockerConfigPath: fields.dockerConfigPath.optional(),
  copy: strictObject({
    monolithicMaxBytes: fields.monolithicMaxBytes.default(DEFAULTS.monolithicMaxBytes),
    chunkBytes: fields.chunkBytes.default(DEFAULTS.chunkBytes),
    blobConcurrency: fields.blobConcurrency.default(DEFAULTS.blobConcurrency),
  }).prefault({}),
  worker: strictObject({
    concurrency: fields.workerConcurrency.default(DEFAULTS.workerConcurrency),
    metricsPort: fields.metricsPort.default(DEFAULTS.metricsPort),
    shutdownGraceSeconds: fields.shutdownGraceSeconds.default(DEFAULTS.shutdownGraceSeconds),
  }).prefault({}),
  logLevel: fields.logLevel.default(DEFAULTS.logLevel),
});
