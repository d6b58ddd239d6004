import type { MirrorRegistryConfig } from '../config/config.ts';
import { parseReference, type ImageReference } from '../image-ref/reference.ts';
import type { TargetProvider } from '../providers/provider.ts';
import { withLeases, type Lease } from '../refcounts/lease.ts';
import { recordImageUse } from '../refcounts/record.ts';
import type { ReferenceStore } from '../refcounts/store.ts';
import { formatImageKey, formatUser, type DroppedUse, type ImageName, type User } from '../refcounts/types.ts';
import { describeImage, emptyResult, providerOf, storeOf, type CleanupContext } from './context.ts';
import { reportDrops } from './release.ts';
import { selectRegistries, storeTargets } from './scope.ts';
import type { CleanupResult, ReconcileRequest } from '../../queues/cleanup.ts';

/**
 * The reconcile job: rebuilds a cluster's uses from the list of images it really runs, after a missed
 * release or a lost Redis.
 * 1. Sort the listed images: those inside a selected mirror registry, the rest ignored.
 * 2. Per registry host, under leases on the listed repositories, check each image in the registry with
 *    a HEAD, which also finds the digest a tag points at, and record its use. An image the registry does
 *    not have is reported missing.
 * 3. Drop the cluster's other uses there, except uses recorded after the reconcile started (a mirror
 *    that finished meanwhile knows better than the list).
 * Running it twice with the same list records the same uses and drops nothing the second time.
 */

interface ListedImage {
  reference: string;
  parsed: ImageReference;
  service: string | undefined;
  registry: MirrorRegistryConfig;
}

export async function runReconcile(request: ReconcileRequest, context: CleanupContext): Promise<CleanupResult> {
  const started = Date.now();
  const result = emptyResult('reconcile', context.jobId, request.dryRun);
  const store = storeOf(context);
  const selected = selectRegistries(context.config, request.registry);
  const providers = await Promise.all(selected.map(async (registry) => ({ registry, provider: await providerOf(context, registry) })));
  const startedAt = await store.serverTime();

  // 1. Sort, dropping repeats: a list from kubectl names an image once per pod.
  const byHost = new Map<string, ListedImage[]>();
  const seen = new Set<string>();
  for (const entry of request.images) {
    const key = `${entry.service ?? ''} ${entry.reference}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const parsed = parseReference(entry.reference);
    const owner = ownerAmong(providers, parsed);
    if (!owner) {
      if (!result.ignored.includes(entry.reference)) result.ignored.push(entry.reference);
      continue;
    }
    const list = byHost.get(owner.host) ?? [];
    list.push({ reference: entry.reference, parsed, service: entry.service, registry: owner });
    byHost.set(owner.host, list);
  }

  // 2 and 3, per registry host.
  for (const { host, prefix } of storeTargets(context.config, selected, request.registry === undefined)) {
    const listed = byHost.get(host) ?? [];
    const client = context.clients.get(host);
    const keep: Array<{ user: User; image: ImageName }> = [];

    const recordAll = async (leases: Map<string, Lease> | undefined) => {
      for (const item of listed) {
        const { repository, tag, digest } = item.parsed;
        const head = await client.headManifest(repository, digest ?? tag!);
        if (!head) {
          result.missing.push(item.reference);
          continue;
        }
        // A reference with a digest runs that digest whatever its tag points at now, so the use is by digest.
        const image: ImageName = digest !== undefined ? { repository, digest } : { repository, tag, digest: head.digest };
        const user: User = { cluster: request.cluster, ...(item.service === undefined ? {} : { service: item.service }) };
        const lease = leases?.get(repository);
        if (lease) await recordImageUse(store, client, lease, { image, user, mediaType: head.mediaType });
        keep.push({ user, image });
        result.recorded.push({ ...describeImage(host, image), user: formatUser(user) });
      }
      const drops = await store.dropStaleUses(host, request.cluster, startedAt, keep, { dryRun: request.dryRun, prefix });
      if (request.dryRun) await countUnrecordedKeeps(store, host, keep, drops);
      await reportDrops(context, store, host, drops, result);
    };

    if (request.dryRun) {
      await recordAll(undefined);
    } else {
      const repositories = listed.map((item) => item.parsed.repository);
      await withLeases(store, host, repositories, recordAll, context.leases);
    }
  }

  result.durationMs = Date.now() - started;
  return result;
}

/**
 * Adds to each dry-run drop the uses of its image that the real run would record before dropping. A dry
 * run records nothing, so the store does not count a listed use that is new, such as an image that moves
 * from the whole cluster to one service.
 */
async function countUnrecordedKeeps(store: ReferenceStore, host: string, keep: Array<{ user: User; image: ImageName }>, drops: DroppedUse[]): Promise<void> {
  const keptUsers = new Map<string, Set<string>>();
  for (const { user, image } of keep) {
    const key = formatImageKey(image);
    keptUsers.set(key, (keptUsers.get(key) ?? new Set()).add(formatUser(user)));
  }
  const added = new Map<string, number>();
  for (const drop of drops) {
    const key = formatImageKey(drop.image);
    if (!added.has(key)) {
      const recorded = new Set(await store.usersOf(host, drop.image));
      added.set(key, [...(keptUsers.get(key) ?? [])].filter((user) => !recorded.has(user)).length);
    }
    drop.usesLeft += added.get(key)!;
  }
}

/** Returns the selected mirror registry whose location contains `reference`, the longest prefix first. */
function ownerAmong(providers: Array<{ registry: MirrorRegistryConfig; provider: TargetProvider }>, reference: ImageReference): MirrorRegistryConfig | undefined {
  let owner: MirrorRegistryConfig | undefined;
  for (const { registry, provider } of providers) {
    if (!provider.contains(reference)) continue;
    if (!owner || registry.prefix.length > owner.prefix.length) owner = registry;
  }
  return owner;
}
