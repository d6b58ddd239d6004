import { InvalidInputError, MissingChildError, RegistryError, UnsupportedManifestError, isRetryable } from '../errors.ts';
import { createLimiter } from '../util/limit.ts';
import { transferBlob } from './blob-transfer.ts';
import { readConfigPlatform } from './image-config.ts';
import { sha256, type Manifest, type ManifestHead, type RegistryClient, type UploadStart } from './client.ts';
import { ReferrerSync, type FallbackTagLock, type ReferrerFailurePolicy, type ReferrerSelection, type ReferrersResult, type TagListCache } from './referrers.ts';
import type { ManifestCache } from './manifest-cache.ts';
import { pushRechecking } from './manifest-push.ts';
import { isNetworkError } from './retry.ts';
import {
  NON_DISTRIBUTABLE_LAYER_TYPES,
  formatPlatform,
  isSchema1Type,
  parseManifest,
  platformMatches,
  type Descriptor,
  type ImageManifest,
  type ParsedManifest,
  type Platform,
} from './media-types.ts';

/**
 * Copies one image, every platform or a chosen few, from a source repository to a target repository.
 *
 * Order matters for safety: blobs before the manifest that references them, child manifests before the
 * index that lists them, and the tag last. A copy that stops halfway therefore never leaves a tag that
 * points at something incomplete.
 *
 * With the option `referrers`, the referrers of each manifest (signatures, attestations and SBOMs, see
 * referrers.ts) are copied as soon as that manifest is in the target repository. Those of the top
 * manifest follow the tag.
 */

export interface ImageLocation {
  client: RegistryClient;
  repository: string;
  tag?: string;
  digest?: string;
}

export interface CopyImageOptions {
  /** Copy only these platforms; the index is then rewritten and gets a new digest. */
  platforms?: Platform[];
  /** Target-registry repositories known to hold a blob, tried as cross-repository mount sources. */
  mountSources?: (digest: string) => Promise<string[]> | string[];
  /** Source manifests read by digest, shared with other copies of this process. */
  manifestCache?: ManifestCache;
  /**
   * Digest that the source tag resolved to in the caller's own HEAD. The copy reads the manifest by this
   * digest instead of the tag, so it copies what the caller checked and `manifestCache` can serve it. A
   * source that no longer has this digest is read by the tag.
   */
  resolvedTagDigest?: string;
  /** Called after a blob is known to be in the target repository (copied, mounted or present). */
  onBlobStored?: (digest: string, repository: string) => Promise<void> | void;
  /**
   * Wraps the transfer of one blob. The fleet passes a Redis lock here, so only one worker copies a given
   * blob into a registry at a time. `work` checks presence first, because a waiter runs it after the holder.
   * Its signal, when given, aborts the transfer (a lock that was lost). While the gate waits, it calls
   * `stopWaiting`, when given, between tries, and returns false without running `work` once that returns
   * true. It returns true after running `work`.
   */
  blobGate?: (digest: string, work: (signal?: AbortSignal) => Promise<void>, stopWaiting?: () => Promise<boolean>) => Promise<boolean>;
  /** Blobs up to this size are streamed in one request. Default 16 MiB here; the configuration's default is 128 MiB. */
  monolithicMaxBytes?: number;
  /** Chunk size of chunked uploads: the bytes of one PATCH, streamed from the source. Default 16 MiB. */
  chunkBytes?: number;
  /** Blob transfers running at once. Default 4. */
  concurrency?: number;
  /** Attempts per blob transfer when a transient failure breaks it. Default 3. */
  blobAttempts?: number;
  /** Handling of images with foreign layers (non-distributable, fetched from URLs). Default 'keep'. */
  foreignLayers?: ForeignLayerPolicy;
  onProgress?: (progress: CopyProgress) => void;
  /** Referrers copied along with every manifest of the image: none, signatures only, or all. Default 'off'. */
  referrers?: ReferrerSelection;
  /** Handling of a referrer that cannot be copied. Default 'report': it is listed in `failedReferrers`, and the image is copied. */
  referrerFailures?: ReferrerFailurePolicy;
  /**
   * Wraps each read-merge-write of a fallback tag index at the target. The fleet passes a Redis lock
   * here, so that two copies merging into the same tag do not lose each other's referrers.
   */
  fallbackTagLock?: FallbackTagLock;
  /** Recent tag lists of source repositories, shared with other copies (see TagListCache); each copy lists its own when absent. */
  referrerTagLists?: TagListCache;
  /**
   * The response to a HEAD of the target tag that the caller has just sent (`head` undefined for a 404).
   * The copy then uses it instead of sending the same HEAD again. A stale response does not break the
   * copy, because a tag that appeared meanwhile is pushed again with the same bytes.
   */
  targetTagHead?: { head: ManifestHead | undefined };
}

/**
 * Handling of foreign layers: layers of a non-distributable media type that list `urls`, such as the
 * base layers of Windows images. Their blobs are never copied, because they live outside the registry.
 * - 'keep': push the manifest unchanged, so the digest stays; a target that refuses such manifests fails
 *   the copy with an error naming the platform.
 * - 'skip-platform': leave out every platform that has foreign layers and write an index of the others
 *   (a new digest). Reads every child manifest before any blob moves.
 * - 'fail': reject the copy before any blob moves.
 */
export type ForeignLayerPolicy = 'keep' | 'skip-platform' | 'fail';

export interface CopyProgress {
  blobsDone: number;
  blobsTotal: number;
  bytesPulled: number;
  bytesPushed: number;
}

export interface CopyCounts {
  manifests: { copied: number; present: number };
  blobs: { copied: number; mounted: number; present: number };
  bytes: { pulled: number; pushed: number };
}

export interface CopyResult extends CopyCounts, ReferrersResult {
  sourceDigest: string;
  /** Digest of what the target tag now points at. Differs from `sourceDigest` only when the index was rewritten. */
  targetDigest: string;
  digestChanged: boolean;
  mediaType: string;
  /** Platforms of the copied children, such as `linux/arm64/v8`. For a single image, its own platform when a filter was checked, else empty. */
  platforms: string[];
  /** Digest the target tag pointed at before the copy, if it existed. */
  previousTargetDigest: string | undefined;
  /**
   * When the source named both a tag and a digest: the digest the tag points at now, or undefined when
   * the tag is gone. The digest asked for is what gets copied either way.
   */
  sourceTagDigest: string | undefined;
  /** True when the source named a tag and a digest and the tag no longer points at that digest. */
  tagMoved: boolean;
  /** Platforms left out because they have foreign layers (with `foreignLayers: 'skip-platform'`). */
  skippedPlatforms: string[];
}

/** Outcome of copying the referrers of an image already at the target. */
export interface ReferrersCopyResult extends ReferrersResult, Pick<CopyCounts, 'blobs' | 'bytes'> {}

const DEFAULT_CHUNK = 16 * 1024 * 1024;

export async function copyImage(source: ImageLocation, target: ImageLocation, options: CopyImageOptions = {}): Promise<CopyResult> {
  const copier = new ImageCopier(source, target, options);
  return copier.run();
}

/**
 * Copies the referrers of an image that the target repository has already under `target.digest`, with
 * the same options as copyImage (`referrers` 'off' copies nothing). For a caller that found the image in
 * place without copyImage. The image's manifests are read at the target, never at the source, and only
 * when the source may have referrers at all (a referrers API, or fallback or cosign tags in its tag list).
 * NOTE: here and on copyImage's own warm path, the subjects are the top manifest and the children it
 * lists. The children of a nested index get new referrers only from a copy that pushes that index.
 */
export async function copyReferrers(source: ImageLocation, target: ImageLocation & { digest: string }, options: CopyImageOptions = {}): Promise<ReferrersCopyResult> {
  const copier = new ImageCopier(source, target, options);
  return copier.runReferrers(target.digest);
}

class ImageCopier {
  private readonly source: ImageLocation;
  private readonly target: ImageLocation;
  private readonly options: CopyImageOptions;
  private readonly limit: <T>(task: () => Promise<T>) => Promise<T>;
  private readonly counts: CopyCounts = {
    manifests: { copied: 0, present: 0 },
    blobs: { copied: 0, mounted: 0, present: 0 },
    bytes: { pulled: 0, pushed: 0 },
  };
  private readonly blobs = new Map<string, Promise<void>>();
  /** Mounts the target registry refused, as `<source repository> <digest>`. */
  private readonly refusedMounts = new Set<string>();
  /** Source manifests already read, by digest, so that a manifest read early is not read again. */
  private readonly sourceManifests = new Map<string, Manifest>();
  /** Whether a blob known in another repository is mounted before a HEAD. Turned off once a mount returns 202. */
  private mountFirst = false;
  private sourceTagDigest: string | undefined;
  private tagMoved = false;
  private skippedPlatforms: string[] = [];
  private blobsTotal = 0;
  private blobsDone = 0;
  private readonly referrers: ReferrerSync | undefined;

  constructor(source: ImageLocation, target: ImageLocation, options: CopyImageOptions) {
    this.source = source;
    this.target = target;
    this.options = options;
    this.limit = createLimiter(options.concurrency ?? 4);
    const selection = options.referrers ?? 'off';
    this.referrers =
      selection === 'off'
        ? undefined
        : new ReferrerSync(source, target, {
            selection,
            ...(options.referrerFailures ? { failures: options.referrerFailures } : {}),
            ...(options.fallbackTagLock ? { fallbackTagLock: options.fallbackTagLock } : {}),
            ...(options.referrerTagLists ? { tagLists: options.referrerTagLists } : {}),
            copyContents: (manifest) => this.copyReferrerContents(manifest),
            recheckContents: (manifest) => this.recheckContents(manifest),
            onManifestBytes: (pulled, pushed) => {
              this.counts.bytes.pulled += pulled;
              this.counts.bytes.pushed += pushed;
            },
          });
  }

  async run(): Promise<CopyResult> {
    const sourceReference = this.source.digest ?? this.source.tag;
    if (!sourceReference) throw new InvalidInputError('the source reference needs a tag or a digest');
    const targetReference = this.target.tag ?? this.target.digest;

    // 1. Read the top manifest at the source and refuse what cannot be copied before any blob moves.
    const top = await this.readTopManifest(sourceReference);
    const parsed = this.parse(top, sourceReference);
    if (this.source.tag && this.source.digest) await this.checkSourceTag(this.source.tag, this.source.digest);

    // 2. Decide what the target should end up with: the same bytes, or a filtered index.
    let pushBytes = top;
    let children: Descriptor[] = [];
    if (parsed.kind === 'index') {
      children = await this.applyForeignLayerPolicy(this.selectChildren(parsed.manifests));
      if (children.length !== parsed.manifests.length) pushBytes = rewriteIndex(top, children);
    } else if (this.foreignLayerPolicy !== 'keep' && foreignLayers(parsed).length > 0) {
      throw this.foreignLayersError([{ label: 'the image', manifest: top, parsed }]);
    }
    let platforms = children.flatMap((child) => (child.platform ? [formatPlatform(child.platform)] : []));
    // A single image has no index to filter: it is copied when its own platform is one of those wanted.
    if (parsed.kind === 'image' && this.options.platforms?.length) platforms = [formatPlatform(await this.checkImagePlatform(parsed))];

    // 3. Warm path: the target tag already points at exactly what would be pushed. A 404 is trusted
    //    without a GET, because a wrong "absent" only pushes the same bytes again.
    const previous =
      this.options.targetTagHead && this.target.tag !== undefined
        ? this.options.targetTagHead.head
        : targetReference
          ? await this.target.client.headManifest(this.target.repository, targetReference, { confirmMissing: false })
          : undefined;
    // Blobs of a tag that is new at the target are seldom in its repository yet, so a blob known in
    // another repository is mounted at once rather than looked up first.
    this.mountFirst = previous === undefined;
    if (previous?.digest === pushBytes.digest) {
      this.counts.manifests.present += 1 + children.length;
      await Promise.all(children.map((child) => this.referrers?.syncSubject(child.digest)));
      await this.syncTopReferrers(top, pushBytes);
      return this.result(top, pushBytes, platforms, previous.digest);
    }

    // 4. Cold path: children first (each with its blobs and referrers), then the top manifest under the tag.
    if (parsed.kind === 'index') {
      await Promise.all(children.map((child) => this.copyManifestByDigest(child)));
      await this.pushManifest(pushBytes, targetReference ?? pushBytes.digest);
    } else {
      await this.copyBlobsOf(parsed);
      await this.pushManifest(pushBytes, targetReference ?? pushBytes.digest, { label: 'the image', parsed });
    }
    await this.syncTopReferrers(top, pushBytes);
    return this.result(top, pushBytes, platforms, previous?.digest);
  }

  /** Copies the referrers of an image the target already has under `digest`; see copyReferrers. */
  async runReferrers(digest: string): Promise<ReferrersCopyResult> {
    const referrers = this.referrers;
    if (referrers && (await referrers.mayHaveReferrers(digest))) {
      // The target's copy names the children; reading it spares the source a request.
      const top = await this.target.client.getManifest(this.target.repository, digest);
      if (!top) {
        throw new RegistryError('REGISTRY_NOT_FOUND', `cannot copy the referrers of ${this.target.client.registry}/${this.target.repository}@${digest}: the target no longer has it`, {
          registry: this.target.client.registry,
          operation: `reading manifest ${this.target.repository}@${digest}`,
          status: 404,
          retryable: true,
        });
      }
      const parsed = this.parse(top, digest);
      if (parsed.kind === 'index') await Promise.all(parsed.manifests.map((child) => referrers.syncSubject(child.digest)));
      await referrers.syncSubject(digest);
    }
    return { ...this.referrerResult(), blobs: this.counts.blobs, bytes: this.counts.bytes };
  }

  /**
   * Copies the referrers of the top manifest. Those of an index that a platform filter rewrote stay
   * behind: they name the source digest, which the target does not have.
   */
  private async syncTopReferrers(top: Manifest, pushed: Manifest): Promise<void> {
    if (top.digest === pushed.digest) await this.referrers?.syncSubject(top.digest);
  }

  private referrerResult(): ReferrersResult {
    return this.referrers?.result() ?? { referrers: [], failedReferrers: [], fallbackIndexes: [] };
  }

  /** Copies what a referrer manifest references: its blobs, or the child manifests of a referrer index. */
  private async copyReferrerContents(manifest: Manifest): Promise<void> {
    const parsed = this.parse(manifest, manifest.digest);
    if (parsed.kind === 'index') {
      await Promise.all(parsed.manifests.map((child) => this.copyManifestByDigest(child, manifest.digest, false)));
    } else {
      await this.copyBlobsOf(parsed);
    }
  }

  private get foreignLayerPolicy(): ForeignLayerPolicy {
    return this.options.foreignLayers ?? 'keep';
  }

  /** Records where the source tag points now, when the source named both a tag and a digest. */
  private async checkSourceTag(tag: string, digest: string): Promise<void> {
    const head = await this.source.client.headManifest(this.source.repository, tag);
    this.sourceTagDigest = head?.digest;
    this.tagMoved = head?.digest !== digest;
  }

  /**
   * With 'skip-platform' or 'fail', reads every child manifest and finds those with foreign layers:
   * 'fail' rejects the copy, 'skip-platform' returns the other children. With 'keep', returns `children`.
   */
  private async applyForeignLayerPolicy(children: Descriptor[]): Promise<Descriptor[]> {
    if (this.foreignLayerPolicy === 'keep') return children;
    const parentDigest = this.source.digest ?? this.source.tag;
    const withForeign: ForeignImage[] = [];
    for (const child of children) {
      const manifest = await this.readSourceManifest(child.digest, parentDigest);
      const parsed = this.parse(manifest, child.digest);
      if (parsed.kind === 'image' && foreignLayers(parsed).length > 0) withForeign.push({ label: platformLabel(child), manifest, parsed });
    }
    if (withForeign.length === 0) return children;
    if (this.foreignLayerPolicy === 'fail' || withForeign.length === children.length) throw this.foreignLayersError(withForeign);
    this.skippedPlatforms = children.filter((child) => withForeign.some((image) => image.manifest.digest === child.digest)).map(platformName);
    const skipped = new Set(withForeign.map((image) => image.manifest.digest));
    return children.filter((child) => !skipped.has(child.digest));
  }

  private foreignLayersError(images: ForeignImage[]): UnsupportedManifestError {
    const list = images.map((image) => `${image.label} (${image.manifest.digest})`).join(', ');
    const url = foreignLayers(images[0]!.parsed)[0]?.urls?.[0];
    const what = `${images.length === 1 ? 'it has' : 'they have'} foreign layers, served from URLs such as ${url}`;
    const policy = this.foreignLayerPolicy;
    const advice =
      policy === 'fail'
        ? `the copy option foreignLayers is 'fail'; set it to 'keep' to push the manifests unchanged, or to 'skip-platform' to leave these platforms out`
        : `no other platform is left to copy with foreignLayers 'skip-platform'; set it to 'keep' to push the manifests unchanged`;
    return new UnsupportedManifestError(`cannot copy ${this.describeSource()}: ${list}: ${what}; ${advice}`);
  }

  private result(top: Manifest, pushed: Manifest, platforms: string[], previousTargetDigest: string | undefined): CopyResult {
    return {
      sourceDigest: top.digest,
      targetDigest: pushed.digest,
      digestChanged: top.digest !== pushed.digest,
      mediaType: pushed.mediaType,
      platforms,
      previousTargetDigest,
      sourceTagDigest: this.sourceTagDigest,
      tagMoved: this.tagMoved,
      skippedPlatforms: this.skippedPlatforms,
      ...this.counts,
      ...this.referrerResult(),
    };
  }

  /** Reads the top manifest: by the digest the caller resolved the tag to when given, else by `reference`. */
  private async readTopManifest(reference: string): Promise<Manifest> {
    const resolved = this.options.resolvedTagDigest;
    if (this.source.digest || !resolved) return this.readSourceManifest(reference);
    try {
      return await this.readSourceManifest(resolved);
    } catch (error) {
      // The tag moved, and its old manifest is gone since the caller's HEAD.
      if (error instanceof RegistryError && error.code === 'REGISTRY_NOT_FOUND') return this.readSourceManifest(reference);
      throw error;
    }
  }

  private async readSourceManifest(reference: string, parentDigest?: string): Promise<Manifest> {
    const read = this.sourceManifests.get(reference);
    if (read) return read;
    const { client, repository } = this.source;
    const get = async () => {
      const got = await client.getManifest(repository, reference);
      if (got) this.counts.bytes.pulled += got.bytes.length;
      return got;
    };
    const cache = this.options.manifestCache;
    const manifest = cache && reference.startsWith('sha256:') ? await cache.read(client.registry, repository, reference, get) : await get();
    if (!manifest) {
      if (parentDigest) {
        throw new MissingChildError(
          reference,
          `cannot copy ${this.describeSource()}: the index ${parentDigest} lists ${reference}, which ${this.source.client.registry} does not have; nothing was tagged`,
        );
      }
      throw new RegistryError('REGISTRY_NOT_FOUND', `cannot copy ${this.describeSource()}: ${this.source.client.registry} has no such manifest`, {
        registry: this.source.client.registry,
        operation: `reading manifest ${this.source.repository}:${reference}`,
        status: 404,
      });
    }
    this.sourceManifests.set(manifest.digest, manifest);
    return manifest;
  }

  private parse(manifest: Manifest, reference: string): ParsedManifest {
    if (isSchema1Type(manifest.mediaType)) {
      throw new UnsupportedManifestError(
        `cannot copy ${this.describeSource()}: ${reference} is a Docker schema 1 manifest, which registries no longer accept; ` +
          're-push the image with a current Docker or buildah (schema 2 or OCI) and mirror that',
      );
    }
    try {
      return parseManifest(manifest.mediaType, JSON.parse(manifest.bytes.toString('utf8')));
    } catch (error) {
      throw new RegistryError(
        'REGISTRY_PROTOCOL',
        `cannot copy ${this.describeSource()}: manifest ${manifest.digest} (${manifest.mediaType}) is invalid: ${(error as Error).message}`,
        { registry: this.source.client.registry, operation: `parsing manifest ${manifest.digest}` },
      );
    }
  }

  /**
   * Returns the platform that the single image `image` states in its config, after checking that the
   * platform filter requests it. Reads the config blob at the source (one small GET).
   * @throws InvalidInputError when the platform is not wanted or the config names none.
   */
  private async checkImagePlatform(image: ImageManifest): Promise<Platform> {
    const wanted = this.options.platforms ?? [];
    const platform = await readConfigPlatform(this.source.client, this.source.repository, image.config);
    if (!platform) {
      throw new InvalidInputError(
        `cannot apply the platform filter ${wanted.map(formatPlatform).join(', ')}: ${this.describeSource()} is a single image whose config names no platform; leave out the platforms`,
      );
    }
    if (!wanted.some((candidate) => platformMatches(candidate, platform))) {
      throw new InvalidInputError(
        `no platform of ${this.describeSource()} matches ${wanted.map(formatPlatform).join(', ')}; it is a single image for ${formatPlatform(platform)}`,
      );
    }
    return platform;
  }

  private selectChildren(manifests: Descriptor[]): Descriptor[] {
    const wanted = this.options.platforms;
    if (!wanted?.length) return manifests;
    const selected = manifests.filter((child) => wanted.some((platform) => platformMatches(platform, child.platform)));
    if (selected.length === 0) {
      const available = manifests.flatMap((child) => (child.platform ? [formatPlatform(child.platform)] : [])).join(', ');
      throw new InvalidInputError(
        `no platform of ${this.describeSource()} matches ${wanted.map(formatPlatform).join(', ')}; it has ${available || 'no platform entries'}`,
      );
    }
    return selected;
  }

  /**
   * Copies one manifest named by digest (and everything under it) unless the target has it, then its
   * referrers. `counted` is false for the children of a referrer index, which are not manifests of the image.
   */
  private async copyManifestByDigest(descriptor: Descriptor, parentDigest?: string, counted = true): Promise<void> {
    const present = await this.target.client.headManifest(this.target.repository, descriptor.digest);
    if (present) {
      if (counted) this.counts.manifests.present += 1;
      await this.referrers?.syncSubject(descriptor.digest);
      return;
    }
    const manifest = await this.readSourceManifest(descriptor.digest, parentDigest ?? this.source.digest ?? this.source.tag);
    const parsed = this.parse(manifest, descriptor.digest);
    if (parsed.kind === 'index') {
      await Promise.all(parsed.manifests.map((child) => this.copyManifestByDigest(child, manifest.digest, counted)));
      await this.pushManifest(manifest, descriptor.digest, undefined, counted);
    } else {
      await this.copyBlobsOf(parsed);
      await this.pushManifest(manifest, descriptor.digest, { label: platformLabel(descriptor), parsed }, counted);
    }
    await this.referrers?.syncSubject(descriptor.digest);
  }

  /**
   * Pushes one manifest. When `image` has foreign layers and the target rejects the manifest with a
   * response that another attempt cannot change, the error names the platform and the option that skips it.
   */
  private async pushManifest(manifest: Manifest, reference: string, image?: { label: string; parsed: ParsedManifest }, counted = true): Promise<void> {
    try {
      await pushRechecking(
        () => this.target.client.putManifest(this.target.repository, reference, manifest),
        () => this.recheckContents(manifest),
      );
    } catch (error) {
      const rejected = error instanceof RegistryError && !error.retryable && error.status !== undefined && error.status !== 401 && error.status !== 403;
      if (!rejected || image?.parsed.kind !== 'image' || foreignLayers(image.parsed).length === 0) throw error;
      const rejection = new UnsupportedManifestError(
        `cannot copy ${this.describeSource()}: ${this.target.client.registry} rejected the manifest of ${image.label} (${manifest.digest}), ` +
          `which has foreign layers: ${error.message}; set the copy option foreignLayers to 'skip-platform' to copy the other platforms without it`,
      );
      rejection.cause = error;
      throw rejection;
    }
    if (counted) this.counts.manifests.copied += 1;
    this.counts.bytes.pushed += manifest.bytes.length;
  }

  /**
   * Looks up in the target repository what `manifest` references, after the target rejected its PUT
   * with MANIFEST_BLOB_UNKNOWN, and places again what is missing. Blobs are not mounted before this
   * lookup: a mount rewrites the link that another job's PUT may be reading.
   */
  private async recheckContents(manifest: Manifest): Promise<void> {
    const { client: target, repository } = this.target;
    this.mountFirst = false;
    const parsed = this.parse(manifest, manifest.digest);
    if (parsed.kind === 'index') {
      await Promise.all(parsed.manifests.map((child) => this.copyManifestByDigest(child, manifest.digest, false)));
      return;
    }
    const foreign = new Set(foreignLayers(parsed));
    const descriptors = [parsed.config, ...parsed.layers].filter((descriptor) => !foreign.has(descriptor));
    await Promise.all(
      descriptors.map(async (descriptor) => {
        if ((await target.headBlob(repository, descriptor.digest)) !== undefined) return;
        this.blobs.delete(descriptor.digest);
        await this.copyBlobOnce(descriptor);
      }),
    );
  }

  private async copyBlobsOf(manifest: ImageManifest): Promise<void> {
    // Foreign layers live outside the registry (Windows base layers); the manifest is copied unchanged without them.
    const foreign = new Set(foreignLayers(manifest));
    const descriptors = [manifest.config, ...manifest.layers].filter((descriptor) => !foreign.has(descriptor));
    await Promise.all(descriptors.map((descriptor) => this.copyBlobOnce(descriptor)));
  }

  private copyBlobOnce(descriptor: Descriptor): Promise<void> {
    let pending = this.blobs.get(descriptor.digest);
    if (!pending) {
      this.blobsTotal += 1;
      pending = this.limit(() => this.copyBlob(descriptor)).then(() => {
        this.blobsDone += 1;
        this.reportProgress();
      });
      this.blobs.set(descriptor.digest, pending);
    }
    return pending;
  }

  private async copyBlob(descriptor: Descriptor): Promise<void> {
    const gate = this.options.blobGate ?? (async (_digest: string, work: (signal?: AbortSignal) => Promise<void>) => (await work(), true));
    // The record is written inside the gate, so a worker that waited for the gate finds it and mounts.
    // The gate's signal aborts when the gate is lost (a lock that expired), stopping the transfer.
    const gated = async (signal?: AbortSignal) => {
      await this.copyBlobUngated(descriptor, signal);
      await this.options.onBlobStored?.(descriptor.digest, this.target.repository);
    };

    // A blob that the target registry already stores in another repository is mounted without the gate,
    // because a mount pulls nothing from the source. The gate exists so that one worker of the fleet
    // pulls each blob, and many jobs for the same image in different repositories would otherwise
    // mount one after another, each waiting for the gate.
    const known = await this.knownLocations(descriptor.digest);
    if (this.mountCandidates(descriptor.digest, known).length > 0) {
      if (await this.placeWithoutTransfer(descriptor, known)) return;
      await gate(descriptor.digest, gated);
      return;
    }

    // No location yet, so some worker has to pull it. A waiter stops waiting once the holder has recorded
    // a location, and mounts from there; a mount that fails sends it back to the gate.
    // The gate stops waiting only after a look-up found a location, which the mount then uses.
    let recorded: string[] = [];
    const ran = await gate(descriptor.digest, gated, async () => {
      recorded = await this.knownLocations(descriptor.digest);
      return this.mountCandidates(descriptor.digest, recorded).length > 0;
    });
    if (ran || (await this.placeWithoutTransfer(descriptor, recorded))) return;
    await gate(descriptor.digest, gated);
  }

  /** Repositories of the target registry that the location records name for `digest`, the target's own included. */
  private async knownLocations(digest: string): Promise<string[]> {
    return (await this.options.mountSources?.(digest)) ?? [];
  }

  /** Up to three repositories from `known` to mount `digest` from: not the target, and not refused before. */
  private mountCandidates(digest: string, known: readonly string[]): string[] {
    return known.filter((candidate) => candidate !== this.target.repository && !this.refusedMounts.has(`${candidate} ${digest}`)).slice(0, 3);
  }

  /**
   * Places a blob in the target repository without pulling it: present already, or mounted from a
   * repository that the target registry holds it in. Returns false when neither worked.
   */
  private async placeWithoutTransfer(descriptor: Descriptor, known: readonly string[]): Promise<boolean> {
    const { client: target, repository } = this.target;
    const { digest } = descriptor;
    // A mount of a blob the repository already has returns 201 as well, so it counts as mounted then. It
    // also rewrites the blob's link, and distribution fails a manifest PUT that reads the link meanwhile
    // (see pushRechecking), so a blob recorded in the target repository is looked up first.
    const mountFirst = this.mountFirst && !known.includes(repository);
    if (mountFirst && (await this.mountFromCandidates(digest, known))) {
      await this.options.onBlobStored?.(digest, repository);
      return true;
    }
    if ((await target.headBlob(repository, digest)) !== undefined) {
      this.counts.blobs.present += 1;
    } else if (mountFirst || !(await this.mountFromCandidates(digest, known))) {
      return false;
    }
    await this.options.onBlobStored?.(digest, repository);
    return true;
  }

  /** Tries a cross-repository mount from each known location; returns true when one was mounted (201). */
  private async mountFromCandidates(digest: string, known: readonly string[]): Promise<boolean> {
    for (const from of this.mountCandidates(digest, known)) {
      const start = await this.startMount(digest, from);
      if (start?.mounted) {
        this.counts.blobs.mounted += 1;
        return true;
      }
      // NOTE: a 202 opened an upload session that stays unused. distribution 2.x purges such sessions
      // after 168 hours by default (`storage.maintenance.uploadpurging`). This copy then looks blobs up
      // before it tries to mount them.
      if (start) {
        this.mountFirst = false;
        return false;
      }
    }
    return false;
  }

  private startMount(digest: string, from: string): Promise<UploadStart | undefined> {
    return this.target.client.startUpload(this.target.repository, { digest, from }).catch((error: unknown) => {
      // A refused mount (401/403 on the source repository) falls back to an ordinary upload, and is
      // not tried again by this copy.
      if (error instanceof RegistryError && error.code === 'REGISTRY_DENIED') {
        this.refusedMounts.add(`${from} ${digest}`);
        return undefined;
      }
      throw error;
    });
  }

  private async copyBlobUngated(descriptor: Descriptor, signal?: AbortSignal): Promise<void> {
    const { client: target, repository } = this.target;
    const { digest, size } = descriptor;

    // Present already: nothing to pull.
    if ((await target.headBlob(repository, digest)) !== undefined) {
      this.counts.blobs.present += 1;
      return;
    }

    // Known elsewhere in the target registry: a mount moves no bytes. Only 201 counts as mounted.
    let location: URL | undefined;
    for (const from of this.mountCandidates(digest, await this.knownLocations(digest))) {
      const start = await this.startMount(digest, from);
      if (start?.mounted) {
        this.counts.blobs.mounted += 1;
        return;
      }
      if (start) {
        location = start.location;
        break;
      }
    }

    // Otherwise stream it from the source, retrying the whole transfer on a transient failure.
    const attempts = this.options.blobAttempts ?? 3;
    for (let attempt = 1; ; attempt += 1) {
      try {
        const pushed = await transferBlob(
          { source: this.source.client, sourceRepository: this.source.repository, target, targetRepository: repository, ...(location ? { location } : {}) },
          digest,
          size,
          {
            monolithicMaxBytes: this.options.monolithicMaxBytes ?? DEFAULT_CHUNK,
            chunkBytes: this.options.chunkBytes ?? DEFAULT_CHUNK,
            onBytes: (bytes) => {
              this.counts.bytes.pulled += bytes;
            },
            signal,
          },
        );
        this.counts.bytes.pushed += pushed;
        this.counts.blobs.copied += 1;
        return;
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (!isRetryable(error) && !isNetworkError(error)) throw error;
        if (attempt >= attempts) throw error;
        location = undefined;
        // Another worker may have finished the same blob meanwhile.
        if ((await target.headBlob(repository, digest)) !== undefined) {
          this.counts.blobs.present += 1;
          return;
        }
      }
    }
  }

  private reportProgress(): void {
    this.options.onProgress?.({
      blobsDone: this.blobsDone,
      blobsTotal: this.blobsTotal,
      bytesPulled: this.counts.bytes.pulled,
      bytesPushed: this.counts.bytes.pushed,
    });
  }

  private describeSource(): string {
    const { client, repository, tag, digest } = this.source;
    return `${client.registry}/${repository}${tag ? `:${tag}` : ''}${digest ? `@${digest}` : ''}`;
  }
}

/** Builds an index that lists only `children`, keeping every other field of the original. */
function rewriteIndex(original: Manifest, children: Descriptor[]): Manifest {
  const body = JSON.parse(original.bytes.toString('utf8')) as Record<string, unknown>;
  body.manifests = children;
  const bytes = Buffer.from(JSON.stringify(body));
  return { bytes, mediaType: original.mediaType, digest: sha256(bytes) };
}


/** An image whose layers include foreign ones, with the name used for it in messages. */
interface ForeignImage {
  label: string;
  manifest: Manifest;
  parsed: ImageManifest;
}

/** Returns the layers of `manifest` that are foreign: a non-distributable media type with `urls`. */
function foreignLayers(manifest: ImageManifest): Descriptor[] {
  return manifest.layers.filter((layer) => NON_DISTRIBUTABLE_LAYER_TYPES.has(layer.mediaType) && (layer.urls?.length ?? 0) > 0);
}

/** Names a child manifest in messages: `platform linux/arm64/v8`, or its digest when the index gives no platform. */
function platformLabel(descriptor: Descriptor): string {
  return descriptor.platform ? `platform ${formatPlatform(descriptor.platform)}` : `manifest ${descriptor.digest}`;
}

/** Returns `os/architecture[/variant]` of a child manifest, or its digest when the index gives no platform. */
function platformName(descriptor: Descriptor): string {
  return descriptor.platform ? formatPlatform(descriptor.platform) : descriptor.digest;
}
