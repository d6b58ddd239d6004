/**
 * Redis key names of the dedupe records. Every key starts with the configured prefix and names the
 * registry, so two mirror registries never share a key.
 */
export interface KeyOptions {
  prefix: string;
}

export function blobLockKey(options: KeyOptions, registry: string, digest: string): string {
  return `${options.prefix}:lock:blob:${registry}:${digest}`;
}

export function manifestLockKey(options: KeyOptions, registry: string, repository: string, tag: string): string {
  return `${options.prefix}:lock:tag:${registry}/${repository}:${tag}`;
}

export function blobLocationsKey(options: KeyOptions, registry: string, digest: string): string {
  return `${options.prefix}:blob-repos:${registry}:${digest}`;
}
