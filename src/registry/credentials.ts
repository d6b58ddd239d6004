import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError, RegistryError } from '../errors.ts';
import { checkRegistryHost, DOCKER_HUB } from '../image-ref/registry-host.ts';
import { redact, registerSecret } from '../log/redact.ts';
import type { Credentials } from './auth.ts';

/**
 * Credentials for one registry, from the first source that has them:
 * 1. the configuration (`configured`);
 * 2. a docker `config.json`, read the way the docker CLI reads it (cli/config/configfile/file.go,
 *    `GetCredentialsStore`): a helper named in `credHelpers` for this registry, else the `credsStore`
 *    helper, else the `auths` entry (`auth` as base64 `username:password`, or `username` and `password`);
 * 3. none, which means anonymous access.
 * Every password, `auth` value and helper secret is registered for redaction as soon as it is read.
 */

export interface CredentialSources {
  configured?: Credentials;
  dockerConfigPath?: string;
}

// A helper that has nothing for a server exits with 1 and prints this (docker-credential-helpers,
// credentials/error.go, errCredentialsNotFoundMessage).
const NOT_FOUND_MESSAGE = 'credentials not found in native keychain';
// Docker Hub's entry in config.json and the server name its helpers are asked for.
const DOCKER_HUB_SERVER = 'https://index.docker.io/v1/';
// A helper returns this user name together with an identity token, an OAuth refresh token.
const IDENTITY_TOKEN_USER = '<token>';
const HELPER_TIMEOUT_MS = 30_000;

const authEntrySchema = z.object({
  auth: z.string().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  identitytoken: z.string().optional(),
});

const dockerConfigSchema = z.object({
  auths: z.record(z.string(), authEntrySchema).optional(),
  credHelpers: z.record(z.string(), z.string()).optional(),
  credsStore: z.string().optional(),
});

const helperOutputSchema = z.object({ Username: z.string(), Secret: z.string() });

/**
 * Returns the credentials for `registry` (a normalised host such as `docker.io` or `127.0.0.1:5000`),
 * or undefined for anonymous access.
 * @throws ConfigError when the docker config file cannot be read or has an invalid entry for `registry`.
 * @throws RegistryError (REGISTRY_DENIED) when a credential helper fails or returns an identity token.
 */
export async function resolveCredentials(registry: string, sources: CredentialSources): Promise<Credentials | undefined> {
  if (sources.configured) {
    registerSecret(sources.configured.password);
    return sources.configured;
  }
  if (sources.dockerConfigPath === undefined) return undefined;

  const config = await readDockerConfig(sources.dockerConfigPath);
  const host = hostOf(registry) ?? registry;
  const helper = findEntry(config.credHelpers, host) ?? config.credsStore;
  if (helper) return runHelper(helper, host);

  const entry = findEntry(config.auths, host);
  if (!entry) return undefined;
  return credentialsFromEntry(entry, sources.dockerConfigPath, host);
}

async function readDockerConfig(path: string): Promise<z.infer<typeof dockerConfigSchema>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new ConfigError(`cannot read the docker config file ${JSON.stringify(path)} (${code}); expected a readable docker config.json`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch {
    // The parser's message is left out because it can quote the text around the error, which may be a password.
    throw new ConfigError(`the docker config file ${JSON.stringify(path)} is not valid JSON; expected a docker config.json`);
  }
  const result = dockerConfigSchema.safeParse(json);
  if (!result.success) {
    const where = result.error.issues[0]?.path.join('.') ?? '';
    throw new ConfigError(`the docker config file ${JSON.stringify(path)} has an invalid value at "${where}"; expected a docker config.json`);
  }
  return result.data;
}

/** Finds the value whose key names `host`; keys may carry a scheme and a path, as `https://index.docker.io/v1/` does. */
function findEntry<T>(entries: Record<string, T> | undefined, host: string): T | undefined {
  if (!entries) return undefined;
  for (const [key, value] of Object.entries(entries)) {
    if (hostOf(key) === host) return value;
  }
  return undefined;
}

/** Normalises a config.json key or a registry name to a registry host; undefined when it is not one. */
function hostOf(key: string): string | undefined {
  const withoutScheme = key.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const check = checkRegistryHost(withoutScheme.split('/')[0] ?? '');
  return check.host;
}

function credentialsFromEntry(entry: z.infer<typeof authEntrySchema>, path: string, host: string): Credentials | undefined {
  registerSecret(entry.auth);
  registerSecret(entry.password);
  registerSecret(entry.identitytoken);
  const where = `entry for ${host} in the docker config file ${JSON.stringify(path)}`;

  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) throw new ConfigError(`the "auth" value of the ${where} is invalid; expected base64 of username:password`);
    const password = decoded.slice(colon + 1);
    registerSecret(password);
    return { username: decoded.slice(0, colon), password };
  }
  if (entry.username !== undefined && entry.password !== undefined) return { username: entry.username, password: entry.password };
  if (entry.identitytoken !== undefined) {
    throw new ConfigError(`the ${where} contains only an identity token, which mirrorfleet cannot use; log in with a username and password or an access token`);
  }
  return undefined;
}

/** Runs `docker-credential-<helper> get` with the server name on stdin (the docker-credential-helpers protocol). */
async function runHelper(helper: string, host: string): Promise<Credentials | undefined> {
  const program = `docker-credential-${helper}`;
  const operation = `reading credentials with ${program}`;
  const server = host === DOCKER_HUB ? DOCKER_HUB_SERVER : host;
  const failed = (problem: string, advice = 'check the helper and its login') =>
    new RegistryError('REGISTRY_DENIED', redact(`cannot read the credentials for ${host}: ${program} get ${problem}; ${advice}`), {
      registry: host,
      operation,
    });

  let result;
  try {
    const { execa } = await import('execa');
    result = await execa(program, ['get'], { input: server, reject: false, timeout: HELPER_TIMEOUT_MS });
  } catch (error) {
    throw failed(`could not run (${(error as NodeJS.ErrnoException).code ?? 'unknown error'})`);
  }
  if (result.failed && result.timedOut) throw failed(`did not finish within ${HELPER_TIMEOUT_MS / 1000} s`);
  if (result.failed && (result as { code?: string }).code === 'ENOENT') throw failed('could not run: the program is not on PATH');
  if (result.exitCode !== 0) {
    if (result.stdout.includes(NOT_FOUND_MESSAGE)) return undefined;
    const firstLine = (result.stderr || result.stdout).split('\n')[0]?.slice(0, 200) ?? '';
    throw failed(`exited with code ${result.exitCode ?? 'unknown'}${firstLine ? ` (${firstLine})` : ''}`);
  }

  let output: unknown;
  try {
    output = JSON.parse(result.stdout);
  } catch {
    throw failed('printed something other than JSON');
  }
  const parsed = helperOutputSchema.safeParse(output);
  if (!parsed.success) throw failed('printed JSON without the string fields Username and Secret');
  registerSecret(parsed.data.Secret);
  if (parsed.data.Username === IDENTITY_TOKEN_USER) {
    throw failed('returned an identity token, which mirrorfleet cannot use', 'store a username and password or an access token in the helper');
  }
  return { username: parsed.data.Username, password: parsed.data.Secret };
}
