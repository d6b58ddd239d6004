import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiScope, ApiToken } from '../config/config.ts';
import { registerSecret } from '../log/redact.ts';

/**
 * Bearer tokens of the HTTP API and their scopes. Tokens are kept only as SHA-256 digests and compared
 * in constant time: every configured digest is compared with `timingSafeEqual`, without stopping at the
 * first match, so response times do not reveal how much of a token was right.
 */

/** Outcome of checking a request's credentials against one required scope. */
export type AuthDecision = 'allowed' | 'unauthenticated' | 'forbidden';

interface StoredToken {
  digest: Buffer;
  scopes: ReadonlySet<ApiScope>;
}

export class ApiTokens {
  private readonly tokens: StoredToken[];

  /** Registers every token with the log redactor. */
  constructor(tokens: readonly ApiToken[]) {
    for (const entry of tokens) registerSecret(entry.token);
    this.tokens = tokens.map((entry) => ({ digest: sha256(entry.token), scopes: new Set(entry.scopes) }));
  }

  get size(): number {
    return this.tokens.length;
  }

  /** Returns the scopes of `presented`, or undefined when it matches no configured token. */
  scopesOf(presented: string): ReadonlySet<ApiScope> | undefined {
    const digest = sha256(presented);
    let scopes: ReadonlySet<ApiScope> | undefined;
    for (const candidate of this.tokens) {
      if (timingSafeEqual(candidate.digest, digest)) scopes = candidate.scopes;
    }
    return scopes;
  }

  /**
   * Decides whether an `Authorization` header grants `scope`. Accepts `Bearer TOKEN`, and with
   * `allowBasic` also `Basic` credentials whose password is the token (any user name), which lets a
   * browser open the dashboard.
   */
  authorize(header: string | undefined, scope: ApiScope, options: { allowBasic?: boolean } = {}): AuthDecision {
    const presented = bearerToken(header) ?? (options.allowBasic ? basicPassword(header) : undefined);
    if (presented === undefined) return 'unauthenticated';
    const scopes = this.scopesOf(presented);
    if (scopes === undefined) return 'unauthenticated';
    return scopes.has(scope) ? 'allowed' : 'forbidden';
  }
}

/** Returns the token of an `Authorization: Bearer TOKEN` header (RFC 6750, section 2.1), or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header ?? '');
  return match?.[1];
}

/** Returns the password of an `Authorization: Basic` header (RFC 7617), or undefined. */
export function basicPassword(header: string | undefined): string | undefined {
  const match = /^Basic +([A-Za-z0-9+/]+=*) *$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
