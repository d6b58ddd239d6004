import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';

/**
 * skopeo is the independent judge of what mirrorfleet pushes: it reads registries with its own client.
 * Every call disables TLS verification because the test registries speak plain HTTP on loopback.
 */

/** Returns the manifest bytes of `reference` (`host/repo:tag` or `host/repo@sha256:...`) exactly as served. */
export async function inspectRaw(reference: string): Promise<Buffer> {
  const result = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reference}`], {
    encoding: 'buffer',
    // Manifest bytes are compared byte for byte; some manifests end with a newline.
    stripFinalNewline: false,
  });
  return Buffer.from(result.stdout);
}

/** Returns the SHA-256 digest of the manifest bytes skopeo reads for `reference`. */
export async function inspectDigest(reference: string): Promise<string> {
  return `sha256:${createHash('sha256').update(await inspectRaw(reference)).digest('hex')}`;
}

/** Copies `source` (any skopeo transport) to `docker://target`, every platform, digests preserved. */
export async function skopeoCopy(source: string, target: string): Promise<void> {
  await execa('skopeo', ['copy', '--all', '--preserve-digests', '--quiet', '--dest-tls-verify=false', '--src-tls-verify=false', source, `docker://${target}`]);
}

/** Removes skopeo's blob-info cache, so that a skopeo baseline does not mount from memory of earlier runs. */
export async function clearSkopeoCache(): Promise<void> {
  await rm('/var/lib/containers/cache/blob-info-cache-v1.boltdb', { force: true });
}
