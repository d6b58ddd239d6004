import type { Redis } from 'ioredis';
import { storeBase, storeKeys, type StoreKeyOptions } from './keys.ts';
import { SCRIPTS } from './scripts.ts';
import {
  formatImageKey,
  formatUser,
  parseImageKey,
  parseUser,
  type DroppedUse,
  type ImageName,
  type ImageRecord,
  type ReleaseKind,
  type RepositoryState,
  type User,
} from './types.ts';

/**
 * The reference store of the fleet: which users deploy which images of the mirror registries, the tag
 * and index records that deletion depends on, and the leases and claims that keep running jobs and
 * sweeps apart. Every change goes through one of the Lua scripts in scripts.ts; reads are plain
 * commands. See types.ts for the words used here and keys.ts for the key layout.
 */

/** Parent and child digests of an index. */
export type IndexEdge = readonly [parent: string, child: string];

export interface RecordUseInput {
  image: ImageName;
  user: User;
  /** Token of the live lease on the image's repository. */
  leaseToken: string;
  /** Index records of every index under the image. */
  edges?: readonly IndexEdge[];
  /** Releases the user's other images of the same repository with this kind. */
  supersede?: ReleaseKind | undefined;
  /** Gives the lease back in the same script once the use is recorded, which saves the caller a round trip. */
  releaseLease?: boolean;
  /**
   * Time the request for this use was made (ms), such as the job's creation time. With `supersede`, a
   * use from a request older than the user's newest one for the repository is released at once instead.
   */
  requestedAt?: number | undefined;
}

export type RecordUseOutcome =
  | { recorded: false }
  | { recorded: true; released: Array<{ image: ImageName; usesLeft: number }> };

export type ClaimOutcome = 'claimed' | 'leased' | 'changed' | 'busy';

export class ReferenceStore {
  private readonly redis: Redis;
  private readonly keyOptions: StoreKeyOptions;

  constructor(redis: Redis, keyOptions: StoreKeyOptions) {
    this.redis = redis;
    this.keyOptions = keyOptions;
  }

  /** Returns the key base of `registry`, for tests and diagnostics. */
  base(registry: string): string {
    return storeBase(this.keyOptions, registry);
  }

  /** Returns the Redis server's clock in milliseconds, the clock every record uses. */
  async serverTime(): Promise<number> {
    const [seconds, microseconds] = await this.redis.time();
    return Number(seconds) * 1000 + Math.floor(Number(microseconds) / 1000);
  }

  /** Takes a lease on `repository`; false while a sweep holds a claim on it. */
  async acquireLease(registry: string, repository: string, token: string, ttlMs: number): Promise<boolean> {
    return (await SCRIPTS.acquireLease.run(this.redis, [this.base(registry)], [repository, token, ttlMs])) === 1;
  }

  /** Extends a live lease; false when it has expired, which the holder must treat as lost. */
  async renewLease(registry: string, repository: string, token: string, ttlMs: number): Promise<boolean> {
    return (await SCRIPTS.renewLease.run(this.redis, [this.base(registry)], [repository, token, ttlMs])) === 1;
  }

  async releaseLease(registry: string, repository: string, token: string): Promise<void> {
    await SCRIPTS.releaseLease.run(this.redis, [this.base(registry)], [repository, token]);
  }

  /**
   * Records a use of an image under a live lease, with the index records under it. Returns
   * `{ recorded: false }` when the lease has expired: a sweep may have deleted in the repository since,
   * so the caller must redo its work.
   */
  async recordUse(registry: string, input: RecordUseInput): Promise<RecordUseOutcome> {
    const edges = (input.edges ?? []).flatMap(([parent, child]) => [parent, child]);
    const reply = (await SCRIPTS.recordUse.run(
      this.redis,
      [this.base(registry)],
      [
        formatImageKey(input.image),
        formatUser(input.user),
        input.leaseToken,
        input.supersede ?? '',
        input.releaseLease ? '1' : '0',
        input.requestedAt === undefined ? '' : String(input.requestedAt),
        ...edges,
      ],
    )) as Array<string | number>;
    if (reply[0] !== 1) return { recorded: false };
    const released = [];
    for (let i = 1; i < reply.length; i += 2) released.push({ image: parseImageKey(String(reply[i])), usesLeft: Number(reply[i + 1]) });
    return { recorded: true, released };
  }

  /**
   * Drops every use of `user`, or of every user of the cluster when `service` is '*', in the
   * repositories under `options.prefix` ('' or absent for every repository).
   */
  async releaseUses(
    registry: string,
    target: { cluster: string; service: string | '*' },
    options: { kind: ReleaseKind; dryRun: boolean; prefix?: string },
  ): Promise<DroppedUse[]> {
    const reply = (await SCRIPTS.releaseUses.run(
      this.redis,
      [this.base(registry)],
      [target.cluster, target.service, options.kind, options.dryRun ? '1' : '0', options.prefix ?? ''],
    )) as Array<string | number>;
    return droppedUses(reply);
  }

  /**
   * Drops the uses of `cluster` in the repositories under `options.prefix` that are not in `keep` and
   * were recorded before `startedAt` (Redis clock).
   */
  async dropStaleUses(
    registry: string,
    cluster: string,
    startedAt: number,
    keep: Array<{ user: User; image: ImageName }>,
    options: { dryRun: boolean; prefix?: string },
  ): Promise<DroppedUse[]> {
    const pairs = keep.flatMap(({ user, image }) => [formatUser(user), formatImageKey(image)]);
    const reply = (await SCRIPTS.dropStaleUses.run(
      this.redis,
      [this.base(registry)],
      [cluster, startedAt, options.dryRun ? '1' : '0', options.prefix ?? '', ...pairs],
    )) as Array<string | number>;
    return droppedUses(reply);
  }

  /** Claims `repository` for deleting, if no lease is live and `revision` is still current. */
  async claimRepository(registry: string, repository: string, token: string, revision: string, ttlMs: number): Promise<ClaimOutcome> {
    const reply = await SCRIPTS.claimRepository.run(this.redis, [this.base(registry)], [repository, token, ttlMs, revision]);
    if (reply === 1) return 'claimed';
    if (reply === 0) return 'leased';
    if (reply === -1) return 'changed';
    return 'busy';
  }

  async renewClaim(registry: string, repository: string, token: string, ttlMs: number): Promise<boolean> {
    return (await SCRIPTS.renewClaim.run(this.redis, [this.base(registry)], [repository, token, ttlMs])) === 1;
  }

  async releaseClaim(registry: string, repository: string, token: string): Promise<void> {
    await SCRIPTS.releaseClaim.run(this.redis, [this.base(registry)], [repository, token]);
  }

  /** Returns true while `token` holds the claim on `repository`. */
  async holdsClaim(registry: string, repository: string, token: string): Promise<boolean> {
    return (await this.redis.get(storeKeys.claim(this.base(registry), repository))) === token;
  }

  /**
   * Removes the records of deleted manifests (by digest) and of dropped images (by key) under a held
   * claim. Returns false when the claim was lost and nothing changed.
   */
  async forget(registry: string, repository: string, claimToken: string, deletedDigests: string[], imageKeys: string[]): Promise<boolean> {
    const reply = await SCRIPTS.forget.run(this.redis, [this.base(registry)], [repository, claimToken, deletedDigests.length, ...deletedDigests, ...imageKeys]);
    return reply === 1;
  }

  /** Repositories of `registry` that have records. */
  async repositories(registry: string): Promise<string[]> {
    return (await this.redis.smembers(storeKeys.repositories(this.base(registry)))).sort();
  }

  /** Number of images recorded in each of `repositories`, summed. */
  async imageCount(registry: string, repositories: string[]): Promise<number> {
    if (repositories.length === 0) return 0;
    const base = this.base(registry);
    const pipeline = this.redis.pipeline();
    for (const repository of repositories) pipeline.scard(storeKeys.images(base, repository));
    const replies = (await pipeline.exec()) ?? [];
    return replies.reduce((sum, [error, count]) => {
      if (error) throw error;
      return sum + Number(count);
    }, 0);
  }

  /** True when the children of the index `digest` are recorded. Index records never change for a digest. */
  async hasChildren(registry: string, repository: string, digest: string): Promise<boolean> {
    return (await this.redis.exists(storeKeys.children(this.base(registry), repository, digest))) === 1;
  }

  /** Users of one image, for inspection. */
  async usersOf(registry: string, image: ImageName): Promise<string[]> {
    return (await this.redis.zrange(storeKeys.uses(this.base(registry), formatImageKey(image)), 0, -1)).sort();
  }

  /** Image keys `user` deploys, for inspection. */
  async imagesOf(registry: string, user: User): Promise<string[]> {
    return (await this.redis.smembers(storeKeys.user(this.base(registry), formatUser(user)))).sort();
  }

  /** Services of `cluster` with uses in `registry` ('' is the whole cluster). */
  async servicesOf(registry: string, cluster: string): Promise<string[]> {
    return (await this.redis.smembers(storeKeys.cluster(this.base(registry), cluster))).sort();
  }

  /**
   * Reads one repository's records for planning a sweep. The revision is read first, so a use recorded
   * while the rest is read makes the later claim fail instead of going unnoticed.
   */
  async readRepository(registry: string, repository: string): Promise<RepositoryState> {
    const base = this.base(registry);
    // One pipeline, whose commands Redis runs in order: the revision first.
    const first = await execAll(
      this.redis
        .pipeline()
        .get(storeKeys.revision(base, repository))
        .time()
        .smembers(storeKeys.images(base, repository))
        .hgetall(storeKeys.tags(base, repository))
        .zrange(storeKeys.leases(base, repository), 0, -1, 'WITHSCORES'),
    );
    const revision = (first[0] as string | null) ?? '0';
    const [seconds, microseconds] = first[1] as [string, string];
    const now = Number(seconds) * 1000 + Math.floor(Number(microseconds) / 1000);
    const imageKeys = (first[2] as string[]).sort();
    const tagEntries = first[3] as Record<string, string>;
    const leaseReply = first[4] as string[];
    let leases = 0;
    for (let i = 1; i < leaseReply.length; i += 2) if (Number(leaseReply[i]) > now) leases += 1;

    const pipeline = this.redis.pipeline();
    for (const key of imageKeys) {
      pipeline.zrange(storeKeys.uses(base, key), 0, -1, 'WITHSCORES');
      pipeline.zscore(storeKeys.unused(base), key);
      pipeline.hget(storeKeys.unusedKind(base), key);
    }
    const replies = await execAll(pipeline);
    const images: ImageRecord[] = imageKeys.map((key, index) => {
      const uses = replies[index * 3] as string[];
      const unusedSince = replies[index * 3 + 1] as string | null;
      const kind = replies[index * 3 + 2] as string | null;
      const users = [];
      for (let i = 0; i < uses.length; i += 2) users.push({ user: uses[i]!, recordedAt: Number(uses[i + 1]) });
      return {
        image: parseImageKey(key),
        key,
        users,
        ...(unusedSince === null ? {} : { unusedSince: Number(unusedSince) }),
        ...(kind === 'previous' || kind === 'released' ? { kind } : {}),
      };
    });

    // Index records, followed from the recorded images to every parent and child they reach.
    const children = new Map<string, string[]>();
    const parents = new Map<string, string[]>();
    let frontier = [...new Set(images.map((record) => record.image.digest))];
    while (frontier.length > 0) {
      const edgeReads = this.redis.pipeline();
      for (const digest of frontier) {
        edgeReads.smembers(storeKeys.children(base, repository, digest));
        edgeReads.smembers(storeKeys.parents(base, repository, digest));
      }
      const edgeReplies = await execAll(edgeReads);
      const next: string[] = [];
      frontier.forEach((digest, index) => {
        const digestChildren = (edgeReplies[index * 2] as string[]).sort();
        const digestParents = (edgeReplies[index * 2 + 1] as string[]).sort();
        children.set(digest, digestChildren);
        parents.set(digest, digestParents);
        for (const other of [...digestChildren, ...digestParents]) {
          if (!children.has(other) && !next.includes(other)) next.push(other);
        }
      });
      frontier = next;
    }

    return { repository, revision, images, tags: new Map(Object.entries(tagEntries)), children, parents, leases };
  }
}

function droppedUses(reply: Array<string | number>): DroppedUse[] {
  const drops: DroppedUse[] = [];
  for (let i = 0; i < reply.length; i += 3) {
    drops.push({ image: parseImageKey(String(reply[i])), user: parseUser(String(reply[i + 1])), usesLeft: Number(reply[i + 2]) });
  }
  return drops;
}

async function execAll(pipeline: ReturnType<Redis['pipeline']>): Promise<unknown[]> {
  const replies = (await pipeline.exec()) ?? [];
  return replies.map(([error, value]) => {
    if (error) throw error;
    return value;
  });
}
