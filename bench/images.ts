import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { request } from 'undici';

/**
 * Benchmark images: single-platform OCI images whose layers are deterministic and incompressible. A
 * layer's bytes are the AES-256-CTR keystream under the key SHA-256(seed), so the same seed gives the
 * same digest on every machine. The bytes are generated while they stream into the upload, so a
 * 1 GiB layer is never held in memory.
 */

export interface BlobInfo {
  digest: string;
  size: number;
}

export interface BenchImage {
  /** Repository in the source registry, such as `bench/cold`. */
  repository: string;
  tag: string;
  /** Digest of the manifest. */
  digest: string;
  manifest: Buffer;
  /** Config blob first, then the layers in manifest order. */
  blobs: BlobInfo[];
  /** Blob bytes plus manifest bytes: what one full copy moves. */
  totalBytes: number;
}

export interface LayerSpec {
  seed: string;
  size: number;
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const GENERATOR_BLOCK = 1024 * 1024;

/** Yields the `size` bytes of the layer named by `seed`, one mebibyte at a time. */
export function* seededBytes(seed: string, size: number): Generator<Buffer> {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(GENERATOR_BLOCK);
  for (let offset = 0; offset < size; offset += GENERATOR_BLOCK) {
    const length = Math.min(GENERATOR_BLOCK, size - offset);
    yield cipher.update(length === GENERATOR_BLOCK ? zeros : zeros.subarray(0, length));
  }
}

/** Returns the SHA-256 digest of a seeded layer, computed by generating it once. */
export function seededDigest(seed: string, size: number): string {
  const hash = createHash('sha256');
  for (const block of seededBytes(seed, size)) hash.update(block);
  return `sha256:${hash.digest('hex')}`;
}

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/**
 * Pushes an image of seeded layers to `registryUrl` over plain HTTP: each blob with POST and one
 * streaming monolithic PUT, then the manifest under `tag`. Blobs the repository already has are skipped.
 */
export async function pushSeededImage(registryUrl: string, repository: string, tag: string, layers: LayerSpec[]): Promise<BenchImage> {
  const layerBlobs: BlobInfo[] = [];
  for (const layer of layers) {
    const digest = seededDigest(layer.seed, layer.size);
    await uploadBlob(registryUrl, repository, digest, layer.size, () => Readable.from(seededBytes(layer.seed, layer.size)));
    layerBlobs.push({ digest, size: layer.size });
  }

  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layerBlobs.map((blob) => blob.digest) } }),
  );
  const configBlob = { digest: sha256(config), size: config.length };
  await uploadBlob(registryUrl, repository, configBlob.digest, configBlob.size, () => config);

  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...configBlob },
      layers: layerBlobs.map((blob) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...blob })),
    }),
  );
  await putManifest(registryUrl, repository, tag, manifest);

  const blobs = [configBlob, ...layerBlobs];
  const totalBytes = blobs.reduce((sum, blob) => sum + blob.size, 0) + manifest.length;
  return { repository, tag, digest: sha256(manifest), manifest, blobs, totalBytes };
}

/** Uploads one blob with POST and a monolithic PUT, unless `repository` already has it. */
export async function uploadBlob(
  registryUrl: string,
  repository: string,
  digest: string,
  size: number,
  body: () => Readable | Buffer,
): Promise<void> {
  const head = await request(`${registryUrl}/v2/${repository}/blobs/${digest}`, { method: 'HEAD' });
  await head.body.dump();
  if (head.statusCode === 200) return;

  const location = await startUpload(registryUrl, repository);
  const put = await request(withDigest(location, digest), {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: body(),
  });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`uploading blob ${digest} to ${registryUrl}/${repository} failed with status ${put.statusCode}, expected 201`);
}

/** Opens an upload session and returns its Location, resolved against the registry URL. */
export async function startUpload(registryUrl: string, repository: string): Promise<URL> {
  const post = await request(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: { 'content-length': '0' } });
  await post.body.dump();
  const location = post.headers.location;
  if (post.statusCode !== 202 || typeof location !== 'string') {
    throw new Error(`starting an upload to ${registryUrl}/${repository} failed with status ${post.statusCode}, expected 202 with a Location`);
  }
  return new URL(location, registryUrl);
}

/** Appends `digest=` to an upload Location, keeping its other parameters (such as `_state`) byte for byte. */
export function withDigest(location: URL, digest: string): URL {
  const url = new URL(location);
  const parameter = `digest=${encodeURIComponent(digest)}`;
  url.search = url.search ? `${url.search}&${parameter}` : `?${parameter}`;
  return url;
}

export async function putManifest(registryUrl: string, repository: string, reference: string, manifest: Buffer): Promise<void> {
  const put = await request(`${registryUrl}/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    headers: { 'content-type': OCI_MANIFEST },
    body: manifest,
  });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`pushing manifest ${repository}:${reference} to ${registryUrl} failed with status ${put.statusCode}, expected 201`);
}

/**
 * Mounts every blob of `image` from the repository `from`, then pushes the manifest under `tag`. This puts
 * an image into another repository of the same registry without moving blob bytes.
 */
export async function mountImage(registryUrl: string, from: string, repository: string, tag: string, image: BenchImage): Promise<void> {
  for (const blob of image.blobs) {
    const post = await request(`${registryUrl}/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(blob.digest)}&from=${encodeURIComponent(from)}`, {
      method: 'POST',
      headers: { 'content-length': '0' },
    });
    await post.body.dump();
    if (post.statusCode !== 201) throw new Error(`mounting ${blob.digest} from ${from} into ${repository} failed with status ${post.statusCode}, expected 201`);
  }
  await putManifest(registryUrl, repository, tag, image.manifest);
}

/** Returns the digest a registry serves for `repository:reference`, or undefined when it has no such manifest. */
export async function manifestDigest(registryUrl: string, repository: string, reference: string): Promise<string | undefined> {
  const head = await request(`${registryUrl}/v2/${repository}/manifests/${reference}`, { method: 'HEAD', headers: { accept: OCI_MANIFEST } });
  await head.body.dump();
  if (head.statusCode === 404) return undefined;
  const digest = head.headers['docker-content-digest'];
  if (head.statusCode !== 200 || typeof digest !== 'string') {
    throw new Error(`checking manifest ${repository}:${reference} at ${registryUrl} returned status ${head.statusCode} without a Docker-Content-Digest header`);
  }
  return digest;
}
