import type { Redis } from 'ioredis';

/**
 * Reference counts are only safe in a Redis that never evicts keys: an evicted use makes an image look
 * unused, and a sweep would delete it. Cleanup therefore runs only when `maxmemory-policy` is
 * `noeviction`.
 */

export type EvictionCheck = { safe: true } | { safe: false; policy: string | undefined; message: string };

/**
 * Reads `maxmemory-policy` with CONFIG GET, or from INFO memory where CONFIG is disabled (as on some
 * managed Redis services).
 */
export async function checkEvictionPolicy(redis: Redis): Promise<EvictionCheck> {
  let policy: string | undefined;
  try {
    const reply = (await redis.config('GET', 'maxmemory-policy')) as string[];
    policy = reply[1];
  } catch {
    const info = await redis.info('memory').catch(() => '');
    policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
  }
  if (policy === 'noeviction') return { safe: true };
  const found = policy === undefined ? 'could not be read (CONFIG GET and INFO memory both failed)' : `is "${policy}"`;
  return {
    safe: false,
    policy,
    message:
      `Redis maxmemory-policy ${found}, but cleanup needs "noeviction": an evicted reference count would make an image ` +
      'in use look unused and a sweep would delete it; set maxmemory-policy noeviction on the Redis server (CONFIG SET or redis.conf)',
  };
}
