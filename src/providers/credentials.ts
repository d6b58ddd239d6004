import type { Credentials } from '../registry/auth.ts';

/**
 * Push credentials that a target provider obtains from its cloud and that expire: ECR authorization
 * tokens (12 hours) and Google OAuth2 access tokens (usually 1 hour).
 */

/** Credentials of a registry host that may change while the process runs. */
export interface CredentialsSource {
  /** Returns the credentials to send now, fetching new ones when the cached ones expire soon. */
  current(): Promise<Credentials>;
  /**
   * Called when the registry rejected `rejected`. Returns credentials that differ from them, fetched anew
   * unless another request already did, or undefined when the source has nothing else to offer.
   */
  renew(rejected: Credentials): Promise<Credentials | undefined>;
}

/** Credentials with the time they stop working, in milliseconds since the epoch. */
export interface ExpiringCredentials {
  credentials: Credentials;
  expiresAt: number;
}

export interface RefreshingCredentialsOptions {
  /** Clock in milliseconds since the epoch; tests move it instead of waiting. */
  now?: () => number;
  /**
   * Credentials are refreshed this long before they expire, or at half their lifetime when that is
   * sooner, so that a long request started with them does not outlive them. Default 15 minutes.
   */
  maxMarginMs?: number;
}

const DEFAULT_MAX_MARGIN_MS = 15 * 60_000;

/** A CredentialsSource that caches what `fetch` returns and fetches once at a time. */
export class RefreshingCredentials implements CredentialsSource {
  private readonly fetchCredentials: () => Promise<ExpiringCredentials>;
  private readonly now: () => number;
  private readonly maxMarginMs: number;
  private cached: { value: ExpiringCredentials; refreshAt: number } | undefined;
  private pending: Promise<ExpiringCredentials> | undefined;

  constructor(fetchCredentials: () => Promise<ExpiringCredentials>, options: RefreshingCredentialsOptions = {}) {
    this.fetchCredentials = fetchCredentials;
    this.now = options.now ?? Date.now;
    this.maxMarginMs = options.maxMarginMs ?? DEFAULT_MAX_MARGIN_MS;
  }

  async current(): Promise<Credentials> {
    if (this.cached && this.now() < this.cached.refreshAt) return this.cached.value.credentials;
    return (await this.fetchOnce()).credentials;
  }

  async renew(rejected: Credentials): Promise<Credentials | undefined> {
    const cached = this.cached?.value.credentials;
    if (cached && !sameCredentials(cached, rejected)) return cached;
    const renewed = (await this.fetchOnce()).credentials;
    return sameCredentials(renewed, rejected) ? undefined : renewed;
  }

  private fetchOnce(): Promise<ExpiringCredentials> {
    if (!this.pending) {
      const obtainedAt = this.now();
      this.pending = this.fetchCredentials()
        .then((value) => {
          const margin = Math.min(this.maxMarginMs, (value.expiresAt - obtainedAt) / 2);
          this.cached = { value, refreshAt: value.expiresAt - margin };
          return value;
        })
        .finally(() => {
          this.pending = undefined;
        });
    }
    return this.pending;
  }
}

function sameCredentials(a: Credentials, b: Credentials): boolean {
  return a.username === b.username && a.password === b.password;
}
