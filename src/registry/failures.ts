import { RegistryError, type ErrorCode } from '../errors.ts';
import { redact } from '../log/redact.ts';
import { header, type HttpResponse } from './http.ts';
import { parseRetryAfter, TransientResponse } from './retry.ts';

/**
 * Sorting of unexpected registry responses, done where the HTTP call is made:
 * - transient (a TransientResponse, which the client retries): 429, and 5xx other than 501 unless the
 *   error body names a permanent error code;
 * - permanent (a RegistryError with `retryable: false`): everything else. 401 and 403 become
 *   REGISTRY_DENIED, 404 REGISTRY_NOT_FOUND, a 400 whose body reports a plain-HTTP request on an HTTPS
 *   port REGISTRY_TLS_MISMATCH, the rest REGISTRY_PROTOCOL.
 * Expected misses (a 404 for something that may not exist) never reach this module: each client method
 * returns them as a value.
 */

/**
 * Error codes of the distribution specification (spec.md, "Error Codes") and of Docker's registry that
 * describe the request, not the moment. distribution 2.8.2 responds 500 to a manifest with a foreign
 * layer URL, with the codes UNKNOWN and MANIFEST_BLOB_UNKNOWN in the body. Another attempt gets the
 * same response, so a 5xx that names one of these codes is permanent.
 */
const PERMANENT_ERROR_CODES = new Set([
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'MANIFEST_UNVERIFIED',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'TAG_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
]);

const MAX_ERROR_BODY_BYTES = 8192;
const MAX_DETAIL_CHARACTERS = 300;

/** Content of an error response body: a suffix for messages and the registry error codes it lists. */
export interface ErrorDetail {
  /** ` CODE (message), CODE (message)` or ` (first line of a text body)`, or '' for an empty body. */
  text: string;
  codes: string[];
}

export interface ResponseContext {
  registry: string;
  operation: string;
  /** Name of the responder in messages. Default: the registry name. */
  answeredBy?: string;
}

/**
 * Reads the body of an unexpected response and sorts it: returns a TransientResponse for the client to
 * retry, or a permanent RegistryError to throw.
 */
export async function sortResponse(response: HttpResponse, context: ResponseContext): Promise<TransientResponse | RegistryError> {
  const status = response.statusCode;
  const detail = await readErrorDetail(response);
  const answeredBy = context.answeredBy ?? context.registry;
  if (isTransientStatus(status, detail.codes)) {
    return new TransientResponse(status, answeredBy, detail.text, parseRetryAfter(header(response, 'retry-after')));
  }
  return permanentError(status, detail.text, context, detail.codes);
}

/** Returns true for 429, and for a 5xx other than 501 whose body lists no permanent error code. */
export function isTransientStatus(status: number, codes: readonly string[] = []): boolean {
  if (status === 429) return true;
  if (status < 500 || status === 501) return false;
  return !codes.some((code) => PERMANENT_ERROR_CODES.has(code));
}

/** Builds the RegistryError for a response that another attempt cannot change. */
export function permanentError(status: number, detail: string, context: ResponseContext, registryCodes: readonly string[] = []): RegistryError {
  const { registry, operation } = context;
  let code: ErrorCode = 'REGISTRY_PROTOCOL';
  let advice = '';
  if (status === 401 || status === 403) {
    code = 'REGISTRY_DENIED';
    advice = `; check the credentials for ${registry} and what they may access`;
  } else if (status === 404) {
    code = 'REGISTRY_NOT_FOUND';
  } else if (status === 400 && /HTTP request to an HTTPS server/i.test(detail)) {
    // Go's net/http, and so distribution, sends this body to a plain-HTTP request on a TLS port.
    code = 'REGISTRY_TLS_MISMATCH';
    advice = `; ${registry} serves HTTPS, so remove it from MIRRORFLEET_INSECURE_REGISTRIES`;
  }
  const message = redact(`${context.answeredBy ?? registry} answered ${status}${detail} while ${operation}${advice}`);
  return new RegistryError(code, message, { registry, operation, status, retryable: false, registryCodes });
}

/** Reads at most `limit` bytes of a body; throws the error from `tooLarge` when there are more. */
export async function readLimited(response: HttpResponse, limit: number, tooLarge: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response.body) {
    total += (chunk as Buffer).length;
    if (total > limit) {
      response.body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Reads an error body: the specification's `{"errors":[{"code","message"}]}`, another JSON object with
 * a `message` or `error` string, or plain text (some proxies send a 429 with text or HTML).
 */
export async function readErrorDetail(response: HttpResponse): Promise<ErrorDetail> {
  let text: string;
  try {
    text = (await readLimited(response, MAX_ERROR_BODY_BYTES, () => new Error('error body too large'))).toString('utf8').trim();
  } catch {
    return { text: '', codes: [] };
  }
  if (text === '') return { text: '', codes: [] };

  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    const line = text.split('\n')[0]!.slice(0, MAX_DETAIL_CHARACTERS);
    return { text: ` (${line})`, codes: [] };
  }

  const entries = isRecord(parsed) && Array.isArray(parsed.errors) ? parsed.errors.filter(isRecord) : [];
  if (entries.length > 0) {
    const codes = entries.flatMap((entry) => (typeof entry.code === 'string' ? [entry.code] : []));
    const parts = new Set(
      entries.map((entry) => {
        const code = typeof entry.code === 'string' ? entry.code : 'UNKNOWN';
        return typeof entry.message === 'string' && entry.message !== '' ? `${code} (${entry.message})` : code;
      }),
    );
    return { text: ` ${[...parts].slice(0, 3).join(', ').slice(0, MAX_DETAIL_CHARACTERS)}`, codes };
  }
  if (isRecord(parsed)) {
    const message = typeof parsed.message === 'string' ? parsed.message : typeof parsed.error === 'string' ? parsed.error : undefined;
    if (message) return { text: ` (${message.slice(0, MAX_DETAIL_CHARACTERS)})`, codes: [] };
  }
  return { text: ` (${text.split('\n')[0]!.slice(0, MAX_DETAIL_CHARACTERS)})`, codes: [] };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
