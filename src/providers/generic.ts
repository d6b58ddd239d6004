import { InvalidInputError } from '../errors.ts';
import { sameRegistry, type ImageReference } from '../image-ref/reference.ts';
import type { Credentials } from '../registry/auth.ts';
import type { RegistryClient } from '../registry/client.ts';
import type { MirrorLocation, TargetName, TargetProvider } from './provider.ts';

/**
 * Any registry that speaks the OCI distribution API and creates repositories on first push: the
 * distribution registry, Harbor, GHCR, Quay, Zot and others.
 *
 * Names (`<prefix>/` is left out when the prefix is empty):
 *   service mode  <prefix>/<cluster>/services/<service>/<source host>/<source path>:<tag>
 *   cluster mode  <prefix>/<cluster>/shared/<source host>/<source path>:<tag>
 * The source host keeps its dots; a port becomes `_<port>` (no host name contains `_`, so two sources
 * never share a target); an IPv6 literal becomes `ipv6-` and its groups joined by `-`. A source named
 * only by digest gets the tag `at-sha256-<hex>`, because every repository needs a tag to keep an image
 * from being garbage-collected and to be listed.
 */

// Limits of the distribution specification (and distribution/reference): a repository name of at
// most 255 characters, a tag of at most 128.
const MAX_REPOSITORY_LENGTH = 255;
const MAX_TAG_LENGTH = 128;
const ID_PATTERN = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const MAX_ID_LENGTH = 63;

export interface GenericProviderOptions {
  name: string;
  host: string;
  prefix: string;
  insecure: boolean;
  credentials?: Credentials | undefined;
  /** Client of `host`, used for deletions. */
  client: RegistryClient;
  /**
   * True for a registry that deletes a tag alone with `DELETE /v2/<repository>/manifests/<tag>` (the
   * distribution specification allows it; Harbor and Zot do it). Default false, because distribution 2.8
   * returns 400 DIGEST_INVALID for such a request.
   */
  deletesTags?: boolean;
}

export class GenericProvider implements TargetProvider {
  readonly name: string;
  readonly host: string;
  readonly prefix: string;
  readonly insecure: boolean;
  // distribution 2.8 returns 400 DIGEST_INVALID for a DELETE of a tag, so by default images go by manifest digest.
  readonly canDeleteTags: boolean;
  private readonly pushCredentials: Credentials | undefined;
  private readonly client: RegistryClient;

  constructor(options: GenericProviderOptions) {
    this.name = options.name;
    this.host = options.host;
    this.prefix = options.prefix;
    this.insecure = options.insecure;
    this.pushCredentials = options.credentials;
    this.client = options.client;
    this.canDeleteTags = options.deletesTags ?? false;
  }

  targetFor(source: ImageReference, location: MirrorLocation): TargetName {
    checkId('cluster', location.cluster);
    const parts = this.prefix ? [this.prefix, location.cluster] : [location.cluster];
    if (location.mode === 'service') {
      if (location.service === undefined) throw new InvalidInputError('service is required in service mode');
      checkId('service', location.service);
      parts.push('services', location.service);
    } else {
      parts.push('shared');
    }
    parts.push(hostComponent(source.registry), source.repository);
    const repository = parts.join('/');
    if (repository.length > MAX_REPOSITORY_LENGTH) {
      throw new InvalidInputError(
        `target repository ${repository} is ${repository.length} characters long; registries accept at most ${MAX_REPOSITORY_LENGTH}: ` +
          'use a shorter prefix, cluster or service id',
      );
    }
    const tag = source.tag ?? `at-${source.digest!.replace(':', '-')}`;
    if (tag.length > MAX_TAG_LENGTH) throw new InvalidInputError(`target tag ${tag} is longer than ${MAX_TAG_LENGTH} characters`);
    return { repository, tag };
  }

  contains(source: ImageReference): boolean {
    if (!sameRegistry(source.registry, this.host)) return false;
    return this.prefix === '' || source.repository === this.prefix || source.repository.startsWith(`${this.prefix}/`);
  }

  async ensureRepository(_repository: string): Promise<void> {
    // Repositories are created by the first push.
  }

  async credentials(): Promise<Credentials | undefined> {
    return this.pushCredentials;
  }

  async deleteImage(repository: string, image: { tag?: string; digest: string }): Promise<'deleted' | 'absent'> {
    // deleteManifest sends DELETE /v2/<repository>/manifests/<reference>, which takes a tag as well as a digest.
    const reference = this.canDeleteTags && image.tag !== undefined ? image.tag : image.digest;
    return (await this.client.deleteManifest(repository, reference)) ? 'deleted' : 'absent';
  }
}

/** Turns a registry host into one repository path component, keeping distinct hosts distinct. */
export function hostComponent(registry: string): string {
  const ipv6 = /^\[([0-9a-f:.]+)\](?::(\d+))?$/.exec(registry);
  if (ipv6) {
    const groups = ipv6[1]!.split(':').map((group) => group || '0').join('-');
    return `ipv6-${groups}${ipv6[2] ? `_${ipv6[2]}` : ''}`;
  }
  return registry.replace(/:(\d+)$/, '_$1');
}

function checkId(field: 'cluster' | 'service', value: string): void {
  if (value.length === 0 || value.length > MAX_ID_LENGTH || !ID_PATTERN.test(value)) {
    throw new InvalidInputError(
      `invalid ${field} id "${value}": expected 1 to ${MAX_ID_LENGTH} lowercase letters, digits and single '.', '_' or '-' between them, such as prod-eu-1`,
    );
  }
}
