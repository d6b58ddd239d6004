import type { Redis } from 'ioredis';
import { findMirrorRegistry, type Config } from '../config/config.ts';
import { InvalidInputError, RegistryError } from '../errors.ts';
import { formatReference, parseReference, type ImageReference } from '../image-ref/reference.ts';
import { createProvider } from '../providers/index.ts';
import { copyImage, type CopyProgress } from '../registry/copy.ts';
import { parsePlatform } from '../registry/media-types.ts';
import type { RegistryClient } from '../registry/client.ts';
import { BlobLocations } from '../dedupe/blob-locations.ts';
import { blobLockKey, manifestLockKey } from '../dedupe/keys.ts';
import { DEFAULT_LOCK_OPTIONS, withLock, type LockOptions } from '../dedupe/lock.ts';
import type { MirrorRequest, MirrorResult } from '../../queues/mirror.ts';
import type { RegistryClients } from './clients.ts';

/**
 * The mirror job itself, without the queue around it. Decides in this order:
 * 1. the source already lies in the mirror registry's location: `not-needed`;
 * 2. the target tag resolves to the digest the source resolves to: `skipped`;
 * 3. the target tag exists with other content (a reused tag): copy, `updated`;
 * 4. otherwise: copy, `copied`.
 * Steps 2 to 4 run under a fleet-wide lock on the target tag, so of many identical requests one copies
 * and the others find the tag in place.
 */

export interface MirrorContext {
  config: Config;
  redis: Redis;
  clients: RegistryClients;
  locks?: LockOptions;
}

export interface MirrorHooks {
  jobId: string;
  onProgress?: (progress: CopyProgress) => void;
}

export async function mirrorImage(request: MirrorRequest, context: MirrorContext, hooks: MirrorHooks): Promise<MirrorResult> {
  const started = Date.now();
  const { config, redis, clients } = context;
  const keys = { prefix: config.redis.keyPrefix };
  const locks = context.locks ?? DEFAULT_LOCK_OPTIONS;

  // 1. Resolve the mirror registry; an undeclared one is refused, so that nobody who can enqueue can
  //    send images to a registry of their choosing.
  const registry = findMirrorRegistry(config, request.registry);
  if (!registry) {
    const declared = config.mirrorRegistries.map((entry) => `${entry.name} (${entry.host}${entry.prefix ? `/${entry.prefix}` : ''})`).join(', ');
    throw new InvalidInputError(
      `registry "${request.registry}" is not a declared mirror registry; declared: ${declared || 'none'} ` +
        '(declare it in MIRRORFLEET_MIRROR_REGISTRIES or the configuration file)',
    );
  }
  const provider = createProvider(registry, config, clients);
  const source = parseReference(request.source);
  const sourceClient = clients.get(source.registry);
  const base = { jobId: hooks.jobId, source: formatReference(source) };

  if (provider.contains(source)) {
    const digest = source.digest ?? (await resolveDigest(sourceClient, source));
    const repository = `${source.registry}/${source.repository}`;
    return {
      ...base,
      action: 'not-needed',
      sourceDigest: digest,
      target: formatReference(source),
      pinned: `${repository}@${digest}`,
      digest,
      digestChanged: false,
      platforms: [],
      ...zeroCounts(),
      durationMs: Date.now() - started,
    };
  }

  const target = provider.targetFor(source, { mode: request.mode, cluster: request.cluster, service: request.service });
  await provider.ensureRepository(target.repository);
  const targetClient = clients.get(provider.host);
  const targetName = `${provider.host}/${target.repository}`;
  const locations = new BlobLocations(redis, keys);

  return withLock(redis, manifestLockKey(keys, provider.host, target.repository, target.tag), async () => {
    // 2. Warm path without a platform filter: one HEAD at each side decides.
    if (!request.platforms?.length) {
      const sourceDigest = source.digest ?? (await resolveDigest(sourceClient, source));
      const current = await targetClient.headManifest(target.repository, target.tag);
      if (current?.digest === sourceDigest) {
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
          durationMs: Date.now() - started,
        };
      }
    }

    // 3 and 4. Copy, with blobs deduplicated across the fleet.
    const result = await copyImage(
      { client: sourceClient, repository: source.repository, ...(source.tag ? { tag: source.tag } : {}), ...(source.digest ? { digest: source.digest } : {}) },
      { client: targetClient, repository: target.repository, tag: target.tag },
      {
        ...(request.platforms?.length ? { platforms: request.platforms.map(parsePlatform) } : {}),
        mountSources: (digest) => locations.repositories(provider.host, digest),
        onBlobStored: (digest, repository) => locations.record(provider.host, digest, repository),
        blobGate: (digest, work) => withLock(redis, blobLockKey(keys, provider.host, digest), work, locks),
        monolithicMaxBytes: config.copy.monolithicMaxBytes,
        chunkBytes: config.copy.chunkBytes,
        concurrency: config.copy.blobConcurrency,
        ...(hooks.onProgress ? { onProgress: hooks.onProgress } : {}),
      },
    );
    const action = result.manifests.copied === 0 ? 'skipped' : result.previousTargetDigest ? 'updated' : 'copied';
    return {
      ...base,
      action,
      sourceDigest: result.sourceDigest,
      target: `${targetName}:${target.tag}`,
      pinned: `${targetName}@${result.targetDigest}`,
      digest: result.targetDigest,
      digestChanged: result.digestChanged,
      platforms: result.platforms,
      manifests: result.manifests,
      blobs: result.blobs,
      bytes: result.bytes,
      durationMs: Date.now() - started,
    };
  }, locks);
}

async function resolveDigest(client: RegistryClient, source: ImageReference): Promise<string> {
  const head = await client.headManifest(source.repository, source.tag!);
  if (!head) {
    throw new RegistryError('REGISTRY_NOT_FOUND', `source image ${formatReference(source)} does not exist: ${source.registry} has no such tag`, {
      registry: source.registry,
      operation: `checking manifest ${source.repository}:${source.tag}`,
      status: 404,
    });
  }
  return head.digest;
}

function zeroCounts(): Pick<MirrorResult, 'manifests' | 'blobs' | 'bytes'> {
  return {
    manifests: { copied: 0, present: 0 },
    blobs: { copied: 0, mounted: 0, present: 0 },
    bytes: { pulled: 0, pushed: 0 },
  };
}
