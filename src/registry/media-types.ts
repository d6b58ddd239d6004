/**
 * Manifest media types and the parsing of manifest bodies.
 * Sources: OCI image-spec v1.1 (manifest.md, image-index.md, descriptor.md) and the Docker image
 * manifest v2 schema 2 specification.
 */

export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+json';
export const DOCKER_SCHEMA1_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

/** Every manifest type a copy can handle, in the order of preference sent in `Accept`. */
export const ACCEPTED_MANIFEST_TYPES = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST] as const;

/** Layer types that registries may refuse to serve or store ("foreign" or non-distributable layers). */
export const NON_DISTRIBUTABLE_LAYER_TYPES = new Set([
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
]);

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  platform?: Platform & { 'os.version'?: string; 'os.features'?: string[] };
  annotations?: Record<string, string>;
  artifactType?: string;
}

/** A manifest that lists other manifests: an OCI index or a Docker manifest list. */
export interface IndexManifest {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

/** A manifest of one image or artifact: config plus layers. */
export interface ImageManifest {
  kind: 'image';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
}

export type ParsedManifest = IndexManifest | ImageManifest;

export function isIndexType(mediaType: string): boolean {
  return mediaType === OCI_INDEX || mediaType === DOCKER_MANIFEST_LIST;
}

export function isSchema1Type(mediaType: string): boolean {
  return mediaType === DOCKER_SCHEMA1 || mediaType === DOCKER_SCHEMA1_SIGNED;
}

/**
 * Decides the media type of manifest bytes: the response's Content-Type when it names a manifest type,
 * else the body's `mediaType` field. Registries that serve `application/json` or `text/plain` exist,
 * which is why the Content-Type alone cannot be trusted. Returns undefined when neither names a type.
 */
export function detectMediaType(contentType: string | undefined, body: unknown): string | undefined {
  const declared = contentType?.split(';')[0]?.trim().toLowerCase();
  if (declared && (isKnownManifestType(declared) || declared.startsWith('application/vnd.'))) return declared;
  if (isObject(body)) {
    if (typeof body.mediaType === 'string') return body.mediaType;
    // Schema 1 bodies carry no mediaType but do carry schemaVersion 1.
    if (body.schemaVersion === 1) return DOCKER_SCHEMA1;
    // An OCI index or manifest may omit mediaType (image-spec allows it); tell them apart by shape.
    if (Array.isArray(body.manifests)) return OCI_INDEX;
    if (isObject(body.config)) return OCI_MANIFEST;
  }
  return undefined;
}

function isKnownManifestType(mediaType: string): boolean {
  return (ACCEPTED_MANIFEST_TYPES as readonly string[]).includes(mediaType) || isSchema1Type(mediaType);
}

/**
 * Parses manifest bytes of a known type into descriptors. Throws `Error` with a message naming the
 * missing or malformed field; callers wrap it with the reference being read.
 */
export function parseManifest(mediaType: string, body: unknown): ParsedManifest {
  if (!isObject(body)) throw new Error('manifest body is not a JSON object');
  if (isIndexType(mediaType)) {
    if (!Array.isArray(body.manifests)) throw new Error('index has no "manifests" array');
    return { kind: 'index', mediaType, manifests: body.manifests.map((entry, i) => parseDescriptor(entry, `manifests[${i}]`)) };
  }
  if (!isObject(body.config)) throw new Error('manifest has no "config" descriptor');
  const layers = body.layers ?? [];
  if (!Array.isArray(layers)) throw new Error('manifest "layers" is not an array');
  const manifest: ImageManifest = {
    kind: 'image',
    mediaType,
    config: parseDescriptor(body.config, 'config'),
    layers: layers.map((entry, i) => parseDescriptor(entry, `layers[${i}]`)),
  };
  if (body.subject !== undefined) manifest.subject = parseDescriptor(body.subject, 'subject');
  return manifest;
}

function parseDescriptor(value: unknown, field: string): Descriptor {
  if (!isObject(value)) throw new Error(`${field} is not an object`);
  if (typeof value.digest !== 'string' || !/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(value.digest)) {
    throw new Error(`${field}.digest is missing or malformed`);
  }
  if (typeof value.size !== 'number' || !Number.isSafeInteger(value.size) || value.size < 0) {
    throw new Error(`${field}.size is missing or not a non-negative integer`);
  }
  if (typeof value.mediaType !== 'string') throw new Error(`${field}.mediaType is missing`);
  return value as unknown as Descriptor;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Formats a platform as `os/architecture[/variant]`. */
export function formatPlatform(platform: Platform): string {
  return platform.variant ? `${platform.os}/${platform.architecture}/${platform.variant}` : `${platform.os}/${platform.architecture}`;
}

/** Parses `os/architecture[/variant]`. Throws `Error` naming the value and the accepted form. */
export function parsePlatform(value: string): Platform {
  const parts = value.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((part) => !/^[a-z0-9._-]+$/.test(part))) {
    throw new Error(`invalid platform "${value}": expected os/architecture[/variant] in lowercase, such as linux/arm64/v8`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/**
 * Returns true when `candidate` (from an index) is what `wanted` asks for. A wanted platform without a
 * variant matches any variant, so `linux/arm64` matches `linux/arm64/v8`; `arm64` without a variant in
 * an index counts as `v8`, the only arm64 variant in use.
 */
export function platformMatches(wanted: Platform, candidate: Platform | undefined): boolean {
  if (!candidate) return false;
  if (wanted.os !== candidate.os || wanted.architecture !== candidate.architecture) return false;
  if (wanted.variant === undefined) return true;
  const variant = candidate.variant ?? (candidate.architecture === 'arm64' ? 'v8' : undefined);
  return variant === wanted.variant;
}
