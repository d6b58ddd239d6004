/**
 * Error classes with stable codes. Every failure that leaves a module is one of these, so that callers
 * (the worker shell, the CLI, the API) can sort it without parsing messages:
 * - `retryable: true`: the same request may succeed later (rate limit, 5xx, reset connection).
 * - `retryable: false`: the input or the permissions must change first; a job fails at once.
 * Messages never contain credentials: they name the registry, the operation and the answer.
 */

export type ErrorCode =
  | 'INVALID_CONFIG'
  | 'INVALID_INPUT'
  | 'INVALID_REFERENCE'
  | 'ADDRESS_REJECTED'
  | 'REGISTRY_DENIED'
  | 'REGISTRY_NOT_FOUND'
  | 'REGISTRY_RATE_LIMITED'
  | 'REGISTRY_UNAVAILABLE'
  | 'REGISTRY_PROTOCOL'
  | 'REGISTRY_TLS_MISMATCH'
  | 'REGISTRY_DNS_FAILED'
  | 'DIGEST_MISMATCH'
  | 'UNSUPPORTED_MANIFEST'
  | 'MISSING_CHILD'
  | 'TIMEOUT'
  // A producer's wait for a job (`timeoutMs` of mirrorAndWait, wait and the like) ended. The job did not
  // fail and keeps going. TIMEOUT, in contrast, is a job attempt that ran past its own time limit.
  | 'WAIT_TIMEOUT'
  // A lock or a lease expired while its holder worked, so the work stopped; retried.
  | 'LOCK_LOST'
  | 'BUILD_FAILED'
  | 'GIT_FAILED'
  | 'PORT_UNAVAILABLE'
  | 'INTERNAL';

export interface MirrorfleetErrorOptions {
  retryable?: boolean;
  cause?: unknown;
}

/** Base class: a stable `code`, and whether retrying the same request can help. */
export class MirrorfleetError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: MirrorfleetErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
  }

  /** Plain object for job results, JSON output and logs. */
  toJSON(): { code: ErrorCode; message: string; retryable: boolean } {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }
}

/** A configuration key has a value outside what is accepted. Stops the process at start. */
export class ConfigError extends MirrorfleetError {
  constructor(message: string) {
    super('INVALID_CONFIG', message);
  }
}

/** A job payload, CLI argument or API body is invalid. Never retried. */
export class InvalidInputError extends MirrorfleetError {
  constructor(message: string) {
    super('INVALID_INPUT', message);
  }
}

/** An image reference cannot be parsed or breaks the distribution naming rules. */
export class InvalidReferenceError extends MirrorfleetError {
  readonly reference: string;

  constructor(reference: string, reason: string) {
    super('INVALID_REFERENCE', `invalid image reference "${reference}": ${reason}`);
    this.reference = reference;
  }
}

/** A connection to an address that the network policy does not allow. */
export class AddressRejectedError extends MirrorfleetError {
  constructor(message: string) {
    super('ADDRESS_REJECTED', message);
  }
}

/** Details every registry failure carries. `status` is absent for network errors. */
export interface RegistryErrorDetails {
  registry: string;
  operation: string;
  status?: number;
  retryable?: boolean;
  cause?: unknown;
  /** Error codes listed in the response body, such as MANIFEST_BLOB_UNKNOWN. */
  registryCodes?: readonly string[];
}

/** A registry answered with an error, or could not be reached. */
export class RegistryError extends MirrorfleetError {
  readonly registry: string;
  readonly operation: string;
  readonly status: number | undefined;
  readonly registryCodes: readonly string[];

  constructor(code: ErrorCode, message: string, details: RegistryErrorDetails) {
    super(code, message, { retryable: details.retryable ?? false, cause: details.cause });
    this.registry = details.registry;
    this.operation = details.operation;
    this.status = details.status;
    this.registryCodes = details.registryCodes ?? [];
  }
}

/** Bytes whose SHA-256 differs from the digest that named them. */
export class DigestMismatchError extends MirrorfleetError {
  constructor(message: string) {
    // Retryable: a truncated or corrupted transfer is the usual cause, and a new read may be whole.
    super('DIGEST_MISMATCH', message, { retryable: true });
  }
}

/** A manifest type that cannot be copied, such as Docker schema 1. */
export class UnsupportedManifestError extends MirrorfleetError {
  constructor(message: string) {
    super('UNSUPPORTED_MANIFEST', message);
  }
}

/** An index lists a child manifest that the source does not have. */
export class MissingChildError extends MirrorfleetError {
  readonly digest: string;

  constructor(digest: string, message: string) {
    super('MISSING_CHILD', message);
    this.digest = digest;
  }
}

/** Returns true when retrying the operation that threw `error` can help. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof MirrorfleetError) return error.retryable;
  return false;
}

/**
 * A server of this process (metrics, API) cannot listen on its port: another process listens on it, or
 * the port or address is not available to this process. Retrying at once does not help.
 */
export class PortUnavailableError extends MirrorfleetError {
  readonly port: number;

  constructor(port: number, message: string, cause?: unknown) {
    super('PORT_UNAVAILABLE', message, { cause });
    this.port = port;
  }
}
