import type { Manifest } from './client.ts';

/**
 * Manifests read by digest, shared by the copies of one process. A digest names the bytes, and the
 * client checks them against it, so a shared manifest is the one a GET would return. Sharing spares
 * requests: Docker Hub counts each manifest GET as a pull, so 50 services that mirror one image spend
 * one pull instead of 50. Copies that read the same manifest at once share one GET.
 *
 * A read that fails, or finds no manifest, is not kept: the next copy sends its own GET.
 */

export const MANIFEST_CACHE_MAX_AGE_MS = 60_000;
export const MANIFEST_CACHE_MAX_BYTES = 16 * 1024 * 1024;

interface Entry {
  /** This process's clock (ms) when the read started. */
  readAt: number;
  manifest: Promise<Manifest | undefined>;
  /** Size of the manifest once read; 0 while the read runs. */
  bytes: number;
}

export class ManifestCache {
  private readonly entries = new Map<string, Entry>();
  private readonly maxAgeMs: number;
  private readonly maxBytes: number;
  private readonly now: () => number;
  private totalBytes = 0;

  constructor(options: { maxAgeMs?: number; maxBytes?: number; now?: () => number } = {}) {
    this.maxAgeMs = options.maxAgeMs ?? MANIFEST_CACHE_MAX_AGE_MS;
    this.maxBytes = options.maxBytes ?? MANIFEST_CACHE_MAX_BYTES;
    this.now = options.now ?? Date.now;
  }

  /**
   * Returns the manifest `digest` of `repository` at `registry`: one read in the last `maxAgeMs`, or
   * the result of `read`, which is then kept.
   */
  read(registry: string, repository: string, digest: string, read: () => Promise<Manifest | undefined>): Promise<Manifest | undefined> {
    const key = `${registry}/${repository}@${digest}`;
    const now = this.now();
    const entry = this.entries.get(key);
    if (entry && now - entry.readAt <= this.maxAgeMs) return entry.manifest;
    if (entry) this.remove(key, entry);

    const fresh: Entry = { readAt: now, manifest: read(), bytes: 0 };
    this.entries.set(key, fresh);
    fresh.manifest.then(
      (manifest) => {
        if (this.entries.get(key) !== fresh) return;
        if (!manifest || manifest.digest !== digest) {
          this.remove(key, fresh);
          return;
        }
        fresh.bytes = manifest.bytes.length;
        this.totalBytes += fresh.bytes;
        this.trim();
      },
      () => {
        if (this.entries.get(key) === fresh) this.remove(key, fresh);
      },
    );
    return fresh.manifest;
  }

  /** Drops the oldest entries until the kept manifests fit in `maxBytes`. */
  private trim(): void {
    for (const [key, entry] of this.entries) {
      if (this.totalBytes <= this.maxBytes) return;
      this.remove(key, entry);
    }
  }

  private remove(key: string, entry: Entry): void {
    this.entries.delete(key);
    this.totalBytes -= entry.bytes;
  }
}
