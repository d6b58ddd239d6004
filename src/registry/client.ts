import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DigestMismatchError, RegistryError } from '../errors.ts';
import { registryEndpoint } from '../image-ref/reference.ts';
import { Authenticator, type Credentials } from './auth.ts';
import { readLimited, sortResponse } from './failures.ts';
import { discard, header, type HttpBody, type HttpRequest, type HttpResponse, type HttpTransport } from './http.ts';
import { ACCEPTED_MANIFEST_TYPES, OCI_INDEX, detectMediaType, parseManifest, type Descriptor } from './media-types.ts';
import {
  isNetworkError,
  sortConnectionFailure,
  parseRetryAfter,
  requestKind,
  resolveRetryPolicy,
  RetryBudget,
  TransientResponse,
  type GatePermit,
  type RequestGate,
  type RequestKind,
  type RetryEvent,
  type RetryPolicy,
} from './retry.ts';

export { DEFAULT_RETRY_POLICY, parseRetryAfter, type RequestGate, type RetryEvent, type RetryPolicy } from './retry.ts';

/**
 * A client of one registry's OCI distribution API (distribution-spec v1.1, "spec.md").
 * Each method sorts the response where the call is made:
 * - an expected miss (404 on a HEAD or GET of something that may not exist) is returned as `undefined`;
 * - 429, 5xx and broken connections are retried on every verb with jittered exponential backoff,
 *   honouring `Retry-After`, within the bounds of the retry policy (see retry.ts). A request whose body
 *   is a stream cannot be sent again, so its caller retries the whole transfer. A failed PATCH is
 *   followed by an upload status request, and only the missing bytes are sent again;
 * - everything else throws a `RegistryError` whose code says whether retrying can help.
 */

export interface RegistryClientOptions {
  /** Normalised registry name, such as `docker.io` or `127.0.0.1:5000`. */
  registry: string;
  /** Plain HTTP instead of HTTPS. */
  insecure?: boolean;
  credentials?: Credentials;
  transport: HttpTransport;
  retry?: Partial<RetryPolicy>;
  /** Called before each wait between two attempts, for metrics and logs. */
  onRetry?: (event: RetryEvent) => void;
  /** Decides when each attempt may be sent, such as a request budget shared by the fleet; none by default. */
  gate?: RequestGate;
}

export interface Manifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface ManifestHead {
  digest: string;
  mediaType: string | undefined;
  size: number | undefined;
}

export interface BlobStream {
  stream: Readable;
  /** Bytes the body will carry (the whole blob, or the rest of it after `offset`); -1 when unknown. */
  size: number;
  /** Position in the blob of the body's first byte: the offset asked for, or 0 when the registry ignored the Range header. */
  offset: number;
}

export type UploadStart = { mounted: true } | { mounted: false; location: URL };

export interface UploadStatus {
  /** URL of the next request of the upload. */
  location: URL;
  /** Bytes the registry has stored for the upload so far. */
  offset: number;
}

export interface ManifestReadOptions {
  /** Media types sent in `Accept`; default every type a copy can handle. */
  accept?: readonly string[];
}

export interface TagListOptions {
  /** Tags per page, sent as `n`; default none, which lets the registry choose. */
  pageSize?: number;
  /** Pages read before giving up with an error. Default 100. */
  maxPages?: number;
}

// Distribution refuses manifests over 4 MiB; reading more than that is never needed.
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_TAG_LIST_BYTES = 16 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const DEFAULT_MAX_TAG_PAGES = 100;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

interface Call {
  method: HttpRequest['method'];
  url: URL;
  /** Token scopes this request needs, such as `repository:library/bash:pull`. */
  scopes: string[];
  /** Description of the operation for error messages, such as `reading manifest library/bash:5.3`. */
  operation: string;
  headers?: Record<string, string | string[]>;
  body?: HttpBody;
  /** Follow redirects. Credentials go only to the registry's own origin, never to the redirect target. */
  followRedirects?: boolean;
}

/** One request and its response, after redirects. */
interface Exchange {
  response: HttpResponse;
  /** URL of the request that produced `response`, against which a relative Location resolves. */
  url: URL;
  /** Name of the responder in messages. */
  answeredBy: string;
}

export class RegistryClient {
  readonly registry: string;
  readonly retryPolicy: RetryPolicy;
  private readonly origin: string;
  private readonly transport: HttpTransport;
  private readonly auth: Authenticator;
  private readonly onRetry: ((event: RetryEvent) => void) | undefined;
  private readonly gate: RequestGate | undefined;

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    this.origin = `${options.insecure ? 'http' : 'https'}://${registryEndpoint(options.registry)}`;
    this.transport = options.transport;
    this.auth = new Authenticator(options.transport, options.registry, options.credentials);
    this.retryPolicy = resolveRetryPolicy(options.retry);
    this.onRetry = options.onRetry;
    this.gate = options.gate;
  }

  /**
   * Reads a manifest by tag or digest; undefined when the registry has no such manifest. The media type
   * comes from the response, never from the Accept header. The digest is computed from the bytes; a
   * `Docker-Content-Digest` header, when present, must agree with it.
   */
  async getManifest(repository: string, reference: string, options: ManifestReadOptions = {}): Promise<Manifest | undefined> {
    const operation = `reading manifest ${repository}${separator(reference)}${reference}`;
    const call: Call = {
      method: 'GET',
      url: this.url(`${repository}/manifests/${reference}`),
      scopes: [pullScope(repository)],
      operation,
      headers: { accept: acceptValues(options.accept ?? ACCEPTED_MANIFEST_TYPES) },
      followRedirects: true,
    };
    return this.retrying(call, async () => {
      const { response, answeredBy } = await this.exchange(call);
      if (response.statusCode === 404) {
        await discard(response);
        return undefined;
      }
      if (response.statusCode !== 200) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
      const bytes = await readLimited(response, MAX_MANIFEST_BYTES, () => this.protocolError(`sent a manifest over 4 MiB`, operation));
      return this.manifestFrom(bytes, response, reference, operation);
    });
  }

  /**
   * Checks a manifest with HEAD. A HEAD that answers 404, 405 or 406, or 200 without a digest, is
   * confirmed with a GET, because some registries answer HEAD differently from GET. So is a 400, whose
   * explanation is in a body that a HEAD response does not carry (a TLS port reached over plain HTTP
   * answers 400). Undefined means the GET found nothing either.
   *
   * With `confirmMissing: false`, a 404 is taken as it is, without the GET. That suits a check at a
   * mirror registry whose wrong "absent" only costs copying again what is already there.
   */
  async headManifest(repository: string, reference: string, options: { confirmMissing?: boolean } = {}): Promise<ManifestHead | undefined> {
    const operation = `checking manifest ${repository}${separator(reference)}${reference}`;
    const call: Call = {
      method: 'HEAD',
      url: this.url(`${repository}/manifests/${reference}`),
      scopes: [pullScope(repository)],
      operation,
      headers: { accept: acceptValues(ACCEPTED_MANIFEST_TYPES) },
      followRedirects: true,
    };
    const head = await this.retrying(call, async () => {
      const { response, answeredBy } = await this.exchange(call);
      await discard(response);
      const digest = header(response, 'docker-content-digest');
      if (response.statusCode === 200 && digest) {
        const length = header(response, 'content-length');
        return { digest, mediaType: header(response, 'content-type')?.split(';')[0]?.trim(), size: length ? Number(length) : undefined };
      }
      if (response.statusCode === 404 && options.confirmMissing === false) return 'missing' as const;
      if ([200, 400, 404, 405, 406].includes(response.statusCode)) return undefined;
      throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
    });
    if (head === 'missing') return undefined;
    if (head) return head;
    const manifest = await this.getManifest(repository, reference);
    return manifest && { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.bytes.length };
  }

  /** Pushes manifest bytes unchanged, with their own media type as Content-Type. Returns their digest. */
  async putManifest(repository: string, reference: string, manifest: Pick<Manifest, 'bytes' | 'mediaType'>): Promise<string> {
    const operation = `pushing manifest ${repository}${separator(reference)}${reference}`;
    const digest = sha256(manifest.bytes);
    const call: Call = {
      method: 'PUT',
      url: this.url(`${repository}/manifests/${reference}`),
      scopes: [pushScope(repository)],
      operation,
      headers: { 'content-type': manifest.mediaType },
      body: manifest.bytes,
    };
    return this.retrying(call, async () => {
      const { response, answeredBy } = await this.exchange(call);
      if (response.statusCode !== 201 && response.statusCode !== 200) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
      await discard(response);
      const stored = header(response, 'docker-content-digest');
      if (stored && stored.startsWith('sha256:') && stored !== digest) {
        throw new DigestMismatchError(`${this.registry} stored the manifest as ${stored}, but its bytes hash to ${digest}, while ${operation}`);
      }
      return digest;
    });
  }

  /** Returns the size of a blob in `repository`, or undefined when the repository does not have it. */
  async headBlob(repository: string, digest: string): Promise<number | undefined> {
    return (await this.statBlob(repository, digest))?.size;
  }

  /** Opens a blob for streaming, from `offset` on when given (a Range request). */
  async getBlob(repository: string, digest: string, offset = 0): Promise<BlobStream> {
    const operation = offset > 0 ? `reading blob ${digest} from ${repository} from byte ${offset}` : `reading blob ${digest} from ${repository}`;
    const call: Call = {
      method: 'GET',
      url: this.url(`${repository}/blobs/${digest}`),
      scopes: [pullScope(repository)],
      operation,
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      followRedirects: true,
    };
    return this.retrying(call, async () => {
      const { response, answeredBy } = await this.exchange(call);
      const status = response.statusCode;
      if (status !== 200 && !(status === 206 && offset > 0)) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });

      const declared = header(response, 'docker-content-digest');
      if (declared && declared !== digest) {
        await discard(response);
        throw new DigestMismatchError(`${answeredBy} sent blob ${declared} when asked for ${digest}, while ${operation}`);
      }
      let bodyOffset = 0;
      if (status === 206) {
        const start = /^bytes (\d+)-/.exec(header(response, 'content-range') ?? '')?.[1];
        if (start === undefined || Number(start) !== offset) {
          await discard(response);
          throw this.protocolError(`answered a Range request from byte ${offset} with Content-Range "${header(response, 'content-range') ?? ''}"`, operation);
        }
        bodyOffset = offset;
      }
      const length = header(response, 'content-length');
      return { stream: response.body, size: length === undefined ? -1 : Number(length), offset: bodyOffset };
    });
  }

  /**
   * Starts an upload session. With `mount`, requests a cross-repository mount first: only 201 counts as
   * mounted, and a 202 is an ordinary upload session to use instead. A redirect is followed, and the
   * session's Location resolves against the URL of the request that returned it.
   */
  async startUpload(repository: string, mount?: { digest: string; from: string }): Promise<UploadStart> {
    const operation = mount ? `mounting blob ${mount.digest} from ${mount.from} into ${repository}` : `starting an upload to ${repository}`;
    const url = this.url(`${repository}/blobs/uploads/`);
    const scopes = [pushScope(repository)];
    if (mount) {
      url.searchParams.set('mount', mount.digest);
      url.searchParams.set('from', mount.from);
      scopes.push(pullScope(mount.from));
    }
    const call: Call = { method: 'POST', url, scopes, operation, headers: { 'content-length': '0' }, followRedirects: true };
    return this.retrying(call, async (): Promise<UploadStart> => {
      const exchange = await this.exchange(call);
      const { response, answeredBy } = exchange;
      if (mount && response.statusCode === 201) {
        await discard(response);
        return { mounted: true };
      }
      if (response.statusCode !== 202) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
      await discard(response);
      return { mounted: false, location: this.uploadLocation(exchange, operation) };
    });
  }

  /**
   * Uploads a whole blob in the final PUT of a session. `body` must carry exactly `size` bytes.
   * When the registry rejects the PUT or the budget runs out, but a HEAD then shows the blob under the
   * same digest (another pusher committed it first, or the response to our own commit was lost), the
   * upload counts as done.
   */
  async uploadMonolithic(repository: string, location: URL, digest: string, body: HttpBody, size: number): Promise<void> {
    const operation = size > 0 ? `uploading blob ${digest} to ${repository}` : `committing blob ${digest} in ${repository}`;
    const call: Call = {
      method: 'PUT',
      url: withDigest(location, digest),
      scopes: [pushScope(repository)],
      operation,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body,
    };
    try {
      await this.retrying(call, async () => {
        const { response, answeredBy } = await this.exchange(call);
        if (response.statusCode < 200 || response.statusCode > 299) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
        await discard(response);
        const stored = header(response, 'docker-content-digest');
        if (stored && stored !== digest) {
          throw new DigestMismatchError(`${answeredBy} stored blob ${stored} when ${digest} was uploaded, while ${operation}`);
        }
      });
    } catch (error) {
      // Only a failure at the registry can hide a commit: a digest mismatch or a connection the network
      // policy rejected never stored anything.
      if (!(error instanceof RegistryError) || !(await this.blobCommitted(repository, digest))) throw error;
    }
  }

  /**
   * Sends one chunk of a chunked upload and returns the Location for the next request. A PATCH that
   * fails transiently is followed by a status request, and only the bytes the registry reports missing
   * are sent again: from the Buffer, or from the stream that `body(from)` returns for them.
   * @throws RegistryError (retryable) when the session is gone, so the caller starts a new upload.
   */
  async uploadChunk(repository: string, location: URL, body: ChunkBody, offset: number, length: number): Promise<URL> {
    const operation = `uploading bytes ${offset}-${offset + length - 1} to ${repository}`;
    const end = offset + length;
    const budget = this.budget(operation);
    let current = location;
    let sent = offset;
    let reauthorized = false;

    for (;;) {
      const remaining = body instanceof Uint8Array ? Buffer.from(body.buffer, body.byteOffset + (sent - offset), end - sent) : await body(sent);
      const call: Call = {
        method: 'PATCH',
        url: current,
        scopes: [pushScope(repository)],
        operation,
        headers: {
          // distribution 2.8 answers 500 to a PATCH with any other Content-Type.
          'content-type': 'application/octet-stream',
          'content-length': String(end - sent),
          'content-range': `${sent}-${end - 1}`,
        },
        body: remaining,
      };
      try {
        const exchange = await this.exchange(call);
        const { response } = exchange;
        // sendAuthorized learns the challenge of a 401 but does not send a stream again, so after a 401
        // the bytes are sent again from here, once.
        const challenged = response.statusCode === 401 && !(remaining instanceof Uint8Array) && !reauthorized;
        if (response.statusCode !== 202 && !challenged) throw await sortResponse(response, { registry: this.registry, operation, answeredBy: exchange.answeredBy });
        await discard(response);
        if (!challenged) return this.uploadLocation(exchange, operation);
        reauthorized = true;
      } catch (error) {
        if (!(error instanceof TransientResponse) && !isNetworkError(error)) throw error;
        await budget.retryAfter(error, true);
      }

      // The registry may have stored part of the chunk before the failure, so request its upload status.
      const status = await this.uploadStatus(repository, current);
      if (!status || status.offset < offset || status.offset > end) {
        const stored = status ? `reports ${status.offset} bytes stored, outside this chunk` : 'no longer knows the session';
        throw new RegistryError('REGISTRY_UNAVAILABLE', `${this.registry} ${stored} after a failed PATCH while ${operation}; the upload must start again`, {
          registry: this.registry,
          operation,
          retryable: true,
        });
      }
      if (status.offset === end) return status.location;
      current = status.location;
      sent = status.offset;
    }
  }

  /**
   * Requests how many bytes of an upload the registry has stored (a GET on its Location). Undefined
   * when the registry no longer knows the session (404, as distribution 2.8.2 responds after a PATCH
   * broke mid-body).
   */
  async uploadStatus(repository: string, location: URL): Promise<UploadStatus | undefined> {
    const operation = `checking an upload to ${repository}`;
    const call: Call = { method: 'GET', url: location, scopes: [pushScope(repository)], operation };
    return this.retrying(call, async () => {
      const exchange = await this.exchange(call);
      const { response, answeredBy } = exchange;
      if (response.statusCode !== 204 && response.statusCode !== 200 && response.statusCode !== 404) {
        throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
      }
      await discard(response);
      if (response.statusCode === 404) return undefined;
      const next = header(response, 'location') ? this.uploadLocation(exchange, operation) : location;
      return { location: next, offset: parseUploadRange(header(response, 'range')) };
    });
  }

  /** Closes a chunked upload with the final empty PUT. */
  async finishUpload(repository: string, location: URL, digest: string): Promise<void> {
    await this.uploadMonolithic(repository, location, digest, null, 0);
  }

  /** Deletes a manifest by digest. Returns false when it was already gone. */
  async deleteManifest(repository: string, digest: string): Promise<boolean> {
    const operation = `deleting manifest ${repository}@${digest}`;
    const call: Call = { method: 'DELETE', url: this.url(`${repository}/manifests/${digest}`), scopes: [`repository:${repository}:delete`], operation };
    return this.retrying(call, async () => {
      const { response, answeredBy } = await this.exchange(call);
      if (response.statusCode === 404) {
        await discard(response);
        return false;
      }
      if (response.statusCode !== 202 && response.statusCode !== 200) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
      await discard(response);
      return true;
    });
  }

  /**
   * Lists the tags of a repository, following `Link: <...>; rel="next"` headers (relative or absolute,
   * on the registry's own origin) to the last page. Undefined when the repository does not exist.
   * @throws RegistryError (REGISTRY_PROTOCOL) when a page links to one already read, or after `maxPages` pages.
   */
  async listTags(repository: string, options: TagListOptions = {}): Promise<string[] | undefined> {
    const operation = `listing the tags of ${repository}`;
    const maxPages = options.maxPages ?? DEFAULT_MAX_TAG_PAGES;
    let url = this.url(`${repository}/tags/list`);
    if (options.pageSize !== undefined) url.searchParams.set('n', String(options.pageSize));
    const seen = new Set<string>();
    const tags: string[] = [];

    for (let page = 1; ; page += 1) {
      seen.add(url.href);
      const call: Call = { method: 'GET', url, scopes: [pullScope(repository)], operation, followRedirects: true };
      const result = await this.retrying(call, async () => {
        const { response, answeredBy } = await this.exchange(call);
        if (response.statusCode === 404 && page === 1) {
          await discard(response);
          return undefined;
        }
        if (response.statusCode !== 200) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
        const text = (await readLimited(response, MAX_TAG_LIST_BYTES, () => this.protocolError('sent a tag list page over 16 MiB', operation))).toString('utf8');
        return { body: parseJson(text), link: header(response, 'link') };
      });
      if (!result) return undefined;

      const pageTags = (result.body as { tags?: unknown } | undefined)?.tags;
      if (pageTags !== null && !(Array.isArray(pageTags) && pageTags.every((tag) => typeof tag === 'string'))) {
        throw this.protocolError(`sent a tag list page without a "tags" array of strings`, operation);
      }
      tags.push(...(pageTags ?? []));

      const next = parseNextLink(result.link);
      if (next === undefined) return tags;
      const nextUrl = new URL(next, url);
      if (nextUrl.origin !== this.origin) throw this.protocolError(`linked the next tag page to another origin (${nextUrl.origin})`, operation);
      if (seen.has(nextUrl.href)) throw this.protocolError(`linked tag page ${page} back to ${nextUrl.pathname}${nextUrl.search}, a page already read`, operation);
      if (page >= maxPages) throw this.protocolError(`has more than ${maxPages} tag pages; raise maxPages to read them all`, operation);
      url = nextUrl;
    }
  }

  private url(path: string): URL {
    return new URL(`${this.origin}/v2/${path}`);
  }

  private budget(operation: string, kind: RequestKind = 'upload'): RetryBudget {
    return new RetryBudget({ registry: this.registry, operation, kind, policy: this.retryPolicy, onRetry: this.onRetry });
  }

  /** Runs `attempt` until it returns or throws something other than a transient failure, within one retry budget. */
  private async retrying<T>(call: Pick<Call, 'operation' | 'body' | 'method' | 'url'>, attempt: () => Promise<T>): Promise<T> {
    const budget = this.budget(call.operation, requestKind(call.method, call.url));
    for (;;) {
      try {
        return await attempt();
      } catch (error) {
        if (!(error instanceof TransientResponse) && !isNetworkError(error)) throw error;
        await budget.retryAfter(error, isReplayable(call.body));
      }
    }
  }

  /** Sends one request, through the gate when there is one. */
  private async exchange(call: Call): Promise<Exchange> {
    try {
      return await (this.gate ? this.gatedExchange(this.gate, call) : this.followRedirects(call));
    } catch (error) {
      throw sortConnectionFailure(error, { registry: this.registry, operation: call.operation });
    }
  }

  /**
   * Sends one request once the gate lets it go. The gate then receives the outcome as soon as the
   * response headers arrive, and the release once the response body is read or dropped.
   */
  private async gatedExchange(gate: RequestGate, call: Call): Promise<Exchange> {
    const kind = requestKind(call.method, call.url);
    const spendsPull = call.method === 'GET' && kind === 'manifest-read' && call.url.pathname.includes('/manifests/');
    const permit = await gate.acquire({
      registry: this.registry,
      kind,
      method: call.method,
      operation: call.operation,
      ...(spendsPull ? { probe: () => this.probeManifest(call) } : {}),
    });
    const started = performance.now();
    let exchange: Exchange;
    try {
      exchange = await this.followRedirects(call);
    } catch (error) {
      await permit.report({ status: undefined, latencyMs: performance.now() - started, retryAfterMs: undefined, headers: {} });
      permit.release();
      throw error;
    }
    const { response } = exchange;
    await permit.report({
      status: response.statusCode,
      latencyMs: performance.now() - started,
      retryAfterMs: parseRetryAfter(header(response, 'retry-after')),
      headers: response.headers,
    });
    releaseWhenClosed(response, permit);
    return exchange;
  }

  /** Sends a HEAD for the manifest of a GET, which lets the gate read the pull quota without spending it. */
  private async probeManifest(call: Call): Promise<HttpResponse['headers']> {
    const { response } = await this.exchange({ ...call, method: 'HEAD', body: null });
    await discard(response);
    return response.headers;
  }

  /** Sends one request, following redirects when `call.followRedirects` is set. */
  private async followRedirects(call: Call): Promise<Exchange> {
    let url = call.url;
    let method = call.method;
    for (let hop = 0; ; hop += 1) {
      const own = url.origin === this.origin;
      const response = own
        ? await this.sendAuthorized(call, url, method)
        : await this.transport.send({ method, url, headers: call.headers ?? {}, body: call.body ?? null, registry: this.registry });
      const answeredBy = own ? this.registry : `${url.host} (redirected from ${this.registry})`;
      const location = header(response, 'location');
      if (!call.followRedirects || !REDIRECT_STATUSES.has(response.statusCode) || !location || !isReplayable(call.body)) {
        return { response, url, answeredBy };
      }
      await discard(response);
      if (hop >= MAX_REDIRECTS) throw this.protocolError(`redirected more than ${MAX_REDIRECTS} times`, call.operation);
      url = new URL(location, url);
      if (response.statusCode === 303 && method !== 'HEAD') method = 'GET';
    }
  }

  /** Sends a request to the registry's own origin with authorization, and once more after a 401 challenge. */
  private async sendAuthorized(call: Call, url: URL, method: Call['method']): Promise<HttpResponse> {
    const send = async (): Promise<{ response: HttpResponse; authorized: boolean }> => {
      const headers: Record<string, string | string[]> = { ...call.headers };
      const authorization = await this.auth.authorization(call.scopes, call.operation);
      if (authorization) headers.authorization = authorization;
      const response = await this.transport.send({ method, url, headers, body: call.body ?? null, registry: this.registry });
      return { response, authorized: authorization !== undefined };
    };

    const first = await send();
    if (first.response.statusCode !== 401) return first.response;
    // Learn the challenge even when the body cannot be sent again, so the caller's next attempt is authorized.
    const canRetry = this.auth.onUnauthorized(first.response.headers['www-authenticate'], call.scopes, first.authorized);
    if (!canRetry || !isReplayable(call.body)) return first.response;
    await discard(first.response);
    return (await send()).response;
  }

  /** Resolves an upload `Location` against the URL of the request whose response carried it. */
  private uploadLocation(exchange: Exchange, operation: string): URL {
    const location = header(exchange.response, 'location');
    if (!location) throw this.protocolError('sent no upload Location', operation);
    return new URL(location, exchange.url);
  }

  /** Returns a blob's size and, when the registry sends it, its digest; undefined when the repository does not have it. */
  private async statBlob(repository: string, digest: string): Promise<{ size: number; digest: string | undefined } | undefined> {
    const operation = `checking blob ${digest} in ${repository}`;
    const call: Call = { method: 'HEAD', url: this.url(`${repository}/blobs/${digest}`), scopes: [pullScope(repository)], operation, followRedirects: true };
    return this.retrying(call, async () => {
      const { response, answeredBy } = await this.exchange(call);
      await discard(response);
      if (response.statusCode === 404) return undefined;
      if (response.statusCode !== 200) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
      const length = header(response, 'content-length');
      return { size: length === undefined ? 0 : Number(length), digest: header(response, 'docker-content-digest') };
    });
  }

  /** Returns true when a HEAD shows `digest` in `repository` and names no other digest; false also when the HEAD fails. */
  private async blobCommitted(repository: string, digest: string): Promise<boolean> {
    const stat = await this.statBlob(repository, digest).catch(() => undefined);
    return stat !== undefined && (stat.digest === undefined || stat.digest === digest);
  }

  private manifestFrom(bytes: Buffer, response: HttpResponse, reference: string, operation: string): Manifest {
    const digest = sha256(bytes);
    if (reference.includes(':')) {
      const actual = digestOf(bytes, reference.slice(0, reference.indexOf(':')));
      if (actual !== reference) throw new DigestMismatchError(`${this.registry} returned a manifest whose digest is ${actual} while ${operation}`);
    }
    const declared = header(response, 'docker-content-digest');
    if (declared && declared.includes(':')) {
      const actual = digestOf(bytes, declared.slice(0, declared.indexOf(':')));
      if (actual !== declared) {
        throw new DigestMismatchError(`${this.registry} declared Docker-Content-Digest ${declared} but the bytes hash to ${actual} while ${operation}`);
      }
    }

    const body = parseJson(bytes.toString('utf8'));
    if (body === undefined) throw this.protocolError('returned a manifest that is not JSON', operation);
    const mediaType = detectMediaType(header(response, 'content-type'), body);
    if (!mediaType) throw this.protocolError('returned a manifest of unknown type', operation);
    return { bytes, mediaType, digest };
  }

  private protocolError(problem: string, operation: string): RegistryError {
    return new RegistryError('REGISTRY_PROTOCOL', `${this.registry} ${problem} while ${operation}`, { registry: this.registry, operation });
  }

  /**
   * Lists the referrers of `digest` with the OCI 1.1 referrers API (distribution-spec v1.1, "Listing
   * Referrers"), following `Link` pages. With `artifactType`, returns only referrers of that type, and
   * filters here when the registry did not (no `artifactType` in `OCI-Filters-Applied`).
   * Undefined when the registry has no referrers API. The specification forbids a 404 from a registry
   * that has the API. Registries without it respond 404 (distribution 2.8), 400, 405 or 501, or redirect
   * to a web page, which is why redirects are not followed here.
   * @throws RegistryError (REGISTRY_PROTOCOL) when a page is not an OCI index, or after 100 pages.
   */
  async listReferrers(repository: string, digest: string, artifactType?: string): Promise<Descriptor[] | undefined> {
    const operation = `listing the referrers of ${repository}@${digest}`;
    let url = this.url(`${repository}/referrers/${digest}`);
    if (artifactType !== undefined) url.searchParams.set('artifactType', artifactType);
    const seen = new Set<string>();
    const referrers: Descriptor[] = [];

    for (let page = 1; ; page += 1) {
      seen.add(url.href);
      const call: Call = { method: 'GET', url, scopes: [pullScope(repository)], operation, headers: { accept: OCI_INDEX } };
      const result = await this.retrying(call, async () => {
        const { response, answeredBy } = await this.exchange(call);
        const absent = [400, 404, 405, 501].includes(response.statusCode) || REDIRECT_STATUSES.has(response.statusCode);
        if (absent && page === 1) {
          await discard(response);
          return undefined;
        }
        if (response.statusCode !== 200) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
        const text = (await readLimited(response, MAX_MANIFEST_BYTES, () => this.protocolError('sent a referrers page over 4 MiB', operation))).toString('utf8');
        return { body: parseJson(text), link: header(response, 'link'), filters: header(response, 'oci-filters-applied') };
      });
      if (!result) return undefined;

      let pageReferrers: Descriptor[];
      try {
        const parsed = parseManifest(OCI_INDEX, result.body);
        pageReferrers = parsed.kind === 'index' ? parsed.manifests : [];
      } catch (error) {
        throw this.protocolError(`sent a referrers page that is not an OCI index (${(error as Error).message})`, operation);
      }
      const filtered = artifactType !== undefined && !(result.filters ?? '').split(',').some((filter) => filter.trim() === 'artifactType');
      referrers.push(...(filtered ? pageReferrers.filter((referrer) => referrer.artifactType === artifactType) : pageReferrers));

      const next = parseNextLink(result.link);
      if (next === undefined) return referrers;
      const nextUrl = new URL(next, url);
      if (nextUrl.origin !== this.origin) throw this.protocolError(`linked the next referrers page to another origin (${nextUrl.origin})`, operation);
      if (seen.has(nextUrl.href)) throw this.protocolError(`linked referrers page ${page} back to a page already read`, operation);
      if (page >= DEFAULT_MAX_TAG_PAGES) throw this.protocolError(`has more than ${DEFAULT_MAX_TAG_PAGES} referrers pages`, operation);
      url = nextUrl;
    }
  }

  /**
   * Pushes manifest bytes unchanged, as `putManifest` does, and also returns the `OCI-Subject` header.
   * A registry that has the referrers API sends it when it has indexed the manifest's `subject`, so the
   * pusher need not update the fallback tag (distribution-spec v1.1, "Pushing Manifests with Subject").
   */
  async putManifestWithSubject(
    repository: string,
    reference: string,
    manifest: Pick<Manifest, 'bytes' | 'mediaType'>,
  ): Promise<{ digest: string; subject: string | undefined }> {
    const operation = `pushing manifest ${repository}${separator(reference)}${reference}`;
    const digest = sha256(manifest.bytes);
    const call: Call = {
      method: 'PUT',
      url: this.url(`${repository}/manifests/${reference}`),
      scopes: [pushScope(repository)],
      operation,
      headers: { 'content-type': manifest.mediaType },
      body: manifest.bytes,
    };
    return this.retrying(call, async () => {
      const { response, answeredBy } = await this.exchange(call);
      if (response.statusCode !== 201 && response.statusCode !== 200) throw await sortResponse(response, { registry: this.registry, operation, answeredBy });
      await discard(response);
      const stored = header(response, 'docker-content-digest');
      if (stored && stored.startsWith('sha256:') && stored !== digest) {
        throw new DigestMismatchError(`${this.registry} stored the manifest as ${stored}, but its bytes hash to ${digest}, while ${operation}`);
      }
      return { digest, subject: header(response, 'oci-subject') };
    });
  }
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

export function sha256(bytes: Uint8Array): string {
  return digestOf(bytes, 'sha256');
}

function digestOf(bytes: Uint8Array, algorithm: string): string {
  if (algorithm !== 'sha256' && algorithm !== 'sha512') return `${algorithm}:unsupported`;
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

function separator(reference: string): string {
  return reference.includes(':') ? '@' : ':';
}

/**
 * Releases `permit` once the response body closes: read to its end, dumped or destroyed. Every path of
 * the client does one of these, and `getBlob` hands the body to its caller, who must do the same.
 */
function releaseWhenClosed(response: HttpResponse, permit: GatePermit): void {
  if (response.body.closed) permit.release();
  else response.body.once('close', () => permit.release());
}

/**
 * Body of one chunk of a chunked upload: its bytes, or a function that returns a stream of the chunk's
 * bytes from offset `from` in the blob to the chunk's end, called again after a PATCH failed.
 */
export type ChunkBody = Uint8Array | ((from: number) => HttpBody | Promise<HttpBody>);

/** True when a body can be sent a second time: no body, a string or bytes. A stream is read once. */
function isReplayable(body: HttpBody | undefined): boolean {
  return body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array;
}

/**
 * Returns the values of `Accept`: the comma-joined list first, then each type again on its own line.
 * Servers that read only the first header line get every type, and servers that compare each line as
 * one media type without splitting at commas (older registries and proxies) find theirs.
 */
export function acceptValues(types: readonly string[]): string[] {
  return types.length > 1 ? [types.join(', '), ...types] : [...types];
}

/** Adds `digest` to an upload URL, keeping every parameter it has (such as `_state`) byte for byte. */
export function withDigest(location: URL, digest: string): URL {
  const url = new URL(location);
  const parameter = `digest=${encodeURIComponent(digest)}`;
  url.search = url.search ? `${url.search}&${parameter}` : `?${parameter}`;
  return url;
}

/**
 * Reads the number of stored bytes from an upload's `Range: 0-<last byte>` header.
 * NOTE: distribution 2.8 sends `0-0` both for an empty upload and for one byte, and this reads it as
 * empty. After a failure at byte 1, one byte is then sent twice. The final PUT fails the digest check,
 * and the caller starts the upload again.
 */
export function parseUploadRange(value: string | undefined): number {
  const match = /^(?:bytes=)?0-(\d+)$/.exec(value?.trim() ?? '');
  if (!match) return 0;
  const last = Number(match[1]);
  return last === 0 ? 0 : last + 1;
}

/** Returns the target of the `rel="next"` link of a `Link` header (RFC 8288), or undefined. */
export function parseNextLink(value: string | undefined): string | undefined {
  if (!value) return undefined;
  for (const match of value.matchAll(/<([^>]*)>((?:\s*;\s*[^;,]+)*)/g)) {
    const rel = /;\s*rel\s*=\s*"?([^";,]+)"?/i.exec(match[2] ?? '')?.[1];
    if (rel?.split(/\s+/).includes('next')) return match[1];
  }
  return undefined;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
