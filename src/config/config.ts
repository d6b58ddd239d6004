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
 *   default retention. Replaces the file's `mirrorRegistries`.
 * - `MIRRORFLEET_INSECURE_REGISTRIES`: `HOST[:PORT],...` contacted over plain HTTP. Sets `insecure` on
 *   those hosts' `registries` entries, adding entries where needed.
 * - `MIRRORFLEET_ALLOW_NETWORKS`: `CIDR,...`. Replaces the file's `allowNetworks`.
 * - `MIRRORFLEET_REGISTRY_CREDENTIALS`: `{"HOST": {"username": "...", "password": "..."}}`, merged into
 *   `registries`. These credentials replace the file's credentials for the same host.
 */

import { registerSecret } from '../log/redact.ts';
import { ENV, readEnvironment, type EnvironmentOverrides } from './env.ts';
import { readConfigFile } from './file.ts';
import { normaliseHost, splitLocation } from './formats.ts';
import { configErrorFor, type ConfigProblem } from './problems.ts';
import { configFileSchema, type LogLevel } from './schema.ts';

export { configFileSchema, LOG_LEVELS, type LogLevel } from './schema.ts';
export { ENV } from './env.ts';

/** A registry that receives the mirrored and built images. */
export interface MirrorRegistryConfig {
  /** Name that jobs use to select this mirror registry: `[a-z0-9][a-z0-9-]{0,62}`. */
  name: string;
  /** Only 'generic' so far. The file schema is a union on this key so that providers can be added. */
  provider: 'generic';
  /** `host[:port]`, lowercase, without `:443`. */
  host: string;
  /** Repository prefix such as `team/mirror`, or '' when there is none. No leading or trailing `/`. */
  prefix: string;
  /** Grace period in seconds between the last use of an image and its deletion. Default 7 days. */
  retentionSeconds: number;
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
  worker: { concurrency: number; metricsPort: number; shutdownGraceSeconds: number };
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
    },
    logLevel: overrides.logLevel ?? base.logLevel,
  };
}

function registerSecrets(config: Config): void {
  for (const entry of config.registries) registerSecret(entry.password);

  // The Redis password is percent-encoded in the URL, so register it both as written and decoded.
  const redisPassword = new URL(config.redis.url).password;
  if (redisPassword !== '') {
    registerSecret(redisPassword);
    registerSecret(decodeURIComponent(redisPassword));
  }
}

/**
 * Finds a mirror registry by name, or else by location `HOST[:PORT][/PREFIX]`. The host is compared in
 * lowercase and without `:443`, and the prefix must equal the declared one exactly, so a location inside a
 * mirror registry's prefix does not match it. A name wins over a host that is spelt the same.
 */
export function findMirrorRegistry(config: Config, nameOrLocation: string): MirrorRegistryConfig | undefined {
  const byName = config.mirrorRegistries.find((registry) => registry.name === nameOrLocation);
  if (byName !== undefined) return byName;

  const location = splitLocation(nameOrLocation);
  const host = normaliseHost(location.host);
  // `host/` names no prefix, and is not the same location as `host`.
  if (host === undefined || location.prefix === '') return undefined;
  const prefix = location.prefix ?? '';
  return config.mirrorRegistries.find((registry) => registry.host === host && registry.prefix === prefix);
}

/**
 * Returns the access settings for `host`, compared in lowercase and without `:443`. A host without an
 * entry gets `{ host, insecure: false }`, with `host` normalised in the same way.
 */
export function registryAccess(config: Config, host: string): RegistryAccess {
  const normalised = normaliseHost(host) ?? host.toLowerCase();
  return config.registries.find((entry) => entry.host === normalised) ?? { host: normalised, insecure: false };
}
