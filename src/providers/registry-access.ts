import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryError } from '../errors.ts';
import { registerSecret } from '../log/redact.ts';
import type { Credentials } from '../registry/auth.ts';
import { discard, header, type HttpRequest, type HttpResponse, type HttpTransport } from '../registry/http.ts';
import type { CredentialsSource } from './credentials.ts';

/**
 * What a target provider adds to the HTTP requests sent to its own registry host:
 * - credentials that change while the process runs, sent as Basic authorization on every request to that
 *   host that does not carry a Bearer token already. A token realm on the same host (Artifact Registry's
 *   `/v2/token`) gets them too, and the registry client's own Bearer tokens pass unchanged;
 * - one renewal of those credentials when the registry rejects them (401 without a Bearer challenge, or
 *   403, which ECR returns for an expired token), after which the request is sent once more. A request
 *   whose body is a stream cannot be sent twice: it fails with a retryable error instead, and the copy
 *   starts that blob over with the renewed credentials;
 * - creation of a repository that the registry does not know (404 on starting an upload or pushing a
 *   manifest), then the same request again, waiting between attempts while a new repository becomes visible.
 */

export interface ProviderAccess {
  /** Credentials that expire. Static credentials go to the registry client instead. */
  credentials?: CredentialsSource;
  /** Creates `repository` (tolerating that it exists), called when a push finds it missing. */
  createRepository?: (repository: string) => Promise<void>;
  /**
   * Waits before each further attempt when the registry still does not know a repository that was just
   * created, because a new repository takes a moment to become visible. Default 1, 2 and 4 seconds.
   */
  visibilityDelaysMs?: number[];
}

const DEFAULT_VISIBILITY_DELAYS_MS = [1000, 2000, 4000];

/**
 * Wraps `base` so that requests to `host` get the provider's access; requests to other hosts pass as they
 * are. HttpTransport is a class with private fields, so the wrapper delegates to it through the prototype
 * chain, which keeps its dispatcher, observers and `close`.
 */
export function withProviderAccess(base: HttpTransport, host: string, access: ProviderAccess): HttpTransport {
  const transport = Object.create(base) as HttpTransport;
  transport.send = (request) => (request.url.host === host ? sendWithAccess(base, host, access, request) : base.send(request));
  return transport;
}

async function sendWithAccess(base: HttpTransport, host: string, access: ProviderAccess, request: HttpRequest): Promise<HttpResponse> {
  const response = await sendAuthorized(base, host, access.credentials, request);
  const repository = access.createRepository ? repositoryOfPush(request) : undefined;
  if (response.statusCode !== 404 || repository === undefined || isStream(request.body)) return response;

  await discard(response);
  await access.createRepository!(repository);
  const delays = access.visibilityDelaysMs ?? DEFAULT_VISIBILITY_DELAYS_MS;
  for (let attempt = 0; ; attempt += 1) {
    const retried = await sendAuthorized(base, host, access.credentials, request);
    if (retried.statusCode !== 404 || attempt >= delays.length) return retried;
    await discard(retried);
    await sleep(delays[attempt]!);
  }
}

async function sendAuthorized(base: HttpTransport, host: string, source: CredentialsSource | undefined, request: HttpRequest): Promise<HttpResponse> {
  if (!source || /^bearer\s/i.test(authorizationOf(request) ?? '')) return base.send(request);

  const credentials = await source.current();
  const response = await base.send(withBasic(request, credentials));
  if (!rejectsCredentials(response)) return response;

  const renewed = await source.renew(credentials);
  if (!renewed) return response;
  await discard(response);
  if (isStream(request.body)) {
    const operation = `${request.method} ${request.url.pathname}`;
    throw new RegistryError(
      'REGISTRY_DENIED',
      `${host} answered ${response.statusCode} to ${operation}, so its push credentials expired mid-transfer; new ones were obtained and the transfer can start over`,
      { registry: host, operation, status: response.statusCode, retryable: true },
    );
  }
  return base.send(withBasic(request, renewed));
}

/** Checks for a 403, or a 401 that does not ask for a Bearer token (which the registry client fetches itself). */
function rejectsCredentials(response: HttpResponse): boolean {
  if (response.statusCode === 403) return true;
  return response.statusCode === 401 && !/^\s*bearer\b/i.test(header(response, 'www-authenticate') ?? '');
}

function withBasic(request: HttpRequest, credentials: Credentials): HttpRequest {
  const value = Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64');
  registerSecret(credentials.password);
  registerSecret(value);
  const headers = Object.fromEntries(Object.entries(request.headers ?? {}).filter(([name]) => name.toLowerCase() !== 'authorization'));
  return { ...request, headers: { ...headers, authorization: `Basic ${value}` } };
}

function authorizationOf(request: HttpRequest): string | undefined {
  const entry = Object.entries(request.headers ?? {}).find(([name]) => name.toLowerCase() === 'authorization');
  const value = entry?.[1];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Returns the repository of a request that creates something in it, which a 404 means the repository is
 * missing: `POST /v2/<name>/blobs/uploads/` and `PUT /v2/<name>/manifests/<reference>`. A 404 elsewhere,
 * such as on an upload session URL, has other causes.
 */
function repositoryOfPush(request: HttpRequest): string | undefined {
  const path = request.url.pathname;
  if (request.method === 'POST') return /^\/v2\/(.+)\/blobs\/uploads\/$/.exec(path)?.[1];
  if (request.method === 'PUT') return /^\/v2\/(.+)\/manifests\/[^/]+$/.exec(path)?.[1];
  return undefined;
}

function isStream(body: HttpRequest['body']): boolean {
  return body !== undefined && body !== null && typeof body !== 'string' && !(body instanceof Uint8Array);
}
