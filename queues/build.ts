import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { JobsOptions } from 'bullmq';
import { InvalidInputError } from '../src/errors.ts';
import { normaliseCommit, parseGitUrl } from '../src/build/git.ts';
import { normaliseDockerfilePath, normaliseRootPath } from '../src/build/paths.ts';
import { normalisePlatform } from '../src/build/platforms.ts';
import { parsePlatform } from '../src/registry/media-types.ts';
import { platformNameProblem } from './platforms.ts';
import { encryptValue, hmacValue, type SecretKey } from '../src/build/secret-key.ts';

/**
 * The `build` queue: what a producer may ask for, validated the same way when enqueued and when a
 * worker takes the job. A request carries build variable values in clear. The producer encrypts them
 * into the payload, so that Redis only ever contains ciphertext (see src/build/secret-key.ts).
 */

export const BUILD_QUEUE = 'build';

// The same rule as the ids of mirror requests.
const ID = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const idSchema = (field: string) =>
  z
    .string({ error: `${field} must be a string` })
    .max(63, { error: `${field} must be at most 63 characters` })
    .regex(ID, { error: `${field} must be lowercase letters, digits and single '.', '_' or '-' between them, such as prod-eu-1` });

// Names reach the builder inside `--build-arg NAME=...` and `--secret id=NAME,src=...`, where `=` and `,`
// are separators, so only environment-variable names are accepted.
const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_VARIABLES = 256;
const MAX_VALUE_BYTES = 64 * 1024;

const gitSchema = z.strictObject({
  /** An absolute local path, an https://, ssh:// or git:// URL, or user@host:path. */
  url: z.string({ error: 'git.url must be a string' }).min(1, { error: 'git.url must not be empty' }).max(2048),
  /** The full commit id (40 or 64 hex characters). */
  commit: z.string({ error: 'git.commit must be a string' }),
  /** Repository root path (the build context), relative to the git repository root. Default `.`. */
  root: z.string({ error: 'git.root must be a string' }).max(1024).default('.'),
  /** Dockerfile path relative to `root`. Default `Dockerfile`. */
  dockerfile: z.string({ error: 'git.dockerfile must be a string' }).max(1024).default('Dockerfile'),
});

const variableNameSchema = z
  .string({ error: 'variable names must be strings' })
  .regex(VARIABLE_NAME, { error: 'variable names must be letters, digits and _, not starting with a digit, such as NODE_ENV' });

const commonShape = {
  v: z.literal(1, { error: 'v must be 1, the only payload version' }),
  git: gitSchema,
  /** Mirror registry, by its configured name or by its location HOST[:PORT][/PREFIX]. */
  registry: z
    .string({ error: 'registry must be a string' })
    .min(1, { error: 'registry must not be empty' })
    .max(512, { error: 'registry must be at most 512 characters' })
    .refine((value) => !value.includes('@'), { error: 'registry must be a configured name or HOST[:PORT][/PREFIX], without credentials (they belong in the configuration)' }),
  cluster: idSchema('cluster'),
  service: idSchema('service'),
  /** Target platforms, such as `linux/amd64`; the worker's own platform when absent. */
  platforms: z.array(z.string({ error: 'platforms entries must be strings' })).max(16).optional(),
  /** Build even when the tag exists, such as after a base image changed. */
  force: z.boolean({ error: 'force must be true or false' }).default(false),
};

/** A build request as a producer writes it, with variable values in clear. */
export const buildRequestSchema = z
  .strictObject({
    ...commonShape,
    variables: z
      .array(
        z.strictObject({
          name: variableNameSchema,
          value: z.string({ error: 'variable values must be strings' }).refine((value) => Buffer.byteLength(value) <= MAX_VALUE_BYTES, {
            error: `variable values must be at most ${MAX_VALUE_BYTES} bytes`,
          }),
          secret: z.boolean({ error: 'secret must be true or false' }).default(false),
        }),
      )
      .max(MAX_VARIABLES)
      .default([]),
  })
  .superRefine(checkRequest);

const encryptedValueSchema = z.strictObject({
  keyId: z.string().regex(/^[0-9a-f]{16}$/, { error: 'keyId must be 16 lowercase hex characters' }),
  iv: z.string().regex(/^[A-Za-z0-9+/]{16}$/, { error: 'iv must be the base64 of 12 bytes' }),
  data: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, { error: 'data must be base64' }).max(MAX_VALUE_BYTES * 2),
});

/** Version 1 of the build job payload: the request with each variable value encrypted. */
export const buildPayloadSchema = z
  .strictObject({
    ...commonShape,
    variables: z.array(z.strictObject({ name: variableNameSchema, secret: z.boolean(), value: encryptedValueSchema })).max(MAX_VARIABLES).default([]),
  })
  .superRefine(checkRequest);

export type BuildRequestInput = z.input<typeof buildRequestSchema>;
export type BuildRequest = z.output<typeof buildRequestSchema>;
export type BuildPayload = z.output<typeof buildPayloadSchema>;

function checkRequest(request: { git: { url: string; commit: string; root: string; dockerfile: string }; variables: { name: string }[]; platforms?: string[] | undefined }, context: z.RefinementCtx): void {
  const check = (path: PropertyKey[], validate: () => unknown) => {
    try {
      validate();
    } catch (error) {
      context.addIssue({ code: 'custom', path, message: (error as Error).message });
    }
  };
  check(['git', 'url'], () => parseGitUrl(request.git.url));
  check(['git', 'commit'], () => normaliseCommit(request.git.commit));
  let root: string | undefined;
  check(['git', 'root'], () => (root = normaliseRootPath(request.git.root)));
  if (root !== undefined) check(['git', 'dockerfile'], () => normaliseDockerfilePath(request.git.dockerfile, root!));
  for (const [index, platform] of (request.platforms ?? []).entries()) {
    check(['platforms', index], () => {
      // Aliases such as aarch64 are accepted for builds and normalised first, so only unknown names remain.
      const problem = platformNameProblem(parsePlatform(normalisePlatform(platform)));
      if (problem !== undefined) throw new InvalidInputError(problem);
    });
  }

  const seen = new Set<string>();
  for (const [index, variable] of request.variables.entries()) {
    if (seen.has(variable.name)) context.addIssue({ code: 'custom', path: ['variables', index, 'name'], message: `variable ${variable.name} is given twice` });
    seen.add(variable.name);
  }
}

/** Validates a build request. Throws InvalidInputError listing every problem with its field; secret values are never shown. */
export function parseBuildRequest(request: unknown): BuildRequest {
  return parseWith(buildRequestSchema, request, 'build request');
}

/** Validates a build job payload. Throws InvalidInputError listing every problem with its field. */
export function parseBuildPayload(payload: unknown): BuildPayload {
  return parseWith(buildPayloadSchema, payload, 'build payload');
}

function parseWith<Schema extends z.ZodType>(schema: Schema, input: unknown, what: string): z.output<Schema> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const field = issue.path.join('.') || 'payload';
    // Variable values are never shown, not even when invalid: they may be secrets.
    const shown = issue.path[0] === 'variables' ? '' : ` (${describe(valueAt(input, issue.path))})`;
    return `${field}${shown}: ${issue.message}`;
  });
  throw new InvalidInputError(`invalid ${what}: ${problems.join('; ')}`);
}

function describe(value: unknown): string {
  return value === undefined ? 'missing' : (JSON.stringify(value)?.slice(0, 200) ?? String(value));
}

function valueAt(payload: unknown, path: PropertyKey[]): unknown {
  let current: unknown = payload;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

/**
 * Returns the request in normal form: commit in lowercase, paths normalised, platforms canonical and
 * sorted, the registry lowercased, variables sorted by name. Two requests with the same normal form ask
 * for the same build.
 */
export function normaliseBuildRequest(request: BuildRequest): BuildRequest {
  const root = normaliseRootPath(request.git.root);
  const normal: BuildRequest = {
    v: 1,
    git: { url: request.git.url, commit: normaliseCommit(request.git.commit), root, dockerfile: normaliseDockerfilePath(request.git.dockerfile, root) },
    variables: [...request.variables].sort(compareNames),
    registry: request.registry.trim().toLowerCase(),
    cluster: request.cluster,
    service: request.service,
    force: request.force,
  };
  if (request.platforms?.length) normal.platforms = [...new Set(request.platforms.map(normalisePlatform))].sort();
  return normal;
}

// Names are ASCII, where `<` orders like bytes; localeCompare would depend on the locale.
function compareNames(a: { name: string }, b: { name: string }): number {
  if (a.name === b.name) return 0;
  return a.name < b.name ? -1 : 1;
}

/**
 * Encrypts the variable values of a normalised request into a payload. Throws InvalidInputError when
 * the request has variables and no key is given.
 */
export function encryptBuildRequest(request: BuildRequest, key: SecretKey | undefined): BuildPayload {
  if (request.variables.length > 0 && !key) {
    throw new InvalidInputError('build variables need a secret key to be encrypted with: set MIRRORFLEET_SECRET_KEY (base64 of 32 bytes), the same key as the workers');
  }
  return {
    ...request,
    variables: request.variables.map((variable) => ({ name: variable.name, secret: variable.secret, value: encryptValue(key!, variable.name, variable.secret, variable.value) })),
  };
}

/**
 * Deduplication id: identical requests waiting or running at the same time share one job. Values enter
 * as HMACs, so the id reveals none of them.
 */
export function buildDedupeId(request: BuildRequest, key: SecretKey | undefined): string {
  const normal = normaliseBuildRequest(request);
  const variables = normal.variables.map((variable) => [variable.name, variable.secret, key ? hmacValue(key, variable.value) : '']);
  const canonical = JSON.stringify([
    normal.v,
    normal.git.url,
    normal.git.commit,
    normal.git.root,
    normal.git.dockerfile,
    normal.registry,
    normal.cluster,
    normal.service,
    normal.platforms ?? [],
    normal.force,
    variables,
  ]);
  return `build-${createHash('sha256').update(canonical).digest('hex').slice(0, 32)}`;
}

/** Default options of build jobs. */
export const BUILD_JOB_OPTIONS: JobsOptions = {
  // A failed RUN step may be a network failure that passes; a wrong Dockerfile fails at once instead.
  attempts: 3,
  backoff: { type: 'exponential', delay: 10_000, jitter: 0.5 },
  // Builder output goes to the job log; only the last lines are kept, each cut at 1000 characters.
  keepLogs: 1000,
  removeOnComplete: { age: 24 * 3600, count: 10_000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
};

/** Result of a finished build job, also the CLI's `--json --wait` output. */
export interface BuildResult {
  jobId: string;
  /** `built`: the builder built and pushed; `skipped`: the tag was already in the repository. */
  action: 'built' | 'skipped';
  /** The build tag: SHA-256 of the build context, 64 hex characters. */
  tag: string;
  /** `host/repository:tag` in the mirror registry. */
  target: string;
  /** `host/repository@sha256:...`: what a deployment should run. */
  pinned: string;
  digest: string;
  durationMs: number;
  /** Whether the builder took at least one step from the layer cache; absent when skipped or when the builder's output does not show it. */
  cacheHit?: boolean;
}

/** Progress a running build job reports. */
export interface BuildProgress {
  stage: 'fetching' | 'checking' | 'building' | 'verifying';
}
