import type { Redis } from 'ioredis';

/**
 * Reads every key of the Redis database that `connection` uses, whatever the key's type. Returns one
 * `KEY TYPE VALUE` line per key, with the value as JSON.
 */
export async function dumpRedis(connection: Redis): Promise<string> {
  const lines: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await connection.scan(cursor, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) {
      const type = await connection.type(key);
      let value: unknown;
      if (type === 'string') value = await connection.get(key);
      else if (type === 'hash') value = await connection.hgetall(key);
      else if (type === 'list') value = await connection.lrange(key, 0, -1);
      else if (type === 'set') value = await connection.smembers(key);
      else if (type === 'zset') value = await connection.zrange(key, 0, -1, 'WITHSCORES');
      else if (type === 'stream') value = await connection.xrange(key, '-', '+');
      else value = `(type ${type})`;
      lines.push(`${key} ${type} ${JSON.stringify(value)}`);
    }
  } while (cursor !== '0');
  return lines.join('\n');
}
