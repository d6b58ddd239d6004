/**
 * Syntax of the configuration values that are more than a plain string or number: registry hosts,
 * mirror registry locations, repository prefixes, CIDR blocks and Redis URLs. Parsers return
 * `undefined` for invalid input, so that each caller reports the problem in its own terms.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { parseRedisUrl } from '../redis/url.ts';

/** Mirror registry names: short, lowercase, usable in metric labels and job payloads as they are. */
export const MIRROR_REGISTRY_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

// Domain component of the distribution reference grammar, lowercase: letters, digits and inner hyphens.
const DOMAIN_COMPONENT = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const MAX_HOSTNAME_LENGTH = 253;
const PORT = /^[1-9][0-9]{0,4}$/;
const MAX_PORT = 65_535;
// Path component of the distribution reference grammar. Repository names are lowercase only.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/**
 * Normalises a registry host written as `HOST` or `HOST:PORT`: lowercase, with `:443` removed because
 * HTTPS uses that port anyway. HOST is a DNS name, an IPv4 address or a bracketed IPv6 address.
 * Returns `undefined` for anything else, including a scheme, a path, or an IPv6 zone index.
 */
export function normaliseHost(text: string): string | undefined {
  const lower = text.toLowerCase();

  let hostname: string;
  let port: string | undefined;
  if (lower.startsWith('[')) {
    const end = lower.indexOf(']');
    if (end < 0) return undefined;
    const address = lower.slice(1, end);
    // NOTE: IPv6 addresses are compared as written, so [::1] and [0::1] count as different hosts.
    if (!isIPv6(address) || address.includes('%')) return undefined;
    hostname = `[${address}]`;
    const rest = lower.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return undefined;
      port = rest.slice(1);
    }
  } else {
    const parts = lower.split(':');
    if (parts.length > 2) return undefined;
    hostname = parts[0] ?? '';
    port = parts[1];
    if (!isHostname(hostname)) return undefined;
  }

  if (port === undefined || port === '443') return hostname;
  if (!PORT.test(port) || Number(port) > MAX_PORT) return undefined;
  return `${hostname}:${port}`;
}

function isHostname(text: string): boolean {
  if (text.length === 0 || text.length > MAX_HOSTNAME_LENGTH) return false;
  // Digits and dots alone can only be an IPv4 address, so `999.1.1.1` is a typo and not a DNS name.
  if (/^[0-9.]+$/.test(text)) return isIPv4(text);
  return text.split('.').every((label) => DOMAIN_COMPONENT.test(label));
}

/** Checks that `text` is one or more lowercase path components separated by `/`, such as `team/mirror`. */
export function isRepositoryPrefix(text: string): boolean {
  return text.split('/').every((component) => PATH_COMPONENT.test(component));
}

/** A location as written, `HOST[:PORT][/PREFIX]`, split at the first `/`. Nothing is validated yet. */
export interface LocationParts {
  host: string;
  /** Everything after the first `/`, or `undefined` when there is no `/`. */
  prefix: string | undefined;
}

/** Splits a mirror registry location `HOST[:PORT][/PREFIX]` into its host and prefix. */
export function splitLocation(text: string): LocationParts {
  const slash = text.indexOf('/');
  if (slash < 0) return { host: text, prefix: undefined };
  return { host: text.slice(0, slash), prefix: text.slice(slash + 1) };
}

/**
 * Checks an IPv4 or IPv6 CIDR block such as `10.0.0.0/8` or `fd00::/8`. The prefix length is required.
 * Host bits after the prefix are allowed, so `10.1.2.3/8` is accepted and means `10.0.0.0/8`.
 */
export function isCidr(text: string): boolean {
  const slash = text.indexOf('/');
  if (slash < 0) return false;
  const address = text.slice(0, slash);
  const length = text.slice(slash + 1);
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(length)) return false;

  let bits: number;
  if (isIPv4(address)) bits = 32;
  else if (isIPv6(address) && !address.includes('%')) bits = 128;
  else return false;
  return Number(length) <= bits;
}

/**
 * Checks that `text` is a Redis connection URL: `redis://` or `rediss://` with a host, or the Sentinel and
 * Cluster forms `redis+sentinel://HOST:PORT,…/MASTER_NAME` and `redis+cluster://HOST:PORT,…`.
 */
export function isRedisUrl(text: string): boolean {
  return parseRedisUrl(text) !== undefined;
}

/**
 * Returns `url` with everything before the last `@` of the authority replaced by `<redacted>`, so that
 * an error message can show which server was meant without the user name or password. A text with `@`
 * but no `://` is hidden whole, because it is unclear where its credentials end.
 */
export function hideUrlCredentials(url: string): string {
  const at = url.lastIndexOf('@');
  if (at < 0) return url;
  const schemeEnd = url.indexOf('://');
  if (schemeEnd < 0 || schemeEnd > at) return '<redacted>';
  return `${url.slice(0, schemeEnd + 3)}<redacted>${url.slice(at)}`;
}
