/**
 * Registry hosts: validation, normalisation and comparison.
 *
 * The host grammar follows distribution/reference (regexp.go): a DNS name of letters, digits and inner
 * hyphens, or an IPv4 address in decimal, or an IPv6 address in brackets without a zone identifier, each
 * with an optional numeric port.
 */

import { isIPv6 } from 'node:net';

import { InvalidReferenceError } from '../errors.ts';
import { hostForMessage, quoteValue } from './message-value.ts';

/** Canonical name of Docker Hub in a reference. */
export const DOCKER_HUB = 'docker.io';

/** Host that serves the Docker Hub registry API. */
export const DOCKER_HUB_ENDPOINT = 'registry-1.docker.io';

/** Names that all mean Docker Hub, after lowercasing and removing port 443. */
const DOCKER_HUB_ALIASES: ReadonlySet<string> = new Set([DOCKER_HUB, 'index.docker.io', DOCKER_HUB_ENDPOINT]);

/**
 * Port removed during normalisation, because registries speak HTTPS unless configured otherwise. Port 80
 * is kept: the scheme is unknown here, and over HTTPS `host:80` and `host` are different endpoints.
 */
const DEFAULT_PORT = '443';

const ACCEPTED_HOSTS =
  'expected a host name, an IPv4 address or an IPv6 address in brackets, with an optional port ' +
  '(for example registry.example:5000 or [::1]:5000)';

const DOMAIN_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const IPV6_CHARACTERS = /^[a-f0-9:]+$/;

/** Result of checking a host: the normalised host, or the reason it is invalid. */
export type HostCheck = { host: string; problem?: undefined } | { host?: undefined; problem: string };

/**
 * Normalises a registry host: lowercases it, removes port 443 and maps every Docker Hub alias
 * (`index.docker.io`, `registry-1.docker.io`) to `docker.io`. An IPv6 address is also rewritten in its
 * compressed form, so `[0:0::1]` becomes `[::1]`.
 *
 * A single-label host other than `localhost` keeps port 443, and gains it when it has no port. The reason
 * is that a first component without "." or ":" is read as a Docker Hub namespace: `registry/app` is on
 * Docker Hub, while `registry:443/app` is on the host `registry`.
 *
 * @throws InvalidReferenceError when `host` is empty or breaks the host grammar.
 */
export function normalizeRegistryHost(host: string): string {
  const check = checkRegistryHost(host);
  if (check.problem !== undefined) {
    throw new InvalidReferenceError(hostForMessage(String(host)), check.problem);
  }
  return check.host;
}

/**
 * Returns true when `a` and `b` name the same registry after normalisation. No name is resolved, so
 * `localhost` and `127.0.0.1` are different registries.
 *
 * @throws InvalidReferenceError when either host is invalid.
 */
export function sameRegistry(a: string, b: string): boolean {
  return normalizeRegistryHost(a) === normalizeRegistryHost(b);
}

/**
 * Returns the host[:port] that serves the registry API: `registry-1.docker.io` for Docker Hub, and the
 * normalised host for every other registry (the input itself when it is already normalised).
 *
 * @throws InvalidReferenceError when `registry` is invalid.
 */
export function registryEndpoint(registry: string): string {
  const host = normalizeRegistryHost(registry);
  return host === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : host;
}

/** Validates and normalises `host` without throwing, so that callers can add their own context. */
export function checkRegistryHost(host: string): HostCheck {
  if (typeof host !== 'string' || host === '') {
    return { problem: `the registry host is empty; ${ACCEPTED_HOSTS}` };
  }

  if (host.includes('://')) {
    return { problem: `registry host "${hostForMessage(host)}" has a URL scheme; ${ACCEPTED_HOSTS}` };
  }
  if (host.includes('@')) {
    // Without this check a port check would print the text after the ":" of `user:password@host`.
    return {
      problem:
        `registry host "${hostForMessage(host)}" contains "@"; ` +
        'credentials belong in the registry configuration, not in the host',
    };
  }

  const split = splitHostAndPort(host);
  if (split.problem !== undefined) {
    return { problem: split.problem };
  }

  const { name, port } = split;
  const singleLabel = !name.startsWith('[') && !name.includes('.') && name !== 'localhost';
  if (singleLabel) {
    return { host: `${name}:${port ?? DEFAULT_PORT}` };
  }

  const withPort = port === undefined || port === DEFAULT_PORT ? name : `${name}:${port}`;
  return { host: DOCKER_HUB_ALIASES.has(withPort) ? DOCKER_HUB : withPort };
}

type HostSplit = { name: string; port: string | undefined; problem?: undefined } | { problem: string };

/** Splits a host into its lowercased name and its port, and validates both. */
function splitHostAndPort(written: string): HostSplit {
  const shownHost = `"${hostForMessage(written)}"`;
  const host = written.toLowerCase();
  let name: string;
  let portText: string | undefined;

  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    if (close === -1) {
      return { problem: `registry host ${shownHost} opens an IPv6 address with "[" but has no "]"` };
    }
    const address = host.slice(1, close);
    if (!IPV6_CHARACTERS.test(address) || !isIPv6(address)) {
      return {
        problem:
          `registry host ${shownHost} is not a valid IPv6 address in brackets; ` +
          'write it in hex digits and colons, without a zone identifier or a dotted IPv4 part',
      };
    }
    // The WHATWG URL parser serialises an IPv6 address in compressed lowercase form, so that equal
    // addresses compare equal.
    name = new URL(`http://[${address}]/`).hostname;

    const rest = host.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) {
      return { problem: `registry host ${shownHost} has text after the IPv6 address; ${ACCEPTED_HOSTS}` };
    }
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    const parts = host.split(':');
    if (parts.length > 2) {
      return {
        problem: `registry host ${shownHost} has more than one ":"; write an IPv6 address in brackets, as in [::1]:5000`,
      };
    }
    name = parts[0] ?? '';
    portText = parts[1];
    if (name === '' || !name.split('.').every((label) => DOMAIN_LABEL.test(label))) {
      return {
        problem:
          `registry host ${shownHost} is invalid; ${ACCEPTED_HOSTS}. ` +
          'Each dot-separated label of a host name contains letters, digits and inner hyphens',
      };
    }
  }

  if (portText === undefined) {
    return { name, port: undefined };
  }
  const port = normalizePort(portText);
  if (port === undefined) {
    return {
      problem: `registry host ${shownHost} has port ${quoteValue(portText)}; a port is a number from 1 to 65535`,
    };
  }
  return { name, port };
}

/** Returns the port without leading zeros, or undefined when it is not a number from 1 to 65535. */
function normalizePort(text: string): string | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) {
    return undefined;
  }
  const value = Number(text);
  return value >= 1 && value <= 65535 ? String(value) : undefined;
}
