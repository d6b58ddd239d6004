import { setTimeout as sleep } from 'node:timers/promises';
import { currentRateLimitListener } from '../ratelimit/waits.ts';
import { InvalidInputError, MirrorfleetError, RegistryError } from '../errors.ts';
import { redact } from '../log/redact.ts';

/**
 * When and how long the registry client waits before it sends a failed request again.
 *
 * Only transient failures are retried: a 429, a 5xx other than 501 whose error body names no permanent
 * error code, a connection that broke, and the same from a token service. Waits grow exponentially with
 * full jitter ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015), a `Retry-After` header
 * replaces the computed wait up to `maxRetryAfterMs`, and both the number of attempts and the time since
 * the first attempt are bounded.
 */

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** Ceiling of the first wait in milliseconds; each later wait doubles the ceiling, up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** No retry starts when its wait would end later than this many milliseconds after the first attempt. */
  maxTotalMs: number;
  /** Maximum wait taken from a `Retry-After` header, in milliseconds. A longer one is cut to this. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 6,
  baseDelayMs: 250,
  maxDelayMs: 15_000,
  maxTotalMs: 120_000,
  maxRetryAfterMs: 60_000,
};

/** One retry about to happen, for metrics and logs (inner code does not log). */
export interface RetryEvent {
  registry: string;
  operation: string;
  /** Number of the attempt that just failed, 1 for the first. */
  attempt: number;
  /** Milliseconds the client waits before the next attempt. */
  waitMs: number;
  /** Cause of the failure: an HTTP status such as `503`, or a network error code such as `ECONNRESET`. */
  reason: string;
}

/**
 * Merges `overrides` into the default policy.
 * @throws InvalidInputError naming the first field that is not a non-negative integer (positive for `maxAttempts`).
 */
export function resolveRetryPolicy(overrides: Partial<RetryPolicy> = {}): RetryPolicy {
  const policy = { ...DEFAULT_RETRY_POLICY, ...overrides };
  for (const [field, value] of Object.entries(policy)) {
    const minimum = field === 'maxAttempts' ? 1 : 0;
    if (!Number.isSafeInteger(value) || value < minimum) {
      throw new InvalidInputError(`invalid retry.${field}: ${String(value)}; expected an integer of at least ${minimum}`);
    }
  }
  return policy;
}

/** Returns the wait before attempt `failedAttempt + 1`: a random share of the doubled ceiling ("full jitter"). */
export function backoffDelay(policy: RetryPolicy, failedAttempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (failedAttempt - 1));
  return Math.round(random() * ceiling);
}

/** Parses `Retry-After` as seconds or as an HTTP date (RFC 9110, section 10.2.3); returns milliseconds to wait. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * A 429 or 5xx response that another attempt may cure. It is control flow inside the registry client
 * and never leaves it, because a spent retry budget turns it into a RegistryError.
 */
export class TransientResponse extends Error {
  readonly status: number;
  /** Name of the responder in messages: the registry, its token service, or a host it redirected to. */
  readonly answeredBy: string;
  /** Registry error code and message from the body, as ` CODE (message)`, or ''. */
  readonly detail: string;
  readonly retryAfterMs: number | undefined;

  constructor(status: number, answeredBy: string, detail: string, retryAfterMs: number | undefined) {
    super(`${answeredBy} answered ${status}${detail}`);
    this.status = status;
    this.answeredBy = answeredBy;
    this.detail = detail;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * Kind of registry request. Each kind has a concurrency window of its own, so that slow blob transfers
 * do not hold back manifest reads. Tag lists count as manifest reads, and every write (blob uploads,
 * manifest pushes, deletions) counts as an upload.
 */
export type RequestKind = 'manifest-read' | 'blob-read' | 'upload';

export const REQUEST_KINDS: readonly RequestKind[] = ['manifest-read', 'blob-read', 'upload'];

/** One request about to be sent, as a request gate receives it. */
export interface GateRequest {
  registry: string;
  kind: RequestKind;
  method: string;
  /** Description of the operation for error messages, such as `reading manifest library/bash:5.3`. */
  operation: string;
  /**
   * Sends a HEAD for the same manifest and returns its response headers. Docker Hub counts a manifest
   * GET as a pull and a HEAD as none, so a gate that pauses pulls reads the remaining quota again
   * through this. Set on manifest GETs only, the requests that spend pull quota.
   */
  probe?: () => Promise<Readonly<Record<string, string | string[] | undefined>>>;
}

/** Outcome of one request: its response headers, or the failure that left it without any. */
export interface RequestOutcome {
  /** HTTP status, or undefined when no response arrived (a network error). */
  status: number | undefined;
  /** Milliseconds from the moment the gate let the request go to its response headers. */
  latencyMs: number;
  /** Wait that a `Retry-After` header asked for, in milliseconds. */
  retryAfterMs: number | undefined;
  /** Response headers by lowercase name; empty without a response. */
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** Permission to send one request. The client calls `report` once and `release` once. */
export interface GatePermit {
  /** Reports the outcome as soon as the response headers arrive or the request fails. */
  report(outcome: RequestOutcome): Promise<void>;
  /** Frees the request's place once its response body is read or dropped. */
  release(): void;
}

/**
 * Decides when the registry client may send a request, so that a fleet of clients shares one budget
 * per registry. The client calls `acquire` before each attempt and waits for the permit it returns.
 * @throws RegistryError (REGISTRY_RATE_LIMITED, retryable) from `acquire` when the wait would be too long.
 */
export interface RequestGate {
  acquire(request: GateRequest): Promise<GatePermit>;
}

/** Returns the kind of a request from its method and its path under `/v2/`. */
export function requestKind(method: string, url: URL): RequestKind {
  const path = url.pathname;
  if (method !== 'GET' && method !== 'HEAD') return 'upload';
  if (path.includes('/blobs/uploads/')) return 'upload';
  if (path.includes('/blobs/')) return 'blob-read';
  return 'manifest-read';
}

export interface RetryContext {
  registry: string;
  operation: string;
  /** Kind of the request, for the rate-limit waits reported to the running job. */
  kind: RequestKind;
  policy: RetryPolicy;
  onRetry?: ((event: RetryEvent) => void) | undefined;
}

/**
 * Counts the attempts of one operation and decides after each transient failure whether to wait and
 * try again or to give up. The token requests of an attempt count as part of it.
 */
export class RetryBudget {
  private readonly context: RetryContext;
  private readonly started = Date.now();
  private failures = 0;

  constructor(context: RetryContext) {
    this.context = context;
  }

  /**
   * Records a failed attempt. Waits and returns when another attempt fits the policy; otherwise throws
   * the RegistryError that describes the last failure and the attempts made.
   * @param failure a TransientResponse or a network error (see `isNetworkError`).
   * @param replayable false when the request body was a stream that cannot be sent again.
   */
  async retryAfter(failure: unknown, replayable = true): Promise<void> {
    this.failures += 1;
    const { policy } = this.context;
    const waitMs = this.waitFor(failure);
    const elapsed = Date.now() - this.started;
    if (!replayable || this.failures >= policy.maxAttempts || elapsed + waitMs > policy.maxTotalMs) {
      throw this.giveUp(failure, elapsed);
    }
    this.context.onRetry?.({
      registry: this.context.registry,
      operation: this.context.operation,
      attempt: this.failures,
      waitMs,
      reason: failure instanceof TransientResponse ? String(failure.status) : networkErrorCode(failure),
    });
    // A wait that the registry asked for (429, or Retry-After) shows in the running job's progress.
    const askedByRegistry = failure instanceof TransientResponse && (failure.status === 429 || failure.retryAfterMs !== undefined);
    const listener = askedByRegistry ? currentRateLimitListener() : undefined;
    const wait = { registry: this.context.registry, kind: this.context.kind, reason: 'not-before' as const };
    listener?.({ ...wait, phase: 'start', waitMs });
    await sleep(waitMs);
    listener?.({ ...wait, phase: 'end', waitMs });
  }

  private waitFor(failure: unknown): number {
    const { policy } = this.context;
    if (failure instanceof TransientResponse && failure.retryAfterMs !== undefined) {
      return Math.min(failure.retryAfterMs, policy.maxRetryAfterMs);
    }
    return backoffDelay(policy, this.failures);
  }

  private giveUp(failure: unknown, elapsedMs: number): RegistryError {
    const { registry, operation } = this.context;
    const summary = `${this.failures} attempt${this.failures === 1 ? '' : 's'} over ${Math.round(elapsedMs / 1000)} s`;

    if (failure instanceof TransientResponse) {
      const rateLimited = failure.status === 429;
      const message = rateLimited
        ? `rate-limited by ${failure.answeredBy} while ${operation}; ${summary}; last answer: 429${failure.detail}`
        : `${failure.answeredBy} answered ${failure.status}${failure.detail} while ${operation}; ${summary}`;
      return new RegistryError(rateLimited ? 'REGISTRY_RATE_LIMITED' : 'REGISTRY_UNAVAILABLE', redact(message), {
        registry,
        operation,
        status: failure.status,
        retryable: true,
      });
    }

    const reason = failure instanceof Error ? failure.message : String(failure);
    if (networkErrorCode(failure) === 'EAI_AGAIN') {
      const host = failedHostname(failure) ?? registry;
      const message = `cannot resolve ${host} while ${operation}: the DNS lookup failed temporarily (EAI_AGAIN); ${summary}; check that this machine's DNS resolver answers`;
      return new RegistryError('REGISTRY_DNS_FAILED', redact(message), { registry, operation, retryable: true, cause: failure });
    }
    return new RegistryError('REGISTRY_UNAVAILABLE', redact(`cannot reach ${registry} while ${operation}: ${reason}; ${summary}`), {
      registry,
      operation,
      retryable: true,
      cause: failure,
    });
  }
}

// Error codes of a connection that broke or could not be opened, from Node's net module and undici.
// A new attempt on a new connection may succeed. DNS failures other than EAI_AGAIN are not in the list,
// because a name that does not resolve will not resolve a second later either.
const NETWORK_ERROR_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/**
 * Returns true for an error of a broken or refused connection, which a new connection may not repeat.
 * A MirrorfleetError is never one, even when its cause is: it has already been sorted.
 */
export function isNetworkError(error: unknown): boolean {
  return networkErrorCode(error) !== 'unknown';
}

function networkErrorCode(error: unknown): string {
  if (error instanceof MirrorfleetError) return 'unknown';
  // undici sometimes wraps the socket error, so the code can sit one or two causes down.
  for (let current = error, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth += 1) {
    const code = (current as NodeJS.ErrnoException).code;
    if (code !== undefined && NETWORK_ERROR_CODES.has(code)) return code;
  }
  return 'unknown';
}

// TLS errors of a client whose server replied in plain text: OpenSSL 3 reads the start of an HTTP
// response ("HTTP/1.1 400") as a TLS record of an unknown version, or of an impossible length.
const PLAIN_HTTP_TLS_CODES = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG']);

export interface ConnectionFailureContext {
  registry: string;
  operation: string;
}

/**
 * Sorts a failure to open a connection that another attempt cannot cure, and returns a RegistryError
 * for it; returns any other error unchanged.
 * - A name that does not exist (ENOTFOUND) becomes REGISTRY_DNS_FAILED, not retryable: the usual cause
 *   is a mistyped host, which a later attempt meets again. A temporary failure (EAI_AGAIN) is a network
 *   error instead, retried by the client and then sorted by RetryBudget.
 * - A TLS handshake that gets a plain-HTTP reply becomes REGISTRY_TLS_MISMATCH, not retryable: the registry
 *   serves plain HTTP and must be listed in MIRRORFLEET_INSECURE_REGISTRIES.
 */
export function sortConnectionFailure(error: unknown, context: ConnectionFailureContext): unknown {
  if (error instanceof MirrorfleetError) return error;
  const { registry, operation } = context;
  for (let current = error, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth += 1) {
    const code = (current as NodeJS.ErrnoException).code ?? '';
    if (code === 'ENOTFOUND') {
      const host = failedHostname(current) ?? registry;
      const message = `cannot resolve ${host} while ${operation}: the name does not exist in DNS (ENOTFOUND); check the host name in the image reference or the configuration`;
      return new RegistryError('REGISTRY_DNS_FAILED', redact(message), { registry, operation, retryable: false, cause: error });
    }
    if (PLAIN_HTTP_TLS_CODES.has(code) || /wrong version number/i.test(current.message)) {
      const message =
        `cannot connect to ${registry} over HTTPS while ${operation}: it answered in plain HTTP (${code || 'wrong version number'}); ` +
        `if ${registry} serves plain HTTP, add it to MIRRORFLEET_INSECURE_REGISTRIES`;
      return new RegistryError('REGISTRY_TLS_MISMATCH', redact(message), { registry, operation, retryable: false, cause: error });
    }
  }
  return error;
}

/** Returns the host name that a DNS error names (Node sets `hostname` on getaddrinfo errors), if any. */
function failedHostname(error: unknown): string | undefined {
  for (let current = error, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth += 1) {
    const hostname = (current as { hostname?: unknown }).hostname;
    if (typeof hostname === 'string' && hostname !== '') return hostname;
  }
  return undefined;
}
