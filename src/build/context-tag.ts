import { createHash } from 'node:crypto';
import { ConfigError } from '../errors.ts';
import { declaredArgNames } from './dockerfile.ts';
import { hmacValue, type SecretKey } from './secret-key.ts';

/**
 * The build tag: SHA-256 over a canonical serialisation of the build context, written as 64 lowercase
 * hex characters. Equal tags mean equal inputs, so a tag already in the repository needs no build. The
 * serialisation is a sequence of fields, each written as its UTF-8 byte length in decimal, `:`, the
 * bytes, and `\n`, in this order:
 *
 *   1. `mirrorfleet-build-context/v1`
 *   2. the commit id (40 or 64 lowercase hex characters)
 *   3. the root path, relative to the git repository root in normal form (`.` for the root itself)
 *   4. the Dockerfile path, relative to the root path in normal form
 *   5. the Dockerfile content, its bytes as committed
 *   6. the number of platforms in decimal, then each platform, canonical and sorted
 *   7. the number of tagged variables in decimal, then for each, sorted by name: the name, `plain` or
 *      `secret`, and the value, or for a secret the HMAC-SHA256 of the value in lowercase hex
 *
 * Tagged variables are the request's variables whose names an `ARG` in the Dockerfile declares. Base
 * images are not part of the tag: a new base image under the same reference needs a forced build.
 * The README shows the same format with test vectors.
 */

export const BUILD_CONTEXT_FORMAT = 'mirrorfleet-build-context/v1';

/** A build variable in clear, after decryption. */
export interface BuildVariable {
  name: string;
  value: string;
  /** Secret values reach the builder as build secrets and enter the tag as an HMAC. */
  secret: boolean;
}

export interface BuildContextInput {
  commit: string;
  root: string;
  dockerfile: string;
  dockerfileContent: Buffer;
  /** Canonical platforms, such as `linux/amd64`. */
  platforms: readonly string[];
  variables: readonly BuildVariable[];
}

/** Returns the variables whose names the Dockerfile declares with `ARG`, sorted by name. */
export function taggedVariables(input: Pick<BuildContextInput, 'dockerfileContent' | 'variables'>): BuildVariable[] {
  const declared = declaredArgNames(input.dockerfileContent.toString('utf8'));
  return input.variables.filter((variable) => declared.has(variable.name)).sort((a, b) => compareStrings(a.name, b.name));
}

/**
 * Returns the canonical serialisation of the build context. `hmacKey` is needed only when a declared
 * variable is secret, and such a context without it throws ConfigError.
 */
export function serialiseBuildContext(input: BuildContextInput, hmacKey?: SecretKey): Buffer {
  const fields: (string | Buffer)[] = [BUILD_CONTEXT_FORMAT, input.commit, input.root, input.dockerfile, input.dockerfileContent];

  const platforms = [...input.platforms].sort(compareStrings);
  fields.push(String(platforms.length), ...platforms);

  const variables = taggedVariables(input);
  fields.push(String(variables.length));
  for (const variable of variables) {
    if (variable.secret && !hmacKey) {
      throw new ConfigError(`cannot compute the build tag: the secret variable ${variable.name} is declared by ARG, and MIRRORFLEET_SECRET_KEY is not set`);
    }
    fields.push(variable.name, variable.secret ? 'secret' : 'plain', variable.secret ? hmacValue(hmacKey!, variable.value) : variable.value);
  }

  return Buffer.concat(fields.map(encodeField));
}

/** Returns the build tag of the context: the SHA-256 of its serialisation in lowercase hex. */
export function buildTag(input: BuildContextInput, hmacKey?: SecretKey): string {
  return createHash('sha256').update(serialiseBuildContext(input, hmacKey)).digest('hex');
}

function encodeField(field: string | Buffer): Buffer {
  const bytes = typeof field === 'string' ? Buffer.from(field, 'utf8') : field;
  return Buffer.concat([Buffer.from(`${bytes.length}:`, 'ascii'), bytes, Buffer.from('\n', 'ascii')]);
}

// Names and platforms are ASCII, where UTF-16 code unit order equals byte order; `<` is both, unlike localeCompare.
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
