import type { DroppedUse } from '../refcounts/types.ts';
import { formatImageKey, formatUser } from '../refcounts/types.ts';
import type { ReferenceStore } from '../refcounts/store.ts';
import { currentTime, describeImage, emptyResult, storeOf, type CleanupContext } from './context.ts';
import { ownerOf, retentionOf, selectRegistries, storeTargets } from './scope.ts';
import type { CleanupResult, ReleaseRequest } from '../../queues/cleanup.ts';

/**
 * Runs the release job: a service, or every service of a cluster, was deleted, so its uses go. Nothing is
 * deleted here: an image left without a use waits for its retention time, and a sweep is scheduled for
 * when that has passed. Releasing twice drops nothing the second time.
 */
export async function runRelease(request: ReleaseRequest, context: CleanupContext): Promise<CleanupResult> {
  const started = Date.now();
  const result = emptyResult('release', context.jobId, request.dryRun);
  const store = storeOf(context);
  const selected = selectRegistries(context.config, request.registry);
  const service = request.allServices ? '*' : request.service!;

  for (const { host, prefix } of storeTargets(context.config, selected, request.registry === undefined)) {
    const drops = await store.releaseUses(host, { cluster: request.cluster, service }, { kind: 'released', dryRun: request.dryRun, prefix });
    await reportDrops(context, store, host, drops, result);
  }
  result.durationMs = Date.now() - started;
  return result;
}

/**
 * Adds dropped uses to `result`: each use under `released`, and each image once under `kept`, still in
 * use or retained until when. Schedules a sweep for when the first of them may go.
 */
export async function reportDrops(context: CleanupContext, store: ReferenceStore, host: string, drops: DroppedUse[], result: CleanupResult): Promise<void> {
  const now = await currentTime(context, store);
  const usesLeft = new Map<string, DroppedUse>();
  for (const drop of drops) {
    result.released.push({ ...describeImage(host, drop.image), user: formatUser(drop.user), usesLeft: drop.usesLeft });
    const key = formatImageKey(drop.image);
    const seen = usesLeft.get(key);
    // Uses left fall with every drop of the same image; the smallest count is what remains.
    if (!seen || drop.usesLeft < seen.usesLeft) usesLeft.set(key, drop);
  }

  const dueByRegistry = new Map<string, number>();
  for (const drop of usesLeft.values()) {
    const image = describeImage(host, drop.image);
    if (drop.usesLeft > 0) {
      result.kept.push({ ...image, reason: 'in-use', detail: `still used by ${drop.usesLeft} other user${drop.usesLeft === 1 ? '' : 's'}` });
      continue;
    }
    const owner = ownerOf(context.config, host, drop.image.repository);
    if (!owner) {
      result.kept.push({ ...image, reason: 'retention', detail: 'unused now, but no declared mirror registry owns its repository, so no sweep deletes it' });
      continue;
    }
    const deletableAt = now + retentionOf(owner).releasedRetentionMs;
    result.kept.push({
      ...image,
      reason: 'retention',
      detail: `unused now; retained until ${new Date(deletableAt).toISOString()}`,
      deletableAt: new Date(deletableAt).toISOString(),
    });
    dueByRegistry.set(owner.name, Math.min(dueByRegistry.get(owner.name) ?? Infinity, deletableAt));
  }

  if (result.dryRun) return;
  for (const [registry, dueAt] of dueByRegistry) await context.scheduler?.scheduleSweep(registry, dueAt);
}
