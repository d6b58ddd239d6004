/**
 * The zod schema of the configuration file, and the field schemas that the environment variable
 * parsers reuse. Every schema sets its error message to what it accepts, as a noun phrase such as
 * `an integer from 1 to 256`, so that `problemsFromIssues` can print `expected <message>`.
 *
 * The file is JSON. YAML is not supported yet because no YAML parser is a dependency of the project.
 */

import { isIP } from 'node:net';
import { z } from 'zod';
import { isCidr, isRedisUrl, isRepositoryPrefix, normaliseHost, MIRROR_REGISTRY_NAME } from './formats.ts';
import { REFERRER_FAILURE_POLICIES, REFERRER_SELECTIONS } from '../registry/referrers.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Scopes of API tokens: `enqueue` allows mirror and build jobs, `admin` allows cleanup jobs and the dashboard. */
export const API_SCOPES = ['enqueue', 'admin'] as const;
export type ApiScope = (typeof API_SCOPES)[number];

/** Providers of mirror registries, each an option of the `mirrorRegistries` union with keys of its own. */
export const MIRROR_REGISTRY_PROVIDERS = ['generic', 'ecr', 'artifact-registry', 'scaleway'] as const;

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;
const DAY_SECONDS = 86_400;

export const DEFAULTS = {
  redisUrl: 'redis://127.0.0.1:6379',
  keyPrefix: 'mirrorfleet',
  retentionSeconds: 365 * DAY_SECONDS,
  previousImageRetentionSeconds: DAY_SECONDS,
  maxDeletePercent: 50,
  sweepIntervalSeconds: 0,
  auditMaxEntries: 100_000,
  // Streamed in one PUT up to here: faster than chunks (a measured 1.06 s against 1.35 s for a 210 MB image,
  // docs/benchmarks.md) and never buffered; larger blobs go in resumable chunks.
  monolithicMaxBytes: 128 * MIB,
  chunkBytes: 16 * MIB,
  blobConcurrency: 4,
  workerConcurrency: 4,
  metricsPort: 9464,
  shutdownGraceSeconds: 30,
  jobTimeoutSeconds: 30 * 60,
  requestTimeoutSeconds: 60,
  logLevel: 'info',
  apiPort: 8080,
  referrers: 'all',
  referrerFailures: 'report',
} as const;

/**
 * Integer bounds. They catch typos and unit mistakes, such as a retention written in milliseconds or a
 * size in KiB, and are not tuned values.
 */
export const LIMITS = {
  retentionSeconds: { min: 0, max: 3650 * DAY_SECONDS },
  maxDeletePercent: { min: 0, max: 100 },
  sweepIntervalSeconds: { min: 0, max: 365 * DAY_SECONDS },
  auditMaxEntries: { min: 1000, max: 100_000_000 },
  monolithicMaxBytes: { min: 0, max: GIB },
  chunkBytes: { min: MIB, max: GIB },
  blobConcurrency: { min: 1, max: 64 },
  workerConcurrency: { min: 1, max: 256 },
  metricsPort: { min: 0, max: 65_535 },
  shutdownGraceSeconds: { min: 0, max: 3600 },
  jobTimeoutSeconds: { min: 1, max: 7 * DAY_SECONDS },
  requestTimeoutSeconds: { min: 1, max: 3600 },
  apiPort: { min: 1, max: 65_535 },
} as const;

/** Builders that build jobs can use; `auto` picks buildah when it is installed, else `docker buildx`. */
export const BUILDERS = ['auto', 'buildah', 'docker-buildx'] as const;
export type BuilderChoice = (typeof BUILDERS)[number];

/** Defaults and bounds of the `build` section. Bounds catch unit mistakes and are not tuned values. */
export const BUILD_DEFAULTS = {
  builder: 'auto',
  concurrency: 1,
  timeoutSeconds: 3600,
  cacheRetentionSeconds: 30 * DAY_SECONDS,
} as const;
export const BUILD_LIMITS = {
  concurrency: { min: 1, max: 64 },
  timeoutSeconds: { min: 10, max: 7 * DAY_SECONDS },
  cacheRetentionSeconds: { min: 0, max: 3650 * DAY_SECONDS },
} as const;

/**
 * Defaults and bounds of the `rateLimits` section. The budgets of single hosts default to built-in
 * values per registry (src/ratelimit/defaults.ts). Bounds catch unit mistakes and are not tuned values.
 */
export const RATE_LIMIT_DEFAULTS = { enabled: true, maxWaitSeconds: 900 } as const;
export const RATE_LIMIT_LIMITS = {
  maxWaitSeconds: { min: 1, max: 7 * DAY_SECONDS },
  requestsPerSecond: { min: 0.01, max: 100_000 },
  burst: { min: 1, max: 1_000_000 },
  maxConcurrent: { min: 1, max: 4096 },
  pullQuotaFloor: { min: 0, max: 1_000_000 },
  rateRecoveryPerSecond: { min: 0.001, max: 100_000 },
} as const;

// AES-256 and the HMAC both take 32-byte keys; base64 of 32 bytes is 43 characters and one '='.
const SECRET_KEY_PATTERN = /^[A-Za-z0-9+/]{43}=$/;
export const SECRET_KEY_EXPECTED = 'the base64 encoding of 32 random bytes (44 characters), such as the output of: openssl rand -base64 32';

export const HOST_EXPECTED =
  'a registry host as HOST or HOST:PORT without scheme or path, such as registry.example, 127.0.0.1:5000 or [::1]:5000';
export const PREFIX_EXPECTED =
  "lowercase repository path components separated by '/', such as mirror or team/mirror, without a leading or trailing '/'";
export const MIRROR_REGISTRY_NAME_EXPECTED = `a name matching ${MIRROR_REGISTRY_NAME.source.slice(1, -1)}`;
export const CIDR_EXPECTED = 'an IPv4 or IPv6 CIDR block such as 10.0.0.0/8 or fd00::/8';
// No ':' or ',', because they separate tokens and scopes in MIRRORFLEET_API_TOKENS. The 16-character floor rejects
// short, guessable tokens; it does not measure strength. Generate tokens with `openssl rand -hex 32`.
export const API_TOKEN_PATTERN = /^[A-Za-z0-9._~+/=-]{16,256}$/;
export const API_TOKEN_EXPECTED =
  '16 to 256 characters from A-Z, a-z, 0-9 and . _ ~ + / = -, such as the output of openssl rand -hex 32';
export const API_SCOPE_EXPECTED = `one of ${API_SCOPES.join(', ')}`;

function integer(range: { min: number; max: number }, unit: string) {
  const expected = `an integer from ${range.min} to ${range.max} (${unit})`;
  return z.int({ error: expected }).min(range.min, { error: expected }).max(range.max, { error: expected });
}

function decimal(range: { min: number; max: number }, unit: string) {
  const expected = `a number from ${range.min} to ${range.max} (${unit})`;
  return z.number({ error: expected }).min(range.min, { error: expected }).max(range.max, { error: expected });
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
  redisUrl: formattedString(
    'a URL starting with redis:// or rediss://, such as redis://127.0.0.1:6379, or a Sentinel or Cluster URL such as redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster or redis+cluster://10.0.0.1:6379,10.0.0.2:6379',
    (text) => (isRedisUrl(text) ? text : undefined),
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
  maxDeletePercent: integer(LIMITS.maxDeletePercent, 'percent of the recorded images one sweep may delete'),
  sweepIntervalSeconds: integer(LIMITS.sweepIntervalSeconds, 'seconds between scheduled sweeps; 0 turns them off'),
  auditMaxEntries: integer(LIMITS.auditMaxEntries, 'entries kept in the audit stream'),
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
  jobTimeoutSeconds: integer(LIMITS.jobTimeoutSeconds, 'seconds'),
  requestTimeoutSeconds: integer(LIMITS.requestTimeoutSeconds, 'seconds'),
  logLevel: z.enum(LOG_LEVELS, { error: `one of ${LOG_LEVELS.join(', ')}` }),
  apiPort: integer(LIMITS.apiPort, 'TCP port of the HTTP API'),
  apiToken: z.string({ error: API_TOKEN_EXPECTED }).regex(API_TOKEN_PATTERN, { error: API_TOKEN_EXPECTED }),
  apiScope: z.enum(API_SCOPES, { error: API_SCOPE_EXPECTED }),
  listenAddress: formattedString('an IP address to listen on, such as 0.0.0.0 (every IPv4 interface), 127.0.0.1 or ::', (text) =>
    isIP(text) === 0 ? undefined : text,
  ),
  builder: z.enum(BUILDERS, { error: `one of ${BUILDERS.join(', ')}` }),
  buildConcurrency: integer(BUILD_LIMITS.concurrency, 'builds at once per worker process'),
  buildTimeoutSeconds: integer(BUILD_LIMITS.timeoutSeconds, 'seconds'),
  cacheRetentionSeconds: integer(BUILD_LIMITS.cacheRetentionSeconds, 'seconds since the last build'),
  secretKey: z.string({ error: SECRET_KEY_EXPECTED }).regex(SECRET_KEY_PATTERN, { error: SECRET_KEY_EXPECTED }),
  referrers: z.enum(REFERRER_SELECTIONS, { error: `one of ${REFERRER_SELECTIONS.join(', ')}` }),
  referrerFailures: z.enum(REFERRER_FAILURE_POLICIES, { error: `one of ${REFERRER_FAILURE_POLICIES.join(', ')}` }),
  rateLimitMaxWaitSeconds: integer(RATE_LIMIT_LIMITS.maxWaitSeconds, 'seconds one registry request may wait for the request budget'),
};

/**
 * Request budget of one registry host, shared by the fleet. A key left out keeps the built-in value
 * for that host.
 */
const hostRateLimitKeys = {
  requestsPerSecond: decimal(RATE_LIMIT_LIMITS.requestsPerSecond, 'requests per second, fleet-wide').optional(),
  burst: integer(RATE_LIMIT_LIMITS.burst, 'requests sent at once after an idle time').optional(),
  maxConcurrent: integer(RATE_LIMIT_LIMITS.maxConcurrent, 'requests of each kind in flight at once, fleet-wide').optional(),
  pullQuotaFloor: integer(RATE_LIMIT_LIMITS.pullQuotaFloor, 'pulls left below which manifest GETs pause; 0 turns the pause off').optional(),
  minRequestsPerSecond: decimal(RATE_LIMIT_LIMITS.requestsPerSecond, 'lowest requests per second that 429 responses cut the rate to').optional(),
  rateRecoveryPerSecond: decimal(RATE_LIMIT_LIMITS.rateRecoveryPerSecond, 'requests per second regained per second of healthy responses').optional(),
};

/** The values of one host's request budget, as in `MIRRORFLEET_RATE_LIMITS`. */
export const hostRateLimitValuesSchema = strictObject(hostRateLimitKeys);

/** Returns a refinement that reports every entry whose host an earlier entry already has; `expected` names that entry's index. */
function rejectRepeatedHosts(expected: (firstIndex: number) => string) {
  return (entries: ReadonlyArray<{ host: string }>, context: z.RefinementCtx) => {
    const firstByHost = new Map<string, number>();
    entries.forEach((entry, index) => {
      const first = firstByHost.get(entry.host);
      if (first === undefined) {
        firstByHost.set(entry.host, index);
        return;
      }
      context.addIssue({ code: 'custom', path: [index, 'host'], input: entry.host, message: expected(first) });
    });
  };
}

const rateLimitsSchema = strictObject({
  enabled: z.boolean({ error: 'true or false' }).default(RATE_LIMIT_DEFAULTS.enabled),
  maxWaitSeconds: fields.rateLimitMaxWaitSeconds.default(RATE_LIMIT_DEFAULTS.maxWaitSeconds),
  hosts: z
    .array(strictObject({ host: fields.host, ...hostRateLimitKeys }), { error: 'an array of registry hosts with their request budgets' })
    .superRefine(rejectRepeatedHosts((first) => `a host not already listed at rateLimits.hosts.${first}`))
    .default([]),
});

/**
 * Cleanup keys that every kind of mirror registry has besides `retentionSeconds` (the retention after
 * any release other than a newer image of the same service replacing one).
 */
const mirrorRegistryCleanupKeys = {
  previousImageRetentionSeconds: fields.retentionSeconds.default(DEFAULTS.previousImageRetentionSeconds),
  maxDeletePercent: fields.maxDeletePercent.default(DEFAULTS.maxDeletePercent),
};

/**
 * Referrer keys that every kind of mirror registry has: which referrers mirror jobs copy when the job
 * does not set them, and whether a referrer the registry rejects fails the job. Absent keys stay absent, and
 * mirror jobs apply `DEFAULTS.referrers` and `DEFAULTS.referrerFailures`.
 */
const mirrorRegistryReferrerKeys = {
  referrers: fields.referrers.optional(),
  referrerFailures: fields.referrerFailures.optional(),
};

const genericMirrorRegistrySchema = strictObject({
  name: fields.mirrorRegistryName,
  provider: z.literal('generic'),
  host: fields.host,
  prefix: fields.prefix.default(''),
  retentionSeconds: fields.retentionSeconds.default(DEFAULTS.retentionSeconds),
  ...mirrorRegistryCleanupKeys,
  ...mirrorRegistryReferrerKeys,
});

// Cloud resource names, checked here so that a typo fails when the process starts, not at the first job.
// AWS account ids are 12 digits (ECR API reference, Repository.registryId: [0-9]{12}).
const AWS_ACCOUNT = /^[0-9]{12}$/;
// AWS region names such as us-east-1, us-gov-west-1 or cn-north-1.
const AWS_REGION = /^[a-z]{2}(?:-[a-z]+)+-[0-9]+$/;
// Google Cloud project ids: 6 to 30 lowercase letters, digits and hyphens, starting with a letter and not
// ending with a hyphen, optionally behind a `DOMAIN:` for domain-scoped projects.
const GCP_PROJECT = /^(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$/;
// Artifact Registry locations: a multi-region (us, europe, asia) or a region such as europe-west4.
const GCP_LOCATION = /^[a-z]+(?:-[a-z]+[0-9]+)?$/;
// NOTE: Artifact Registry repository ids are taken as lowercase letters, digits and inner hyphens, starting
// with a letter, at most 63 characters. The API returns its own message for an id it rejects.
const AR_REPOSITORY = /^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
// Scaleway regions such as fr-par, nl-ams or pl-waw, and UUIDs for project ids.
const SCW_REGION = /^[a-z]{2}-[a-z]{3}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function matching(pattern: RegExp, expected: string) {
  return z.string({ error: expected }).regex(pattern, { error: expected });
}

const apiEndpointExpected = 'an http:// or https:// URL without a path, such as https://api.example:8443';
const apiEndpoint = formattedString(apiEndpointExpected, (text) => {
  try {
    const url = new URL(text);
    const plain = (url.protocol === 'http:' || url.protocol === 'https:') && url.pathname === '/' && !url.search && !url.username;
    return plain ? url.origin : undefined;
  } catch {
    return undefined;
  }
});

const ecrMirrorRegistrySchema = strictObject({
  name: fields.mirrorRegistryName,
  provider: z.literal('ecr'),
  account: matching(AWS_ACCOUNT, 'a 12-digit AWS account id'),
  region: matching(AWS_REGION, 'an AWS region such as eu-west-1'),
  host: fields.host.optional(),
  apiEndpoint: apiEndpoint.optional(),
  prefix: fields.prefix.default(''),
  retentionSeconds: fields.retentionSeconds.default(DEFAULTS.retentionSeconds),
  ...mirrorRegistryCleanupKeys,
  ...mirrorRegistryReferrerKeys,
});

const artifactRegistryMirrorRegistrySchema = strictObject({
  name: fields.mirrorRegistryName,
  provider: z.literal('artifact-registry'),
  project: matching(GCP_PROJECT, 'a Google Cloud project id such as my-project-123, or DOMAIN:PROJECT'),
  location: matching(GCP_LOCATION, 'an Artifact Registry location such as europe-west4 or us'),
  repository: matching(AR_REPOSITORY, 'an Artifact Registry repository id: 1 to 63 lowercase letters, digits and inner hyphens, starting with a letter'),
  host: fields.host.optional(),
  apiEndpoint: apiEndpoint.optional(),
  credentialsFile: nonEmptyString('a path to a service-account key JSON file').optional(),
  prefix: fields.prefix.default(''),
  retentionSeconds: fields.retentionSeconds.default(DEFAULTS.retentionSeconds),
  ...mirrorRegistryCleanupKeys,
  ...mirrorRegistryReferrerKeys,
});

const scalewayMirrorRegistrySchema = strictObject({
  name: fields.mirrorRegistryName,
  provider: z.literal('scaleway'),
  region: matching(SCW_REGION, 'a Scaleway region such as fr-par'),
  projectId: matching(UUID, 'a Scaleway project id (a lowercase UUID)'),
  secretKey: z
    .union([strictObject({ env: matching(ENV_NAME, 'an environment variable name') }), strictObject({ file: nonEmptyString('a file path') })], {
      error: 'an object {"env": "NAME"} or {"file": "PATH"} naming where the secret key is read from',
    })
    .default({ env: 'SCW_SECRET_KEY' }),
  host: fields.host.optional(),
  apiEndpoint: apiEndpoint.optional(),
  prefix: fields.prefix.default(''),
  retentionSeconds: fields.retentionSeconds.default(DEFAULTS.retentionSeconds),
  ...mirrorRegistryCleanupKeys,
  ...mirrorRegistryReferrerKeys,
});

// A discriminated union on `provider`, so that each provider has keys of its own.
const mirrorRegistrySchema = z.discriminatedUnion('provider', [genericMirrorRegistrySchema, ecrMirrorRegistrySchema, artifactRegistryMirrorRegistrySchema, scalewayMirrorRegistrySchema], {
  error: `one of the providers ${MIRROR_REGISTRY_PROVIDERS.map((provider) => JSON.stringify(provider)).join(', ')}`,
});

/**
 * Fills in the registry host of a cloud mirror registry when the file leaves it out, and for Artifact
 * Registry puts `PROJECT/REPOSITORY` in front of the prefix, because that is where its images live.
 */
function withRegistryLocation(entry: z.output<typeof mirrorRegistrySchema>) {
  switch (entry.provider) {
    case 'generic':
      return entry;
    case 'ecr': {
      // Registry endpoints are ACCOUNT.dkr.ecr.REGION.amazonaws.com, with .amazonaws.com.cn in the China regions.
      const domain = entry.region.startsWith('cn-') ? 'amazonaws.com.cn' : 'amazonaws.com';
      return { ...entry, host: entry.host ?? `${entry.account}.dkr.ecr.${entry.region}.${domain}` };
    }
    case 'artifact-registry': {
      // A domain-scoped project DOMAIN:PROJECT appears as DOMAIN/PROJECT in image names.
      const base = `${entry.project.replace(':', '/')}/${entry.repository}`;
      return { ...entry, host: entry.host ?? `${entry.location}-docker.pkg.dev`, prefix: entry.prefix ? `${base}/${entry.prefix}` : base };
    }
    case 'scaleway':
      return { ...entry, host: entry.host ?? `rg.${entry.region}.scw.cloud` };
  }
}

const mirrorRegistriesSchema = z
  .array(mirrorRegistrySchema.transform(withRegistryLocation), { error: 'an array of mirror registries' })
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
  .superRefine(rejectRepeatedHosts((first) => `a host not already configured by registries.${first}`));

const apiTokensSchema = z
  .array(
    strictObject({
      token: fields.apiToken,
      scopes: z
        .array(fields.apiScope, { error: `an array of scopes, each ${API_SCOPE_EXPECTED}` })
        .min(1, { error: `at least one scope, each ${API_SCOPE_EXPECTED}` }),
    }),
    { error: 'an array of API tokens' },
  )
  .superRefine((tokens, context) => {
    // A token listed twice would leave its scopes ambiguous. The message names the entries, never the token.
    const firstByToken = new Map<string, number>();
    tokens.forEach((entry, index) => {
      const same = firstByToken.get(entry.token);
      if (same === undefined) firstByToken.set(entry.token, index);
      else {
        context.addIssue({
          code: 'custom',
          path: [index, 'token'],
          input: entry.token,
          message: `a token not already listed at api.tokens.${same}; list all of its scopes there`,
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
 *     { "name": "local", "provider": "generic", "host": "127.0.0.1:5001", "prefix": "mirror",
 *       "retentionSeconds": 31536000, "previousImageRetentionSeconds": 86400, "maxDeletePercent": 50 }
 *   ],
 *   "registries": [{ "host": "127.0.0.1:5001", "insecure": true, "username": "pusher", "password": "..." }],
 *   "allowNetworks": ["10.0.0.0/8", "fd00::/8"],
 *   "dockerConfigPath": "/home/app/.docker/config.json",
 *   "copy": { "monolithicMaxBytes": 134217728, "chunkBytes": 16777216, "blobConcurrency": 4 },
 *   "worker": { "concurrency": 4, "metricsPort": 9464, "shutdownGraceSeconds": 30 },
 *   "limits": { "jobTimeoutSeconds": 1800, "requestTimeoutSeconds": 60 },
 *   "build": { "builder": "auto", "concurrency": 1, "timeoutSeconds": 3600, "cacheRetentionSeconds": 2592000 },
 *   "secretKey": "<base64 of 32 random bytes>",
 *   "api": { "port": 8080, "tokens": [{ "token": "...", "scopes": ["enqueue"] }] },
 *   "cleanup": { "sweepIntervalSeconds": 0, "auditMaxEntries": 100000 },
 *   "rateLimits": { "enabled": true, "maxWaitSeconds": 900,
 *     "hosts": [{ "host": "docker.io", "requestsPerSecond": 5, "burst": 10, "maxConcurrent": 4, "pullQuotaFloor": 20 }] },
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
    metricsHost: fields.listenAddress.optional(),
    shutdownGraceSeconds: fields.shutdownGraceSeconds.default(DEFAULTS.shutdownGraceSeconds),
  }).prefault({}),
  limits: strictObject({
    jobTimeoutSeconds: fields.jobTimeoutSeconds.default(DEFAULTS.jobTimeoutSeconds),
    requestTimeoutSeconds: fields.requestTimeoutSeconds.default(DEFAULTS.requestTimeoutSeconds),
  }).prefault({}),
  build: strictObject({
    builder: fields.builder.default(BUILD_DEFAULTS.builder),
    concurrency: fields.buildConcurrency.default(BUILD_DEFAULTS.concurrency),
    timeoutSeconds: fields.buildTimeoutSeconds.default(BUILD_DEFAULTS.timeoutSeconds),
    cacheRetentionSeconds: fields.cacheRetentionSeconds.default(BUILD_DEFAULTS.cacheRetentionSeconds),
  }).prefault({}),
  secretKey: fields.secretKey.optional(),
  secretKeyPrevious: fields.secretKey.optional(),
  api: strictObject({
    port: fields.apiPort.default(DEFAULTS.apiPort),
    host: fields.listenAddress.optional(),
    tokens: apiTokensSchema.default([]),
  }).prefault({}),
  cleanup: strictObject({
    sweepIntervalSeconds: fields.sweepIntervalSeconds.default(DEFAULTS.sweepIntervalSeconds),
    auditMaxEntries: fields.auditMaxEntries.default(DEFAULTS.auditMaxEntries),
  }).prefault({}),
  // Absent unless set, so that configurations written before it compare equal; loadConfig fills no default.
  rateLimits: rateLimitsSchema.optional(),
  logLevel: fields.logLevel.default(DEFAULTS.logLevel),
});
