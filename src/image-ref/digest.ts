/**
 * Content digests in the form `<algorithm>:<lowercase hex>`.
 *
 * Only the algorithms that the OCI image specification registers (descriptor.md, "Registered
 * algorithms") are accepted: sha256 with 64 and sha512 with 128 lowercase hex characters. The grammar of
 * distribution/reference alone is looser: it allows any algorithm name and uppercase hex.
 */

import { quoteValue } from './message-value.ts';

/** Hex length of each accepted digest algorithm. */
const HEX_LENGTH_BY_ALGORITHM: ReadonlyMap<string, number> = new Map([
  ['sha256', 64],
  ['sha512', 128],
]);

const ACCEPTED_DIGESTS = 'sha256:<64 lowercase hex characters> or sha512:<128 lowercase hex characters>';

/** Returns true when `value` is a sha256 or sha512 digest with lowercase hex of the right length. */
export function isDigest(value: string): boolean {
  return typeof value === 'string' && digestProblem(value) === undefined;
}

/** Returns why `value` is not an accepted digest, or undefined when it is one. */
export function digestProblem(value: string): string | undefined {
  const colon = value.indexOf(':');
  if (colon === -1) {
    return `digest ${quoteValue(value)} has no algorithm; expected ${ACCEPTED_DIGESTS}`;
  }

  const algorithm = value.slice(0, colon);
  const hex = value.slice(colon + 1);
  const expectedLength = HEX_LENGTH_BY_ALGORITHM.get(algorithm);
  if (expectedLength === undefined) {
    return `digest algorithm ${quoteValue(algorithm)} is not supported; expected ${ACCEPTED_DIGESTS}`;
  }

  if (/[A-F]/.test(hex) && /^[0-9a-fA-F]*$/.test(hex)) {
    return `digest ${quoteValue(value)} contains uppercase hex; digests use lowercase hex (0-9, a-f)`;
  }
  if (!/^[0-9a-f]*$/.test(hex)) {
    return `digest ${quoteValue(value)} contains characters other than lowercase hex (0-9, a-f)`;
  }
  if (hex.length !== expectedLength) {
    return `${algorithm} digest ${quoteValue(value)} has ${hex.length} hex characters; expected ${expectedLength}`;
  }
  return undefined;
}
