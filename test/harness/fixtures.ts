import { readFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { skopeoCopy } from './skopeo.ts';

/** Folder of the real images the tests use; see its PROVENANCE.md. */
export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'images');

/** Top-level digests of the fixture images, from PROVENANCE.md. */
export const DIGESTS = {
  helloWorldList: 'sha256:00e1ee7c898a2c393ea2fe7680938f8dcbe55e51fbf08032cf37326a677f92ed',
  helloWorldArm64: 'sha256:432f982638b3aefab73cc58ab28f5c16e96fdb504e8c134fc58dff4bae8bf338',
  busyboxAmd64: 'sha256:47d0f2af0b7be8073ec4470ddc8011159aa3ba7c92c4a87f4156fa59dbb50dec',
  busyboxArm64: 'sha256:d2b92b49226bc76d2654cf54e181f687d91c9f56c91780c4161f33f8f0abfa60',
} as const;

export interface SeededImage {
  /** `host/repo:tag` */
  reference: string;
  digest: string;
}

/** Seeds an OCI layout whose index.json has one entry (or one named entry) with skopeo. */
export async function seedLayout(host: string, layout: string, repository: string, tag: string): Promise<void> {
  await skopeoCopy(`oci:${join(FIXTURES, layout)}`, `${host}/${repository}:${tag}`);
}

/** Seeds a `docker save` tarball with skopeo. */
export async function seedDockerArchive(host: string, archive: string, repository: string, tag: string): Promise<void> {
  await skopeoCopy(`docker-archive:${join(FIXTURES, archive)}`, `${host}/${repository}:${tag}`);
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/**
 * Pushes every entry of an OCI layout over plain HTTP, children before parents, and tags each entry that
 * has a `org.opencontainers.image.ref.name` with the part after its last `:` (cosign layouts name their
 * entries `_cosign:sha256-<hex>.sig`). Used where skopeo 1.9 cannot address a layout entry. This helper
 * is deliberately independent of mirrorfleet's registry client. An entry without a name gets `tagForUnnamed`.
 */
export async function pushLayoutOverHttp(
  registryUrl: string,
  repository: string,
  layout: string,
  tagForUnnamed?: string,
): Promise<Map<string, string>> {
  const root = join(FIXTURES, layout);
  const index = JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const tags = new Map<string, string>();
  const pushed = new Set<string>();

  const blobPath = (digest: string) => join(root, 'blobs', ...digest.split(':'));

  const pushBlob = async (descriptor: Descriptor) => {
    if (pushed.has(descriptor.digest)) return;
    const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    if (start.status !== 202) throw new Error(`upload start for ${descriptor.digest} answered ${start.status}`);
    const location = new URL(start.headers.get('location')!, registryUrl);
    location.searchParams.set('digest', descriptor.digest);
    // Fixture blobs are a few megabytes at most, so reading them whole is fine here.
    const put = await fetch(location, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: await readFile(blobPath(descriptor.digest)),
    });
    if (put.status !== 201) throw new Error(`upload of ${descriptor.digest} answered ${put.status}`);
    pushed.add(descriptor.digest);
  };

  const pushManifest = async (descriptor: Descriptor, tag?: string) => {
    const bytes = await readFile(blobPath(descriptor.digest));
    if (!pushed.has(descriptor.digest)) {
      const manifest = JSON.parse(bytes.toString('utf8')) as { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
      for (const child of manifest.manifests ?? []) await pushManifest(child);
      if (manifest.config) await pushBlob(manifest.config);
      for (const layer of manifest.layers ?? []) await pushBlob(layer);
    }
    const put = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag ?? descriptor.digest}`, {
      method: 'PUT',
      headers: { 'content-type': descriptor.mediaType },
      body: bytes,
    });
    if (put.status !== 201) throw new Error(`manifest ${descriptor.digest} answered ${put.status}: ${await put.text()}`);
    pushed.add(descriptor.digest);
  };

  for (const entry of index.manifests) {
    const refName = entry.annotations?.['org.opencontainers.image.ref.name'];
    const tag = refName === undefined ? tagForUnnamed : refName.slice(refName.lastIndexOf(':') + 1);
    await pushManifest(entry, tag);
    if (tag !== undefined) tags.set(tag, entry.digest);
  }
  return tags;
}

/**
 * Pushes a single-platform image of `layerSizes` random (incompressible) layers over plain HTTP and
 * returns its manifest digest. Random bytes are fine for a registry, which never looks inside a layer.
 */
export async function pushRandomImage(registryUrl: string, repository: string, tag: string, layerSizes: number[]): Promise<string> {
  const { createHash, randomBytes } = await import('node:crypto');
  const digestOf = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const upload = async (bytes: Buffer) => {
    const digest = digestOf(bytes);
    const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    const location = new URL(start.headers.get('location')!, registryUrl);
    location.searchParams.set('digest', digest);
    const put = await fetch(location, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
    if (put.status !== 201) throw new Error(`random layer upload answered ${put.status}`);
    return { digest, size: bytes.length };
  };
  const layers = [];
  for (const size of layerSizes) layers.push(await upload(randomBytes(size)));
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((layer) => layer.digest) } }),
  );
  const configDescriptor = await upload(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...configDescriptor },
      layers: layers.map((layer) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer })),
    }),
  );
  const put = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifest,
  });
  if (put.status !== 201) throw new Error(`random image manifest answered ${put.status}`);
  return digestOf(manifest);
}
