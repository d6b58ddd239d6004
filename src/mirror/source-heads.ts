import { RegistryError } from '../errors.ts';
import type { ManifestHead, RegistryClient } from '../registry/client.ts';

/**
 * Shares the response to a source tag's manifest HEAD between the jobs of one process that request the
 * same tag. A job reuses a response only when its HEAD was sent at or after the job's request time.
 * The digest is then one the tag had after the request was made, as if the job had sent the HEAD itself.
 * A fleet given the same image for many services sends about one source HEAD per process and burst
 * instead of one per job, and a job requested after a tag moved always gets the new digest.
 *
 * NOTE: request times come from the producers' clocks and send times from this process's clock. When a
 * producer's clock is behind, a response may come from up to `maxAgeMs` before the request, so the age
 * of a shared response is bounded as well.
 */

export const SOURCE_HEAD_MAX_AGE_MS = 5_000;
const MAX_ENTRIES = 1_000;

interface Entry {
  /** This process's clock (ms) when the HEAD was sent. */
  sentAt: number;
  head: Promise<ManifestHead>;
}

export class SourceHeads {
  private readonly entries = new Map<string, Entry>();
  private readonly maxAgeMs: number;
  private readonly now: () => number;

  constructor(options: { maxAgeMs?: number; now?: () => number } = {}) {
    this.maxAgeMs = options.maxAgeMs ?? SOURCE_HEAD_MAX_AGE_MS;
    this.now = options.now ?? Date.now;
  }

  /**
   * Resolves `repository:tag` at `client`'s registry to its manifest's digest and media type. With
   * `requestedAt` (ms since the epoch), the response to a HEAD sent at or after that time, and no more
   * than `maxAgeMs` ago, is reused instead of sending another HEAD. Without it, a HEAD is always sent.
   */
  resolve(client: RegistryClient, repository: string, tag: string, requestedAt?: number): Promise<ManifestHead> {
    const key = `${client.registry}/${repository}:${tag}`;
    const now = this.now();
    const entry = this.entries.get(key);
    if (requestedAt !== undefined && entry && entry.sentAt >= requestedAt && now - entry.sentAt <= this.maxAgeMs) return entry.head;

    const head = headOrMissing(client, repository, tag);
    const fresh: Entry = { sentAt: now, head };
    this.entries.delete(key);
    this.entries.set(key, fresh);
    if (this.entries.size > MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
    // A failed HEAD is never shared with jobs that come later: they send their own.
    head.catch(() => {
      if (this.entries.get(key) === fresh) this.entries.delete(key);
    });
    return head;
  }
}

async function headOrMissing(client: RegistryClient, repository: string, tag: string): Promise<ManifestHead> {
  const head = await client.headManifest(repository, tag);
  if (!head) {
    throw new RegistryError('REGISTRY_NOT_FOUND', `source image ${client.registry}/${repository}:${tag} does not exist: ${client.registry} has no such tag`, {
      registry: client.registry,
      operation: `checking manifest ${repository}:${tag}`,
      status: 404,
    });
  }
  return head;
}
