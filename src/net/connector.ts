import { isIP } from 'node:net';
import { ADDRCONFIG, promises as dns, type LookupAddress } from 'node:dns';
import { buildConnector } from 'undici';
import { AddressRejectedError } from '../errors.ts';
import type { NetworkPolicy } from './policy.ts';

/**
 * An undici connector that enforces a NetworkPolicy on every TCP connection it opens.
 *
 * A host name is resolved once and every address it resolves to is checked. The connection then goes to
 * a checked address given as an IP literal, so no second resolution can swap in another address between
 * the check and the connection (DNS rebinding). One rejected address rejects the whole name, because a
 * name whose answers mix public and internal addresses is what a rebinding attack looks like.
 * An IP-literal host is checked as it is: Node's `net.connect` calls no `lookup` function for one, which
 * is why this hooks the connector and not the `lookup` option.
 */

/** Resolves a host name to all its addresses, in the order to try them. */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

/** Resolves with the operating system's resolver (getaddrinfo), as `net.connect` does by default. */
export const systemResolver: Resolver = (hostname) => dns.lookup(hostname, { all: true, hints: ADDRCONFIG });

export interface PolicyConnectorOptions {
  policy: NetworkPolicy;
  /** Replaces DNS resolution; tests use a stub so that no query leaves the machine. */
  resolver?: Resolver;
  /** Options for undici's `buildConnector`, such as `ca` or `timeout`. */
  socket?: buildConnector.BuildOptions;
  /** Names the connection target "the proxy" in error messages. */
  proxy?: boolean;
}

// Failures to reach one address, after which the next checked address of the same name is tried.
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/** Builds the connector; see the file comment for what it checks. */
export function createPolicyConnector(options: PolicyConnectorOptions): buildConnector.connector {
  const resolve = options.resolver ?? systemResolver;
  const connectAny = buildConnector({ ...options.socket });
  // Undici requests an HTTP/1.1-only connection with `allowH2: false` in the per-connection options,
  // which a built connector ignores, so a second one is kept for that case.
  const connectHttp1 = buildConnector({ ...options.socket, allowH2: false });

  return (target, callback) => {
    const connect = (target as { allowH2?: boolean }).allowH2 === false ? connectHttp1 : connectAny;
    checkedAddresses(target, options.policy, resolve, options.proxy === true).then(
      (addresses) => connectInOrder(connect, target, addresses, callback),
      (error: Error) => callback(error, null),
    );
  };
}

/** Resolves the target host and checks every address; rejects with AddressRejectedError when one is not allowed. */
async function checkedAddresses(target: buildConnector.Options, policy: NetworkPolicy, resolve: Resolver, proxy: boolean): Promise<string[]> {
  const hostname = unbracket(target.hostname);
  const targetLabel = `${proxy ? 'the proxy ' : ''}${target.host ?? hostname}`;

  if (isIP(hostname) !== 0) {
    const check = policy.check(hostname);
    if (!check.allowed) throw new AddressRejectedError(`cannot connect to ${targetLabel}: ${check.reason}`);
    return [hostname];
  }

  // NOTE: undici's connect timeout starts after this resolution, so a slow resolver is bounded only
  // by its own timeouts (resolv.conf `timeout` and `attempts` for getaddrinfo).
  const addresses = (await resolve(hostname)).map((entry) => entry.address);
  if (addresses.length === 0) {
    throw Object.assign(new Error(`cannot connect to ${targetLabel}: ${hostname} resolved to no address`), { code: 'ENOTFOUND' });
  }
  for (const address of addresses) {
    const check = policy.check(address);
    if (!check.allowed) {
      throw new AddressRejectedError(`cannot connect to ${targetLabel}: ${hostname} resolved to ${addresses.join(', ')}, and ${check.reason}`);
    }
  }
  return addresses;
}

/**
 * Connects to the first address that accepts, in resolver order. Each attempt names the address as an
 * IP literal. For TLS, undici's connector takes the server name from `target.host` when no `servername`
 * is given, so SNI and certificate verification still use the host name.
 */
function connectInOrder(
  connect: buildConnector.connector,
  target: buildConnector.Options,
  addresses: string[],
  callback: buildConnector.Callback,
): void {
  const attempt = (index: number): void => {
    connect({ ...target, hostname: addresses[index]! }, (error, socket) => {
      if (error && index + 1 < addresses.length && UNREACHABLE_CODES.has((error as NodeJS.ErrnoException).code ?? '')) {
        attempt(index + 1);
        return;
      }
      if (error) callback(error, null);
      else callback(null, socket!);
    });
  };
  attempt(0);
}

function unbracket(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}
