import { isIPv4, isIPv6 } from 'node:net';
import { ConfigError } from '../errors.ts';

/**
 * The network policy: which IP addresses a worker may connect to.
 * - Always rejected: unspecified, link-local, cloud metadata, multicast and broadcast addresses.
 * - Rejected unless an allowed network contains them: loopback, private (RFC 1918 and IPv6 unique local)
 *   and shared (CGNAT) addresses.
 * - Allowed: every other address, which is the public internet.
 *
 * IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) and the NAT64 well-known prefix (`64:ff9b::/96`, RFC 6052)
 * reach an IPv4 address, so they are checked as that IPv4 address.
 */

/** Name of the environment variable that lists the allowed networks, used in messages. */
export const ALLOW_NETWORKS_VARIABLE = 'MIRRORFLEET_ALLOW_NETWORKS';

export type AddressCheck = { allowed: true } | { allowed: false; reason: string };

/** An IPv4 or IPv6 CIDR block, with its address as bytes (4 or 16). */
export interface Network {
  bytes: Uint8Array;
  prefixLength: number;
  /** Canonical `address/length` form, host bits cleared. */
  cidr: string;
}

interface NamedRange {
  network: Network;
  /** What the range is, as a noun phrase for messages, such as "a loopback address". */
  description: string;
}

const ALWAYS_REJECTED: NamedRange[] = [
  range('0.0.0.0/8', 'an unspecified ("this network") address'),
  // Listed before 169.254.0.0/16 so that the reason names the metadata service.
  range('169.254.169.254/32', 'a cloud metadata address'),
  range('169.254.0.0/16', 'a link-local address'),
  // Alibaba Cloud's metadata service, inside 100.64.0.0/10, which an allowed network may open.
  range('100.100.100.200/32', 'a cloud metadata address'),
  range('224.0.0.0/4', 'a multicast address'),
  range('255.255.255.255/32', 'a broadcast address'),
  range('::/128', 'an unspecified address'),
  // AWS's IPv6 metadata address, inside fc00::/7, which an allowed network may open.
  range('fd00:ec2::254/128', 'a cloud metadata address'),
  range('fe80::/10', 'a link-local address'),
  range('ff00::/8', 'a multicast address'),
];

const REJECTED_UNLESS_ALLOWED: NamedRange[] = [
  range('127.0.0.0/8', 'a loopback address'),
  range('10.0.0.0/8', 'a private address'),
  range('172.16.0.0/12', 'a private address'),
  range('192.168.0.0/16', 'a private address'),
  range('100.64.0.0/10', 'a shared (CGNAT) address'),
  range('::1/128', 'a loopback address'),
  range('fc00::/7', 'a unique local (private) address'),
];

const IPV4_MAPPED_PREFIX = parseNetwork('::ffff:0:0/96')!;
const NAT64_PREFIX = parseNetwork('64:ff9b::/96')!;

export class NetworkPolicy {
  /** The allowed networks in canonical form, IPv4-mapped IPv6 blocks rewritten as IPv4. */
  readonly allowNetworks: readonly string[];
  private readonly allowed: Network[];

  /**
   * Takes the allowed networks (`MIRRORFLEET_ALLOW_NETWORKS`) as CIDR blocks such as `10.0.0.0/8` or
   * `fd00::/8`. Host bits after the prefix are ignored, as the configuration accepts them.
   * @throws ConfigError naming the first entry that is not a CIDR block.
   */
  constructor(allowNetworks: string[]) {
    this.allowed = allowNetworks.map((entry) => {
      const network = parseNetwork(entry);
      if (!network) {
        throw new ConfigError(
          `invalid network "${entry}" in ${ALLOW_NETWORKS_VARIABLE} (allowNetworks in the configuration file): expected an IPv4 or IPv6 CIDR block with a prefix length, such as 10.0.0.0/8 or fd00::/8`,
        );
      }
      return toIPv4Network(network) ?? network;
    });
    this.allowNetworks = this.allowed.map((network) => network.cidr);
  }

  /** Decides whether a connection to `address`, an IP address without brackets, is allowed. */
  check(address: string): AddressCheck {
    const parsed = parseAddress(address);
    if (!parsed) return { allowed: false, reason: `"${address}" is not an IP address` };

    const embedded = embeddedIPv4(parsed);
    const effective = embedded?.address ?? parsed;
    const described = embedded ? `${address} (the ${embedded.form} form of ${formatBytes(embedded.address)})` : address;

    const always = ALWAYS_REJECTED.find((entry) => contains(entry.network, effective));
    if (always) {
      return {
        allowed: false,
        reason: `${described} is ${always.description} (${always.network.cidr}), which is always rejected, whatever ${ALLOW_NETWORKS_VARIABLE} contains`,
      };
    }

    const restricted = REJECTED_UNLESS_ALLOWED.find((entry) => contains(entry.network, effective));
    if (restricted && !this.allowed.some((network) => contains(network, effective))) {
      return {
        allowed: false,
        reason:
          `${described} is ${restricted.description} (${restricted.network.cidr}), which is rejected unless ${ALLOW_NETWORKS_VARIABLE} ` +
          `(allowNetworks in the configuration file) contains it; add ${restricted.network.cidr} or a narrower network to allow it`,
      };
    }
    return { allowed: true };
  }
}

/**
 * Parses `address/length` into a network with its host bits cleared; undefined when `text` is not one.
 * The prefix length is required and written without leading zeros, and IPv6 zone ids are not accepted.
 */
export function parseNetwork(text: string): Network | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const address = text.slice(0, slash);
  const lengthText = text.slice(slash + 1);
  if (address.includes('%') || !/^(?:0|[1-9][0-9]{0,2})$/.test(lengthText)) return undefined;

  const bytes = parseAddress(address);
  if (!bytes) return undefined;
  const prefixLength = Number(lengthText);
  if (prefixLength > bytes.length * 8) return undefined;

  const masked = maskBytes(bytes, prefixLength);
  return { bytes: masked, prefixLength, cidr: `${formatBytes(masked)}/${prefixLength}` };
}

/** Parses an IPv4 or IPv6 address (an IPv6 zone id is dropped) into 4 or 16 bytes. */
export function parseAddress(text: string): Uint8Array | undefined {
  if (isIPv4(text)) return Uint8Array.from(text.split('.').map(Number));
  if (!isIPv6(text)) return undefined;

  const zone = text.indexOf('%');
  const address = zone < 0 ? text : text.slice(0, zone);
  const double = address.indexOf('::');
  const head = groups(double < 0 ? address : address.slice(0, double));
  const tail = double < 0 ? [] : groups(address.slice(double + 2));
  const zeros = new Array<number>(8 - head.length - tail.length).fill(0);

  const bytes = new Uint8Array(16);
  [...head, ...zeros, ...tail].forEach((group, index) => {
    bytes[index * 2] = group >> 8;
    bytes[index * 2 + 1] = group & 0xff;
  });
  return bytes;
}

/** Splits colon-separated IPv6 groups into 16-bit numbers; a dotted IPv4 tail gives two groups. */
function groups(text: string): number[] {
  if (text === '') return [];
  return text.split(':').flatMap((group) => {
    if (!group.includes('.')) return [Number.parseInt(group, 16)];
    const [a = 0, b = 0, c = 0, d = 0] = group.split('.').map(Number);
    return [(a << 8) | b, (c << 8) | d];
  });
}

function contains(network: Network, address: Uint8Array): boolean {
  if (network.bytes.length !== address.length) return false;
  const masked = maskBytes(address, network.prefixLength);
  return masked.every((byte, index) => byte === network.bytes[index]);
}

function maskBytes(bytes: Uint8Array, prefixLength: number): Uint8Array {
  return bytes.map((byte, index) => {
    const bits = Math.min(8, Math.max(0, prefixLength - index * 8));
    return byte & ((0xff << (8 - bits)) & 0xff);
  });
}

/** Returns the IPv4 address that an IPv4-mapped or NAT64 IPv6 address reaches. */
function embeddedIPv4(address: Uint8Array): { address: Uint8Array; form: string } | undefined {
  if (contains(IPV4_MAPPED_PREFIX, address)) return { address: address.slice(12), form: 'IPv4-mapped' };
  if (contains(NAT64_PREFIX, address)) return { address: address.slice(12), form: 'NAT64' };
  return undefined;
}

/** Rewrites an IPv6 block inside `::ffff:0:0/96` as the IPv4 block it covers, because addresses are checked that way. */
function toIPv4Network(network: Network): Network | undefined {
  if (network.bytes.length !== 16 || network.prefixLength < 96 || !contains(IPV4_MAPPED_PREFIX, network.bytes)) return undefined;
  const bytes = network.bytes.slice(12);
  const prefixLength = network.prefixLength - 96;
  return { bytes, prefixLength, cidr: `${formatBytes(bytes)}/${prefixLength}` };
}

/** Formats 4 bytes as dotted decimal and 16 bytes as full, uncompressed IPv6 groups. */
function formatBytes(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join('.');
  const parts: string[] = [];
  for (let index = 0; index < 16; index += 2) parts.push(((bytes[index]! << 8) | bytes[index + 1]!).toString(16));
  return compressIPv6(parts);
}

/** Replaces the longest run of two or more zero groups with `::` (RFC 5952). */
function compressIPv6(parts: string[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < parts.length; ) {
    let end = start;
    while (end < parts.length && parts[end] === '0') end += 1;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end === start ? start + 1 : end;
  }
  if (bestStart < 0) return parts.join(':');
  return `${parts.slice(0, bestStart).join(':')}::${parts.slice(bestStart + bestLength).join(':')}`;
}

function range(cidr: string, description: string): NamedRange {
  return { network: parseNetwork(cidr)!, description };
}
