import type { ImageName, ImageRecord, RepositoryState } from '../refcounts/types.ts';

/**
 * Decides, from one repository's records, what a sweep deletes and why everything else stays. Pure:
 * no Redis and no registry, so every rule is tested on its own.
 *
 * Rules:
 * - An image is *expired* when it has no use and its retention time has passed since it lost its last
 *   use: the previous-image retention when a newer image of the same service replaced it, the general
 *   retention otherwise. An image in use is never expired, however old.
 * - A manifest is *doomed* when every image recorded for its digest is expired, and every index that
 *   lists it is doomed too, and the store has a record of it as an image or in an index. A manifest
 *   without such a record is never deleted.
 * - By digest (registries that cannot delete a tag alone, such as distribution): doomed manifests are
 *   deleted, every index before the manifests it lists. Deleting a digest removes every tag that points
 *   at it, which is why a digest that a kept image shares stays.
 * - By tag (registries that can): the tag of an expired image is deleted when the tag still points at
 *   that image's digest and deleting it does not leave a needed manifest untagged: another kept tag
 *   points at the digest, or the manifest is doomed. The manifest itself is left to the registry's own
 *   lifecycle rules for untagged manifests. Expired images named by digest, or whose tag has moved on,
 *   are only forgotten.
 * - Budget: at most `budget` images go per plan, oldest first; the rest stay with reason `limit`.
 */

export interface PlanOptions {
  /** Milliseconds, on the clock the records use (the Redis clock). */
  now: number;
  /** Retention after a newer image of the same service replaced an image, in milliseconds. */
  previousRetentionMs: number;
  /** Retention after any other release, in milliseconds. */
  releasedRetentionMs: number;
  canDeleteTags: boolean;
  /** Images this plan may remove. */
  budget: number;
}

export type KeptReason =
  | 'in-use'
  | 'retention'
  | 'no-record'
  | 'shared-digest'
  | 'listed-by-kept-index'
  | 'last-tag'
  | 'limit'
  | 'lease'
  | 'busy';

export interface KeptImage {
  image: ImageName;
  reason: KeptReason;
  /** A sentence for people: who uses it, until when it is retained, which index lists it. */
  detail: string;
  /** With reason `retention`: when the image may go (milliseconds, Redis clock). */
  deletableAt?: number;
}

export interface PlannedDeletion {
  method: 'tag' | 'digest';
  /** The tag or digest that the DELETE request names. */
  reference: string;
  digest: string;
  /** Tags that the store records for this digest, which a deletion by digest removes as well. */
  tags: string[];
  /** Images whose records go with it. */
  images: ImageName[];
  reason: string;
}

export interface RepositoryPlan {
  repository: string;
  /** In the order to run them: every index before the manifests it lists. */
  deletions: PlannedDeletion[];
  /** Expired images forgotten without a registry request (by-tag mode), with why. */
  forget: Array<{ image: ImageName; reason: string }>;
  kept: KeptImage[];
  /** Images that the deletions remove, counted against the budget. */
  imagesRemoved: number;
  /** True when the budget kept something that could otherwise have gone. */
  limited: boolean;
}

type Status = { state: 'used' } | { state: 'no-record' } | { state: 'waiting'; deletableAt: number } | { state: 'expired'; reason: string };

export function planRepository(state: RepositoryState, options: PlanOptions): RepositoryPlan {
  const graph = new RepositoryGraph(state, options);
  return options.canDeleteTags ? planByTag(graph, options) : planByDigest(graph, options);
}

/** Turns every deletion and forgotten image of `plan` into a kept image with `reason`. */
export function keepEverything(plan: RepositoryPlan, reason: KeptReason, detail: string): RepositoryPlan {
  const kept = [
    ...plan.kept,
    ...plan.deletions.flatMap((deletion) => deletion.images.map((image) => ({ image, reason, detail }))),
    ...plan.forget.map(({ image }) => ({ image, reason, detail })),
  ];
  return { repository: plan.repository, deletions: [], forget: [], kept, imagesRemoved: 0, limited: plan.limited };
}

/** The records of one repository with the questions the rules ask of them. */
class RepositoryGraph {
  readonly state: RepositoryState;
  readonly digests: string[];
  private readonly byDigest = new Map<string, ImageRecord[]>();
  private readonly statuses = new Map<string, Status>();

  constructor(state: RepositoryState, options: PlanOptions) {
    this.state = state;
    const digests = new Set<string>();
    for (const record of state.images) {
      const list = this.byDigest.get(record.image.digest) ?? [];
      list.push(record);
      this.byDigest.set(record.image.digest, list);
      digests.add(record.image.digest);
      this.statuses.set(record.key, statusOf(record, options));
    }
    for (const [digest, list] of [...state.children, ...state.parents]) {
      digests.add(digest);
      for (const other of list) digests.add(other);
    }
    this.digests = [...digests].sort();
  }

  records(digest: string): ImageRecord[] {
    return this.byDigest.get(digest) ?? [];
  }

  parents(digest: string): string[] {
    return this.state.parents.get(digest) ?? [];
  }

  status(record: ImageRecord): Status {
    return this.statuses.get(record.key)!;
  }

  expired(record: ImageRecord): boolean {
    return this.status(record).state === 'expired';
  }

  /** Tags the store records as pointing at `digest` now. */
  tagsOf(digest: string): string[] {
    return [...this.state.tags].filter(([, target]) => target === digest).map(([tag]) => tag).sort();
  }

  /** True when `record` names a tag that still points at its digest. */
  isCurrentTag(record: ImageRecord): boolean {
    return record.image.tag !== undefined && this.state.tags.get(record.image.tag) === record.image.digest;
  }

  /** Returns the doomed manifests, given digests that must stay whatever their records show. */
  doomed(forcedKept: ReadonlySet<string>): Set<string> {
    const doomed = new Set(
      this.digests.filter((digest) => {
        if (forcedKept.has(digest)) return false;
        const records = this.records(digest);
        const known = records.length > 0 || this.parents(digest).length > 0;
        return known && records.every((record) => this.expired(record));
      }),
    );
    // A manifest listed by an index that stays, stays too; repeat until nothing changes.
    for (let changed = true; changed; ) {
      changed = false;
      for (const digest of doomed) {
        if (this.parents(digest).some((parent) => !doomed.has(parent))) {
          doomed.delete(digest);
          changed = true;
        }
      }
    }
    return doomed;
  }

  /** When the newest of the digest's records lost its last use; used to take the oldest first. */
  lastUnused(digest: string): number {
    return Math.max(...this.records(digest).map((record) => record.unusedSince ?? 0));
  }
}

function statusOf(record: ImageRecord, options: PlanOptions): Status {
  if (record.users.length > 0) return { state: 'used' };
  if (record.unusedSince === undefined) return { state: 'no-record' };
  const previous = record.kind === 'previous';
  const retentionMs = previous ? options.previousRetentionMs : options.releasedRetentionMs;
  const deletableAt = record.unusedSince + retentionMs;
  if (options.now < deletableAt) return { state: 'waiting', deletableAt };
  const why = previous ? 'a newer image of the same service replaced it' : 'its last use was released';
  return { state: 'expired', reason: `unused since ${new Date(record.unusedSince).toISOString()} because ${why}; retention ${formatDuration(retentionMs)}` };
}

function planByDigest(graph: RepositoryGraph, options: PlanOptions): RepositoryPlan {
  // The budget is spent on the oldest images first; an image over budget stays, and so does every
  // manifest it lists.
  let doomed = graph.doomed(new Set());
  const forced = new Set<string>();
  let spent = 0;
  const withImages = [...doomed].filter((digest) => graph.records(digest).length > 0);
  withImages.sort((a, b) => graph.lastUnused(a) - graph.lastUnused(b) || a.localeCompare(b));
  for (const digest of withImages) {
    const cost = graph.records(digest).length;
    if (spent + cost <= options.budget) spent += cost;
    else forced.add(digest);
  }
  if (forced.size > 0) doomed = graph.doomed(forced);

  const deletions = topologicalOrder(graph, doomed).map((digest): PlannedDeletion => {
    const records = graph.records(digest);
    const deletedParent = graph.parents(digest).find((parent) => doomed.has(parent));
    const reason = records.length > 0 ? expiredReason(graph, records) : `listed only by index ${deletedParent}, which is deleted before it`;
    return { method: 'digest', reference: digest, digest, tags: graph.tagsOf(digest), images: records.map((record) => record.image), reason };
  });

  const kept: KeptImage[] = [];
  for (const record of graph.state.images) {
    const digest = record.image.digest;
    if (doomed.has(digest)) continue;
    const status = graph.status(record);
    if (status.state !== 'expired') {
      kept.push(keptForStatus(record, status));
    } else if (forced.has(digest) || graph.parents(digest).some((parent) => forced.has(parent))) {
      kept.push({ image: record.image, reason: 'limit', detail: 'the sweep reached its limit of deletions for this run' });
    } else if (graph.records(digest).some((other) => !graph.expired(other))) {
      const others = graph.records(digest).filter((other) => !graph.expired(other)).map((other) => other.key);
      kept.push({ image: record.image, reason: 'shared-digest', detail: `its digest is also recorded for ${others.join(', ')}, which stays; deleting the digest would remove it too` });
    } else {
      const keptParent = graph.parents(digest).find((parent) => !doomed.has(parent));
      kept.push({ image: record.image, reason: 'listed-by-kept-index', detail: `index ${keptParent}, which stays, lists its digest` });
    }
  }

  const imagesRemoved = deletions.reduce((sum, deletion) => sum + deletion.images.length, 0);
  return { repository: graph.state.repository, deletions, forget: [], kept, imagesRemoved, limited: forced.size > 0 };
}

function planByTag(graph: RepositoryGraph, options: PlanOptions): RepositoryPlan {
  const doomed = graph.doomed(new Set());
  const deletions: PlannedDeletion[] = [];
  const forget: RepositoryPlan['forget'] = [];
  const kept: KeptImage[] = [];
  let limited = false;

  const expired = graph.state.images.filter((record) => graph.expired(record));
  expired.sort((a, b) => (a.unusedSince ?? 0) - (b.unusedSince ?? 0) || a.key.localeCompare(b.key));
  for (const record of expired) {
    const digest = record.image.digest;
    if (!graph.isCurrentTag(record)) {
      const why = record.image.tag === undefined ? 'it names a digest, not a tag' : `tag ${record.image.tag} now points at another digest`;
      forget.push({ image: record.image, reason: `${expiredReason(graph, [record])}; only its record goes because ${why}` });
      continue;
    }
    const otherKeptTag = graph.records(digest).find((other) => other !== record && graph.isCurrentTag(other) && !graph.expired(other));
    if (!doomed.has(digest) && otherKeptTag === undefined) {
      kept.push({ image: record.image, reason: 'last-tag', detail: 'its digest is still needed and this is its last tag; deleting it would leave the manifest untagged' });
      continue;
    }
    if (deletions.length + 1 > options.budget) {
      kept.push({ image: record.image, reason: 'limit', detail: 'the sweep reached its limit of deletions for this run' });
      limited = true;
      continue;
    }
    deletions.push({ method: 'tag', reference: record.image.tag!, digest, tags: [record.image.tag!], images: [record.image], reason: expiredReason(graph, [record]) });
  }

  for (const record of graph.state.images) {
    const status = graph.status(record);
    if (status.state !== 'expired') kept.push(keptForStatus(record, status));
  }
  return { repository: graph.state.repository, deletions, forget, kept, imagesRemoved: deletions.length, limited };
}

function keptForStatus(record: ImageRecord, status: Exclude<Status, { state: 'expired' }>): KeptImage {
  switch (status.state) {
    case 'used':
      return { image: record.image, reason: 'in-use', detail: `used by ${record.users.map(({ user }) => describeUser(user)).join(', ')}` };
    case 'no-record':
      return { image: record.image, reason: 'no-record', detail: 'no use and no time of release is recorded, so it is never deleted' };
    case 'waiting':
      return {
        image: record.image,
        reason: 'retention',
        detail: `unused since ${new Date(record.unusedSince!).toISOString()}; retained until ${new Date(status.deletableAt).toISOString()}`,
        deletableAt: status.deletableAt,
      };
  }
}

function expiredReason(graph: RepositoryGraph, records: ImageRecord[]): string {
  const newest = records.reduce((latest, record) => ((record.unusedSince ?? 0) > (latest.unusedSince ?? 0) ? record : latest));
  const status = graph.status(newest);
  return status.state === 'expired' ? status.reason : 'expired';
}

/** Orders doomed manifests so that every index comes before the manifests it lists. */
function topologicalOrder(graph: RepositoryGraph, doomed: Set<string>): string[] {
  const order: string[] = [];
  const placed = new Set<string>();
  const pending = [...doomed].sort();
  while (order.length < pending.length) {
    const before = order.length;
    for (const digest of pending) {
      if (placed.has(digest)) continue;
      const doomedParents = graph.parents(digest).filter((parent) => doomed.has(parent));
      if (doomedParents.every((parent) => placed.has(parent))) {
        order.push(digest);
        placed.add(digest);
      }
    }
    // Index records form no cycle (a digest cannot list itself, even indirectly); stop rather than spin.
    if (order.length === before) break;
  }
  return order;
}

/** Describes a `<cluster>/<service>` user for people: `cluster prod (no service named)` for `prod/`. */
export function describeUser(user: string): string {
  return user.endsWith('/') ? `cluster ${user.slice(0, -1)} (no service named)` : user;
}

/** Formats milliseconds as the largest whole unit, days from two on: `365 d`, `24 h`, `90 min`, `30 s`. */
export function formatDuration(ms: number): string {
  const seconds = Math.round(ms / 1000);
  if (seconds === 0) return '0 s';
  if (seconds % 86_400 === 0 && seconds >= 2 * 86_400) return `${seconds / 86_400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}
