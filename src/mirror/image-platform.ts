import { createHash } from 'node:crypto';
import type { RegistryClient } from '../registry/client.ts';
import { formatPlatform, isIndexType, parseManifest, type Platform } from '../registry/media-types.ts';

/**
 * Reads the platform of a single image (no index) from its config blob, for the mirror result. An
 * index lists the platforms of its children itself; a single image states its own only in the config.
 */

// Config media types that carry `os`, `architecture` and `variant` (OCI image spec, config.md; Docker image spec v1.2).
const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

// Image configs are a few kilobytes, a long build history makes some tens; a larger one is not read.
const MAX_CONFIG_BYTES = 1024 * 1024;

const PLATFORM_PART = /^[a-z0-9._-]+$/;

/**
 * Returns `[os/architecture[/variant]]` of the image `digest` in `repository`, read with two GETs (the
 * manifest and its config blob). Returns [] without a request for an index, and [] when the manifest
 * is not an image, the config is not an image config, is too large, does not match its digest or
 * names no platform.
 * @throws RegistryError when a request fails.
 */
export async function readImagePlatforms(client: RegistryClient, repository: string, digest: string, mediaType: string): Promise<string[]> {
  if (isIndexType(mediaType)) return [];
  const manifest = await client.getManifest(repository, digest);
  if (!manifest || isIndexType(manifest.mediaType)) return [];
  let config;
  try {
    const parsed = parseManifest(manifest.mediaType, JSON.parse(manifest.bytes.toString('utf8')));
    if (parsed.kind !== 'image') return [];
    config = parsed.config;
  } catch {
    return [];
  }
  if (!IMAGE_CONFIG_TYPES.has(config.mediaType) || config.size > MAX_CONFIG_BYTES) return [];

  const blob = await client.getBlob(repository, config.digest);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of blob.stream) {
    total += (chunk as Buffer).length;
    if (total > MAX_CONFIG_BYTES) {
      blob.stream.destroy();
      return [];
    }
    chunks.push(chunk as Buffer);
  }
  const bytes = Buffer.concat(chunks);
  if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== config.digest) return [];

  const platform = platformOf(bytes);
  return platform ? [formatPlatform(platform)] : [];
}

/** Reads `os`, `architecture` and `variant` from image config bytes; undefined when they are missing or malformed. */
function platformOf(bytes: Buffer): Platform | undefined {
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null) return undefined;
  const { os, architecture, variant } = body as Record<string, unknown>;
  if (typeof os !== 'string' || typeof architecture !== 'string' || !PLATFORM_PART.test(os) || !PLATFORM_PART.test(architecture)) return undefined;
  if (typeof variant === 'string' && PLATFORM_PART.test(variant)) return { os, architecture, variant };
  return { os, architecture };
}
