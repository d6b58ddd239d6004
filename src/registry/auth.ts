import { RegistryError } from '../errors.ts';
import { registerSecret } from '../log/redact.ts';
import { discard, type HttpTransport } from './http.ts';

/**
 * Registry authentication: parses `WWW-Authenticate` challenges and produces the `Authorization`
 * header for a set of scopes. Bearer tokens are cached per scope set until shortly before they expire.
 * Token requests only ever go to the realm named by the registry's own challenge, with scopes of that
 * registry, so no cross-registry scope leaks to another token service.
 * Reference: the distribution token authentication specification (docs/spec/auth/token.md).
 */

export interface Credentials {
  username: string;
  password: string;
}

export interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

/** Parses a `WWW-Authenticate` value. Returns undefined for schemes other than Basic and Bearer. */
export function parseChallenge(value: string | undefined): Challenge | undefined {
  if (!value) return undefined;
  const match = /^\s*(\w+)\s*(.*)$/s.exec(value);
  if (!match) return undefined;
  const scheme = match[1]!.toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined;
  const params: Record<string, string> = {};
  // key="quoted, value" or key=token, separated by commas.
  const paramPattern = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g;
  for (const param of match[2]!.matchAll(paramPattern)) {
    params[param[1]!.toLowerCase()] = param[2] !== undefined ? param[2].replace(/\\(.)/g, '$1') : param[3]!;
  }
  return { scheme, params };
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

// A token is refreshed this long before its stated expiry so it does not lapse mid-request.
const EXPIRY_MARGIN_MS = 10_000;
// The token specification says a token without expires_in lasts 60 seconds.
const DEFAULT_TOKEN_SECONDS = 60;

export class Authenticator {
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();

  private readonly transport: HttpTransport;
  private readonly registry: string;
  private readonly credentials: Credentials | undefined;

  constructor(transport: HttpTransport, registry: string, credentials: Credentials | undefined) {
    this.transport = transport;
    this.registry = registry;
    this.credentials = credentials;
    if (credentials) {
      registerSecret(credentials.password);
      registerSecret(basicValue(credentials));
    }
  }

  /** Returns the Authorization header for `scopes`, or undefined when no challenge has been seen yet. */
  async authorization(scopes: string[]): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') return this.credentials ? `Basic ${basicValue(this.credentials)}` : undefined;
    const key = scopeKey(scopes);
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt - EXPIRY_MARGIN_MS > Date.now()) return `Bearer ${cached.value}`;
    return `Bearer ${await this.fetchTokenOnce(key, scopes, challenge)}`;
  }

  /**
   * Takes a 401 answer into account. Returns true when a new attempt with fresh authorization can
   * succeed, false when it cannot (no usable challenge, or a basic challenge without credentials).
   */
  async onUnauthorized(wwwAuthenticate: string | undefined, scopes: string[]): Promise<boolean> {
    const challenge = parseChallenge(wwwAuthenticate);
    if (!challenge) return false;
    this.challenge = challenge;
    if (challenge.scheme === 'basic') return this.credentials !== undefined;
    this.tokens.delete(scopeKey(scopes));
    return true;
  }

  private fetchTokenOnce(key: string, scopes: string[], challenge: Challenge): Promise<string> {
    let pending = this.pending.get(key);
    if (!pending) {
      pending = this.fetchToken(key, scopes, challenge).finally(() => this.pending.delete(key));
      this.pending.set(key, pending);
    }
    return pending;
  }

  private async fetchToken(key: string, scopes: string[], challenge: Challenge): Promise<string> {
    const operation = `requesting a token for ${scopes.join(' ') || 'registry access'}`;
    const realm = challenge.params.realm;
    if (!realm) {
      throw new RegistryError('REGISTRY_PROTOCOL', `${this.registry} sent a Bearer challenge without a realm`, {
        registry: this.registry,
        operation,
      });
    }
    const url = new URL(realm);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    const headers: Record<string, string> = {};
    if (this.credentials) headers.authorization = `Basic ${basicValue(this.credentials)}`;

    const response = await this.transport.send({ method: 'GET', url, headers, registry: this.registry });
    if (response.statusCode !== 200) {
      await discard(response);
      const denied = response.statusCode === 401 || response.statusCode === 403;
      throw new RegistryError(
        denied ? 'REGISTRY_DENIED' : 'REGISTRY_UNAVAILABLE',
        `token service of ${this.registry} (${url.origin}) answered ${response.statusCode} while ${operation}` +
          (denied ? `; check the credentials for ${this.registry}` : ''),
        { registry: this.registry, operation, status: response.statusCode, retryable: !denied },
      );
    }
    const body = (await response.body.json().catch(() => undefined)) as
      | { token?: unknown; access_token?: unknown; expires_in?: unknown }
      | undefined;
    const token = typeof body?.token === 'string' ? body.token : typeof body?.access_token === 'string' ? body.access_token : undefined;
    if (!token) {
      throw new RegistryError('REGISTRY_PROTOCOL', `token service of ${this.registry} returned no token while ${operation}`, {
        registry: this.registry,
        operation,
      });
    }
    registerSecret(token);
    const seconds = typeof body?.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    this.tokens.set(key, { value: token, expiresAt: Date.now() + seconds * 1000 });
    return token;
  }
}

function basicValue(credentials: Credentials): string {
  return Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64');
}

function scopeKey(scopes: string[]): string {
  return [...scopes].sort().join(' ');
}
