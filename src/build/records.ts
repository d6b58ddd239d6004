import type { Redis } from 'ioredis';
import type { KeyOptions } from '../dedupe/keys.ts';

/**
 * When each layer cache repository was last built into, so that cleanup can keep it for its own
 * retention (`build.cacheRetentionSeconds`, 30 days by default). Cache repositories get no use in the
 * reference store, because they are no image that anybody deploys.
 * NOTE: the sweep does not read this record yet, so it neither deletes cache repositories nor keeps
 * them by this retention.
 */

/** Sorted set of cache repositories (`<registry>/<repository>`) scored by their last build in milliseconds. */
export function cacheBuildsKey(options: KeyOptions): string {
  return `${options.prefix}:build:cache-last-build`;
}

/** Records a build into the cache repository at `at` (milliseconds since the epoch). */
export async function recordCacheBuild(redis: Redis, options: KeyOptions, registry: string, cacheRepository: string, at: number): Promise<void> {
  await redis.zadd(cacheBuildsKey(options), at, `${registry}/${cacheRepository}`);
}

/** Returns the cache repositories (`<registry>/<repository>`) last built into before `before` (milliseconds since the epoch). */
export async function cacheRepositoriesBuiltBefore(redis: Redis, options: KeyOptions, before: number): Promise<string[]> {
  return redis.zrangebyscore(cacheBuildsKey(options), '-inf', `(${before}`);
}
