import { createHash } from 'node:crypto';
import { InvalidInputError } from '../errors.ts';
import type { MirrorRegistryConfig } from '../config/config.ts';

/**
 * Repository names of built images. Every service built from the same git repository for the same
 * cluster shares one repository:
 *
 *   [<prefix>/]z<short cluster id>-<git repository name, sanitised>[-<hash>]
 *
 * - The short cluster id is the first 8 hex characters of the cluster id when it is a UUID, else the
 *   first 8 hex characters of the SHA-256 of the cluster id.
 * - Sanitising lowercases the git repository name and turns each run of characters outside `[a-z0-9]`
 *   into one `-`, trimmed at both ends.
 * - The name is cut from the end to fit the provider's length limit, with room for the `-cache` sibling
 *   that holds the layer cache.
 * - When sanitising or cutting changed the name, `-` and the first 6 hex characters of the SHA-256 of
 *   the original name follow, so that `my_app`, `my.app` and `my-app` get three repositories.
 */

export const CACHE_REPOSITORY_SUFFIX = '-cache';

/**
 * Longest repository path (prefix included) of each provider: 255 in the distribution specification,
 * 256 in AWS ECR. Providers without an entry get 255.
 * NOTE: this belongs to the providers, which do not expose their limits yet; the limits of Artifact
 * Registry and Scaleway are not checked.
 */
const REPOSITORY_MAX_LENGTH: Partial<Record<MirrorRegistryConfig['provider'], number>> = {
  generic: 255,
  ecr: 256,
};

/** Returns the longest repository path that `provider` accepts. */
export function repositoryMaxLength(provider: MirrorRegistryConfig['provider']): number {
  return REPOSITORY_MAX_LENGTH[provider] ?? 255;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ORIGINAL_HASH_LENGTH = 6;

export interface BuildRepositories {
  /** Repository of the built images, prefix included. */
  repository: string;
  /** Sibling repository of the layer cache: `<repository>-cache`. */
  cacheRepository: string;
}

/** Returns the 8 hex characters that stand for a cluster in repository names. */
export function shortClusterId(cluster: string): string {
  if (UUID.test(cluster)) return cluster.slice(0, 8).toLowerCase();
  return sha256Hex(cluster).slice(0, 8);
}

/**
 * Returns the name of the git repository at `url` (a URL, an scp-like `host:path`, or a local path):
 * its last path component without a trailing `.git`. Throws InvalidInputError when there is none.
 */
export function gitRepositoryName(url: string): string {
  let path = url;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url);
  if (scheme) {
    path = new URL(url).pathname;
  } else if (!url.startsWith('/')) {
    // scp-like syntax, such as git@github.com:org/app.git
    path = url.slice(url.indexOf(':') + 1);
  }
  const components = decodePath(path).split('/').filter((component) => component !== '');
  const name = (components.at(-1) ?? '').replace(/\.git$/, '');
  if (name === '' || name === '.' || name === '..') {
    throw new InvalidInputError(`cannot name a repository after git.url "${url}": its path has no last component, such as app in https://git.example/org/app.git`);
  }
  return name;
}

/**
 * Returns the repository and the cache repository for images built from `gitUrl` for `cluster`, where
 * the whole repository path, prefix and `-cache` included, has at most `maxLength` characters.
 */
export function buildRepositories(options: { cluster: string; gitUrl: string; prefix: string; maxLength: number }): BuildRepositories {
  const original = gitRepositoryName(options.gitUrl);
  const head = `z${shortClusterId(options.cluster)}-`;
  const prefix = options.prefix === '' ? '' : `${options.prefix}/`;
  const budget = options.maxLength - prefix.length - CACHE_REPOSITORY_SUFFIX.length;

  const sanitised = original.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  let name: string;
  if (sanitised === original && head.length + sanitised.length <= budget) {
    name = head + sanitised;
  } else {
    const room = budget - head.length - 1 - ORIGINAL_HASH_LENGTH;
    if (room < 0) {
      throw new InvalidInputError(
        `repository prefix "${options.prefix}" leaves no room for build repository names within ${options.maxLength} characters; use a shorter prefix`,
      );
    }
    const cut = sanitised.slice(0, room).replace(/-+$/, '');
    const hash = sha256Hex(original).slice(0, ORIGINAL_HASH_LENGTH);
    name = cut === '' ? head + hash : `${head}${cut}-${hash}`;
  }

  const repository = prefix + name;
  return { repository, cacheRepository: repository + CACHE_REPOSITORY_SUFFIX };
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

function decodePath(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}
