import type { RegistryClient } from '../registry/client.ts';
import { readConfigPlatform } from '../registry/image-config.ts';
import { formatPlatform, isIndexType, parseManifest } from '../registry/media-types.ts';

/** Reads the platform of a single image (no index) for the mirror result; see registry/image-config.ts. */

// Platforms already read or being read, by manifest digest: the same image mirrored for many services
// at once is read once.
const MAX_REMEMBERED = 1000;
const remembered = new Map<string, Promise<string[]>>();

/**
 * Returns `[os/architecture[/variant]]` of the image `digest` in `repository`, read with two GETs (the
 * manifest and its config blob) only the first time this process reads `digest`. Returns [] without a request
 * for an index, and [] when the manifest is not an image or its config names no platform.
 * @throws RegistryError when a request fails; the next call for `digest` reads again.
 */
export function readImagePlatforms(client: RegistryClient, repository: string, digest: string, mediaType: string): Promise<string[]> {
  if (isIndexType(mediaType)) return Promise.resolve([]);
  const known = remembered.get(digest);
  if (known) return known;

  const forget = () => {
    if (remembered.get(digest) === reading) remembered.delete(digest);
  };
  const reading = readPlatforms(client, repository, digest).then((platforms) => {
    // A manifest that was missing or not an image is read again next time.
    if (!platforms) forget();
    return platforms ?? [];
  });
  reading.catch(forget);
  if (remembered.size >= MAX_REMEMBERED) remembered.delete(remembered.keys().next().value!);
  remembered.set(digest, reading);
  return reading;
}

/** Reads the platform of the image `digest`; undefined when the manifest is missing or not an image. */
async function readPlatforms(client: RegistryClient, repository: string, digest: string): Promise<string[] | undefined> {
  const manifest = await client.getManifest(repository, digest);
  if (!manifest || isIndexType(manifest.mediaType)) return undefined;
  let parsed;
  try {
    parsed = parseManifest(manifest.mediaType, JSON.parse(manifest.bytes.toString('utf8')));
  } catch {
    return undefined;
  }
  if (parsed.kind !== 'image') return undefined;
  const platform = await readConfigPlatform(client, repository, parsed.config);
  return platform ? [formatPlatform(platform)] : [];
}
