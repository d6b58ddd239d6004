import type { RegistryClient } from '../registry/client.ts';
import { readConfigPlatform } from '../registry/image-config.ts';
import { formatPlatform, isIndexType, parseManifest } from '../registry/media-types.ts';

/** Reads the platform of a single image (no index) for the mirror result; see registry/image-config.ts. */

// Platforms already read, by manifest digest: the same image mirrored for many services is read once.
const MAX_REMEMBERED = 1000;
const remembered = new Map<string, string[]>();

/**
 * Returns `[os/architecture[/variant]]` of the image `digest` in `repository`, read with two GETs (the
 * manifest and its config blob) only the first time this process reads `digest`. Returns [] without a request
 * for an index, and [] when the manifest is not an image or its config names no platform.
 * @throws RegistryError when a request fails.
 */
export async function readImagePlatforms(client: RegistryClient, repository: string, digest: string, mediaType: string): Promise<string[]> {
  if (isIndexType(mediaType)) return [];
  const known = remembered.get(digest);
  if (known) return known;

  const manifest = await client.getManifest(repository, digest);
  if (!manifest || isIndexType(manifest.mediaType)) return [];
  let parsed;
  try {
    parsed = parseManifest(manifest.mediaType, JSON.parse(manifest.bytes.toString('utf8')));
  } catch {
    return [];
  }
  if (parsed.kind !== 'image') return [];
  const platform = await readConfigPlatform(client, repository, parsed.config);
  const platforms = platform ? [formatPlatform(platform)] : [];
  rememberPlatforms(digest, platforms);
  return platforms;
}

/** Stores the platforms of the image `digest`, dropping the oldest entry when the store is full. */
function rememberPlatforms(digest: string, platforms: string[]): void {
  if (remembered.size >= MAX_REMEMBERED) remembered.delete(remembered.keys().next().value!);
  remembered.set(digest, platforms);
}
