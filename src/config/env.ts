/**
 * Parsers for the `MIRRORFLEET_*` environment variables that override the configuration file. Each
 * parser validates with the same field schemas as the file, and reports problems under the variable's
 * name. Other `MIRRORFLEET_*` variables are left alone, because other parts of the project read their own.
 */

import type { z } from 'zod';
import { MIRROR_REGISTRY_NAME, normaliseHost, isRepositoryPrefix, splitLocation } from './formats.ts';
import {
  describeValue,
  dottedPath,
  invalidValue,
  isRecord,
  problemsFromIssues,
  REDACTED,
  type ConfigProblem,
} from './problems.ts';
import {
  CIDR_EXPECTED,
  credentialsSchema,
  DEFAULTS,
  fields,
  HOST_EXPECTED,
  MIRROR_REGISTRY_NAME_EXPECTED,
  PREFIX_EXPECTED,
  type BuilderChoice,
  type LogLevel,
} from './schema.ts';
import type { MirrorRegistryConfig } from './config.ts';
import type { ApiToken, HostRateLimit } from './config.ts';
import { hostRateLimitValuesSchema } from './schema.ts';
import { API_SCOPE_EXPECTED, API_SCOPES, API_TOKEN_EXPECTED, API_TOKEN_PATTERN, type ApiScope } from './schema.ts';

/** Names of the environment variables that this module reads. */
export const ENV = {
  configFile: 'MIRRORFLEET_CONFIG',
  redisUrl: 'MIRRORFLEET_REDIS_URL',
  keyPrefix: 'MIRRORFLEET_KEY_PREFIX',
  logLevel: 'MIRRORFLEET_LOG_LEVEL',
  concurrency: 'MIRRORFLEET_CONCURRENCY',
  metricsPort: 'MIRRORFLEET_METRICS_PORT',
  dockerConfig: 'MIRRORFLEET_DOCKER_CONFIG',
  mirrorRegistries: 'MIRRORFLEET_MIRROR_REGISTRIES',
  insecureRegistries: 'MIRRORFLEET_INSECURE_REGISTRIES',
  allowNetworks: 'MIRRORFLEET_ALLOW_NETWORKS',
  registryCredentials: 'MIRRORFLEET_REGISTRY_CREDENTIALS',
  apiTokens: 'MIRRORFLEET_API_TOKENS',
  apiPort: 'MIRRORFLEET_API_PORT',
  apiHost: 'MIRRORFLEET_API_HOST',
  metricsHost: 'MIRRORFLEET_METRICS_HOST',
  secretKey: 'MIRRORFLEET_SECRET_KEY',
  secretKeyPrevious: 'MIRRORFLEET_SECRET_KEY_PREVIOUS',
  builder: 'MIRRORFLEET_BUILDER',
  sweepInterval: 'MIRRORFLEET_SWEEP_INTERVAL_SECONDS',
  jobTimeout: 'MIRRORFLEET_JOB_TIMEOUT_SECONDS',
  requestTimeout: 'MIRRORFLEET_REQUEST_TIMEOUT_SECONDS',
  rateLimits: 'MIRRORFLEET_RATE_LIMITS',
} as const;

export interface Credentials {
  username: string;
  password: string;
}

/** Values taken from the environment. A key is absent when its variable is not set. */
export interface EnvironmentOverrides {
  redisUrl?: string;
  keyPrefix?: string;
  logLevel?: LogLevel;
  concurrency?: number;
  metricsPort?: number;
  jobTimeoutSeconds?: number;
  requestTimeoutSeconds?: number;
  dockerConfigPath?: string;
  /** Replaces the file's list. */
  mirrorRegistries?: MirrorRegistryConfig[];
  /** Replaces the file's list. */
  allowNetworks?: string[];
  /** Normalised hosts to contact over plain HTTP, added to the file's registry settings. */
  insecureHosts?: string[];
  /** Credentials by normalised host, merged into the file's registry settings. */
  credentials?: Map<string, Credentials>;
  /** Replaces the file's `api.tokens`; a token listed several times has the union of its scopes. */
  apiTokens?: ApiToken[];
  apiPort?: number;
  apiHost?: string;
  metricsHost?: string;
  secretKey?: string;
  secretKeyPrevious?: string;
  builder?: BuilderChoice;
  sweepIntervalSeconds?: number;
  /** Request budgets by normalised host; each replaces the file's entry for the same host. */
  rateLimits?: HostRateLimit[];
}

export interface EnvironmentResult {
  overrides: EnvironmentOverrides;
  problems: ConfigProblem[];
}

const MIRROR_REGISTRY_ENTRY_EXPECTED = 'NAME=HOST[:PORT][/PREFIX], such as local=127.0.0.1:5001/mirror';
const CREDENTIALS_EXPECTED =
  'a JSON object of credentials by registry host, such as {"registry.example": {"username": "...", "password": "..."}}';

/**
 * Reads every override variable in `env`. A variable that is set but empty is invalid, except for the
 * comma-separated lists, where it means an empty list.
 */
export function readEnvironment(env: NodeJS.ProcessEnv): EnvironmentResult {
  const problems: ConfigProblem[] = [];
  const overrides: EnvironmentOverrides = {};

  const redisUrl = env[ENV.redisUrl];
  if (redisUrl !== undefined) overrides.redisUrl = parseString(ENV.redisUrl, redisUrl, fields.redisUrl, problems);

  const keyPrefix = env[ENV.keyPrefix];
  if (keyPrefix !== undefined) overrides.keyPrefix = parseString(ENV.keyPrefix, keyPrefix, fields.keyPrefix, problems);

  const logLevel = env[ENV.logLevel];
  if (logLevel !== undefined) overrides.logLevel = parseString(ENV.logLevel, logLevel, fields.logLevel, problems);

  const dockerConfig = env[ENV.dockerConfig];
  if (dockerConfig !== undefined) {
    overrides.dockerConfigPath = parseString(ENV.dockerConfig, dockerConfig, fields.dockerConfigPath, problems);
  }

  const concurrency = env[ENV.concurrency];
  if (concurrency !== undefined) {
    overrides.concurrency = parseInteger(ENV.concurrency, concurrency, fields.workerConcurrency, problems);
  }

  const metricsPort = env[ENV.metricsPort];
  if (metricsPort !== undefined) {
    overrides.metricsPort = parseInteger(ENV.metricsPort, metricsPort, fields.metricsPort, problems);
  }

  const jobTimeout = env[ENV.jobTimeout];
  if (jobTimeout !== undefined) {
    overrides.jobTimeoutSeconds = parseInteger(ENV.jobTimeout, jobTimeout, fields.jobTimeoutSeconds, problems);
  }

  const requestTimeout = env[ENV.requestTimeout];
  if (requestTimeout !== undefined) {
    overrides.requestTimeoutSeconds = parseInteger(ENV.requestTimeout, requestTimeout, fields.requestTimeoutSeconds, problems);
  }

  const mirrorRegistries = env[ENV.mirrorRegistries];
  if (mirrorRegistries !== undefined) overrides.mirrorRegistries = parseMirrorRegistries(mirrorRegistries, problems);

  const insecureRegistries = env[ENV.insecureRegistries];
  if (insecureRegistries !== undefined) overrides.insecureHosts = parseInsecureRegistries(insecureRegistries, problems);

  const allowNetworks = env[ENV.allowNetworks];
  if (allowNetworks !== undefined) overrides.allowNetworks = parseAllowNetworks(allowNetworks, problems);

  const credentials = env[ENV.registryCredentials];
  if (credentials !== undefined) overrides.credentials = parseRegistryCredentials(credentials, problems);

  const apiTokens = env[ENV.apiTokens];
  if (apiTokens !== undefined) overrides.apiTokens = parseApiTokens(apiTokens, problems);

  const apiPort = env[ENV.apiPort];
  if (apiPort !== undefined) overrides.apiPort = parseInteger(ENV.apiPort, apiPort, fields.apiPort, problems);

  const apiHost = env[ENV.apiHost];
  if (apiHost !== undefined) overrides.apiHost = parseString(ENV.apiHost, apiHost, fields.listenAddress, problems);

  const metricsHost = env[ENV.metricsHost];
  if (metricsHost !== undefined) overrides.metricsHost = parseString(ENV.metricsHost, metricsHost, fields.listenAddress, problems);

  // parseString shows no value of these keys: describeValue redacts every key whose name contains "secret".
  const secretKey = env[ENV.secretKey];
  if (secretKey !== undefined) overrides.secretKey = parseString(ENV.secretKey, secretKey, fields.secretKey, problems);

  const secretKeyPrevious = env[ENV.secretKeyPrevious];
  if (secretKeyPrevious !== undefined) {
    overrides.secretKeyPrevious = parseString(ENV.secretKeyPrevious, secretKeyPrevious, fields.secretKey, problems);
  }

  const builder = env[ENV.builder];
  if (builder !== undefined) overrides.builder = parseString(ENV.builder, builder, fields.builder, problems);

  const sweepInterval = env[ENV.sweepInterval];
  if (sweepInterval !== undefined) {
    overrides.sweepIntervalSeconds = parseInteger(ENV.sweepInterval, sweepInterval, fields.sweepIntervalSeconds, problems);
  }

  const rateLimits = env[ENV.rateLimits];
  if (rateLimits !== undefined) overrides.rateLimits = parseRateLimits(rateLimits, problems);

  // Drop the keys of invalid variables, so that the result contains only accepted values.
  for (const key of Object.keys(overrides) as (keyof EnvironmentOverrides)[]) {
    if (overrides[key] === undefined) delete overrides[key];
  }
  return { overrides, problems };
}

function parseString<T>(name: string, raw: string, schema: z.ZodType<T>, problems: ConfigProblem[]): T | undefined {
  return parseWithSchema(name, raw, raw, schema, problems);
}

/** Parses a decimal integer strictly: digits only, so `12abc`, ` 12`, `1e3` and `0x10` are all rejected. */
function parseInteger(
  name: string,
  raw: string,
  schema: z.ZodType<number>,
  problems: ConfigProblem[],
): number | undefined {
  const input = /^[0-9]+$/.test(raw) ? Number(raw) : raw;
  return parseWithSchema(name, raw, input, schema, problems);
}

function parseWithSchema<T>(
  name: string,
  raw: string,
  input: unknown,
  schema: z.ZodType<T>,
  problems: ConfigProblem[],
): T | undefined {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  // All issues of one field schema carry the same message: what the field accepts.
  problems.push(invalidValue(name, raw, result.error.issues[0]?.message ?? 'a valid value'));
  return undefined;
}

function splitList(raw: string): string[] {
  if (raw.trim() === '') return [];
  return raw.split(',').map((entry) => entry.trim());
}

function invalidEntry(name: string, entry: string, expected: string): ConfigProblem {
  return { key: name, detail: `invalid entry ${describeValue(name, entry)}`, expected };
}

function invalidEntryPart(name: string, part: string, value: string, entry: string, expected: string): ConfigProblem {
  return { key: name, detail: `invalid ${part} ${JSON.stringify(value)} in entry ${JSON.stringify(entry)}`, expected };
}

/** Parses `NAME=HOST[:PORT][/PREFIX],...` into generic mirror registries with the default cleanup settings. */
function parseMirrorRegistries(raw: string, problems: ConfigProblem[]): MirrorRegistryConfig[] | undefined {
  const name = ENV.mirrorRegistries;
  const registries: MirrorRegistryConfig[] = [];
  const countBefore = problems.length;

  for (const entry of splitList(raw)) {
    const equals = entry.indexOf('=');
    if (equals < 0) {
      problems.push(invalidEntry(name, entry, MIRROR_REGISTRY_ENTRY_EXPECTED));
      continue;
    }

    const registryName = entry.slice(0, equals);
    const location = splitLocation(entry.slice(equals + 1));
    const host = normaliseHost(location.host);
    const prefix = location.prefix ?? '';
    if (!MIRROR_REGISTRY_NAME.test(registryName)) {
      problems.push(invalidEntryPart(name, 'name', registryName, entry, MIRROR_REGISTRY_NAME_EXPECTED));
      continue;
    }
    if (host === undefined) {
      problems.push(invalidEntryPart(name, 'host', location.host, entry, HOST_EXPECTED));
      continue;
    }
    if (location.prefix !== undefined && !isRepositoryPrefix(prefix)) {
      problems.push(invalidEntryPart(name, 'prefix', prefix, entry, PREFIX_EXPECTED));
      continue;
    }

    if (registries.some((registry) => registry.name === registryName)) {
      const detail = `duplicate name ${JSON.stringify(registryName)} in entry ${JSON.stringify(entry)}`;
      problems.push({ key: name, detail, expected: 'each name once' });
      continue;
    }
    if (registries.some((registry) => registry.host === host && registry.prefix === prefix)) {
      const detail = `duplicate location in entry ${JSON.stringify(entry)}`;
      problems.push({ key: name, detail, expected: 'each HOST[:PORT][/PREFIX] once, with hosts compared in lowercase and without :443' });
      continue;
    }
    registries.push({
      name: registryName,
      provider: 'generic',
      host,
      prefix,
      retentionSeconds: DEFAULTS.retentionSeconds,
      previousImageRetentionSeconds: DEFAULTS.previousImageRetentionSeconds,
      maxDeletePercent: DEFAULTS.maxDeletePercent,
    });
  }

  return problems.length === countBefore ? registries : undefined;
}

/** Parses `HOST[:PORT],...` into normalised hosts. Repeated hosts are kept once. */
function parseInsecureRegistries(raw: string, problems: ConfigProblem[]): string[] | undefined {
  const hosts = new Set<string>();
  const countBefore = problems.length;
  for (const entry of splitList(raw)) {
    const host = normaliseHost(entry);
    if (host === undefined) problems.push(invalidEntry(ENV.insecureRegistries, entry, HOST_EXPECTED));
    else hosts.add(host);
  }
  return problems.length === countBefore ? [...hosts] : undefined;
}

/** Parses `CIDR,...`. */
function parseAllowNetworks(raw: string, problems: ConfigProblem[]): string[] | undefined {
  const networks: string[] = [];
  const countBefore = problems.length;
  for (const entry of splitList(raw)) {
    const result = fields.cidr.safeParse(entry);
    if (result.success) networks.push(result.data);
    else problems.push(invalidEntry(ENV.allowNetworks, entry, CIDR_EXPECTED));
  }
  return problems.length === countBefore ? networks : undefined;
}

/**
 * Parses `{"HOST": {"username": "...", "password": "..."}, ...}`. The value of the variable is never
 * shown whole, and neither is a JSON syntax error, because V8 quotes the text around the error.
 */
function parseRegistryCredentials(raw: string, problems: ConfigProblem[]): Map<string, Credentials> | undefined {
  const name = ENV.registryCredentials;

  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    problems.push({ key: name, detail: `invalid JSON ${REDACTED}`, expected: CREDENTIALS_EXPECTED });
    return undefined;
  }
  if (!isRecord(parsed)) {
    problems.push({ key: name, detail: `invalid value ${REDACTED}`, expected: CREDENTIALS_EXPECTED });
    return undefined;
  }

  const credentials = new Map<string, Credentials>();
  const countBefore = problems.length;
  for (const [hostKey, value] of Object.entries(parsed)) {
    const key = `${name}[${JSON.stringify(hostKey)}]`;
    const host = normaliseHost(hostKey);
    if (host === undefined) {
      problems.push({ key, detail: `invalid host ${JSON.stringify(hostKey)}`, expected: HOST_EXPECTED });
      continue;
    }
    if (credentials.has(host)) {
      problems.push({ key, detail: `duplicate host ${JSON.stringify(host)}`, expected: 'each host once, compared in lowercase and without :443' });
      continue;
    }

    // Not shown: a string here is most likely a password written without its username.
    if (!isRecord(value)) {
      problems.push({ key, detail: `invalid value ${REDACTED}`, expected: 'an object with the keys username, password' });
      continue;
    }
    const result = credentialsSchema.safeParse(value, { reportInput: true });
    if (result.success) credentials.set(host, result.data);
    else problems.push(...problemsFromIssues(result.error.issues, (path) => (path.length === 0 ? key : `${key}.${dottedPath(path)}`)));
  }
  return problems.length === countBefore ? credentials : undefined;
}

const API_TOKENS_EXPECTED = `TOKEN:SCOPE,... with SCOPE ${API_SCOPE_EXPECTED}, such as 3f9c...e1:enqueue`;

/**
 * Parses `TOKEN:SCOPE,...` into tokens with their scopes. A token listed several times, such as
 * `T:enqueue,T:admin`, gets all of its scopes. Problems name the entry by position and never show a token.
 */
function parseApiTokens(raw: string, problems: ConfigProblem[]): ApiToken[] | undefined {
  const name = ENV.apiTokens;
  const scopesByToken = new Map<string, Set<ApiScope>>();
  const countBefore = problems.length;

  for (const [index, entry] of splitList(raw).entries()) {
    const position = `entry ${index + 1}`;
    const colon = entry.lastIndexOf(':');
    if (colon < 0) {
      problems.push({ key: name, detail: `${position} ${REDACTED} has no ":SCOPE"`, expected: API_TOKENS_EXPECTED });
      continue;
    }

    const token = entry.slice(0, colon);
    const scope = entry.slice(colon + 1);
    if (!API_TOKEN_PATTERN.test(token)) {
      problems.push({ key: name, detail: `invalid token in ${position} ${REDACTED}`, expected: API_TOKEN_EXPECTED });
      continue;
    }
    if (!(API_SCOPES as readonly string[]).includes(scope)) {
      problems.push({ key: name, detail: `invalid scope ${JSON.stringify(scope)} in ${position}`, expected: API_SCOPE_EXPECTED });
      continue;
    }

    const scopes = scopesByToken.get(token) ?? new Set<ApiScope>();
    scopes.add(scope as ApiScope);
    scopesByToken.set(token, scopes);
  }
  if (problems.length !== countBefore) return undefined;
  return [...scopesByToken].map(([token, scopes]) => ({ token, scopes: API_SCOPES.filter((scope) => scopes.has(scope)) }));
}

const RATE_LIMITS_EXPECTED =
  'a JSON object of request budgets by registry host, such as {"docker.io": {"requestsPerSecond": 5, "maxConcurrent": 4, "pullQuotaFloor": 20}}';

/** Parses `{"HOST": {"requestsPerSecond": 5, ...}, ...}` into request budgets by normalised host. */
function parseRateLimits(raw: string, problems: ConfigProblem[]): HostRateLimit[] | undefined {
  const name = ENV.rateLimits;

  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    problems.push({ key: name, detail: `invalid JSON ${describeValue(name, raw)}`, expected: RATE_LIMITS_EXPECTED });
    return undefined;
  }
  if (!isRecord(parsed)) {
    problems.push({ key: name, detail: `invalid value ${describeValue(name, raw)}`, expected: RATE_LIMITS_EXPECTED });
    return undefined;
  }

  const entries: HostRateLimit[] = [];
  const countBefore = problems.length;
  for (const [hostKey, value] of Object.entries(parsed)) {
    const key = `${name}[${JSON.stringify(hostKey)}]`;
    const host = normaliseHost(hostKey);
    if (host === undefined) {
      problems.push({ key, detail: `invalid host ${JSON.stringify(hostKey)}`, expected: HOST_EXPECTED });
      continue;
    }
    if (entries.some((entry) => entry.host === host)) {
      problems.push({ key, detail: `duplicate host ${JSON.stringify(host)}`, expected: 'each host once, compared in lowercase and without :443' });
      continue;
    }
    const result = hostRateLimitValuesSchema.safeParse(value, { reportInput: true });
    if (result.success) entries.push({ host, ...result.data });
    else problems.push(...problemsFromIssues(result.error.issues, (path) => (path.length === 0 ? key : `${key}.${dottedPath(path)}`)));
  }
  return problems.length === countBefore ? entries : undefined;
}
