/**
 * Image references: parsing, normalisation and printing.
 *
 * The grammar and the Docker Hub rules follow the Go package distribution/reference (reference.go,
 * regexp.go, normalize.go):
 *
 *   reference  := [registry "/"] repository [":" tag] ["@" digest]
 *   repository := component ("/" component)*      component := [a-z0-9]+ (separator [a-z0-9]+)*
 *   separator  := "." | "_" | "__" | "-"+         tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
 *
 * Differences from distribution/reference, each to keep parse and print consistent:
 * - An uppercase first component without "." or ":" (`MyOrg/app`) is rejected because repository names
 *   must be lowercase. distribution/reference reads it as a registry host, but a normalised host is
 *   lowercase and `myorg/app` would then print as a Docker Hub repository.
 * - Only sha256 and sha512 digests are accepted (see digest.ts).
 * - `registry-1.docker.io` is a Docker Hub alias as well, so `registry-1.docker.io/bash` gains `library/`.
 */

import { InvalidReferenceError } from '../errors.ts';
import { digestProblem } from './digest.ts';
import { quoteValue, referenceForMessage } from './message-value.ts';
import { checkRegistryHost, DOCKER_HUB } from './registry-host.ts';

export { isDigest } from './digest.ts';
export {
  DOCKER_HUB,
  DOCKER_HUB_ENDPOINT,
  normalizeRegistryHost,
  registryEndpoint,
  sameRegistry,
} from './registry-host.ts';

/** A parsed, normalised image reference. */
export interface ImageReference {
  /**
   * Normalised host[:port]: lowercase, without port 443 (which a single-label host keeps, see
   * `normalizeRegistryHost`), and `docker.io` for Docker Hub under any of its names or when none is given.
   */
  registry: string;
  /** Path of the repository inside the registry, such as `library/bash`. */
  repository: string;
  /** Tag: `latest` when the reference has neither tag nor digest, absent when it has only a digest. */
  tag?: string;
  /** Digest: `sha256:` with 64 or `sha512:` with 128 lowercase hex characters. */
  digest?: string;
}

/** Tag used when a reference has neither a tag nor a digest. */
const DEFAULT_TAG = 'latest';

/** Namespace of Docker Hub's official images, added to single-component Docker Hub repositories. */
const OFFICIAL_NAMESPACE = 'library/';

/** Maximum repository path length, `library/` included: RepositoryNameTotalLengthMax in distribution/reference. */
const MAX_REPOSITORY_LENGTH = 255;

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^\w[\w.-]{0,127}$/;
const IMAGE_ID = /^[a-f0-9]{64}$/;
const URL_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

const EXPECTED_FORM = 'expected [registry/]repository[:tag][@digest], for example docker.io/library/bash:5.3';

/**
 * Parses an image reference and normalises it: Docker Hub under any of its names becomes `docker.io`, a
 * single-component Docker Hub repository gains `library/`, and a reference with neither tag nor digest
 * gets the tag `latest`. A reference with both a tag and a digest keeps both.
 *
 * @throws InvalidReferenceError naming the input, the part that is wrong and what is accepted.
 */
export function parseReference(input: string): ImageReference {
  if (typeof input !== 'string') {
    throw new InvalidReferenceError(`a ${input === null ? 'null' : typeof input}`, `expected a string, got ${input === null ? 'null' : typeof input}`);
  }
  const reject = (reason: string): never => {
    throw new InvalidReferenceError(referenceForMessage(input), reason);
  };

  // Whole-input checks come first, because they explain the failure better than the part that breaks.
  if (input === '') {
    reject(`the reference is empty; ${EXPECTED_FORM}`);
  }
  if (/\s/.test(input)) {
    reject(`the reference contains whitespace; remove spaces, tabs and line breaks`);
  }
  if (URL_SCHEME.test(input)) {
    reject(`a reference has no URL scheme such as "https://"; ${EXPECTED_FORM}`);
  }

  // The digest comes after the first "@". A digest never contains "/", so a "/" after the "@" means the
  // "@" ends user information (`user:password@host/app`), which a reference cannot carry.
  const at = input.indexOf('@');
  const nameAndTag = at === -1 ? input : input.slice(0, at);
  const digest = at === -1 ? undefined : input.slice(at + 1);
  if (digest !== undefined && digest.includes('/')) {
    reject(
      `"@" may only start the digest at the end of a reference; credentials belong in the registry ` +
        `configuration, not in the reference`,
    );
  }
  if (digest !== undefined) {
    const problem = digestProblem(digest);
    if (problem !== undefined) {
      reject(problem);
    }
  }

  if (nameAndTag.startsWith('[') && !nameAndTag.includes('/')) {
    reject(`a registry host such as "[::1]:5000" must be followed by "/" and a repository; ${EXPECTED_FORM}`);
  }

  // The tag follows the last ":" that comes after the last "/". An earlier ":" belongs to a registry port.
  const lastSlash = nameAndTag.lastIndexOf('/');
  const lastColon = nameAndTag.lastIndexOf(':');
  const hasTag = lastColon > lastSlash;
  const name = hasTag ? nameAndTag.slice(0, lastColon) : nameAndTag;
  const tag = hasTag ? nameAndTag.slice(lastColon + 1) : undefined;
  if (tag !== undefined && !TAG.test(tag)) {
    reject(
      `tag ${quoteValue(tag)} is invalid; a tag has 1 to 128 characters from A-Z, a-z, 0-9, "_", "." ` +
        `and "-", and does not start with "." or "-"`,
    );
  }

  if (name === '') {
    reject(`the repository name is missing; ${EXPECTED_FORM}`);
  }
  if (IMAGE_ID.test(name)) {
    reject(
      `a 64-character hex string is an image ID, not a repository name; ` +
        `to refer to an image by digest write repository@sha256:<hex>`,
    );
  }

  const { registry, path } = splitRegistry(name, reject);
  const repository = normalizeRepository(registry, path, reject);

  const reference: ImageReference = { registry, repository };
  if (tag !== undefined) {
    reference.tag = tag;
  } else if (digest === undefined) {
    reference.tag = DEFAULT_TAG;
  }
  if (digest !== undefined) {
    reference.digest = digest;
  }
  return reference;
}

/**
 * Prints a reference as `registry/repository[:tag][@digest]`, Docker Hub included, as in
 * `docker.io/library/bash:5.3`. The fields are printed as given, so pass a reference that
 * `parseReference` returned to get the normalised form.
 */
export function formatReference(ref: ImageReference): string {
  let text = formatRepository(ref);
  if (ref.tag) {
    text += `:${ref.tag}`;
  }
  if (ref.digest) {
    text += `@${ref.digest}`;
  }
  return text;
}

/** Prints the repository with its registry, as `registry/repository`. */
export function formatRepository(ref: Pick<ImageReference, 'registry' | 'repository'>): string {
  return `${ref.registry}/${ref.repository}`;
}

/**
 * Splits a name without tag or digest into its normalised registry and the path after it. The first
 * component is a registry when it contains "." or ":" (a domain, an IPv4 address, a port, an IPv6
 * address), starts with "[" or is `localhost`. Otherwise the whole name is a Docker Hub path.
 */
function splitRegistry(name: string, reject: (reason: string) => never): { registry: string; path: string } {
  const slash = name.indexOf('/');
  if (slash === -1) {
    return { registry: DOCKER_HUB, path: name };
  }

  const first = name.slice(0, slash);
  const isHost = /[.:]/.test(first) || first.startsWith('[') || first.toLowerCase() === 'localhost';
  if (!isHost) {
    return { registry: DOCKER_HUB, path: name };
  }

  const check = checkRegistryHost(first);
  if (check.problem !== undefined) {
    return reject(check.problem);
  }
  return { registry: check.host, path: name.slice(slash + 1) };
}

/** Validates the path and returns the repository, with `library/` added for official Docker Hub images. */
function normalizeRepository(registry: string, path: string, reject: (reason: string) => never): string {
  if (path === '') {
    reject(`the repository name after registry ${quoteValue(registry)} is missing; ${EXPECTED_FORM}`);
  }

  if (path !== path.toLowerCase()) {
    let hint = `write ${quoteValue(path.toLowerCase())}`;
    const [first = '', ...rest] = path.split('/');
    if (rest.length > 0 && first !== first.toLowerCase()) {
      // distribution/reference would read this first component as a registry host.
      const example = `${first.toLowerCase()}.example/${rest.join('/')}`;
      hint += `, or, if ${quoteValue(first)} is a registry host, add its domain or a port, `;
      hint += `as in ${quoteValue(example)}`;
    }
    reject(`repository name ${quoteValue(path)} is invalid because repository names must be lowercase; ${hint}`);
  }

  for (const component of path.split('/')) {
    if (component === '') {
      reject(
        `repository name ${quoteValue(path)} has an empty component; separate components with a single "/"`,
      );
    }
    if (!PATH_COMPONENT.test(component)) {
      reject(
        `repository name component ${quoteValue(component)} is invalid; a component is lowercase letters and ` +
          `digits, joined by ".", "_", "__" or a run of "-", and starts and ends with a letter or digit`,
      );
    }
  }

  const repository = registry === DOCKER_HUB && !path.includes('/') ? OFFICIAL_NAMESPACE + path : path;
  if (repository.length > MAX_REPOSITORY_LENGTH) {
    reject(
      `repository name ${quoteValue(repository)} has ${repository.length} characters; ` +
        `the maximum is ${MAX_REPOSITORY_LENGTH}`,
    );
  }
  return repository;
}
