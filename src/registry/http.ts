import { EnvHttpProxyAgent, Pool, request, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { ConfigError } from '../errors.ts';
import { createPolicyConnector, type Resolver } from '../net/connector.ts';
import { NetworkPolicy } from '../net/policy.ts';

/**
 * The one place every outgoing HTTP connection of mirrorfleet passes through. It owns the undici
 * dispatcher, so connection-level policy lives here and nowhere else:
 * - every TCP connection goes through a connector that enforces the network policy: the host is resolved,
 *   each address is checked, and the socket is opened to a checked address (src/net/connector.ts);
 * - `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` are honoured (undici's EnvHttpProxyAgent);
 * - `ca` adds certificate authorities for registries with a private CA;
 * - observers see every response (registry request metrics, rate-limit bookkeeping).
 */

export type HttpBody = string | Buffer | Uint8Array | Readable | null;

export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: URL;
  headers?: Record<string, string | string[]>;
  body?: HttpBody;
  /** Registry host name used for metrics and limits, such as `docker.io` or `127.0.0.1:5000`. */
  registry: string;
}

export interface HttpResponseInfo {
  registry: string;
  method: string;
  status: number;
}

export type HttpObserver = (info: HttpResponseInfo) => void;

export interface HttpTransportOptions {
  /**
   * Addresses this transport may connect to. Defaults to `new NetworkPolicy([])`, which rejects loopback
   * and private addresses.
   */
  policy?: NetworkPolicy;
  /** Replaces DNS resolution of host names before the policy check; tests pass a stub. */
  resolver?: Resolver;
  /** Extra PEM certificate authorities. */
  ca?: string | string[];
  /** Time to wait for response headers, in milliseconds. */
  headersTimeoutMs?: number;
  /** Maximum pause between two body chunks, in milliseconds. */
  bodyTimeoutMs?: number;
}

export type HttpResponse = Dispatcher.ResponseData;

export class HttpTransport {
  readonly dispatcher: Dispatcher;
  private readonly observers: HttpObserver[] = [];

  /** @throws ConfigError when HTTP_PROXY or HTTPS_PROXY names a SOCKS proxy. */
  constructor(options: HttpTransportOptions = {}) {
    const policy = options.policy ?? new NetworkPolicy([]);
    const socket = options.ca ? { ca: options.ca } : {};
    const httpProxy = proxyFromEnvironment('http_proxy', 'HTTP_PROXY');
    const httpsProxy = proxyFromEnvironment('https_proxy', 'HTTPS_PROXY');

    // With a proxy, the socket goes to the proxy's own address, so that is the address the policy checks.
    // The proxy then decides where the request goes: the target host is neither resolved nor checked here.
    const proxyConnector = createPolicyConnector({ policy, resolver: options.resolver, socket, proxy: true });
    this.dispatcher = new EnvHttpProxyAgent({
      httpProxy,
      httpsProxy,
      connect: createPolicyConnector({ policy, resolver: options.resolver, socket }),
      clientFactory: (origin) => new Pool(origin, { connect: proxyConnector }),
      // Without tunnelling, undici sends a plain-HTTP request to the proxy over a connection that it opens
      // with its own connector, which skips the policy. Tunnelling routes it through `clientFactory` too.
      // NOTE: a proxy that allows CONNECT only to port 443, as Squid's default `http_access deny CONNECT !SSL_ports`
      // does, then refuses plain-HTTP registries.
      proxyTunnel: true,
      requestTls: socket,
      headersTimeout: options.headersTimeoutMs ?? 60_000,
      bodyTimeout: options.bodyTimeoutMs ?? 120_000,
    });
  }

  /** Adds a function called once per response with its registry, method and status. */
  observe(observer: HttpObserver): void {
    this.observers.push(observer);
  }

  /** Sends one request. Follows no redirect: callers decide, because credentials must not follow one to another host. */
  async send(req: HttpRequest): Promise<HttpResponse> {
    const response = await request(req.url, {
      dispatcher: this.dispatcher,
      method: req.method,
      headers: req.headers ?? {},
      body: req.body ?? null,
      // undici 8 closes the connection after every HEAD unless the request sets `reset: false` (a HEAD response with a stray
      // body would desynchronise it). Registries send HEAD responses without a body, and existence checks are
      // most of the warm path: keeping the connection measured 500 HEADs in 2 connections instead of 500.
      reset: false,
    });
    for (const observer of this.observers) observer({ registry: req.registry, method: req.method, status: response.statusCode });
    return response;
  }

  /** Closes every connection once its requests finish. */
  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  /** Closes every connection at once, failing the requests still running with `reason` when given. */
  async destroy(reason?: Error): Promise<void> {
    await this.dispatcher.destroy(reason ?? null);
  }
}

/**
 * Reads a proxy URL as undici's EnvHttpProxyAgent does (lower case first). SOCKS proxies are rejected:
 * undici's SOCKS client opens the connection to the proxy with its own connector, which skips the policy.
 */
function proxyFromEnvironment(lowerName: string, upperName: string): string | undefined {
  const value = process.env[lowerName] ?? process.env[upperName];
  if (!value) return undefined;
  const protocol = /^([a-z][a-z0-9+.-]*):/i.exec(value)?.[1]?.toLowerCase();
  if (protocol?.startsWith('socks')) {
    const name = process.env[lowerName] !== undefined ? lowerName : upperName;
    throw new ConfigError(
      `${name} names a SOCKS proxy (${protocol}:), which is not supported because connections to it would bypass the network policy; use an HTTP or HTTPS proxy`,
    );
  }
  return value;
}

/** Returns a header's first value, lowercased name lookup. */
export function header(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name.toLowerCase()];
  if (Array.isArray(value)) return value[0];
  return value ?? undefined;
}

/** Reads and drops a response body, so the connection goes back to the pool. */
export async function discard(response: HttpResponse): Promise<void> {
  await response.body.dump().catch(() => undefined);
}
