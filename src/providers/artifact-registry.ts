import { ArtifactRegistryClient } from '@google-cloud/artifact-registry';
import type { ArtifactRegistryMirrorRegistry } from '../config/config.ts';
import { RegistryError, type ErrorCode } from '../errors.ts';
import { sameRegistry, type ImageReference } from '../image-ref/reference.ts';
import type { Credentials } from '../registry/auth.ts';
import type { CredentialsSource } from './credentials.ts';
import { fitName, namespaceComponents, sourcePath, targetTag, type NameRules } from './naming.ts';
import { createPacer } from './pacer.ts';
import type { MirrorLocation, TargetName, TargetProvider } from './provider.ts';
import type { ProviderAccess } from './registry-access.ts';

/**
 * GCP Artifact Registry as a mirror registry. Images live in one Docker-format repository, named in the
 * configuration and created when missing: `LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/<target path>`.
 * Image paths inside it need no creation. The repository carries a cleanup policy that deletes untagged
 * versions the retention time after their upload; tags are only ever deleted by the sweep.
 * Push credentials are OAuth2 access tokens (user `oauth2accesstoken`); the same tokens call the API.
 */

// Distribution's limit of 255 characters for a repository path (RepositoryNameTotalLengthMax in
// distribution/reference), counted from PROJECT/REPOSITORY on.
// NOTE: path components are fitted to single `.`, `_` or `-` separators, a subset of what Docker accepts,
// because Artifact Registry's documentation opened here does not state its own rule for image paths.
const MAX_PATH_LENGTH = 255;
/** Id of the cleanup policy this provider writes; other policies of the repository are kept. */
export const CLEANUP_POLICY_ID = 'mirrorfleet-untagged';
// gRPC status codes that google-gax errors carry.
const GRPC = { NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, UNAVAILABLE: 14, UNAUTHENTICATED: 16 } as const;
// NOTE: write calls (create, update, delete) start at most 10 per second per process. That is a
// conservative pace chosen here, not Artifact Registry's quota, which the project's Quotas page shows.
const DEFAULT_WRITE_INTERVAL_MS = 100;

export interface ArtifactRegistryProviderOptions {
  registry: ArtifactRegistryMirrorRegistry;
  /** Plain HTTP to the registry host; only a local stand-in needs it. */
  insecure: boolean;
  /** API client, built by createArtifactRegistryClient. */
  client: ArtifactRegistryClient;
  /** Access tokens, shared by the API client and pushes. */
  tokens: CredentialsSource;
  /** Minimum time between the starts of two write calls, in milliseconds. */
  writeIntervalMs?: number;
  visibilityDelaysMs?: number[];
}

interface CleanupPolicy {
  id?: string | null;
  action?: unknown;
  condition?: { tagState?: unknown; olderThan?: { seconds?: unknown } | null } | null;
}

export class ArtifactRegistryProvider implements TargetProvider {
  readonly name: string;
  readonly host: string;
  readonly prefix: string;
  readonly insecure: boolean;
  readonly canDeleteTags: boolean = true;

  private readonly repositoryName: string;
  private readonly parent: string;
  private readonly repositoryId: string;
  private readonly project: string;
  /** `PROJECT/REPOSITORY` as it appears in image paths. */
  private readonly basePath: string;
  private readonly retentionSeconds: number;
  private readonly client: ArtifactRegistryClient;
  private readonly tokens: CredentialsSource;
  private readonly paceWrite: <T>(call: () => Promise<T>) => Promise<T>;
  private readonly visibilityDelaysMs: number[] | undefined;
  private ready: Promise<void> | undefined;

  constructor(options: ArtifactRegistryProviderOptions) {
    const { registry } = options;
    this.name = registry.name;
    this.host = registry.host;
    this.prefix = registry.prefix;
    this.insecure = options.insecure;
    this.project = registry.project;
    this.repositoryId = registry.repository;
    this.parent = `projects/${registry.project}/locations/${registry.location}`;
    this.repositoryName = `${this.parent}/repositories/${registry.repository}`;
    this.basePath = `${registry.project.replace(':', '/')}/${registry.repository}`;
    this.retentionSeconds = registry.retentionSeconds;
    this.client = options.client;
    this.tokens = options.tokens;
    this.paceWrite = createPacer(options.writeIntervalMs ?? DEFAULT_WRITE_INTERVAL_MS);
    this.visibilityDelaysMs = options.visibilityDelaysMs;
  }

  targetFor(source: ImageReference, location: MirrorLocation): TargetName {
    const components = namespaceComponents(this.prefix.slice(this.basePath.length + 1), location);
    const path = [...components, sourcePath(source)].join('/');
    const rules: NameRules = { maxLength: MAX_PATH_LENGTH - this.basePath.length - 1, slashes: true, separators: 'single' };
    return { repository: `${this.basePath}/${fitName(path, rules)}`, tag: targetTag(source) };
  }

  contains(source: ImageReference): boolean {
    return sameRegistry(source.registry, this.host) && (source.repository === this.prefix || source.repository.startsWith(`${this.prefix}/`));
  }

  /** Makes sure the configured repository exists with the current cleanup policy, once per process. */
  async ensureRepository(_repository: string): Promise<void> {
    this.ready ??= this.ensureOnce().catch((error: unknown) => {
      this.ready = undefined;
      throw error;
    });
    await this.ready;
  }

  async credentials(): Promise<Credentials> {
    return this.tokens.current();
  }

  access(): ProviderAccess {
    return {
      credentials: this.tokens,
      createRepository: () => {
        this.ready = undefined;
        return this.ensureRepository('');
      },
      ...(this.visibilityDelaysMs ? { visibilityDelaysMs: this.visibilityDelaysMs } : {}),
    };
  }

  /** Returns the cleanup policy that deletes untagged versions once they are older than the retention time. */
  cleanupPolicy(): CleanupPolicy {
    return { id: CLEANUP_POLICY_ID, action: 'DELETE', condition: { tagState: 'UNTAGGED', olderThan: { seconds: this.retentionSeconds } } };
  }

  /**
   * Deletes a tag (when given) with DeleteTag, after checking with GetTag that it still names `digest`, or
   * a version by digest with DeleteVersion, which Artifact Registry refuses while the version has tags.
   */
  async deleteImage(repository: string, image: { tag?: string; digest: string }): Promise<'deleted' | 'absent'> {
    const packageName = `${this.repositoryName}/packages/${encodeURIComponent(repository.slice(this.basePath.length + 1))}`;
    if (image.tag !== undefined) {
      const tagName = `${packageName}/tags/${image.tag}`;
      const operation = `deleting tag ${repository}:${image.tag}`;
      try {
        const [tag] = await this.client.getTag({ name: tagName });
        // A tag that moved to other content no longer names the image to delete.
        if (!tag.version?.endsWith(`/versions/${image.digest}`)) return 'absent';
        await this.paceWrite(() => this.client.deleteTag({ name: tagName }));
        return 'deleted';
      } catch (error) {
        if (grpcCode(error) === GRPC.NOT_FOUND) return 'absent';
        throw googleFailure(this.host, operation, error);
      }
    }

    const operation = `deleting version ${repository}@${image.digest}`;
    try {
      const [pending] = await this.paceWrite(() => this.client.deleteVersion({ name: `${packageName}/versions/${image.digest}` }));
      await pending.promise();
      return 'deleted';
    } catch (error) {
      if (grpcCode(error) === GRPC.NOT_FOUND) return 'absent';
      throw googleFailure(this.host, operation, error);
    }
  }

  private async ensureOnce(): Promise<void> {
    let existing = await this.getRepository();
    if (!existing) {
      try {
        const [pending] = await this.paceWrite(() =>
          this.client.createRepository({
            parent: this.parent,
            repositoryId: this.repositoryId,
            repository: {
              format: 'DOCKER',
              description: 'Mirrored images, written by mirrorfleet',
              labels: { 'created-by': 'mirrorfleet' },
              cleanupPolicies: { [CLEANUP_POLICY_ID]: this.cleanupPolicy() as never },
              cleanupPolicyDryRun: false,
            },
          }),
        );
        await pending.promise();
        return;
      } catch (error) {
        if (grpcCode(error) === GRPC.PERMISSION_DENIED) {
          throw new RegistryError(
            'REGISTRY_DENIED',
            `cannot create Artifact Registry repository ${this.repositoryName}: permission denied; grant artifactregistry.repositories.create ` +
              `(role roles/artifactregistry.admin) in project ${this.project}, or create the repository beforehand`,
            { registry: this.host, operation: `creating repository ${this.repositoryName}`, cause: error },
          );
        }
        // Another worker created it first; its cleanup policy may still need this process's setting.
        if (grpcCode(error) !== GRPC.ALREADY_EXISTS) throw googleFailure(this.host, `creating repository ${this.repositoryName}`, error);
        existing = await this.getRepository();
      }
    }

    const current = existing?.cleanupPolicies?.[CLEANUP_POLICY_ID] as CleanupPolicy | undefined;
    if (current && sameCleanupPolicy(current, this.cleanupPolicy())) return;
    await this.call(`updating the cleanup policy of ${this.repositoryName}`, () =>
      this.paceWrite(() =>
        this.client.updateRepository({
          repository: { name: this.repositoryName, cleanupPolicies: { ...(existing?.cleanupPolicies ?? {}), [CLEANUP_POLICY_ID]: this.cleanupPolicy() as never } },
          updateMask: { paths: ['cleanup_policies'] },
        }),
      ),
    );
  }

  private async getRepository() {
    try {
      const [repository] = await this.client.getRepository({ name: this.repositoryName });
      return repository;
    } catch (error) {
      if (grpcCode(error) === GRPC.NOT_FOUND) return undefined;
      throw googleFailure(this.host, `reading repository ${this.repositoryName}`, error);
    }
  }

  private async call<T>(operation: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (error) {
      throw googleFailure(this.host, operation, error);
    }
  }
}

function sameCleanupPolicy(current: CleanupPolicy, desired: CleanupPolicy): boolean {
  return (
    String(current.action) === String(desired.action) &&
    String(current.condition?.tagState) === String(desired.condition?.tagState) &&
    String(current.condition?.olderThan?.seconds) === String(desired.condition?.olderThan?.seconds)
  );
}

/**
 * Builds the API client on the REST transport, which sends through `fetchFunction` with a Bearer token
 * from `tokens`, renewed once when the API returns 401. `apiEndpoint` is an origin such as
 * `https://artifactregistry.googleapis.com` (the default) or a local stand-in.
 */
export function createArtifactRegistryClient(options: { apiEndpoint?: string | undefined; tokens: CredentialsSource; fetchFunction: typeof fetch }): ArtifactRegistryClient {
  const { tokens, fetchFunction } = options;
  const authorized = async (credentials: Credentials, url: string, init: RequestInit) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${credentials.password}`);
    return fetchFunction(url, { method: init.method ?? 'GET', headers, body: init.body ?? null, ...(init.signal ? { signal: init.signal } : {}) });
  };
  const auth = {
    async getRequestHeaders() {
      return new Headers({ authorization: `Bearer ${(await tokens.current()).password}` });
    },
    async fetch(url: string, init: RequestInit) {
      const credentials = await tokens.current();
      const response = await authorized(credentials, url, init);
      if (response.status !== 401) return response;
      const renewed = await tokens.renew(credentials);
      return renewed ? authorized(renewed, url, init) : response;
    },
  };

  const endpoint = options.apiEndpoint ? new URL(options.apiEndpoint) : undefined;
  const location = endpoint
    ? { apiEndpoint: endpoint.hostname, port: Number(endpoint.port) || (endpoint.protocol === 'http:' ? 80 : 443), protocol: endpoint.protocol.slice(0, -1) }
    : {};
  return new ArtifactRegistryClient({ fallback: true, ...location, auth: auth as never });
}

function grpcCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

/** Sorts a google-gax failure into a RegistryError: denied and invalid input are final, quota and unavailability retryable. */
function googleFailure(registry: string, operation: string, error: unknown): RegistryError {
  const code = grpcCode(error);
  const detail = error instanceof Error ? error.message : String(error);
  let errorCode: ErrorCode = 'REGISTRY_PROTOCOL';
  let retryable = false;
  if (code === GRPC.PERMISSION_DENIED || code === GRPC.UNAUTHENTICATED) errorCode = 'REGISTRY_DENIED';
  else if (code === GRPC.NOT_FOUND) errorCode = 'REGISTRY_NOT_FOUND';
  else if (code === GRPC.RESOURCE_EXHAUSTED) {
    errorCode = 'REGISTRY_RATE_LIMITED';
    retryable = true;
  } else if (code === GRPC.UNAVAILABLE || code === undefined) {
    errorCode = 'REGISTRY_UNAVAILABLE';
    retryable = true;
  }
  const advice = errorCode === 'REGISTRY_DENIED' ? '; check the service account and its Artifact Registry roles' : '';
  return new RegistryError(errorCode, `Artifact Registry API failed while ${operation} for ${registry}: ${detail}${advice}`, { registry, operation, retryable, cause: error });
}
