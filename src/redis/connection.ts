/**
 * The one place that creates a Redis client from configuration. `redis.url` names a single instance, a
 * Sentinel group or a Redis Cluster, in the forms that ./url.ts lists. The caller gets an ioredis client
 * in every case and passes it to BullMQ and the domain modules.
 */
import { Cluster, Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { ConfigError } from '../errors.ts';
import { registerSecret } from '../log/redact.ts';
import { CLUSTER_KEY_PREFIX_EXPECTED, hasHashTag, parseRedisUrl } from './url.ts';
import type { RedisTarget } from './url.ts';

/** Redis connection URL and key prefix, as in the `redis` section of the configuration. */
export interface RedisSettings {
  url: string;
  keyPrefix: string;
}

/**
 * Creates a Redis client for `settings.url`: `new Redis(url)` for a single instance,
 * `new Redis({ sentinels, name })` for Sentinel, and `new Cluster(nodes)` for Redis Cluster. `options`
 * (such as `maxRetriesPerRequest: null`, which BullMQ workers require) apply to every data node.
 *
 * Throws ConfigError when the URL is not one of the accepted forms. It also throws when the URL names a
 * cluster and the key prefix has no hash tag, because BullMQ's Lua scripts use several keys of a queue at
 * once and Redis Cluster rejects a script whose keys hash to different slots.
 */
export function createRedisConnection(settings: RedisSettings, options: RedisOptions = {}): Redis {
  const target = parseRedisUrl(settings.url);
  if (target === undefined) {
    // The URL is not shown because it may carry a password.
    throw new ConfigError(
      'redis.url: invalid value; expected a URL starting with redis://, rediss://, redis+sentinel:// or redis+cluster://',
    );
  }
  registerSecret(target.password);

  if (target.kind === 'single') return new Redis(target.url, options);
  if (target.kind === 'sentinel') return new Redis({ ...options, ...credentialsOf(target), sentinels: target.sentinels, name: target.masterName });

  if (!hasHashTag(settings.keyPrefix)) {
    throw new ConfigError(
      `redis.keyPrefix: invalid value "${settings.keyPrefix}" for a Redis Cluster URL; expected ${CLUSTER_KEY_PREFIX_EXPECTED}`,
    );
  }
  const { enableOfflineQueue, lazyConnect, ...nodeOptions } = options;
  const cluster = new Cluster(target.nodes, {
    redisOptions: { ...nodeOptions, ...credentialsOf(target) },
    ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
    ...(lazyConnect === undefined ? {} : { lazyConnect }),
  });
  // NOTE: the domain modules type their connection as `Redis`. A Cluster offers the same commands, and a
  // multi-key script works when all of its keys start with the hash-tagged prefix. Only BullMQ queues and
  // workers are tested on a cluster. Widening those parameters to `Redis | Cluster` would remove this cast.
  return cluster as unknown as Redis;
}

function credentialsOf(target: RedisTarget): { username?: string; password?: string } {
  return {
    ...(target.username === undefined ? {} : { username: target.username }),
    ...(target.password === undefined ? {} : { password: target.password }),
  };
}
