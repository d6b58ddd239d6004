import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { requireMirrorRegistry, type Config, type MirrorRegistryConfig } from '../config/config.ts';
import { DEFAULTS } from '../config/schema.ts';
import { InvalidInputError, MirrorfleetError, RegistryError } from '../errors.ts';
import { sweepSchedulerFor, type SweepScheduler } from '../cleanup/schedule.ts';
import { manifestLockKey } from '../dedupe/keys.ts';
import { withLock, type LockOptions } from '../dedupe/lock.ts';
import { DEFAULT_LEASE_OPTIONS, withLease, type Lease, type LeaseOptions } from '../refcounts/lease.ts';
import { recordImageUse } from '../refcounts/record.ts';
import { ReferenceStore } from '../refcounts/store.ts';
import type { ImageName, User } from '../refcounts/types.ts';
import type { RegistryClient } from '../registry/client.ts';
import { systemResolver, type Resolver } from '../net/connector.ts';
import { NetworkPolicy } from '../net/policy.ts';
import { createProvider } from '../providers/index.ts';
import type { RegistryClients } from '../mirror/clients.ts';
import type { BuildPayload, BuildProgress, BuildResult } from '../../queues/build.ts';
import type { Builder, BuildSpec } from './builder.ts';
import { buildTag, taggedVariables, type BuildVariable } from './context-tag.ts';
import { checkGitHost, createGit, normaliseCommit, parseGitUrl, type GitOperations } from './git.ts';
import { dockerfilePathInRepository, normaliseDockerfilePath, normaliseRootPath } from './paths.ts';
import { targetPlatforms } from './platforms.ts';
import { recordCacheBuild } from './records.ts';
import { buildRepositories, repositoryMaxLength } from './repository.ts';
import { decryptValue, keyRing } from './secret-key.ts';
import { selectBuilder } from './select-builder.ts';

/**
 * The build job itself, without the queue around it.
 *
 * Glossary:
 * - *build context*: the files under the repository root path (`git.root`) of one commit.
 * - *build tag*: the SHA-256 of the build context's canonical serialisation (see context-tag.ts). It is
 *   the tag of the built image.
 * - *build repository*: `z<short cluster id>-<git repository name>` (see repository.ts), shared by every
 *   service built from that git repository. Its sibling `<repository>-cache` contains the layer cache.
 * - *variable*: a build environment variable. *Plain* ones become build arguments and *secret* ones
 *   build secrets. Only variables declared by `ARG` enter the tag.
 *
 * Steps, labelled the same in the code:
 * 1. Resolve the inputs: the mirror registry, the variables in clear, the git source, the names.
 * 2. Fetch the commit (shallow where the remote allows), read its Dockerfile without a checkout, and
 *    compute the tag.
 * 3. Under a fleet-wide lock on the tag, a tag already in the build repository makes the job `skipped`.
 *    The lock makes identical requests that run at once build once, because the second finds the tag.
 * 4. Otherwise check out the commit, then build and push with the builder, which uses the cache
 *    repository as its layer cache.
 * 5. Check with a HEAD request that the registry serves the pushed digest under the tag, and record the
 *    service's use of the image and the build into the cache repository.
 *
 * Steps 3 to 5 run under a lease on the build repository until the use is recorded, so a sweep at the
 * same moment cannot delete the image. Recording the use releases the service's previous image of the
 * build repository, and a sweep is scheduled for when its retention time has passed. The cache
 * repository gets no use: it is not an image in use, and keeps its own retention.
 */

export interface BuildContext {
  config: Config;
  redis: Redis;
  clients: RegistryClients;
  locks?: LockOptions;
  /** The git commands; the `git` executable by default. */
  git?: GitOperations;
  /** The builder; by default the one `config.build.builder` chooses among those installed. */
  builder?: Builder;
  /** Addresses a remote git source may resolve to; `config.allowNetworks` by default. */
  policy?: NetworkPolicy;
  resolve?: Resolver;
  leases?: LeaseOptions;
  /** Enqueues the sweep of a released previous image; a cleanup queue client on `redis` when absent. */
  sweeps?: SweepScheduler;
}

export interface BuildHooks {
  jobId: string;
  /** Time the request was made (ms); the newest request decides the service's current image (see MirrorHooks). */
  requestedAt?: number;
  /** Receives each line of builder output, secret values replaced by `<redacted>`, cut at 1000 characters. */
  onLine?: (line: string) => void;
  onStage?: (stage: BuildProgress['stage']) => void;
}

const MAX_LINE_LENGTH = 1000;
// NOTE: secret values shorter than this are not redacted from builder output, because replacing them
// would turn ordinary words into `<redacted>`; the same bound as the log redactor's.
const MIN_REDACTED_LENGTH = 4;

/**
 * Builds and pushes the image of one build job unless its tag is already in the build repository.
 * Throws InvalidInputError for a wrong request or Dockerfile, ConfigError for a missing key or builder,
 * and a retryable MirrorfleetError for failures that may pass.
 */
export async function buildImage(payload: BuildPayload, context: BuildContext, hooks: BuildHooks): Promise<BuildResult> {
  const started = Date.now();
  const { config, redis, clients } = context;
  const keys = { prefix: config.redis.keyPrefix };
  const timeoutMs = config.build.timeoutSeconds * 1000;
  const git = context.git ?? createGit({ timeoutMs });

  // 1. Resolve the inputs.
  const registry = requireMirrorRegistry(config, payload.registry);
  const provider = await createProvider(registry, config, clients);
  const ring = keyRing(config);
  const variables: BuildVariable[] = payload.variables.map((variable) => ({
    name: variable.name,
    secret: variable.secret,
    value: decryptValue(ring, variable.name, variable.secret, variable.value),
  }));
  const secretValues = variables.filter((variable) => variable.secret && variable.value.length >= MIN_REDACTED_LENGTH).map((variable) => variable.value);
  const hide = (text: string) => secretValues.reduce((result, secret) => result.split(secret).join('<redacted>'), text);

  const location = parseGitUrl(payload.git.url);
  await checkGitHost(location, context.policy ?? new NetworkPolicy(config.allowNetworks), context.resolve ?? systemResolver);
  const source = location.kind === 'local' ? location.path : location.url;
  const commit = normaliseCommit(payload.git.commit);
  const root = normaliseRootPath(payload.git.root);
  const dockerfile = normaliseDockerfilePath(payload.git.dockerfile, root);
  const platforms = targetPlatforms(payload.platforms);
  const names = buildRepositories({ cluster: payload.cluster, gitUrl: payload.git.url, prefix: provider.prefix, maxLength: repositoryMaxLength(registry.provider) });
  const targetClient = clients.get(provider.host);
  const targetName = `${provider.host}/${names.repository}`;

  const workDir = await mkdtemp(join(tmpdir(), 'mirrorfleet-build-'));
  try {
    // 2. Read the Dockerfile and compute the tag, before any checkout.
    hooks.onStage?.('fetching');
    const gitDir = join(workDir, 'git');
    await git.fetch(source, commit, gitDir);
    const dockerfileInRepository = dockerfilePathInRepository(root, dockerfile);
    const dockerfileContent = await git.readFile(gitDir, commit, dockerfileInRepository);
    if (!dockerfileContent) throw new InvalidInputError(`the Dockerfile ${dockerfileInRepository} does not exist in commit ${commit} of ${payload.git.url}`);
    const tag = buildTag({ commit, root, dockerfile, dockerfileContent, platforms, variables }, ring.current);
    const store = new ReferenceStore(redis, keys);
    const user: User = { cluster: payload.cluster, service: payload.service };
    const recordUse = (lease: Lease, digest: string, mediaType: string | undefined) =>
      recordBuildUse(context, registry, store, targetClient, lease, { image: { repository: names.repository, tag, digest }, user, mediaType, requestedAt: hooks.requestedAt });

    // Waiters on the tag lock wait as long as one build may take.
    const lockOptions = context.locks ?? { ttlMs: 10_000, waitMs: timeoutMs + 60_000 };
    return await withLease(store, provider.host, names.repository, (lease) => withLock(
      redis,
      manifestLockKey(keys, provider.host, names.repository, tag),
      async (): Promise<BuildResult> => {
        // 3. A tag in place means that this exact build context was built before.
        hooks.onStage?.('checking');
        if (!payload.force) {
          const existing = await targetClient.headManifest(names.repository, tag);
          if (existing) {
            await recordUse(lease, existing.digest, existing.mediaType);
            return { jobId: hooks.jobId, action: 'skipped', tag, target: `${targetName}:${tag}`, pinned: `${targetName}@${existing.digest}`, digest: existing.digest, durationMs: Date.now() - started };
          }
        }

        // 4. Check out, build and push.
        hooks.onStage?.('building');
        await provider.ensureRepository(names.repository);
        await provider.ensureRepository(names.cacheRepository);
        const tree = join(workDir, 'tree');
        await mkdir(tree, { mode: 0o700 });
        await git.checkout(gitDir, commit, tree);
        const contextDir = join(tree, root);
        const isDirectory = await stat(contextDir).then((entry) => entry.isDirectory(), () => false);
        if (!isDirectory) throw new InvalidInputError(`git.root ${root} is not a directory in commit ${commit} of ${payload.git.url}`);

        const secretsDir = join(workDir, 'secrets');
        const secrets = await writeSecretFiles(secretsDir, variables);
        const spec: BuildSpec = {
          contextDir,
          dockerfile: join(tree, dockerfileInRepository),
          target: `${targetName}:${tag}`,
          cacheRepository: `${provider.host}/${names.cacheRepository}`,
          platforms,
          buildArgs: taggedVariables({ dockerfileContent, variables }).filter((variable) => !variable.secret).map(({ name, value }) => ({ name, value })),
          secrets,
          ...registrySettings(config),
          workDir: join(workDir, 'builder'),
          timeoutMs,
        };
        await mkdir(spec.workDir, { mode: 0o700 });

        const builder = context.builder ?? selectBuilder(config.build.builder);
        let outcome;
        try {
          outcome = await builder.build(spec, (line) => hooks.onLine?.(hide(line).slice(0, MAX_LINE_LENGTH)));
        } catch (error) {
          if (error instanceof Error) error.message = hide(error.message);
          throw error;
        } finally {
          // The secret files go as soon as the builder is done with them, before anything else can fail.
          await rm(secretsDir, { recursive: true, force: true });
        }

        // 5. Verify that the registry serves what the builder reports as pushed, and record the use.
        hooks.onStage?.('verifying');
        const pushed = await targetClient.headManifest(names.repository, tag);
        if (pushed?.digest !== outcome.digest) {
          throw new RegistryError(
            'REGISTRY_PROTOCOL',
            `${builder.name} pushed ${targetName}:${tag} as ${outcome.digest}, but a HEAD request to ${provider.host} returns ${pushed ? pushed.digest : '404: the tag does not exist'}; build again`,
            { registry: provider.host, operation: `checking manifest ${names.repository}:${tag}`, retryable: true },
          );
        }
        await recordUse(lease, outcome.digest, pushed.mediaType);
        await recordCacheBuild(redis, keys, provider.host, names.cacheRepository, Date.now());
        return {
          jobId: hooks.jobId,
          action: 'built',
          tag,
          target: `${targetName}:${tag}`,
          pinned: `${targetName}@${outcome.digest}`,
          digest: outcome.digest,
          durationMs: Date.now() - started,
          ...(outcome.cachedSteps === undefined ? {} : { cacheHit: outcome.cachedSteps > 0 }),
        };
      },
      lockOptions,
    ), context.leases ?? DEFAULT_LEASE_OPTIONS);
  } finally {
    // A failed removal must not turn a finished build into a failed job, so it only goes to the job log.
    await rm(workDir, { recursive: true, force: true }).catch((error: unknown) =>
      hooks.onLine?.(`mirrorfleet: cannot remove the scratch folder ${workDir}: ${error instanceof Error ? error.message : String(error)}`),
    );
  }
}

/** Returns the registry settings a builder needs: hosts reached over plain HTTP, and credentials by host. */
function registrySettings(config: Config): Pick<BuildSpec, 'insecureRegistries' | 'credentials'> {
  const insecureRegistries = config.registries.filter((entry) => entry.insecure).map((entry) => entry.host);
  const credentials: BuildSpec['credentials'] = [];
  for (const entry of config.registries) {
    if (entry.username !== undefined && entry.password !== undefined) credentials.push({ host: entry.host, username: entry.username, password: entry.password });
  }
  return { insecureRegistries, credentials };
}

/**
 * Records that the user deploys the built image, under the job's lease. This releases the user's other
 * images of the build repository, and schedules a sweep for when the previous-image retention has passed.
 */
async function recordBuildUse(
  context: BuildContext,
  registry: MirrorRegistryConfig,
  store: ReferenceStore,
  client: RegistryClient,
  lease: Lease,
  use: { image: ImageName; user: User; mediaType: string | undefined; requestedAt?: number | undefined },
): Promise<void> {
  const released = await recordImageUse(store, client, lease, { ...use, supersede: 'previous' });
  if (!released.some((entry) => entry.usesLeft === 0)) return;

  const retentionSeconds = registry.previousImageRetentionSeconds ?? DEFAULTS.previousImageRetentionSeconds;
  const dueAt = (await store.serverTime()) + retentionSeconds * 1000;
  const scheduler = context.sweeps ?? sweepSchedulerFor(context.redis, context.config.redis.keyPrefix);
  await scheduler.scheduleSweep(registry.name, dueAt);
}

/** Writes each secret value to a file of its own (mode 0600) and returns the builder's `--secret` entries. */
async function writeSecretFiles(directory: string, variables: BuildVariable[]): Promise<BuildSpec['secrets']> {
  await mkdir(directory, { mode: 0o700 });
  const secrets: BuildSpec['secrets'] = [];
  for (const [index, variable] of variables.filter((entry) => entry.secret).entries()) {
    const file = join(directory, String(index));
    // `--secret id=NAME,src=FILE` splits at commas, so a comma in the temporary folder's path would break it.
    if (file.includes(',')) throw new MirrorfleetError('INTERNAL', `the temporary folder ${directory} contains a comma, which builders cannot take in a secret file path; set TMPDIR to another folder`);
    await writeFile(file, variable.value, { mode: 0o600 });
    secrets.push({ id: variable.name, file });
  }
  return secrets;
}
