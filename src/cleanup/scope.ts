import { requireMirrorRegistry, type Config, type MirrorRegistryConfig } from '../config/config.ts';
import { DEFAULTS } from '../config/schema.ts';

/**
 * Selection of the mirror registries a cleanup job acts on, and ownership of recorded repositories. The
 * reference store keys its records by registry host, and two declared mirror registries may share a
 * host under different prefixes: a repository belongs to the one with the longest prefix that contains
 * it.
 */

/** Returns the mirror registries a job selects: the one named, or every declared one when `nameOrLocation` is absent. */
export function selectRegistries(config: Config, nameOrLocation: string | undefined): MirrorRegistryConfig[] {
  if (nameOrLocation === undefined) return config.mirrorRegistries;
  return [requireMirrorRegistry(config, nameOrLocation)];
}

/** True when `repository` lies under `prefix` ('' contains every repository). */
export function underPrefix(repository: string, prefix: string): boolean {
  return prefix === '' || repository === prefix || repository.startsWith(`${prefix}/`);
}

/** Returns the declared mirror registry on `host` that owns `repository`, if any. */
export function ownerOf(config: Config, host: string, repository: string): MirrorRegistryConfig | undefined {
  let owner: MirrorRegistryConfig | undefined;
  for (const registry of config.mirrorRegistries) {
    if (registry.host !== host || !underPrefix(repository, registry.prefix)) continue;
    if (!owner || registry.prefix.length > owner.prefix.length) owner = registry;
  }
  return owner;
}

/** Retention times of a mirror registry in milliseconds, with the defaults for keys left out. */
export function retentionOf(registry: MirrorRegistryConfig): { previousRetentionMs: number; releasedRetentionMs: number } {
  return {
    previousRetentionMs: (registry.previousImageRetentionSeconds ?? DEFAULTS.previousImageRetentionSeconds) * 1000,
    releasedRetentionMs: registry.retentionSeconds * 1000,
  };
}

/**
 * Returns where release and reconcile act on the store: one entry per registry host, with the repository prefix
 * to stay under ('' when every declared registry of that host is selected).
 */
export function storeTargets(config: Config, selected: MirrorRegistryConfig[], all: boolean): Array<{ host: string; prefix: string }> {
  if (!all) return selected.map((registry) => ({ host: registry.host, prefix: registry.prefix }));
  return [...new Set(config.mirrorRegistries.map((registry) => registry.host))].map((host) => ({ host, prefix: '' }));
}
