import { readFileSync } from 'node:fs';
import { createAdvancedClient, Registry } from '@scaleway/sdk';
import type { ScalewayMirrorRegistry } from '../config/config.ts';
import { ConfigError, RegistryError, type ErrorCode } from '../errors.ts';
import { sameRegistry, type ImageReference } from '../image-ref/reference.ts';
import { registerSecret } from '../log/redact.ts';
import type { Credentials } from '../registry/auth.ts';
import { fitName, namespaceComponents, sourcePath, targetTag, type NameRules } from './naming.ts';
import { createPacer } from './pacer.ts';
import type { MirrorLocation, TargetName, TargetProvider } from './provider.ts';
import type { ProviderAccess } from './registry-access.ts';

/**
 * Scaleway Container Registry as a mirror registry: `rg.REGION.scw.cloud/<namespace>/<image>`. Each
 * repository namespace of the generic layout (one per service, or one per cluster in cluster mode) is a
 * private Scaleway namespace, created on first use and waited for until it is ready. Pushes authenticate
 * as `nologin` with the API secret key. Scaleway has no lifecycle policy, so retention is the sweep's alone.
 */

// NOTE: namespace names of 4 to 50 lowercase letters, digits and inner hyphens are the limits this project
// works with. The Scaleway API reference opened here does not state them, so a name the API rejects fails
// with the API's own message.
export const NAMESPACE_RULES: NameRules = { maxLength: 50, minLength: 4, slashes: false, separators: 'hyphen' };
// Image names inside a namespace: distribution's 255-character repository path, namespace included.
// NOTE: components are fitted to single `.`, `_` or `-` separators, a subset of what Docker accepts.
const MAX_REPOSITORY_LENGTH = 255;
const PLAIN_PART = /^[a-z0-9]+$/;
const PUSH_USERNAME = 'nologin';
// NOTE: API calls start at most 5 per second per process. That is a conservative pace chosen here, not a
// limit taken from Scaleway's documentation.
const DEFAULT_REQUEST_INTERVAL_MS = 200;

type ScalewayApi = InstanceType<typeof Registry.v1.API>;

export interface ScalewayProviderOptions {
  registry: ScalewayMirrorRegistry;
  /** Plain HTTP to the registry host; only a local stand-in needs it. */
  insecure: boolean;
  /** Registry API, built by createScalewayApi. */
  api: ScalewayApi;
  /** API secret key, also the push password. */
  secretKey: string;
  /** Minimum time between the starts of two API calls, in milliseconds. */
  requestIntervalMs?: number;
  /** Seconds between polls (the SDK requires at least 1) while a new namespace is not ready, and the most to wait in all. */
  readyPoll?: { minDelaySeconds: number; maxDelaySeconds: number; timeoutSeconds: number };
  visibilityDelaysMs?: number[];
}

export class ScalewayProvider implements TargetProvider {
  readonly name: string;
  readonly host: string;
  readonly prefix: string;
  readonly insecure: boolean;
  readonly canDeleteTags: boolean = true;

  private readonly region: ScalewayMirrorRegistry['region'];
  private readonly projectId: string;
  private readonly api: ScalewayApi;
  private readonly secretKey: string;
  private readonly pace: <T>(call: () => Promise<T>) => Promise<T>;
  private readonly readyPoll: NonNullable<ScalewayProviderOptions['readyPoll']>;
  private readonly namespaces = new Map<string, Promise<string>>();
  private readonly visibilityDelaysMs: number[] | undefined;

  constructor(options: ScalewayProviderOptions) {
    this.name = options.registry.name;
    this.host = options.registry.host;
    this.prefix = options.registry.prefix;
    this.insecure = options.insecure;
    this.region = options.registry.region;
    this.projectId = options.registry.projectId;
    this.api = options.api;
    this.secretKey = options.secretKey;
    registerSecret(options.secretKey);
    this.pace = createPacer(options.requestIntervalMs ?? DEFAULT_REQUEST_INTERVAL_MS);
    this.readyPoll = options.readyPoll ?? { minDelaySeconds: 1, maxDelaySeconds: 10, timeoutSeconds: 300 };
    this.visibilityDelaysMs = options.visibilityDelaysMs;
  }

  /**
   * Maps a source to `<namespace>/<source host>/<source path>`. The namespace joins the prefix, cluster and
   * (in service mode) service with `-` when each of them is letters and digits only and the result fits.
   * Otherwise it is fitted to the namespace rules with the hash suffix, which keeps `a-b`+`c` and `a`+`b-c`
   * apart. Service mode and cluster mode never share a namespace, because they join different numbers of parts.
   */
  targetFor(source: ImageReference, location: MirrorLocation): TargetName {
    const namespace = namespaceName(this.prefix, location);
    const rules: NameRules = { maxLength: MAX_REPOSITORY_LENGTH - namespace.length - 1, slashes: true, separators: 'single' };
    return { repository: `${namespace}/${fitName(sourcePath(source), rules)}`, tag: targetTag(source) };
  }

  contains(source: ImageReference): boolean {
    if (!sameRegistry(source.registry, this.host)) return false;
    return this.prefix === '' || source.repository.startsWith(`${this.prefix.replaceAll('/', '-')}-`);
  }

  /** Creates the namespace of `repository` (its first path component) unless this process saw it already. */
  async ensureRepository(repository: string): Promise<void> {
    await this.namespaceId(repository.split('/')[0]!);
  }

  async credentials(): Promise<Credentials> {
    return { username: PUSH_USERNAME, password: this.secretKey };
  }

  /** Returns what the registry client of this host needs: the fixed push credentials, and namespace creation when a push finds none. */
  access(): ProviderAccess & { staticCredentials: Credentials } {
    return {
      staticCredentials: { username: PUSH_USERNAME, password: this.secretKey },
      createRepository: (repository) => {
        this.namespaces.delete(repository.split('/')[0]!);
        return this.ensureRepository(repository);
      },
      ...(this.visibilityDelaysMs ? { visibilityDelaysMs: this.visibilityDelaysMs } : {}),
    };
  }

  /**
   * Deletes a tag (when given and it still names `digest`), or every tag that names `digest`, with the
   * image itself when no tag remains, because Scaleway's API deletes tags and images, not manifests.
   */
  async deleteImage(repository: string, image: { tag?: string; digest: string }): Promise<'deleted' | 'absent'> {
    const slash = repository.indexOf('/');
    const namespace = repository.slice(0, slash);
    const imageName = repository.slice(slash + 1);
    const operation = `deleting ${repository}${image.tag !== undefined ? `:${image.tag}` : `@${image.digest}`}`;

    return this.call(operation, async () => {
      const namespaces = await this.pace(() => this.api.listNamespaces({ region: this.region, projectId: this.projectId, name: namespace }));
      const namespaceId = namespaces.namespaces.find((entry) => entry.name === namespace)?.id;
      if (!namespaceId) return 'absent';
      const images = await this.pace(() => this.api.listImages({ region: this.region, namespaceId, name: imageName }));
      const found = images.images.find((entry) => entry.name === imageName);
      if (!found) return 'absent';

      const tags = (await this.pace(() => this.api.listTags({ region: this.region, imageId: found.id }))).tags;
      const doomed = tags.filter((tag) => tag.digest === image.digest && (image.tag === undefined || tag.name === image.tag));
      for (const tag of doomed) await this.pace(() => this.api.deleteTag({ region: this.region, tagId: tag.id }));
      if (image.tag === undefined && doomed.length === tags.length) {
        await this.pace(() => this.api.deleteImage({ region: this.region, imageId: found.id }));
        return 'deleted';
      }
      return doomed.length > 0 ? 'deleted' : 'absent';
    });
  }

  private namespaceId(namespace: string): Promise<string> {
    let pending = this.namespaces.get(namespace);
    if (!pending) {
      pending = this.ensureNamespace(namespace).catch((error: unknown) => {
        this.namespaces.delete(namespace);
        throw error;
      });
      this.namespaces.set(namespace, pending);
    }
    return pending;
  }

  private async ensureNamespace(namespace: string): Promise<string> {
    const operation = `creating namespace ${namespace}`;
    let existing = await this.findNamespace(namespace);
    if (!existing) {
      try {
        existing = await this.pace(() =>
          this.api.createNamespace({ region: this.region, projectId: this.projectId, name: namespace, description: 'Mirrored images, written by mirrorfleet', isPublic: false }),
        );
      } catch (error) {
        // Another worker created it first.
        if (statusOf(error) !== 409) throw scalewayFailure(this.host, operation, error);
        existing = await this.findNamespace(namespace);
        if (!existing) throw scalewayFailure(this.host, operation, error);
      }
    }
    if (existing.status !== 'ready') {
      const { minDelaySeconds, maxDelaySeconds, timeoutSeconds } = this.readyPoll;
      existing = await this.call(`waiting for namespace ${namespace} to be ready`, () =>
        this.api.waitForNamespace(
          { region: this.region, namespaceId: existing!.id },
          { stop: async (value) => value.status !== 'unknown', minDelay: minDelaySeconds, maxDelay: maxDelaySeconds, timeout: timeoutSeconds },
        ),
      );
      if (existing.status !== 'ready') {
        throw new RegistryError('REGISTRY_UNAVAILABLE', `Scaleway namespace ${namespace} is ${existing.status} (${existing.statusMessage || 'no message'}), not ready`, {
          registry: this.host,
          operation,
          retryable: existing.status === 'deleting' || existing.status === 'locked',
        });
      }
    }
    return existing.id;
  }

  private async findNamespace(namespace: string) {
    const page = await this.call(`looking up namespace ${namespace}`, () =>
      this.pace(() => this.api.listNamespaces({ region: this.region, projectId: this.projectId, name: namespace })),
    );
    return page.namespaces.find((entry) => entry.name === namespace);
  }

  private async call<T>(operation: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (error) {
      if (error instanceof RegistryError) throw error;
      throw scalewayFailure(this.host, operation, error);
    }
  }
}

/** Returns the Scaleway namespace for a location; see ScalewayProvider.targetFor. */
export function namespaceName(prefix: string, location: MirrorLocation): string {
  const components = namespaceComponents(prefix, location);
  const parts = location.mode === 'service' ? [...components.slice(0, -2), components.at(-1)!] : components.slice(0, -1);
  const readable = parts.join('-');
  const fits = readable.length >= NAMESPACE_RULES.minLength! && readable.length <= NAMESPACE_RULES.maxLength;
  if (fits && parts.every((part) => PLAIN_PART.test(part))) return readable;
  // The `/`-joined form always changes under the rules (no `/` is allowed), so it always gets the hash.
  return fitName(parts.join('/'), NAMESPACE_RULES);
}

/** Reads the API secret key from the source the configuration names. Throws ConfigError when it is missing. */
export function readSecretKey(source: ScalewayMirrorRegistry['secretKey'], env: NodeJS.ProcessEnv = process.env): string {
  let value: string | undefined;
  if ('env' in source) {
    value = env[source.env];
    if (!value) throw new ConfigError(`the Scaleway secret key is missing: set the environment variable ${source.env}, or name another source in secretKey`);
  } else {
    try {
      value = readFileSync(source.file, 'utf8').trim();
    } catch (error) {
      throw new ConfigError(`cannot read the Scaleway secret key file "${source.file}": ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  registerSecret(value);
  return value;
}

/** Builds the Registry API client, sending through `fetchFunction` with the secret key in `X-Auth-Token`. */
export function createScalewayApi(options: { apiEndpoint?: string | undefined; registry: ScalewayMirrorRegistry; secretKey: string; fetchFunction: typeof fetch }): ScalewayApi {
  const client = createAdvancedClient((settings) => ({
    ...settings,
    ...(options.apiEndpoint ? { apiURL: options.apiEndpoint } : {}),
    defaultProjectId: options.registry.projectId,
    defaultRegion: options.registry.region,
    httpClient: options.fetchFunction,
    interceptors: [
      {
        request: ({ request }) => {
          const authenticated = new Request(request);
          authenticated.headers.set('x-auth-token', options.secretKey);
          return authenticated;
        },
      },
      ...settings.interceptors,
    ],
  }));
  return new Registry.v1.API(client);
}

function statusOf(error: unknown): number | undefined {
  const status = (error as { status?: unknown }).status;
  return typeof status === 'number' ? status : undefined;
}

function scalewayFailure(registry: string, operation: string, error: unknown): RegistryError {
  const status = statusOf(error);
  const detail = error instanceof Error ? error.message : String(error);
  let code: ErrorCode = 'REGISTRY_PROTOCOL';
  let retryable = false;
  if (status === 401 || status === 403) code = 'REGISTRY_DENIED';
  else if (status === 404) code = 'REGISTRY_NOT_FOUND';
  else if (status === 429) {
    code = 'REGISTRY_RATE_LIMITED';
    retryable = true;
  } else if (status === undefined || status >= 500) {
    code = 'REGISTRY_UNAVAILABLE';
    retryable = true;
  }
  const advice = code === 'REGISTRY_DENIED' ? '; check the secret key and its ContainerRegistryFullAccess permission' : '';
  return new RegistryError(code, `Scaleway API failed while ${operation} for ${registry}: ${detail}${advice}`, {
    registry,
    operation,
    ...(status !== undefined ? { status } : {}),
    retryable,
    cause: error,
  });
}
