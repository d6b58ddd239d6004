/**
 * Renders user input for error messages: quoted, escaped, cut to a readable length, and with anything
 * that looks like credentials replaced.
 */

const MAX_SHOWN_CHARS = 200;
const URL_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;
const DIGEST_START = /^sha(?:256|512):/;

/** Quotes `value` for a message, with control characters and quotes escaped as in JSON. */
export function quoteValue(value: string): string {
  const visible = value.length > MAX_SHOWN_CHARS ? `${value.slice(0, MAX_SHOWN_CHARS)}…` : value;
  return JSON.stringify(visible);
}

/** Prepares a rejected reference for `InvalidReferenceError`, which adds the quotes itself. */
export function referenceForMessage(input: string): string {
  let visible = input;
  const userInfoEnd = findUserInfoEnd(input);
  if (userInfoEnd !== -1) {
    const scheme = URL_SCHEME.exec(input)?.[0] ?? '';
    const keptScheme = scheme.length <= userInfoEnd ? scheme : '';
    visible = `${keptScheme}<redacted>${input.slice(userInfoEnd)}`;
  }
  return quoteValue(visible).slice(1, -1);
}

/**
 * Returns the index of the "@" that ends user information, as in `user:token@registry.example/app`, or -1.
 * The only valid "@" in a reference starts its digest, which comes last, contains no "/" and starts with
 * its algorithm, so any other "@" is taken to end user information.
 */
function findUserInfoEnd(input: string): number {
  const lastSlash = input.lastIndexOf('/');
  if (lastSlash !== -1) {
    const atBeforeSlash = input.lastIndexOf('@', lastSlash);
    if (atBeforeSlash !== -1) {
      return atBeforeSlash;
    }
  }

  const firstAt = input.indexOf('@');
  if (firstAt === -1 || DIGEST_START.test(input.slice(firstAt + 1))) {
    return -1;
  }
  return input.lastIndexOf('@');
}

/**
 * Prepares a rejected registry host for a message, without quotes. An "@" never belongs in a host, so the
 * text before it is taken for user information and redacted.
 */
export function hostForMessage(host: string): string {
  const at = host.lastIndexOf('@');
  const visible = at === -1 ? host : `<redacted>${host.slice(at)}`;
  return quoteValue(visible).slice(1, -1);
}
