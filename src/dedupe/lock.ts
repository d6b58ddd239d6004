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
 * Releases a lock held by the caller, and publishes the lock key on a channel so that waiters wake up.
 * KEYS[1] lock key
 * ARGV[1] owner token
 * ARGV[2] channel to publish the released key on, or '' to publish nothing
 * Returns 1 when released, 0 when the lock was not held by this owner (expired or taken over).
 */
export const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] ~= nil and ARGV[2] ~= '' then
    redis.call('PUBLISH', ARGV[2], KEYS[1])
  end
  return 1
end
return 0
`;

export interface LockOptions {
  /** Lifetime of the lock without renewal; it is renewed every third of it while held. */
  ttlMs: number;
  /** How long to wait for a lock another worker holds before giving up. */
  waitMs: number;
  /**
   * Wakes waiters when a lock is released, so they try again at once instead of at their next poll.
   * Without it, waiters only poll. Polling goes on with it too, for locks that expire instead of being released.
   */
  wakeups?: LockWakeups;
}

/** Pauses of lock waiters that end early when the lock is released (see ./wakeups.ts). */
export interface LockWakeups {
  /** Channel that RELEASE_SCRIPT publishes released lock keys on. */
  readonly channel: string;
  /** Resolves after `ms`, or earlier when lock `key` is released. */
  pause(key: string, ms: number): Promise<void>;
}

/** Maximum pause between two tries of a waiter. */
const MAX_POLL_MS = 500;

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
 * renewal has succeeded for three quarters of `ttlMs` (Redis unreachable). That is a quarter of `ttlMs`
 * before the lock can expire and pass to another worker, so work that honours the signal stops in time.
 */
export async function withLock<T>(
  redis: Redis,
  key: string,
  work: (signal: AbortSignal) => Promise<T>,
  options: LockOptions = DEFAULT_LOCK_OPTIONS,
  onWait?: () => void,
): Promise<T> {
  const token = randomBytes(16).toString('hex');
  const validUntil = (await acquire(redis, key, token, options, onWait))!;
  return hold(redis, key, token, validUntil, work, options);
}

/** Outcome of `withLockUnless`: `ran` is false when the caller's check ended the wait before the lock was taken. */
export type GatedResult<T> = { ran: true; value: T } | { ran: false };

/**
 * Runs `work` under the lock like `withLock`, unless `stopWaiting` returns true first. `stopWaiting` is
 * called after each failed try, before the pause, so a waiter can notice that the holder's work made its
 * own unnecessary. It never runs while this caller holds the lock, and `work` does not run when it ends
 * the wait.
 */
export async function withLockUnless<T>(
  redis: Redis,
  key: string,
  work: (signal: AbortSignal) => Promise<T>,
  stopWaiting: () => Promise<boolean>,
  options: LockOptions = DEFAULT_LOCK_OPTIONS,
  onWait?: () => void,
): Promise<GatedResult<T>> {
  const token = randomBytes(16).toString('hex');
  const validUntil = await acquire(redis, key, token, options, onWait, stopWaiting);
  if (validUntil === undefined) return { ran: false };
  return { ran: true, value: await hold(redis, key, token, validUntil, work, options) };
}

/**
 * Takes the lock for `token`, waiting while another owner holds it. Returns the time until which the
 * lock is valid, or undefined when `stopWaiting` ended the wait.
 */
async function acquire(
  redis: Redis,
  key: string,
  token: string,
  options: LockOptions,
  onWait?: () => void,
  stopWaiting?: () => Promise<boolean>,
): Promise<number | undefined> {
  const deadline = Date.now() + options.waitMs;
  const margin = Math.floor(options.ttlMs / 4);
  let delay = 25;
  let waited = false;
  let validUntil = 0;
  while (validUntil - margin <= Date.now()) {
    const sentAt = Date.now();
    if ((await redis.set(key, token, 'PX', options.ttlMs, 'NX')) === 'OK') {
      validUntil = sentAt + options.ttlMs;
      // A reply that took most of the lock's lifetime leaves too little of it, so renew before working.
      // This happens when Redis was unreachable and the command waited in the client's offline queue.
      while (validUntil - margin <= Date.now()) {
        const renewSentAt = Date.now();
        if ((await redis.eval(RENEW_SCRIPT, 1, key, token, String(options.ttlMs))) !== 1) break;
        validUntil = renewSentAt + options.ttlMs;
      }
      if (validUntil - margin > Date.now()) break;
    }
    if (!waited) onWait?.();
    waited = true;
    if (Date.now() > deadline) throw new LockTimeoutError(key, options.waitMs);
    if (stopWaiting && (await stopWaiting())) return undefined;
    // Jitter spreads waiters that started together, so each poll round lets more than one of them in.
    const pause = delay / 2 + Math.random() * (delay / 2);
    await (options.wakeups ? options.wakeups.pause(key, pause) : sleep(pause));
    delay = Math.min(delay * 2, MAX_POLL_MS);
  }
  return validUntil;
}

/** Runs `work` while renewing the lock that `acquire` took, and releases it afterwards. */
async function hold<T>(
  redis: Redis,
  key: string,
  token: string,
  validUntil: number,
  work: (signal: AbortSignal) => Promise<T>,
  options: LockOptions,
): Promise<T> {
  const margin = Math.floor(options.ttlMs / 4);
  // Redis starts a lock's lifetime when it runs the command, never before the command was sent. So the
  // lock is valid at least until `sentAt + ttlMs` of the last SET or renewal that succeeded, and the
  // holder aborts a quarter of the lifetime before that, while no other worker can take the lock yet.
  const lost = new AbortController();
  let expiryTimer: NodeJS.Timeout | undefined;
  const armExpiryTimer = () => {
    clearTimeout(expiryTimer);
    expiryTimer = setTimeout(() => {
      if (Date.now() < validUntil - margin) return armExpiryTimer();
      lost.abort(new LockLostError(key, `no renewal succeeded for ${Date.now() - (validUntil - options.ttlMs)} ms and the lock expires soon`));
    }, Math.max(0, validUntil - margin - Date.now()));
  };
  armExpiryTimer();
  const renewal = setInterval(() => {
    if (lost.signal.aborted) return;
    const sentAt = Date.now();
    redis.eval(RENEW_SCRIPT, 1, key, token, String(options.ttlMs)).then(
      (renewed) => {
        if (renewed !== 1) {
          lost.abort(new LockLostError(key, 'another owner has taken it'));
        } else if (!lost.signal.aborted && sentAt + options.ttlMs > validUntil) {
          validUntil = sentAt + options.ttlMs;
          armExpiryTimer();
        }
      },
      () => undefined,
    );
  }, Math.max(10, Math.floor(options.ttlMs / 3)));
  try {
    return await work(lost.signal);
  } finally {
    clearInterval(renewal);
    clearTimeout(expiryTimer);
    await redis.eval(RELEASE_SCRIPT, 1, key, token, options.wakeups?.channel ?? '').catch(() => undefined);
  }
}
