import type { Redis } from 'ioredis';
import { auditStreamKey } from '../refcounts/keys.ts';

/**
 * The audit stream: one Redis stream entry per deletion, with what went, why, when and which job did
 * it. Trimmed approximately (`MAXLEN ~`) to a configured length, so the newest entries are kept.
 *
 * Read it with `XREVRANGE <prefix>:audit + - COUNT 20`.
 */

export interface AuditEntry {
  registry: string;
  repository: string;
  /** The tag or digest that the DELETE request named. */
  reference: string;
  method: 'tag' | 'digest';
  /** `deleted`, or `absent` when the registry no longer had it (counted as deleted). */
  result: 'deleted' | 'absent';
  digest: string;
  /** Image keys whose records went with it. */
  images: string[];
  reason: string;
  jobId: string;
  /** Milliseconds since the epoch. */
  at: number;
}

export class AuditLog {
  private readonly redis: Redis;
  private readonly key: string;
  private readonly maxEntries: number;

  constructor(redis: Redis, options: { prefix: string; maxEntries: number }) {
    this.redis = redis;
    this.key = auditStreamKey(options);
    this.maxEntries = options.maxEntries;
  }

  async append(entry: AuditEntry): Promise<void> {
    await this.redis.xadd(
      this.key,
      'MAXLEN',
      '~',
      this.maxEntries,
      '*',
      'what',
      `${entry.registry}/${entry.repository}${entry.method === 'tag' ? ':' : '@'}${entry.reference}`,
      'registry',
      entry.registry,
      'repository',
      entry.repository,
      'reference',
      entry.reference,
      'method',
      entry.method,
      'result',
      entry.result,
      'digest',
      entry.digest,
      'images',
      entry.images.join(' '),
      'why',
      entry.reason,
      'when',
      new Date(entry.at).toISOString(),
      'job',
      entry.jobId,
    );
  }

  /** Returns the newest entries first, as field maps. */
  async latest(count: number): Promise<Array<Record<string, string>>> {
    const entries = await this.redis.xrevrange(this.key, '+', '-', 'COUNT', count);
    return entries.map(([, fields]) => {
      const record: Record<string, string> = {};
      for (let i = 0; i < fields.length; i += 2) record[fields[i]!] = fields[i + 1]!;
      return record;
    });
  }
}
