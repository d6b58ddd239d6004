import { fetch as undiciFetch } from 'undici';
import type { HttpRequest as SdkRequest, HttpResponse as SdkResponse, RequestHandler } from '@smithy/types';
import type { HttpRequest, HttpTransport } from '../registry/http.ts';

/**
 * Routes the cloud SDKs' API calls through mirrorfleet's HttpTransport, so that they obey the same network
 * policy, proxy settings and extra certificate authorities as registry traffic.
 * NOTE: the SDKs' own credential chains (AWS instance metadata, Google's metadata server and token
 * endpoint for Application Default Credentials) do not pass through here, because the network policy
 * always rejects metadata addresses.
 */

const METHODS = new Set<HttpRequest['method']>(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

/** An AWS SDK v3 request handler (`requestHandler` client option) that sends through `transport`. */
export class TransportRequestHandler implements RequestHandler<SdkRequest, SdkResponse> {
  private readonly transport: HttpTransport;
  /** Name under which the calls appear in request metrics, such as `ecr-api`. */
  private readonly label: string;

  constructor(transport: HttpTransport, label: string) {
    this.transport = transport;
    this.label = label;
  }

  async handle(request: SdkRequest): Promise<{ response: SdkResponse }> {
    const method = request.method.toUpperCase() as HttpRequest['method'];
    if (!METHODS.has(method)) throw new Error(`unsupported HTTP method ${request.method} in an AWS SDK request`);

    const url = new URL(`${request.protocol}//${request.hostname}${request.port ? `:${request.port}` : ''}${request.path}`);
    for (const [name, value] of Object.entries(request.query ?? {})) {
      for (const item of Array.isArray(value) ? value : [value]) if (item !== null) url.searchParams.append(name, item);
    }
    // The URL carries the host; undici sets the Host header from it, to the same value the request was signed with.
    const headers = Object.fromEntries(Object.entries(request.headers).filter(([name]) => name.toLowerCase() !== 'host'));

    const response = await this.transport.send({ method, url, headers, body: request.body ?? null, registry: this.label });
    const flatHeaders: Record<string, string> = {};
    for (const [name, value] of Object.entries(response.headers)) {
      if (value !== undefined) flatHeaders[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    return { response: { statusCode: response.statusCode, headers: flatHeaders, body: response.body } };
  }

  updateHttpClientConfig(): void {
    // Nothing to configure: the transport owns its connection settings.
  }

  httpHandlerConfigs(): Record<string, never> {
    return {};
  }
}

/**
 * Returns a WHATWG `fetch` that connects through `transport`'s dispatcher. A `Request` object (the Scaleway SDK
 * passes one) is taken apart into URL and options, because it comes from Node's built-in undici, whose
 * classes the npm undici package does not recognise.
 */
export function transportFetch(transport: HttpTransport): typeof fetch {
  const fetchThrough = async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    let url: string;
    let options: RequestInit = init ?? {};
    if (input instanceof Request) {
      url = input.url;
      const hasBody = input.method !== 'GET' && input.method !== 'HEAD';
      options = { method: input.method, headers: input.headers, ...(hasBody ? { body: await input.arrayBuffer() } : {}), signal: input.signal, ...init };
    } else {
      url = String(input);
    }
    const headers = Object.fromEntries(new Headers(options.headers).entries());
    return undiciFetch(url, { ...(options as Parameters<typeof undiciFetch>[1]), headers, dispatcher: transport.dispatcher });
  };
  return fetchThrough as unknown as typeof fetch;
}
