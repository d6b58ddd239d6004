import net from 'node:net';
import dns from 'node:dns';
import { syncBuiltinESMExports } from 'node:module';

/**
 * A safety net for tests of the network policy, independent of the code under test: while installed,
 * no socket of this process connects anywhere but loopback, and no host name reaches the system
 * resolver. A connection to any other host is recorded and sent to 127.0.0.1 on the same port instead.
 * A broken policy therefore shows up as a connection on a local test server and in `escapes`, never as
 * a packet on the network.
 */
export interface LoopbackGuard {
  /** Every host a socket connected to, in order. */
  readonly dials: string[];
  /** Hosts that were not loopback IP literals, each redirected to 127.0.0.1. */
  readonly escapes: string[];
  /** Host names passed to `dns.lookup`, each failed with ENOTFOUND. IP literals pass through. */
  readonly lookups: string[];
  /** Empties the three lists. */
  clear(): void;
  restore(): void;
}

type ConnectOptions = { host?: string; path?: string };

export function installLoopbackGuard(): LoopbackGuard {
  const dials: string[] = [];
  const escapes: string[] = [];
  const lookups: string[] = [];

  const originalConnect = net.Socket.prototype.connect;
  const originalLookup = dns.lookup;
  const originalPromisesLookup = dns.promises.lookup;

  net.Socket.prototype.connect = function guardedConnect(this: net.Socket, ...args: unknown[]) {
    const options = connectOptions(args);
    if (options && options.path === undefined) {
      const host = options.host ?? 'localhost';
      dials.push(host);
      if (!isLoopbackLiteral(host)) {
        escapes.push(host);
        options.host = '127.0.0.1';
      }
    }
    return (originalConnect as (...rest: unknown[]) => net.Socket).apply(this, args);
  } as typeof originalConnect;

  const notFound = (hostname: string): NodeJS.ErrnoException => {
    lookups.push(hostname);
    return Object.assign(new Error(`the loopback guard sends no DNS query (${hostname})`), { code: 'ENOTFOUND' });
  };
  // An IP literal passes: dns.lookup returns it without a query, and net.Server.listen relies on that.
  dns.lookup = ((hostname: string, ...rest: unknown[]) => {
    if (net.isIP(hostname) !== 0) return (originalLookup as (...all: unknown[]) => void)(hostname, ...rest);
    const callback = rest.at(-1) as (error: Error) => void;
    process.nextTick(() => callback(notFound(hostname)));
  }) as typeof dns.lookup;
  dns.promises.lookup = (async (hostname: string, ...rest: unknown[]) => {
    if (net.isIP(hostname) !== 0) return (originalPromisesLookup as (...all: unknown[]) => unknown)(hostname, ...rest);
    throw notFound(hostname);
  }) as typeof dns.promises.lookup;
  syncBuiltinESMExports();

  return {
    dials,
    escapes,
    lookups,
    clear() {
      dials.length = 0;
      escapes.length = 0;
      lookups.length = 0;
    },
    restore() {
      net.Socket.prototype.connect = originalConnect;
      dns.lookup = originalLookup;
      dns.promises.lookup = originalPromisesLookup;
      syncBuiltinESMExports();
    },
  };
}

/** Finds the options object of `socket.connect(...)`; a `(port, host)` call is rewritten into the options form. */
function connectOptions(args: unknown[]): ConnectOptions | undefined {
  const first = args[0];
  // net.connect passes `[options, listener]` as one pre-normalised array.
  if (Array.isArray(first)) return first[0] as ConnectOptions;
  if (typeof first === 'object' && first !== null) return first as ConnectOptions;
  if (typeof first === 'number') {
    const host = typeof args[1] === 'string' ? args[1] : undefined;
    args.splice(0, host === undefined ? 1 : 2, { port: first, host });
    return args[0] as ConnectOptions;
  }
  // A string alone is a Unix socket path, which stays on this machine.
  return undefined;
}

function isLoopbackLiteral(host: string): boolean {
  if (net.isIPv4(host)) return host.startsWith('127.');
  return host === '::1' || /^::ffff:127\./i.test(host);
}
