import { randomBytes } from 'node:crypto';
import type { MirrorRegistryConfig } from '../config/config.ts';
import { DEFAULTS } from '../config/schema.ts';
import { BlobLocations } from '../dedupe/blob-locations.ts';
import { DEFAULT_LOCK_OPTIONS, withLock } from '../dedupe/lock.ts';
import { MirrorfleetError, RegistryError } from '../errors.ts';
import type { TargetProvider } from '../providers/provider.ts';
import { parseManifest } from '../registry/media-types.ts';
import { sweepLockKey } from '../refcounts/keys.ts';
import type { ReferenceStore } from '../refcounts/store.ts';
import { formatImageKey } from '../refcounts/types.ts';
import { AuditLog } from './audit.ts';
import { currentTime, describeImage, emptyResult, providerOf, storeOf, type CleanupContext } from './context.ts';
import { keepEverything, planRepository, type PlannedDeletion, type RepositoryPlan } from './plan.ts';
import { ownerOf, retentionOf, selectRegistries } from './scope.ts';
import type { CleanupResult, DeletedImage, SweepLimit, SweepRequest } from '../../queues/cleanup.ts';

/**
 * The sweep job: deletes the images that the records show unused for longer than their retention time
 * (see plan.ts for the rules), one repository at a time:
 * 1. read the repository's records, revision first, and plan;
 * 2. claim the repository: only if no job holds a lease on it and no use was recorded since step 1;
 * 3. delete in plan order, checking before each request that the claim still holds, and write each
 *    deletion to the audit stream;
 * 4. forget the records of what went, and the blob-location records of its blobs, under the claim.
 * A crash anywhere leaves records that the next sweep plans from again; a manifest already gone counts as
 * deleted, so the outcome is the same as one uninterrupted run.
 */

const DEFAULT_CLAIM_TTL_MS = 60_000;
// A repository skipped because a job held a lease on it, or another sweep a claim, is tried again this
// much later. Images kept by the limit are not: the limit exists to stop a sweep gone wrong, so going on
// takes a person (or the repeatable sweep).
const RETRY_SKIPPED_MS = 60_000;
// Plans that the repository's revision invalidates before the claim are made again this often.
const PLAN_ATTEMPTS = 3;

export async function runSweep(request: SweepRequest, context: CleanupContext): Promise<CleanupResult> {
  const started = Date.now();
  const result = emptyResult('sweep', context.jobId, request.dryRun);
  for (const registry of selectRegistries(context.config, request.registry)) {
    await sweepRegistry(registry, request, context, result);
  }
  result.durationMs = Date.now() - started;
  return result;
}

async function sweepRegistry(registry: MirrorRegistryConfig, request: SweepRequest, context: CleanupContext, result: CleanupResult): Promise<void> {
  const store = storeOf(context);
  const provider = await providerOf(context, registry);
  const host = registry.host;
  const keys = { prefix: context.config.redis.keyPrefix };

  await withLock(
    context.redis,
    sweepLockKey(keys, host),
    async () => {
      const repositories = (await store.repositories(host)).filter((repository) => ownerOf(context.config, host, repository) === registry);
      const known = await store.imageCount(host, repositories);
      const maxDeletePercent = request.maxDeletePercent ?? registry.maxDeletePercent ?? DEFAULTS.maxDeletePercent;
      // NOTE: rounded down, so a registry that records fewer than 100 / maxDeletePercent images (one image
      // at the default 50) loses none; a sweep with --max-delete-percent 100 takes it.
      const allowed = Math.floor((known * maxDeletePercent) / 100);
      const now = await currentTime(context, store);
      const limit: SweepLimit = { registry: registry.name, maxDeletePercent, known, allowed, removed: 0, reached: false };

      let nextDue: number | undefined;
      for (const repository of repositories) {
        const budget = allowed - limit.removed;
        const plan = await sweepRepository({ store, provider, host, repository, now, budget, registry, request, context, result });
        limit.removed += plan.imagesRemoved;
        if (plan.limited) limit.reached = true;
        for (const kept of plan.kept) {
          if (kept.deletableAt !== undefined) nextDue = Math.min(nextDue ?? Infinity, kept.deletableAt);
          if (kept.reason === 'lease' || kept.reason === 'busy') nextDue = Math.min(nextDue ?? Infinity, now + RETRY_SKIPPED_MS);
        }
      }

      if (limit.reached) {
        limit.message =
          `the sweep of ${registry.name} stopped at its limit: ${limit.removed} of ${known} recorded images removed ` +
          `(maxDeletePercent ${maxDeletePercent}); the next sweep continues, or raise maxDeletePercent for this run after checking the kept list`;
      }
      result.limits.push(limit);
      if (!request.dryRun && nextDue !== undefined) await context.scheduler?.scheduleSweep(registry.name, nextDue);
    },
    context.locks ?? DEFAULT_LOCK_OPTIONS,
  );
}

interface RepositorySweep {
  store: ReferenceStore;
  provider: TargetProvider;
  host: string;
  repository: string;
  now: number;
  budget: number;
  registry: MirrorRegistryConfig;
  request: SweepRequest;
  context: CleanupContext;
  result: CleanupResult;
}

/** Plans, claims and deletes in one repository; adds to `result` and returns the plan it followed. */
async function sweepRepository(sweep: RepositorySweep): Promise<RepositoryPlan> {
  const { store, provider, host, repository, now, budget, registry, request, context, result } = sweep;
  let plan: RepositoryPlan | undefined;

  for (let attempt = 1; attempt <= PLAN_ATTEMPTS; attempt += 1) {
    const state = await store.readRepository(host, repository);
    plan = planRepository(state, { now, ...retentionOf(registry), canDeleteTags: provider.canDeleteTags, budget });
    const work = plan.deletions.length > 0 || plan.forget.length > 0;
    if (!work) return record(plan, [], host, result);
    if (state.leases > 0) return record(keepEverything(plan, 'lease', LEASE_DETAIL), [], host, result);
    if (request.dryRun) return record(plan, plan.deletions.map((deletion) => deletedImage(host, repository, deletion, 'planned')), host, result);

    const token = randomBytes(16).toString('hex');
    const claimTtlMs = context.claimTtlMs ?? DEFAULT_CLAIM_TTL_MS;
    const claim = await store.claimRepository(host, repository, token, state.revision, claimTtlMs);
    if (claim === 'leased') return record(keepEverything(plan, 'lease', LEASE_DETAIL), [], host, result);
    if (claim === 'busy') return record(keepEverything(plan, 'busy', 'another sweep is deleting in this repository'), [], host, result);
    if (claim === 'changed') continue;

    try {
      const deleted = await deleteUnderClaim({ ...sweep, plan, token, claimTtlMs });
      return record(plan, deleted, host, result);
    } finally {
      await store.releaseClaim(host, repository, token);
    }
  }

  const detail = 'new uses were recorded in this repository while the sweep planned; the next sweep tries again';
  return record(keepEverything(plan!, 'busy', detail), [], host, result);
}

const LEASE_DETAIL = 'a running job holds a lease on this repository; the next sweep tries again';

function record(plan: RepositoryPlan, deleted: DeletedImage[], host: string, result: CleanupResult): RepositoryPlan {
  result.deleted.push(...deleted);
  for (const kept of plan.kept) {
    result.kept.push({
      ...describeImage(host, kept.image),
      reason: kept.reason,
      detail: kept.detail,
      ...(kept.deletableAt === undefined ? {} : { deletableAt: new Date(kept.deletableAt).toISOString() }),
    });
  }
  for (const forgotten of plan.forget) result.forgotten.push({ ...describeImage(host, forgotten.image), reason: forgotten.reason });
  return plan;
}

function deletedImage(host: string, repository: string, deletion: PlannedDeletion, outcome: DeletedImage['result']): DeletedImage {
  const first = deletion.images[0];
  const tag = deletion.method === 'tag' ? deletion.reference : first?.tag;
  return {
    ...describeImage(host, { repository, ...(tag === undefined ? {} : { tag }), digest: deletion.digest }),
    method: deletion.method,
    reference: deletion.reference,
    tags: deletion.tags,
    result: outcome,
    images: deletion.images.map((image) => `${host}/${formatImageKey(image)}`),
    reason: deletion.reason,
  };
}

/**
 * Sends the plan's DELETE requests while the claim holds, then forgets what went. What was deleted before
 * a failure is forgotten too, so a retry starts from the truth.
 */
async function deleteUnderClaim(sweep: RepositorySweep & { plan: RepositoryPlan; token: string; claimTtlMs: number }): Promise<DeletedImage[]> {
  const { store, provider, host, repository, plan, token, claimTtlMs, context } = sweep;
  const client = context.clients.get(host);
  const audit = new AuditLog(context.redis, { prefix: context.config.redis.keyPrefix, maxEntries: context.config.cleanup.auditMaxEntries });
  const locations = new BlobLocations(context.redis, { prefix: context.config.redis.keyPrefix });

  let claimLost = false;
  const renewal = setInterval(() => {
    store.renewClaim(host, repository, token, claimTtlMs).then(
      (renewed) => {
        if (!renewed) claimLost = true;
      },
      // A failed renewal is retried at the next interval; the claim stays valid until its expiry.
      () => undefined,
    );
  }, Math.max(10, Math.floor(claimTtlMs / 3)));

  const deleted: DeletedImage[] = [];
  const deletedDigests: string[] = [];
  const forgetKeys = plan.forget.map(({ image }) => formatImageKey(image));
  const blobs: string[] = [];
  try {
    for (const deletion of plan.deletions) {
      if (claimLost || !(await store.holdsClaim(host, repository, token))) {
        throw new MirrorfleetError('TIMEOUT', `the sweep lost its claim on ${host}/${repository} while deleting (Redis was unreachable for too long); it will be retried`, {
          retryable: true,
        });
      }

      let outcome: 'deleted' | 'absent';
      if (deletion.method === 'digest') {
        // Read first: the blobs it lists lose their location records once it is gone.
        const manifest = await client.getManifest(repository, deletion.digest);
        outcome = manifest === undefined ? 'absent' : await deleteImage(provider, host, repository, deletion);
        deletedDigests.push(deletion.digest);
        if (manifest) blobs.push(...blobsOf(manifest.mediaType, manifest.bytes));
      } else {
        outcome = await deleteImage(provider, host, repository, deletion);
        forgetKeys.push(...deletion.images.map(formatImageKey));
      }

      const entry = deletedImage(host, repository, deletion, outcome);
      deleted.push(entry);
      const auditEntry = {
        registry: host,
        repository,
        reference: deletion.reference,
        method: deletion.method,
        result: outcome,
        digest: deletion.digest,
        images: entry.images,
        reason: deletion.reason,
        jobId: context.jobId,
        at: Date.now(),
      };
      await audit.append(auditEntry);
      context.onDeletion?.(auditEntry);
    }
  } finally {
    clearInterval(renewal);
    if (deletedDigests.length > 0 || forgetKeys.length > 0) {
      const forgotten = await store.forget(host, repository, token, deletedDigests, forgetKeys);
      // Without the claim the records stay; the next sweep finds the manifests absent and forgets them then.
      if (forgotten) await locations.forget(host, blobs, repository);
    }
  }
  return deleted;
}

async function deleteImage(provider: TargetProvider, host: string, repository: string, deletion: PlannedDeletion): Promise<'deleted' | 'absent'> {
  const image = deletion.method === 'tag' ? { tag: deletion.reference, digest: deletion.digest } : { digest: deletion.digest };
  try {
    return await provider.deleteImage(repository, image);
  } catch (error) {
    // distribution returns 405 UNSUPPORTED while deletes are disabled in its configuration.
    if (error instanceof RegistryError && error.status === 405) {
      throw new RegistryError(
        error.code,
        `${error.message}; ${host} does not allow deletes: enable them (distribution: storage.delete.enabled: true) or stop sweeping this registry`,
        { registry: error.registry, operation: error.operation, status: error.status, retryable: false, cause: error },
      );
    }
    throw error;
  }
}

function blobsOf(mediaType: string, bytes: Buffer): string[] {
  try {
    const parsed = parseManifest(mediaType, JSON.parse(bytes.toString('utf8')));
    return parsed.kind === 'image' ? [parsed.config.digest, ...parsed.layers.map((layer) => layer.digest)] : [];
  } catch {
    // A manifest that does not parse still goes; only the blob-location hints of its blobs stay behind.
    return [];
  }
}
