import { RegistryError } from '../errors.ts';
import { registerSecret } from '../log/redact.ts';
import { sortResponse } from './failures.ts';
import type { HttpTransport } from './http.ts';

/**
 * Registry authentication: parses `WWW-Authenticate` challenges and produces the `Authorization` header
 * for a set of scopes. Reference: the distribution token authentication specification
 * (docs/spec/auth/token.md) and RFC 9110, section 11.6.1 for the challenge syntax.
 *
 * - Basic: the credentials go with every request once the registry has asked for them.
 * - Bearer: a token is requested from the realm of the registry's own challenge, for the scopes of
 *   one request, and cached per realm, service and scope set until shortly before it expires. A 401 to
 *   a request that carried a cached token drops that token, and the client asks for a new one once.
 * Scopes always name repositories of this registry, because each RegistryClient builds them from its
 * own requests. So no scope of another registry, such as a cross-registry mount source, is requested.
 */

export interface Credentials {
  username: string;
  password: string;
}

export interface Challenge {
  scheme: 'basic' | 'bearer';
  /** Parameters with lowercased names: `realm`, `service`, `scope`, `error`. */
  params: Record<string, string>;
}

/**
 * Parses `WWW-Authenticate`: one header value, or every value when the header came several times.
 * A value may hold several challenges (`Bearer realm="a", Basic realm="b"`). Bearer is preferred over
 * Basic; other schemes are ignored. Returns undefined when no Basic or Bearer challenge is present.
 */
export function parseChallenge(value: string | string[] | undefined): Challenge | undefined {
  if (value === undefined) return undefined;
  const challenges = (Array.isArray(value) ? value : [value]).flatMap(parseChallenges);
  return challenges.find((challenge) => challenge.scheme === 'bearer') ?? challenges.find((challenge) => challenge.scheme === 'basic');
}

/** Returns the scopes a Bearer challenge names; its `scope` parameter separates them with spaces. */
export function challengeScopes(challenge: Challenge): string[] {
  return (challenge.params.scope ?? '').split(' ').filter((scope) => scope !== '');
}

// A scheme name followed by blanks and then either the end or something that is not `=` (RFC 9110 auth-scheme).
const SCHEME = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?=\s|,|$)/;
// One auth-param: name = token or quoted-string.
const PARAM = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/;

function parseChallenges(value: string): Challenge[] {
  const found: Array<{ scheme: string; params: Record<string, string> }> = [];
  let rest = value.trim();
  while (rest !== '') {
    rest = rest.replace(/^[\s,]+/, '');
    const param = PARAM.exec(rest);
    if (param && found.length > 0) {
      found.at(-1)!.params[param[1]!.toLowerCase()] = param[2] !== undefined ? param[2].replace(/\\(.)/g, '$1') : param[3]!;
      rest = rest.slice(param[0].length);
      continue;
    }
    const scheme = SCHEME.exec(rest);
    if (!scheme) break;
    found.push({ scheme: scheme[1]!.toLowerCase(), params: {} });
    rest = rest.slice(scheme[0].length);
  }
  return found.flatMap((challenge) =>
    challenge.scheme === 'basic' || challenge.scheme === 'bearer' ? [{ scheme: challenge.scheme, params: challenge.params }] : [],
  );
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

// A token is dropped this long before its stated expiry (or a quarter of its lifetime, when that is
// shorter), so that it does not lapse between the check and the request.
const EXPIRY_MARGIN_MS = 10_000;
// In the token specification, a token without `expires_in` lasts 60 seconds.
const DEFAULT_TOKEN_SECONDS = 60;

export class Authenticator {
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();

  private readonly transport: HttpTransport;
  private readonly registry: string;
  private readonly credentials: Credentials | undefined;
  private readonly basicValue: string | undefined;

  constructor(transport: HttpTransport, registry: string, credentials: Credentials | undefined) {
    this.transport = transport;
    this.registry = registry;
    this.credentials = credentials;
    if (credentials) {
      registerSecret(credentials.password);
      this.basicValue = Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64');
      registerSecret(this.basicValue);
    }
  }

  /**
   * Returns the Authorization header for `scopes`, or undefined when no challenge has been seen yet
   * (the first request goes without one) or when the challenge is Basic and there are no credentials.
   * May request a token; throws what `fetchToken` throws.
   */
  async authorization(scopes: string[], operation: string): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') return this.basicValue ? `Basic ${this.basicValue}` : undefined;

    const key = cacheKey(challenge, scopes);
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.value}`;
    let pending = this.pending.get(key);
    if (!pending) {
      pending = this.fetchToken(key, scopes, challenge, operation).finally(() => this.pending.delete(key));
      this.pending.set(key, pending);
    }
    return `Bearer ${await pending}`;
  }

  /**
   * Takes a 401 response into account. Returns true when a new attempt with fresh authorization can
   * succeed: a Bearer challenge (the token for `scopes` is dropped), or a first Basic challenge when
   * there are credentials. A Basic challenge to a request that already carried the credentials means
   * they are wrong, and another attempt cannot help.
   */
  onUnauthorized(wwwAuthenticate: string | string[] | undefined, scopes: string[], sentAuthorization: boolean): boolean {
    const challenge = parseChallenge(wwwAuthenticate);
    if (!challenge) return false;
    const previous = this.challenge;
    this.challenge = challenge;
    if (challenge.scheme === 'basic') return this.credentials !== undefined && !(sentAuthorization && previous?.scheme === 'basic');
    this.tokens.delete(cacheKey(challenge, scopes));
    return true;
  }

  private async fetchToken(key: string, scopes: string[], challenge: Challenge, operation: string): Promise<string> {
    const tokenOperation = `requesting a token for ${scopes.join(' ') || 'registry access'} while ${operation}`;
    const realm = challenge.params.realm;
    let url: URL;
    try {
      url = new URL(realm ?? '');
    } catch {
      throw new RegistryError('REGISTRY_PROTOCOL', `${this.registry} sent a Bearer challenge without a valid realm URL while ${operation}`, {
        registry: this.registry,
        operation,
      });
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    const headers: Record<string, string> = {};
    if (this.basicValue) headers.authorization = `Basic ${this.basicValue}`;
    const answeredBy = `the token service of ${this.registry} (${url.origin})`;

    const response = await this.transport.send({ method: 'GET', url, headers, registry: this.registry });
    // A transient failure is thrown as TransientResponse, which the client retries within the budget of its request.
    if (response.statusCode !== 200) throw await sortResponse(response, { registry: this.registry, operation: tokenOperation, answeredBy });

    const body = (await response.body.json().catch(() => undefined)) as
      | { token?: unknown; access_token?: unknown; refresh_token?: unknown; expires_in?: unknown }
      | undefined;
    // Register every secret of the response before anything else can copy it into a message.
    for (const value of [body?.token, body?.access_token, body?.refresh_token]) {
      if (typeof value === 'string') registerSecret(value);
    }
    let token = '';
    if (typeof body?.token === 'string' && body.token !== '') token = body.token;
    else if (typeof body?.access_token === 'string') token = body.access_token;
    if (token === '') {
      throw new RegistryError('REGISTRY_PROTOCOL', `${answeredBy} returned no token while ${tokenOperation}`, {
        registry: this.registry,
        operation: tokenOperation,
      });
    }
    const seconds = typeof body?.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    const lifetimeMs = seconds * 1000;
    this.tokens.set(key, { value: token, expiresAt: Date.now() + lifetimeMs - Math.min(EXPIRY_MARGIN_MS, lifetimeMs / 4) });
    return token;
  }
}

function cacheKey(challenge: Challenge, scopes: string[]): string {
  return [challenge.params.realm ?? '', challenge.params.service ?? '', ...[...scopes].sort()].join(' ');
}
