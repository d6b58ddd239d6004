import type { Redis } from 'ioredis';
import { blobLocationsKey, type KeyOptions } from './keys.ts';

/**
 * A record of which repositories of a registry hold which blob, fed by every successful copy and read
 * for cross-repository mounts. It is a hint, not an authority: a mount that finds the blob gone gets a
 * 202 and the blob is uploaded normally.
 */
export class BlobLocations {
  private readonly redis: Redis;
  private readonly keys: KeyOptions;
  // Bounded so a blob shared by thousands of repositories does not grow one key without limit.
  private readonly maxPerBlob: number;

  constructor(redis: Redis, keys: KeyOptions, maxPerBlob = 16) {
    this.redis = redis;
    this.keys = keys;
    this.maxPerBlob = maxPerBlob;
  }

  async record(registry: string, digest: string, repository: string): Promise<void> {
    const key = blobLocationsKey(this.keys, registry, digest);
    const size = await this.redis.scard(key);
    if (size < this.maxPerBlob) await this.redis.sadd(key, repository);
  }

  async repositories(registry: string, digest: string): Promise<string[]> {
    return this.redis.srandmember(blobLocationsKey(this.keys, registry, digest), 3);
  }

  /**
   * Removes `repository` from the records of `digests`, after a manifest that listed those blobs was
   * deleted there. Once the registry's garbage collection runs, the blobs may be gone, so a later mirror
   * must not count on mounting them from that repository.
   */
  async forget(registry: string, digests: Iterable<string>, repository: string): Promise<void> {
    const unique = [...new Set(digests)];
    if (unique.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const digest of unique) pipeline.srem(blobLocationsKey(this.keys, registry, digest), repository);
    await pipeline.exec();
  }
}
