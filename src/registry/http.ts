import { EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import type { LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';

/**
 * The one place every outgoing HTTP connection of mirrorfleet passes through. It owns the undici
 * dispatcher, so connection-level policy lives here and nowhere else:
 * - `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` are honoured (undici's EnvHttpProxyAgent);
 * - `lookup` replaces DNS resolution for direct connections, which is where the network policy checks
 *   every resolved address before a socket is opened;
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
  /** Replaces DNS resolution for connections (the network policy hooks in here). */
  lookup?: LookupFunction;
  /** Extra PEM certificate authorities. */
  ca?: string | string[];
  /** Time to wait for response headers, in milliseconds. */
  headersTimeoutMs?: number;
  /** Longest pause between two body chunks, in milliseconds. */
  bodyTimeoutMs?: number;
}

export type HttpResponse = Dispatcher.ResponseData;

export class HttpTransport {
  readonly dispatcher: Dispatcher;
  private readonly observers: HttpObserver[] = [];

  constructor(options: HttpTransportOptions = {}) {
    const connect: Record<string, unknown> = {};
    if (options.lookup) connect.lookup = options.lookup;
    if (options.ca) connect.ca = options.ca;
    this.dispatcher = new EnvHttpProxyAgent({
      connect,
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
    });
    for (const observer of this.observers) observer({ registry: req.registry, method: req.method, status: response.statusCode });
    return response;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
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
