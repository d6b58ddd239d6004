import { Redis } from 'ioredis';

/**
 * Counts the commands a Redis server ran, from `INFO commandstats`. Commands that Lua scripts run are
 * counted too, each under its own name, and so is every script call (`evalsha`, `eval`, `fcall`).
 * `reset` clears the server's statistics, so use it only on a Redis the benchmark started for itself.
 */
export class RedisCommandCounter {
  private readonly redis: Redis;

  constructor(url: string) {
    this.redis = new Redis(url, { maxRetriesPerRequest: null });
  }

  async reset(): Promise<void> {
    await this.redis.config('RESETSTAT');
  }

  /** Returns the number of calls of each command since the last reset, without this counter's own INFO. */
  async read(): Promise<Map<string, number>> {
    const text = await this.redis.info('commandstats');
    const counts = new Map<string, number>();
    for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) counts.set(match[1]!, Number(match[2]));
    const info = counts.get('info');
    if (info !== undefined) counts.set('info', info - 1);
    return counts;
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

/** Returns the sum of `counts` and the calls of Lua scripts among them. */
export function totalCommands(counts: ReadonlyMap<string, number>): { all: number; scripts: number } {
  let all = 0;
  let scripts = 0;
  for (const [name, calls] of counts) {
    all += calls;
    if (name === 'evalsha' || name === 'eval' || name === 'evalsha_ro' || name === 'eval_ro' || name === 'fcall') scripts += calls;
  }
  return { all, scripts };
}

/** Formats `counts` divided by `divisor` as `evalsha 12, hget 4`, largest first. */
export function formatCommands(counts: ReadonlyMap<string, number>, divisor: number): string {
  return [...counts]
    .filter(([, calls]) => calls > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([name, calls]) => `${name} ${Number.isInteger(calls / divisor) ? calls / divisor : (calls / divisor).toFixed(1)}`)
    .join(', ');
}
