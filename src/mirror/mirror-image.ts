import type { Redis } from 'ioredis';
import { requireMirrorRegistry, type Config } from '../config/config.ts';
import { formatReference, parseReference } from '../image-ref/reference.ts';
import { createProvider } from '../providers/index.ts';
import { copyImage, copyReferrers, type CopyImageOptions, type CopyProgress } from '../registry/copy.ts';
import { DEFAULT_TAG_LIST_MAX_AGE_MS, TagListCache, type ReferrerSelection, type ReferrersResult } from '../registry/referrers.ts';
import { parsePlatform } from '../registry/media-types.ts';
import type { ManifestHead, RegistryClient } from '../registry/client.ts';
import { BlobLocations } from '../dedupe/blob-locations.ts';
import { blobLockKey, manifestLockKey } from '../dedupe/keys.ts';
import { DEFAULT_LOCK_OPTIONS, withLock, withLockUnless, type LockOptions } from '../dedupe/lock.ts';
import { DEFAULTS } from '../config/schema.ts';
import type { MirrorRegistryConfig } from '../config/config.ts';
import { sweepSchedulerFor, type SweepScheduler } from '../cleanup/schedule.ts';
import { DEFAULT_LEASE_OPTIONS, withLease, type Lease, type LeaseOptions } from '../refcounts/lease.ts';
import { recordImageUse } from '../refcounts/record.ts';
import { ReferenceStore, type IndexEdge } from '../refcounts/store.ts';
import type { ImageName, User } from '../refcounts/types.ts';
import type { MirrorRequest, MirrorResult } from '../../queues/mirror.ts';
import type { RegistryClients } from './clients.ts';
import { readImagePlatforms } from './image-platform.ts';
import { SourceHeads } from './source-heads.ts';
import { ManifestCache } from '../registry/manifest-cache.ts';

/**
 * The mirror job itself, without the queue around it. Decides in this order:
 * 1. the source already lies in the mirror registry's location: `not-needed`;
 * 2. the target tag resolves to the digest the source resolves to: `skipped`;
 * 3. the target tag exists with other content (a reused tag): copy, `updated`;
 * 4. otherwise: copy, `copied`.
 * Steps 2 to 4 run under a fleet-wide lock on the target tag, so of many identical requests one copies
 * and the others find the tag in place.
 *
 * Every step runs under a lease on the repository of the image it returns, until the use is recorded
 * for the cluster and service, so a sweep at the same moment cannot delete that image. In service mode,
 * recording the use also releases the service's previous image of the same repository (the same source
 * repository), and a sweep is scheduled for when its retention time has passed.
 */

export interface MirrorContext {
  config: Config;
  redis: Redis;
  clients: RegistryClients;
  locks?: LockOptions;
  leases?: LeaseOptions;
  /** Enqueues the sweep of a released previous image; a cleanup queue client on `redis` when absent. */
  sweeps?: SweepScheduler;
  /** Recent tag lists of source repositories for referrer copies; one per RegistryClients when absent. */
  referrerTagLists?: TagListCache;
  /** Source tag resolutions shared by the jobs of a process. One per RegistryClients when absent. */
  sourceHeads?: SourceHeads;
}

/**
 * Returns a function that gives each RegistryClients (that is, each process) one value made by `create`,
 * shared by every job of that process.
 */
function perProcess<T extends object>(create: () => T): (clients: RegistryClients) => T {
  const values = new WeakMap<RegistryClients, T>();
  return (clients) => {
    let value = values.get(clients);
    if (!value) {
      value = create();
      values.set(clients, value);
    }
    return value;
  };
}

// Source tag lists, so that the jobs for an image that is already mirrored do not each list the source
// repository's tags.
const tagListCacheFor = perProcess(() => new TagListCache({ maxAgeMs: DEFAULT_TAG_LIST_MAX_AGE_MS, maxEntries: 1_000 }));
const sourceHeadsFor = perProcess(() => new SourceHeads());
const manifestCacheFor = perProcess(() => new ManifestCache());

export interface MirrorHooks {
  jobId: string;
  /**
   * Time the request was made (ms), such as the job's creation time. In service mode the newest request
   * decides which image is the service's current one, whichever job finishes last.
   * NOTE: times from different producers are compared, so their clocks must agree to within the gap
   * between two requests for one service.
   */
  requestedAt?: number;
  onProgress?: (progress: CopyProgress) => void;
  /**
   * Aborted when the job runs out of time. No blob transfer starts after that, and a blob that finishes
   * after it fails the copy, so the image is not tagged.
   * NOTE: copyImage takes no signal, so transfers in flight run to their end, and an abort after the last
   * blob has been stored does not stop the manifest pushes that follow.
   */
  signal?: AbortSignal;
}

export async function mirrorImage(request: MirrorRequest, context: MirrorContext, hooks: MirrorHooks): Promise<MirrorResult> {
  const started = Date.now();
  const { config, redis, clients } = context;
  const keys = { prefix: config.redis.keyPrefix };
  const locks = context.locks ?? DEFAULT_LOCK_OPTIONS;

  // 1. Resolve the mirror registry. An undeclared one is rejected, so whoever can enqueue cannot send
  //    images to a registry of their choosing.
  const registry = requireMirrorRegistry(config, request.registry);
  const provider = await createProvider(registry, config, clients);
  const source = parseReference(request.source);
  const sourceClient = clients.get(source.registry);
  const base = { jobId: hooks.jobId, source: formatReference(source) };

  const store = new ReferenceStore(redis, keys);
  const user: User = { cluster: request.cluster, service: request.service };
  const leases = context.leases ?? DEFAULT_LEASE_OPTIONS;
  const sourceHeads = context.sourceHeads ?? sourceHeadsFor(clients);
  const resolveSource = () => sourceHeads.resolve(sourceClient, source.repository, source.tag!, hooks.requestedAt);

  if (provider.contains(source)) {
    return withLease(store, provider.host, source.repository, async (lease) => {
      const head = source.digest === undefined ? await resolveSource() : undefined;
      const digest = source.digest ?? head!.digest;
      // A source with a digest runs that digest whatever its tag points at now, so the use is by digest.
      const image: ImageName = source.digest === undefined ? { repository: source.repository, tag: source.tag, digest } : { repository: source.repository, digest };
      await recordMirrorUse(context, registry, store, sourceClient, lease, { image, user, mediaType: head?.mediaType, serviceMode: request.mode === 'service', requestedAt: hooks.requestedAt });
      const repository = `${source.registry}/${source.repository}`;
      return {
        ...base,
        action: 'not-needed' as const,
        sourceDigest: digest,
        target: formatReference(source),
        pinned: `${repository}@${digest}`,
        digest,
        digestChanged: false,
        platforms: [],
        ...zeroCounts(),
        durationMs: Date.now() - started,
      };
    }, leases);
  }

  const target = provider.targetFor(source, { mode: request.mode, cluster: request.cluster, service: request.service });
  await provider.ensureRepository(target.repository);
  const targetClient = clients.get(provider.host);
  const targetName = `${provider.host}/${target.repository}`;
  const locations = new BlobLocations(redis, keys);

  const sourceLocation = { client: sourceClient, repository: source.repository, ...(source.tag ? { tag: source.tag } : {}), ...(source.digest ? { digest: source.digest } : {}) };
  const referrers = request.referrers ?? registry.referrers ?? DEFAULTS.referrers;
  const copyOptions: CopyImageOptions = {
    mountSources: (digest) => locations.repositories(provider.host, digest),
    onBlobStored: (digest, repository) => locations.record(provider.host, digest, repository),
    blobGate: async (digest, work, stopWaiting) => {
      hooks.signal?.throwIfAborted();
      const gated = await withLockUnless(
        redis,
        blobLockKey(keys, provider.host, digest),
        async (lockLost) => {
          hooks.signal?.throwIfAborted();
          await work(hooks.signal ? AbortSignal.any([hooks.signal, lockLost]) : lockLost);
          hooks.signal?.throwIfAborted();
        },
        async () => (await stopWaiting?.()) ?? false,
        locks,
      );
      hooks.signal?.throwIfAborted();
      return gated.ran;
    },
    monolithicMaxBytes: config.copy.monolithicMaxBytes,
    chunkBytes: config.copy.chunkBytes,
    concurrency: config.copy.blobConcurrency,
    ...(hooks.onProgress ? { onProgress: hooks.onProgress } : {}),
    referrers,
    referrerFailures: registry.referrerFailures ?? DEFAULTS.referrerFailures,
    // Not the tag lock above: merges into one fallback tag come from jobs for other tags of the repository too.
    fallbackTagLock: (key, work) => withLock(redis, `${keys.prefix}:lock:referrers:${key}`, work, locks),
    referrerTagLists: context.referrerTagLists ?? tagListCacheFor(clients),
  };

  return withLease(store, provider.host, target.repository, async (lease) => {
    let mediaType: string | undefined;
    // The target tag's HEAD of the latest warm check, which the copy reuses instead of sending it again.
    let targetTagHead: { head: ManifestHead | undefined } | undefined;
    // The digest the source tag resolved to in the latest warm check, which the copy reads by.
    let resolvedTagDigest: string | undefined;
    // 2. Warm path without a platform filter: one HEAD at each side, sent at the same time, decides, and
    //    then the referrers, which may have been added at the source since the image was copied.
    const warm = async (): Promise<MirrorResult | undefined> => {
      if (!request.platforms?.length) {
        const [sourceDigest, current] = await Promise.all([
          source.digest ?? resolveSource().then((head) => head.digest),
          // A wrong 404 at the mirror registry only leads to a copy that pushes the same bytes again.
          targetClient.headManifest(target.repository, target.tag, { confirmMissing: false }),
        ]);
        targetTagHead = { head: current };
        if (source.digest === undefined) resolvedTagDigest = sourceDigest;
        if (current?.digest === sourceDigest) {
          mediaType = current.mediaType;
          const referred = await copyReferrers(sourceLocation, { client: targetClient, repository: target.repository, tag: target.tag, digest: sourceDigest }, copyOptions);
          return {
            ...base,
            action: 'skipped' as const,
            sourceDigest,
            target: `${targetName}:${target.tag}`,
            pinned: `${targetName}@${sourceDigest}`,
            digest: sourceDigest,
            digestChanged: false,
            platforms: [],
            ...zeroCounts(),
            manifests: { copied: 0, present: 1 },
            blobs: referred.blobs,
            bytes: referred.bytes,
            ...referrerFields(referrers, referred),
            durationMs: Date.now() - started,
          };
        }
      }
      return undefined;
    };

    // 3 and 4. Copy, with blobs deduplicated across the fleet.
    const copy = async (): Promise<MirrorResult> => {
      const result = await copyImage(sourceLocation, { client: targetClient, repository: target.repository, tag: target.tag }, {
        ...(request.platforms?.length ? { platforms: request.platforms.map(parsePlatform) } : {}),
        ...copyOptions,
        ...(targetTagHead ? { targetTagHead } : {}),
        ...(resolvedTagDigest ? { resolvedTagDigest } : {}),
        manifestCache: manifestCacheFor(clients),
      });
      mediaType = result.mediaType;
      let action: MirrorResult['action'] = 'copied';
      if (result.manifests.copied === 0) action = 'skipped';
      else if (result.previousTargetDigest) action = 'updated';
      // A single image names its platform only in its config blob, which the copy streams without
      // reading it. Two small GETs at the mirror registry read it after a copy, and none on a skip.
      // NOTE: a failed read leaves `platforms` empty, because the image is already in place.
      const platforms =
        result.platforms.length > 0 || action === 'skipped'
          ? result.platforms
          : await readImagePlatforms(targetClient, target.repository, result.targetDigest, result.mediaType).catch(() => []);
      return {
        ...base,
        action,
        sourceDigest: result.sourceDigest,
        target: `${targetName}:${target.tag}`,
        pinned: `${targetName}@${result.targetDigest}`,
        digest: result.targetDigest,
        digestChanged: result.digestChanged,
        platforms,
        manifests: result.manifests,
        blobs: result.blobs,
        bytes: result.bytes,
        ...referrerFields(referrers, result),
        durationMs: Date.now() - started,
      };
    };

    // The warm check runs before the tag lock, so a fleet requesting an image already in place never
    // queues on the lock. Under the lock it runs again only when another worker had the lock first,
    // because that worker may have just copied the image.
    let waited = false;
    const tagLock = manifestLockKey(keys, provider.host, target.repository, target.tag);
    const warmOrCopy = async () => (waited ? await warm() : undefined) ?? (await copy());
    const onWait = () => {
      waited = true;
    };
    // Jobs for one target that start together wait for the first one's copy. Once its holder is gone,
    // each waiter runs the warm check without the lock, as it did before waiting, so they do not pass
    // the lock from one to the next only to find the image in place.
    let firstHolder: string | null | undefined;
    const holderGone = async () => {
      const holder = await redis.get(tagLock);
      if (firstHolder === undefined) firstHolder = holder;
      return holder !== firstHolder;
    };
    let mirrored = await warm();
    if (!mirrored) {
      const gated = await withLockUnless<MirrorResult>(redis, tagLock, warmOrCopy, holderGone, locks, onWait);
      mirrored = gated.ran ? gated.value : ((await warm()) ?? (await withLock<MirrorResult>(redis, tagLock, warmOrCopy, locks, onWait)));
    }

    const image: ImageName = { repository: target.repository, tag: target.tag, digest: mirrored.digest };
    // Referrers and their fallback tag indexes belong to their subject: they go with it, never before it.
    const extraEdges: IndexEdge[] = [
      ...(mirrored.referrers ?? []).map((referrer) => [referrer.subject, referrer.digest] as const),
      ...(mirrored.referrerIndexes ?? []).map((index) => [index.subject, index.digest] as const),
    ];
    await recordMirrorUse(context, registry, store, targetClient, lease, { image, user, mediaType, serviceMode: request.mode === 'service', extraEdges, requestedAt: hooks.requestedAt });
    return mirrored;
  }, leases);
}

/**
 * Records the use of the image a mirror job returns, under the job's lease. In service mode this
 * releases the service's other images of the same repository. A sweep is then scheduled for when the
 * previous-image retention time has passed.
 */
async function recordMirrorUse(
  context: MirrorContext,
  registry: MirrorRegistryConfig,
  store: ReferenceStore,
  client: RegistryClient,
  lease: Lease,
  use: { image: ImageName; user: User; mediaType: string | undefined; serviceMode: boolean; extraEdges?: IndexEdge[]; requestedAt?: number | undefined },
): Promise<void> {
  const supersede = use.serviceMode ? 'previous' : undefined;
  // The use is the last thing the job does under its lease, so the same script gives the lease back.
  const released = await recordImageUse(store, client, lease, {
    image: use.image,
    user: use.user,
    mediaType: use.mediaType,
    supersede,
    extraEdges: use.extraEdges ?? [],
    releaseLease: true,
    requestedAt: use.requestedAt,
  });
  if (!released.some((entry) => entry.usesLeft === 0)) return;

  const retentionSeconds = registry.previousImageRetentionSeconds ?? DEFAULTS.previousImageRetentionSeconds;
  const dueAt = (await store.serverTime()) + retentionSeconds * 1000;
  const scheduler = context.sweeps ?? sweepSchedulerFor(context.redis, context.config.redis.keyPrefix);
  await scheduler.scheduleSweep(registry.name, dueAt);
}

/**
 * Returns the referrer fields of a result: the referrers at the target, those that failed, and the
 * fallback indexes that list them. Each list is left out when empty, so the result of an image without
 * referrers keeps the keys it had before referrers were copied.
 */
function referrerFields(selection: ReferrerSelection, result: ReferrersResult): Pick<MirrorResult, 'referrers' | 'failedReferrers' | 'referrerIndexes'> {
  if (selection === 'off') return {};
  return {
    ...(result.referrers.length > 0 ? { referrers: result.referrers } : {}),
    ...(result.failedReferrers.length > 0 ? { failedReferrers: result.failedReferrers } : {}),
    ...(result.fallbackIndexes.length > 0 ? { referrerIndexes: result.fallbackIndexes } : {}),
  };
}

function zeroCounts(): Pick<MirrorResult, 'manifests' | 'blobs' | 'bytes'> {
  return {
    manifests: { copied: 0, present: 0 },
    blobs: { copied: 0, mounted: 0, present: 0 },
    bytes: { pulled: 0, pushed: 0 },
  };
}
