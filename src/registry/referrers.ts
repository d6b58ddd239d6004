import { MissingChildError, RegistryError, UnsupportedManifestError } from '../errors.ts';
import { sha256, type Manifest, type RegistryClient } from './client.ts';
import { pushRechecking } from './manifest-push.ts';
import { OCI_INDEX, isIndexType, parseManifest, type Descriptor } from './media-types.ts';

/**
 * Referrers: manifests that describe another manifest, their *subject*, such as signatures,
 * attestations and SBOMs. Registries link a referrer to its subject in three ways, and a copy reads all
 * three at the source:
 * - the OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`, distribution-spec v1.1), which
 *   lists every manifest pushed with a `subject` field naming the digest;
 * - on registries without that API, the fallback tag `<alg>-<hex>` (the "referrers tag schema" of the
 *   same specification): an OCI index whose entries are the referrers;
 * - cosign's tag scheme: the tags `sha256-<hex>.sig`, `.att` and `.sbom`, each naming one manifest
 *   that has no `subject` field.
 * At the target, a referrer is pushed by digest, with its bytes unchanged. A registry that responds to
 * that push with an `OCI-Subject` header indexes the referrer itself. Otherwise the referrer is merged into
 * the fallback tag's index: read, add what is missing by digest, write, under a lock so that two
 * copies merging into the same tag at the same moment lose nothing. A cosign referrer is pushed under
 * its tag.
 *
 * Requests: the tag list of the source repository is read once per copy, or once per `TagListCache`
 * age when the caller passes one, and tag lookups happen only for tags it lists. A referrer or fallback
 * index whose digest the target already has is not read at the source again; the target's fallback
 * index tells which referrers it holds.
 */

/** Selection of the referrers a copy takes along: none, signatures only, or every one. */
export type ReferrerSelection = 'off' | 'signatures' | 'all';

/** Handling of a referrer that cannot be copied: it is listed in the result, or it fails the copy. */
export type ReferrerFailurePolicy = 'report' | 'fail';

export const REFERRER_SELECTIONS = ['off', 'signatures', 'all'] as const satisfies readonly ReferrerSelection[];
export const REFERRER_FAILURE_POLICIES = ['report', 'fail'] as const satisfies readonly ReferrerFailurePolicy[];

/**
 * Artifact types that count as signatures for the selection 'signatures', besides cosign's `.sig` tags.
 * NOTE: a sigstore bundle contains either a signature or an attestation, and both count here, because
 * telling them apart needs the bundle's content.
 */
export const SIGNATURE_ARTIFACT_TYPES: ReadonlySet<string> = new Set([
  // cosign signatures stored as OCI 1.1 referrers
  'application/vnd.dev.cosign.artifact.sig.v1+json',
  // Notation (Notary Project) signatures
  'application/vnd.cncf.notary.signature',
  // sigstore bundles, the format of cosign 3 signatures and attestations
  'application/vnd.dev.sigstore.bundle.v0.3+json',
]);

/** A referrer at the target after a copy. */
export interface CopiedReferrer {
  /**
   * The manifest's `artifactType`, else its config media type (the OCI image-spec rule). For a cosign
   * tag, the media type of its first layer, such as `application/vnd.dev.cosign.simplesigning.v1+json`,
   * because cosign leaves both others generic.
   */
  artifactType: string;
  digest: string;
  /** Digest of the manifest it refers to. */
  subject: string;
  /** The cosign tag that links it to its subject, such as `sha256-<hex>.sig`; absent for a referrer linked by `subject`. */
  tag?: string;
  /** False when the target had it before this copy. */
  copied: boolean;
}

/** A referrer, or a list of referrers, that the copy could not bring to the target or link there. */
export interface FailedReferrer {
  subject: string;
  /** Absent when the list of referrers itself could not be read. */
  digest?: string;
  artifactType?: string;
  tag?: string;
  /** The error message. */
  reason: string;
}

/** A fallback tag index at the target as the copy left it: it lists referrers of `subject`. */
export interface FallbackIndex {
  subject: string;
  /** `<alg>-<hex>` */
  tag: string;
  /** Digest of the index the tag names now. It changes whenever referrers are merged in. */
  digest: string;
}

export interface ReferrersResult {
  referrers: CopiedReferrer[];
  failedReferrers: FailedReferrer[];
  fallbackIndexes: FallbackIndex[];
}

/** Runs `work` while holding a lock named `key`; the fleet passes a Redis lock. */
export type FallbackTagLock = <T>(key: string, work: () => Promise<T>) => Promise<T>;

export interface ReferrerSyncOptions {
  selection: 'signatures' | 'all';
  /** Default 'report'. */
  failures?: ReferrerFailurePolicy;
  /** Serialises read-merge-write of one fallback tag at the target. `key` is `<registry>/<repository>:<tag>`. */
  fallbackTagLock?: FallbackTagLock;
  /** Copies what a manifest references (its blobs, or the child manifests of an index) into the target repository. */
  copyContents: (manifest: Manifest) => Promise<void>;
  /** Places again what a manifest references and the target lacks, after a PUT was refused for it; see pushRechecking. */
  recheckContents: (manifest: Manifest) => Promise<void>;
  /** Called with the bytes of each manifest read from the source and pushed to the target. */
  onManifestBytes?: (pulled: number, pushed: number) => void;
  /** Tag lists of source repositories shared with other copies; each copy reads its own when absent. */
  tagLists?: TagListCache;
}

export interface RepositoryLocation {
  client: RegistryClient;
  repository: string;
}

const COSIGN_SUFFIXES = ['.sig', '.att', '.sbom'] as const;
// Tags that may name referrers: fallback tags and cosign tags, for sha256 and (fallback only) sha512 digests.
const REFERRER_TAG = /^(?:sha256-[0-9a-f]{64}(?:\.(?:sig|att|sbom))?|sha512-[0-9a-f]{64})$/;
// Referrers of referrers are followed this deep. Signatures of attestations are the deepest chain seen
// in practice (2 levels); the limit only stops a chain that never ends.
const MAX_DEPTH = 8;
// A registry's lack of the referrers API is remembered this long, so that each copy does not ask again.
const API_CHECK_INTERVAL_MS = 60 * 60_000;

/** Whether a registry has the referrers API, as last seen by a client of it in this process. */
const apiSupport = new WeakMap<RegistryClient, { present: boolean; checkedAt: number }>();

function knownApiSupport(client: RegistryClient): boolean | undefined {
  const known = apiSupport.get(client);
  return known && Date.now() - known.checkedAt < API_CHECK_INTERVAL_MS ? known.present : undefined;
}

function rememberApiSupport(client: RegistryClient, present: boolean): void {
  apiSupport.set(client, { present, checkedAt: Date.now() });
}

export interface TagListCacheOptions {
  /** How long a listing serves other copies, in milliseconds, counted from when it arrived. */
  maxAgeMs: number;
  /** Repositories kept at most; the oldest listing goes first. */
  maxEntries: number;
  /** Current time in ms; tests pass a clock of their own. */
  clock?: () => number;
}

/** Default age of a shared tag listing: a referrer pushed at the source waits at most this long for a job to see it. */
export const DEFAULT_TAG_LIST_MAX_AGE_MS = 10_000;

/**
 * The tags that may name referrers (fallback and cosign tags) of recently listed source repositories,
 * shared by the copies of one process. Without it, every copy of an image that the target already has
 * reads the whole tag list of the source repository to look for new referrers. With it, copies that
 * start within `maxAgeMs` of a listing use that listing, and copies that start at the same moment share
 * one request.
 *
 * The cost is freshness: a referrer pushed at the source after a listing is seen by the first copy that
 * starts after the listing is `maxAgeMs` old, not by every copy that starts after the push. A listing
 * that fails is not kept.
 */
export class TagListCache {
  private readonly maxAgeMs: number;
  private readonly maxEntries: number;
  private readonly clock: () => number;
  private readonly lists = new WeakMap<RegistryClient, Map<string, { listedAt: number; tags: Promise<Set<string> | undefined> }>>();

  constructor(options: TagListCacheOptions) {
    this.maxAgeMs = options.maxAgeMs;
    this.maxEntries = options.maxEntries;
    this.clock = options.clock ?? Date.now;
  }

  /**
   * Returns the referrer-shaped tags of `repository`, from a listing younger than `maxAgeMs` or from
   * `list`, which reads them. `list` returns undefined when the registry cannot list them.
   */
  tags(client: RegistryClient, repository: string, list: () => Promise<Set<string> | undefined>): Promise<Set<string> | undefined> {
    let byRepository = this.lists.get(client);
    if (!byRepository) {
      byRepository = new Map();
      this.lists.set(client, byRepository);
    }
    const now = this.clock();
    const cached = byRepository.get(repository);
    if (cached && now - cached.listedAt < this.maxAgeMs) return cached.tags;

    const tags = list().then((listed) => (listed === undefined ? undefined : new Set([...listed].filter((tag) => REFERRER_TAG.test(tag)))));
    // A listing in flight counts as fresh from its start, so copies that start meanwhile share it; its
    // age then restarts when it arrives.
    const entry = { listedAt: now, tags };
    byRepository.delete(repository);
    byRepository.set(repository, entry);
    tags.then(
      () => {
        entry.listedAt = this.clock();
      },
      () => {
        if (byRepository.get(repository) === entry) byRepository.delete(repository);
      },
    );
    while (byRepository.size > this.maxEntries) byRepository.delete(byRepository.keys().next().value!);
    return tags;
  }
}

/** Returns the fallback tag of a digest: `<alg>-<hex>`, the hex cut to 64 characters (distribution-spec v1.1, "Referrers Tag Schema"). */
export function fallbackTag(digest: string): string {
  const colon = digest.indexOf(':');
  return `${digest.slice(0, colon)}-${digest.slice(colon + 1, colon + 65)}`;
}

/** Returns cosign's tags for the referrers of `digest`, such as `sha256-<hex>.sig`; none for other algorithms. */
export function cosignTags(digest: string, suffixes: readonly string[] = COSIGN_SUFFIXES): string[] {
  if (!digest.startsWith('sha256:')) return [];
  return suffixes.map((suffix) => `sha256-${digest.slice('sha256:'.length)}${suffix}`);
}

/**
 * Returns the artifact type of manifest bytes: `artifactType`, else the config media type. image-spec
 * v1.1 sets this rule, also for the entries of referrers lists. An index without `artifactType` gets its media type.
 */
export function artifactTypeOf(manifest: Manifest): string {
  const body = parseBody(manifest);
  if (typeof body.artifactType === 'string' && body.artifactType !== '') return body.artifactType;
  const config = body.config as { mediaType?: unknown } | undefined;
  if (typeof config?.mediaType === 'string') return config.mediaType;
  return manifest.mediaType;
}

/** Returns the media type of the first layer of a cosign manifest, which identifies its content. */
function cosignArtifactType(manifest: Manifest): string {
  const layers = parseBody(manifest).layers;
  const first = Array.isArray(layers) ? (layers[0] as { mediaType?: unknown } | undefined) : undefined;
  return typeof first?.mediaType === 'string' ? first.mediaType : artifactTypeOf(manifest);
}

function parseBody(manifest: Manifest): Record<string, unknown> {
  const body = JSON.parse(manifest.bytes.toString('utf8')) as unknown;
  return typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
}

/**
 * Merges `additions` into a fallback index. Returns the index to push, or undefined when `current`
 * lists every addition already. Entries are compared by digest; `current` keeps its order and every
 * other field, and new entries follow. Without `current`, the result is `sourceIndex` unchanged when it
 * lists exactly the additions, so that the target's index gets the source's digest. Otherwise it is a new index.
 * @throws UnsupportedManifestError when `current` is not an index (the tag is used for something else).
 */
export function mergeFallbackIndex(current: Manifest | undefined, additions: Descriptor[], sourceIndex?: Manifest): Manifest | undefined {
  if (current === undefined) {
    if (sourceIndex && sameDigests(indexEntries(sourceIndex), additions)) return sourceIndex;
    return indexOf({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: additions });
  }
  if (!isIndexType(current.mediaType)) {
    throw new UnsupportedManifestError(`the tag names a manifest of type ${current.mediaType} (${current.digest}), not an index`);
  }
  const body = parseBody(current);
  const listed = Array.isArray(body.manifests) ? (body.manifests as Descriptor[]) : [];
  const known = new Set(listed.map((entry) => entry.digest));
  const missing = additions.filter((entry) => !known.has(entry.digest));
  if (missing.length === 0) return undefined;
  return indexOf({ ...body, manifests: [...listed, ...missing] });
}

function indexOf(body: Record<string, unknown>): Manifest {
  const bytes = Buffer.from(JSON.stringify(body));
  return { bytes, mediaType: OCI_INDEX, digest: sha256(bytes) };
}

function sameDigests(left: Descriptor[], right: Descriptor[]): boolean {
  return left.length === right.length && left.every((entry, i) => entry.digest === right[i]!.digest);
}

/** Returns the entries of an index; none when the bytes are not a valid index. */
function indexEntries(index: Manifest): Descriptor[] {
  try {
    const parsed = parseManifest(index.mediaType, JSON.parse(index.bytes.toString('utf8')));
    return parsed.kind === 'index' ? parsed.manifests : [];
  } catch {
    return [];
  }
}

/** Returns true for a failure that another attempt cannot change, which is reported instead of retried. */
function isPermanent(error: unknown): boolean {
  if (error instanceof RegistryError) return !error.retryable;
  return error instanceof UnsupportedManifestError || error instanceof MissingChildError;
}

/** A referrer of a subject as found at the source. */
interface Candidate {
  descriptor: Descriptor;
  /** Known from the listing, or read from the manifest when the listing left it out. */
  artifactType: string | undefined;
}

/** Outcome of copying one candidate to the target. */
interface Outcome {
  descriptor: Descriptor;
  artifactType: string;
  /** Pushed by this copy; false when the target had it. */
  copied: boolean;
  /** The target's `OCI-Subject` response header, when it was pushed. */
  indexedBySubject: boolean;
}

/**
 * Copies the referrers of manifests from a source repository to a target repository; see the module
 * comment. One instance serves one image copy: it reads the source's tag list once, and handles each
 * subject once, however often it is asked.
 */
export class ReferrerSync {
  private readonly source: RepositoryLocation;
  private readonly target: RepositoryLocation;
  private readonly options: ReferrerSyncOptions;
  private readonly subjects = new Set<string>();
  private readonly referrers = new Map<string, CopiedReferrer>();
  private readonly failed: FailedReferrer[] = [];
  private readonly fallbackIndexes = new Map<string, FallbackIndex>();
  private readonly apiLists = new Map<string, Promise<Descriptor[] | undefined>>();
  private sourceApi: Promise<boolean> | undefined;
  private targetApi: Promise<boolean> | undefined;
  private sourceTags: Promise<Set<string> | undefined> | undefined;

  constructor(source: RepositoryLocation, target: RepositoryLocation, options: ReferrerSyncOptions) {
    this.source = source;
    this.target = target;
    this.options = options;
  }

  /**
   * Copies the referrers of `subject` that the selection takes, and their own referrers. The subject
   * must be in the target repository. Returns at once when this instance has started on `subject`
   * before: the first call does the work, and waiting for it could wait for itself, because a referrer
   * index may list its own subject.
   */
  syncSubject(subject: string): Promise<void> {
    return this.visit(subject, 0);
  }

  /**
   * Returns false when the source certainly has no referrer for any manifest: it has no referrers API
   * and its tag list has no fallback or cosign tag. `digest` is the image's own digest, used to ask the
   * referrers API once.
   */
  async mayHaveReferrers(digest: string): Promise<boolean> {
    if ((await this.listAtSource(digest)) !== undefined) return true;
    const tags = await this.tags();
    return tags === undefined || [...tags].some((tag) => REFERRER_TAG.test(tag));
  }

  /** Returns what the copy did, each list sorted by subject and digest. */
  result(): ReferrersResult {
    const bySubject = <T extends { subject: string; digest?: string | undefined; tag?: string | undefined }>(a: T, b: T) =>
      a.subject.localeCompare(b.subject) || (a.digest ?? '').localeCompare(b.digest ?? '') || (a.tag ?? '').localeCompare(b.tag ?? '');
    return {
      referrers: [...this.referrers.values()].sort(bySubject),
      failedReferrers: [...this.failed].sort(bySubject),
      fallbackIndexes: [...this.fallbackIndexes.values()].sort(bySubject),
    };
  }

  private async visit(subject: string, depth: number): Promise<void> {
    if (this.subjects.has(subject) || depth > MAX_DEPTH) return;
    this.subjects.add(subject);
    await this.syncOnce(subject, depth);
  }

  private async syncOnce(subject: string, depth: number): Promise<void> {
    const [linked, tagged] = await Promise.all([this.syncLinkedReferrers(subject), this.syncCosignTags(subject)]);
    // Their own referrers: a signature of an attestation, for example.
    await Promise.all([...linked, ...tagged].map((digest) => this.visit(digest, depth + 1)));
  }

  // ---- Referrers linked by `subject`: the referrers API or the fallback tag ----

  /** Copies and links the referrers of `subject` found through the API or the fallback tag; returns their digests. */
  private async syncLinkedReferrers(subject: string): Promise<string[]> {
    const tag = fallbackTag(subject);
    let candidates: Candidate[];
    let sourceIndex: Manifest | undefined;
    let targetIndex: Manifest | undefined;
    try {
      const listed = await this.listAtSource(subject);
      if (listed !== undefined) {
        candidates = listed.map((descriptor) => ({ descriptor, artifactType: descriptor.artifactType }));
      } else {
        if (!(await this.sourceMayHaveTag(tag))) return [];
        targetIndex = await this.target.client.getManifest(this.target.repository, tag);
        const found = await this.readSourceFallbackIndex(subject, tag, targetIndex);
        if (found === 'unchanged') return this.recordUnchangedIndex(subject, tag, targetIndex!);
        if (found === undefined) return [];
        sourceIndex = found;
        candidates = indexEntries(found).map((descriptor) => ({ descriptor, artifactType: descriptor.artifactType }));
      }
      candidates = await this.select(candidates, subject);
    } catch (error) {
      this.fail(error, { subject, reason: `cannot read the referrers of ${subject} at ${this.describe(this.source)}` });
      return [];
    }

    const inTargetIndex = new Set(targetIndex ? indexEntries(targetIndex).map((entry) => entry.digest) : []);
    if (targetIndex) this.fallbackIndexes.set(subject, { subject, tag, digest: targetIndex.digest });
    const outcomes = await Promise.all(candidates.map((candidate) => this.copyLinkedReferrer(subject, candidate, inTargetIndex)));
    const present = outcomes.filter((outcome): outcome is Outcome => outcome !== undefined);
    await this.link(subject, tag, present, inTargetIndex, sourceIndex);
    return present.map((outcome) => outcome.descriptor.digest);
  }

  /**
   * Reads the source's fallback index of `subject`. Returns 'unchanged' when the target's index has the
   * same digest, so nothing needs reading; undefined when the tag is gone or names no index (some
   * repositories use such tag names for other things).
   */
  private async readSourceFallbackIndex(subject: string, tag: string, targetIndex: Manifest | undefined): Promise<Manifest | 'unchanged' | undefined> {
    const { client, repository } = this.source;
    let index: Manifest | undefined;
    if (targetIndex) {
      const head = await client.headManifest(repository, tag);
      if (!head) return undefined;
      if (head.digest === targetIndex.digest) return 'unchanged';
      index = await client.getManifest(repository, head.digest);
    } else {
      index = await client.getManifest(repository, tag);
    }
    if (index) this.options.onManifestBytes?.(index.bytes.length, 0);
    if (!index || !isIndexType(index.mediaType) || index.digest === subject) return undefined;
    return index;
  }

  /** Records the referrers of a target fallback index that equals the source's, without reading the source. */
  private async recordUnchangedIndex(subject: string, tag: string, targetIndex: Manifest): Promise<string[]> {
    this.fallbackIndexes.set(subject, { subject, tag, digest: targetIndex.digest });
    const entries = await this.select(
      indexEntries(targetIndex).map((descriptor) => ({ descriptor, artifactType: descriptor.artifactType })),
      subject,
    );
    for (const entry of entries) this.record(subject, entry.descriptor.digest, entry.artifactType ?? entry.descriptor.mediaType, false);
    return entries.map((entry) => entry.descriptor.digest);
  }

  /** Brings one referrer to the target unless it is there. Undefined when it failed and was reported. */
  private async copyLinkedReferrer(subject: string, candidate: Candidate, inTargetIndex: Set<string>): Promise<Outcome | undefined> {
    const { descriptor } = candidate;
    let artifactType = candidate.artifactType ?? descriptor.mediaType;
    try {
      // Listed in the target's fallback index: pushed there before the index was written.
      let present = inTargetIndex.has(descriptor.digest);
      if (!present) present = (await this.target.client.headManifest(this.target.repository, descriptor.digest)) !== undefined;
      if (present) {
        this.record(subject, descriptor.digest, artifactType, false);
        return { descriptor, artifactType, copied: false, indexedBySubject: false };
      }

      const manifest = await this.readSource(descriptor.digest, subject);
      artifactType = candidate.artifactType ?? artifactTypeOf(manifest);
      await this.options.copyContents(manifest);
      const pushed = await pushRechecking(
        () => this.target.client.putManifestWithSubject(this.target.repository, descriptor.digest, manifest),
        () => this.options.recheckContents(manifest),
      );
      this.options.onManifestBytes?.(0, manifest.bytes.length);
      if (pushed.subject !== undefined) {
        rememberApiSupport(this.target.client, true);
        this.targetApi ??= Promise.resolve(true);
      }
      this.record(subject, descriptor.digest, artifactType, true);
      return { descriptor, artifactType, copied: true, indexedBySubject: pushed.subject !== undefined };
    } catch (error) {
      this.fail(error, { subject, digest: descriptor.digest, artifactType, reason: `cannot copy referrer ${descriptor.digest} (${artifactType}) of ${subject}` });
      return undefined;
    }
  }

  /**
   * Makes the target list the referrers of `subject`. Nothing is needed for those it indexed when they
   * were pushed (an `OCI-Subject` response header), nor for those in its fallback index. The others are merged
   * into the fallback index, unless none was pushed just now and the target has the referrers API.
   */
  private async link(subject: string, tag: string, outcomes: Outcome[], inTargetIndex: Set<string>, sourceIndex: Manifest | undefined): Promise<void> {
    const unlinked = outcomes.filter((outcome) => !outcome.indexedBySubject && !inTargetIndex.has(outcome.descriptor.digest));
    if (unlinked.length === 0) return;
    // A push whose response lacks OCI-Subject obliges the pusher to update the fallback tag (distribution-spec v1.1).
    if (!unlinked.some((outcome) => outcome.copied) && (await this.targetHasApi(subject))) return;

    const additions = unlinked.map((outcome) => withArtifactType(outcome.descriptor, outcome.artifactType));
    const lock = this.options.fallbackTagLock ?? (<T>(_key: string, work: () => Promise<T>) => work());
    const { client, repository } = this.target;
    try {
      await lock(`${client.registry}/${repository}:${tag}`, async () => {
        // Read again under the lock: another copy may have merged since the read before it.
        const current = await client.getManifest(repository, tag);
        const merged = mergeFallbackIndex(current, additions, sourceIndex);
        if (merged) await client.putManifest(repository, tag, merged);
        const digest = (merged ?? current)!.digest;
        this.fallbackIndexes.set(subject, { subject, tag, digest });
      });
    } catch (error) {
      for (const outcome of unlinked) {
        const digest = outcome.descriptor.digest;
        this.referrers.delete(referrerKey(subject, digest));
        const reason = `referrer ${digest} of ${subject} is in ${this.describe(this.target)} but not listed under the fallback tag ${tag}`;
        this.fail(error, { subject, digest, artifactType: outcome.artifactType, reason });
      }
    }
  }

  // ---- cosign's tag scheme ----

  /** Copies the cosign tags of `subject` that the source has; returns the digests they name. */
  private async syncCosignTags(subject: string): Promise<string[]> {
    const suffixes = this.options.selection === 'signatures' ? ['.sig'] : COSIGN_SUFFIXES;
    const digests = await Promise.all(
      cosignTags(subject, suffixes).map(async (tag) => ((await this.sourceMayHaveTag(tag)) ? this.syncCosignTag(subject, tag) : undefined)),
    );
    return digests.filter((digest): digest is string => digest !== undefined);
  }

  /** Makes the target's `tag` name what the source's does. Returns the digest, or undefined when absent or failed. */
  private async syncCosignTag(subject: string, tag: string): Promise<string | undefined> {
    const { client, repository } = this.source;
    let digest: string | undefined;
    let artifactType: string | undefined;
    try {
      const atTarget = await this.target.client.getManifest(this.target.repository, tag);
      let manifest: Manifest | undefined;
      if (atTarget) {
        const head = await client.headManifest(repository, tag);
        if (!head) return undefined;
        digest = head.digest;
        if (head.digest === atTarget.digest) {
          this.record(subject, head.digest, cosignArtifactType(atTarget), false, tag);
          return head.digest;
        }
        manifest = await this.readSource(head.digest, subject);
      } else {
        manifest = await client.getManifest(repository, tag);
        if (!manifest) return undefined;
        this.options.onManifestBytes?.(manifest.bytes.length, 0);
      }
      digest = manifest.digest;
      artifactType = cosignArtifactType(manifest);

      await this.options.copyContents(manifest);
      await pushRechecking(
        () => this.target.client.putManifest(this.target.repository, tag, manifest),
        () => this.options.recheckContents(manifest!),
      );
      this.options.onManifestBytes?.(0, manifest.bytes.length);
      this.record(subject, manifest.digest, artifactType, true, tag);
      return manifest.digest;
    } catch (error) {
      this.fail(error, {
        subject,
        ...(digest ? { digest } : {}),
        ...(artifactType ? { artifactType } : {}),
        tag,
        reason: `cannot copy the cosign tag ${tag} of ${subject}`,
      });
      return undefined;
    }
  }

  // ---- Source and target lookups ----

  /**
   * Lists the referrers of `subject` with the source's referrers API; undefined when the source has no
   * such API. The first call of a copy finds out whether it has, unless this process knows already.
   */
  private listAtSource(subject: string): Promise<Descriptor[] | undefined> {
    let pending = this.apiLists.get(subject);
    if (!pending) {
      pending = this.listAtSourceOnce(subject);
      this.apiLists.set(subject, pending);
    }
    return pending;
  }

  private async listAtSourceOnce(subject: string): Promise<Descriptor[] | undefined> {
    const { client, repository } = this.source;
    if (this.sourceApi === undefined) {
      const known = knownApiSupport(client);
      if (known !== undefined) {
        this.sourceApi = Promise.resolve(known);
      } else {
        const first = client.listReferrers(repository, subject);
        this.sourceApi = first.then((list) => {
          rememberApiSupport(client, list !== undefined);
          return list !== undefined;
        });
        // Callers that wait on `sourceApi` see a failure of `first` themselves; this only stops it counting as unhandled.
        this.sourceApi.catch(() => undefined);
        return first;
      }
    }
    if (!(await this.sourceApi)) return undefined;
    return client.listReferrers(repository, subject);
  }

  /** Returns true when the target has the referrers API, asking it (with `subject`) once per process and hour. */
  private targetHasApi(subject: string): Promise<boolean> {
    if (this.targetApi === undefined) {
      const { client, repository } = this.target;
      const known = knownApiSupport(client);
      this.targetApi =
        known !== undefined
          ? Promise.resolve(known)
          : client.listReferrers(repository, subject).then((list) => {
              rememberApiSupport(client, list !== undefined);
              return list !== undefined;
            });
    }
    return this.targetApi;
  }

  /**
   * Returns false when the source's tag list shows that `tag` does not exist. Without a tag list (the
   * registry refused to list, or has more pages than the client reads), every tag may exist.
   */
  private async sourceMayHaveTag(tag: string): Promise<boolean> {
    const tags = await this.tags();
    return tags === undefined || tags.has(tag);
  }

  private tags(): Promise<Set<string> | undefined> {
    const list = () =>
      this.source.client.listTags(this.source.repository).then(
        (tags) => new Set(tags ?? []),
        (error: unknown) => {
          if (error instanceof RegistryError && !error.retryable) return undefined;
          throw error;
        },
      );
    this.sourceTags ??= this.options.tagLists ? this.options.tagLists.tags(this.source.client, this.source.repository, list) : list();
    return this.sourceTags;
  }

  /** Reads a referrer at the source by digest. */
  private async readSource(digest: string, subject: string): Promise<Manifest> {
    const manifest = await this.source.client.getManifest(this.source.repository, digest);
    if (!manifest) {
      throw new MissingChildError(digest, `${this.describe(this.source)} lists ${digest} as a referrer of ${subject} but does not have it`);
    }
    this.options.onManifestBytes?.(manifest.bytes.length, 0);
    return manifest;
  }

  /** Keeps the candidates the selection takes; reads a manifest when its listing gives no artifact type. */
  private async select(candidates: Candidate[], subject: string): Promise<Candidate[]> {
    if (this.options.selection === 'all') return candidates;
    const typed = await Promise.all(
      candidates.map(async (candidate) => {
        if (candidate.artifactType !== undefined) return candidate;
        const manifest = await this.readSource(candidate.descriptor.digest, subject);
        return { ...candidate, artifactType: artifactTypeOf(manifest) };
      }),
    );
    return typed.filter((candidate) => SIGNATURE_ARTIFACT_TYPES.has(candidate.artifactType!));
  }

  // ---- Results ----

  private record(subject: string, digest: string, artifactType: string, copied: boolean, tag?: string): void {
    this.referrers.set(referrerKey(subject, digest, tag), { artifactType, digest, subject, ...(tag ? { tag } : {}), copied });
  }

  /**
   * Reports a failure that another attempt cannot change, or throws it when the policy is 'fail'.
   * Anything else (a rate limit, a 5xx, a broken connection) is thrown, so that the job is retried.
   */
  private fail(error: unknown, failure: FailedReferrer): void {
    if (!isPermanent(error)) throw error;
    const reason = `${failure.reason}: ${(error as Error).message}`;
    if (this.options.failures !== 'fail') {
      this.failed.push({ ...failure, reason });
      return;
    }

    const advice = `${reason}; set referrerFailures to 'report' to copy the image without it`;
    if (error instanceof RegistryError) {
      const status = error.status === undefined ? {} : { status: error.status };
      throw new RegistryError(error.code, advice, { registry: error.registry, operation: error.operation, ...status, cause: error });
    }
    const rejection = new UnsupportedManifestError(advice);
    rejection.cause = error;
    throw rejection;
  }

  private describe(location: RepositoryLocation): string {
    return `${location.client.registry}/${location.repository}`;
  }
}

function referrerKey(subject: string, digest: string, tag?: string): string {
  return `${subject} ${digest} ${tag ?? ''}`;
}

/** Returns the descriptor with `artifactType` set, as a referrers list entry requires. */
function withArtifactType(descriptor: Descriptor, artifactType: string): Descriptor {
  return descriptor.artifactType === undefined ? { ...descriptor, artifactType } : descriptor;
}
