import { createSign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GoogleAuth } from 'google-gax';
import { ConfigError, RegistryError } from '../errors.ts';
import { registerSecret } from '../log/redact.ts';
import type { ExpiringCredentials } from './credentials.ts';

/**
 * OAuth2 access tokens for Google Cloud APIs and Artifact Registry's Docker endpoint, where they are sent
 * as the password of the user `oauth2accesstoken`.
 *
 * With a service-account key file, the token comes from the JWT bearer grant (RFC 7523) at the key's own
 * `token_uri`, requested here through mirrorfleet's transport. google-auth-library's JWT client is not used
 * for this because version 11 always posts to https://oauth2.googleapis.com/token, whatever `token_uri` the key contains.
 * Without a key file, Application Default Credentials (google-auth-library's GoogleAuth) are used.
 */

export const OAUTH_USERNAME = 'oauth2accesstoken';
const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const DEFAULT_TOKEN_URI = 'https://oauth2.googleapis.com/token';
// Lifetime of the signed assertion; Google accepts at most one hour.
const ASSERTION_SECONDS = 3600;
// A token response without expires_in is taken to last this long.
const DEFAULT_TOKEN_SECONDS = 3600;

interface ServiceAccountKey {
  client_email: string;
  private_key: string;
  private_key_id?: string;
  token_uri?: string;
}

/** Reads and checks a service-account key file. Throws ConfigError naming the file and what is missing. */
export function readServiceAccountKey(path: string): ServiceAccountKey {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new ConfigError(`cannot read the service-account key file "${path}": ${(error as Error).message.split('\n')[0]}; expected a JSON key downloaded for a service account`);
  }
  const key = parsed as Partial<ServiceAccountKey> & { type?: unknown };
  if (key.type !== 'service_account' || typeof key.client_email !== 'string' || typeof key.private_key !== 'string') {
    throw new ConfigError(`the key file "${path}" is not a service-account key: expected "type": "service_account" with client_email and private_key`);
  }
  registerSecret(key.private_key);
  return key as ServiceAccountKey;
}

/** Fetches an access token with a service-account key, posting through `fetchFunction`. */
export async function fetchServiceAccountToken(key: ServiceAccountKey, fetchFunction: typeof fetch, now = Date.now()): Promise<ExpiringCredentials> {
  const tokenUri = key.token_uri ?? DEFAULT_TOKEN_URI;
  const issuedAt = Math.floor(now / 1000);
  const header = { alg: 'RS256', typ: 'JWT', ...(key.private_key_id ? { kid: key.private_key_id } : {}) };
  const claims = { iss: key.client_email, scope: CLOUD_PLATFORM_SCOPE, aud: tokenUri, iat: issuedAt, exp: issuedAt + ASSERTION_SECONDS };
  const unsigned = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  const signature = createSign('RSA-SHA256').update(unsigned).sign(key.private_key, 'base64url');

  const operation = `requesting an access token for ${key.client_email}`;
  const response = await fetchFunction(tokenUri, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: JWT_BEARER_GRANT, assertion: `${unsigned}.${signature}` }).toString(),
  });
  const body = (await response.json().catch(() => undefined)) as { access_token?: unknown; expires_in?: unknown; error?: unknown } | undefined;
  if (!response.ok || typeof body?.access_token !== 'string') {
    const denied = response.status === 400 || response.status === 401 || response.status === 403;
    throw new RegistryError(
      denied ? 'REGISTRY_DENIED' : 'REGISTRY_UNAVAILABLE',
      `token endpoint ${new URL(tokenUri).origin} answered ${response.status}${typeof body?.error === 'string' ? ` ${body.error}` : ''} while ${operation}` +
        (denied ? '; check that the service-account key is valid and not disabled' : ''),
      { registry: new URL(tokenUri).host, operation, status: response.status, retryable: !denied },
    );
  }
  registerSecret(body.access_token);
  const seconds = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
  return { credentials: { username: OAUTH_USERNAME, password: body.access_token }, expiresAt: now + seconds * 1000 };
}

/** Fetches an access token from Application Default Credentials. */
export async function fetchDefaultCredentialsToken(auth = new GoogleAuth({ scopes: [CLOUD_PLATFORM_SCOPE] })): Promise<ExpiringCredentials> {
  const client = await auth.getClient();
  const { token } = await client.getAccessToken();
  if (!token) {
    throw new RegistryError('REGISTRY_DENIED', 'Application Default Credentials returned no access token; set credentialsFile or GOOGLE_APPLICATION_CREDENTIALS', {
      registry: 'oauth2.googleapis.com',
      operation: 'requesting an access token',
    });
  }
  registerSecret(token);
  const expiry = (client.credentials as { expiry_date?: number | null }).expiry_date;
  return { credentials: { username: OAUTH_USERNAME, password: token }, expiresAt: expiry ?? Date.now() + DEFAULT_TOKEN_SECONDS * 1000 };
}

function base64url(text: string): string {
  return Buffer.from(text).toString('base64url');
}
