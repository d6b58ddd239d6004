import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { MirrorfleetError } from '../errors.ts';

/**
 * A lock in Redis shared by every worker of the fleet: `SET key token NX PX ttl` to take it, an expiry
 * renewed while the holder works, and release only by the holder (the token must match). A holder that
 * dies stops renewing, so its lock expires after `ttlMs` and a waiter takes over.
 */

/**
 * Renews a lock held by the caller.
 * KEYS[1] lock key
 * ARGV[1] owner token, ARGV[2] new time to live in milliseconds
 * Returns 1 when renewed, 0 when the lock is no longer held by this owner.
 */
export const RENEW_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`;

/**
 * Releases a lock held by the caller.
 * KEYS[1] lock key
 * ARGV[1] owner token
 * Returns 1 when released, 0 when the lock was not held by this owner (expired or taken over).
 */
export const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

export interface LockOptions {
  /** Lifetime of the lock without renewal; it is renewed every third of it while held. */
  ttlMs: number;
  /** How long to wait for a lock another worker holds before giving up. */
  waitMs: number;
}

// A holder that dies blocks waiters for at most ttlMs; renewal every third of it keeps a live holder safe.
export const DEFAULT_LOCK_OPTIONS: LockOptions = { ttlMs: 10_000, waitMs: 15 * 60_000 };

export class LockTimeoutError extends MirrorfleetError {
  constructor(key: string, waitMs: number) {
    super('TIMEOUT', `gave up waiting for lock ${key} after ${Math.round(waitMs / 1000)} s; another worker still holds it`, { retryable: true });
  }
}

/** The lock expired or passed to another owner while its holder was still working. */
export class LockLostError extends MirrorfleetError {
  constructor(key: string, reason: string) {
    super('LOCK_LOST', `lost lock ${key} while working: ${reason}; the work stopped and will be tried again`, { retryable: true });
  }
}

/**
 * Runs `work` while holding the lock `key`. Waits (polling with backoff) while another owner holds it.
 * `onWait` is called once when the lock is busy at the first try.
 *
 * `work` receives a signal that aborts when the lock is lost: a renewal finds another owner, or no
 * renewal has succeeded for a whole `ttlMs` (Redis unreachable), after which another worker may hold
 * it. Work that honours the signal stops, so two holders never work at the same time for long.
 */
export async function withLock<T>(
  redis: Redis,
  key: string,
  work: (signal: AbortSignal) => Promise<T>,
  options: LockOptions = DEFAULT_LOCK_OPTIONS,
  onWait?: () => void,
): Promise<T> {
  const token = randomBytes(16).toString('hex');
  const deadline = Date.now() + options.waitMs;
  let delay = 25;
  let waited = false;
  while ((await redis.set(key, token, 'PX', options.ttlMs, 'NX')) !== 'OK') {
    if (!waited) onWait?.();
    waited = true;
    if (Date.now() > deadline) throw new LockTimeoutError(key, options.waitMs);
    // Jitter spreads waiters that started together, so each poll round lets more than one of them in.
    await sleep(delay / 2 + Math.random() * (delay / 2));
    delay = Math.min(delay * 2, 500);
  }

  const lost = new AbortController();
  let renewedAt = Date.now();
  const renewal = setInterval(() => {
    // Checked on every tick, because while Redis is unreachable a command may neither succeed nor fail:
    // a client with an offline queue keeps it until the connection returns.
    if (Date.now() - renewedAt >= options.ttlMs) {
      lost.abort(new LockLostError(key, `no renewal succeeded for ${options.ttlMs} ms`));
      return;
    }
    redis.eval(RENEW_SCRIPT, 1, key, token, String(options.ttlMs)).then(
      (renewed) => {
        if (renewed === 1) renewedAt = Date.now();
        else lost.abort(new LockLostError(key, 'another owner has taken it'));
      },
      () => undefined,
    );
  }, Math.max(10, Math.floor(options.ttlMs / 3)));
  try {
    return await work(lost.signal);
  } finally {
    clearInterval(renewal);
    await redis.eval(RELEASE_SCRIPT, 1, key, token).catch(() => undefined);
  }
}
