import { createServer } from 'node:http';
import { once } from 'node:events';
import { createPrivateKey, randomUUID, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

/**
 * A token service for registries with bearer-token auth, as distribution 2.8 expects one
 * (docs/spec/auth/token.md and jwt.md). GET `/token?service=...&scope=...`, with optional Basic
 * credentials, returns a JWT signed with RS256. Its `x5c` header carries a self-signed certificate,
 * which the registry trusts through its `rootcertbundle`.
 *
 * Each requested scope is answered with the intersection of the actions asked for and the actions
 * granted, so a scope that is not granted is left out of the token (as the specification prescribes),
 * and the registry then refuses the request. With `lastScopeOnly`, only the last `scope` parameter is
 * considered, as some token services do.
 */

export interface TokenGrant {
  /** User the grant applies to; undefined for everyone, anonymous requests included. */
  user?: string;
  /** Repository name, or a prefix ending in `*`. */
  repository: string;
  actions: string[];
}

export interface TokenServerOptions {
  /** User names and passwords. A request with other credentials gets 401. */
  users: Record<string, string>;
  grants: TokenGrant[];
  lastScopeOnly?: boolean;
  /** Lifetime of each token. Default 300 seconds. */
  expiresInSeconds?: number;
}

export interface GrantedAccess {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequestRecord {
  service: string;
  /** Scopes as requested, in order. */
  scopes: string[];
  user: string | undefined;
  /** What the token allows. */
  access: GrantedAccess[];
}

export interface TokenServer {
  /** The realm URL for the registry configuration, `http://127.0.0.1:PORT/token`. */
  realm: string;
  issuer: string;
  /** PEM of the signing certificate, for the registry's `rootcertbundle`. */
  rootCertBundle: string;
  /** Every token request, in order. */
  readonly requests: TokenRequestRecord[];
  /** Every token issued, so tests can check that none leaks. */
  readonly issued: string[];
  lastScopeOnly: boolean;
  /** The `token` option of `startRegistry` for a registry with this service name. */
  registryAuth(service: string): { realm: string; service: string; issuer: string; rootCertBundle: string };
  stop(): Promise<void>;
}

const ISSUER = 'mirrorfleet-test-token-service';

export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const { key, certificate, der } = await createSigningCertificate();
  const requests: TokenRequestRecord[] = [];
  const issued: string[] = [];
  const expiresIn = options.expiresInSeconds ?? 300;

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method !== 'GET' || url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    const user = authenticate(req.headers.authorization, options.users);
    if (user === false) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ details: 'incorrect username or password' }));
      return;
    }

    const service = url.searchParams.get('service') ?? '';
    const scopes = url.searchParams.getAll('scope').flatMap((value) => value.split(' ')).filter((scope) => scope !== '');
    const considered = scopes.length > 0 && tokenServer.lastScopeOnly ? [scopes.at(-1)!] : scopes;
    const access = considered.flatMap((scope) => grantedAccess(scope, user, options.grants));
    requests.push({ service, scopes, user, access });

    const token = signToken(key, der, { service, user, access, expiresIn });
    issued.push(token);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: expiresIn, issued_at: new Date(nowSeconds() * 1000).toISOString() }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const realm = `http://127.0.0.1:${port}/token`;

  const tokenServer: TokenServer = {
    realm,
    issuer: ISSUER,
    rootCertBundle: certificate,
    requests,
    issued,
    lastScopeOnly: options.lastScopeOnly ?? false,
    registryAuth: (service) => ({ realm, service, issuer: ISSUER, rootCertBundle: certificate }),
    stop: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  return tokenServer;
}

/** Returns the user name, undefined for an anonymous request, or false for wrong credentials. */
function authenticate(authorization: string | undefined, users: Record<string, string>): string | undefined | false {
  if (!authorization) return undefined;
  const match = /^Basic\s+(.+)$/i.exec(authorization);
  if (!match) return false;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const user = decoded.slice(0, colon);
  return colon > 0 && users[user] !== undefined && users[user] === decoded.slice(colon + 1) ? user : false;
}

/** Parses `type:name:actions` (the name may not contain `:`) and intersects the actions with the grants. */
function grantedAccess(scope: string, user: string | undefined, grants: TokenGrant[]): GrantedAccess[] {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return [];
  const type = scope.slice(0, first);
  const name = scope.slice(first + 1, last);
  const requested = scope.slice(last + 1).split(',');
  const allowed = new Set(
    grants
      .filter((grant) => grant.user === undefined || grant.user === user)
      .filter((grant) => (grant.repository.endsWith('*') ? name.startsWith(grant.repository.slice(0, -1)) : grant.repository === name))
      .flatMap((grant) => grant.actions),
  );
  const actions = type === 'repository' ? requested.filter((action) => allowed.has(action)) : [];
  return actions.length > 0 ? [{ type, name, actions }] : [];
}

// Token times come from the monotonic clock, so a test that fakes Date to age cached tokens still gets
// tokens that the registry accepts.
function nowSeconds(): number {
  return Math.floor((performance.timeOrigin + performance.now()) / 1000);
}

function signToken(key: KeyObject, der: Buffer, claims: { service: string; user: string | undefined; access: GrantedAccess[]; expiresIn: number }): string {
  const now = nowSeconds();
  const header = { typ: 'JWT', alg: 'RS256', x5c: [der.toString('base64')] };
  const payload = {
    iss: ISSUER,
    sub: claims.user ?? '',
    aud: claims.service,
    exp: now + claims.expiresIn,
    nbf: now - 1,
    iat: now,
    jti: randomUUID(),
    access: claims.access,
  };
  const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(payload))}`;
  return `${signingInput}.${base64url(sign('sha256', Buffer.from(signingInput), key))}`;
}

function base64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

/** Creates an RSA key and a self-signed certificate for it with the openssl command. */
async function createSigningCertificate(): Promise<{ key: KeyObject; certificate: string; der: Buffer }> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorfleet-token-'));
  try {
    const keyPath = join(dir, 'key.pem');
    const certPath = join(dir, 'cert.pem');
    await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', `/CN=${ISSUER}`]);
    const certificate = await readFile(certPath, 'utf8');
    return { key: createPrivateKey(await readFile(keyPath)), certificate, der: new X509Certificate(certificate).raw };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
