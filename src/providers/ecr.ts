import {
  BatchCheckLayerAvailabilityCommand,
  BatchDeleteImageCommand,
  BatchGetImageCommand,
  CreateRepositoryCommand,
  DescribeImagesCommand,
  GetAuthorizationTokenCommand,
  GetLifecyclePolicyCommand,
  PutLifecyclePolicyCommand,
  type ECRClient,
  type ImageIdentifier,
} from '@aws-sdk/client-ecr';
import type { EcrMirrorRegistry } from '../config/config.ts';
import { RegistryError, type ErrorCode } from '../errors.ts';
import { sameRegistry, type ImageReference } from '../image-ref/reference.ts';
import { registerSecret } from '../log/redact.ts';
import type { Credentials } from '../registry/auth.ts';
import { RefreshingCredentials } from './credentials.ts';
import { fitName, namespaceComponents, sourcePath, targetTag, type NameRules } from './naming.ts';
import type { MirrorLocation, TargetName, TargetProvider } from './provider.ts';
import type { ProviderAccess } from './registry-access.ts';

/**
 * AWS ECR as a mirror registry. Every target repository is an ECR repository, created before the first
 * push with tags naming its cluster and service and with a lifecycle policy that expires untagged images
 * only. Push credentials come from GetAuthorizationToken (user `AWS`, valid 12 hours) and are renewed
 * before they expire. The AWS credentials that call the API come from the SDK's default chain.
 */

// Amazon ECR API Reference, Repository.repositoryName: 2 to 256 characters matching
// (?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*, so unlike distribution no `__` or `--`.
// NOTE: CreateRepository's description also requires a name to "start with a letter", which that pattern
// does not. Names are fitted to the pattern, so a name starting with a digit is sent as it is.
export const ECR_NAME_RULES: NameRules = { maxLength: 256, minLength: 2, slashes: true, separators: 'single' };

// BatchCheckLayerAvailability and BatchDeleteImage take at most 100 ids per call (ECR API reference).
const MAX_IDS_PER_CALL = 100;
const DAY_SECONDS = 86_400;
/** Rules of the lifecycle policy that this provider writes start their description with this. */
export const LIFECYCLE_RULE_MARKER = 'mirrorfleet:';
const INDEX_MEDIA_TYPES = new Set(['application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.oci.image.index.v1+json']);
// Locations remembered between targetFor and the repository's creation, to tag it with cluster and service.
const MAX_REMEMBERED_LOCATIONS = 10_000;

export interface EcrProviderOptions {
  registry: EcrMirrorRegistry;
  /** Plain HTTP to the registry host; only a local stand-in needs it. */
  insecure: boolean;
  /** ECR API client, configured with region, credentials and endpoint. */
  ecr: ECRClient;
  /** Clock for token expiry, in milliseconds since the epoch. */
  now?: () => number;
  /** Waits between pushes that still find a just-created repository missing; see ProviderAccess. */
  visibilityDelaysMs?: number[];
}

interface LifecycleRule {
  rulePriority: number;
  description?: string;
  selection: Record<string, unknown>;
  action: Record<string, unknown>;
}

export class EcrProvider implements TargetProvider {
  readonly name: string;
  readonly host: string;
  readonly prefix: string;
  readonly insecure: boolean;
  // BatchDeleteImage removes a tag alone; the image goes with its last tag.
  readonly canDeleteTags: boolean = true;

  private readonly account: string;
  private readonly region: string;
  private readonly retentionSeconds: number;
  private readonly ecr: ECRClient;
  private readonly tokens: RefreshingCredentials;
  private readonly visibilityDelaysMs: number[] | undefined;
  private readonly known = new Set<string>();
  private readonly creating = new Map<string, Promise<void>>();
  private readonly locations = new Map<string, MirrorLocation>();

  constructor(options: EcrProviderOptions) {
    this.name = options.registry.name;
    this.host = options.registry.host;
    this.prefix = options.registry.prefix;
    this.insecure = options.insecure;
    this.account = options.registry.account;
    this.region = options.registry.region;
    this.retentionSeconds = options.registry.retentionSeconds;
    this.ecr = options.ecr;
    this.visibilityDelaysMs = options.visibilityDelaysMs;
    this.tokens = new RefreshingCredentials(() => this.fetchAuthorizationToken(), options.now ? { now: options.now } : {});
  }

  targetFor(source: ImageReference, location: MirrorLocation): TargetName {
    const name = [...namespaceComponents(this.prefix, location), sourcePath(source)].join('/');
    const repository = fitName(name, ECR_NAME_RULES);
    this.rememberLocation(repository, location);
    return { repository, tag: targetTag(source) };
  }

  contains(source: ImageReference): boolean {
    if (!sameRegistry(source.registry, this.host)) return false;
    return this.prefix === '' || source.repository === this.prefix || source.repository.startsWith(`${this.prefix}/`);
  }

  /** Creates the repository unless this process already saw it, then makes sure its lifecycle policy is current. */
  async ensureRepository(repository: string): Promise<void> {
    if (this.known.has(repository)) return;
    await this.createRepository(repository);
  }

  async credentials(): Promise<Credentials> {
    return this.tokens.current();
  }

  /** Returns what the registry client of this host needs: the renewing token, and creation when a push finds no repository. */
  access(): ProviderAccess {
    return {
      credentials: this.tokens,
      createRepository: (repository) => {
        this.known.delete(repository);
        return this.createRepository(repository);
      },
      ...(this.visibilityDelaysMs ? { visibilityDelaysMs: this.visibilityDelaysMs } : {}),
    };
  }

  /**
   * Deletes a tag (when given) or a manifest by digest with BatchDeleteImage. With a tag, the digest is
   * sent too, so that ECR refuses when the tag moved to other content meanwhile; that counts as absent.
   * When an untagged index still lists the manifest, ECR refuses to delete it, so such indexes go first.
   */
  async deleteImage(repository: string, image: { tag?: string; digest: string }): Promise<'deleted' | 'absent'> {
    const imageId: ImageIdentifier = image.tag !== undefined ? { imageTag: image.tag, imageDigest: image.digest } : { imageDigest: image.digest };
    const first = await this.batchDelete(repository, imageId);
    if (first !== 'ImageReferencedByManifestList') return first;

    await this.deleteUntaggedIndexesListing(repository, image.digest);
    const second = await this.batchDelete(repository, imageId);
    if (second !== 'ImageReferencedByManifestList') return second;
    throw new RegistryError('REGISTRY_PROTOCOL', `cannot delete ${repository}@${image.digest}: ECR still rejects it as listed by an index after the untagged indexes listing it were deleted; delete the remaining index first`, {
      registry: this.host,
      operation: `deleting ${repository}@${image.digest}`,
    });
  }

  /**
   * Returns which of `digests` the repository holds, with one BatchCheckLayerAvailability call per 100
   * digests instead of one HEAD each.
   */
  async availableLayers(repository: string, digests: string[]): Promise<Set<string>> {
    const available = new Set<string>();
    for (let start = 0; start < digests.length; start += MAX_IDS_PER_CALL) {
      const layerDigests = digests.slice(start, start + MAX_IDS_PER_CALL);
      const output = await this.call(`checking ${layerDigests.length} layers in ${repository}`, () =>
        this.ecr.send(new BatchCheckLayerAvailabilityCommand({ registryId: this.account, repositoryName: repository, layerDigests })),
      );
      for (const layer of output.layers ?? []) {
        if (layer.layerAvailability === 'AVAILABLE' && layer.layerDigest) available.add(layer.layerDigest);
      }
    }
    return available;
  }

  /** Returns the lifecycle policy rule that expires untagged images the retention time after their push, in whole days. */
  lifecycleRule(): LifecycleRule {
    // ECR counts sinceImagePushed in whole days, at least 1.
    const days = Math.max(1, Math.ceil(this.retentionSeconds / DAY_SECONDS));
    return {
      rulePriority: 1,
      description: `${LIFECYCLE_RULE_MARKER} expire untagged images ${days} days after push`,
      selection: { tagStatus: 'untagged', countType: 'sinceImagePushed', countUnit: 'days', countNumber: days },
      action: { type: 'expire' },
    };
  }

  private createRepository(repository: string): Promise<void> {
    let pending = this.creating.get(repository);
    if (!pending) {
      pending = this.createOnce(repository).finally(() => this.creating.delete(repository));
      this.creating.set(repository, pending);
    }
    return pending;
  }

  private async createOnce(repository: string): Promise<void> {
    const operation = `creating repository ${repository}`;
    let created = false;
    try {
      await this.ecr.send(
        new CreateRepositoryCommand({ registryId: this.account, repositoryName: repository, imageTagMutability: 'MUTABLE', tags: this.repositoryTags(repository) }),
      );
      created = true;
    } catch (error) {
      if (errorName(error) === 'AccessDeniedException') {
        throw new RegistryError(
          'REGISTRY_DENIED',
          `cannot create ECR repository ${repository} in account ${this.account} (${this.region}): access denied; ` +
            `grant ecr:CreateRepository, ecr:TagResource, ecr:GetLifecyclePolicy and ecr:PutLifecyclePolicy on arn:aws:ecr:${this.region}:${this.account}:repository/*`,
          { registry: this.host, operation, status: httpStatus(error), cause: error },
        );
      }
      // Another worker created it first: fine, its lifecycle policy may still need this process's setting.
      if (errorName(error) !== 'RepositoryAlreadyExistsException') throw awsFailure(this.host, operation, error);
    }
    await this.syncLifecyclePolicy(repository, created);
    this.known.add(repository);
  }

  /**
   * Writes this provider's rule into the repository's lifecycle policy unless it is there already, keeping
   * other rules. A repository this call created has no policy yet, so nothing is read first.
   */
  private async syncLifecyclePolicy(repository: string, created: boolean): Promise<void> {
    let existing: LifecycleRule[] = [];
    if (!created) {
      try {
        const output = await this.ecr.send(new GetLifecyclePolicyCommand({ registryId: this.account, repositoryName: repository }));
        existing = parseRules(output.lifecyclePolicyText);
      } catch (error) {
        if (errorName(error) !== 'LifecyclePolicyNotFoundException') throw awsFailure(this.host, `reading the lifecycle policy of ${repository}`, error);
      }
    }

    const ours = this.lifecycleRule();
    const foreign = existing.filter((rule) => !rule.description?.startsWith(LIFECYCLE_RULE_MARKER));
    // Our rule takes priority 1. Other rules keep their order, shifted up by one when one of them has priority 1.
    const shift = foreign.some((rule) => rule.rulePriority === 1) ? 1 : 0;
    const desired = [ours, ...foreign.map((rule) => ({ ...rule, rulePriority: rule.rulePriority + shift }))];
    if (canonicalRules(desired) === canonicalRules(existing)) return;

    await this.call(`writing the lifecycle policy of ${repository}`, () =>
      this.ecr.send(new PutLifecyclePolicyCommand({ registryId: this.account, repositoryName: repository, lifecyclePolicyText: JSON.stringify({ rules: desired }) })),
    );
  }

  private async fetchAuthorizationToken(): Promise<{ credentials: Credentials; expiresAt: number }> {
    const output = await this.call('requesting a push token with GetAuthorizationToken', () => this.ecr.send(new GetAuthorizationTokenCommand({})));
    const data = output.authorizationData?.[0];
    const decoded = data?.authorizationToken ? Buffer.from(data.authorizationToken, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    if (colon < 0 || !data?.expiresAt) {
      throw new RegistryError('REGISTRY_PROTOCOL', `GetAuthorizationToken returned no usable token for ${this.host}`, {
        registry: this.host,
        operation: 'requesting a push token with GetAuthorizationToken',
      });
    }
    const credentials = { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    registerSecret(credentials.password);
    registerSecret(data.authorizationToken);
    return { credentials, expiresAt: data.expiresAt.getTime() };
  }

  /** Returns 'deleted', 'absent', or 'ImageReferencedByManifestList' when an index still lists the image. */
  private async batchDelete(repository: string, imageId: ImageIdentifier): Promise<'deleted' | 'absent' | 'ImageReferencedByManifestList'> {
    const described = imageId.imageTag !== undefined ? `${repository}:${imageId.imageTag} (${imageId.imageDigest})` : `${repository}@${imageId.imageDigest}`;
    const operation = `deleting ${described}`;
    let output;
    try {
      output = await this.ecr.send(new BatchDeleteImageCommand({ registryId: this.account, repositoryName: repository, imageIds: [imageId] }));
    } catch (error) {
      if (errorName(error) === 'RepositoryNotFoundException') return 'absent';
      throw awsFailure(this.host, operation, error);
    }
    if (output.imageIds?.length) return 'deleted';

    const failure = output.failures?.[0];
    switch (failure?.failureCode) {
      // A moved tag no longer names the image to delete, so that image is gone under it.
      case 'ImageNotFound':
      case 'ImageTagDoesNotMatchDigest':
        return 'absent';
      case 'ImageReferencedByManifestList':
        return 'ImageReferencedByManifestList';
      default:
        throw new RegistryError('REGISTRY_PROTOCOL', `ECR rejected ${operation}: ${failure?.failureCode ?? 'no result'} (${failure?.failureReason ?? 'no reason given'})`, {
          registry: this.host,
          operation,
        });
    }
  }

  /**
   * Deletes the untagged indexes of `repository` that list `digest`. A tagged index that lists it is left
   * alone and fails the deletion, because its tag may be in use.
   */
  private async deleteUntaggedIndexesListing(repository: string, digest: string): Promise<void> {
    const indexes: { digest: string; tags: string[] }[] = [];
    let nextToken: string | undefined;
    do {
      const page = await this.call(`listing the images of ${repository}`, () =>
        this.ecr.send(new DescribeImagesCommand({ registryId: this.account, repositoryName: repository, ...(nextToken ? { nextToken } : {}) })),
      );
      for (const detail of page.imageDetails ?? []) {
        if (detail.imageDigest && INDEX_MEDIA_TYPES.has(detail.imageManifestMediaType ?? '')) indexes.push({ digest: detail.imageDigest, tags: detail.imageTags ?? [] });
      }
      nextToken = page.nextToken;
    } while (nextToken);

    const listing: typeof indexes = [];
    for (let start = 0; start < indexes.length; start += MAX_IDS_PER_CALL) {
      const batch = indexes.slice(start, start + MAX_IDS_PER_CALL);
      const output = await this.call(`reading the indexes of ${repository}`, () =>
        this.ecr.send(
          new BatchGetImageCommand({
            registryId: this.account,
            repositoryName: repository,
            imageIds: batch.map((index) => ({ imageDigest: index.digest })),
            acceptedMediaTypes: [...INDEX_MEDIA_TYPES],
          }),
        ),
      );
      for (const image of output.images ?? []) {
        const children = (JSON.parse(image.imageManifest ?? '{}') as { manifests?: { digest?: string }[] }).manifests ?? [];
        const index = batch.find((entry) => entry.digest === image.imageId?.imageDigest);
        if (index && children.some((child) => child.digest === digest)) listing.push(index);
      }
    }

    const tagged = listing.find((index) => index.tags.length > 0);
    if (tagged) {
      throw new RegistryError(
        'REGISTRY_PROTOCOL',
        `cannot delete ${repository}@${digest}: the index ${tagged.digest}, tagged ${tagged.tags.join(', ')}, still lists it; delete or release that tag first`,
        { registry: this.host, operation: `deleting ${repository}@${digest}` },
      );
    }
    for (const index of listing) {
      const result = await this.batchDelete(repository, { imageDigest: index.digest });
      if (result === 'ImageReferencedByManifestList') await this.deleteUntaggedIndexesListing(repository, index.digest);
    }
  }

  private repositoryTags(repository: string): { Key: string; Value: string }[] {
    const location = this.locations.get(repository);
    const tags = [{ Key: 'created-by', Value: 'mirrorfleet' }];
    if (location) {
      tags.push({ Key: 'cluster', Value: location.cluster });
      if (location.mode === 'service' && location.service) tags.push({ Key: 'service', Value: location.service });
    }
    return tags;
  }

  private rememberLocation(repository: string, location: MirrorLocation): void {
    this.locations.delete(repository);
    this.locations.set(repository, location);
    if (this.locations.size > MAX_REMEMBERED_LOCATIONS) this.locations.delete(this.locations.keys().next().value!);
  }

  private async call<T>(operation: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (error) {
      throw awsFailure(this.host, operation, error);
    }
  }
}

function parseRules(text: string | undefined): LifecycleRule[] {
  if (!text) return [];
  const parsed = JSON.parse(text) as { rules?: LifecycleRule[] };
  return parsed.rules ?? [];
}

function canonicalRules(rules: LifecycleRule[]): string {
  return JSON.stringify([...rules].sort((a, b) => a.rulePriority - b.rulePriority).map((rule) => sortKeys(rule)));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)).map(([key, item]) => [key, sortKeys(item)]));
}

function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

/** Sorts an AWS SDK failure into a RegistryError: denied and invalid input are final, throttling and 5xx retryable. */
export function awsFailure(registry: string, operation: string, error: unknown): RegistryError {
  const name = errorName(error) ?? 'Error';
  const status = httpStatus(error);
  const detail = error instanceof Error ? error.message : String(error);
  let code: ErrorCode = 'REGISTRY_PROTOCOL';
  let retryable = false;
  if (name === 'AccessDeniedException' || name === 'UnrecognizedClientException' || status === 401 || status === 403) {
    code = 'REGISTRY_DENIED';
  } else if (name === 'ThrottlingException' || name === 'TooManyRequestsException' || status === 429) {
    code = 'REGISTRY_RATE_LIMITED';
    retryable = true;
  } else if (name === 'ServerException' || (status !== undefined && status >= 500) || status === undefined) {
    // No status at all means the call got no response, because the network failed.
    code = 'REGISTRY_UNAVAILABLE';
    retryable = true;
  } else if (name === 'RepositoryNotFoundException') {
    code = 'REGISTRY_NOT_FOUND';
  }
  const advice = code === 'REGISTRY_DENIED' ? '; check the AWS credentials and the IAM permissions of this worker' : '';
  return new RegistryError(code, `ECR API failed while ${operation} for ${registry}: ${name}: ${detail}${advice}`, {
    registry,
    operation,
    ...(status !== undefined ? { status } : {}),
    retryable,
    cause: error,
  });
}
