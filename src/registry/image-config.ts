import { createHash } from 'node:crypto';
import type { RegistryClient } from './client.ts';
import type { Descriptor, Platform } from './media-types.ts';

/**
 * Reads the platform a single image (no index) states in its config blob. An index lists the platforms
 * of its children itself; a single image states its own only there.
 */

// Config media types that carry `os`, `architecture` and `variant` (OCI image spec, config.md; Docker image spec v1.2).
const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

// Image configs are a few kilobytes, and a long build history makes some tens; a larger one is not read.
const MAX_CONFIG_BYTES = 1024 * 1024;

const PLATFORM_PART = /^[a-z0-9._-]+$/;

/**
 * Returns the platform named by the image config `config` in `repository`, read with one GET and
 * checked against its digest. Returns undefined without a request when the config is not an image
 * config or is too large, and undefined when it does not match its digest or names no platform.
 * @throws RegistryError when the request fails.
 */
export async function readConfigPlatform(client: RegistryClient, repository: string, config: Descriptor): Promise<Platform | undefined> {
  if (!IMAGE_CONFIG_TYPES.has(config.mediaType) || config.size > MAX_CONFIG_BYTES) return undefined;

  const blob = await client.getBlob(repository, config.digest);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of blob.stream) {
    total += (chunk as Buffer).length;
    if (total > MAX_CONFIG_BYTES) {
      blob.stream.destroy();
      return undefined;
    }
    chunks.push(chunk as Buffer);
  }
  const bytes = Buffer.concat(chunks);
  if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== config.digest) return undefined;
  return platformOf(bytes);
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
