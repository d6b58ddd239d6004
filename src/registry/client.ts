import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { RegistryError, DigestMismatchError, type ErrorCode } from '../errors.ts';
import { redact } from '../log/redact.ts';
import { registryEndpoint } from '../image-ref/reference.ts';
import { Authenticator, type Credentials } from './auth.ts';
import { discard, header, type HttpBody, type HttpRequest, type HttpResponse, type HttpTransport } from './http.ts';
import { ACCEPTED_MANIFEST_TYPES, detectMediaType } from './media-types.ts';

/**
 * A client of one registry's OCI distribution API (distribution-spec v1.1, "spec.md").
 * Each method sorts the answer where the call is made:
 * - an expected miss (404 on a HEAD or GET of something that may not exist) is returned as `undefined`;
 * - 429, 5xx and network errors are retried with jittered exponential backoff, honouring `Retry-After`,
 *   except for requests whose body is a stream, which the caller retries as a whole;
 * - everything else throws a `RegistryError` whose code says whether retrying can help.
 */

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** First backoff delay; each retry doubles it, with full jitter. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** No retry starts after this much time has passed since the first attempt. */
  maxTotalMs: number;
  /** Upper bound on a wait that a `Retry-After` header asks for. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 6,
  baseDelayMs: 250,
  maxDelayMs: 15_000,
  maxTotalMs: 120_000,
  maxRetryAfterMs: 60_000,
};

export interface RegistryClientOptions {
  /** Normalised registry name, such as `docker.io` or `127.0.0.1:5000`. */
  registry: string;
  /** Plain HTTP instead of HTTPS. */
  insecure?: boolean;
  credentials?: Credentials;
  transport: HttpTransport;
  retry?: Partial<RetryPolicy>;
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
  /** Bytes the body will carry (the whole blob, or the rest of it after `offset`). */
  size: number;
}

export type UploadStart = { mounted: true } | { mounted: false; location: URL };

// Distribution refuses manifests over 4 MiB; reading more than that is never needed.
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_REDIRECTS = 5;

interface Call {
  method: HttpRequest['method'];
  url: URL;
  /** Token scopes this request needs, such as `repository:library/bash:pull`. */
  scopes: string[];
  /** What is being done, for error messages: `reading manifest library/bash:5.3`. */
  operation: string;
  headers?: Record<string, string | string[]>;
  body?: HttpBody;
}

export class RegistryClient {
  readonly registry: string;
  private readonly baseUrl: string;
  private readonly transport: HttpTransport;
  private readonly auth: Authenticator;
  private readonly retry: RetryPolicy;

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    this.baseUrl = `${options.insecure ? 'http' : 'https'}://${registryEndpoint(options.registry)}`;
    this.transport = options.transport;
    this.auth = new Authenticator(options.transport, options.registry, options.credentials);
    this.retry = { ...DEFAULT_RETRY_POLICY, ...options.retry };
  }

  /** Reads a manifest by tag or digest; undefined when the registry has no such manifest. */
  async getManifest(repository: string, reference: string): Promise<Manifest | undefined> {
    const operation = `reading manifest ${repository}${separator(reference)}${reference}`;
    const response = await this.call({
      method: 'GET',
      url: this.url(`${repository}/manifests/${reference}`),
      scopes: [pullScope(repository)],
      operation,
      headers: { accept: ACCEPTED_MANIFEST_TYPES.join(', ') },
    });
    if (response.statusCode === 404) {
      await discard(response);
      return undefined;
    }
    if (response.statusCode !== 200) throw await this.failure(response, operation);

    const bytes = await readLimited(response, MAX_MANIFEST_BYTES, () => `${this.registry} sent a manifest over 4 MiB while ${operation}`);
    const digest = sha256(bytes);
    if (reference.startsWith('sha256:') && reference !== digest) {
      throw new DigestMismatchError(`${this.registry} returned a manifest whose digest is ${digest} while ${operation}`);
    }
    const declared = header(response, 'docker-content-digest');
    if (declared && declared.startsWith('sha256:') && declared !== digest) {
      throw new DigestMismatchError(
        `${this.registry} declared Docker-Content-Digest ${declared} but the bytes hash to ${digest} while ${operation}`,
      );
    }
    let body: unknown;
    try {
      body = JSON.parse(bytes.toString('utf8'));
    } catch {
      throw new RegistryError('REGISTRY_PROTOCOL', `${this.registry} returned a manifest that is not JSON while ${operation}`, {
        registry: this.registry,
        operation,
      });
    }
    const mediaType = detectMediaType(header(response, 'content-type'), body);
    if (!mediaType) {
      throw new RegistryError('REGISTRY_PROTOCOL', `${this.registry} returned a manifest of unknown type while ${operation}`, {
        registry: this.registry,
        operation,
      });
    }
    return { bytes, mediaType, digest };
  }

  /**
   * Checks a manifest with HEAD. A HEAD that answers 404, 405 or 406 is confirmed with a GET, because
   * some registries answer HEAD differently from GET; undefined means the GET found nothing either.
   */
  async headManifest(repository: string, reference: string): Promise<ManifestHead | undefined> {
    const operation = `checking manifest ${repository}${separator(reference)}${reference}`;
    const response = await this.call({
      method: 'HEAD',
      url: this.url(`${repository}/manifests/${reference}`),
      scopes: [pullScope(repository)],
      operation,
      headers: { accept: ACCEPTED_MANIFEST_TYPES.join(', ') },
    });
    await discard(response);
    const digest = header(response, 'docker-content-digest');
    if (response.statusCode === 200 && digest) {
      const length = header(response, 'content-length');
      return { digest, mediaType: header(response, 'content-type')?.split(';')[0], size: length ? Number(length) : undefined };
    }
    if (response.statusCode === 200 || response.statusCode === 404 || response.statusCode === 405 || response.statusCode === 406) {
      const manifest = await this.getManifest(repository, reference);
      return manifest && { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.bytes.length };
    }
    throw await this.failure(response, operation);
  }

  /** Pushes manifest bytes unchanged, with their own media type as Content-Type. Returns their digest. */
  async putManifest(repository: string, reference: string, manifest: Pick<Manifest, 'bytes' | 'mediaType'>): Promise<string> {
    const operation = `pushing manifest ${repository}${separator(reference)}${reference}`;
    const response = await this.call({
      method: 'PUT',
      url: this.url(`${repository}/manifests/${reference}`),
      scopes: [pushScope(repository)],
      operation,
      headers: { 'content-type': manifest.mediaType },
      body: manifest.bytes,
    });
    if (response.statusCode !== 201 && response.statusCode !== 200) throw await this.failure(response, operation);
    await discard(response);
    return sha256(manifest.bytes);
  }

  /** Returns the size of a blob in `repository`, or undefined when the repository does not have it. */
  async headBlob(repository: string, digest: string): Promise<number | undefined> {
    const operation = `checking blob ${digest} in ${repository}`;
    const response = await this.followRedirects({
      method: 'HEAD',
      url: this.url(`${repository}/blobs/${digest}`),
      scopes: [pullScope(repository)],
      operation,
    });
    await discard(response);
    if (response.statusCode === 404) return undefined;
    if (response.statusCode !== 200) throw await this.failure(response, operation);
    const length = header(response, 'content-length');
    return length === undefined ? 0 : Number(length);
  }

  /** Opens a blob for streaming, from `offset` on when given (a Range request). */
  async getBlob(repository: string, digest: string, offset = 0): Promise<BlobStream> {
    const operation = `reading blob ${digest} from ${repository}`;
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const response = await this.followRedirects({
      method: 'GET',
      url: this.url(`${repository}/blobs/${digest}`),
      scopes: [pullScope(repository)],
      operation,
      headers,
    });
    const expected = offset > 0 ? 206 : 200;
    if (response.statusCode !== expected) throw await this.failure(response, operation);
    const length = header(response, 'content-length');
    return { stream: response.body, size: length === undefined ? -1 : Number(length) };
  }

  /**
   * Starts an upload session. With `mount`, asks for a cross-repository mount first: only 201 counts as
   * mounted; a 202 is an ordinary upload session to use instead.
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
    const response = await this.call({ method: 'POST', url, scopes, operation, headers: { 'content-length': '0' } });
    if (mount && response.statusCode === 201) {
      await discard(response);
      return { mounted: true };
    }
    if (response.statusCode !== 202) throw await this.failure(response, operation);
    await discard(response);
    return { mounted: false, location: this.uploadLocation(response, url, operation) };
  }

  /** Uploads a whole blob in the final PUT of a session. `body` must carry exactly `size` bytes. */
  async uploadMonolithic(repository: string, location: URL, digest: string, body: HttpBody, size: number): Promise<void> {
    const operation = `uploading blob ${digest} to ${repository}`;
    const response = await this.call({
      method: 'PUT',
      url: withDigest(location, digest),
      scopes: [pushScope(repository)],
      operation,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body,
    });
    if (response.statusCode !== 201) throw await this.failure(response, operation);
    await discard(response);
  }

  /** Sends one chunk of a chunked upload; returns the Location for the next request. */
  async uploadChunk(repository: string, location: URL, body: HttpBody, offset: number, length: number): Promise<URL> {
    const operation = `uploading bytes ${offset}-${offset + length - 1} to ${repository}`;
    const response = await this.call({
      method: 'PATCH',
      url: location,
      scopes: [pushScope(repository)],
      operation,
      headers: {
        // distribution 2.8 answers 500 to a PATCH with any other Content-Type.
        'content-type': 'application/octet-stream',
        'content-length': String(length),
        'content-range': `${offset}-${offset + length - 1}`,
      },
      body,
    });
    if (response.statusCode !== 202) throw await this.failure(response, operation);
    await discard(response);
    return this.uploadLocation(response, location, operation);
  }

  /** Closes a chunked upload with the final empty PUT. */
  async finishUpload(repository: string, location: URL, digest: string): Promise<void> {
    await this.uploadMonolithic(repository, location, digest, null, 0);
  }

  /** Deletes a manifest by digest. Returns false when it was already gone. */
  async deleteManifest(repository: string, digest: string): Promise<boolean> {
    const operation = `deleting manifest ${repository}@${digest}`;
    const response = await this.call({
      method: 'DELETE',
      url: this.url(`${repository}/manifests/${digest}`),
      scopes: [`repository:${repository}:delete`],
      operation,
    });
    await discard(response);
    if (response.statusCode === 404) return false;
    if (response.statusCode !== 202 && response.statusCode !== 200) throw await this.failure(response, operation);
    return true;
  }

  private url(path: string): URL {
    return new URL(`${this.baseUrl}/v2/${path}`);
  }

  /** Resolves an upload `Location` against the URL of the request that returned it. */
  private uploadLocation(response: HttpResponse, requestUrl: URL, operation: string): URL {
    const location = header(response, 'location');
    if (!location) {
      throw new RegistryError('REGISTRY_PROTOCOL', `${this.registry} sent no upload Location while ${operation}`, {
        registry: this.registry,
        operation,
      });
    }
    return new URL(location, requestUrl);
  }

  /** Sends a GET or HEAD, following redirects; credentials are sent only to the registry's own origin. */
  private async followRedirects(call: Call): Promise<HttpResponse> {
    let current = call;
    for (let hop = 0; ; hop += 1) {
      const response = current.url.origin === this.baseUrl ? await this.call(current) : await this.callForeign(current);
      const location = header(response, 'location');
      if (response.statusCode < 300 || response.statusCode >= 400 || response.statusCode === 304 || !location) return response;
      await discard(response);
      if (hop >= MAX_REDIRECTS) {
        throw new RegistryError('REGISTRY_PROTOCOL', `${this.registry} redirected more than ${MAX_REDIRECTS} times while ${call.operation}`, {
          registry: this.registry,
          operation: call.operation,
        });
      }
      current = { ...current, url: new URL(location, current.url) };
    }
  }

  /** Sends a request to another origin (a redirect target such as a storage bucket), without credentials. */
  private async callForeign(call: Call): Promise<HttpResponse> {
    return this.withRetries(call, () =>
      this.transport.send({ method: call.method, url: call.url, headers: call.headers ?? {}, registry: this.registry }),
    );
  }

  /** Sends a request with authorization, answering one 401 challenge, with retries for transient failures. */
  private async call(call: Call): Promise<HttpResponse> {
    let challengeAnswered = false;
    return this.withRetries(call, async () => {
      for (;;) {
        const headers: Record<string, string | string[]> = { ...call.headers };
        const authorization = await this.auth.authorization(call.scopes);
        if (authorization) headers.authorization = authorization;
        const response = await this.transport.send({ method: call.method, url: call.url, headers, body: call.body ?? null, registry: this.registry });
        if (response.statusCode !== 401 || challengeAnswered || isStream(call.body)) return response;
        challengeAnswered = true;
        const canRetry = await this.auth.onUnauthorized(header(response, 'www-authenticate'), call.scopes);
        if (!canRetry) return response;
        await discard(response);
      }
    });
  }

  private async withRetries(call: Call, attempt: () => Promise<HttpResponse>): Promise<HttpResponse> {
    const started = Date.now();
    const retryable = !isStream(call.body);
    for (let attemptNumber = 1; ; attemptNumber += 1) {
      let response: HttpResponse | undefined;
      let networkError: unknown;
      try {
        response = await attempt();
      } catch (error) {
        if (error instanceof RegistryError) throw error;
        networkError = error;
      }
      const transient = response === undefined || response.statusCode === 429 || (response.statusCode >= 500 && response.statusCode !== 501);
      if (!transient) return response!;

      const waitMs = this.backoff(attemptNumber, response);
      const elapsed = Date.now() - started;
      const spent = !retryable || attemptNumber >= this.retry.maxAttempts || elapsed + waitMs > this.retry.maxTotalMs;
      if (spent) {
        const summary = `${attemptNumber} attempt${attemptNumber === 1 ? '' : 's'} over ${Math.round(elapsed / 1000)} s`;
        if (response === undefined) {
          const reason = networkError instanceof Error ? networkError.message : String(networkError);
          throw new RegistryError('REGISTRY_UNAVAILABLE', redact(`cannot reach ${this.registry} while ${call.operation}: ${reason}; ${summary}`), {
            registry: this.registry,
            operation: call.operation,
            retryable: true,
            cause: networkError,
          });
        }
        if (!retryable) return response;
        throw await this.failure(response, call.operation, summary);
      }
      if (response) await discard(response);
      await sleep(waitMs);
    }
  }

  private backoff(attemptNumber: number, response: HttpResponse | undefined): number {
    const retryAfter = response ? parseRetryAfter(header(response, 'retry-after')) : undefined;
    if (retryAfter !== undefined) return Math.min(retryAfter, this.retry.maxRetryAfterMs);
    const ceiling = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attemptNumber - 1));
    return Math.round(Math.random() * ceiling);
  }

  /** Turns an unexpected answer into a RegistryError, reading the registry's error body for its code and message. */
  private async failure(response: HttpResponse, operation: string, attempts?: string): Promise<RegistryError> {
    const status = response.statusCode;
    const detail = await errorDetail(response);
    let code: ErrorCode;
    let advice = '';
    if (status === 401 || status === 403) {
      code = 'REGISTRY_DENIED';
      advice = `; check the credentials for ${this.registry}`;
    } else if (status === 404) {
      code = 'REGISTRY_NOT_FOUND';
    } else if (status === 429) {
      code = 'REGISTRY_RATE_LIMITED';
    } else if (status >= 500) {
      code = 'REGISTRY_UNAVAILABLE';
    } else {
      code = 'REGISTRY_PROTOCOL';
    }
    const verb = code === 'REGISTRY_RATE_LIMITED' ? `rate-limited by ${this.registry}` : `${this.registry} answered ${status}${detail}`;
    const message = redact(`${verb} while ${operation}${attempts ? `; ${attempts}` : ''}${advice}`);
    return new RegistryError(code, message, {
      registry: this.registry,
      operation,
      status,
      retryable: code === 'REGISTRY_RATE_LIMITED' || code === 'REGISTRY_UNAVAILABLE',
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
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function separator(reference: string): string {
  return reference.includes(':') ? '@' : ':';
}

function isStream(body: HttpBody | undefined): boolean {
  return body !== undefined && body !== null && typeof body !== 'string' && !(body instanceof Uint8Array);
}

/** Adds `digest` to an upload URL, keeping every parameter it has (such as `_state`) byte for byte. */
export function withDigest(location: URL, digest: string): URL {
  const url = new URL(location);
  const parameter = `digest=${encodeURIComponent(digest)}`;
  url.search = url.search ? `${url.search}&${parameter}` : `?${parameter}`;
  return url;
}

/** Parses `Retry-After` as seconds or as an HTTP date; returns milliseconds to wait. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

async function readLimited(response: HttpResponse, limit: number, tooLarge: () => string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response.body) {
    total += (chunk as Buffer).length;
    if (total > limit) {
      response.body.destroy();
      throw new Error(tooLarge());
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Reads a registry error body (`{"errors":[{"code","message"}]}` per the spec, or plain text) into a short suffix. */
async function errorDetail(response: HttpResponse): Promise<string> {
  let text: string;
  try {
    text = (await readLimited(response, 8192, () => 'too large')).toString('utf8');
  } catch {
    return '';
  }
  try {
    const parsed = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    const first = parsed.errors?.[0];
    if (first) return ` ${first.code ?? ''}${first.message ? ` (${first.message})` : ''}`.trimEnd();
  } catch {
    // Plain-text error bodies exist (for example on 429 from some proxies).
  }
  const line = text.trim().split('\n')[0]?.slice(0, 200);
  return line ? ` (${line})` : '';
}
