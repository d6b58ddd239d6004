import { RegistryError } from '../errors.ts';
import type { RegistryClient } from '../registry/client.ts';
import { isIndexType, parseManifest } from '../registry/media-types.ts';
import { LeaseLostError, type Lease } from './lease.ts';
import type { IndexEdge, ReferenceStore } from './store.ts';
import type { ImageName, ReleaseKind, User } from './types.ts';

/**
 * Records that `user` deploys `image`, with the index records under it, while the caller holds `lease`
 * on the image's repository. Index records come from the store when it has them (they never change for
 * a digest), else from one GET of each index in the mirror registry. `extraEdges` records more children
 * of manifests under the image, such as its referrers (signatures, attestations) and the fallback tag
 * indexes that list them, so a sweep deletes them after their subject and never before it.
 * With `releaseLease`, the same script gives the lease back once the use is recorded, for a caller that
 * records one use and needs the lease no longer.
 * Returns the user's other images of the repository that `supersede` released, with their uses left.
 * Throws LeaseLostError when the lease expired first, so the job is redone from the start.
 */
export async function recordImageUse(
  store: ReferenceStore,
  client: RegistryClient,
  lease: Lease,
  use: {
    image: ImageName;
    user: User;
    mediaType?: string | undefined;
    supersede?: ReleaseKind | undefined;
    extraEdges?: readonly IndexEdge[];
    releaseLease?: boolean;
    /** Time the request was made (ms); see RecordUseInput.requestedAt. */
    requestedAt?: number | undefined;
  },
): Promise<Array<{ image: ImageName; usesLeft: number }>> {
  const edges = [...(await indexEdges(store, client, lease.registry, use.image.repository, use.image.digest, use.mediaType)), ...(use.extraEdges ?? [])];
  if (lease.lost) throw new LeaseLostError(lease.registry, lease.repository);
  const releaseLease = use.releaseLease === true;
  const outcome = await store.recordUse(lease.registry, {
    image: use.image,
    user: use.user,
    leaseToken: lease.token,
    edges,
    supersede: use.supersede,
    releaseLease,
    requestedAt: use.requestedAt,
  });
  if (!outcome.recorded) throw new LeaseLostError(lease.registry, lease.repository);
  if (releaseLease) lease.released = true;
  return outcome.released;
}

/**
 * Returns the parent and child digests of every index under `digest`, nested indexes included, or none
 * when `mediaType` names a single image or the store already has the records.
 */
export async function indexEdges(
  store: ReferenceStore,
  client: RegistryClient,
  registry: string,
  repository: string,
  digest: string,
  mediaType?: string,
): Promise<IndexEdge[]> {
  if (mediaType !== undefined && !isIndexType(mediaType)) return [];
  if (await store.hasChildren(registry, repository, digest)) return [];

  const manifest = await client.getManifest(repository, digest);
  if (!manifest) {
    throw new RegistryError('REGISTRY_NOT_FOUND', `cannot record the use of ${registry}/${repository}@${digest}: the registry no longer has that manifest`, {
      registry,
      operation: `reading manifest ${repository}@${digest}`,
      status: 404,
      retryable: true,
    });
  }
  if (!isIndexType(manifest.mediaType)) return [];
  const parsed = parseManifest(manifest.mediaType, JSON.parse(manifest.bytes.toString('utf8')));
  if (parsed.kind !== 'index') return [];

  const edges: IndexEdge[] = parsed.manifests.map((child) => [digest, child.digest] as const);
  for (const child of parsed.manifests) {
    if (isIndexType(child.mediaType)) edges.push(...(await indexEdges(store, client, registry, repository, child.digest, child.mediaType)));
  }
  return edges;
}
