/**
 * The process configuration: one validated object, read from the JSON file named by
 * `MIRRORFLEET_CONFIG` (YAML is not supported yet) and then overridden by `MIRRORFLEET_*` environment
 * variables. An invalid configuration throws one `ConfigError` that lists every problem.
 *
 * Environment variables:
 * - `MIRRORFLEET_CONFIG`: path of the JSON file. Without it, the defaults and the variables below apply.
 * - `MIRRORFLEET_REDIS_URL`, `MIRRORFLEET_KEY_PREFIX`, `MIRRORFLEET_LOG_LEVEL`, `MIRRORFLEET_CONCURRENCY`
 *   (worker jobs at once), `MIRRORFLEET_METRICS_PORT`, `MIRRORFLEET_DOCKER_CONFIG` (path of a docker
 *   config.json): override the matching file key.
 * - `MIRRORFLEET_MIRROR_REGISTRIES`: `NAME=HOST[:PORT][/PREFIX],...` of generic mirror registries with the
 *   default cleanup settings. Replaces the file's `mirrorRegistries`.
 * - `MIRRORFLEET_INSECURE_REGISTRIES`: `HOST[:PORT],...` contacted over plain HTTP. Sets `insecure` on
 *   those hosts' `registries` entries, adding entries where needed.
 * - `MIRRORFLEET_ALLOW_NETWORKS`: `CIDR,...`. Replaces the file's `allowNetworks`.
 * - `MIRRORFLEET_JOB_TIMEOUT_SECONDS`, `MIRRORFLEET_REQUEST_TIMEOUT_SECONDS`: override
 *   `limits.jobTimeoutSeconds` and `limits.requestTimeoutSeconds`.
 * - `MIRRORFLEET_REGISTRY_CREDENTIALS`: `{"HOST": {"username": "...", "password": "..."}}`, merged into
 *   `registries`. These credentials replace the file's credentials for the same host.
 * - `MIRRORFLEET_API_TOKENS`: `TOKEN:SCOPE,...` bearer tokens of the HTTP API, scopes `enqueue` or `admin`.
 *   A token listed with several scopes gets all of them. Replaces the file's `api.tokens`.
 *   `MIRRORFLEET_API_PORT` and `MIRRORFLEET_API_HOST` override `api.port` and `api.host`.
 * - `MIRRORFLEET_METRICS_HOST`: overrides `worker.metricsHost`, the address of `/metrics` (default 0.0.0.0).
 * - `MIRRORFLEET_SECRET_KEY`, `MIRRORFLEET_SECRET_KEY_PREVIOUS`: override `secretKey` and
 *   `secretKeyPrevious`. `MIRRORFLEET_BUILDER`: overrides `build.builder`.
 * - `MIRRORFLEET_SWEEP_INTERVAL_SECONDS`: overrides `cleanup.sweepIntervalSeconds`.
 * - `MIRRORFLEET_RATE_LIMITS`: `{"HOST": {"requestsPerSecond": 5, "maxConcurrent": 4}}`, request budgets by
 *   registry host. Each replaces the file's `rateLimits.hosts` entry for the same host.
 */

import { InvalidInputError } from '../errors.ts';
import { referenceForMessage } from '../image-ref/message-value.ts';
import { registerSecret } from '../log/redact.ts';
import { CLUSTER_KEY_PREFIX_EXPECTED, hasHashTag, parseRedisUrl, redisUrlPassword } from '../redis/url.ts';
import { ENV, readEnvironment, type EnvironmentOverrides } from './env.ts';
import { readConfigFile } from './file.ts';
import { normaliseHost, splitLocation } from './formats.ts';
import { configErrorFor, invalidValue, type ConfigProblem } from './problems.ts';
import { configFileSchema, RATE_LIMIT_DEFAULTS, type BuilderChoice, type LogLevel } from './schema.ts';

export { configFileSchema, LOG_LEVELS, type LogLevel } from './schema.ts';
import type { ApiScope } from './schema.ts';
import type { ReferrerFailurePolicy, ReferrerSelection } from '../registry/referrers.ts';
export { API_SCOPES, type ApiScope } from './schema.ts';
export { ENV } from './env.ts';

/** A registry that receives the mirrored and built images: one of the provider kinds below. */
export type MirrorRegistryConfig = GenericMirrorRegistry | EcrMirrorRegistry | ArtifactRegistryMirrorRegistry | ScalewayMirrorRegistry;

/** Keys that every kind of mirror registry has. */
export interface MirrorRegistryBase {
  /** Name that jobs use to select this mirror registry: `[a-z0-9][a-z0-9-]{0,62}`. */
  name: string;
  /**
   * `host[:port]`, lowercase, without `:443`. Cloud providers derive it from their keys when the file
   * leaves it out. Setting it points the registry side elsewhere, such as at a VPC endpoint.
   */
  host: string;
  /**
   * Repository prefix such as `team/mirror`, or '' when there is none. No leading or trailing `/`. For
   * Artifact Registry it starts with `PROJECT/REPOSITORY`, followed by the prefix written in the file.
   */
  prefix: string;
  /**
   * Grace period in seconds between the last use of an image and its deletion, for images released
   * any way other than by a newer image of the same service (a deleted service, a reconcile). Default
   * one year.
   */
  retentionSeconds: number;
  /**
   * Grace period in seconds for a service's previous image, replaced by a newer one. Default 24 hours.
   * loadConfig always sets it; it is optional only so that configurations written in code may omit it.
   */
  previousImageRetentionSeconds?: number;
  /**
   * Most a sweep deletes in one run, in percent of the images the reference store records. Default 50.
   * loadConfig always sets it; it is optional only so that configurations written in code may omit it.
   */
  maxDeletePercent?: number;
  /**
   * Referrers (signatures, attestations, SBOMs) that mirror jobs copy when the job does not set them:
   * 'off', 'signatures' or 'all'. Default 'all'.
   */
  referrers?: ReferrerSelection;
  /**
   * Handling of a referrer this registry rejects: 'report' lists it in the job result and copies the
   * image without it, 'fail' fails the job. Default 'report'.
   */
  referrerFailures?: ReferrerFailurePolicy;
}

/** Any OCI distribution registry that creates repositories on push. */
export interface GenericMirrorRegistry extends MirrorRegistryBase {
  provider: 'generic';
}

/** AWS ECR. AWS credentials come from the SDK's default chain (environment, profile, web identity, instance role). */
export interface EcrMirrorRegistry extends MirrorRegistryBase {
  provider: 'ecr';
  /** 12-digit AWS account id that owns the registry. */
  account: string;
  region: string;
  /** Origin of the ECR API, such as a VPC endpoint; the SDK's regional endpoint when absent. */
  apiEndpoint?: string;
}

/** GCP Artifact Registry: one Docker-format repository, created when missing. */
export interface ArtifactRegistryMirrorRegistry extends MirrorRegistryBase {
  provider: 'artifact-registry';
  /** Project id, or `DOMAIN:PROJECT` for a domain-scoped project. */
  project: string;
  /** Location such as `europe-west4` or `us`. */
  location: string;
  /** Repository id inside the project and location. */
  repository: string;
  /** Origin of the Artifact Registry API, such as a Private Service Connect endpoint. */
  apiEndpoint?: string;
  /** Path of a service-account key JSON file; Application Default Credentials when absent. */
  credentialsFile?: string;
}

/** Scaleway Container Registry: one private namespace per repository namespace, created when missing. */
export interface ScalewayMirrorRegistry extends MirrorRegistryBase {
  provider: 'scaleway';
  region: string;
  /** Project (UUID) that owns the namespaces. */
  projectId: string;
  /** Source of the API secret key, read when the provider starts. Default `{ env: 'SCW_SECRET_KEY' }`. */
  secretKey: { env: string } | { file: string };
  /** Origin of the Scaleway API; `https://api.scaleway.com` when absent. */
  apiEndpoint?: string;
}

/** Connection settings for one registry host, used for sources and targets alike. */
export interface RegistryAccess {
  /** `host[:port]`, lowercase, without `:443`. */
  host: string;
  /** Plain HTTP instead of HTTPS. */
  insecure: boolean;
  /** Basic credentials, also used to obtain bearer tokens. Present together or not at all. */
  username?: string;
  password?: string;
}

/**
 * Request budget of one registry host, shared by the fleet through Redis. A key left out keeps the
 * built-in value for that host (src/ratelimit/defaults.ts).
 */
export interface HostRateLimit {
  /** `host[:port]`, lowercase, without `:443`. */
  host: string;
  /** Requests per second that the fleet sends to the host on average. */
  requestsPerSecond?: number;
  /** Requests the fleet may send at once after an idle time. */
  burst?: number;
  /** Requests of each kind (manifest reads, blob reads, uploads) in flight at once, fleet-wide. */
  maxConcurrent?: number;
  /** Manifest GETs pause while the host's `RateLimit-Remaining` is below this; 0 turns the pause off. */
  pullQuotaFloor?: number;
  /** Lowest rate that 429 responses cut the fleet's request rate to; default a tenth of `requestsPerSecond`. */
  minRequestsPerSecond?: number;
  /** Requests per second that a cut rate regains per second of healthy responses; default `requestsPerSecond` / 60. */
  rateRecoveryPerSecond?: number;
}

/** Fleet-wide politeness toward registries. */
export interface RateLimitsConfig {
  /** False sends registry requests without shared budgets, pauses or adaptive windows. Default true. */
  enabled: boolean;
  /** Seconds one registry request may wait for the budget before its job attempt fails, to be retried later. */
  maxWaitSeconds: number;
  hosts: HostRateLimit[];
}

/** A bearer token of the HTTP API and the scopes it grants. */
export interface ApiToken {
  token: string;
  scopes: ApiScope[];
}

export interface Config {
  /** Redis connection URL (`redis://` or `rediss://`) and the prefix of every key. */
  redis: { url: string; keyPrefix: string };
  mirrorRegistries: MirrorRegistryConfig[];
  /** Access settings per registry host. Hosts without an entry use HTTPS without credentials. */
  registries: RegistryAccess[];
  /** IPv4 and IPv6 CIDR blocks that registries may resolve to beyond the public internet. */
  allowNetworks: string[];
  /** Path of a docker config.json whose credentials and helpers apply to source registries. */
  dockerConfigPath?: string;
  /** Blob copy tuning: sizes in bytes, and how many blobs of one image are copied at once. */
  copy: { monolithicMaxBytes: number; chunkBytes: number; blobConcurrency: number };
  /** Jobs at once per worker process, metrics port (0 turns it off), and seconds to finish jobs on SIGTERM. */
  worker: { concurrency: number; metricsPort: number; shutdownGraceSeconds: number; metricsHost?: string };
  /**
   * Time limits in seconds: one job attempt (the job then fails with a TIMEOUT error and is not
   * retried), and one registry request, both its wait for response headers and each pause between two
   * body chunks.
   */
  limits: { jobTimeoutSeconds: number; requestTimeoutSeconds: number };
  /**
   * Build jobs: which builder, builds at once per worker process, the time limit of one build in
   * seconds, and how long a layer cache repository is kept after its last build, in seconds.
   */
  build: { builder: BuilderChoice; concurrency: number; timeoutSeconds: number; cacheRetentionSeconds: number };
  /**
   * Key of build variable values: base64 of 32 bytes. Producers encrypt with it, and workers decrypt with
   * it or with `secretKeyPrevious`, so that keys can be rotated. It also keys the HMAC of secret values in
   * build tags.
   */
  secretKey?: string;
  secretKeyPrevious?: string;
  /**
   * HTTP API: the port and address it listens on, and its bearer tokens. The API refuses to start without
   * tokens. `worker.metricsHost` and `api.host` are absent unless set; the servers then listen on 0.0.0.0.
   */
  api: { port: number; tokens: ApiToken[]; host?: string };
  /**
   * Cleanup: seconds between scheduled sweeps of every mirror registry (0 turns the schedule off), and
   * how many entries the audit stream of deletions keeps.
   */
  cleanup: { sweepIntervalSeconds: number; auditMaxEntries: number };
  /**
   * Request budgets per registry host. Absent unless the file or `MIRRORFLEET_RATE_LIMITS` sets it.
   * Without it, the budgets are enabled with the built-in values per host.
   */
  rateLimits?: RateLimitsConfig;
  logLevel: LogLevel;
}

/**
 * Loads and validates the configuration from `env`: the file named by `MIRRORFLEET_CONFIG`, if set, then
 * the `MIRRORFLEET_*` overrides. Registers every password with the log redactor.
 * Throws `ConfigError` listing all problems, including a file that is missing or not valid JSON.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const configFile = env[ENV.configFile];
  const problems: ConfigProblem[] = [];

  let base: Config | undefined;
  let fileHasContentProblems = false;
  if (configFile !== undefined) {
    const file = readConfigFile(configFile);
    problems.push(...file.readProblems, ...file.contentProblems);
    fileHasContentProblems = file.contentProblems.length > 0;
    base = file.config;
  }

  const environment = readEnvironment(env);
  problems.push(...environment.problems);

  // Name the file in the message only when keys inside it are at fault, because a read problem names it already.
  if (problems.length > 0) throw configErrorFor(problems, fileHasContentProblems ? configFile : undefined);

  const config = applyOverrides(base ?? configFileSchema.parse({}), environment.overrides);
  registerSecrets(config);
  // The URL and the prefix may come from different sources, so they are checked together after merging.
  if (parseRedisUrl(config.redis.url)?.kind === 'cluster' && !hasHashTag(config.redis.keyPrefix)) {
    throw configErrorFor([invalidValue('redis.keyPrefix', config.redis.keyPrefix, CLUSTER_KEY_PREFIX_EXPECTED)], undefined);
  }
  return config;
}

function applyOverrides(base: Config, overrides: EnvironmentOverrides): Config {
  const registries = base.registries.map((entry) => ({ ...entry }));
  const entryFor = (host: string): RegistryAccess => {
    let entry = registries.find((candidate) => candidate.host === host);
    if (entry === undefined) {
      entry = { host, insecure: false };
      registries.push(entry);
    }
    return entry;
  };
  for (const [host, credentials] of overrides.credentials ?? []) {
    const entry = entryFor(host);
    entry.username = credentials.username;
    entry.password = credentials.password;
  }
  for (const host of overrides.insecureHosts ?? []) entryFor(host).insecure = true;

  const dockerConfigPath = overrides.dockerConfigPath ?? base.dockerConfigPath;
  const rateLimits = mergeRateLimits(base.rateLimits, overrides.rateLimits);
  return {
    redis: {
      url: overrides.redisUrl ?? base.redis.url,
      keyPrefix: overrides.keyPrefix ?? base.redis.keyPrefix,
    },
    mirrorRegistries: overrides.mirrorRegistries ?? base.mirrorRegistries,
    registries,
    allowNetworks: overrides.allowNetworks ?? base.allowNetworks,
    ...(dockerConfigPath === undefined ? {} : { dockerConfigPath }),
    copy: { ...base.copy },
    worker: {
      concurrency: overrides.concurrency ?? base.worker.concurrency,
      metricsPort: overrides.metricsPort ?? base.worker.metricsPort,
      shutdownGraceSeconds: base.worker.shutdownGraceSeconds,
      ...optionalHost('metricsHost', overrides.metricsHost ?? base.worker.metricsHost),
    },
    limits: {
      jobTimeoutSeconds: overrides.jobTimeoutSeconds ?? base.limits.jobTimeoutSeconds,
      requestTimeoutSeconds: overrides.requestTimeoutSeconds ?? base.limits.requestTimeoutSeconds,
    },
    build: { ...base.build, builder: overrides.builder ?? base.build.builder },
    ...secretKeys(overrides.secretKey ?? base.secretKey, overrides.secretKeyPrevious ?? base.secretKeyPrevious),
    api: {
      port: overrides.apiPort ?? base.api.port,
      ...optionalHost('host', overrides.apiHost ?? base.api.host),
      tokens: (overrides.apiTokens ?? base.api.tokens).map((entry) => ({ token: entry.token, scopes: [...entry.scopes] })),
    },
    cleanup: {
      sweepIntervalSeconds: overrides.sweepIntervalSeconds ?? base.cleanup.sweepIntervalSeconds,
      auditMaxEntries: base.cleanup.auditMaxEntries,
    },
    ...(rateLimits === undefined ? {} : { rateLimits }),
    logLevel: overrides.logLevel ?? base.logLevel,
  };
}

/** Puts the hosts of `MIRRORFLEET_RATE_LIMITS` in place of the file's entries for the same hosts. */
function mergeRateLimits(base: RateLimitsConfig | undefined, hosts: HostRateLimit[] | undefined): RateLimitsConfig | undefined {
  if (hosts === undefined) return base && { ...base, hosts: base.hosts.map((entry) => ({ ...entry })) };
  const section = base ?? { enabled: RATE_LIMIT_DEFAULTS.enabled, maxWaitSeconds: RATE_LIMIT_DEFAULTS.maxWaitSeconds, hosts: [] };
  const replaced = new Set(hosts.map((entry) => entry.host));
  return { ...section, hosts: [...section.hosts.filter((entry) => !replaced.has(entry.host)), ...hosts.map((entry) => ({ ...entry }))] };
}

/** Returns the keys that are set, so that unset keys stay absent from the configuration. */
function secretKeys(secretKey: string | undefined, secretKeyPrevious: string | undefined): Pick<Config, 'secretKey' | 'secretKeyPrevious'> {
  return {
    ...(secretKey === undefined ? {} : { secretKey }),
    ...(secretKeyPrevious === undefined ? {} : { secretKeyPrevious }),
  };
}

/** Returns `{ [key]: host }`, or `{}` when no listen address is set, so the key stays absent. */
function optionalHost<Key extends string>(key: Key, host: string | undefined): { [K in Key]?: string } {
  return (host === undefined ? {} : { [key]: host }) as { [K in Key]?: string };
}

function registerSecrets(config: Config): void {
  for (const entry of config.registries) registerSecret(entry.password);
  for (const entry of config.api.tokens) registerSecret(entry.token);
  registerSecret(config.secretKey);
  registerSecret(config.secretKeyPrevious);

  // The Redis password is percent-encoded in the URL, so register it both as written and decoded.
  const redisPassword = redisUrlPassword(config.redis.url);
  if (redisPassword !== undefined) {
    registerSecret(redisPassword);
    registerSecret(encodeURIComponent(redisPassword));
  }
}

/**
 * Finds a mirror registry by name, or else by location `HOST[:PORT][/PREFIX]`. The host is compared in
 * lowercase and without `:443`, and the prefix must equal the declared one exactly, so a location inside a
 * mirror registry's prefix does not match it. A `HOST[:PORT]` alone matches the registry declared there
 * without a prefix, else the only registry declared on that host. When several share the host, it
 * matches none, and `requireMirrorRegistry` lists them. A name wins over a host that is spelt the same.
 */
export function findMirrorRegistry(config: Config, nameOrLocation: string): MirrorRegistryConfig | undefined {
  const byName = config.mirrorRegistries.find((registry) => registry.name === nameOrLocation);
  if (byName !== undefined) return byName;

  const location = splitLocation(nameOrLocation);
  const host = normaliseHost(location.host);
  // `host/` names no prefix, and is not the same location as `host`.
  if (host === undefined || location.prefix === '') return undefined;
  const onHost = config.mirrorRegistries.filter((registry) => registry.host === host);
  const prefix = location.prefix ?? '';
  const exact = onHost.find((registry) => registry.prefix === prefix);
  if (exact !== undefined || location.prefix !== undefined) return exact;
  return onHost.length === 1 ? onHost[0] : undefined;
}

/**
 * Returns the mirror registry that `nameOrLocation` names, as `findMirrorRegistry` finds it. Throws
 * InvalidInputError when there is none, listing the declared registries, or when a `HOST[:PORT]` alone
 * matches several, listing those. Only declared registries are accepted, so that a producer that can
 * enqueue cannot make the fleet push to a registry of its choosing.
 */
export function requireMirrorRegistry(config: Config, nameOrLocation: string): MirrorRegistryConfig {
  const registry = findMirrorRegistry(config, nameOrLocation);
  if (registry !== undefined) return registry;

  const maskedInput = referenceForMessage(nameOrLocation);
  const location = splitLocation(nameOrLocation);
  const host = location.prefix === undefined ? normaliseHost(location.host) : undefined;
  const onHost = config.mirrorRegistries.filter((entry) => entry.host === host);
  if (onHost.length > 1) {
    throw new InvalidInputError(
      `registry "${maskedInput}" matches ${onHost.length} declared mirror registries on that host: ${onHost.map(describeMirrorRegistry).join(', ')}; ` +
        'give the name or the whole HOST[:PORT]/PREFIX of one of them',
    );
  }
  const declared = config.mirrorRegistries.map(describeMirrorRegistry).join(', ');
  throw new InvalidInputError(
    `registry "${maskedInput}" is not a declared mirror registry; declared: ${declared || 'none'} ` +
      '(declare it in MIRRORFLEET_MIRROR_REGISTRIES or the configuration file)',
  );
}

/** Formats a declared mirror registry for messages: `NAME (HOST[/PREFIX])`. */
function describeMirrorRegistry(registry: MirrorRegistryConfig): string {
  return `${registry.name} (${registry.host}${registry.prefix ? `/${registry.prefix}` : ''})`;
}

/**
 * Returns the access settings for `host`, compared in lowercase and without `:443`. A host without an
 * entry gets `{ host, insecure: false }`, with `host` normalised in the same way.
 */
export function registryAccess(config: Config, host: string): RegistryAccess {
  const normalised = normaliseHost(host) ?? host.toLowerCase();
  return config.registries.find((entry) => entry.host === normalised) ?? { host: normalised, insecure: false };
}
